"""The x-amz-meta-xattr codec against a line-by-line port of s3fs-fuse 1.97's
own (src/string_util.cpp `raw_build_xattrs`, `parse_xattrs`,
`takeout_str_dquart`, `s3fs_decode64`, `urlEncodePath`, `urlDecode`): what
s3fs writes reads back here, and what zosfs writes reads back in s3fs."""

from __future__ import annotations

import base64
import string

from hypothesis import given
from hypothesis import strategies as st

from zosfs.namespace.metadata import decode_xattrs, encode_xattrs

B64 = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"


def s3fs_url_encode_path(raw: bytes) -> str:
    keep = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_~/")
    return "".join(chr(c) if c in keep else f"%{c:02X}" for c in raw)


def s3fs_url_decode(s: str) -> bytes:
    out, i = bytearray(), 0
    raw = s.encode("latin-1")
    while i < len(raw):
        if raw[i] != ord("%"):
            out.append(raw[i])
            i += 1
        else:
            out.append(int(raw[i + 1:i + 3], 16))
            i += 3
    return bytes(out)


def s3fs_header(table: dict[bytes, bytes]) -> str:
    """raw_build_xattrs (a std::map: sorted by bytes) + urlEncodePath."""
    body = ",".join('"' + name.decode("latin-1") + '":"' + base64.b64encode(v).decode() + '"'
                    for name, v in sorted(table.items()))
    return s3fs_url_encode_path(("{" + body + "}").encode("latin-1")) if table else "%7B%7D"


def s3fs_takeout(s: bytes) -> bytes | None:
    pos = s.find(b'"')
    if pos >= 0:
        s = s[pos + 1:]
        pos = s.rfind(b'"')
        if pos < 0:
            return None
        s = s[:pos]
        if b'"' in s:
            return None
    return s


def s3fs_decode64(s: bytes) -> bytes:
    def dec(c: int) -> int:
        ch = chr(c)
        return B64.index(ch) if ch in B64 else 64
    out = bytearray()
    for r in range(0, len(s), 4):
        p = [dec(s[r])] + [dec(s[r + k]) if r + k < len(s) else 64 for k in (1, 2, 3)]
        out.append(((p[0] << 2) & 0xFC) | ((p[1] >> 4) & 0x03))
        if p[2] == 64:
            break
        out.append(((p[1] << 4) & 0xF0) | ((p[2] >> 2) & 0x0F))
        if p[3] == 64:
            break
        out.append(((p[2] << 6) & 0xC0) | (p[3] & 0x3F))
    return bytes(out)


def s3fs_parse(header: str) -> dict[bytes, bytes]:
    """parse_xattrs: urlDecode, between the first { and the last }, pairs split
    at commas, each at its last colon, quotes taken off, base64 decoded."""
    text = s3fs_url_decode(header)
    start, end = text.find(b"{"), text.rfind(b"}")
    if start < 0 or end < 0 or end <= start:
        return {}
    out = {}
    for pair in text[start + 1:end].split(b","):
        pos = pair.rfind(b":")
        if pos < 0:
            continue
        key, val = s3fs_takeout(pair[:pos]), s3fs_takeout(pair[pos + 1:])
        if key is None or val is None:
            continue
        out[key] = s3fs_decode64(val)
    return out


# Names as the kernel passes them: any namespace, any UTF-8 but the few
# characters s3fs's format cannot carry (see encode_xattrs).
NAMES = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters='",\\' + "".join(map(chr, range(32)))),
    min_size=1, max_size=24,
)
TABLES = st.dictionaries(NAMES, st.binary(max_size=40), min_size=1, max_size=6)


@given(TABLES)
def test_zosfs_writes_the_header_byte_for_byte_as_s3fs(table: dict[str, bytes]) -> None:
    as_bytes = {k.encode(): v for k, v in table.items()}
    assert encode_xattrs(table, {})["xattr"] == s3fs_header(as_bytes)


@given(TABLES)
def test_what_s3fs_writes_reads_back_here(table: dict[str, bytes]) -> None:
    header = s3fs_header({k.encode(): v for k, v in table.items()})
    assert decode_xattrs({"xattr": header}) == table


@given(TABLES)
def test_what_zosfs_writes_reads_back_in_s3fs(table: dict[str, bytes]) -> None:
    header = encode_xattrs(table, {})["xattr"]
    assert s3fs_parse(header) == {k.encode(): v for k, v in table.items()}


def test_every_namespace_is_kept() -> None:
    table = {"user.a": b"1", "trusted.b": b"2", "security.c": b"3", "nonamespace": b"4"}
    header = encode_xattrs(table, {})["xattr"]
    assert header == "%7B%22nonamespace%22%3A%22NA%3D%3D%22%2C%22security.c%22%3A%22Mw%3D%3D%22%2C" \
                     "%22trusted.b%22%3A%22Mg%3D%3D%22%2C%22user.a%22%3A%22MQ%3D%3D%22%7D"
    assert decode_xattrs({"xattr": header}) == table


def test_a_name_with_a_raw_control_character_from_s3fs_is_read_as_s3fs_reads_it() -> None:
    # Not JSON (a raw tab inside a string), so read the way s3fs reads it.
    header = s3fs_header({b"user.a\tb": b"x", b"user.c": b"y"})
    assert decode_xattrs({"xattr": header}) == {"user.a\tb": b"x", "user.c": b"y"}


def test_names_s3fs_cannot_carry_round_trip_here_and_cost_s3fs_only_themselves() -> None:
    table = {'user.q"uote': b"1", "user.com,ma": b"2", "user.back\\slash": b"3", "user.plain": b"4"}
    header = encode_xattrs(table, {})["xattr"]
    assert decode_xattrs({"xattr": header}) == table
    assert s3fs_parse(header)[b"user.plain"] == b"4"


def test_an_unreadable_entry_is_left_out_and_the_others_kept() -> None:
    header = s3fs_url_encode_path(b'{"user.bad":"!!","user.good":"Zw=="}')
    assert decode_xattrs({"xattr": header}) == {"user.good": b"g"}
