"""Content-Type of the objects zosfs writes, from the file name, as s3fs does.

s3fs-fuse (`S3fsCurl::LookupMimeType`) takes the type of a name's last
extension from the system's `/etc/mime.types`, else that of the extension
before it (`a.tar.gz` -> the type of `gz`, else of `tar`), else
`application/octet-stream`. zosfs reads the same tables through Python's
`mimetypes` (which loads `/etc/mime.types` and the other system files), so
that a bucket written by either tool serves the same types over HTTP.

The rule for keeping a type (README, Semantics): a file's type is kept
across rewrites, appends, chmod and renames; a rename recomputes it only
while it is still the automatic one (what the old name's extension gives),
so a type a user set with `user.zos.content_type`, or another tool stored,
survives a rename.
"""

from __future__ import annotations

import mimetypes
import re

DEFAULT = "application/octet-stream"
DIRECTORY = "application/x-directory"
# type/subtype with optional parameters: what HTTP accepts as a media type.
_VALID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*(\s*;\s*[^\x00-\x1f\x7f]*)?$")
MAX_LENGTH = 255

_types: dict[str, str] | None = None


def _table() -> dict[str, str]:
    """Extension (lower case, no dot) -> type, from the system's files."""
    global _types
    if _types is None:
        db = mimetypes.MimeTypes()
        for path in mimetypes.knownfiles:
            try:
                db.read(path, strict=True)
            except OSError:
                continue
        _types = {ext.lstrip(".").lower(): typ for ext, typ in db.types_map[True].items()}
    return _types


def guess(name: str) -> str:
    """The type s3fs would give a file of this name."""
    parts = name.split(".")
    if len(parts) < 2:
        return DEFAULT
    table = _table()
    for ext in (parts[-1], parts[-2] if len(parts) > 2 else None):
        if ext and ext.lower() in table:
            return table[ext.lower()]
    return DEFAULT


def is_automatic(content_type: str | None, name: str) -> bool:
    """Whether a type is the one a name gives by itself (or none at all, or
    the generic one, which every S3 server stores when none is sent)."""
    return not content_type or content_type in (DEFAULT, "binary/octet-stream") or content_type == guess(name)


def after_rename(content_type: str | None, old_name: str, new_name: str) -> str:
    """The type a file keeps when renamed: the new name's if the type was the
    automatic one of the old name, else the one it has (set on purpose)."""
    if is_automatic(content_type, old_name):
        return guess(new_name)
    return content_type  # type: ignore[return-value]


def check(text: str) -> str:
    """A type a user sets (`user.zos.content_type`), or ValueError."""
    text = text.strip()
    if len(text) > MAX_LENGTH or not _VALID.match(text):
        raise ValueError(f"not a media type (type/subtype[; parameters]): {text[:80]!r}")
    return text
