"""The registry of a mount's open writers (`WritePath`).

Its one job: find or make the writer of a file, route the handlers' writes,
truncations, reads, flushes and closes to it, and let it go when the last
handle closes (or the file is unlinked, or the mount ends), keeping its
staging file for recovery if its data could not be stored. It also holds
what all writers share: the staging budget, the upload slots, whether the
bucket takes appends, and the nursery background uploads run in.
"""

from __future__ import annotations

import errno
import logging
import weakref

import trio

from zosfs.data.staging import Staging
from zosfs.data.write.cachefeed import CacheFeeds
from zosfs.data.write.writer import Writer
from zosfs.fserror import FsError
from zosfs.namespace.inodes import Inode
from zosfs.namespace.tree import Namespace
from zosfs.options import Options
from zosfs.zos import ZosClient, ZosError

log = logging.getLogger(__package__)  # (the write path logs as one: zosfs.data.write)

ABORT_TIMEOUT = 10.0  # seconds a close waits to abort a failed multipart upload


class WritePath:
    """All writers of a mount, and what they share."""

    def __init__(self, ns: Namespace, zos: ZosClient, staging: Staging, opts: Options, append_ok: bool) -> None:
        self.ns = ns
        self.zos = zos
        self.staging = staging
        self.opts = opts
        self.append_ok = append_ok
        self.punch_ok = True  # whether staging can free what was appended (see staging.py)
        self.part_slots = trio.Semaphore(opts.upload_concurrency)
        self.nursery: trio.Nursery | None = None
        self.writers: set[Writer] = set()
        self.feeds = CacheFeeds(self)  # what uploads carried, into the block cache (cachefeed.py)
        self.stopped = False  # flush_all began: no change is taken any more (it could reach no upload)
        self._versions: weakref.WeakKeyDictionary[Inode, int] = weakref.WeakKeyDictionary()

    def append_unavailable(self, err: ZosError) -> None:
        if self.append_ok:
            log.warning("append upload is refused by the server (%s); files are uploaded by PUT and multipart", err.code)
            self.append_ok = False

    def make_room(self) -> bool:
        """The staging budget is full: send out what can go now, however
        little, retrying uploads that failed (in replace mode, parts written
        only in places are filled from the object and sent). Returns whether
        anything can free the budget: if not, waiting is pointless (ENOSPC)."""
        can = False
        for writer in list(self.writers):
            writer.error = None
            writer.kick(force=True)
            can = writer.can_free() or can
        return can

    def version(self, inode: Inode) -> int:
        """Counts this mount's changes of a file's content (a writer began or
        ended): open handles then read the new version, not the one they
        opened, as on a local filesystem."""
        return self._versions.get(inode, 0)

    def _changed(self, inode: Inode) -> None:
        self._versions[inode] = self._versions.get(inode, 0) + 1

    def _new_writer(self, inode: Inode, truncate: bool) -> Writer:
        inode.writer = writer = Writer(self, inode, truncate)
        self.writers.add(writer)
        self._changed(inode)
        return writer

    def writer(self, inode: Inode) -> Writer:
        if inode.writer is None:
            return self._new_writer(inode, truncate=False)
        return inode.writer

    async def open_truncated(self, inode: Inode) -> None:
        """open() with O_TRUNC: the file is empty from now on."""
        self.check_open()
        if inode.writer is None:
            self._new_writer(inode, truncate=True)
        else:
            await inode.writer.truncate(0)

    def check_open(self) -> None:
        """Refuse a change once the mount is stopping: its writer is closed,
        and a new staging file would be left behind as if data were lost."""
        if self.stopped:
            raise FsError(errno.EIO, "the mount is being unmounted: no more changes are taken")

    async def write(self, inode: Inode, offset: int, data: bytes) -> int:
        self.check_open()
        return await self.writer(inode).write(offset, data)

    async def truncate(self, inode: Inode, size: int) -> None:
        self.check_open()
        await self.writer(inode).truncate(size)
        if not inode.opens:
            await self.release(inode)  # truncate(2) of a file no one has open: no close will store it

    async def read(self, inode: Inode, offset: int, length: int) -> bytes:
        assert inode.writer is not None
        return await inode.writer.read(offset, length)

    async def flush(self, inode: Inode, *, closing: bool = False) -> None:
        """Store what `inode` holds (see flush.py); `closing`: for close(2), not fsync."""
        writer = inode.writer
        if writer is not None:
            await writer.flush(closing=closing)

    async def release(self, inode: Inode) -> None:
        """The last handle closed: flush, and let the writer go. If the data
        cannot be stored it stays in staging (the log says where) and this
        raises FsError(EIO). If the file is opened again meanwhile, the new
        handle carries on with the writer (its close stores it)."""
        writer = inode.writer
        if writer is None or inode.opens:
            return
        failure: FsError | None = None
        if writer.timed_out is not None and writer.timed_out == writer.generation:
            # (close's flush just ran out of write_deadline: a second wait as long would not help)
            failure = FsError(errno.EIO, f"uploading {writer.key_at_start!r} did not finish within write_deadline")
        else:
            try:
                await writer.flush(closing=True)
            except FsError as err:
                failure = err
        await writer.wait_idle(timeout=self.opts.write_deadline if failure is None else 0)
        if inode.opens or inode.writer is not writer:
            if failure is not None:
                raise failure
            return
        # Nothing awaits from here until the writer is gone.
        key, multipart = self.ns.key(inode), writer.parts.upload
        writer.parts.upload = None
        if multipart is not None and writer.freed:
            # The upload holds bytes staging no longer has: never abort it
            # (recovery completes it; staging.keep names it).
            multipart = None
            if failure is None:
                failure = FsError(errno.EIO, f"uploading {writer.key_at_start!r} did not complete")
        self._drop(inode)
        writer.close(keep_reason=failure.message if failure is not None else None)
        if failure is not None:
            # What the mount shows must be what the bucket holds again.
            if inode.remote:
                self.ns.reverted(inode)
            else:
                inode.fresh_until = 0.0
                inode.size = 0
                self.ns.unstored(inode)  # (no object at all: nor a name)
        if multipart is not None:  # failed, or begun in the background after the last flush
            self.feeds.aborted(writer, multipart.upload_id)
            with trio.move_on_after(ABORT_TIMEOUT):  # (a stalled server: it expires by lifecycle, or at the next mount)
                await self.zos.abort_quietly(key, multipart.upload_id)
        if failure is not None:
            raise failure

    async def discard(self, inode: Inode) -> None:
        """The file was unlinked: nothing of it must reach the server any more."""
        writer = inode.writer
        if writer is None:
            return
        writer.discarded = True
        if inode.opens:
            try:
                await writer.parts.materialize()  # (what only an upload holds must be in the object to be read)
            except FsError as err:
                log.warning("%s; the open handle of the unlinked file reads EIO there", err.message)
        async with writer.lock:  # (after an upload in flight)
            if inode.opens:
                # The handles go on with the file, as POSIX has it: bring
                # what they did not write into staging before it is deleted.
                try:
                    await writer.fill(0, writer.size)
                except FsError as err:
                    log.warning("%s; the open handle of the unlinked file reads EIO there", err.message)
        await writer.wait_idle()
        if writer.parts.upload is not None:
            await writer.parts.abort()
        if not inode.opens:
            writer.close()
            self._drop(inode)

    def _drop(self, inode: Inode) -> None:
        writer = inode.writer
        inode.writer = None
        self.writers.discard(writer)
        self._changed(inode)
        self.ns.table.release(inode)

    def dirty_bytes(self) -> int:
        return sum(w.dirty.total() for w in self.writers)

    async def flush_all(self, deadline: float) -> list[Inode]:
        """Flush every writer (unmount, SIGTERM); returns those that failed or
        did not finish by `deadline` (trio time)."""
        failed: list[Inode] = []
        self.stopped = True
        with trio.move_on_at(deadline):
            for writer in list(self.writers):
                try:
                    await writer.flush()
                    await writer.finish()
                except FsError as err:
                    log.warning("%s", err.message)  # (the ERROR below says where its data is)
                    failed.append(writer.inode)
        for writer in list(self.writers):
            writer.give_up()
        for writer in list(self.writers):
            if writer.pending:
                if writer.inode not in failed:
                    failed.append(writer.inode)
                writer.close(keep_reason="unmounted before it was uploaded")
            else:
                writer.close()
        self.writers.clear()
        return failed
