"""Requests on whole objects over the lean HTTP path: HEAD, GET (ranges),
PUT, DELETE, DeleteObjects, and HEAD of the bucket.

These are the requests a filesystem makes most often (`ls -l` HEADs every
file, every read is a ranged GET), hence the lean path and the care taken
in parsing their headers.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Iterable
from xml.sax.saxutils import escape

from zosfs.zos import wire
from zosfs.zos.core import ClientCore
from zosfs.zos.errors import ZosError
from zosfs.zos.http import Body
from zosfs.zos.values import DeleteFailure, ObjectInfo, WriteOptions

DELETE_BATCH = 1000  # the most keys one DeleteObjects request may carry


class ObjectRequests(ClientCore):
    """HEAD, GET, PUT and DELETE of objects; HEAD of the bucket."""

    async def head(self, key: str) -> ObjectInfo:
        """What the store knows about one object (ENOENT if there is none)."""
        resp = await self._request("HeadObject", "HEAD", key)
        return self._info(key, resp.headers)

    def _info(self, key: str, h: dict[str, str]) -> ObjectInfo:
        next_pos = h.get(self.config.append_position_header)
        return ObjectInfo(
            key=key,
            size=int(h.get("content-length", 0)),
            etag=wire.unquote_etag(h.get("etag")),
            last_modified=wire.http_date(h.get("last-modified")),
            metadata={n[11:]: wire.header_text(v) for n, v in h.items() if n.startswith("x-amz-meta-")},
            content_type=h.get("content-type"),
            storage_class=h.get("x-amz-storage-class") or "STANDARD",
            appendable=h.get("x-rgw-object-type", "").lower() == "appendable",
            next_append_position=int(next_pos) if next_pos and next_pos.isdigit() else None,
            version_id=h.get("x-amz-version-id"),
            restore=h.get("x-amz-restore"),
            tag_count=int(h.get("x-amz-tagging-count", "0") or 0),
            lock_mode=h.get("x-amz-object-lock-mode"),
            lock_until=wire.iso_date(h.get("x-amz-object-lock-retain-until-date")) or None,
            legal_hold=h.get("x-amz-object-lock-legal-hold", "").upper() == "ON",
        )

    async def get(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        *,
        if_match: str | None = None,
        into: bytearray | memoryview | None = None,
        version_id: str | None = None,
    ) -> bytes | bytearray | memoryview:
        """Bytes [start, end) of an object (end None: to the end).

        With `if_match` the read fails with ESTALE if the object's ETag has
        changed, so that a reader never mixes two versions of an object.
        With `into`, the bytes land in that buffer without another copy.
        With `version_id`, of that version of the object (a versioned bucket).
        """
        headers: dict[str, str] = {}
        if end is not None and end <= start:
            return b""
        wanted = wire.byte_range(start, end)
        if wanted:
            headers["range"] = wanted
        if if_match:
            headers["if-match"] = f'"{if_match}"'
        query = {"versionId": version_id} if version_id else None
        resp = await self._request("GetObject", "GET", key, query=query, headers=headers, into=into)
        return resp.body

    async def head_if_changed(self, key: str, etag: str | None) -> ObjectInfo | None:
        """HEAD with If-None-Match `etag`: None if the object still has that
        ETag (a 304, no headers to parse), else what HEAD tells."""
        headers = {"if-none-match": f'"{etag}"'} if etag else {}
        resp = await self._request("HeadObject", "HEAD", key, headers=headers)
        return None if resp.status == 304 else self._info(key, resp.headers)

    async def get_first(
        self, key: str, end: int, etag: str | None
    ) -> tuple[ObjectInfo, bytes | bytearray | memoryview] | None:
        """Bytes [0, end) of an object with everything a HEAD tells (its size
        from Content-Range), in one request: the check of an open that will
        read the file. With `etag`, None if the object still has that ETag."""
        headers = {"range": f"bytes=0-{end - 1}"}
        if etag:
            headers["if-none-match"] = f'"{etag}"'
        resp = await self._request("GetObject", "GET", key, headers=headers)
        if resp.status == 304:
            return None
        info = self._info(key, resp.headers)
        total = resp.headers.get("content-range", "").rpartition("/")[2]
        if resp.status == 206 and total.isdigit():
            info = dataclasses.replace(info, size=int(total))
        return info, resp.body

    async def put(self, key: str, body: Body, opts: WriteOptions | None = None) -> str:
        """Create or replace an object; returns its ETag."""
        headers = self._write_headers(opts)
        resp = await self._request("PutObject", "PUT", key, headers=headers, body=body if body is not None else b"")
        return wire.unquote_etag(resp.headers.get("etag"))

    async def delete(self, key: str, bypass_governance: bool = False) -> None:
        """Delete one object (deleting a missing one succeeds, as in S3)."""
        headers = {"x-amz-bypass-governance-retention": "true"} if bypass_governance else {}
        await self._request("DeleteObject", "DELETE", key, headers=headers)

    async def delete_many(self, keys: Iterable[str]) -> list[DeleteFailure]:
        """Delete keys, 1,000 per request; returns the keys that failed.

        Keys with characters XML 1.0 cannot carry (control characters) are
        deleted one by one: in the batch they would fail the whole request.
        """
        keys = list(keys)
        failures: list[DeleteFailure] = []
        for key in [k for k in keys if wire.XML_UNSAFE.search(k)]:
            try:
                await self.delete(key)
            except ZosError as err:
                failures.append(DeleteFailure(key, err.code, err.message))
        keys = [k for k in keys if not wire.XML_UNSAFE.search(k)]
        for i in range(0, len(keys), DELETE_BATCH):
            batch = keys[i : i + DELETE_BATCH]
            # A bare CR would reach the server as LF (XML end-of-line handling).
            items = "".join(f"<Object><Key>{escape(k, {chr(13): '&#13;'})}</Key></Object>" for k in batch)
            body = f"<Delete><Quiet>true</Quiet>{items}</Delete>".encode()
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
            resp = await self._request(
                "DeleteObjects", "POST", "", query={"delete": None}, body=body,
                headers={"content-md5": md5, "content-type": "application/xml"}, error_key=batch[0],
            )
            for e in self._answer(resp, "DeleteObjects", batch[0]).iterfind("Error"):
                failures.append(DeleteFailure(wire.text(e, "Key"), wire.text(e, "Code"), wire.text(e, "Message")))
        return failures

    async def head_bucket(self, *, retry_timeouts: bool = True) -> None:
        """Check the bucket answers. Without `retry_timeouts` a server that
        does not answer fails after one read timeout, not after every attempt."""
        await self._request("HeadBucket", "HEAD", "", error_key="", retry_timeouts=retry_timeouts)
