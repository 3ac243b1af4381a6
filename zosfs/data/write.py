"""The write path: staging, append upload, multipart, and rebuilds.

Every file with unflushed changes has a `Writer`: a sparse staging file, the
ranges of it that differ from the object (`dirty`), the ranges it holds at
all (`local`), and how the object on the server relates to it. How data goes
out depends on that relation:

- Append mode. While the object on the server is exactly the first
  `remote_len` bytes of the file and every change lies beyond them (a new
  file written sequentially, `>>` on an appendable object), new bytes go out
  by append upload as they arrive, in chunks that grow from `append_chunk`
  to 64 MiB (less, once new bytes have waited `append_delay`: see
  `_append_soon`). Only new bytes ever cross the wire, and a growing log can
  be read by others while it is written. A new file that grows past
  `multipart_threshold` while being written faster than STREAMING_RATE
  leaves append mode (a copy streaming in; a slower writer, such as a log,
  goes on appending, as does an appendable object that existed before); what
  was appended by then is carried over into the multipart upload, and each
  part uploaded from staging is freed there (`_free_part`), as appended bytes
  are.
- Replace mode (anything else: overwrites, truncation, non-appendable
  objects, buckets without append). The object is replaced only when the new
  content is complete: files up to `rewrite_threshold` by one PUT (unchanged
  bytes downloaded first), larger ones by multipart upload in which unchanged
  parts are copied on the server (upload-part-copy) and changed parts are
  sent from staging. A sequential writer's finished parts are uploaded in the
  background while it writes. (A small non-appendable object written through
  O_APPEND is instead deleted and appended anew: `_become_appendable`.)

Every object written carries the file's full metadata, tags and ACL, since
RGW replaces them on each append (see `Namespace.write_options`).

Durability: `flush` (close) and `fsync` return only when everything written
so far is stored in the object store, and raise EIO otherwise; the data then
stays in staging, and on release the log names the file that holds it. A
failed multipart upload is kept for the next attempt (fsync or close again)
and aborted when the file is released without success.

Uploads run while the file goes on changing (background appends and parts,
flushes during writes from other threads): each upload notes what changed
while it ran (`Watch`) and keeps that dirty, and never trusts object bytes
beyond a truncation that happened meanwhile.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import math
import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import trio

from zosfs.data.ranges import RangeSet
from zosfs.data.staging import MAKE_ROOM_INTERVAL, StagedFile, Staging
from zosfs.fserror import FsError
from zosfs.namespace.inodes import Inode
from zosfs.namespace.metadata import encode
from zosfs.namespace.tree import Namespace
from zosfs.options import Options
from zosfs.zos import FileRegion, Part, ZosClient, ZosError, next_append_etag

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MAX_APPEND_CHUNK = 64 * MiB
# A writer in append mode waits while more than this much of it is not yet
# appended (or four chunks, if more): see Writer._keep_pace.
APPEND_BACKLOG = 128 * MiB
# A new file past multipart_threshold goes multipart only if it was written
# at least this fast on average (bytes per second since its first write):
# serial appends take a slower writer as fast as it writes, and keep the
# object appendable and readable by others while it grows (a log).
STREAMING_RATE = 32 * MiB
MIN_PART = 5 * MiB
MAX_PARTS = 10_000
# Errors after which this object (or this bucket) cannot be appended to.
NOT_APPENDABLE = {"ObjectNotAppendable", "PositionNotEqualToLength"}
APPEND_UNSUPPORTED = {"InvalidBucketState", "NotImplemented", "MethodNotAllowed", "InvalidArgument"}


def multipart_etag(part_etags: list[str]) -> str:
    """S3's (and RGW's) ETag of a multipart object: md5 of the concatenated
    binary part MD5s, then -n."""
    digest = hashlib.md5(b"".join(bytes.fromhex(e) for e in part_etags)).hexdigest()
    return f"{digest}-{len(part_etags)}"


class Watch:
    """What changed in a file while an upload ran: the ranges written (or
    extended by truncation), and the lowest size it was truncated to."""

    def __init__(self) -> None:
        self.changed = RangeSet()
        self.truncated_to: int | None = None

    def truncated(self, size: int) -> None:
        self.truncated_to = size if self.truncated_to is None else min(self.truncated_to, size)

    def limit(self, end: int) -> int:
        """How much of an object made of the file's first `end` bytes is
        still the file's (beyond a truncation it is not, whatever follows)."""
        return end if self.truncated_to is None else min(end, self.truncated_to)


@dataclass
class Multipart:
    """A multipart upload in progress for a writer in replace mode."""

    upload_id: str
    part_size: int
    done: dict[int, tuple[int, str]] = field(default_factory=dict)  # part -> (generation, etag)
    busy: dict[int, trio.Event] = field(default_factory=dict)  # parts being uploaded

    def uploaded(self) -> int:
        """How many parts the upload has, or is getting (counted up to the
        last one): RGW completes an upload only with every part it holds, so
        no completion may leave one out (S3 would simply drop it)."""
        return max(max(self.done, default=-1), max(self.busy, default=-1)) + 1


class Writer:
    """The unflushed state of one file (see the module docstring).

    Uploads run while writes go on, so every upload notes what was written
    while it ran (`_watch`): those bytes may or may not have gone out with it,
    so they stay dirty.
    """

    def __init__(self, path: WritePath, inode: Inode, truncate: bool) -> None:
        self.path = path
        self.inode = inode
        self.key_at_start = path.ns.key(inode)
        self.staged: StagedFile | None = None
        self.local = RangeSet()  # bytes staging holds
        self.dirty = RangeSet()  # bytes staging holds that the object lacks
        exists = inode.remote
        self.created = not exists  # staging will hold all of the file (recovery may upload it)
        if truncate:
            inode.size = 0
        self.size = inode.size
        # The object's bytes below base_limit are the file's, except where
        # dirty; old bytes beyond it are gone (truncated) or never existed.
        self.base_limit = 0 if truncate or not exists else inode.size
        # Append mode: the object is exactly the file's first remote_len bytes.
        if not path.append_ok:
            self.remote_len: int | None = None
        elif not exists:
            self.remote_len = 0
        elif inode.appendable and not truncate:
            self.remote_len = self.size
        else:
            self.remote_len = None
        self.appending = 0  # bytes of an append in flight
        self.generation = 1 if (not exists or truncate) else 0
        self.flushed_generation = 0
        self.part_size = max(path.opts.part_size, math.ceil(self.size / MAX_PARTS / MiB) * MiB)
        self.part_generation: dict[int, int] = {}  # part -> generation of its last change
        self.multipart: Multipart | None = None
        self.frontier = 0  # where the last write ended: parts before it are finished
        # Flushed (fsync) while appending: stays in append mode past
        # multipart_threshold, where each fsync costs only the new bytes
        # (completing a multipart upload at every fsync would copy the whole
        # file so far on the server each time).
        self.synced_while_appending = False
        self.first_write: float | None = None  # trio time of the first write (see STREAMING_RATE)
        self.delayed_append: trio.CancelScope | None = None  # see _append_soon
        self.object_changes = 0  # requests of this writer in flight that change the object (its ETag)
        self._object_settled = trio.Event()  # set (and replaced) when the last of them ends
        self.opened_for_append = False  # written through an O_APPEND handle (see _become_appendable)
        self.parts_checked = 0  # parts below this were looked at for background upload
        self.append_scheduled = False
        self.appends_failing = False  # the last append attempt failed
        self._progress = trio.Event()  # set (and replaced) whenever an append or a part upload succeeds
        # Parts of the multipart upload that were freed from staging: only
        # that upload holds those bytes (see _free_part).
        self.freed = RangeSet()
        self.charged = 0  # bytes of the staging budget this writer holds
        self.error: ZosError | FsError | None = None
        self.lock = trio.Lock()
        self.tasks = 0
        self.idle = trio.Event()
        self.idle.set()
        self.discarded = False
        self._watches: list[Watch] = []

    # -- state -----------------------------------------------------------------

    @property
    def pending(self) -> bool:
        return self.generation != self.flushed_generation

    @property
    def base_etag(self) -> str:
        """The ETag of the object whose bytes are the base ("" if unknown).
        It is the inode's: whoever changes the object (this writer, a
        metadata change, a rename's copy) updates that."""
        return self.inode.etag

    @base_etag.setter
    def base_etag(self, etag: str) -> None:
        self.inode.etag = etag

    def _stage(self) -> StagedFile:
        if self.staged is None:
            self.staged = self.path.staging.create(self.path.ns.key(self.inode), self.created)
        return self.staged

    def _changing(self, at: int) -> StagedFile:
        """Staging, about to hold bytes the server lacks, from offset `at` on:
        the journal says so (and under which key: the file may have been
        renamed). A change below the bytes freed after appends means staging
        is no longer "the rest of the object" (recovery would append it to
        the old bytes): from then on it counts as a change to an existing
        object, which recovery keeps for a person to decide."""
        staged = self._stage()
        if staged.record.get("state") != "writing":
            staged.write_journal(key=self.path.ns.key(self.inode), state="writing")
        if staged.record.get("created") and at < staged.record.get("appended", 0):
            staged.write_journal(created=False)
        return staged

    def _touch(self, start: int, end: int) -> None:
        self.generation += 1
        if end > start:
            ps = self.part_size
            for n in range(start // ps, (end - 1) // ps + 1):
                self.part_generation[n] = self.generation
        for watch in self._watches:
            watch.changed.add(start, end)

    def _watch(self) -> Watch:
        """Start noting what changes from now on (until `_unwatch`)."""
        watch = Watch()
        self._watches.append(watch)
        return watch

    def _unwatch(self, watch: Watch) -> None:
        self._watches.remove(watch)

    def _leave_append_mode(self, why: str) -> None:
        if self.remote_len is not None:
            log.debug("%r leaves append mode: %s", self.key_at_start, why)
            self.remote_len = None

    # -- changes ---------------------------------------------------------------

    async def write(self, offset: int, data: bytes) -> int:
        self.error = None  # a new write is a new chance for background uploads
        await self.path.staging.reserve(len(data), self.path.make_room)
        try:
            await self._before_change(offset)
        except BaseException:
            self.path.staging.release(len(data))
            raise
        # (From here on nothing awaits until the change is staged and noted.)
        self.charged += len(data)
        if self.first_write is None:
            self.first_write = trio.current_time()
        end = offset + len(data)
        staged = self._changing(offset)
        if end > self.size:
            self.size = end
            self.inode.size = end
        staged.pwrite(data, offset)
        self.local.add(offset, end)
        self.dirty.add(offset, end)
        if self.remote_len is not None and offset < self.remote_len + self.appending:
            self._leave_append_mode("a write below what was already appended")
        if (self.remote_len is not None and self.created and not self.synced_while_appending
                and self.size > self.path.opts.multipart_threshold and self._streaming()):
            # (Only new files: an appendable object that was there before
            # stays appendable, and is never copied to add to it.)
            self._leave_append_mode("past multipart_threshold, written fast")
        self._touch(offset, end)
        self.frontier = end
        self.inode.attrs = self.path.ns.touched(self.inode.attrs)
        self._kick()
        await self._keep_pace()
        return len(data)

    def _streaming(self) -> bool:
        """Written faster than STREAMING_RATE on average since the first write."""
        assert self.first_write is not None
        return self.size > STREAMING_RATE * (trio.current_time() - self.first_write)

    async def _before_change(self, at: int, truncating: bool = False) -> None:
        """A change from `at` on is coming: if parts at or beyond it were freed
        from staging, complete the upload that holds them first, so that the
        object has them (a part cannot be partly rewritten, and staging is
        "the rest of the object" only above what the object holds). A
        truncation also completes it first when it cuts into any uploaded
        part: RGW could not leave that part out (see Multipart.uploaded)."""
        while self.freed and (mp := self.multipart) is not None:
            end = self.freed.last_end()
            if truncating:
                end = max(end, mp.uploaded() * mp.part_size)
            if min(at, self.size) >= end:
                return
            await self._materialize()

    def _report_progress(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    async def _keep_pace(self) -> None:
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
        parts are not ready, such as one leaving holes, is never held)."""
        while not self.discarded and self.path.nursery is not None:  # (no nursery: nothing could upload)
            if self.remote_len is not None:
                if self.appends_failing or self.size - self.remote_len <= max(APPEND_BACKLOG, 4 * self._chunk()):
                    return
                self._kick()
            else:
                mp = self.multipart
                if (mp is None or not mp.busy or self.error is not None or not self._frees_parts()
                        or self.size - self.base_limit - self.freed.total() <= APPEND_BACKLOG):
                    return
            with trio.move_on_after(MAKE_ROOM_INTERVAL):
                await self._progress.wait()

    async def truncate(self, size: int) -> None:
        if size == self.size:
            return
        await self._before_change(size, truncating=True)
        if size == self.size:
            return
        staged = self._changing(min(size, self.size))
        staged.truncate(size)
        if size < self.size:
            self.local.remove(size, self.size)
            self.dirty.remove(size, self.size)
            self.base_limit = min(self.base_limit, size)
            if self.remote_len is not None and size < self.remote_len + self.appending:
                self._leave_append_mode("truncated below what was already appended")
            for watch in self._watches:
                watch.truncated(size)
            self._touch(size, size + 1)
        else:
            # The new bytes are zeros: staging has a hole there.
            self.local.add(self.size, size)
            self.dirty.add(self.size, size)
            self._touch(self.size, size)
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
                out += self._stage().pread(stop - start, start)
            elif self.freed.overlaps(start, stop):
                await self._materialize()  # (then look again: the object holds them)
                continue
            else:
                clean_end = min(stop, self.base_limit)
                if start < clean_end:
                    out += await self._get_base(start, clean_end)
                if clean_end < stop:
                    out += bytes(stop - max(start, clean_end))
            pos = stop
            end = min(end, self.size)  # (truncated meanwhile: no bytes beyond the end)
        return bytes(out)

    async def _get_base(self, start: int, end: int) -> bytes | bytearray | memoryview:
        etag, attempts = self.base_etag, 1
        while True:
            try:
                return await self.path.zos.get(self.path.ns.key(self.inode), start, end, if_match=etag or None)
            except ZosError as err:
                # This writer's own append or upload changes the ETag, not
                # these bytes: ask again under the new one. (The server may
                # have changed the object before its answer got here.)
                if err.code == "PreconditionFailed" and etag and self.base_etag == etag and self.object_changes:
                    await self._object_settled.wait()
                if not (err.code == "PreconditionFailed" and etag and self.base_etag != etag and attempts < 5):
                    raise FsError(errno.EIO, f"reading the unchanged part of {self.key_at_start!r}: {err}") from None
            etag, attempts = self.base_etag, attempts + 1

    @contextmanager
    def _changing_object(self) -> Iterator[None]:
        """Around a request that changes the object: readers that find it
        changed meanwhile wait for its answer (see _get_base)."""
        self.object_changes += 1
        try:
            yield
        finally:
            self.object_changes -= 1
            if not self.object_changes:
                self._object_settled.set()
                self._object_settled = trio.Event()

    async def _fill(self, start: int, end: int) -> None:
        """Bring unchanged bytes of the object into staging (before re-uploading them)."""
        for s, e, here in list(self.local.pieces(start, end)):
            if here:
                continue
            if self.freed.overlaps(s, e):  # (every change there completes the upload first)
                raise FsError(errno.EIO, f"internal error: {self.key_at_start!r} [{s}, {e}) is in freed parts")
            clean_end = min(e, self.base_limit)
            if s < clean_end:
                data = memoryview(await self._get_base(s, clean_end))
                # Meanwhile the file may have been written (those bytes win)
                # or truncated (nothing beyond its end may reappear).
                limit = min(clean_end, self.size, self.base_limit)
                for ps, pe, written in list(self.local.pieces(s, limit)):
                    if not written:
                        self._stage().pwrite(data[ps - s : pe - s], ps)
            self.local.add(s, min(e, self.size))  # beyond base_limit staging holds zeros already

    # -- background uploads ----------------------------------------------------------

    def _kick(self, force: bool = False) -> None:
        """Start what can go out now: an append chunk, or finished parts.
        `force`: append whatever is pending, however little (the staging
        budget is full)."""
        if self.discarded or self.error is not None:
            return
        if self.remote_len is not None:
            pending = self.size - self.remote_len
            if not self.append_scheduled and pending and (force or pending >= self._chunk()):
                self.append_scheduled = True
                self._spawn(lambda: self._append_in_background(1 if force else None))
            elif pending and self.delayed_append is None and self.path.opts.append_delay > 0:
                nursery = self.path.nursery
                if nursery is not None:
                    self.delayed_append = trio.CancelScope()
                    nursery.start_soon(self._append_soon, self.delayed_append)
        elif self.size > self.path.opts.rewrite_threshold and (force or self.frontier // self.part_size > self.parts_checked):
            self.parts_checked = max(self.parts_checked, self.frontier // self.part_size)
            self._spawn(lambda: self._parts_in_background(force))

    async def _append_soon(self, scope: trio.CancelScope) -> None:
        """Append what is pending after `append_delay`, however little, so
        that a log written slowly is readable in the bucket within seconds
        (whole chunks alone could leave megabytes unseen for hours). The
        delay grows to 0.1% of the time since the first write, which bounds a
        file open for a month to a few thousand appends (each is a part of the
        object on RGW). Not counted as a task: close does not wait for it,
        and cancels it (`close`)."""
        with scope:
            age = trio.current_time() - (self.first_write or trio.current_time())
            await trio.sleep(max(self.path.opts.append_delay, age / 1000))
        if self.delayed_append is scope:
            self.delayed_append = None
        # (Not in replace mode: there, force would upload an unfinished part.)
        if not scope.cancelled_caught and self.remote_len is not None:
            self._kick(force=True)

    def _chunk(self) -> int:
        """Appends grow with the file (fewer, larger requests), but stay well
        within the staging budget, which they free."""
        assert self.remote_len is not None
        budget = self.path.staging.budget
        return max(self.path.opts.append_chunk, min(MAX_APPEND_CHUNK, self.remote_len // 2, budget // 4))

    def _spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        nursery = self.path.nursery
        if nursery is None:
            return
        if not self.tasks:
            self.idle = trio.Event()  # (only then: someone may be waiting for the current one)
        self.tasks += 1
        nursery.start_soon(self._run_task, fn)

    async def _run_task(self, fn: Callable[[], Awaitable[None]]) -> None:
        try:
            await fn()
        except (ZosError, FsError) as err:
            self.error = err
            log.warning("background upload of %r failed (flush will retry): %s", self.key_at_start, err)
        except Exception as err:  # a bug must not end the mount: flush retries and reports
            self.error = FsError(errno.EIO, f"background upload of {self.key_at_start!r}: {err!r}")
            log.exception("background upload of %r failed unexpectedly (flush will retry)", self.key_at_start)
        finally:
            self.tasks -= 1
            if not self.tasks:
                self.idle.set()

    async def _append_in_background(self, minimum: int | None) -> None:
        try:
            async with self.lock:
                while not self.discarded and self.remote_len is not None:
                    pending = self.size - self.remote_len
                    if pending <= 0 or pending < (minimum or self._chunk()):
                        break
                    await self._append(self._chunk())
        except BaseException:
            self.appends_failing = True
            raise
        finally:
            self.append_scheduled = False
        self._kick()  # replace mode may have begun meanwhile

    async def _parts_in_background(self, force: bool = False) -> None:
        """Upload finished parts (wholly written, before the writer's frontier).
        With `force` (the staging budget is exhausted), also the unfinished
        part at the frontier: it frees the budget now and is simply uploaded
        again once it changes (S3 lets a part number be uploaded again)."""
        async with self.lock:
            if self.discarded or self.remote_len is not None or not self.pending:
                return
            ps = self.part_size
            if self.multipart is not None and self.multipart.part_size != ps:
                return  # the file outgrew its part size; everything goes at flush
            mp = self.multipart
            ready = []
            limit = min(self.frontier, self.size)
            for n in range(-(-self.size // ps) if force else limit // ps):
                start, end = n * ps, min((n + 1) * ps, self.size)
                gen = self.part_generation.get(n, 0)
                if mp is not None and (n in mp.busy or mp.done.get(n, (-1, ""))[0] == gen):
                    continue
                if self.local.covers(start, end) or not self.dirty.overlaps(start, end):
                    ready.append(n)
            log.debug("parts ready for background upload of %r: %s (frontier %d)", self.key_at_start, ready, self.frontier)
            if not ready:
                return
            if mp is None:
                await self._start_multipart()
                mp = self.multipart
                assert mp is not None
                if mp.part_size != ps:
                    return
            for n in ready:
                mp.busy[n] = trio.Event()
        for n in ready:
            self._spawn(lambda n=n: self._upload_part(mp, n))

    # -- appends ---------------------------------------------------------------------

    async def _append(self, limit: int) -> None:
        """Append up to `limit` staged bytes after `remote_len`. Caller holds
        the lock. Returns without appending if the file changed so that it
        cannot (the caller looks at `remote_len` again)."""
        assert self.remote_len is not None
        if self.discarded:
            return
        start = self.remote_len
        ns, zos = self.path.ns, self.path.zos
        key = ns.key(self.inode)
        watch = self._watch()  # (before the first await: everything after it counts)
        try:
            meta = encode(self.inode.attrs, self.inode.meta)
            opts = await ns.write_options(self.inode, meta, replacing=True)
            if self.remote_len != start or self.discarded:
                return  # written below, or truncated below, what was appended meanwhile
            length = min(limit, self.size - start)
            # The object's ETag before this append: "" when it creates the
            # object, None when the object exists with an ETag not known here.
            previous = "" if not self.inode.remote else (self.inode.etag or None)
            self.appending = length
            try:
                with self._changing_object():
                    result = await zos.append(key, start, FileRegion(self._stage().fd, start, length), opts)
            finally:
                self.appending = 0
        except ZosError as err:
            if err.code in APPEND_UNSUPPORTED:
                self.path.append_unavailable(err)
            if err.code in NOT_APPENDABLE or err.code in APPEND_UNSUPPORTED:
                self._leave_append_mode(f"the server refused the append ({err.code})")
                if err.code == "PositionNotEqualToLength":
                    self._foreign_appends(start)
                return
            raise
        finally:
            self._unwatch(watch)
        if result.position != start + length:
            log.warning("%r was appended to by someone else; it will be rewritten whole", key)
            self._leave_append_mode("foreign appends")
            self._foreign_appends(start)
            return
        log.debug("appended %d bytes at %d to %r (chunk md5 %s)", length, start, key, result.etag)
        if self.remote_len is not None:  # (a write or truncate below the end may have ended append mode)
            self.remote_len = result.position
        # The object now holds the file's first start+length bytes, except
        # where they were written while they went out, and beyond a
        # truncation meanwhile.
        self.dirty.remove(start, start + length)
        for s, e in watch.changed:
            self.dirty.add(max(s, start), min(e, start + length))
        self.base_limit = min(watch.limit(start + length), self.size)
        self.inode.remote, self.inode.appendable, self.inode.meta = True, True, meta
        self.inode.etag = next_append_etag(previous, result.etag) if previous is not None and result.etag else ""
        ns.remember(key, self.inode)
        self._release_appended(start, start + length)
        self._uploaded(length)
        self.appends_failing = False
        self._report_progress()

    def _release_appended(self, start: int, end: int) -> None:
        """[start, end) was just appended: staging need not hold it any more
        (reads and rebuilds fetch it from the object, like any unchanged
        byte; see staging.py for why this matters). Only while the object
        is still exactly the file's first `remote_len` bytes, under a known
        ETag (recovery checks the object by it), and never bytes changed
        meanwhile."""
        staged = self.staged
        if staged is None or self.remote_len is None or not self.inode.etag or not self.path.punch_ok:
            return
        end = min(end, self.remote_len, self.base_limit)
        for s, e, dirty in list(self.dirty.pieces(start, end)):
            if dirty:
                continue
            try:
                freed = staged.release(s, e, self.remote_len, self.inode.etag)
            except OSError as err:
                freed = None
                log.warning("punching uploaded data out of staging failed (%s); staging keeps it until close", err)
            if freed is None:
                self.path.punch_ok = False
                return
            self.local.remove(*freed)

    def _foreign_appends(self, start: int) -> None:
        """Someone else appended to the object: its first `start` bytes are
        still this file's, but its ETag is no longer known."""
        self.base_limit = min(self.base_limit, start)
        self.inode.etag = ""

    def _uploaded(self, nbytes: int = 0) -> None:
        """Some data went out: hold no more of the staging budget than is
        still waiting to go. (Computed from the state rather than counted, so
        that overwrites, re-uploaded parts and mode changes can never make the
        account drift, and writers never wait for budget nobody holds.)"""
        outstanding = self._outstanding()
        if outstanding < self.charged:
            # (Never charged more here: bytes that must go out again, after a
            # restarted upload, were admitted once already.)
            self.path.staging.release(self.charged - outstanding)
            self.charged = outstanding

    def _outstanding(self) -> int:
        """Bytes written here that no upload has carried yet."""
        if self.remote_len is not None:
            return max(0, self.size - self.remote_len)
        mp, ps = self.multipart, self.part_size
        total = 0
        for start, end in list(self.dirty):
            if mp is None or mp.part_size != ps:
                total += end - start
                continue
            for n in range(start // ps, (end - 1) // ps + 1):
                if mp.done.get(n, (-1, ""))[0] != self.part_generation.get(n, 0):
                    total += min(end, (n + 1) * ps) - max(start, n * ps)
        return total

    # -- replacing the object ------------------------------------------------------------

    async def _start_multipart(self) -> None:
        ns = self.path.ns
        meta = encode(self.inode.attrs, self.inode.meta)
        opts = await ns.write_options(self.inode, meta, replacing=True)
        part_size = max(self.part_size, math.ceil(self.size / MAX_PARTS / MiB) * MiB)
        upload_id = await self.path.zos.create_multipart(ns.key(self.inode), opts)
        self.multipart = Multipart(upload_id, part_size)
        # Aborted at the next mount if we die (completed, if parts were freed).
        self._stage().write_journal(upload_id=upload_id, part_size=part_size)
        log.debug("started multipart upload %s of %r (parts of %d bytes)", upload_id, self.key_at_start, part_size)

    async def _upload_part(self, mp: Multipart, n: int) -> None:
        event = mp.busy[n]
        try:
            start = n * mp.part_size
            key = self.path.ns.key(self.inode)
            zos = self.path.zos
            async with self.path.part_slots:
                if self.multipart is not mp or (n and start >= self.size):
                    return  # aborted before its turn, or truncated away
                # (A change from here on makes the part's generation newer:
                # it is uploaded again.)
                gen = self.part_generation.get(n, 0)
                end = min(self.size, start + mp.part_size)
                if (
                    not self.dirty.overlaps(start, end)
                    and end <= self.base_limit
                    and (end - start >= MIN_PART or end == self.size)
                ):
                    # Unchanged: copied on the server, never downloaded.
                    etag = await zos.upload_part_copy(key, mp.upload_id, n + 1, key, start, end, self.base_etag or None)
                    copied = True
                else:
                    await self._fill(start, end)
                    region = FileRegion(self._stage().fd, start, end - start)
                    etag = await zos.upload_part(key, mp.upload_id, n + 1, region)
                    copied = False
                log.debug("uploaded part %d [%d, %d) of %r (generation %d)", n + 1, start, end, key, gen)
            if self.multipart is mp:
                mp.done[n] = (gen, etag)
                if not copied and end - start == mp.part_size:
                    self._free_part(mp, n, etag)
                self._uploaded()
                self._report_progress()
        finally:
            del mp.busy[n]
            event.set()

    def _frees_parts(self) -> bool:
        """Whether uploaded parts leave staging (see _free_part); other
        writers' backlog shrinks only at close, so they are never held."""
        staged = self.staged
        return staged is not None and bool(staged.record.get("created")) and self.path.punch_ok

    def _free_part(self, mp: Multipart, n: int, etag: str) -> None:
        """Part n went out from staging: free it there (as appended bytes
        are, see staging.py), so that a large new file holds a few parts of
        page cache rather than all of itself until close. Only for a new
        file (recovery then completes the upload: see recovery.py), only
        while the part is unchanged since, and only whole parts.
        From then on that upload is the only copy of those bytes: whatever
        would need them before the upload completes (a read, a change at or
        below them) completes it first (`_materialize`), and it is never
        aborted while it holds them, short of the file being deleted."""
        staged = self.staged
        start, end = n * mp.part_size, (n + 1) * mp.part_size
        if (staged is None or not self._frees_parts() or self.discarded
                or self.part_generation.get(n, 0) != mp.done[n][0] or not self.local.covers(start, end)):
            return
        try:
            freed = staged.free_part(mp.upload_id, n + 1, etag, start, end)
        except OSError as err:
            log.warning("freeing an uploaded part from staging failed (%s); staging keeps it until close", err)
            freed = None
        if freed is None:
            self.path.punch_ok = False
            return
        self.local.remove(start, end)
        self.freed.add(start, end)

    def _forget_freed(self) -> None:
        """The upload holding the freed parts is complete (or given up)."""
        self.freed = RangeSet()
        if self.staged is not None:
            self.staged.forget_parts()

    async def _materialize(self) -> None:
        """Complete the multipart upload up to its last freed part, so that
        the object holds those bytes: a read of them, or a change at or below
        them, needs them. The object is then the file's first P bytes (as an
        appended object is), and the rest goes on as a rebuild that copies
        them on the server. Costs a copy of P bytes at the next flush; done
        only when a file is read or changed where it was already uploaded
        while it is still being written for the first time."""
        async with self.lock:
            await self._complete_prefix()

    async def _complete_prefix(self) -> None:
        """`_materialize`, caller holds the lock."""
        mp = self.multipart
        if not self.freed:
            return
        if mp is None:  # (freed parts are forgotten whenever their upload ends)
            raise FsError(errno.EIO, f"internal error: {self.key_at_start!r} has freed parts but no upload")
        while mp.busy:
            await next(iter(mp.busy.values())).wait()
        if self.multipart is not mp or not self.freed:
            return
        ns = self.path.ns
        key = ns.key(self.inode)
        # Every byte staging does not hold must be in the completed object:
        # the freed parts, and what was appended before the upload began.
        # And RGW completes an upload only with all of its parts.
        size = self.size
        count = max(-(-max(self.freed.last_end(), self.base_limit) // mp.part_size), mp.uploaded())
        if count > -(-size // mp.part_size):  # (truncation below uploaded parts completes first)
            raise FsError(errno.EIO, f"internal error: {self.key_at_start!r} has parts beyond its end")
        watch = self._watch()
        try:
            parts = await self._upload_parts_and_complete(mp, key, count)
        except ZosError as err:
            raise FsError(errno.EIO, f"completing the upload of {self.key_at_start!r} to read or change it: {err}") from None
        finally:
            self._unwatch(watch)
        prefix = min(count * mp.part_size, size)
        etag = multipart_etag([p.etag for p in parts])
        log.info("completed the upload of the first %d bytes of %r, which is read or changed there while it is "
                 "written", prefix, key)
        self.multipart = None
        self.inode.remote, self.inode.appendable, self.inode.etag = True, False, etag
        ns.remember(key, self.inode)
        self.base_limit = min(watch.limit(prefix), self.size)
        self.dirty.remove(0, prefix)
        for s, e in watch.changed:
            if s < prefix:
                self.dirty.add(s, min(e, prefix))
        staged = self._stage()
        # Staging is now "the rest" above `prefix` (recovery uploads it as
        # such), unless a change below it came while the upload completed.
        staged.write_journal(appended=prefix, etag=etag, upload_id=None)
        if watch.changed and watch.changed.first_start() < prefix:
            staged.write_journal(created=False)
        self._forget_freed()

    async def _replace(self) -> None:
        """Make the object equal to the file, replacing it only when complete."""
        ns, zos = self.path.ns, self.path.zos
        key = ns.key(self.inode)
        meta = encode(self.inode.attrs, self.inode.meta)
        size = self.size
        watch = self._watch()
        try:
            if size <= self.path.opts.rewrite_threshold and not self.freed:
                if self.multipart is not None:
                    await self._abort_multipart()  # (the file shrank): one PUT is simpler
                opts = await ns.write_options(self.inode, meta, replacing=True)
                await self._fill(0, size)
                size = self.size
                with self._changing_object():
                    etag = await zos.put(key, FileRegion(self._stage().fd, 0, size), opts)
            else:
                size, etag = await self._complete_multipart(key)
        finally:
            self._unwatch(watch)
        self.inode.remote, self.inode.appendable, self.inode.meta = True, False, meta
        self.inode.etag = etag
        self.base_limit = min(watch.limit(size), self.size)

    async def _complete_multipart(self, key: str) -> tuple[int, str]:
        """Complete (or start and complete) the multipart upload of the file;
        returns the size stored and the object's ETag."""
        if self.multipart is not None and math.ceil(self.size / self.multipart.part_size) > MAX_PARTS:
            # The file outgrew its part size: start over (what only the
            # upload holds is completed first, and then copied).
            await self._complete_prefix()
            await self._abort_multipart()
        if self.multipart is None:
            await self._start_multipart()
        mp = self.multipart
        assert mp is not None
        try:
            while mp.busy:
                await next(iter(mp.busy.values())).wait()
            size = self.size
            nparts = max(1, math.ceil(size / mp.part_size))
            if mp.uploaded() > nparts:
                # Truncated below parts already uploaded, which RGW would not
                # leave out: start over (staging and the object hold it all,
                # since an upload holding freed parts completes first).
                if self.freed:
                    raise FsError(errno.EIO, f"internal error: {self.key_at_start!r} has parts beyond its end")
                await self._abort_multipart()
                await self._start_multipart()
                mp = self.multipart
                assert mp is not None
            parts = await self._upload_parts_and_complete(mp, key, nparts)
        except (ZosError, FsError) as err:
            # The upload and its finished parts stay for the next attempt
            # (fsync or close again); release aborts it if none succeeds.
            if isinstance(err, ZosError) and err.code == "NoSuchUpload":
                self.multipart = None
            raise
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._abort_multipart()
            raise
        self.multipart = None
        self._forget_freed()
        return size, multipart_etag([p.etag for p in parts])

    async def _upload_parts_and_complete(self, mp: Multipart, key: str, count: int) -> list[Part]:
        """Upload the parts below `count` that are missing or out of date (at
        once, within upload_concurrency), then complete the upload with parts
        1..count; returns them."""
        errors: list[ZosError | FsError] = []

        async def upload(n: int) -> None:
            try:
                await self._upload_part(mp, n)
            except (ZosError, FsError) as err:  # (raised in the nursery it would come wrapped)
                errors.append(err)

        async with trio.open_nursery() as nursery:
            for n in range(count):
                if mp.done.get(n, (-1, ""))[0] != self.part_generation.get(n, 0):
                    mp.busy[n] = trio.Event()
                    nursery.start_soon(upload, n)
        if errors:
            raise errors[0]
        if self.multipart is not mp or any(n not in mp.done for n in range(count)):
            raise FsError(errno.EIO, f"{self.key_at_start!r} changed while its upload was being completed")
        parts = [Part(n + 1, mp.done[n][1]) for n in range(count)]
        with self._changing_object():
            await self.path.zos.complete_multipart(key, mp.upload_id, parts)
        return parts

    def _may_become_appendable(self) -> bool:
        """A small object that is not appendable (made by PUT, multipart or
        a copy, or by this mount's rewrite after a truncation), written to
        through O_APPEND (`>>`), whose rewrite would be a PUT anyway."""
        return (self.path.append_ok and self.inode.remote and not self.inode.appendable and not self.freed
                and self.multipart is None and self.size <= self.path.opts.rewrite_threshold)

    async def _become_appendable(self) -> None:
        """Store the file as an appendable object: delete the object, then
        append all of the file (what a PUT would have sent), so that every
        later `>>` costs only its new bytes, instead of rewriting the whole
        file each time (a log truncated by `: > log` or logrotate's
        copytruncate became a PUT object, and each line then cost a download
        and an upload of the log). Readers elsewhere may find no object for
        the few milliseconds between the two requests; staging holds the
        whole file first (a failure leaves it there, as for a new file).
        Caller holds the lock."""
        ns = self.path.ns
        key = ns.key(self.inode)
        # Tags and ACL are read now, while the object exists: its
        # appendable successor carries them (see Namespace.write_options).
        await ns.write_options(self.inode, encode(self.inode.attrs, self.inode.meta), replacing=True)
        await self._fill(0, self.size)
        if self.remote_len is not None or not self._may_become_appendable():
            return  # (changed while the bytes came)
        self._stage().write_journal(created=True)  # staging holds all of the file now
        self.created = True
        try:
            with self._changing_object():
                await self.path.zos.delete(key)
        except ZosError as err:
            log.info("%r stays a non-appendable object: deleting it before appending failed (%s)", key, err)
            return
        log.debug("%r is stored again as an appendable object (written through O_APPEND)", key)
        self.inode.remote, self.inode.etag = False, ""
        self.remote_len, self.base_limit = 0, 0
        self.dirty.add(0, self.size)
        await self._append(self.size)  # in one request: never a partial version in the bucket

    async def _abort_multipart(self) -> None:
        """Abort the multipart upload, unless it holds freed parts of a file
        that still exists: it is then kept (with the staging file) for the
        next attempt, or for recovery, and the log says so."""
        mp = self.multipart
        if mp is not None and self.freed and not self.discarded:
            log.warning("multipart upload %s of %r is kept: it holds the only copy of some of its bytes",
                        mp.upload_id, self.key_at_start)
            return
        self.multipart = None
        if mp is not None:
            while mp.busy:  # parts on their way would fail, or outlive the abort
                await next(iter(mp.busy.values())).wait()
            await self.path.zos.abort_quietly(self.path.ns.key(self.inode), mp.upload_id)
            self._forget_freed()

    # -- flushing ------------------------------------------------------------------------

    async def flush(self) -> None:
        """Store everything written so far; raise FsError(EIO) if that fails."""
        if self.discarded:
            return
        async with self.lock:
            if self.discarded or (not self.pending and not self.dirty):
                return
            generation = self.generation
            watch = self._watch()
            try:
                if self.remote_len is None and self.opened_for_append and self._may_become_appendable():
                    await self._become_appendable()
                if self.remote_len is not None:
                    # (Not a flush before any data, as when dd closes the
                    # descriptor it opened after duplicating it.)
                    self.synced_while_appending = self.synced_while_appending or self.size > 0
                    await self._flush_appends()
                if self.remote_len is None and not self.discarded:
                    await self._replace()
            except ZosError as err:
                self.error = err
                raise FsError(errno.EIO, f"uploading {self.key_at_start!r} failed: {err}") from None
            except FsError as err:
                self.error = err
                raise FsError(errno.EIO, f"uploading {self.key_at_start!r} failed: {err.message}") from None
            finally:
                self._unwatch(watch)
            self.error = None
            self.flushed_generation = generation
            # What was written during the upload may have missed it.
            self.dirty = watch.changed
            self.dirty.remove(self.size, max(self.size, watch.changed.last_end()))
            self.inode.page_etag = self.inode.etag  # the kernel's pages are of this version
            self.path.ns.remember(self.path.ns.key(self.inode), self.inode)
            self._uploaded()
            if self.staged is not None and not self.dirty:
                self.staged.write_journal(state="uploaded", upload_id=None)  # nothing to recover

    async def _flush_appends(self) -> None:
        assert self.remote_len is not None
        while self.remote_len is not None and self.remote_len < self.size and not self.discarded:
            await self._append(MAX_APPEND_CHUNK)
        if self.remote_len is not None and (not self.inode.remote or self.pending_attrs()):
            await self._append(0)  # creates an empty file, or carries new metadata

    def pending_attrs(self) -> bool:
        return encode(self.inode.attrs, self.inode.meta) != self.inode.meta

    async def wait_idle(self) -> None:
        while self.tasks:
            await self.idle.wait()

    async def finish(self) -> None:
        """After the last flush: wait for background work, and abort a
        multipart upload that a background task began but nothing completed."""
        await self.wait_idle()
        if self.multipart is not None:
            async with self.lock:
                await self._abort_multipart()

    def close(self, keep_reason: str | None = None) -> None:
        """Drop the staging file; with a reason, keep it for recovery instead."""
        if self.delayed_append is not None:
            self.delayed_append.cancel()
            self.delayed_append = None
        if self.staged is not None:
            if keep_reason is None:
                self.staged.discard()
            else:
                self.staged.keep(keep_reason)
            self.staged = None
        self.path.staging.release(self.charged)
        self.charged = 0


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
        self._versions: weakref.WeakKeyDictionary[Inode, int] = weakref.WeakKeyDictionary()

    def append_unavailable(self, err: ZosError) -> None:
        if self.append_ok:
            log.warning("append upload is refused by the server (%s); files are uploaded by PUT and multipart", err.code)
            self.append_ok = False

    def make_room(self) -> None:
        """The staging budget is full: send out what can go now, however
        little, retrying uploads that failed. (Files being rewritten below
        rewrite_threshold go only when closed: the budget must exceed them.)"""
        for writer in list(self.writers):
            writer.error = None
            writer._kick(force=True)

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
        if inode.writer is None:
            self._new_writer(inode, truncate=True)
        else:
            await inode.writer.truncate(0)

    async def write(self, inode: Inode, offset: int, data: bytes) -> int:
        return await self.writer(inode).write(offset, data)

    async def truncate(self, inode: Inode, size: int) -> None:
        await self.writer(inode).truncate(size)
        if not inode.opens:
            await self.release(inode)  # truncate(2) of a file no one has open: no close will store it


    async def read(self, inode: Inode, offset: int, length: int) -> bytes:
        assert inode.writer is not None
        return await inode.writer.read(offset, length)

    async def flush(self, inode: Inode) -> None:
        writer = inode.writer
        if writer is not None:
            await writer.flush()

    async def release(self, inode: Inode) -> None:
        """The last handle closed: flush, and let the writer go. If the data
        cannot be stored it stays in staging (the log says where) and this
        raises FsError(EIO). If the file is opened again meanwhile, the new
        handle carries on with the writer (its close stores it)."""
        writer = inode.writer
        if writer is None or inode.opens:
            return
        failure: FsError | None = None
        try:
            await writer.flush()
        except FsError as err:
            failure = err
        await writer.wait_idle()
        if inode.opens or inode.writer is not writer:
            if failure is not None:
                raise failure
            return
        # Nothing awaits from here until the writer is gone.
        key, multipart = self.ns.key(inode), writer.multipart
        writer.multipart = None
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
            inode.fresh_until = 0.0
            if not inode.remote:
                inode.size = 0
        if multipart is not None:  # failed, or begun in the background after the last flush
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
                await writer._materialize()  # (what only an upload holds must be in the object to be read)
            except FsError as err:
                log.warning("%s; the open handle of the unlinked file reads EIO there", err.message)
        async with writer.lock:  # (after an upload in flight)
            if inode.opens:
                # The handles go on with the file, as POSIX has it: bring
                # what they did not write into staging before it is deleted.
                try:
                    await writer._fill(0, writer.size)
                except FsError as err:
                    log.warning("%s; the open handle of the unlinked file reads EIO there", err.message)
        await writer.wait_idle()
        if writer.multipart is not None:
            await writer._abort_multipart()
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
        with trio.move_on_at(deadline):
            for writer in list(self.writers):
                try:
                    await writer.flush()
                    await writer.finish()
                except FsError as err:
                    log.error("%s", err.message)
                    failed.append(writer.inode)
        for writer in list(self.writers):
            if writer.pending:
                if writer.inode not in failed:
                    failed.append(writer.inode)
                writer.close(keep_reason="unmounted before it was uploaded")
            else:
                writer.close()
        self.writers.clear()
        return failed
