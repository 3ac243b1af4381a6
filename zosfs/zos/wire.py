"""Reading the object store's answers: XML bodies, HTTP dates, ISO dates,
ETags and header text, turned into Python values.

Every request module parses answers with these, so that a quirk of a server
(a date format, a namespace, an encoding) is handled once.
"""

from __future__ import annotations

import calendar
import datetime as dt
import email.utils
import re
import xml.etree.ElementTree as ET

# Characters that XML 1.0 cannot carry, not even as character references.
XML_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def unquote_etag(value: str | None) -> str:
    """An ETag without its quotes ("" for none)."""
    return (value or "").strip('"')


def http_date(value: str | None) -> float:
    """Epoch seconds of an HTTP date header (0.0 when absent or unreadable)."""
    if not value:
        return 0.0
    # Every response carries an IMF-fixdate ("Wed, 25 Nov 2026 00:51:28 GMT");
    # parsing it by position costs a tenth of email.utils, which showed in
    # profiles of `ls -l` (one HEAD per file).
    parts = value.split()
    if len(parts) == 6 and parts[5] == "GMT" and parts[2] in _MONTHS and len(parts[4]) == 8:
        try:
            hms = parts[4]
            return float(calendar.timegm((int(parts[3]), _MONTHS[parts[2]], int(parts[1]),
                                          int(hms[0:2]), int(hms[3:5]), int(hms[6:8]), 0, 0, 0)))
        except ValueError:
            pass
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return 0.0


def iso_date(value: str | None) -> float:
    """Epoch seconds of an ISO 8601 date in an XML answer (0.0 when unreadable)."""
    if not value:
        return 0.0
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


# A control character in an answer, raw or as a character reference. XML 1.0
# allows neither, so Python's parser refuses the whole answer; RGW sends them
# where it echoes a key unencoded (`<NextMarker>d&#x01;e</NextMarker>`, also
# NextContinuationToken, even with encoding-type=url).
_CONTROL = re.compile(rb"&#(?:[xX]([0-9a-fA-F]{1,8})|([0-9]{1,10}));|[\x00-\x08\x0b\x0c\x0e-\x1f]")
_CHAR_TAG = "zosfs-char"  # stands for one control character, as <zosfs-char c="1"/>


def _mark_control(match: re.Match[bytes]) -> bytes:
    hexa, decimal = match.group(1), match.group(2)
    if hexa is None and decimal is None:
        code = match.group(0)[0]  # a raw control byte
    else:
        code = int(hexa, 16) if hexa is not None else int(decimal)
        if code >= 0x20 or code in (0x09, 0x0A, 0x0D):
            return match.group(0)  # a character XML allows: leave it to the parser
    return b'<%s c="%d"/>' % (_CHAR_TAG.encode(), code)


def xml(body: bytes | bytearray | memoryview) -> ET.Element:
    """The root of an XML answer, with namespaces stripped from the tags.

    Control characters (which XML 1.0 cannot carry, but servers send) become
    marker elements that `text` turns back into the characters, so that
    nothing is lost and no other text can be mistaken for them (a literal
    `<` in text arrives as `&lt;`). Raises ET.ParseError on a body that is
    not XML even so."""
    data = bytes(body)
    if _CONTROL.search(data):
        data = _CONTROL.sub(_mark_control, data)
    root = ET.fromstring(data)
    for el in root.iter():
        if "}" in el.tag:
            el.tag = el.tag.rsplit("}", 1)[1]
    return root


def text(el: ET.Element, path: str, default: str = "") -> str:
    """The text of the element at `path` under `el`, or `default`."""
    found = el.find(path)
    if found is None:
        return default
    if len(found) and all(child.tag == _CHAR_TAG for child in found):
        parts = [found.text or ""]
        for child in found:
            parts += [chr(int(child.get("c", "0"))), child.tail or ""]
        return "".join(parts)
    return found.text or default


def header_text(value: str) -> str:
    """Headers arrive as latin-1; metadata written by other tools may be UTF-8."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def byte_range(start: int, end: int | None) -> str | None:
    """The Range header for bytes [start, end) (end None: to the end), None
    for the whole object. Callers answer an empty range themselves: HTTP
    cannot ask for zero bytes."""
    if end is not None:
        return f"bytes={start}-{end - 1}"
    return f"bytes={start}-" if start else None
