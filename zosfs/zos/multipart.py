"""Multipart upload over the lean HTTP path: create, upload a part (from
bytes or, server-side, from a range of another object), complete, abort.

The write path uploads large files this way and rebuilds changed files
part by part from their old bytes (UploadPartCopy), so these requests carry
most of the bytes a mount writes. Listing uploads and parts is rare and goes
through boto3 (`zosfs.zos.control`).
"""

from __future__ import annotations

import logging
from xml.sax.saxutils import escape

from zosfs.zos import wire
from zosfs.zos.control import ControlRequests
from zosfs.zos.errors import ZosError, bad_answer, from_code
from zosfs.zos.http import Body, Response
from zosfs.zos.objects import ObjectRequests
from zosfs.zos.signing import quote_path
from zosfs.zos.values import Part, WriteOptions

log = logging.getLogger(__name__)


class MultipartRequests(ObjectRequests, ControlRequests):
    """Multipart uploads (HEAD checks a part copy's source; tags are set on completion)."""

    async def create_multipart(self, key: str, opts: WriteOptions | None = None) -> str:
        """Start an upload of `key`; returns its upload id."""
        resp = await self._request(
            "CreateMultipartUpload", "POST", key, query={"uploads": None}, headers=(opts or WriteOptions()).headers()
        )
        upload_id = wire.text(self._answer(resp, "CreateMultipartUpload", key), "UploadId")
        if not upload_id:
            raise bad_answer("CreateMultipartUpload", key, "no UploadId in the answer")
        if opts is not None and opts.tags:
            self._upload_tags[upload_id] = opts.tags
        return upload_id

    async def upload_part(self, key: str, upload_id: str, number: int, body: Body) -> str:
        """Upload part `number`; returns its ETag."""
        resp = await self._request(
            "UploadPart", "PUT", key, query={"partNumber": str(number), "uploadId": upload_id}, body=body or b""
        )
        return wire.unquote_etag(resp.headers.get("etag"))

    async def upload_part_copy(
        self, key: str, upload_id: str, number: int, src: str, start: int, end: int, if_match: str | None = None
    ) -> str:
        """Make part `number` from bytes [start, end) of object `src`, server-side."""
        headers = self._copy_source(src, if_match)
        headers["x-amz-copy-source-range"] = f"bytes={start}-{end - 1}"
        resp = await self._request(
            "UploadPartCopy", "PUT", key, query={"partNumber": str(number), "uploadId": upload_id}, headers=headers
        )
        etag = self._copy_result_etag("UploadPartCopy", key, resp)
        if if_match and (await self.head(src)).etag != if_match:
            # RGW 16.2 ignores copy conditions on UploadPartCopy. The source
            # still having that ETag after the copy means the part came from it.
            raise from_code("PreconditionFailed", 412, op="UploadPartCopy", key=key)
        return etag

    def _copy_source(self, src: str, if_match: str | None) -> dict[str, str]:
        headers = {"x-amz-copy-source": quote_path(f"/{self.bucket}/{src}")}
        if if_match:
            # S3's name, and the one RGW 16.2 reads (it ignores S3's).
            headers["x-amz-copy-source-if-match"] = headers["x-amz-copy-if-match"] = f'"{if_match}"'
        return headers

    def _copy_result_etag(self, op: str, key: str, resp: Response) -> str:
        """Copies may answer 200 with an error inside; S3 documents it."""
        root = self._answer(resp, op, key)
        if root.tag == "Error":
            raise from_code(wire.text(root, "Code"), 500, op=op, key=key)
        return wire.unquote_etag(wire.text(root, "ETag"))

    async def complete_multipart(self, key: str, upload_id: str, parts: list[Part]) -> str:
        """Complete an upload; returns the ETag, or "" (RGW answers with an
        empty one: HEAD the object when the ETag is needed)."""
        xml = "".join(f"<Part><PartNumber>{p.number}</PartNumber><ETag>\"{escape(p.etag)}\"</ETag></Part>" for p in parts)
        body = f"<CompleteMultipartUpload>{xml}</CompleteMultipartUpload>".encode()
        resp = await self._request(
            "CompleteMultipartUpload", "POST", key, query={"uploadId": upload_id}, body=body,
            headers={"content-type": "application/xml"},
        )
        root = self._answer(resp, "CompleteMultipartUpload", key)
        if root.tag == "Error":
            raise from_code(wire.text(root, "Code"), 500, op="CompleteMultipartUpload", key=key)
        tags = self._upload_tags.pop(upload_id, None)
        if tags:
            await self.put_tags(key, tags)  # RGW ignored them on CreateMultipartUpload
        return wire.unquote_etag(wire.text(root, "ETag"))

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Abort an upload; the parts uploaded so far are freed."""
        await self._request("AbortMultipartUpload", "DELETE", key, query={"uploadId": upload_id})
        self._upload_tags.pop(upload_id, None)

    async def abort_quietly(self, key: str, upload_id: str) -> None:
        """Abort an upload, logging (not raising) if that fails too."""
        try:
            await self.abort_multipart(key, upload_id)
        except ZosError as err:
            log.warning("could not abort multipart upload %s of %r: %s", upload_id, key, err)
