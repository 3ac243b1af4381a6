"""Append mode: new bytes reach the server by append upload as they arrive.

Its one job: while the object on the server is exactly the first
`remote_len` bytes of the file and every change lies beyond them (a new
file written sequentially, `>>` on an appendable object), send what lies
beyond in chunks that grow from `append_chunk` to 64 MiB (less, once new
bytes have waited `append_delay`: see `AppendUpload._soon`), and pace a
writer that outruns them. Only new bytes ever cross the wire, and a growing
log can be read by others while it is written. Appended bytes are freed
from staging (see staging.py). Whether a file is in append mode is decided
by the writer (`Writer.switch`), not here; only the server's refusal of an
append, or someone else's appends, end it from here (through the writer).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from zosfs.namespace.metadata import encode
from zosfs.zos import FileRegion, LocalFileError, ZosError, next_append_etag

if TYPE_CHECKING:
    from zosfs.data.write.writer import Writer

log = logging.getLogger(__package__)  # (the write path logs as one: zosfs.data.write)

MiB = 1024 * 1024
MAX_APPEND_CHUNK = 64 * MiB
# A writer in append mode waits while more than this much of it is not yet
# appended (or four chunks, if more): see Writer.keep_pace.
APPEND_BACKLOG = 128 * MiB
# Errors after which this object (or this bucket) cannot be appended to.
NOT_APPENDABLE = {"ObjectNotAppendable", "PositionNotEqualToLength"}
APPEND_UNSUPPORTED = {"InvalidBucketState", "NotImplemented", "MethodNotAllowed", "InvalidArgument"}


class AppendUpload:
    """The append mode of one writer (see the module docstring). It lives as
    long as the writer: what it remembers (failing appends, an fsync while
    appending) outlasts a spell in replace mode."""

    def __init__(self, writer: Writer) -> None:
        self.w = writer
        # While this is the writer's mode: the object is exactly the file's
        # first remote_len bytes.
        self.remote_len = 0
        self.appending = 0  # bytes of an append in flight
        self.scheduled = False  # a background append is on its way
        self.failing = False  # the last append attempt failed
        self.delayed: trio.CancelScope | None = None  # see _soon
        # Flushed (fsync) while appending: stays in append mode past
        # multipart_threshold, where each fsync costs only the new bytes
        # (completing a multipart upload at every fsync would copy the whole
        # file so far on the server each time).
        self.synced = False

    @property
    def active(self) -> bool:
        """Whether the writer is in append mode (it may leave it while an append is on its way)."""
        return self.w.mode is self

    def below(self, at: int) -> bool:
        """Whether a change at `at` lies below what was appended, or is being appended."""
        return at < self.remote_len + self.appending

    def outstanding(self) -> int:
        """Bytes written here that no append has carried yet."""
        return max(0, self.w.size - self.remote_len)

    # -- when appends go out -----------------------------------------------------------

    def kick(self, force: bool) -> None:
        """Start an append of a whole chunk, or (`force`) of whatever is
        pending; or, with less than a chunk, the delayed append."""
        w = self.w
        pending = w.size - self.remote_len
        if not self.scheduled and pending and (force or pending >= self.chunk()):
            self.scheduled = True
            w.spawn(lambda: self._in_background(1 if force else None))
        elif pending and self.delayed is None and w.path.opts.append_delay > 0:
            nursery = w.path.nursery
            if nursery is not None:
                self.delayed = trio.CancelScope()
                nursery.start_soon(self._soon, self.delayed)

    async def _soon(self, scope: trio.CancelScope) -> None:
        """Append what is pending after `append_delay`, however little, so
        that a log written slowly is readable in the bucket within seconds
        (whole chunks alone could leave megabytes unseen for hours). The
        delay grows to 0.1% of the time since the first write, which bounds a
        file open for a month to a few thousand appends (each is a part of the
        object on RGW). Not counted as a task: close does not wait for it,
        and cancels it (`stop`)."""
        w = self.w
        with scope:
            age = trio.current_time() - (w.first_write or trio.current_time())
            await trio.sleep(max(w.path.opts.append_delay, age / 1000))
        if self.delayed is scope:
            self.delayed = None
        # (Not in replace mode: there, force would upload an unfinished part.)
        if not scope.cancelled_caught and self.active:
            w.kick(force=True)

    def stop(self) -> None:
        """The writer closes: no delayed append any more."""
        if self.delayed is not None:
            self.delayed.cancel()
            self.delayed = None

    def chunk(self) -> int:
        """Appends grow with the file (fewer, larger requests), but stay well
        within the staging budget, which they free."""
        budget = self.w.path.staging.budget
        return max(self.w.path.opts.append_chunk, min(MAX_APPEND_CHUNK, self.remote_len // 2, budget // 4))

    def whole_on_close(self) -> bool:
        """Whether a close may store the file by one PUT instead (see
        flush.py): a new file in append mode of which nothing was appended
        or is on its way, not opened with O_APPEND (a log, which appends
        again), never fsynced, and within `whole_put` and one append chunk.
        Not an empty one: a shell's `cmd > file` closes its first descriptor
        (after dup2) before any write, and the appendable empty object that
        close makes lets each later close send only its bytes."""
        w = self.w
        opts = w.path.opts
        return (opts.whole_put > 0 and w.size > 0 and self.active and not w.inode.remote and self.remote_len == 0
                and not self.appending and not self.scheduled and not self.synced and not w.opened_for_append
                and w.size <= min(opts.whole_put, self.chunk(), opts.rewrite_threshold))

    def can_free(self) -> bool:
        """Whether an append can free staging budget now (whatever is pending goes, however little)."""
        return self.active and self.w.size > self.remote_len

    def behind(self) -> bool:
        """Whether the writer should wait for its appends (see
        Writer.keep_pace); if so, they are started. Not while appends fail:
        the staging budget then decides, as for every other write."""
        if self.failing or self.w.size - self.remote_len <= max(APPEND_BACKLOG, 4 * self.chunk()):
            return False
        self.w.kick()
        return True

    async def _in_background(self, minimum: int | None) -> None:
        w = self.w
        try:
            async with w.lock:
                while not w.discarded and self.active:
                    pending = w.size - self.remote_len
                    if pending <= 0 or pending < (minimum or self.chunk()):
                        break
                    await self.append(self.chunk())
        except BaseException:
            self.failing = True
            raise
        finally:
            self.scheduled = False
        w.kick()  # replace mode may have begun meanwhile

    async def flush(self) -> None:
        """Append all that is pending (caller holds the lock); the object
        then exists, and carries the current metadata."""
        w = self.w
        # (Not a flush before any data, as when dd closes the descriptor it
        # opened after duplicating it.)
        self.synced = self.synced or w.size > 0
        while self.active and self.remote_len < w.size and not w.discarded:
            await self.append(MAX_APPEND_CHUNK)
        if self.active and (not w.inode.remote or w.pending_attrs()):
            await self.append(0)  # creates an empty file, or carries new metadata

    # -- one append ------------------------------------------------------------------

    async def append(self, limit: int) -> None:
        """Append up to `limit` staged bytes after `remote_len`. Caller holds
        the lock. Returns without appending if the file changed so that it
        cannot (the caller looks at `active` again)."""
        w = self.w
        assert self.active
        if w.discarded:
            return
        start = self.remote_len
        ns, zos = w.path.ns, w.path.zos
        key = ns.key(w.inode)
        watch = w.watch()  # (before the first await: everything after it counts)
        try:
            meta = encode(w.inode.attrs, w.inode.meta)
            opts = await ns.write_options(w.inode, meta, replacing=True)
            if not self.active or self.remote_len != start or w.discarded:
                return  # written below, or truncated below, what was appended meanwhile
            length = min(limit, w.size - start)
            # The object's ETag before this append: "" when it creates the
            # object, None when the object exists with an ETag not known here.
            previous = "" if not w.inode.remote else (w.inode.etag or None)
            self.appending = length
            try:
                with w.changing_object():
                    result = await zos.append(key, start, FileRegion(w.stage().fd, start, length), opts)
            except LocalFileError:
                if self.active and w.size >= start + length:
                    raise
                # Cut short by a truncation below it while it went out (which
                # ended append mode): the server took none of it, and this is
                # no failure of the staging directory.
                log.debug("an append to %r was truncated while it went out", key)
                return
            finally:
                self.appending = 0
        except ZosError as err:
            if err.code in APPEND_UNSUPPORTED:
                w.path.append_unavailable(err)
            if err.code in NOT_APPENDABLE or err.code in APPEND_UNSUPPORTED:
                w.leave_append_mode(f"the server refused the append ({err.code})")
                if err.code == "PositionNotEqualToLength":
                    self._foreign_appends(start)
                return
            raise
        finally:
            w.unwatch(watch)
        if result.position != start + length:
            log.warning("%r was appended to by someone else; it will be rewritten whole", key)
            w.leave_append_mode("foreign appends")
            self._foreign_appends(start)
            return
        log.debug("appended %d bytes at %d to %r (chunk md5 %s)", length, start, key, result.etag)
        if self.active:  # (a write or truncate below the end may have ended append mode)
            self.remote_len = result.position
        # The object now holds the file's first start+length bytes, except
        # where they were written while they went out, and beyond a
        # truncation meanwhile.
        w.dirty.remove(start, start + length)
        for s, e in watch.changed:
            w.dirty.add(max(s, start), min(e, start + length))
        w.base_limit = min(watch.limit(start + length), w.size)
        w.inode.remote, w.inode.appendable, w.inode.meta = True, True, meta
        w.inode.etag = next_append_etag(previous, result.etag) if previous is not None and result.etag else ""
        ns.remember(key, w.inode)
        self._journal_appended(start, start + length)
        # The appended bytes go into the block cache under the new ETag (the
        # older blocks move to it), and only then leave staging.
        w.path.feeds.uploaded(w, w.inode.etag, start + length, [(start, start + length)], watch,
                              base=previous or "", after=lambda: self._release_appended(start, start + length))
        w.uploaded()
        self.failing = False
        w.report_progress()

    def _journal_appended(self, start: int, end: int) -> None:
        """The journal records at once what the object now holds (leaving
        staging waits for the block cache's copy; recovery must not)."""
        w = self.w
        staged = w.staged
        if staged is None or not self.active or not w.inode.etag:
            return
        end = min(end, self.remote_len, w.base_limit)
        if any(not dirty for _, _, dirty in w.dirty.pieces(start, end)):
            try:
                staged.note_appended(self.remote_len, w.inode.etag)
            except OSError as err:
                log.warning("recording the appended length in the staging journal failed (%s)", err)

    def _release_appended(self, start: int, end: int) -> None:
        """[start, end) was just appended: staging need not hold it any more
        (reads and rebuilds fetch it from the object, like any unchanged
        byte; see staging.py for why this matters). Only while the object
        is still exactly the file's first `remote_len` bytes, under a known
        ETag (recovery checks the object by it), and never bytes changed
        meanwhile."""
        w = self.w
        staged = w.staged
        if staged is None or not self.active or not w.inode.etag or not w.path.punch_ok:
            return
        end = min(end, self.remote_len, w.base_limit)
        for s, e, dirty in list(w.dirty.pieces(start, end)):
            if dirty:
                continue
            try:
                freed = staged.release(s, e, self.remote_len, w.inode.etag)
            except OSError as err:
                freed = None
                log.warning("punching uploaded data out of staging failed (%s); staging keeps it until close", err)
            if freed is None:
                w.path.punch_ok = False
                return
            w.local.remove(*freed)

    def _foreign_appends(self, start: int) -> None:
        """Someone else appended to the object: its first `start` bytes are
        still this file's, but its ETag is no longer known."""
        self.w.base_limit = min(self.w.base_limit, start)
        self.w.inode.etag = ""
