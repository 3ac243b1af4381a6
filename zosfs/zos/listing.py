"""Listing the bucket (ListObjects) over the lean HTTP path.

Every directory a mount shows is a listing with delimiter '/', and rename
and rmdir list whole subtrees, so listing is a data-path request.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator

from zosfs.zos import wire
from zosfs.zos.core import ClientCore
from zosfs.zos.errors import from_code
from zosfs.zos.values import ListEntry, ListPage


class ListRequests(ClientCore):
    """Pages of a listing, and all of them in key order."""

    async def list(
        self,
        prefix: str = "",
        delimiter: str | None = "/",
        *,
        start_after: str | None = None,
        token: str | None = None,
        max_keys: int = 1000,
    ) -> ListPage:
        """One page of ListObjectsV2 (keys URL-encoded on the wire, so that any
        key, even one with control characters, survives the XML)."""
        query: dict[str, str | None] = {
            "list-type": "2", "prefix": prefix, "max-keys": str(max_keys), "encoding-type": "url",
        }
        if delimiter:
            query["delimiter"] = delimiter
        if token:
            query["continuation-token"] = token
        elif start_after:
            query["start-after"] = start_after
        resp = await self._request("ListObjects", "GET", "", query=query, error_key=prefix)
        root = wire.xml(resp.body)
        unquote = urllib.parse.unquote_plus
        entries = [
            ListEntry(
                key=unquote(wire.text(c, "Key")),
                size=int(wire.text(c, "Size", "0")),
                etag=wire.unquote_etag(wire.text(c, "ETag")),
                last_modified=wire.iso_date(wire.text(c, "LastModified")),
                storage_class=wire.text(c, "StorageClass") or "STANDARD",
            )
            for c in root.iterfind("Contents")
        ]
        prefixes = [unquote(wire.text(p, "Prefix")) for p in root.iterfind("CommonPrefixes")]
        truncated = wire.text(root, "IsTruncated").lower() == "true"
        next_token = wire.text(root, "NextContinuationToken") or None if truncated else None
        if truncated and next_token is None:
            raise from_code("InternalError", 500, op="ListObjects", key=prefix, detail="truncated listing without a continuation token")
        return ListPage(entries, prefixes, next_token)

    async def list_all(self, prefix: str = "", delimiter: str | None = "/") -> AsyncIterator[ListPage]:
        """Every page of a listing, in key order."""
        token: str | None = None
        while True:
            page = await self.list(prefix, delimiter, token=token)
            yield page
            if page.next_token is None:
                return
            token = page.next_token
