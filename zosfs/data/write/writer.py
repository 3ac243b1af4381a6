"""The writer of one file: takes its writes, truncations and reads, and
drives the way its bytes reach the server.

Its one job: stage each change (state.py), decide whether the file stays in
append mode (`Writer.switch` is the only place the mode changes, and
`Writer._reconsider` the only place a change decides it), and hand the
uploads to the mode it is in: `AppendUpload` (append.py) or `Replace`
(replace.py, which drives the streaming multipart upload of multipart.py).
It also runs the background uploads and holds back a writer that outruns
them. Flushing is in flush.py.
"""

from __future__ import annotations

import errno
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from zosfs.data.staging import MAKE_ROOM_INTERVAL
from zosfs.data.write.append import AppendUpload
from zosfs.data.write.flush import finish, flush
from zosfs.data.write.multipart import StreamingMultipart
from zosfs.data.write.replace import Replace
from zosfs.data.write.state import FileState, MiB
from zosfs.fserror import FsError
from zosfs.namespace.inodes import Inode
from zosfs.zos import ZosError

if TYPE_CHECKING:
    from zosfs.data.write.registry import WritePath

log = logging.getLogger(__package__)  # (the write path logs as one: zosfs.data.write)

# A new file past multipart_threshold goes multipart only if it was written
# at least this fast on average (bytes per second since its first write):
# serial appends take a slower writer as fast as it writes, and keep the
# object appendable and readable by others while it grows (a log).
STREAMING_RATE = 32 * MiB


class Writer(FileState):
    """The unflushed state of one file (state.py), and the way it goes out
    (`mode`). Uploads run while writes go on, so every upload notes what was
    written while it ran (`watch`): those bytes may or may not have gone out
    with it, so they stay dirty."""

    def __init__(self, path: WritePath, inode: Inode, truncate: bool) -> None:
        exists = inode.remote
        super().__init__(path, inode, truncate)
        self.lock = trio.Lock()
        self.tasks = 0
        self.idle = trio.Event()
        self.idle.set()
        self._progress = trio.Event()  # set (and replaced) whenever an append or a part upload succeeds
        self.pace_gave_up = False  # keep_pace waited write_deadline with no upload done since
        self._task_scopes: set[trio.CancelScope] = set()  # of the background uploads running (see give_up)
        self.timed_out: int | None = None  # the generation whose flush ran out of write_deadline
        self.appends = AppendUpload(self)
        self.parts = StreamingMultipart(self)
        self.replace = Replace(self)
        # Append mode while the object is exactly the file's first
        # `appends.remote_len` bytes: a new file, or an appendable object
        # opened without O_TRUNC, where the bucket allows appends.
        self.mode: AppendUpload | Replace = self.replace
        if path.append_ok and (not exists or (inode.appendable and not truncate)):
            self.appends.remote_len = self.size if exists else 0
            self.mode = self.appends

    def freeing_appended(self) -> int:
        """(FileState.freeing_appended.) Appended bytes whose freeing waits
        for the block cache's copy (cachefeed.py) are freed up to the
        appended length, which the journal then records."""
        return self.appends.remote_len if self.path.feeds.holds_appended(self) else 0

    @property
    def remote_len(self) -> int | None:
        """In append mode, how much of the file the object holds; None in replace mode."""
        return self.appends.remote_len if self.mode is self.appends else None

    def switch(self, mode: AppendUpload | Replace, why: str) -> None:
        """The one place where the way this file's bytes reach the server
        changes. Append mode is left for good when a change lands below what
        was appended, a new file streams in past multipart_threshold (see
        `_reconsider`), or the server refuses an append (append.py); it is
        entered again only by `Replace.become_appendable`, which sets
        `appends.remote_len` first."""
        if mode is self.mode:
            return
        if mode is self.replace:
            log.debug("%r leaves append mode: %s", self.key_at_start, why)
            # Appended bytes still waiting to be copied into the block cache
            # leave staging now, while the object is still their append.
            self.path.feeds.release_now(self)
        self.mode = mode

    def leave_append_mode(self, why: str) -> None:
        self.switch(self.replace, why)

    def _reconsider(self, at: int, writing: bool) -> None:
        """A write, or a truncation, from `at` on was just staged: whether
        the file stays in append mode."""
        appends = self.appends
        if self.mode is not appends:
            return
        if appends.below(at):
            self.leave_append_mode("a write below what was already appended" if writing
                                   else "truncated below what was already appended")
        elif (writing and self.created and not appends.synced
              and self.size > self.path.opts.multipart_threshold and self._streaming()):
            # (Only new files: an appendable object that was there before
            # stays appendable, and is never copied to add to it.)
            self.leave_append_mode("past multipart_threshold, written fast")

    def _streaming(self) -> bool:
        """Written faster than STREAMING_RATE on average since the first write."""
        assert self.first_write is not None
        return self.size > STREAMING_RATE * (trio.current_time() - self.first_write)

    # -- changes ---------------------------------------------------------------

    async def write(self, offset: int, data: bytes) -> int:
        """Stage one write; returns how many bytes were staged (fewer than
        asked only when the staging filesystem filled up midway). Raises
        FsError(ENOSPC) when the staging budget or the staging filesystem
        has no room (see staging.py), never waiting beyond write_deadline."""
        self.error = None  # a new write is a new chance for background uploads
        staging = self.path.staging
        deadline = trio.current_time() + self.path.opts.write_deadline
        await staging.reserve(len(data), self.path.make_room, deadline)
        try:
            await self.parts.before_change(offset)
            self.path.check_open()  # (the mount may have begun to stop while this waited)
        except BaseException:
            staging.release(len(data))
            raise
        # (From here on nothing awaits until the change is staged and noted.)
        try:
            staged = self.changing(offset)
            written = staged.pwrite_some(data, offset)
        except OSError as err:
            staging.release(len(data))
            raise staging.local_error(err, f"writing {len(data)} bytes at {offset} of {self.key_at_start!r}") from None
        if written < len(data):
            # Acknowledge what staging holds; the writer's next write gets ENOSPC.
            staging.release(len(data) - written)
            data = data[:written]
        self.charged += len(data)
        if self.first_write is None:
            self.first_write = trio.current_time()
        end = offset + len(data)
        # A write beyond the end leaves a hole: the file changed from its old
        # end on (the part holding it may have gone out as the short last
        # one; see StreamingMultipart.current). The hole is zeros wherever
        # it is read or sent from (beyond base_limit, see fill).
        changed = min(offset, self.size)
        if end > self.size:
            self.size = end
            self.inode.size = end
        self.local.add(offset, end)
        self.dirty.add(offset, end)
        self._reconsider(offset, writing=True)
        self.touch(changed, end)
        self.frontier = end
        self.inode.attrs = self.path.ns.touched(self.inode.attrs)
        self.kick()
        await self.keep_pace(deadline)
        return len(data)

    async def keep_pace(self, deadline: float) -> None:
        """Backpressure for a writer that streams faster than the server
        takes its appends: it waits while its backlog is large, rather than
        staging up to the whole budget (gigabytes) ahead of the uploads.
        Staged pages are then freed (see staging.py) and reused while still
        mapped, instead of the daemon touching fresh memory for every MiB;
        on the benchmark VM a 1 GiB write took 0.95 instead of 1.6 CPU-s of
        the daemon and 4.0 instead of 4.55 s. Not while appends fail: the
        staging budget then decides, as for every other write. The same for
        a new file past multipart_threshold, whose uploaded parts are freed:
        it waits while more than APPEND_BACKLOG is neither appended nor in
        freed parts, as long as some part is on its way (a writer whose
        parts are not ready, such as one leaving holes, is never held).
        Each mode says whether it is behind (`behind`). Never past
        `deadline` (write_deadline): a stalled server then leaves the
        staging budget to decide."""
        while not self.discarded and self.path.nursery is not None:  # (no nursery: nothing could upload)
            if self.pace_gave_up or not self.mode.behind():
                return
            if trio.current_time() >= deadline:
                # Waited out once with no upload done meanwhile: the next
                # writes are not held again (each would wait write_deadline
                # for one MiB, a writer crawling for hours) until an upload
                # succeeds (report_progress).
                self.pace_gave_up = True
                log.warning("uploads of %r made no progress within write_deadline; its writes are no longer held "
                            "back for them (the staging budget still bounds them)", self.key_at_start)
                return
            with trio.move_on_at(min(deadline, trio.current_time() + MAKE_ROOM_INTERVAL)):
                await self._progress.wait()

    async def truncate(self, size: int) -> None:
        if size == self.size:
            return
        await self.parts.before_change(size, truncating=True)
        if size == self.size:
            return
        try:
            staged = self.changing(min(size, self.size))
            staged.truncate(size)
        except OSError as err:
            raise self.path.staging.local_error(err, f"truncating {self.key_at_start!r}") from None
        if size < self.size:
            self.local.remove(size, self.size)
            self.dirty.remove(size, self.size)
            self.base_limit = min(self.base_limit, size)
            self._reconsider(size, writing=False)
            self.truncated(size)
            self.touch(size, size + 1)
        else:
            # The new bytes are zeros: staging has a hole there.
            self.local.add(self.size, size)
            self.dirty.add(self.size, size)
            self.touch(self.size, size)
        self.size = size
        self.inode.size = size
        self.inode.attrs = self.path.ns.touched(self.inode.attrs)

    def attrs_changed(self) -> None:
        """Mode, owner or times changed: the next flush carries them."""
        self.generation += 1

    # -- reading while dirty ------------------------------------------------------

    async def read(self, offset: int, length: int) -> bytes:
        end = min(self.size, offset + length)
        if end <= offset:
            return b""
        out = bytearray()
        pos = offset
        while pos < end:
            # One piece at a time, looked up afresh: while this waits for the
            # server, an append may free staged bytes (they are then in the
            # object) and a write may stage new ones.
            start, stop, here = next(self.local.pieces(pos, end))
            if here:
                out += self.stage().pread(stop - start, start)
            elif self.freed.overlaps(start, stop):
                await self.parts.materialize()  # (then look again: the object holds them)
                continue
            else:
                clean_end = min(stop, self.base_limit)
                if start < clean_end:
                    out += await self.get_base(start, clean_end)
                if clean_end < stop:
                    out += bytes(stop - max(start, clean_end))
            pos = stop
            end = min(end, self.size)  # (truncated meanwhile: no bytes beyond the end)
        return bytes(out)

    # -- background uploads ----------------------------------------------------------

    def kick(self, force: bool = False) -> None:
        """Start what can go out now: an append chunk, or finished parts.
        `force`: append whatever is pending, however little (the staging
        budget is full)."""
        if self.discarded or self.error is not None:
            return
        self.mode.kick(force)

    def can_free(self) -> bool:
        """Whether this writer's share of the staging budget can shrink
        before it closes: an upload is under way (a flush, a background
        task), or one can start now (see make_room)."""
        if self.discarded or self.path.nursery is None:
            return False
        return self.tasks > 0 or self.lock.locked() or (self.charged > 0 and self.mode.can_free())

    def spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run an upload in the background, counted as a task (`wait_idle`)."""
        nursery = self.path.nursery
        if nursery is None:
            return
        if not self.tasks:
            self.idle = trio.Event()  # (only then: someone may be waiting for the current one)
        self.tasks += 1
        nursery.start_soon(self._run_task, fn)

    async def _run_task(self, fn: Callable[[], Awaitable[None]]) -> None:
        scope = trio.CancelScope()
        self._task_scopes.add(scope)
        try:
            with scope:
                await fn()
        except (ZosError, FsError) as err:
            self.error = err
            log.warning("background upload of %r failed (flush will retry): %s", self.key_at_start, err)
        except OSError as err:  # (reading staging: local, never the server's fault)
            self.error = self.path.staging.local_error(err, f"reading the staged data of {self.key_at_start!r}")
            log.warning("background upload of %r failed (flush will retry): %s", self.key_at_start, self.error.message)
        except Exception as err:  # a bug must not end the mount: flush retries and reports
            self.error = FsError(errno.EIO, f"background upload of {self.key_at_start!r}: {err!r}")
            log.exception("background upload of %r failed unexpectedly (flush will retry)", self.key_at_start)
        finally:
            self._task_scopes.discard(scope)
            self.tasks -= 1
            if not self.tasks:
                self.idle.set()

    def report_progress(self) -> None:
        """An append or a part upload succeeded: writers held by keep_pace look again."""
        self._progress.set()
        self._progress = trio.Event()
        self.pace_gave_up = False

    def uploaded(self) -> None:
        """Some data went out: hold no more of the staging budget than is
        still waiting to go. (Computed from the state rather than counted, so
        that overwrites, re-uploaded parts and mode changes can never make the
        account drift, and writers never wait for budget nobody holds.)"""
        outstanding = self.mode.outstanding()
        if outstanding < self.charged:
            # (Never charged more here: bytes that must go out again, after a
            # restarted upload, were admitted once already.)
            self.path.staging.release(self.charged - outstanding)
            self.charged = outstanding

    # -- flushing and closing ------------------------------------------------------

    async def flush(self, *, closing: bool = False) -> None:
        """Store everything written so far; raise FsError(EIO) if that fails
        (see flush.py), or if it does not finish within write_deadline (all
        retries included): the data then stays in staging. `closing`: for
        close(2), not fsync (see flush.py)."""
        deadline = self.path.opts.write_deadline
        generation = self.generation
        with trio.move_on_after(deadline) as scope:
            await flush(self, closing=closing)
        if scope.cancelled_caught:
            self.timed_out = generation
            self.error = FsError(errno.EIO, "timed out")
            raise FsError(errno.EIO, f"uploading {self.key_at_start!r} did not finish within write_deadline "
                                     f"({deadline:g} s): the server does not store it; its data stays in staging")
        self.timed_out = None

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait for the background uploads; with `timeout`, cancel those
        still running after that many seconds (the server is stalled)."""
        with trio.move_on_after(timeout if timeout is not None else math.inf):
            while self.tasks:
                await self.idle.wait()
        if self.tasks:
            self.give_up()
            with trio.move_on_after(5):  # (cancelled uploads end at their next await)
                while self.tasks:
                    await self.idle.wait()

    def give_up(self) -> None:
        """Cancel this writer's background uploads (its data stays in staging)."""
        for scope in list(self._task_scopes):
            scope.cancel()

    async def finish(self) -> None:
        """After the last flush: wait for background work, and abort a
        multipart upload that a background task began but nothing completed."""
        await finish(self)

    def bucket_holds(self) -> str:
        """What the bucket holds of this file now, for the log of a failure."""
        if self.mode is self.appends and self.appends.remote_len:
            return f"The bucket holds its first {self.appends.remote_len} bytes (appended), not the rest"
        if not self.inode.remote:
            return "The bucket holds no object of it under that key"
        # (A replacement is made only whole: by one PUT or a completed multipart upload.)
        return ("The bucket holds the object as it was before these changes (unless the last request, cut off "
                "unanswered, reached the server: compare its ETag)" if self.timed_out is not None
                else "The bucket holds the object as it was before these changes")

    def close(self, keep_reason: str | None = None) -> None:
        """Drop the staging file; with a reason, keep it for recovery instead."""
        self.appends.stop()
        if self.staged is not None:
            if keep_reason is None:
                self.path.staging.discard(self.staged)
            else:
                self.staged.keep(keep_reason, self.bucket_holds())
            self.staged = None
        self.path.staging.release(self.charged)
        self.charged = 0
