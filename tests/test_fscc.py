"""Unit tests for smbnd.wire.fscc (+ fscc_dir, fscc_set) and smbnd.wire.security."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from smbnd import status as st
from smbnd.vfs import FileInfo
from smbnd.wire import fscc as F
from smbnd.wire import security as S


def fi(**kw) -> FileInfo:
    d = dict(creation_time=0x0102030405060708, last_access_time=0x1112131415161718,
             last_write_time=0x2122232425262728, change_time=0x3132333435363738,
             allocation_size=4096, end_of_file=5, attributes=F.FILE_ATTRIBUTE_ARCHIVE,
             file_id=0xAABBCCDD, nlink=1, is_directory=False, name="a.txt")
    d.update(kw)
    return FileInfo(**d)


FILE = fi()
DIR = fi(is_directory=True, attributes=F.FILE_ATTRIBUTE_DIRECTORY, allocation_size=0,
         end_of_file=0, nlink=3, name="d")


# ----------------------------------------------------------------- file info
def test_basic_vector():
    want = bytes.fromhex("0807060504030201" "1817161514131211" "2827262524232221"
                         "3837363534333231" "20000000" "00000000")
    assert F.encode_basic(FILE) == want


def test_standard_vector_and_semantics():
    assert F.encode_standard(FILE) == bytes.fromhex("0010000000000000" "0500000000000000" "01000000" "00" "00" "0000")
    # delete pending -> nlink-1, flag set; directories report 1 link and Directory=1
    assert F.encode_standard(FILE, delete_pending=True)[16:22] == bytes.fromhex("000000000100")
    assert F.encode_standard(DIR)[16:22] == bytes.fromhex("010000000001")


def test_fixed_sizes_match_encoders():
    cases = {
        F.FileBasicInformation: F.encode_basic(FILE),
        F.FileStandardInformation: F.encode_standard(FILE),
        F.FileInternalInformation: F.encode_internal(FILE),
        F.FileEaInformation: F.encode_ea(FILE),
        F.FileAccessInformation: F.encode_access(FILE, 0x12019F),
        F.FilePositionInformation: F.encode_position(FILE, 7),
        F.FileModeInformation: F.encode_mode(FILE, 2),
        F.FileAlignmentInformation: F.encode_alignment(FILE),
        F.FileNetworkOpenInformation: F.encode_network_open(FILE),
        F.FileAttributeTagInformation: F.encode_attribute_tag(FILE),
        F.FileCompressionInformation: F.encode_compression(FILE),
        F.FileIdInformation: F.encode_id(FILE, 0x1234),
    }
    for cls, b in cases.items():
        assert F.fixed_size(cls) == len(b), cls
        assert F.min_size(cls) == len(b)
        assert F.encode_file_info(cls, FILE, access_mask=0x12019F, position=7, mode=2,
                                  volume_serial=0x1234) == b
    for cls in (F.FileAllInformation, F.FileNameInformation, F.FileStreamInformation,
                F.FileNormalizedNameInformation):
        assert F.fixed_size(cls) is None and F.min_size(cls) is not None
    assert F.fixed_size(9999) is None and F.min_size(9999) is None


def test_all_information_layout():
    b = F.encode_all(FILE, name="\\d\\a.txt", access_mask=0x12019F, position=0x55, mode=2)
    name = "\\d\\a.txt".encode("utf-16-le")
    assert len(b) == 100 + len(name)
    assert b[:40] == F.encode_basic(FILE)
    assert b[40:64] == F.encode_standard(FILE)
    assert struct.unpack_from("<QIIQII", b, 0x40) == (0xAABBCCDD, 0, 0x12019F, 0x55, 2, 0)
    assert struct.unpack_from("<I", b, 0x60)[0] == len(name) and b[0x64:] == name
    assert F.min_size(F.FileAllInformation) == 104


def test_internal_access_position_mode_vectors():
    assert F.encode_internal(FILE) == bytes.fromhex("ddccbbaa00000000")
    assert F.encode_access(FILE, 0x001F01FF) == bytes.fromhex("ff011f00")
    assert F.encode_position(FILE, 0x0102) == bytes.fromhex("0201000000000000")
    assert F.encode_mode(FILE, 6) == bytes.fromhex("06000000")
    assert F.encode_alignment(FILE) == b"\0\0\0\0"
    assert F.encode_ea(fi(ea_size=9)) == bytes.fromhex("09000000")


def test_network_open_and_tag():
    b = F.encode_network_open(FILE)
    assert len(b) == 56 and b[:32] == F.encode_basic(FILE)[:32]
    assert struct.unpack_from("<QQII", b, 32) == (4096, 5, 0x20, 0)
    assert F.encode_attribute_tag(FILE) == bytes.fromhex("2000000000000000")


def test_stream_information():
    b = F.encode_stream(FILE)
    want = (bytes.fromhex("00000000" "0e000000" "0500000000000000" "0010000000000000")
            + "::$DATA".encode("utf-16-le"))
    assert b == want and len(b) == 38
    assert F.encode_stream(DIR) == b""


def test_names_compression_id():
    assert F.encode_name(FILE, "\\x") == bytes.fromhex("04000000" "5c007800")
    assert F.encode_normalized_name(FILE, "x") == bytes.fromhex("02000000" "7800")
    assert F.encode_file_info(F.FileNormalizedNameInformation, FILE, name="\\d\\x") == F.encode_name(FILE, "d\\x")
    assert F.encode_compression(FILE) == bytes.fromhex("0500000000000000" "0000" "00" "00" "00" "000000")
    assert F.encode_id(FILE, 0x11223344) == bytes.fromhex("4433221100000000" "ddccbbaa00000000" "0000000000000000")


def test_unknown_file_class():
    with pytest.raises(F.InvalidInfoClass) as ei:
        F.encode_file_info(200, FILE)
    assert ei.value.status == st.STATUS_INVALID_INFO_CLASS
    assert isinstance(ei.value, ValueError)


def test_times_clamped():
    b = F.encode_basic(fi(creation_time=-5))
    assert b[:8] == b"\0" * 8


# ----------------------------------------------------------------- fs info
def test_fs_encoders():
    v = F.encode_fs_volume(0x0102030405060708, 0xDEADBEEF, "vol")
    assert v == bytes.fromhex("0807060504030201" "efbeadde" "06000000" "00" "00") + "vol".encode("utf-16-le")
    assert F.encode_fs_size(100, 50, 8, 512) == struct.pack("<QQII", 100, 50, 8, 512)
    assert len(F.encode_fs_size(1, 1, 1, 1)) == F.fs_fixed_size(F.FileFsSizeInformation) == 24
    assert F.encode_fs_device() == bytes.fromhex("07000000" "20000000")
    a = F.encode_fs_attribute()
    assert a == struct.pack("<III", F.DEFAULT_FS_ATTRIBUTES, 255, 8) + "NTFS".encode("utf-16-le")
    assert F.DEFAULT_FS_ATTRIBUTES & (F.FILE_CASE_PRESERVED_NAMES | F.FILE_UNICODE_ON_DISK
                                      | F.FILE_PERSISTENT_ACLS) == 0xE
    full = F.encode_fs_full_size(100, 40, 50, 8, 512)
    assert len(full) == F.fs_fixed_size(F.FileFsFullSizeInformation) == 32
    assert len(F.encode_fs_object_id()) == F.fs_fixed_size(F.FileFsObjectIdInformation) == 64
    ss = F.encode_fs_sector_size()
    assert len(ss) == F.fs_fixed_size(F.FileFsSectorSizeInformation) == 28
    assert struct.unpack("<7I", ss) == (512, 512, 512, 512, 3, 0, 0)
    assert F.fs_fixed_size(F.FileFsVolumeInformation) is None
    assert F.fs_min_size(F.FileFsVolumeInformation) == 24
    assert F.fs_min_size(F.FileFsAttributeInformation) == 16


# ----------------------------------------------------------------- directory entries
FIXED = {1: 64, 2: 68, 3: 94, 12: 12, 37: 104, 38: 80, 60: 88, 63: 114}


@pytest.mark.parametrize("cls,size", sorted(FIXED.items()))
def test_dir_entry_sizes(cls, size):
    e = F.encode_dir_entry(cls, FILE)
    assert len(e) == size + len("a.txt") * 2
    assert F.dir_entry_fixed_size(cls) == size
    nlen_off = 8 if cls == 12 else 60
    assert struct.unpack_from("<I", e, nlen_off)[0] == 10
    assert e[-10:] == "a.txt".encode("utf-16-le")


def test_id_both_vector():
    e = F.encode_dir_entry(F.FileIdBothDirectoryInformation, fi(name="x"))
    want = (struct.pack("<II", 0, 0) + F.encode_basic(FILE)[:32]
            + struct.pack("<QQII", 5, 4096, 0x20, 2)
            + struct.pack("<I", 0) + b"\0\0" + b"\0" * 24 + b"\0\0"
            + struct.pack("<Q", 0xAABBCCDD) + b"x\0")
    assert e == want
    ex = F.encode_dir_entry(F.FileIdExtdDirectoryInformation, FILE)
    assert ex[72:88] == (0xAABBCCDD).to_bytes(16, "little")


def test_dir_entries_chain_alignment():
    ents = [fi(name="a"), fi(name="bbb"), fi(name="cc")]
    buf, n = F.encode_dir_entries(F.FileDirectoryInformation, ents, 65536)
    assert n == 3
    offs = [0]
    while True:
        nxt = struct.unpack_from("<I", buf, offs[-1])[0]
        if nxt == 0:
            break
        assert nxt % 8 == 0
        offs.append(offs[-1] + nxt)
    assert len(offs) == 3
    # last entry carries no trailing padding
    assert len(buf) == offs[-1] + 64 + 4
    names = [buf[o + 64:o + 64 + struct.unpack_from("<I", buf, o + 60)[0]].decode("utf-16-le") for o in offs]
    assert names == ["a", "bbb", "cc"]


def test_dir_entries_max_bytes():
    ents = [fi(name="a"), fi(name="b"), fi(name="c")]
    one = 64 + 2
    assert F.encode_dir_entries(1, ents, one - 1) == (b"", 0)
    buf, n = F.encode_dir_entries(1, ents, one)
    assert n == 1 and len(buf) == one and buf[:4] == b"\0\0\0\0"
    buf, n = F.encode_dir_entries(1, ents, 72 + one - 1)
    assert n == 1
    buf, n = F.encode_dir_entries(1, ents, 72 + one)
    assert n == 2 and len(buf) == 72 + one
    assert F.encode_dir_entries(1, [], 100) == (b"", 0)


def test_dir_unknown_class():
    with pytest.raises(F.InvalidInfoClass):
        F.encode_dir_entries(4, [FILE], 1000)
    with pytest.raises(F.InvalidInfoClass):
        F.encode_dir_entries(99, [], 1000)


# ----------------------------------------------------------------- set-info decoders
def test_decode_basic():
    buf = struct.pack("<qqqqII", 1, 0, -1, -2, F.FILE_ATTRIBUTE_HIDDEN, 0)
    b = F.decode_basic(buf)
    assert (b.creation_time, b.last_access_time, b.last_write_time, b.change_time,
            b.file_attributes) == (1, 0, -1, -2, 2)
    with pytest.raises(F.InfoLengthMismatch):
        F.decode_basic(buf[:39])
    with pytest.raises(F.InvalidInfoParameter):
        F.decode_basic(struct.pack("<qqqqII", -3, 0, 0, 0, 0, 0))


def _rename_buf(name: str, replace: int = 1, root: int = 0, extra: bytes = b"") -> bytes:
    n = name.encode("utf-16-le")
    return struct.pack("<B7xQI", replace, root, len(n)) + n + extra


def test_decode_rename():
    r = F.decode_rename(_rename_buf("dir\\new.txt"))
    assert r == F.RenameInfo(True, 0, "dir\\new.txt", 0)
    assert F.decode_rename(_rename_buf("x", replace=0)).replace_if_exists is False
    assert F.decode_rename(_rename_buf("x\0")).file_name == "x"
    assert F.decode_set_info(F.FileRenameInformation, _rename_buf("y")).file_name == "y"
    with pytest.raises(F.InfoLengthMismatch):
        F.decode_rename(b"\0" * 19)
    for bad in (struct.pack("<B7xQI", 1, 0, 0),               # zero length
                struct.pack("<B7xQI", 1, 0, 3) + b"abc",       # odd length
                struct.pack("<B7xQI", 1, 0, 10) + b"ab"):      # beyond buffer
        with pytest.raises(F.InvalidInfoParameter):
            F.decode_rename(bad)
    ex = F.decode_rename_ex(struct.pack("<I4xQI", 3, 0, 2) + b"z\0")
    assert ex.replace_if_exists and ex.flags == 3 and ex.file_name == "z"
    assert F.decode_link(_rename_buf("l")).file_name == "l"


def test_decode_small_classes():
    assert F.decode_disposition(b"\x01") == F.DispositionInfo(True, F.FILE_DISPOSITION_DELETE)
    assert F.decode_disposition(b"\x00").delete_pending is False
    assert F.decode_disposition_ex(struct.pack("<I", 0x3)).flags == 3
    assert F.decode_end_of_file(struct.pack("<q", 37)) == 37
    assert F.decode_allocation(struct.pack("<q", 4096)) == 4096
    assert F.decode_position(struct.pack("<q", 123456)) == 123456
    assert F.decode_mode(struct.pack("<I", 2)) == 2
    for m in (0, 2, 4, 6):
        assert F.decode_mode(struct.pack("<I", m)) == m
    for m in (1, 8, 0x10, 0x20, 0x1000):
        with pytest.raises(F.InvalidInfoParameter):
            F.decode_mode(struct.pack("<I", m))
    assert F.decode_mode(struct.pack("<I", 8), open_mode=8) == 8
    with pytest.raises(F.InvalidInfoParameter):
        F.decode_end_of_file(struct.pack("<q", -1))
    with pytest.raises(F.InfoLengthMismatch):
        F.decode_disposition(b"")
    with pytest.raises(F.InfoLengthMismatch):
        F.decode_position(b"1234567")
    with pytest.raises(F.InvalidInfoClass):
        F.decode_set_info(F.FileStandardInformation, b"\0" * 24)


def test_error_statuses():
    assert F.InfoLengthMismatch.status == st.STATUS_INFO_LENGTH_MISMATCH
    assert F.InvalidInfoParameter.status == st.STATUS_INVALID_PARAMETER
    assert F.InvalidInfoClass.status == st.STATUS_INVALID_INFO_CLASS


SET_CLASSES = [F.FileBasicInformation, F.FileRenameInformation, F.FileRenameInformationEx,
               F.FileLinkInformation, F.FileLinkInformationEx, F.FileDispositionInformation,
               F.FileDispositionInformationEx, F.FileEndOfFileInformation,
               F.FileAllocationInformation, F.FileValidDataLengthInformation,
               F.FilePositionInformation, F.FileModeInformation]


@settings(max_examples=1500, deadline=None)
@given(cls=hst.one_of(hst.sampled_from(SET_CLASSES), hst.integers(0, 255)),
       buf=hst.binary(max_size=80))
def test_fuzz_set_decoders(cls, buf):
    try:
        F.decode_set_info(cls, buf)
    except F.FsccError as e:
        assert e.status in (st.STATUS_INFO_LENGTH_MISMATCH, st.STATUS_INVALID_PARAMETER,
                            st.STATUS_INVALID_INFO_CLASS)


@settings(max_examples=500, deadline=None)
@given(name=hst.text(min_size=1, max_size=40).filter(lambda s: s.strip("\0")),
       replace=hst.integers(0, 255), pad=hst.binary(max_size=8))
def test_fuzz_rename_roundtrip(name, replace, pad):
    r = F.decode_rename(_rename_buf(name, replace, extra=pad))
    assert r.file_name == name.rstrip("\0") and r.replace_if_exists == bool(replace)


# ----------------------------------------------------------------- security descriptors
def test_sid_roundtrip_vectors():
    assert S.sid_to_bytes("S-1-1-0") == bytes.fromhex("0101000000000001" "00000000")
    assert S.sid_to_bytes("S-1-5-32-544") == bytes.fromhex("0102000000000005" "20000000" "20020000")
    for s in ("S-1-1-0", "S-1-5-18", "S-1-5-21-1-2-3-1000", "S-1-0x123456789ABC-1"):
        assert S.sid_from_bytes(S.sid_to_bytes(s)) == (s.replace("0x123456789ABC", "0x123456789ABC"),
                                                       len(S.sid_to_bytes(s)))
    assert S.sid_from_bytes(S.sid_to_bytes("S-1-0x5-7"))[0] == "S-1-5-7"
    for bad in ("", "S-1", "X-1-5", "S-2-5", "S-1-5-x", "S-1-5-4294967296",
                "S-1-5" + "-1" * 16, "S-1-281474976710656"):
        with pytest.raises(S.InvalidSid):
            S.sid_to_bytes(bad)
    with pytest.raises(S.InvalidSid):
        S.sid_from_bytes(b"\x01\x02" + b"\0" * 6 + b"\0" * 4)  # truncated
    assert S.InvalidSid.status == st.STATUS_INVALID_SID


OWNER = S.domain_user_sid(1000)
GROUP = S.domain_user_sid(513)


def test_default_sd_file_layout():
    b = S.default_sd(OWNER, GROUP, False)
    rev, sbz, ctl, oo, og, osacl, odacl = struct.unpack_from("<BBHIIII", b)
    assert (rev, sbz, ctl) == (1, 0, S.SE_SELF_RELATIVE | S.SE_DACL_PRESENT)
    assert oo == 20 and og == 48 and osacl == 0 and odacl == 76
    assert S.sid_from_bytes(b, oo)[0] == OWNER and S.sid_from_bytes(b, og)[0] == GROUP
    acl_rev, _, acl_size, count, _ = struct.unpack_from("<BBHHH", b, odacl)
    assert (acl_rev, count) == (2, 2) and odacl + acl_size == len(b)
    # first ACE: allowed, no flags, FILE_ALL_ACCESS, owner
    t, f, sz, mask = struct.unpack_from("<BBHI", b, odacl + 8)
    assert (t, f, sz, mask) == (0, 0, 36, 0x001F01FF)
    t, f, sz, mask = struct.unpack_from("<BBHI", b, odacl + 8 + 36)
    assert (t, f, sz, mask) == (0, 0, 20, 0x001200A9)
    assert b[odacl + 8 + 36 + 8:] == S.sid_to_bytes("S-1-1-0")


def test_default_sd_directory_and_selection():
    sd = S.decode_sd(S.default_sd(OWNER, GROUP, True))
    assert [a.flags for a in sd.dacl.aces] == [3, 3]
    assert sd.owner == OWNER and sd.group == GROUP and sd.sacl is None
    only_owner = S.decode_sd(S.default_sd(OWNER, GROUP, True, S.OWNER_SECURITY_INFORMATION))
    assert only_owner.owner == OWNER and only_owner.group is None and only_owner.dacl is None
    assert not only_owner.control & S.SE_DACL_PRESENT
    sacl_only = S.default_sd(OWNER, GROUP, False, S.SACL_SECURITY_INFORMATION)
    assert sacl_only == struct.pack("<BBHIIII", 1, 0, S.SE_SELF_RELATIVE, 0, 0, 0, 0)
    with_sacl = S.decode_sd(S.default_sd(OWNER, GROUP, False, 0xF))
    assert with_sacl.sacl is None and not with_sacl.control & S.SE_SACL_PRESENT


def test_sd_roundtrip_and_merge():
    sd = S.decode_sd(S.default_sd(OWNER, GROUP, False))
    sd.dacl.aces.append(S.Ace(S.ACCESS_DENIED_ACE_TYPE, 0, 0x10000, S.SID_AUTHENTICATED_USERS))
    sd.dacl.aces.append(S.Ace(0x05, 0, 0, None, b"\x01\x02\x03\x04\x05\x06\x07\x08"))  # object ACE kept raw
    blob = sd.to_bytes()
    again = S.decode_sd(blob)
    assert again.to_bytes() == blob
    assert again.dacl.aces[2].sid == S.SID_AUTHENTICATED_USERS
    new = S.SecurityDescriptor(owner="S-1-5-18", dacl=S.Acl([]))
    m = S.merge_sd(again, new, S.DACL_SECURITY_INFORMATION)
    assert m.owner == OWNER and m.dacl.aces == []
    m = S.merge_sd(again, new, S.OWNER_SECURITY_INFORMATION)
    assert m.owner == "S-1-5-18" and len(m.dacl.aces) == 4
    # NULL DACL: DACL_PRESENT with offset 0
    null = S.SecurityDescriptor(owner=OWNER, control=S.SE_SELF_RELATIVE | S.SE_DACL_PRESENT)
    nb = null.to_bytes()
    dn = S.decode_sd(nb)
    assert dn.dacl is None and dn.control & S.SE_DACL_PRESENT


@pytest.mark.parametrize("mutate", [
    lambda b: b[:19],                                             # short header
    lambda b: b"\x02" + b[1:],                                    # revision
    lambda b: b[:2] + struct.pack("<H", S.SE_DACL_PRESENT) + b[4:],  # not self-relative
    lambda b: b[:4] + struct.pack("<I", 10) + b[8:],              # owner offset inside header
    lambda b: b[:4] + struct.pack("<I", 5000) + b[8:],            # owner offset beyond
    lambda b: b[:76] + b"\x07" + b[77:],                          # ACL revision
    lambda b: b[:78] + struct.pack("<H", 500) + b[80:],           # AclSize beyond buffer
    lambda b: b[:80] + struct.pack("<H", 9) + b[82:],             # AceCount beyond ACL
    lambda b: b[:86] + struct.pack("<H", 2) + b[88:],             # AceSize < 4
    lambda b: b[:20] + b"\x01\x10" + b[22:],                      # SID with 16 subauthorities
])
def test_decode_sd_rejects(mutate):
    good = S.default_sd(OWNER, GROUP, False)
    with pytest.raises(S.InvalidSecurityDescriptor) as ei:
        S.decode_sd(mutate(good))
    assert ei.value.status == st.STATUS_INVALID_SECURITY_DESCR


@settings(max_examples=1500, deadline=None)
@given(buf=hst.binary(max_size=160))
def test_fuzz_decode_sd(buf):
    try:
        sd = S.decode_sd(buf)
    except S.InvalidSecurityDescriptor:
        return
    S.decode_sd(sd.to_bytes())  # anything we accept re-encodes into something we accept


@settings(max_examples=800, deadline=None)
@given(buf=hst.binary(max_size=160), flip=hst.lists(hst.tuples(hst.integers(0, 200), hst.integers(0, 255)),
                                                    max_size=6))
def test_fuzz_decode_sd_mutated(buf, flip):
    b = bytearray(S.default_sd(OWNER, GROUP, True) + buf)
    for pos, val in flip:
        if pos < len(b):
            b[pos] = val
    try:
        S.decode_sd(bytes(b))
    except S.InvalidSecurityDescriptor:
        pass


@settings(max_examples=500, deadline=None)
@given(buf=hst.binary(max_size=80), off=hst.integers(0, 80))
def test_fuzz_sid_from_bytes(buf, off):
    try:
        s, n = S.sid_from_bytes(buf, off)
    except S.InvalidSid:
        return
    assert S.sid_to_bytes(s) == buf[off:off + n]
