"""Replace mode: the object is replaced only when the new content is complete.

Its one job: for every file not in append mode (overwrites, truncation,
non-appendable objects, buckets without append, a new file that went
multipart), make the object equal to the file at flush: files up to
`rewrite_threshold` by one PUT (unchanged bytes downloaded first), larger
ones by a multipart rebuild in which unchanged parts are copied on the
server (upload-part-copy) and changed parts are sent from staging
(multipart.py). A sequential writer's finished parts are uploaded in the
background while it writes. A small non-appendable object written through
O_APPEND is instead deleted and appended anew (`become_appendable`), so that
each later `>>` costs only its new bytes.
"""

from __future__ import annotations

import errno
import logging
import math
from typing import TYPE_CHECKING

import trio

from zosfs.data.write.append import APPEND_BACKLOG
from zosfs.data.write.multipart import multipart_etag
from zosfs.data.write.state import MAX_PARTS
from zosfs.fserror import FsError
from zosfs.namespace.metadata import encode
from zosfs.zos import FileRegion, ZosError

if TYPE_CHECKING:
    from zosfs.data.write.writer import Writer

log = logging.getLogger(__package__)  # (the write path logs as one: zosfs.data.write)


class Replace:
    """The replace mode of one writer (see the module docstring); it drives
    the writer's multipart upload (`Writer.parts`)."""

    def __init__(self, writer: Writer) -> None:
        self.w = writer
        self.checked = 0  # parts below this were looked at for background upload

    @property
    def active(self) -> bool:
        return self.w.mode is self

    def outstanding(self) -> int:
        """Bytes written here that no upload has carried yet."""
        return self.w.parts.outstanding()

    # -- parts in the background ---------------------------------------------------------

    def can_free(self) -> bool:
        """Whether forced parts (see `kick`) can free staging budget now."""
        upload = self.w.parts.upload
        return upload is None or upload.part_size == self.w.part_size

    def kick(self, force: bool) -> None:
        """Upload finished parts of a file too large for one PUT; with
        `force` (the staging budget is full), every part that holds bytes
        not yet uploaded, of a file of any size: a part written only in
        places is filled from the object first. A change larger than the
        budget then goes out piecewise, each part as often as the budget
        fills (at flush the upload is completed, not replaced by a PUT)."""
        w = self.w
        if force or (w.size > w.path.opts.rewrite_threshold and w.frontier // w.part_size > self.checked):
            self.checked = max(self.checked, w.frontier // w.part_size)
            w.spawn(lambda: self._parts_in_background(force))

    async def _parts_in_background(self, force: bool = False) -> None:
        """Upload finished parts (wholly written, before the writer's frontier).
        With `force` (the staging budget is exhausted), also the unfinished
        part at the frontier: it frees the budget now and is simply uploaded
        again once it changes (S3 lets a part number be uploaded again)."""
        w = self.w
        async with w.lock:
            if w.discarded or not self.active or not w.pending:
                return
            claimed = await w.parts.claim_ready(force)
        if claimed is None:
            return
        mp, ready = claimed
        for n in ready:
            w.spawn(lambda n=n: w.parts.upload_part(mp, n))

    def behind(self) -> bool:
        """Whether the writer should wait for its parts (see
        Writer.keep_pace): a new file past multipart_threshold, whose
        uploaded parts are freed, waits while more than APPEND_BACKLOG is
        neither appended nor in freed parts, as long as some part is on its
        way (a writer whose parts are not ready, such as one leaving holes,
        is never held). Parts uploaded and waiting to be cached before they
        are freed (cachefeed.py, at most PART_BACKLOG) count as freed: the
        cache never holds a writer back."""
        w = self.w
        mp = w.parts.upload
        return not (mp is None or not mp.busy or w.error is not None or not w.parts.frees_parts()
                    or w.size - w.base_limit - w.freed.total() - w.path.feeds.queued(w) <= APPEND_BACKLOG)

    # -- at flush ------------------------------------------------------------------------

    async def flush(self) -> None:
        """Make the object equal to the file, replacing it only when complete.
        Caller holds the lock."""
        w = self.w
        ns, zos = w.path.ns, w.path.zos
        key = ns.key(w.inode)
        meta = encode(w.inode.attrs, w.inode.meta)
        size = w.size
        watch = w.watch()
        try:
            if size <= w.path.opts.rewrite_threshold and not w.freed and w.parts.upload is None:
                opts = await ns.write_options(w.inode, meta, replacing=True)
                await w.fill(0, size)
                size = w.size
                with w.changing_object():
                    etag = await zos.put(key, FileRegion(w.stage().fd, 0, size), opts)
            else:
                size, etag = await self._rebuild(key)
        finally:
            w.unwatch(watch)
        w.inode.remote, w.inode.appendable, w.inode.meta = True, False, meta
        w.inode.etag = etag
        w.base_limit = min(watch.limit(size), w.size)
        # What staging holds of the new version goes into the block cache
        # (all of it after a PUT; a rebuild's parts copied on the server and
        # parts freed from staging are not there).
        held = [(s, e) for s, e, here in w.local.pieces(0, size) if here]
        w.path.feeds.uploaded(w, etag, size, held, watch)

    async def _rebuild(self, key: str) -> tuple[int, str]:
        """Complete (or start and complete) the multipart upload of the file;
        returns the size stored and the object's ETag."""
        w = self.w
        parts = w.parts
        if parts.upload is not None and math.ceil(w.size / parts.upload.part_size) > MAX_PARTS:
            # The file outgrew its part size: start over (what only the
            # upload holds is completed first, and then copied).
            await parts.complete_prefix()
            await parts.abort()
        if parts.upload is None:
            await parts.start()
        mp = parts.upload
        assert mp is not None
        try:
            await mp.settle()
            size = w.size
            nparts = max(1, math.ceil(size / mp.part_size))
            if mp.uploaded() > nparts:
                # Truncated below parts already uploaded, which RGW would not
                # leave out: start over (staging and the object hold it all,
                # since an upload holding freed parts completes first).
                if w.freed:
                    raise FsError(errno.EIO, f"internal error: {w.key_at_start!r} has parts beyond its end")
                await parts.abort()
                await parts.start()
                mp = parts.upload
                assert mp is not None
            done = await parts.complete(mp, key, nparts)
        except (ZosError, FsError) as err:
            # The upload and its finished parts stay for the next attempt
            # (fsync or close again); release aborts it if none succeeds.
            if isinstance(err, ZosError) and err.code == "NoSuchUpload":
                parts.upload = None
            raise
        except BaseException:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + 10  # (a stalled server: never wait its retries out)
                await parts.abort()
            raise
        parts.upload = None
        parts.forget_freed()
        etag = multipart_etag([p.etag for p in done])
        w.path.feeds.completed(w, mp.upload_id, [(p.number, p.etag) for p in done], etag, size)
        return size, etag

    # -- back to append mode -------------------------------------------------------------

    def may_become_appendable(self) -> bool:
        """A small object that is not appendable (made by PUT, multipart or
        a copy, or by this mount's rewrite after a truncation), written to
        through O_APPEND (`>>`), whose rewrite would be a PUT anyway."""
        w = self.w
        return (w.path.append_ok and w.inode.remote and not w.inode.appendable and not w.freed
                and w.parts.upload is None and w.size <= w.path.opts.rewrite_threshold)

    async def become_appendable(self) -> None:
        """Store the file as an appendable object: delete the object, then
        append all of the file (what a PUT would have sent), so that every
        later `>>` costs only its new bytes, instead of rewriting the whole
        file each time (a log truncated by `: > log` or logrotate's
        copytruncate became a PUT object, and each line then cost a download
        and an upload of the log). Readers elsewhere may find no object for
        the few milliseconds between the two requests; staging holds the
        whole file first (a failure leaves it there, as for a new file).
        Caller holds the lock."""
        w = self.w
        ns = w.path.ns
        key = ns.key(w.inode)
        # Tags and ACL are read now, while the object exists: its
        # appendable successor carries them (see Namespace.write_options).
        await ns.write_options(w.inode, encode(w.inode.attrs, w.inode.meta), replacing=True)
        await w.fill(0, w.size)
        if not self.active or not self.may_become_appendable():
            return  # (changed while the bytes came)
        w.stage().write_journal(created=True)  # staging holds all of the file now
        w.created = True
        try:
            with w.changing_object():
                await w.path.zos.delete(key)
        except ZosError as err:
            log.info("%r stays a non-appendable object: deleting it before appending failed (%s)", key, err)
            return
        log.debug("%r is stored again as an appendable object (written through O_APPEND)", key)
        w.inode.remote, w.inode.etag = False, ""
        w.base_limit = 0
        w.appends.remote_len = 0  # (the object is gone: it holds none of the file)
        w.switch(w.appends, "written through O_APPEND")
        w.dirty.add(0, w.size)
        await w.appends.append(w.size)  # in one request: never a partial version in the bucket
