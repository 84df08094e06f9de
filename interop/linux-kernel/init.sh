#!/bin/sh
# Generic /init of the smbk guest (busybox ash).  It reads a test plan from
# /plan (shell variables, written by run.py into a per-run initramfs overlay),
# mounts the SMB share once per option set, runs file checks and prints one
# machine-readable line per check on the serial console:
#
#   RESULT <optset> <check> PASS|FAIL|SKIP|INFO <detail>
#
# plus BEGIN/END <optset>, LOG <optset> <text> and a final DONE line, then
# powers off.  Plan variables:
#   SERVER_IP PORT GUEST_IP PREFIX USER PASS FILE_MIB RUN_ID NOPTS
#   OPT_<i>_NAME OPT_<i>_SHARE OPT_<i>_OPTS OPT_<i>_DIALECT OPT_<i>_SIGN OPT_<i>_SEAL
#   OPT_<i>_CRASH
# (i = 1..NOPTS; OPTS are extra mount options appended after
#  port=,username=,password=; DIALECT is the expected "0x311"-style dialect or
#  empty; SIGN/SEAL are 1 if the option set requires signing/encryption;
#  CRASH = N > 0 adds the crash_io/crash_verify checks: a write+verify loop on a
#  file kept open while the host SIGKILLs and restarts the server N times -- the
#  guest asks for each kill with a "SMBK-CRASH <optset> <k>" line; CRASH_WAIT is
#  how long the check after a remount may wait for abandoned handles to expire.
#  DRILL = S > 0 is drill mode (drill_io, driven by drill_client.py): the generic file checks are
#  skipped; the guest writes+fsyncs 64 KiB blocks to a file it keeps open for S seconds -- or until
#  DRILL_END (unix time, read against the RTC) when set -- printing one line per I/O, then verifies.)
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp /mnt
mount -t tmpfs tmpfs /tmp
# keep kernel messages off the console so result lines stay clean
echo 1 > /proc/sys/kernel/printk

say() { echo "$*"; }
now() { cut -d' ' -f1 /proc/uptime; }   # seconds with centiseconds
finish() { say "DONE $*"; sync; poweroff -f; sleep 5; echo o > /proc/sysrq-trigger; }

say "SMBK-INIT $(uname -r) $(cat /etc/smbk-guest 2>/dev/null)"

if [ ! -r /plan ]; then
    say "RESULT - plan FAIL no /plan in initramfs"
    finish
fi
. /plan

# ---- modules --------------------------------------------------------------
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
         failover net_failover virtio_net \
         nls_utf8 ctr gcm ghash_generic gf128mul ccm cmac sha512_generic ecb aesni_intel \
         netfs fscache dns_resolver cifs_md4 cifs_arc4 cifs; do
    modprobe "$m" 2>/dev/null || say "LOG - modprobe $m failed"
done

# ---- network --------------------------------------------------------------
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
ip link set eth0 up
ip addr add "$GUEST_IP/$PREFIX" dev eth0
i=0
while ! ping -c 1 -W 1 "$SERVER_IP" >/dev/null 2>&1; do
    i=$((i+1))
    if [ $i -ge 10 ]; then
        say "RESULT - network FAIL cannot ping $SERVER_IP from $GUEST_IP"
        ip addr | sed 's/^/LOG - /'
        finish
    fi
done
say "RESULT - network PASS $GUEST_IP -> $SERVER_IP"

# ---- reference data -------------------------------------------------------
dd if=/dev/urandom of=/tmp/src.bin bs=1M count="$FILE_MIB" 2>/dev/null
SRC_MD5=$(md5sum /tmp/src.bin | cut -d' ' -f1)
SRC_SIZE=$(stat -c %s /tmp/src.bin)

# ---- per option set -------------------------------------------------------
res() { say "RESULT $NAME $1 $2 $3"; }
check() {   # check <name> <detail> <command...>
    c=$1; d=$2; shift 2
    if "$@" >/tmp/out 2>&1; then res "$c" PASS "$d"; return 0; fi
    res "$c" FAIL "$d: $(head -c 200 /tmp/out | tr '\n' ' ')"; return 1
}
skip_rest() {
    for c in dialect signing encryption mkdir write size readback md5 ls rename \
             small_io append rm rmdir umount; do
        res "$c" SKIP "$1"
    done
}
elapsed() {  # elapsed <t0> <t1> <bytes> -> "1.23s 3.2MiB/s"
    awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN{d=b-a; if(d<=0)d=0.01; printf "%.2fs %.1fMiB/s", d, n/1048576/d}'
}

run_optset() {
    i=$1
    eval NAME=\$OPT_${i}_NAME
    eval SHARE=\$OPT_${i}_SHARE
    eval OPTS=\$OPT_${i}_OPTS
    eval EXP_DIALECT=\$OPT_${i}_DIALECT
    eval EXP_SIGN=\$OPT_${i}_SIGN
    eval EXP_SEAL=\$OPT_${i}_SEAL
    eval CRASH=\${OPT_${i}_CRASH:-0}
    eval DRILL=\${OPT_${i}_DRILL:-0}
    eval DRILL_END=\${OPT_${i}_DRILL_END:-0}
    say "BEGIN $NAME //$SERVER_IP/$SHARE $OPTS"

    all="port=$PORT,username=$USER,password=$PASS"
    [ -n "$OPTS" ] && all="$all,$OPTS"
    dmesg -c >/dev/null 2>&1
    t0=$(now)
    if ! mount -t cifs "//$SERVER_IP/$SHARE" /mnt -o "$all" >/tmp/out 2>&1; then
        res mount FAIL "$(head -c 200 /tmp/out | tr '\n' ' ')"
        dmesg | tail -n 8 | sed "s/^/LOG $NAME /"
        skip_rest "mount failed"
        say "END $NAME"
        return
    fi
    t1=$(now)
    res mount PASS "$(awk -v a=$t0 -v b=$t1 'BEGIN{printf "%.2fs", b-a}')"

    # ---- what the kernel negotiated
    cat /proc/fs/cifs/DebugData > /tmp/dd 2>&1
    dia=$(grep -o 'Dialect 0x[0-9a-f]*' /tmp/dd | head -n 1 | cut -d' ' -f2)
    if [ -z "$EXP_DIALECT" ]; then
        res dialect INFO "${dia:-unknown}"
    elif [ "$dia" = "$EXP_DIALECT" ]; then
        res dialect PASS "$dia"
    else
        res dialect FAIL "got ${dia:-none} want $EXP_DIALECT"
    fi
    sec=$(grep -o 'Security type: [^ ]*' /tmp/dd | head -n 1 | cut -d' ' -f3)
    # session line: "Security type: RawNTLMSSP  SessionId: 0x... signed";
    # tree connects of a sealed session end in "Encrypted"
    signed=no; grep 'Security type' /tmp/dd | grep -qiwE 'signed' && signed=yes
    enc=no; grep -qiw 'Encrypted' /tmp/dd && enc=yes
    if [ "$EXP_SIGN" = 1 ]; then
        [ $signed = yes ] && res signing PASS "signed sec=$sec" || res signing FAIL "session not signed sec=$sec"
    else
        res signing INFO "signed=$signed sec=$sec"
    fi
    if [ "$EXP_SEAL" = 1 ]; then
        [ $enc = yes ] && res encryption PASS "encrypted" || res encryption FAIL "not encrypted"
    else
        res encryption INFO "encrypted=$enc"
    fi
    grep -iE 'Dialect|Security type|Capabilit|signed|Encrypted' /tmp/dd \
        | tr -s ' \t' ' ' | sed "s/^/LOG $NAME debugdata: /"

    if [ "$DRILL" -gt 0 ]; then     # drill mode: only the timed writer (drill_io)
        for c in mkdir write size readback md5 ls rename small_io append rm rmdir; do res "$c" SKIP "drill mode"; done
        drill_io "$DRILL" "$DRILL_END"
        cd /
        check umount "/mnt" umount /mnt
        dmesg | grep -iE 'CIFS|SMB' | tail -n 12 | sed "s/^/LOG $NAME drill dmesg: /"
        say "END $NAME"
        return
    fi

    # ---- file operations
    D="/mnt/smbk-$RUN_ID-$NAME"
    rm -rf "$D" 2>/dev/null
    check mkdir "$D" sh -c "mkdir '$D' && [ -d '$D' ]"
    t0=$(now)
    if dd if=/tmp/src.bin of="$D/data.bin" bs=1M 2>/tmp/out && sync; then
        t1=$(now); res write PASS "$SRC_SIZE bytes $(elapsed $t0 $t1 $SRC_SIZE)"
    else
        res write FAIL "$(head -c 200 /tmp/out | tr '\n' ' ')"
    fi
    sz=$(stat -c %s "$D/data.bin" 2>/dev/null)
    [ "$sz" = "$SRC_SIZE" ] && res size PASS "$sz" || res size FAIL "got ${sz:-none} want $SRC_SIZE"
    # drop the page cache so the read really goes to the server
    sync; echo 3 > /proc/sys/vm/drop_caches
    t0=$(now)
    if cmp /tmp/src.bin "$D/data.bin" >/tmp/out 2>&1; then
        t1=$(now); res readback PASS "cmp equal $(elapsed $t0 $t1 $SRC_SIZE)"
    else
        res readback FAIL "$(head -c 200 /tmp/out | tr '\n' ' ')"
    fi
    echo 3 > /proc/sys/vm/drop_caches
    m=$(md5sum "$D/data.bin" 2>/dev/null | cut -d' ' -f1)
    [ "$m" = "$SRC_MD5" ] && res md5 PASS "$m" || res md5 FAIL "got ${m:-none} want $SRC_MD5"
    check ls "data.bin listed" sh -c "ls -la '$D' && ls '$D' | grep -qx data.bin"
    check rename "data.bin -> renamed.bin" sh -c \
        "mv '$D/data.bin' '$D/renamed.bin' && [ ! -e '$D/data.bin' ] && [ -f '$D/renamed.bin' ] && ls '$D' | grep -qx renamed.bin"
    check small_io "write+read 6 bytes" sh -c \
        "echo hello > '$D/small.txt' && echo 3 > /proc/sys/vm/drop_caches && [ \"\$(cat '$D/small.txt')\" = hello ]"
    check append "append + read" sh -c \
        "echo world >> '$D/small.txt' && echo 3 > /proc/sys/vm/drop_caches && [ \"\$(cat '$D/small.txt' | tr '\n' ' ')\" = 'hello world ' ]"
    check rm "delete files" sh -c \
        "rm '$D/renamed.bin' '$D/small.txt' && [ ! -e '$D/renamed.bin' ] && [ -z \"\$(ls -A '$D')\" ]"
    check rmdir "$D" sh -c "rmdir '$D' && [ ! -e '$D' ]"
    [ "$CRASH" -gt 0 ] && crash_io "$CRASH"
    cd /
    check umount "/mnt" umount /mnt
    dmesg | grep -iE 'CIFS|SMB' | grep -viE 'experimental|Attempting' | tail -n 5 | sed "s/^/LOG $NAME dmesg: /"
    say "END $NAME"
}

# ---- I/O across server crashes ------------------------------------------
# A file stays open (fd 3) while 64 KiB blocks are written to it; at N points
# the guest syncs, asks the host to SIGKILL + restart the server and goes on
# writing (into the page cache). The client must reconnect and reclaim its
# (persistent) handle to write the data back: no I/O error may reach us, and
# after dropping the caches every block must read back. The file is verified
# again after a remount (straight from the server).
crash_io() {
    cn=$1
    CD="/mnt/smbk-$RUN_ID-$NAME-crash"
    F="$CD/crash.bin"
    rounds=32
    per=$(( rounds / (cn + 1) ))
    dmesg -c > /dev/null
    err=""
    mkdir -p "$CD" 2>/tmp/out || err="mkdir: $(head -c 150 /tmp/out)"
    # (a failing redirection of 'exec' would end this shell: create the file with touch first)
    [ -z "$err" ] && ! touch "$F" 2>/tmp/out && err="create: $(head -c 150 /tmp/out)"
    [ -z "$err" ] && exec 3>"$F"
    ci=0; ck=0
    t0=$(now)
    while [ -z "$err" ] && [ $ci -lt $rounds ]; do
        if ! dd if=/tmp/src.bin bs=65536 count=1 skip=$ci 2>/tmp/out >&3; then
            err="write block $ci: $(head -c 150 /tmp/out | tr '\n' ' ')"; break
        fi
        ci=$((ci+1))
        if [ $ck -lt $cn ] && [ $ci -eq $(( (ck + 1) * per )) ]; then
            if ! sync "$F" 2>/tmp/out; then err="fsync before crash $((ck+1)): $(head -c 150 /tmp/out)"; break; fi
            ck=$((ck+1))
            say "SMBK-CRASH $NAME $ck"
            sleep 1
        fi
    done
    if [ -z "$err" ] && ! sync "$F" 2>/tmp/out; then err="final fsync: $(head -c 150 /tmp/out | tr '\n' ' ')"; fi
    exec 3>&-
    t1=$(now)
    if [ -n "$err" ]; then
        res crash_io FAIL "$err"
    else
        res crash_io PASS "$((rounds * 64)) KiB written across $ck server crashes $(elapsed $t0 $t1 $((rounds * 65536)))"
    fi
    head -c $((rounds * 65536)) /tmp/src.bin > /tmp/expect.bin
    echo 3 > /proc/sys/vm/drop_caches
    if cmp /tmp/expect.bin "$F" >/tmp/out 2>&1; then
        # A remount is a new client (new ClientGuid): persistent handles the old one left behind
        # (the Linux client does not reclaim handles it had closed lazily, "deferred close") keep
        # the file STATUS_FILE_NOT_AVAILABLE until their reconnect window ends: wait for that.
        cd /
        w=0
        if umount /mnt && mount -t cifs "//$SERVER_IP/$SHARE" /mnt -o "$all" >/tmp/out 2>&1; then
            until cmp /tmp/expect.bin "$F" >/tmp/out 2>&1; do
                w=$((w+1)); [ $w -ge "${CRASH_WAIT:-75}" ] && break; sleep 1
            done
        fi
        if cmp /tmp/expect.bin "$F" >/tmp/out 2>&1; then
            res crash_verify PASS "$((rounds * 64)) KiB equal (page cache dropped; after a remount, readable after ${w}s)"
        else
            res crash_verify FAIL "after remount (${w}s): $(head -c 200 /tmp/out | tr '\n' ' ')"
        fi
    else
        res crash_verify FAIL "$(head -c 200 /tmp/out | tr '\n' ' ')"
    fi
    rm -rf "$CD" 2>/dev/null
    dmesg | grep -iE 'CIFS|SMB' | tail -n 12 | sed "s/^/LOG $NAME crash dmesg: /"
}

# ---- I/O for a drill (interop/linux-kernel/drill_client.py) ----------------
# One file stays open (fd 3); every ~100 ms one 64 KiB block of /tmp/src.bin is appended and
# fsync'd with it (busybox dd conv=fsync fsyncs its output, here fd 3), so each I/O reaches the
# server: a write + SMB2 FLUSH (MS-SMB2 3.3.5.11) that blocks while the server is away and must
# complete, without an error, once the client has reconnected and reclaimed its persistent handle.
# Lines (times: guest uptime, /proc/uptime, 10 ms resolution; read with the shell builtin, no fork):
#   DSYNC <optset> <uptime> <unix time from the RTC>          when the writer starts
#   DIO <optset> <n> <start> <end> ok|err [<detail>]           per I/O (n = 0, 1, ...)
#   DIO <optset> r<k> <start> <end> ok|err [<detail>]          read-back of MiB k (after the writer)
#   DRILL-DONE <optset> blocks=<n> errors=<e> verified=yes|no reconnects=<session> share_reconnects=<tcon>
cs() { echo "${1%.*}${1#*.}"; }     # "123.45" -> 12345 (uptime > 1 s: no leading zero)
drill_io() {
    secs=$1; end_unix=$2
    DF="/mnt/smbk-$RUN_ID-$NAME-drill.bin"
    nmax=$(( $(stat -c %s /tmp/src.bin) / 65536 ))
    rm -f "$DF" 2>/dev/null
    err=""
    touch "$DF" 2>/tmp/out || err="create: $(head -c 150 /tmp/out | tr '\n' ' ')"
    fd=0; [ -z "$err" ] && exec 3>"$DF" && fd=1
    read up _ </proc/uptime
    wall=$(date +%s)
    # DRILL_END: write until that host time (the guest RTC is the host's clock, qemu -rtc base=utc)
    if [ "$end_unix" -gt 1000000000 ] && [ "$wall" -gt 1000000000 ] && [ $((end_unix - wall)) -lt "$secs" ]; then
        secs=$((end_unix - wall)); [ "$secs" -lt 1 ] && secs=1
    fi
    say "DSYNC $NAME $up $wall"
    deadline=$(( $(cs "$up") + secs * 100 ))
    n=0; ne=0
    while [ -z "$err" ] && [ $n -lt "$nmax" ]; do
        read t0 _ </proc/uptime
        [ "$(cs "$t0")" -ge "$deadline" ] && break
        if dd if=/tmp/src.bin bs=65536 count=1 skip=$n conv=fsync 2>/tmp/out >&3; then
            read t1 _ </proc/uptime; say "DIO $NAME $n $t0 $t1 ok"
        else
            read t1 _ </proc/uptime; ne=$((ne+1))
            say "DIO $NAME $n $t0 $t1 err $(grep -v records /tmp/out | head -c 150 | tr '\n' ' ')"
            [ $ne -ge 20 ] && err="20 I/O errors"
        fi
        n=$((n+1))
        sleep 0.1
    done
    [ $fd = 1 ] && exec 3>&-
    if [ -z "$err" ] && [ $ne -eq 0 ]; then
        res drill_io PASS "$n blocks of 64 KiB written+fsync'd in ${secs}s, no error"
    else
        res drill_io FAIL "$n blocks, $ne I/O errors ${err}"
    fi
    # verify: drop the page cache so the whole file is read from the server, 1 MiB (16 blocks) a
    # read, each compared with the source and printed as an I/O line (the read-back is I/O too)
    sync; echo 3 > /proc/sys/vm/drop_caches
    v=yes; k=0; bad=""
    while [ $((k * 16)) -lt $n ]; do
        c=$(( n - k * 16 )); [ $c -gt 16 ] && c=16
        read t0 _ </proc/uptime
        if dd if="$DF" of=/tmp/got bs=65536 skip=$((k * 16)) count=$c 2>/tmp/out; then
            read t1 _ </proc/uptime
            dd if=/tmp/src.bin of=/tmp/want bs=65536 skip=$((k * 16)) count=$c 2>/dev/null
            if cmp /tmp/want /tmp/got >/tmp/out 2>&1; then say "DIO $NAME r$k $t0 $t1 ok"
            else v=no; bad="chunk $k: $(head -c 150 /tmp/out | tr '\n' ' ')"; say "DIO $NAME r$k $t0 $t1 err DATA_MISMATCH $bad"; fi
        else
            read t1 _ </proc/uptime; v=no; bad="read chunk $k: $(head -c 150 /tmp/out | tr '\n' ' ')"
            say "DIO $NAME r$k $t0 $t1 err $bad"
        fi
        k=$((k+1))
    done
    sz=$(stat -c %s "$DF" 2>/dev/null)
    [ "$sz" = $((n * 65536)) ] || { v=no; bad="size ${sz:-none}, want $((n * 65536)) $bad"; }
    if [ $v = yes ]; then
        res drill_verify PASS "$((n * 64)) KiB equal in $k reads (page cache dropped)"
    else
        res drill_verify FAIL "$bad"
    fi
    # cifs_stats_proc_show (fs/smb/client/cifs_debug.c): "<n> session <m> share reconnects"
    rc=$(grep -o '[0-9]* session [0-9]* share reconnects' /proc/fs/cifs/Stats 2>/dev/null | cut -d' ' -f1,3)
    say "DRILL-DONE $NAME blocks=$n errors=$ne verified=$v reconnects=${rc% *} share_reconnects=${rc#* }"
    rm -f "$DF" 2>/dev/null
}

i=1
while [ "$i" -le "$NOPTS" ]; do
    run_optset "$i"
    i=$((i+1))
done
finish "$NOPTS"
