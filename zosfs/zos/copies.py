"""Server-side copy (CopyObject, or part by part above 5 GiB): what rename
and metadata changes (chmod, touch, setfattr) are made of.

Its care is in what a copy carries over: RGW drops tags when metadata is
replaced and ignores x-amz-tagging on a copy, so tags are read and set here.
"""

from __future__ import annotations

from dataclasses import replace

import trio

from zosfs.zos.multipart import MultipartRequests
from zosfs.zos.values import Grant, Part, WriteOptions

MiB = 1024 * 1024
GiB = 1024 * MiB
MAX_SINGLE_COPY = 5 * GiB  # above this a copy must go part by part
MULTIPART_COPY_PART = 512 * MiB


class CopyRequests(MultipartRequests):
    """Copies of objects, with their metadata, tags and ACL as asked."""

    async def copy(
        self,
        src: str,
        dst: str,
        opts: WriteOptions | None = None,
        *,
        size: int | None = None,
        if_match: str | None = None,
        grants: tuple[Grant, ...] | None = None,
        storage_class: str | None = None,
    ) -> str:
        """Server-side copy; returns the new ETag.

        With `opts` metadata, content type and (if given) tags are replaced;
        without, they are copied. A copy gets the default ACL unless `grants`
        (or `opts.grants`) say otherwise. Objects above 5 GiB are copied part
        by part with upload-part-copy. The copy keeps the source's storage
        class (RGW would make it STANDARD) unless `opts.storage_class` names
        another; pass `size` and `storage_class` (the source's) to save a HEAD.
        """
        if grants and opts is not None:
            opts = replace(opts, grants=grants)
        if opts is not None and opts.tags is None:
            # RGW drops the tags when the metadata is replaced, even with
            # x-amz-tagging-directive COPY: carry the source's tags over.
            opts = replace(opts, tags=await self.get_tags(src) or None)
        if opts is not None and opts.storage_class:
            storage_class = opts.storage_class
        if size is None or storage_class is None:
            info = await self.head(src)
            size, storage_class = info.size, storage_class or info.storage_class
        if opts is not None:
            opts = replace(opts, storage_class=storage_class)
        if size > MAX_SINGLE_COPY:
            if opts is None:
                info = await self.head(src)
                opts = WriteOptions(info.metadata, info.content_type, await self.get_tags(src) or None, grants=grants,
                                    storage_class=storage_class)
            return await self._multipart_copy(src, dst, size, opts, if_match)
        headers = self._copy_source(src, if_match)
        if opts is None and grants:
            headers.update(WriteOptions(grants=grants).headers())
        elif opts is not None:
            headers.update(opts.headers())
            headers["x-amz-metadata-directive"] = "REPLACE"
            if opts.tags is not None:
                headers["x-amz-tagging-directive"] = "REPLACE"
        if storage_class and storage_class != "STANDARD":
            headers["x-amz-storage-class"] = storage_class
        resp = await self._request("CopyObject", "PUT", dst, headers=headers)
        etag = self._copy_result_etag("CopyObject", dst, resp)
        if opts is not None and opts.tags:
            # RGW 16.2 ignores x-amz-tagging on a copy with REPLACE.
            await self.put_tags(dst, opts.tags)
        return etag

    async def change_storage_class(self, key: str, storage_class: str) -> str:
        """Move one object to another storage class by copying it onto itself;
        returns the new ETag.

        Up to 5 GiB it is one CopyObject with MetadataDirective COPY: RGW
        keeps the metadata, the tags and appendability (a self-copy with
        REPLACE would make an appendable object Normal), but gives the copy
        the default ACL, so the ACL is read before and set again after.
        Larger objects are copied part by part, with their metadata, content
        type and tags sent again; those come out Normal (not appendable).
        The copy is made only from the version just read (if-match), so a
        concurrent writer's newer object is never replaced by the old one.
        """
        info = await self.head(key)
        if info.storage_class == storage_class:
            return info.etag
        acl = await self.get_acl(key)
        if info.size > MAX_SINGLE_COPY:
            tags = await self.get_tags(key) or None
            opts = WriteOptions(info.metadata, info.content_type, tags, storage_class=storage_class)
            etag = await self._multipart_copy(key, key, info.size, opts, info.etag)
            if tags:
                await self.put_tags(key, tags)
        else:
            headers = self._copy_source(key, info.etag)
            headers["x-amz-metadata-directive"] = "COPY"
            headers["x-amz-storage-class"] = storage_class
            resp = await self._request("CopyObject", "PUT", key, headers=headers)
            etag = self._copy_result_etag("CopyObject", key, resp)
        await self.put_acl(key, acl=acl)
        return etag

    async def _multipart_copy(self, src: str, dst: str, size: int, opts: WriteOptions, if_match: str | None) -> str:
        upload_id = await self.create_multipart(dst, opts)
        try:
            parts = []
            for n, start in enumerate(range(0, size, MULTIPART_COPY_PART), 1):
                end = min(size, start + MULTIPART_COPY_PART)
                parts.append(Part(n, await self.upload_part_copy(dst, upload_id, n, src, start, end, if_match)))
            etag = await self.complete_multipart(dst, upload_id, parts)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.abort_quietly(dst, upload_id)
            raise
        return etag or (await self.head(dst)).etag  # RGW completes with an empty ETag
