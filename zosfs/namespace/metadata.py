"""POSIX attributes <-> object metadata, in the conventions of s3fs-fuse.

s3fs (and its forks ossfs, cosfs) keep a file's mode, owner, group and mtime
in `x-amz-meta-mode` (decimal, with the file type bits), `x-amz-meta-uid`,
`x-amz-meta-gid` and `x-amz-meta-mtime` (seconds, optionally with a
fraction), and xattrs in `x-amz-meta-xattr` (URL-encoded JSON of name ->
base64 value). Using the same names means a bucket can be shared with s3fs
and rclone users and both sides see the same `ls -l`. s3cmd's
`x-amz-meta-s3cmd-attrs` is read as a fallback.

All functions here are pure: metadata dicts in (names without the
`x-amz-meta-` prefix, lower case), attributes out, and back.
"""

from __future__ import annotations

import base64
import json
import math
import stat
import urllib.parse
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

NS = 1_000_000_000
MAX_TIME_NS = 2**63 - 1  # st_mtime_ns is a signed 64-bit number
MAX_ID = 2**32 - 2  # st_uid/st_gid are 32 bits, and 2**32 - 1 means "no change" to chown
SPECIAL_KINDS = frozenset({stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK})


@dataclass(frozen=True)
class Defaults:
    """What an object without metadata looks like: the mount's options."""

    uid: int
    gid: int
    umask: int | None  # None: not given (files 0644, directories 0750, as s3fs shows them)

    @property
    def file_mode(self) -> int:
        return stat.S_IFREG | (0o666 & ~(0o022 if self.umask is None else self.umask))

    @property
    def dir_mode(self) -> int:
        """A directory without a marker, or whose marker has no mode: s3fs
        shows 0750 (get_mode() in its metaheader.cpp) unless told otherwise."""
        return stat.S_IFDIR | (0o750 if self.umask is None else 0o777 & ~self.umask)

    @property
    def root_mode(self) -> int:
        """The mount's root when the bucket (or prefix) has no marker for it."""
        return stat.S_IFDIR | (0o777 & ~(0o022 if self.umask is None else self.umask))


@dataclass(frozen=True)
class Attrs:
    """The POSIX attributes zosfs keeps for a file, directory or symlink."""

    mode: int  # with the S_IFMT type bits
    uid: int
    gid: int
    mtime_ns: int
    ctime_ns: int
    atime_ns: int | None = None  # None: not set apart from mtime (reported as mtime)

    @property
    def kind(self) -> int:
        return stat.S_IFMT(self.mode)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _id(value: str | None) -> int | None:
    """A uid or gid the kernel can take; None for anything else (another
    tool's garbage must not make a file impossible to stat)."""
    number = _int(value)
    return number if number is not None and 0 <= number <= MAX_ID else None


def parse_time_ns(value: str | None) -> int | None:
    """'1700000000', '1700000000.5', '1700000000.123456789' or '-86400' -> ns."""
    if value is None:
        return None
    try:
        seconds = Decimal(value.strip())
    except InvalidOperation:
        return None
    if not seconds.is_finite() or abs(seconds) > MAX_TIME_NS // NS:
        return None  # (checked before multiplying: 1e999999 * NS overflows Decimal)
    return int(seconds * NS)


def last_modified_ns(seconds: float) -> int:
    """LastModified as an mtime, in whole seconds: a listing gives it in ms
    but HEAD only in seconds (an HTTP date), and a file's mtime must not
    change with the request that happened to load it."""
    return math.floor(seconds) * NS


def format_time_ns(ns: int) -> str:
    """ns -> '1700000000' or '1700000000.123456789' (s3fs and rclone read both);
    times before 1970 get a sign ('-0.5', not divmod's '-1.500000000')."""
    sign = "-" if ns < 0 else ""
    seconds, frac = divmod(abs(ns), NS)
    return f"{sign}{seconds}.{frac:09d}" if frac else f"{sign}{seconds}"


def parse_s3cmd_attrs(value: str | None) -> dict[str, str]:
    """'atime:1/ctime:2/gid:0/gname:root/md5:x/mode:33188/mtime:3/uid:0/uname:root' -> dict."""
    out: dict[str, str] = {}
    if not value:
        return out
    for item in value.split("/"):
        name, sep, val = item.partition(":")
        if sep:
            out[name.strip()] = val.strip()
    return out


def decode(
    metadata: dict[str, str],
    *,
    is_dir: bool,
    last_modified: float,
    defaults: Defaults,
) -> Attrs:
    """Attributes of an object from its metadata, with the mount's defaults
    for whatever is missing.

    The file type comes from the key (a trailing slash is a directory); from
    the metadata only S_IFLNK and the special files' types (FIFO, socket,
    character and block device) are taken, because those are stored as plain
    objects whose mode says so. Other tools sometimes write a mode without type
    bits; those get the type from the key.
    """
    s3cmd = parse_s3cmd_attrs(metadata.get("s3cmd-attrs"))
    mode = _int(metadata.get("mode"))
    if mode is None:
        mode = _int(s3cmd.get("mode"))
    if is_dir:
        kind = stat.S_IFDIR
        default_mode = defaults.dir_mode
    elif mode is not None and stat.S_IFMT(mode) == stat.S_IFLNK:
        kind = stat.S_IFLNK
        default_mode = stat.S_IFLNK | 0o777
    elif mode is not None and stat.S_IFMT(mode) in SPECIAL_KINDS:
        kind = stat.S_IFMT(mode)  # a FIFO, socket or device, as s3fs's mknod stores them
        default_mode = defaults.file_mode
    else:
        kind = stat.S_IFREG
        default_mode = defaults.file_mode
    perms = stat.S_IMODE(mode) if mode is not None else stat.S_IMODE(default_mode)
    uid = _id(metadata.get("uid"))
    if uid is None:
        uid = _id(s3cmd.get("uid"))
    gid = _id(metadata.get("gid"))
    if gid is None:
        gid = _id(s3cmd.get("gid"))
    mtime = parse_time_ns(metadata.get("mtime"))
    if mtime is None:
        mtime = parse_time_ns(s3cmd.get("mtime"))
    if mtime is None:
        mtime = last_modified_ns(last_modified)
    ctime = parse_time_ns(metadata.get("ctime"))
    atime = parse_time_ns(metadata.get("atime"))
    return Attrs(
        mode=kind | perms,
        uid=uid if uid is not None else defaults.uid,
        gid=gid if gid is not None else defaults.gid,
        mtime_ns=mtime,
        ctime_ns=ctime if ctime is not None else mtime,
        atime_ns=atime if atime is not None else mtime,
    )


def encode(attrs: Attrs, existing: dict[str, str] | None = None) -> dict[str, str]:
    """Metadata for an object with these attributes.

    Keys of other tools in `existing` (xattrs, s3cmd-attrs, anything unknown)
    are kept: zosfs never drops metadata it does not own.
    """
    meta = dict(existing or {})
    meta["mode"] = str(attrs.mode)
    meta["uid"] = str(attrs.uid)
    meta["gid"] = str(attrs.gid)
    meta["mtime"] = format_time_ns(attrs.mtime_ns)
    if attrs.ctime_ns != attrs.mtime_ns:
        meta["ctime"] = format_time_ns(attrs.ctime_ns)
    else:
        meta.pop("ctime", None)
    if attrs.atime_ns is not None and attrs.atime_ns != attrs.mtime_ns:
        meta["atime"] = format_time_ns(attrs.atime_ns)
    else:
        meta.pop("atime", None)
    return meta


def decode_xattrs(metadata: dict[str, str]) -> dict[str, bytes]:
    """Xattrs from the s3fs-compatible `xattr` metadata.

    s3fs 1.97 writes `{"NAME":"BASE64",...}` with the names raw (no JSON
    escaping) and URL-encodes the whole (`set_xattrs_to_header`), and reads it
    back by splitting at commas and at the last colon of each pair
    (`parse_xattrs`). That text is JSON whenever the names need no escaping;
    where it is not (a raw control character or quote in a name), it is read
    the way s3fs reads it. An entry that cannot be read is left out, as s3fs
    leaves it out.
    """
    raw = metadata.get("xattr")
    if not raw:
        return {}
    text = urllib.parse.unquote(raw)
    try:
        table = json.loads(text)
    except ValueError:
        table = _parse_like_s3fs(text)
    if not isinstance(table, dict):
        return {}
    out: dict[str, bytes] = {}
    for name, value in table.items():
        if isinstance(name, str) and name and isinstance(value, str):
            decoded = _base64(value)
            if decoded is not None:
                out[name] = decoded
    return out


def _parse_like_s3fs(text: str) -> dict[str, str]:
    """s3fs's `parse_xattrs`: the pairs between the first `{` and the last
    `}`, split at commas, each at its last colon, quotes taken off."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return {}
    out = {}
    for pair in text[start + 1:end].split(","):
        name, sep, value = pair.rpartition(":")
        name_text, value_text = _unquote_like_s3fs(name), _unquote_like_s3fs(value)
        if sep and name_text is not None and value_text is not None:
            out[name_text] = value_text
    return out


def _unquote_like_s3fs(text: str) -> str | None:
    """s3fs's `takeout_str_dquart`: the text between the first and the last
    double quote (None if that text holds another quote); unchanged without quotes."""
    first = text.find('"')
    if first < 0:
        return text
    last = text.rfind('"')
    if last == first or '"' in text[first + 1:last]:
        return None
    return text[first + 1:last]


def _base64(value: str) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return None


def encode_xattrs(xattrs: dict[str, bytes], existing: dict[str, str]) -> dict[str, str]:
    """Metadata with `xattr` set to these xattrs (or removed when empty), byte
    for byte as s3fs 1.97 writes it: names sorted and raw (s3fs builds the text
    from a std::map without escaping), base64 values, and its URL encoding
    (`urlEncodePath`: letters, digits and `.-_~/` stay). Only a name that
    s3fs's format cannot carry (a quote, backslash, comma or control
    character) is escaped as JSON: zosfs reads it back, s3fs skips it."""
    meta = dict(existing)
    if xattrs:
        table = {name: base64.b64encode(value).decode() for name, value in sorted(xattrs.items())}
        text = json.dumps(table, ensure_ascii=False, separators=(",", ":"))
        meta["xattr"] = urllib.parse.quote(text, safe="/")
    else:
        meta.pop("xattr", None)
    return meta


def atime_of(attrs: Attrs) -> int:
    """The atime to report: the stored one, else mtime."""
    return attrs.mtime_ns if attrs.atime_ns is None else attrs.atime_ns


def with_times(attrs: Attrs, *, mtime_ns: int | None = None, ctime_ns: int | None = None,
               atime_ns: int | None = None) -> Attrs:
    """The attributes with some times changed; an atime not stored apart
    from mtime is pinned to the old mtime first, so that moving mtime (a
    write) does not move atime."""
    atime = atime_ns if atime_ns is not None else atime_of(attrs)
    return Attrs(attrs.mode, attrs.uid, attrs.gid,
                 attrs.mtime_ns if mtime_ns is None else mtime_ns,
                 attrs.ctime_ns if ctime_ns is None else ctime_ns, atime)


DIR_CONTENT_TYPES = ("application/x-directory", "httpd/unix-directory")  # (the second: Nextcloud's)
FOLDER_SUFFIX = "_$folder$"  # `dir_$folder$`: a directory, as older tools (S3 Organizer, Hadoop) mark one


def is_legacy_dir(metadata: dict[str, str], content_type: str | None, size: int) -> bool:
    """Whether an object named without a trailing slash (`dir`) is a
    directory as older s3fs versions wrote them, read as s3fs 1.97 reads
    them: empty, and its mode says S_IFDIR, or it has no file type in its
    mode and its Content-Type is a directory's."""
    if size != 0:
        return False
    mode = _int(metadata.get("mode"))
    if mode is not None and stat.S_IFMT(mode):
        return stat.S_ISDIR(mode)
    return (content_type or "").split(";")[0].strip().lower() in DIR_CONTENT_TYPES


def decode_rdev(metadata: dict[str, str]) -> int:
    """A device's number from `rdev` (zosfs's own header; s3fs keeps none), else 0."""
    number = _int(metadata.get("rdev"))
    return number if number is not None and 0 <= number < 2**64 else 0
