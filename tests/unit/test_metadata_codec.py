"""The s3fs-compatible metadata codec (zosfs/namespace/metadata.py), without a server."""

from __future__ import annotations

import base64
import json
import stat
import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zosfs.namespace.metadata import (
    Attrs,
    Defaults,
    atime_of,
    decode,
    decode_xattrs,
    encode,
    encode_xattrs,
    format_time_ns,
    parse_s3cmd_attrs,
    parse_time_ns,
    with_times,
)

DEFAULTS = Defaults(uid=1234, gid=5678, umask=0o027)
LAST_MODIFIED = 1_600_000_000.25


def attrs_of(meta: dict[str, str], *, is_dir: bool = False) -> Attrs:
    return decode(meta, is_dir=is_dir, last_modified=LAST_MODIFIED, defaults=DEFAULTS)


# -- what s3fs writes ----------------------------------------------------------


def test_s3fs_file_metadata() -> None:
    a = attrs_of({"mode": "33188", "uid": "1000", "gid": "100", "mtime": "1700000000"})
    assert a.mode == stat.S_IFREG | 0o644
    assert (a.uid, a.gid) == (1000, 100)
    assert a.mtime_ns == 1_700_000_000 * 10**9
    assert a.ctime_ns == a.mtime_ns


def test_s3fs_fractional_mtime_keeps_nanoseconds() -> None:
    assert attrs_of({"mtime": "1700000000.5"}).mtime_ns == 1_700_000_000_500_000_000
    assert attrs_of({"mtime": "1700000000.123456789"}).mtime_ns == 1_700_000_000_123_456_789


def test_s3fs_symlink_mode() -> None:
    a = attrs_of({"mode": str(stat.S_IFLNK | 0o777)})
    assert stat.S_ISLNK(a.mode)
    assert stat.S_IMODE(a.mode) == 0o777


def test_s3fs_directory_marker_mode() -> None:
    a = attrs_of({"mode": str(stat.S_IFDIR | 0o750)}, is_dir=True)
    assert a.mode == stat.S_IFDIR | 0o750


def test_type_comes_from_the_key_not_from_mode_bits() -> None:
    # A directory mode on a plain key is still a file; a file mode on a
    # marker is still a directory; a mode without type bits takes the key's.
    assert attrs_of({"mode": str(stat.S_IFDIR | 0o755)}).mode == stat.S_IFREG | 0o755
    assert attrs_of({"mode": str(stat.S_IFREG | 0o600)}, is_dir=True).mode == stat.S_IFDIR | 0o600
    assert attrs_of({"mode": "420"}).mode == stat.S_IFREG | 0o644
    # Except a symlink under a directory key: a directory stays a directory.
    assert attrs_of({"mode": str(stat.S_IFLNK | 0o777)}, is_dir=True).kind == stat.S_IFDIR


def test_no_metadata_gives_the_mount_defaults_and_last_modified() -> None:
    f = attrs_of({})
    assert f.mode == stat.S_IFREG | 0o640  # 0666 & ~027
    assert (f.uid, f.gid) == (1234, 5678)
    assert f.mtime_ns == 1_600_000_000 * 10**9  # whole seconds, as HEAD gives it
    d = attrs_of({}, is_dir=True)
    assert d.mode == stat.S_IFDIR | 0o750


def test_garbage_values_fall_back_to_defaults() -> None:
    a = attrs_of({"mode": "rwxr-xr-x", "uid": "-5", "gid": "x", "mtime": "yesterday"})
    assert a.mode == stat.S_IFREG | 0o640
    assert (a.uid, a.gid) == (1234, 5678)
    assert a.mtime_ns == 1_600_000_000 * 10**9
    for bad in ("nan", "inf", "", "1e999999", "99999999999999", "-99999999999999"):
        assert parse_time_ns(bad) is None, bad


def test_values_the_kernel_cannot_take_fall_back_to_defaults() -> None:
    # st_uid/st_gid are 32-bit (and -1 means "unchanged"); st_mtime_ns must fit 64 bits.
    a = attrs_of({"uid": str(2**32), "gid": str(2**32 - 1), "mtime": "1e30"})
    assert (a.uid, a.gid) == (1234, 5678)
    assert a.mtime_ns == 1_600_000_000 * 10**9


# -- s3cmd ---------------------------------------------------------------------------

S3CMD = ("atime:1700000100/ctime:1700000200/gid:42/gname:staff/md5:d41d8cd98f00b204e9800998ecf8427e/"
         "mode:33261/mtime:1700000300/uid:7/uname:bob")


def test_s3cmd_attrs_parse() -> None:
    parsed = parse_s3cmd_attrs(S3CMD)
    assert parsed["mode"] == "33261"
    assert parsed["uname"] == "bob"
    assert parse_s3cmd_attrs("") == {}
    assert parse_s3cmd_attrs("junk/mode:1") == {"mode": "1"}


def test_s3cmd_attrs_are_a_fallback() -> None:
    a = attrs_of({"s3cmd-attrs": S3CMD})
    assert a.mode == stat.S_IFREG | 0o755
    assert (a.uid, a.gid) == (7, 42)
    assert a.mtime_ns == 1_700_000_300 * 10**9


def test_s3fs_headers_win_over_s3cmd_attrs() -> None:
    a = attrs_of({"s3cmd-attrs": S3CMD, "mode": "33152", "uid": "1", "gid": "2", "mtime": "5"})
    assert a.mode == stat.S_IFREG | 0o600
    assert (a.uid, a.gid, a.mtime_ns) == (1, 2, 5 * 10**9)


# -- encode ------------------------------------------------------------------------------


def test_encode_uses_s3fs_names_and_formats() -> None:
    meta = encode(Attrs(stat.S_IFREG | 0o640, 10, 20, 1_700_000_000 * 10**9, 1_700_000_000 * 10**9))
    assert meta == {"mode": "33184", "uid": "10", "gid": "20", "mtime": "1700000000"}
    meta = encode(Attrs(stat.S_IFREG | 0o640, 10, 20, 1_700_000_000_000_000_001, 1_700_000_005 * 10**9))
    assert meta["mtime"] == "1700000000.000000001"
    assert meta["ctime"] == "1700000005"


def test_encode_keeps_metadata_of_other_tools() -> None:
    existing = {"s3cmd-attrs": S3CMD, "xattr": "%7B%7D", "color": "blue", "ctime": "1"}
    meta = encode(Attrs(stat.S_IFREG | 0o600, 0, 0, 10**9, 10**9), existing)
    assert meta["s3cmd-attrs"] == S3CMD
    assert meta["xattr"] == "%7B%7D"
    assert meta["color"] == "blue"
    assert "ctime" not in meta  # equal to mtime: not written
    assert existing["ctime"] == "1"  # the argument is not changed


modes = st.sampled_from([stat.S_IFREG, stat.S_IFLNK]).flatmap(lambda k: st.integers(0, 0o7777).map(lambda p: k | p))
times = st.integers(-(2**33) * 10**9, 2**33 * 10**9)  # beyond both ends of 32-bit time_t


@given(mode=modes, uid=st.integers(0, 2**32 - 2), gid=st.integers(0, 2**32 - 2), mtime=times, ctime=times,
       atime=times)
def test_round_trip(mode: int, uid: int, gid: int, mtime: int, ctime: int, atime: int) -> None:
    attrs = Attrs(mode, uid, gid, mtime, ctime, atime)
    meta = encode(attrs)
    assert all(isinstance(v, str) and v.isascii() for v in meta.values())
    assert attrs_of(meta) == attrs


@given(perms=st.integers(0, 0o7777), mtime=times)
def test_round_trip_directory(perms: int, mtime: int) -> None:
    attrs = Attrs(stat.S_IFDIR | perms, 0, 0, mtime, mtime, mtime)
    assert attrs_of(encode(attrs), is_dir=True) == attrs


@given(ns=times)
def test_time_format_round_trip(ns: int) -> None:
    assert parse_time_ns(format_time_ns(ns)) == ns


def test_times_before_1970() -> None:
    assert format_time_ns(-500_000_000) == "-0.500000000"
    assert format_time_ns(-86400 * 10**9) == "-86400"
    assert parse_time_ns("-0.5") == -500_000_000


# -- xattrs --------------------------------------------------------------------------------


def s3fs_xattr_header(table: dict[str, bytes]) -> str:
    """What s3fs writes: URL-encoded JSON of name -> base64 value."""
    return urllib.parse.quote(json.dumps({k: base64.b64encode(v).decode() for k, v in table.items()}))


def test_xattrs_written_by_s3fs_are_read() -> None:
    table = {"user.color": b"blue", "user.bin": bytes(range(256))}
    assert decode_xattrs({"xattr": s3fs_xattr_header(table)}) == table


def test_xattrs_written_here_decode_as_s3fs_does() -> None:
    table = {"user.a": b"1", "user.empty": b"", "user.\u00e9t\u00e9": "\u2603".encode()}
    meta = encode_xattrs(table, {"mode": "33188"})
    assert meta["mode"] == "33188"
    raw = json.loads(urllib.parse.unquote(meta["xattr"]))
    assert {k: base64.b64decode(v) for k, v in raw.items()} == table
    assert meta["xattr"].isascii() and "," not in meta["xattr"]  # a safe header value
    assert decode_xattrs(meta) == table


def test_removing_the_last_xattr_drops_the_header() -> None:
    assert "xattr" not in encode_xattrs({}, {"xattr": "x", "mode": "1"})


@pytest.mark.parametrize("raw", ["", "not json", "%5B1%2C2%5D", "%7B%22a%22%3A%20%22%21%21%22%7D", "%7B%22a%22%3A1%7D"])
def test_bad_xattr_headers_are_ignored(raw: str) -> None:
    assert decode_xattrs({"xattr": raw}) == {}


@given(st.dictionaries(st.text(min_size=1, max_size=20), st.binary(max_size=50), max_size=5))
def test_xattr_round_trip(table: dict[str, bytes]) -> None:
    assert decode_xattrs(encode_xattrs(table, {})) == table


def test_s3fs_time_headers() -> None:
    """s3fs 1.97 writes atime, ctime and mtime as seconds, with nine digits
    of fraction when there is one (string_util.cpp str(timespec))."""
    meta = {"mode": "33188", "mtime": "1700000000.250000000", "ctime": "1700000100", "atime": "1600000000.000000001"}
    a = attrs_of(meta)
    assert (a.mtime_ns, a.ctime_ns, a.atime_ns) == (1_700_000_000_250_000_000, 1_700_000_100 * 10**9,
                                                    1_600_000_000_000_000_001)
    assert encode(a) == meta | {"uid": "1234", "gid": "5678"}  # written back in the same form


def test_atime_stays_when_mtime_moves() -> None:
    """A write moves mtime and ctime; an atime never stored apart is pinned
    to the old mtime first, and then written (it differs from mtime)."""
    a = attrs_of({"mtime": "100"})
    b = with_times(a, mtime_ns=200 * 10**9, ctime_ns=200 * 10**9)
    assert (atime_of(b), b.mtime_ns) == (100 * 10**9, 200 * 10**9)
    assert encode(b)["atime"] == "100"
    assert "atime" not in encode(a)  # equal to mtime: not written
    assert atime_of(Attrs(stat.S_IFREG, 0, 0, 5, 5)) == 5  # not set apart: reported as mtime
