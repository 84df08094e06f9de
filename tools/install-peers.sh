#!/usr/bin/env bash
# Installs the real SMB peers the tests run against (Debian packages), when missing.
set -euo pipefail
need=()
command -v smbclient >/dev/null || need+=(smbclient)
command -v smbtorture >/dev/null || need+=(samba-testsuite)
command -v smbd >/dev/null || need+=(samba)
[ -d /usr/lib/x86_64-linux-gnu/samba/vfs ] || need+=(samba-vfs-modules)
command -v tshark >/dev/null || need+=(tshark)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v busybox >/dev/null || need+=(busybox-static)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "install-peers: missing ${need[*]} (run as root, or install them); affected tests will skip" >&2
  exit 0
fi
echo "install-peers: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections || true
for i in 1 2 3; do
  if apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; then exit 0; fi
  echo "install-peers: apt failed (attempt $i), retrying" >&2; sleep 10
done
echo "install-peers: could not install ${need[*]}" >&2
exit 1
