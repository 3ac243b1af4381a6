"""Object versions: ListObjectVersions and GET of one version, over the lean
HTTP path.

The versions view (`zosfs.namespace.versions`) lists a directory's versions
as it lists the directory (delimiter '/'), and reads a version with ranged
GETs carrying `versionId`. Keys and markers are asked URL-encoded, as in
`zosfs.zos.listing`.
"""

from __future__ import annotations

import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass

from zosfs.zos import wire
from zosfs.zos.errors import bad_answer
from zosfs.zos.objects import ObjectRequests

OP = "ListObjectVersions"


@dataclass(frozen=True)
class ObjectVersion:
    """One version of a key, or a delete marker (`deleted`)."""

    key: str
    version_id: str  # "null" for a version written while versioning was off or suspended
    last_modified: float
    last_modified_text: str  # as the server wrote it (ISO 8601), for names
    size: int
    etag: str
    is_latest: bool
    deleted: bool = False


@dataclass(frozen=True)
class VersionPage:
    versions: list[ObjectVersion]  # versions and delete markers, in the server's order
    prefixes: list[str]
    next_key_marker: str | None  # None: the last page
    next_version_marker: str | None = None


def parse_versions(root: ET.Element, prefix: str) -> VersionPage:
    """Read one ListVersionsResult. Raises ZosError for another answer."""
    if root.tag != "ListVersionsResult":
        raise bad_answer(OP, prefix, f"a <{root.tag}> where a ListVersionsResult belongs")
    encoded = wire.text(root, "EncodingType").lower() == "url"
    unquote = urllib.parse.unquote_plus if encoded else (lambda s: s)
    versions: list[ObjectVersion] = []
    for child in root:
        if child.tag not in ("Version", "DeleteMarker"):
            continue
        stamp = wire.text(child, "LastModified")
        try:
            size = int(wire.text(child, "Size", "0") or 0)
        except ValueError:
            raise bad_answer(OP, prefix, "a version's Size is not a number") from None
        versions.append(ObjectVersion(
            key=unquote(wire.text(child, "Key")),
            version_id=wire.text(child, "VersionId") or "null",
            last_modified=wire.iso_date(stamp),
            last_modified_text=stamp,
            size=size,
            etag=wire.unquote_etag(wire.text(child, "ETag")),
            is_latest=wire.text(child, "IsLatest").lower() == "true",
            deleted=child.tag == "DeleteMarker",
        ))
    prefixes = [unquote(wire.text(p, "Prefix")) for p in root.iterfind("CommonPrefixes")]
    if wire.text(root, "IsTruncated").lower() != "true":
        return VersionPage(versions, prefixes, None)
    # Go on from the last version or common prefix shown: keys and prefixes
    # are URL-encoded in the answer and so exact, but RGW sends NextKeyMarker
    # unencoded even with encoding-type=url (decoding it turned `a%25b` into
    # `a%b`, and the listing started over there, forever). Only a page that
    # shows nothing needs NextKeyMarker itself.
    last_version = versions[-1] if versions else None
    last = max([v.key for v in versions[-1:]] + prefixes[-1:], default=None)
    if last is not None:
        version_marker = last_version.version_id if last_version is not None and last == last_version.key else None
        return VersionPage(versions, prefixes, last, version_marker)
    key_marker = wire.text(root, "NextKeyMarker")
    if not key_marker:
        raise bad_answer(OP, prefix, "a truncated listing without NextKeyMarker")
    return VersionPage(versions, prefixes, key_marker, wire.text(root, "NextVersionIdMarker") or None)


class VersionRequests(ObjectRequests):
    """ListObjectVersions and reads of one version."""

    async def list_versions(
        self, prefix: str = "", delimiter: str | None = "/", *, max_keys: int = 1000
    ) -> AsyncIterator[VersionPage]:
        """Every page of the versions (and delete markers) under `prefix`,
        with the common prefixes when a delimiter is given."""
        query: dict[str, str | None] = {"versions": None, "prefix": prefix, "max-keys": str(max_keys),
                                        "encoding-type": "url"}
        if delimiter:
            query["delimiter"] = delimiter
        while True:
            resp = await self._request(OP, "GET", "", query=query, error_key=prefix)
            page = parse_versions(self._answer(resp, OP, prefix), prefix)
            yield page
            if page.next_key_marker is None:
                return
            if (page.next_key_marker, page.next_version_marker) == (query.get("key-marker"), query.get("version-id-marker")):
                raise bad_answer(OP, prefix, "a truncated listing that does not go on past its marker")
            query["key-marker"] = page.next_key_marker
            if page.next_version_marker:
                query["version-id-marker"] = page.next_version_marker
            else:
                query.pop("version-id-marker", None)
