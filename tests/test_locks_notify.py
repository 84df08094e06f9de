"""Byte-range locks (MS-SMB2 3.3.5.14, MS-FSA 2.1.4.10 / 2.1.5.8 / 2.1.5.9) and CHANGE_NOTIFY
(MS-SMB2 3.3.5.19, MS-FSA 2.1.5.10) edge cases, through a real client (smbprotocol); the behaviour
smbtorture's smb2.lock and smb2.notify suites check."""
import os
import struct
import time
from collections import OrderedDict

import pytest
from smbprotocol.change_notify import ChangeNotifyFlags, CompletionFilter, FileAction, FileSystemWatcher
from smbprotocol.exceptions import SMBResponseException
from smbprotocol.file_info import FileInformationClass, InfoType
from smbprotocol.header import NtStatus
from smbprotocol.open import (CreateDisposition, CreateOptions, DirectoryAccessMask, FilePipePrinterAccessMask,
                              ImpersonationLevel, LockFlags, Open, SMB2SetInfoRequest)
from smbprotocol.structure import IntField, Structure

from smbnd import status as st
from smbnd_server import SmbndServer
from test_smbprotocol import RW, SHARE_ALL, Client, _wait_pending

SHARED_NOW = LockFlags.SMB2_LOCKFLAG_SHARED_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
EXCL_NOW = LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
UNLOCK = LockFlags.SMB2_LOCKFLAG_UNLOCK
STATUS_INVALID_LOCK_RANGE = 0xC00001A1
U64 = 0xFFFFFFFFFFFFFFFF


class _LockElement(Structure):
    """SMB2_LOCK_ELEMENT (MS-SMB2 2.2.26.1) with an unsigned Length and unchecked Flags."""

    def __init__(self):
        self.fields = OrderedDict([("offset", IntField(size=8)), ("length", IntField(size=8)),
                                   ("flags", IntField(size=4)), ("reserved", IntField(size=4, default=0))])
        super().__init__()


def _el(offset, length, flags):
    e = _LockElement()
    e["offset"], e["length"], e["flags"] = offset, length, flags
    return e


def _status(fn, *args, **kw) -> int:
    try:
        fn(*args, **kw)
    except SMBResponseException as e:
        return e.status
    return st.STATUS_SUCCESS


@pytest.fixture
def client(server):
    c = Client(server)
    yield c
    c.close()


@pytest.fixture
def pair(server):
    """Two opens of one file on two connections."""
    one, two = Client(server), Client(server)
    name = f"lk_{time.monotonic_ns()}.bin"
    a = one.open(name)
    a.write(b"\0" * 200)
    b = two.open(name)
    yield one, a, two, b
    for c, o in ((one, a), (two, b)):
        try:
            o.close()
        except Exception:
            pass
        c.close()


# ---- locks -------------------------------------------------------------------------------------
def test_lock_range_limits(pair):
    """MS-FSA 2.1.5.8: a range with bytes past 2^64-1 is STATUS_INVALID_LOCK_RANGE; the last byte
    itself can be locked."""
    _, a, _, b = pair
    assert _status(a.lock, [_el(U64, 2, EXCL_NOW)]) == STATUS_INVALID_LOCK_RANGE
    assert _status(a.lock, [_el(U64, U64, EXCL_NOW)]) == STATUS_INVALID_LOCK_RANGE
    a.lock([_el(U64, 1, EXCL_NOW)])
    for _ in range(3):   # SMB2 never turns repeated failures into FILE_LOCK_CONFLICT (smb2.lock.errorcode)
        assert _status(b.lock, [_el(U64, 1, EXCL_NOW)]) == st.STATUS_LOCK_NOT_GRANTED
    a.lock([_el(U64, 1, UNLOCK)])
    a.lock([_el(1 << 63, 1, EXCL_NOW)])
    assert _status(b.lock, [_el(1 << 63, 1, EXCL_NOW)]) == st.STATUS_LOCK_NOT_GRANTED


@pytest.mark.parametrize("first,second,ok", [
    ((10, 0), (10, 0), True), ((10, 0), (9, 1), True), ((10, 0), (10, 1), True), ((10, 0), (11, 1), True),
    ((10, 0), (9, 2), False), ((10, 0), (10, 2), True), ((10, 0), (9, 3), False),
    ((9, 2), (10, 0), False), ((10, 2), (10, 0), True), ((0, 0), (0, 0), True),
])
def test_zero_length_locks(pair, first, second, ok):
    """MS-FSA 2.1.4.10: {X, 0} overlaps a range only if the range starts before X and reaches X;
    {0, 0} overlaps nothing (smb2.lock.zerobytelength), for another open as for the same one."""
    _, a, _, b = pair
    for other in (a, b):
        a.lock([_el(*first, EXCL_NOW)])
        got = _status(other.lock, [_el(*second, EXCL_NOW)])
        assert got == (st.STATUS_SUCCESS if ok else st.STATUS_LOCK_NOT_GRANTED)
        if ok:
            other.lock([_el(*second, UNLOCK)])
        a.lock([_el(*first, UNLOCK)])


def test_zero_byte_io_inside_lock(pair):
    _, a, _, b = pair
    a.lock([_el(0, 10, EXCL_NOW)])
    assert b.read(5, 0) == b""
    assert _status(b.read, 5, 1) == st.STATUS_FILE_LOCK_CONFLICT


def test_lock_stacking(pair):
    """A shared lock stacks on the owner's exclusive lock, not the reverse; unlock takes the
    exclusive lock first (MS-FSA 2.1.5.9), then the shared ones one by one."""
    _, a, _, b = pair
    a.lock([_el(0, 10, EXCL_NOW)])
    a.lock([_el(0, 10, SHARED_NOW)])
    a.lock([_el(0, 10, SHARED_NOW)])
    assert _status(b.lock, [_el(0, 10, SHARED_NOW)]) == st.STATUS_LOCK_NOT_GRANTED
    a.lock([_el(0, 10, UNLOCK)])                       # the exclusive one goes first
    b.lock([_el(0, 10, SHARED_NOW)])
    b.lock([_el(0, 10, UNLOCK)])
    a.lock([_el(0, 10, UNLOCK)])
    a.lock([_el(0, 10, UNLOCK)])
    assert _status(a.lock, [_el(0, 10, UNLOCK)]) == st.STATUS_RANGE_NOT_LOCKED
    a.lock([_el(20, 10, SHARED_NOW)])
    assert _status(a.lock, [_el(20, 10, EXCL_NOW)]) == st.STATUS_LOCK_NOT_GRANTED
    assert _status(a.write, b"x", 25) == st.STATUS_FILE_LOCK_CONFLICT   # shared blocks its owner's writes


def test_lock_flag_validation(pair):
    """MS-SMB2 3.3.5.14.1/2: bad flag combinations; in an unlock batch the elements before a bad one
    stay unlocked (no rollback); a lock batch is all-or-nothing."""
    _, a, _, b = pair
    for flags in (0, UNLOCK | LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK, UNLOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY,
                  LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY, 0x100 | EXCL_NOW):
        assert _status(a.lock, [_el(1, 1, flags)]) == st.STATUS_INVALID_PARAMETER, hex(flags)
    assert _status(a.lock, [_el(1, 1, EXCL_NOW), _el(5, 1, LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK)]) == \
        st.STATUS_INVALID_PARAMETER                   # a blocking element only alone
    a.lock([_el(0, 10, EXCL_NOW), _el(10, 10, EXCL_NOW)])
    assert _status(a.lock, [_el(0, 10, UNLOCK), _el(10, 10, EXCL_NOW)]) == st.STATUS_INVALID_PARAMETER
    b.lock([_el(0, 10, EXCL_NOW)])                    # the first element was unlocked
    assert _status(b.lock, [_el(30, 5, EXCL_NOW), _el(15, 1, EXCL_NOW)]) == st.STATUS_LOCK_NOT_GRANTED
    a.lock([_el(30, 5, EXCL_NOW)])                    # ... and the granted first element undone
    assert _status(a.lock, [_el(50, 1, UNLOCK), _el(10, 10, UNLOCK)]) == st.STATUS_RANGE_NOT_LOCKED


def test_pending_lock_ends_when_its_handle_closes(pair):
    """A blocking lock whose own handle is closed completes with STATUS_RANGE_NOT_LOCKED
    (smb2.lock.cancel)."""
    _, a, two, b = pair
    a.lock([_el(100, 10, EXCL_NOW)])
    msg, recv = b.lock([_el(100, 10, LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK)], send=False)
    req = two.conn.send(msg, two.sess.session_id, two.tree.tree_connect_id)
    _wait_pending(req)
    b.close()
    with pytest.raises(SMBResponseException) as e:
        recv(req)
    assert e.value.status == st.STATUS_RANGE_NOT_LOCKED
    a.lock([_el(100, 10, UNLOCK)])


def test_lock_sequence_replay(tmp_path):
    """MS-SMB2 3.3.5.14: with multichannel advertised, a LOCK whose LockSequenceIndex entry holds its
    LockSequenceNumber is a replay and succeeds without effect."""
    cfg = tmp_path / "mc.toml"
    cfg.write_text("[server]\nmultichannel = true\n")
    with SmbndServer("--config", str(cfg)) as srv:
        c = Client(srv)
        try:
            o = c.open("seq.bin")

            def lock(flags, index, number):
                msg, recv = o.lock([_el(100, 100, flags)], send=False)
                msg["lock_sequence"] = index << 4 | number     # MS-SMB2 2.2.26: number in the low 4 bits
                return _status(lambda: recv(c.conn.send(msg, c.sess.session_id, c.tree.tree_connect_id)))
            assert lock(EXCL_NOW, 1, 1) == st.STATUS_SUCCESS
            assert lock(EXCL_NOW, 1, 1) == st.STATUS_SUCCESS          # replay
            assert lock(UNLOCK, 1, 1) == st.STATUS_SUCCESS            # replay: still locked
            assert lock(EXCL_NOW, 1, 2) == st.STATUS_LOCK_NOT_GRANTED
            assert lock(EXCL_NOW, 65, 1) == st.STATUS_LOCK_NOT_GRANTED   # bucket 65: not checked
            assert lock(UNLOCK, 64, 2) == st.STATUS_SUCCESS
            assert lock(UNLOCK, 64, 2) == st.STATUS_SUCCESS           # replay
            assert lock(UNLOCK, 64, 3) == st.STATUS_RANGE_NOT_LOCKED
            o.close()
        finally:
            c.close()


# ---- change notify -----------------------------------------------------------------------------
def _mkdir(server, name):
    os.makedirs(os.path.join(server.paths["data"], name), exist_ok=True)
    return name


def _watch(d, filt, tree=False, size=4096):
    w = FileSystemWatcher(d)
    w.start(filt, flags=ChangeNotifyFlags.SMB2_WATCH_TREE if tree else 0, output_buffer_length=size)
    return w


def _changes(w, timeout=10):
    assert w.response_event.wait(timeout), "CHANGE_NOTIFY did not complete"
    return [(r["action"].get_value(), r["file_name"].get_value()) for r in w.result]


def _final_status(w, timeout=10) -> int:
    assert w.response_event.wait(timeout), "CHANGE_NOTIFY did not complete"
    return w._request.response["status"].get_value()


def _arm(d, filt, tree=False, size=4096):
    """Set up the watch with a first request, then cancel it: later changes are buffered."""
    w = _watch(d, filt, tree, size)
    _wait_pending(w._request)
    w.cancel()
    assert w.response_event.wait(10)


def _rename(c, o, target):
    name = target.encode("utf-16-le")
    req = SMB2SetInfoRequest()
    req["info_type"] = InfoType.SMB2_0_INFO_FILE
    req["file_info_class"] = FileInformationClass.FILE_RENAME_INFORMATION
    req["file_id"] = o.file_id
    req["buffer"] = struct.pack("<B7sQI", 1, b"\0" * 7, 0, len(name)) + name
    c.conn.receive(c.conn.send(req, c.sess.session_id, c.tree.tree_connect_id))


def _set_basic(c, o, attributes):
    req = SMB2SetInfoRequest()
    req["info_type"] = InfoType.SMB2_0_INFO_FILE
    req["file_info_class"] = FileInformationClass.FILE_BASIC_INFORMATION
    req["file_id"] = o.file_id
    req["buffer"] = struct.pack("<QQQQII", 0, 0, 0, 0, attributes, 0)
    c.conn.receive(c.conn.send(req, c.sess.session_id, c.tree.tree_connect_id))


def test_notify_buffers_between_requests_and_reports_modified_once(client, server):
    """Changes between requests are kept for the next one; write + set-info through one handle are
    one MODIFIED, reported when the handle closes (smb2.notify.valid-req)."""
    base = _mkdir(server, "nt_buf")
    d = client.opendir(base)
    _arm(d, 0xFFF)
    other = Client(server)
    try:
        f = other.open(f"{base}\\f.txt", disposition=CreateDisposition.FILE_CREATE)
        f.write(b"abc")
        _set_basic(other, f, 0x80)
        f.close()
        other.open(f"{base}\\g.txt", disposition=CreateDisposition.FILE_CREATE).close()
        assert _changes(_watch(d, 0xFFF)) == [(FileAction.FILE_ACTION_ADDED, "f.txt"),
                                              (FileAction.FILE_ACTION_MODIFIED, "f.txt"),
                                              (FileAction.FILE_ACTION_ADDED, "g.txt")]
    finally:
        other.close()
        d.close()


def test_notify_first_request_fixes_filter_and_buffer(client, server):
    """The first request's filter, WatchTree and buffer size stay for the handle's life; a buffer of
    1 byte makes every later answer STATUS_NOTIFY_ENUM_DIR (smb2.notify.mask-change, valid-req)."""
    base = _mkdir(server, "nt_fix")
    d = client.opendir(base)
    _arm(d, CompletionFilter.FILE_NOTIFY_CHANGE_ATTRIBUTES)
    w = _watch(d, CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME | CompletionFilter.FILE_NOTIFY_CHANGE_ATTRIBUTES)
    _wait_pending(w._request)
    other = Client(server)
    try:
        f = other.open(f"{base}\\f.txt", disposition=CreateDisposition.FILE_CREATE)   # not reported
        _set_basic(other, f, 0x2)
        f.close()
        assert _changes(w) == [(FileAction.FILE_ACTION_MODIFIED, "f.txt")]
        d2 = client.opendir(_mkdir(server, "nt_fix2"))
        _arm(d2, CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME, size=1)
        other.open("nt_fix2\\x", disposition=CreateDisposition.FILE_CREATE).close()
        assert _final_status(_watch(d2, CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME, size=65536)) == \
            NtStatus.STATUS_NOTIFY_ENUM_DIR
        d2.close()
    finally:
        other.close()
        d.close()


def test_notify_rename_actions(client, server):
    """Within a directory a rename is RENAMED_OLD/NEW_NAME, across directories REMOVED/ADDED
    (MS-FSCC 2.7.1); a renamed file is reported MODIFIED only when its handle closes
    (smb2.notify.rec)."""
    base = _mkdir(server, "nt_ren")
    _mkdir(server, "nt_ren/sub")
    d = client.opendir(base)
    _arm(d, 0xFFF, tree=True)
    other = Client(server)
    try:
        f = other.open(f"{base}\\sub\\a", access=RW | FilePipePrinterAccessMask.DELETE,
                       disposition=CreateDisposition.FILE_CREATE)
        _rename(other, f, f"{base}\\sub\\b")
        _rename(other, f, f"{base}\\c")
        assert _changes(_watch(d, 0xFFF, tree=True)) == [
            (FileAction.FILE_ACTION_ADDED, "sub\\a"),
            (FileAction.FILE_ACTION_RENAMED_OLD_NAME, "sub\\a"), (FileAction.FILE_ACTION_RENAMED_NEW_NAME, "sub\\b"),
            (FileAction.FILE_ACTION_REMOVED, "sub\\b"), (FileAction.FILE_ACTION_ADDED, "c")]
        w = _watch(d, 0xFFF, tree=True)
        _wait_pending(w._request)
        f.close()
        assert _changes(w) == [(FileAction.FILE_ACTION_MODIFIED, "c")]
    finally:
        other.close()
        d.close()


def test_notify_delete_pending_and_access(client, server):
    """A waiting request on a directory that gets delete-on-close ends with STATUS_DELETE_PENDING
    (smb2.notify.rmdir*); a handle without FILE_LIST_DIRECTORY cannot watch (handle-permissions)."""
    base = _mkdir(server, "nt_del")
    d = client.opendir(base)
    w = _watch(d, CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME)
    _wait_pending(w._request)
    other = Client(server)
    try:
        x = Open(other.tree, base)
        x.create(ImpersonationLevel.Impersonation, DirectoryAccessMask.DELETE | DirectoryAccessMask.FILE_LIST_DIRECTORY,
                 0, SHARE_ALL, CreateDisposition.FILE_OPEN,
                 CreateOptions.FILE_DIRECTORY_FILE | CreateOptions.FILE_DELETE_ON_CLOSE)
        x.close()
        assert _final_status(w) == NtStatus.STATUS_DELETE_PENDING
        d.close()
        assert not os.path.exists(os.path.join(server.paths["data"], base))
        _mkdir(server, "nt_perm")
        p = Open(client.tree, "nt_perm")
        p.create(ImpersonationLevel.Impersonation, DirectoryAccessMask.FILE_READ_ATTRIBUTES, 0, SHARE_ALL,
                 CreateDisposition.FILE_OPEN, CreateOptions.FILE_DIRECTORY_FILE)
        assert _final_status(_watch(p, CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME)) == \
            NtStatus.STATUS_ACCESS_DENIED
        p.close()
    finally:
        other.close()
