#!/usr/bin/env python3
"""Build (and cache) a tiny qemu guest that runs Debian's Linux kernel SMB3 client.

Only Debian packages are used: the package that ``linux-image-amd64`` depends on
(the real ``linux-image-<abi>-amd64``) and ``busybox-static``, fetched with
``apt-get download`` and unpacked with ``dpkg -x``.  The result is:

    cache/guest/vmlinuz               the kernel
    cache/guest/initrd-base.cpio.gz   busybox + the needed modules + /init
    cache/guest/stamp.json            what was built from what

The build is idempotent: when the stamp matches the inputs (this file and
``init.sh``) nothing is done, so a warm call costs a few milliseconds.
``--refresh`` re-resolves the kernel package (e.g. after a Debian point release).

Stdlib only.  Usable as ``python3 build.py`` / ``build.sh`` or ``import build``.
"""
from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = Path(os.environ.get("SMBK_CACHE", HERE / "cache"))
INIT_SCRIPT = HERE / "init.sh"

# Host packages needed to build and boot the guest (installed on demand).
HOST_TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "depmod": "kmod",
    "dpkg": "dpkg",
    "apt-get": "apt",
}
# seabios provides bios-256k.bin; qemu-system-x86 only Recommends it in some setups.
HOST_FILES = {"/usr/share/seabios/bios-256k.bin": "seabios"}

# Modules the guest loads explicitly (order matters for the first group only
# in the sense that the init script modprobes them in this order; modprobe
# resolves dependencies itself).
NET_MODULES = [
    "virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
    "virtio_pci", "failover", "net_failover", "virtio_net",
]
CIFS_MODULES = ["netfs", "fscache", "dns_resolver", "cifs_md4", "cifs_arc4", "cifs"]
CRYPTO_MODULES = [
    "nls_utf8", "ctr", "gcm", "ghash_generic", "gf128mul", "ccm", "cmac",
    "sha512_generic", "ecb", "aesni_intel",
]
# Whole module directories copied in so the kernel's own request_module()
# calls (through busybox modprobe) find whatever algorithm they ask for.
MODULE_DIRS = ["kernel/crypto", "kernel/arch/x86/crypto", "kernel/lib/crypto", "kernel/fs/nls"]


def log(msg: str) -> None:
    print(f"[smbk-build] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# cpio (newc) writer -- shared with run.py for the per-run overlay
# ---------------------------------------------------------------------------
class CpioWriter:
    """Minimal 'newc' cpio archive writer (what the kernel's initramfs wants)."""

    def __init__(self, fileobj):
        self.f = fileobj
        self.ino = 1000

    def _hdr(self, name: str, mode: int, size: int, nlink: int = 1,
             rdevmajor: int = 0, rdevminor: int = 0, mtime: int = 0) -> None:
        self.ino += 1
        bname = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, nlink, mtime, size, 0, 0,
                  rdevmajor, rdevminor, len(bname), 0]
        hdr = b"070701" + b"".join(b"%08X" % v for v in fields)
        self.f.write(hdr + bname)
        self._pad(len(hdr) + len(bname))

    def _pad(self, n: int) -> None:
        if n % 4:
            self.f.write(b"\0" * (4 - n % 4))

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        self._hdr(name, 0o040000 | mode, 0, nlink=2)

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._hdr(name, 0o100000 | mode, len(data))
        self.f.write(data)
        self._pad(len(data))

    def add_symlink(self, name: str, target: str) -> None:
        t = target.encode()
        self._hdr(name, 0o120777, len(t))
        self.f.write(t)
        self._pad(len(t))

    def add_chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._hdr(name, 0o020000 | mode, 0, rdevmajor=major, rdevminor=minor)

    def add_tree(self, root: Path) -> None:
        """Add every entry below *root* (sorted, directories before contents)."""
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            if rel_dir != ".":
                st = os.lstat(dirpath)
                self.add_dir(rel_dir, st.st_mode & 0o7777)
            for fn in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
                full = os.path.join(dirpath, fn)
                rel = os.path.normpath(os.path.join(rel_dir, fn))
                st = os.lstat(full)
                if os.path.islink(full):
                    self.add_symlink(rel, os.readlink(full))
                else:
                    with open(full, "rb") as fh:
                        self.add_file(rel, fh.read(), st.st_mode & 0o7777)

    def finish(self) -> None:
        self._hdr("TRAILER!!!", 0, 0, nlink=1)
        # kernel is happy with any padding; pad to 512 like GNU cpio does
        pos = self.f.tell() if hasattr(self.f, "tell") else 0
        if pos % 512:
            self.f.write(b"\0" * (512 - pos % 512))


def gz_cpio(path: Path, fill) -> None:
    """Write a gzip-compressed newc archive to *path*; *fill(writer)* adds entries."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
        w = CpioWriter(gz)
        fill(w)
        w.finish()
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# host prerequisites
# ---------------------------------------------------------------------------
def _apt(args: list[str], retries: int = 60) -> None:
    """Run apt-get, waiting while another process holds the dpkg lock."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for attempt in range(retries):
        p = subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True)
        if p.returncode == 0:
            return
        out = p.stdout + p.stderr
        if "Could not get lock" in out or "Unable to acquire" in out or "is locked" in out:
            log(f"dpkg/apt lock busy, retrying ({attempt + 1}/{retries})")
            time.sleep(5)
            continue
        raise RuntimeError(f"apt-get {' '.join(args)} failed:\n{out[-3000:]}")
    raise RuntimeError("apt-get: lock still busy after retries")


_apt_updated = False


def _apt_update_once() -> None:
    global _apt_updated
    if not _apt_updated:
        log("apt-get update")
        _apt(["update"])
        _apt_updated = True


def missing_host_packages() -> list[str]:
    pkgs = [pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None
            and not os.path.exists(f"/usr/sbin/{tool}") and not os.path.exists(f"/sbin/{tool}")]
    pkgs += [pkg for f, pkg in HOST_FILES.items() if not os.path.exists(f)]
    return sorted(set(pkgs))


def ensure_host_tools() -> None:
    pkgs = missing_host_packages()
    if not pkgs:
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"missing host packages {pkgs} and not root to install them")
    _apt_update_once()
    log(f"apt-get install {' '.join(pkgs)}")
    _apt(["install", "-y", "--no-install-recommends", *pkgs])


def depmod_bin() -> str:
    for c in (shutil.which("depmod"), "/usr/sbin/depmod", "/sbin/depmod"):
        if c and os.path.exists(c):
            return c
    raise RuntimeError("depmod not found (package kmod)")


# ---------------------------------------------------------------------------
# Debian packages
# ---------------------------------------------------------------------------
def resolve_kernel_package() -> str:
    def query() -> str | None:
        p = subprocess.run(["apt-cache", "depends", "linux-image-amd64"],
                           capture_output=True, text=True)
        for line in p.stdout.splitlines():
            line = line.strip()
            if line.startswith("Depends:"):
                name = line.split()[1]
                if name.startswith("linux-image-"):
                    return name
        return None

    name = query()
    if name is None:
        _apt_update_once()
        name = query()
    if name is None:
        raise RuntimeError("cannot resolve the package behind linux-image-amd64")
    return name


def candidate_version(pkg: str) -> str:
    p = subprocess.run(["apt-cache", "policy", pkg], capture_output=True, text=True)
    for line in p.stdout.splitlines():
        if line.strip().startswith("Candidate:"):
            return line.split(":", 1)[1].strip()
    return ""


def download(pkg: str, debs: Path) -> Path:
    debs.mkdir(parents=True, exist_ok=True)
    have = sorted(glob.glob(str(debs / f"{pkg}_*.deb")))
    if have:
        return Path(have[-1])
    log(f"apt-get download {pkg}")
    try:
        subprocess.run(["apt-get", "download", pkg], cwd=debs, check=True,
                       capture_output=True, text=True)
    except subprocess.CalledProcessError:
        _apt_update_once()
        subprocess.run(["apt-get", "download", pkg], cwd=debs, check=True)
    have = sorted(glob.glob(str(debs / f"{pkg}_*.deb")))
    if not have:
        raise RuntimeError(f"apt-get download {pkg} produced no .deb")
    return Path(have[-1])


def extract(deb: Path, dest_root: Path) -> Path:
    dest = dest_root / deb.stem
    if (dest / ".done").exists():
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    log(f"dpkg -x {deb.name}")
    subprocess.run(["dpkg", "-x", str(deb), str(tmp)], check=True)
    (tmp / ".done").write_text("")
    os.rename(tmp, dest)
    return dest


# ---------------------------------------------------------------------------
# guest image
# ---------------------------------------------------------------------------
def _inputs_hash() -> str:
    h = hashlib.sha256()
    for p in (Path(__file__).resolve(), INIT_SCRIPT):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _module_closure(moddir: Path) -> set[str]:
    """Relative paths of the modules to ship (roots + MODULE_DIRS + all deps)."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
        base = os.path.basename(mod).split(".ko")[0]
        by_name[base.replace("-", "_")] = mod
    want: set[str] = set()
    for name in NET_MODULES + CIFS_MODULES + CRYPTO_MODULES:
        mod = by_name.get(name.replace("-", "_"))
        if mod is None:
            # may be built in; check modules.builtin
            builtin = (moddir / "modules.builtin").read_text()
            if f"/{name}.ko" not in builtin:
                log(f"warning: module {name} neither loadable nor built in")
            continue
        want.add(mod)
    for d in MODULE_DIRS:
        want.update(m for m in deps if m.startswith(d + "/"))
    stack = list(want)
    while stack:
        m = stack.pop()
        for d in deps.get(m, []):
            if d not in want:
                want.add(d)
                stack.append(d)
    return want


def build(cache: Path = DEFAULT_CACHE, force: bool = False, refresh: bool = False) -> dict:
    """Make sure the guest kernel and base initramfs exist; return their paths."""
    import fcntl
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)   # concurrent builds (e.g. pytest -n) wait here
        return _build_locked(cache, force, refresh)


def _build_locked(cache: Path, force: bool, refresh: bool) -> dict:
    guest = cache / "guest"
    stamp_path = guest / "stamp.json"
    ihash = _inputs_hash()
    if stamp_path.exists() and not force and not refresh:
        try:
            stamp = json.loads(stamp_path.read_text())
            if (stamp.get("inputs") == ihash and Path(stamp["kernel"]).exists()
                    and Path(stamp["initrd"]).exists()):
                return stamp
        except (ValueError, KeyError):
            pass

    t0 = time.monotonic()
    ensure_host_tools()
    kpkg = resolve_kernel_package()
    debs = cache / "debs"
    if refresh:
        # drop .debs whose version is not the current candidate
        for pkg in (kpkg, "busybox-static"):
            cand = candidate_version(pkg)
            for d in glob.glob(str(debs / f"{pkg}_*.deb")):
                if cand and cand.replace(":", "%3a") not in d:
                    os.unlink(d)
    kdeb = download(kpkg, debs)
    bdeb = download("busybox-static", debs)
    kx = extract(kdeb, cache / "extract")
    bx = extract(bdeb, cache / "extract")

    versions = sorted(os.listdir(kx / "lib/modules"))
    if len(versions) != 1:
        raise RuntimeError(f"unexpected module trees: {versions}")
    kver = versions[0]
    kmod = kx / "lib/modules" / kver
    if not (kmod / "modules.dep").exists():
        subprocess.run([depmod_bin(), "-b", str(kx), kver], check=True)

    root = guest / "root.tmp"
    if root.exists():
        shutil.rmtree(root)
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "mnt",
              "etc", "run", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(bx / "bin/busybox", root / "bin/busybox")
    applets = subprocess.run([str(bx / "bin/busybox"), "--list-full"], check=True,
                             capture_output=True, text=True).stdout.split()
    for a in applets:
        if a == "linuxrc":
            continue
        dst = root / a
        if not dst.exists() and not dst.is_symlink():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink("/bin/busybox", dst)
    # make sure the kernel's usermode helper finds busybox modprobe
    for a in ("sbin/modprobe", "bin/sh"):
        if not (root / a).is_symlink():
            os.symlink("/bin/busybox", root / a)

    mods = _module_closure(kmod)
    gmod = root / "lib/modules" / kver
    for m in sorted(mods):
        dst = gmod / m
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(kmod / m, dst)
    for f in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if (kmod / f).exists():
            shutil.copy2(kmod / f, gmod / f)
    subprocess.run([depmod_bin(), "-b", str(root), kver], check=True)

    shutil.copy2(INIT_SCRIPT, root / "init")
    os.chmod(root / "init", 0o755)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/smbk-guest").write_text(
        json.dumps({"kernel_package": kdeb.name, "busybox_package": bdeb.name,
                    "kernel_release": kver, "inputs": ihash}) + "\n")

    guest.mkdir(parents=True, exist_ok=True)
    initrd = guest / "initrd-base.cpio.gz"

    def fill(w: CpioWriter) -> None:
        w.add_tree(root)
        w.add_chardev("dev/console", 5, 1)
        w.add_chardev("dev/null", 1, 3, 0o666)
        w.add_chardev("dev/ttyS0", 4, 64)

    gz_cpio(initrd, fill)
    vmlinuz = guest / "vmlinuz"
    shutil.copy2(kx / "boot" / f"vmlinuz-{kver}", vmlinuz)
    shutil.rmtree(root)

    stamp = {
        "inputs": ihash,
        "kernel": str(vmlinuz),
        "initrd": str(initrd),
        "kernel_release": kver,
        "kernel_package": kdeb.name,
        "busybox_package": bdeb.name,
        "modules": len(mods),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "build_seconds": round(time.monotonic() - t0, 2),
    }
    stamp_path.write_text(json.dumps(stamp, indent=2) + "\n")
    log(f"built guest {kver} ({len(mods)} modules, initrd {initrd.stat().st_size // 1024} KiB) "
        f"in {stamp['build_seconds']} s")
    return stamp


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--force", action="store_true", help="rebuild the image even if cached")
    ap.add_argument("--refresh", action="store_true",
                    help="re-resolve/re-download the Debian packages if a newer one is available")
    ap.add_argument("--clean", action="store_true", help="delete the cache dir and exit")
    args = ap.parse_args(argv)
    if args.clean:
        shutil.rmtree(args.cache, ignore_errors=True)
        return 0
    t0 = time.monotonic()
    stamp = build(args.cache, force=args.force, refresh=args.refresh)
    print(json.dumps(dict(stamp, elapsed=round(time.monotonic() - t0, 3)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
