"""Unit tests for smbnd.vfs (ShareFS path resolution, metadata, mutations, wildcards)."""
from __future__ import annotations

import errno
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from smbnd import status as st
from smbnd import vfs
from smbnd.vfs import ShareFS, VfsError, filetime_to_unix_ns, unix_to_filetime, wildcard_match
from smbnd.wire import fscc as F


@pytest.fixture()
def share(tmp_path):
    root = tmp_path / "share"
    root.mkdir()
    (root / "Dir").mkdir()
    (root / "Dir" / "File.TXT").write_bytes(b"hello")
    (root / "Dir" / "Sub").mkdir()
    (root / "top.bin").write_bytes(b"x" * 10)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("s")
    return ShareFS(str(root))


def R(fs, p, create=False):
    return fs.resolve(p, for_create=create)


# ----------------------------------------------------------------- resolve
def test_root_and_basic(share):
    assert R(share, "") == (st.STATUS_SUCCESS, share.root)
    assert R(share, "Dir\\File.TXT") == (st.STATUS_SUCCESS, os.path.join(share.root, "Dir", "File.TXT"))
    assert R(share, "Dir/File.TXT")[0] == st.STATUS_SUCCESS  # '/' separator like Samba


def test_leading_separator_invalid_parameter(share):
    assert R(share, "\\Dir")[0] == st.STATUS_INVALID_PARAMETER
    assert R(share, "/Dir")[0] == st.STATUS_INVALID_PARAMETER
    assert share.resolve("\\Dir", for_create=False, allow_leading_sep=True)[0] == st.STATUS_SUCCESS


@pytest.mark.parametrize("p", ["..", "..\\..\\..", "Dir\\..\\..", "..\\Dir", "Dir\\..\\..\\outside\\secret"])
def test_dotdot_escape(share, p):
    assert R(share, p, create=True) == (st.STATUS_OBJECT_PATH_SYNTAX_BAD, None)


def test_dotdot_and_dot_inside(share):
    assert R(share, "Dir\\..\\top.bin") == (st.STATUS_SUCCESS, os.path.join(share.root, "top.bin"))
    assert R(share, "Dir\\.\\File.TXT")[0] == st.STATUS_SUCCESS
    assert R(share, "Dir\\..") == (st.STATUS_SUCCESS, share.root)
    assert R(share, ".")[0] == st.STATUS_OBJECT_NAME_INVALID
    assert R(share, "Dir\\.")[0] == st.STATUS_OBJECT_NAME_INVALID


@pytest.mark.parametrize("p", ["a\x00b", "Dir\\x\x01", "a|b", "a*", "Dir\\?", "a<b", "a>b", 'a"b',
                               "Dir\\\\File.TXT", "x" * 256, "a\udcff", "\ud800"])
def test_invalid_names(share, p):
    assert R(share, p, create=True)[0] == st.STATUS_OBJECT_NAME_INVALID


def test_wildcard_folded_away_like_samba(share):
    assert R(share, "a*\\..\\top.bin")[0] == st.STATUS_SUCCESS


def test_max_component(share):
    assert R(share, "x" * 255, create=True)[0] == st.STATUS_SUCCESS


def test_streams(share):
    f = os.path.join(share.root, "Dir", "File.TXT")
    assert R(share, "Dir\\File.TXT::$DATA") == (st.STATUS_SUCCESS, f)
    assert R(share, "dir\\file.txt::$data") == (st.STATUS_SUCCESS, f)
    lk = share.lookup("Dir\\File.TXT::$DATA")
    assert lk.stream == "::$DATA" and lk.exists
    for p, sname in [("Dir\\File.TXT:s", "s"), ("Dir\\File.TXT:s:$data", "s"),
                     ("Dir\\File.TXT:?s*\x05", "?s*\x05")]:   # named data streams (smbnd.vfs_streams)
        lk = share.lookup(p)
        assert (lk.status, lk.host_path, lk.stream_name) == (st.STATUS_SUCCESS, f, sname), p
    for p in ["Dir\\File.TXT:", "Dir\\File.TXT::", "Dir\\File.TXT:s:", "Dir\\File.TXT:s\0",
              "Di\x05r\\File.TXT:s",
              "Dir\\File.TXT::$INDEX_ALLOCATION", "Dir\\File.TXT:s:$FOO", "Dir:x\\File.TXT", "::$DATA",
              "a:b:c:d", "..:s"]:
        assert R(share, p, create=True)[0] == st.STATUS_OBJECT_NAME_INVALID, p


def test_missing_components(share):
    assert R(share, "nope\\x") == (st.STATUS_OBJECT_PATH_NOT_FOUND, None)
    assert R(share, "nope\\x", create=True) == (st.STATUS_OBJECT_PATH_NOT_FOUND, None)
    assert R(share, "Dir\\nope") == (st.STATUS_OBJECT_NAME_NOT_FOUND, None)
    assert R(share, "Dir\\nope", create=True) == (st.STATUS_SUCCESS, os.path.join(share.root, "Dir", "nope"))
    # intermediate component is a file
    assert R(share, "top.bin\\x", create=True)[0] == st.STATUS_OBJECT_PATH_NOT_FOUND


def test_trailing_separator(share):
    lk = share.lookup("Dir\\")
    assert lk.status == st.STATUS_SUCCESS and lk.trailing_sep and lk.is_directory
    assert R(share, "top.bin\\")[0] == st.STATUS_OBJECT_NAME_INVALID


def test_trailing_dots_and_spaces_kept(share):
    assert R(share, "foo. ", create=True) == (st.STATUS_SUCCESS, os.path.join(share.root, "foo. "))
    assert R(share, "top.bin.")[0] == st.STATUS_OBJECT_NAME_NOT_FOUND


def test_case_insensitive_lookup(share):
    lk = share.lookup("dIR\\file.txt")
    assert lk.status == st.STATUS_SUCCESS
    assert lk.host_path == os.path.join(share.root, "Dir", "File.TXT")
    assert lk.smb_path == "Dir\\File.TXT" and lk.name == "File.TXT"
    # creating with other case finds the existing file (no duplicate)
    assert R(share, "DIR\\FILE.txt", create=True)[1] == lk.host_path


def test_case_sensitive_share(share):
    cs = ShareFS(share.root, case_sensitive=True)
    assert R(cs, "dir")[0] == st.STATUS_OBJECT_NAME_NOT_FOUND
    assert R(cs, "Dir")[0] == st.STATUS_SUCCESS


def test_exact_match_preferred(share):
    os.mkdir(os.path.join(share.root, "dir"))  # both "Dir" and "dir" on the backing fs
    assert R(share, "dir")[1] == os.path.join(share.root, "dir")
    assert R(share, "Dir")[1] == os.path.join(share.root, "Dir")
    assert R(share, "DIR")[1] == os.path.join(share.root, "Dir")  # first in sorted order


def test_case_cache_sees_external_changes(share):
    d = os.path.join(share.root, "Dir")
    assert R(share, "dir\\NEWFILE")[0] == st.STATUS_OBJECT_NAME_NOT_FOUND
    open(os.path.join(d, "NewFile"), "w").close()  # created behind our back, same tick
    assert R(share, "dir\\newfile")[1] == os.path.join(d, "NewFile")
    os.rename(os.path.join(d, "NewFile"), os.path.join(d, "Other"))
    assert R(share, "dir\\newfile")[0] == st.STATUS_OBJECT_NAME_NOT_FOUND
    assert R(share, "dir\\OTHER")[1] == os.path.join(d, "Other")


def test_case_cache_stable_negative(share):
    d = os.path.join(share.root, "Dir")
    past = time.time_ns() - 10**10
    os.utime(d, ns=(past, past))
    assert R(share, "dir\\zzz")[0] == st.STATUS_OBJECT_NAME_NOT_FOUND
    share.mkdir(os.path.join(d, "Zzz"))  # our own mutation invalidates
    assert R(share, "dir\\zzz")[1] == os.path.join(d, "Zzz")


# ----------------------------------------------------------------- symlinks
def test_symlink_escape_denied(share, tmp_path):
    os.symlink("/etc", os.path.join(share.root, "etc"))
    os.symlink(str(tmp_path / "outside"), os.path.join(share.root, "out"))
    os.symlink("../outside/secret", os.path.join(share.root, "rel"))
    os.symlink("/etc/passwd", os.path.join(share.root, "Dir", "pw"))
    for p in ["etc", "etc\\passwd", "ETC\\passwd", "out\\secret", "rel", "Dir\\pw", "out\\new"]:
        assert R(share, p, create=True) == (st.STATUS_ACCESS_DENIED, None), p
    names = [i.name for i in share.listdir(share.root)]
    assert "etc" not in names and "out" not in names and "rel" not in names


def test_symlink_inside_followed(share):
    os.symlink("Dir", os.path.join(share.root, "alias"))
    st_, p = R(share, "alias\\file.txt")
    assert st_ == st.STATUS_SUCCESS and p == os.path.join(share.root, "Dir", "File.TXT")
    assert "alias" in [i.name for i in share.listdir(share.root)]


def test_symlink_chain_out_denied(share, tmp_path):
    os.symlink(str(tmp_path), os.path.join(share.root, "Dir", "up"))
    os.symlink("Dir/up", os.path.join(share.root, "hop"))
    assert R(share, "hop\\outside\\secret")[0] == st.STATUS_ACCESS_DENIED


def test_dangling_and_loop_symlinks(share):
    os.symlink("nothing-here", os.path.join(share.root, "dangle"))
    os.symlink("loop", os.path.join(share.root, "loop"))
    assert R(share, "dangle")[0] == st.STATUS_OBJECT_NAME_NOT_FOUND
    assert R(share, "dangle", create=True)[0] == st.STATUS_ACCESS_DENIED
    assert R(share, "dangle\\x", create=True)[0] == st.STATUS_OBJECT_PATH_NOT_FOUND
    assert R(share, "loop")[0] in (st.STATUS_OBJECT_NAME_NOT_FOUND, st.STATUS_ACCESS_DENIED)
    names = [i.name for i in share.listdir(share.root)]
    assert "dangle" not in names and "loop" not in names


_path_chars = hst.sampled_from(list("ab.\\/:*?<>\"| ") + ["..", "etc", "Dir", "\x00", "é", "\udcff"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=hst.lists(_path_chars, max_size=12), create=hst.booleans())
def test_fuzz_never_escapes(share, parts, create):
    if not os.path.lexists(os.path.join(share.root, "etc")):
        os.symlink("/etc", os.path.join(share.root, "etc"))
    status, path = share.resolve("".join(parts), for_create=create)
    if status == st.STATUS_SUCCESS:
        real = os.path.realpath(path)
        assert real == share.root or real.startswith(share.root + os.sep)
    else:
        assert path is None and status & 0xC0000000 == 0xC0000000


# ----------------------------------------------------------------- stat / listdir
def test_stat_fields(share):
    p = os.path.join(share.root, "Dir", "File.TXT")
    i = share.stat(p)
    s = os.stat(p)
    assert i.name == "File.TXT" and not i.is_directory
    assert i.end_of_file == 5 and i.allocation_size >= 5
    assert i.attributes == F.FILE_ATTRIBUTE_ARCHIVE
    assert i.file_id == s.st_ino
    assert i.last_write_time == unix_to_filetime(s.st_mtime_ns)
    d = share.stat(os.path.join(share.root, "Dir"), name_hint="dir")
    assert d.is_directory and d.attributes == F.FILE_ATTRIBUTE_DIRECTORY
    assert d.end_of_file == 0 and d.allocation_size == 0 and d.name == "dir"
    with pytest.raises(VfsError) as ei:
        share.stat(os.path.join(share.root, "nope"))
    assert ei.value.status == st.STATUS_OBJECT_NAME_NOT_FOUND


def test_listdir(share):
    d = os.path.join(share.root, "Dir")
    open(os.path.join(d, "a:b"), "w").close()      # not representable for Windows
    open(os.path.join(d, "bad\x01"), "w").close()
    open(os.path.join(d, "aaa"), "w").close()
    open(os.path.join(d, "Zed"), "w").close()
    ents = share.listdir(d)
    assert [e.name for e in ents] == [".", "..", "aaa", "File.TXT", "Sub", "Zed"]
    assert ents[0].is_directory and ents[1].is_directory
    assert ents[1].file_id == os.stat(share.root).st_ino
    root = share.listdir(share.root)
    assert root[1].file_id == root[0].file_id  # ".." of the share root is the root
    with pytest.raises(VfsError) as ei:
        share.listdir(os.path.join(share.root, "top.bin"))
    assert ei.value.status == st.STATUS_NOT_A_DIRECTORY


# ----------------------------------------------------------------- attributes / times
def _attrs(fs, p):
    return fs.stat(p).attributes


@pytest.mark.parametrize("xattrs", [True, False])
def test_set_attributes(share, monkeypatch, xattrs):
    if not xattrs:
        def nope(*a, **k):
            raise OSError(errno.ENOTSUP, "no xattrs")
        monkeypatch.setattr(os, "setxattr", nope)
        monkeypatch.setattr(os, "getxattr", nope)
    p = os.path.join(share.root, "top.bin")
    assert share.set_attributes(p, F.FILE_ATTRIBUTE_READONLY) == 0
    assert _attrs(share, p) == F.FILE_ATTRIBUTE_READONLY
    assert share.set_attributes(p, F.FILE_ATTRIBUTE_NORMAL) == 0
    assert _attrs(share, p) == F.FILE_ATTRIBUTE_NORMAL
    assert share.set_attributes(p, F.FILE_ATTRIBUTE_HIDDEN) == 0
    assert share.set_attributes(p, 0) == 0  # 0 = don't change
    assert _attrs(share, p) == F.FILE_ATTRIBUTE_HIDDEN
    assert share.set_attributes(p, F.FILE_ATTRIBUTE_DIRECTORY) == st.STATUS_INVALID_PARAMETER
    assert _attrs(share, p) == F.FILE_ATTRIBUTE_HIDDEN
    d = os.path.join(share.root, "Dir")
    assert share.set_attributes(d, F.FILE_ATTRIBUTE_HIDDEN | F.FILE_ATTRIBUTE_SYSTEM) == 0
    assert _attrs(share, d) == F.FILE_ATTRIBUTE_DIRECTORY | F.FILE_ATTRIBUTE_HIDDEN | F.FILE_ATTRIBUTE_SYSTEM
    assert share.set_attributes(d, F.FILE_ATTRIBUTE_TEMPORARY) == st.STATUS_INVALID_PARAMETER
    assert (os.getxattr(p, vfs.XATTR_NAME) != b"") if xattrs else True


def test_root_keeps_hidden_system(share):
    assert share.set_attributes(share.root, F.FILE_ATTRIBUTE_HIDDEN | F.FILE_ATTRIBUTE_READONLY) == 0
    assert _attrs(share, share.root) == F.FILE_ATTRIBUTE_DIRECTORY | F.FILE_ATTRIBUTE_READONLY


def test_attributes_persist_across_instances(share):
    p = os.path.join(share.root, "top.bin")
    share.set_attributes(p, F.FILE_ATTRIBUTE_SYSTEM)
    assert _attrs(ShareFS(share.root), p) == F.FILE_ATTRIBUTE_SYSTEM


def test_init_metadata_adds_archive(share):
    p = os.path.join(share.root, "new")
    open(p, "w").close()
    assert share.init_metadata(p, F.FILE_ATTRIBUTE_HIDDEN) == 0
    assert _attrs(share, p) == F.FILE_ATTRIBUTE_HIDDEN | F.FILE_ATTRIBUTE_ARCHIVE
    c1 = share.stat(p).creation_time
    time.sleep(0.01)
    with open(p, "a") as f:
        f.write("more")
    assert share.stat(p).creation_time == c1  # pinned


def test_set_times(share):
    p = os.path.join(share.root, "top.bin")
    base = unix_to_filetime((1_600_000_000) * 10**9)
    assert share.set_times(p, creation_time=base + 100, last_access_time=base + 200,
                           last_write_time=base + 300, change_time=base + 400) == 0
    i = share.stat(p)
    assert (i.creation_time, i.last_access_time, i.last_write_time, i.change_time) == \
        (base + 100, base + 200, base + 300, base + 400)
    # 0 / -1 / -2 leave times alone
    assert share.set_times(p, creation_time=0, last_access_time=-1, last_write_time=-2, change_time=0) == 0
    j = share.stat(p)
    assert (j.creation_time, j.last_write_time, j.change_time) == (base + 100, base + 300, base + 400)
    # attributes change keeps creation
    share.set_attributes(p, F.FILE_ATTRIBUTE_HIDDEN)
    assert share.stat(p).creation_time == base + 100
    # a data change invalidates the pinned change time
    with open(p, "ab") as f:
        f.write(b"z")
    assert share.stat(p).change_time != base + 400
    assert share.set_times(p, last_write_time=1 << 80) == st.STATUS_INVALID_PARAMETER


def test_filetime_conversion():
    assert unix_to_filetime(0) == 116444736000000000
    assert filetime_to_unix_ns(116444736000000000) == 0
    assert filetime_to_unix_ns(unix_to_filetime(1_234_567_800)) == 1_234_567_800


def test_statvfs(share):
    total, free, spu, bps = share.statvfs()
    assert total > 0 and 0 <= free <= total and spu >= 1 and bps == 512
    t2, caller, actual, _, _ = share.statvfs_full()
    assert caller <= actual <= t2


# ----------------------------------------------------------------- mutations
def test_mkdir_rmdir_unlink(share):
    d = os.path.join(share.root, "nd")
    assert share.mkdir(d) == 0
    assert share.mkdir(d) == st.STATUS_OBJECT_NAME_COLLISION
    assert share.mkdir(os.path.join(share.root, "top.bin")) == st.STATUS_OBJECT_NAME_COLLISION
    assert share.mkdir(os.path.join(share.root, "no", "x")) == st.STATUS_OBJECT_PATH_NOT_FOUND
    assert share.rmdir(os.path.join(share.root, "Dir")) == st.STATUS_DIRECTORY_NOT_EMPTY
    assert share.rmdir(os.path.join(share.root, "top.bin")) == st.STATUS_NOT_A_DIRECTORY
    assert share.rmdir(d) == 0
    assert share.rmdir(d) == st.STATUS_OBJECT_NAME_NOT_FOUND
    assert share.rmdir(share.root) == st.STATUS_ACCESS_DENIED
    assert share.unlink(os.path.join(share.root, "Dir")) == st.STATUS_FILE_IS_A_DIRECTORY
    assert share.unlink(os.path.join(share.root, "top.bin")) == 0
    assert share.unlink(os.path.join(share.root, "top.bin")) == st.STATUS_OBJECT_NAME_NOT_FOUND


def test_rename(share):
    r = share.root
    src = os.path.join(r, "top.bin")
    other = os.path.join(r, "other")
    open(other, "w").close()
    assert share.rename(src, other, False) == st.STATUS_OBJECT_NAME_COLLISION
    assert share.rename(src, os.path.join(r, "Dir"), True) == st.STATUS_ACCESS_DENIED
    assert share.rename(src, other, True) == 0
    assert not os.path.exists(src) and os.path.getsize(other) == 10
    # case-only rename: dst resolves to the source itself
    st_, dst = share.resolve("OTHER", for_create=True)
    assert dst == other
    assert share.rename(other, dst, False, new_name="OTHER") == 0
    assert os.listdir(r).count("OTHER") == 1 and "other" not in os.listdir(r)
    assert share.resolve("other", for_create=False)[1] == os.path.join(r, "OTHER")
    # replace an existing file whose case differs: new name as the client spelled it
    open(os.path.join(r, "victim"), "w").close()
    st_, dst = share.resolve("VICTIM", for_create=True)
    assert share.rename(os.path.join(r, "OTHER"), dst, True, new_name="VICTIM") == 0
    assert "VICTIM" in os.listdir(r) and "victim" not in os.listdir(r)
    # directory rename, directory onto file with replace
    assert share.rename(os.path.join(r, "Dir"), os.path.join(r, "Dir2"), False) == 0
    assert share.rename(os.path.join(r, "Dir2"), os.path.join(r, "VICTIM"), True) == 0
    assert os.path.isdir(os.path.join(r, "VICTIM"))
    assert share.rename(os.path.join(r, "nope"), os.path.join(r, "x"), False) == st.STATUS_OBJECT_NAME_NOT_FOUND
    assert share.rename(r, os.path.join(r, "x"), False) == st.STATUS_ACCESS_DENIED


def test_truncate_and_allocation(share):
    p = os.path.join(share.root, "top.bin")
    assert share.truncate(p, 3) == 0 and os.path.getsize(p) == 3
    assert share.truncate(p, -1) == st.STATUS_INVALID_PARAMETER
    assert share.set_allocation(p, 0) == 0 and os.path.getsize(p) == 0
    assert share.set_allocation(p, 8192) == 0 and os.path.getsize(p) == 0
    i = share.stat(p)
    assert i.end_of_file == 0
    assert share.set_allocation(os.path.join(share.root, "Dir"), 10) == st.STATUS_INVALID_PARAMETER


def test_read_only_share(share):
    ro = ShareFS(share.root, read_only=True)
    p = os.path.join(share.root, "top.bin")
    assert ro.mkdir(os.path.join(share.root, "x")) == st.STATUS_ACCESS_DENIED
    assert ro.unlink(p) == st.STATUS_ACCESS_DENIED
    assert ro.set_attributes(p, F.FILE_ATTRIBUTE_HIDDEN) == st.STATUS_ACCESS_DENIED
    assert ro.rename(p, p + "2", False) == st.STATUS_ACCESS_DENIED
    assert ro.truncate(p, 0) == st.STATUS_ACCESS_DENIED


def test_map_oserror():
    m = vfs.map_oserror
    assert m(FileNotFoundError(errno.ENOENT, "x")) == st.STATUS_OBJECT_NAME_NOT_FOUND
    assert m(PermissionError(errno.EACCES, "x")) == st.STATUS_ACCESS_DENIED
    assert m(OSError(errno.EPERM, "x")) == st.STATUS_ACCESS_DENIED
    assert m(FileExistsError(errno.EEXIST, "x")) == st.STATUS_OBJECT_NAME_COLLISION
    assert m(OSError(errno.ENOTEMPTY, "x")) == st.STATUS_DIRECTORY_NOT_EMPTY
    assert m(OSError(errno.ENOSPC, "x")) == st.STATUS_DISK_FULL
    assert m(IsADirectoryError(errno.EISDIR, "x")) == st.STATUS_FILE_IS_A_DIRECTORY
    assert m(NotADirectoryError(errno.ENOTDIR, "x")) == st.STATUS_OBJECT_PATH_NOT_FOUND
    assert m(OSError(errno.EIO, "x")) == st.STATUS_UNEXPECTED_IO_ERROR
    assert m(OSError(99999, "x")) == st.STATUS_UNSUCCESSFUL
    assert ShareFS.map_oserror(OSError(errno.EROFS, "x")) == st.STATUS_MEDIA_WRITE_PROTECTED


# ----------------------------------------------------------------- wildcards (MS-FSA 2.1.4.4)
WILDCARD_TABLE = [
    ("*", "anything.txt", True),
    ("*.*", "noext", True),             # Part 1 special case
    ("*", ".", True),
    ("*.txt", "a.txt", True),
    ("*.txt", "A.TXT", True),            # case-insensitive
    ("*.txt", "a.txt.bak", False),
    ("*.txt", "txt", False),
    ("a*", "abc", True),
    ("a*c", "abbbc", True),
    ("a*c", "abcd", False),
    ("?", "a", True),
    ("?", "ab", False),
    ("??", "a", False),
    ("a?c", "abc", True),
    ("a?c", "a.c", True),
    ("*a*a*a*", "aaa", True),
    ("*a*a*a*", "aa", False),
    ("file", "FILE", True),
    ("file", "file2", False),
    # DOS_QM '>': one char, or nothing at '.' / end of name
    (">", "a", True),
    (">", "ab", False),
    ("a>>", "a", True),
    ("a>>", "abc", True),
    ("a>>", "abcd", False),
    (">>>.txt", "ab.txt", True),
    (">>>.txt", "abcd.txt", False),
    ("a>.txt", "a.txt", True),
    (">", ".", False),
    # DOS_DOT '"': a '.' or nothing at end of name
    ('a"', "a", True),
    ('a"', "a.", True),
    ('a"', "ab", False),
    ('foo"txt', "foo.txt", True),
    ('foo"txt', "footxt", False),
    # DOS_STAR '<': any run not consuming the final '.'
    ("<", "abc", True),
    ("<", "a.b", False),
    ("<.txt", "a.b.txt", True),
    ("<.txt", "a.txt", True),
    ('<"*', "a.b", True),              # Win32 "*.*"
    ('<"*', "abc", True),
    ('<"', "abc", True),               # Win32 "*." = names without extension
    ('<"', "a.b", False),
    ("<b", "a.b", False),
    ("", "a", False),
    ("a", "", False),
]


@pytest.mark.parametrize("pat,name,want", WILDCARD_TABLE)
def test_wildcard_table(pat, name, want):
    assert wildcard_match(pat, name) is want


def test_wildcard_empty_both():
    assert wildcard_match("", "") is True


def test_wildcard_case_sensitive_flag():
    assert wildcard_match("A*", "abc", ignore_case=False) is False
    assert wildcard_match("a*", "abc", ignore_case=False) is True


@settings(max_examples=300, deadline=None)
@given(name=hst.text(alphabet="ab.", min_size=1, max_size=12))
def test_wildcard_star_question_vs_fnmatch(name):
    import fnmatch
    for pat in ["*", "a*", "*b", "?a*", "*.?", "a?*b", "*.*"]:
        want = True if pat in ("*", "*.*") else fnmatch.fnmatchcase(name, pat)
        assert wildcard_match(pat, name) is want, (pat, name)


@settings(max_examples=200, deadline=None)
@given(pat=hst.text(alphabet='ab.*?<>"', max_size=30), name=hst.text(alphabet="ab.", max_size=40))
def test_wildcard_total(pat, name):
    assert wildcard_match(pat, name) in (True, False)
