"""A line-by-line port of s3fs-fuse 1.97's x-amz-meta-xattr codec
(src/string_util.cpp `raw_build_xattrs`, `parse_xattrs`, `takeout_str_dquart`,
`s3fs_decode64`, `urlEncodePath`, `urlDecode`), to check zosfs against what
s3fs itself writes and reads. Names and values are bytes, as in s3fs."""

from __future__ import annotations

import base64
import string

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
