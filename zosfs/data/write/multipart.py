"""Streaming multipart: a file's parts go out while it is written.

Its one job: one multipart upload per writer, in replace mode (a new file
that grew past `multipart_threshold` while written fast, or a rebuild past
`rewrite_threshold`): start it, upload parts (copied on the server where
unchanged, sent from staging where changed), free the parts of a new file
from staging once uploaded (so that a large new file holds a few parts of
page cache rather than all of itself until close), complete it (whole, or up
to its last freed part when those bytes are needed: `materialize`), and
abort it. When parts go out, and when the upload is completed for good, is
decided by the replace mode (replace.py).

A failed multipart upload is kept for the next attempt (fsync or close
again) and aborted when the file is released without success; one that
holds freed parts is never aborted while the file exists (recovery completes
it).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from zosfs.data.ranges import RangeSet
from zosfs.data.write.state import MAX_PARTS, MiB, Watch
from zosfs.fserror import FsError
from zosfs.namespace.metadata import encode
from zosfs.zos import FileRegion, LocalFileError, Part, ZosError

if TYPE_CHECKING:
    from zosfs.data.write.writer import Writer

log = logging.getLogger(__package__)  # (the write path logs as one: zosfs.data.write)

MIN_PART = 5 * MiB
COMPLETE_ROUNDS = 3  # rounds of parts sent again before a completion gives up (see StreamingMultipart.complete)


def multipart_etag(part_etags: list[str]) -> str:
    """S3's (and RGW's) ETag of a multipart object: md5 of the concatenated
    binary part MD5s, then -n."""
    digest = hashlib.md5(b"".join(bytes.fromhex(e) for e in part_etags)).hexdigest()
    return f"{digest}-{len(part_etags)}"


@dataclass(frozen=True)
class Sent:
    """A part an upload holds: the generation of the file's bytes it carries
    (see FileState.touch), its ETag, and where it ends (it begins at
    n * part_size): a part sent as the short last one is out of date once
    the file grows past it, whatever the generations say."""

    generation: int
    etag: str
    end: int


@dataclass
class Multipart:
    """A multipart upload in progress for a writer in replace mode."""

    upload_id: str
    part_size: int
    done: dict[int, Sent] = field(default_factory=dict)  # part -> what the upload holds of it
    busy: dict[int, trio.Event] = field(default_factory=dict)  # parts being uploaded

    def uploaded(self) -> int:
        """How many parts the upload has, or is getting (counted up to the
        last one): RGW completes an upload only with every part it holds, so
        no completion may leave one out (S3 would simply drop it)."""
        return max(max(self.done, default=-1), max(self.busy, default=-1)) + 1

    async def settle(self) -> None:
        """Wait until no part is on its way."""
        while self.busy:
            await next(iter(self.busy.values())).wait()


class StreamingMultipart:
    """The multipart upload of one writer, if any (`upload`), and the parts
    of staging only it holds (the writer's `freed`)."""

    def __init__(self, writer: Writer) -> None:
        self.w = writer
        self.upload: Multipart | None = None

    def _generation(self, mp: Multipart, n: int) -> int:
        """The generation of the last change to part n of `mp`, whose parts
        may be larger than the writer's (see `start`): the latest of the
        writer's parts it covers."""
        ps, mps = self.w.part_size, mp.part_size
        if ps == mps:
            return self.w.part_generation.get(n, 0)
        first, last = n * mps // ps, ((n + 1) * mps - 1) // ps
        return max((self.w.part_generation.get(k, 0) for k in range(first, last + 1)), default=0)

    def current(self, mp: Multipart, n: int) -> bool:
        """Whether `mp` holds part n as the file has it now: sent since its
        last change, and with the extent it has now. S3 takes a part under
        5 MiB only as the last one, so a part sent while it was the file's
        short end must go again once the file grows past it (or shrinks
        into it), by whatever means."""
        sent = mp.done.get(n)
        return (sent is not None and sent.generation == self._generation(mp, n)
                and sent.end == min(self.w.size, (n + 1) * mp.part_size))

    async def start(self) -> None:
        w = self.w
        ns = w.path.ns
        meta = encode(w.inode.attrs, w.inode.meta)
        opts = await ns.write_options(w.inode, meta, replacing=True)
        part_size = max(w.part_size, math.ceil(w.size / MAX_PARTS / MiB) * MiB)
        upload_id = await w.path.zos.create_multipart(ns.key(w.inode), opts)
        self.upload = Multipart(upload_id, part_size)
        # Aborted at the next mount if we die (completed, if parts were freed).
        w.stage().write_journal(upload_id=upload_id, part_size=part_size)
        log.debug("started multipart upload %s of %r (parts of %d bytes)", upload_id, w.key_at_start, part_size)

    async def claim_ready(self, force: bool) -> tuple[Multipart, list[int]] | None:
        """The parts ready for background upload (wholly written, before the
        writer's frontier; with `force`, also the unfinished one at the
        frontier), marked busy, and the upload they go to (started if
        needed). Caller holds the lock and uploads them."""
        w = self.w
        ps = w.part_size
        if self.upload is not None and self.upload.part_size != ps:
            return None  # the file outgrew its part size; everything goes at flush
        mp = self.upload
        ready = []
        limit = min(w.frontier, w.size)
        for n in range(-(-w.size // ps) if force else limit // ps):
            start, end = n * ps, min((n + 1) * ps, w.size)
            if mp is not None and (n in mp.busy or self.current(mp, n)):
                continue
            if force and w.dirty.overlaps(start, end):
                ready.append(n)  # (filled from the object by upload_part: it frees the budget now)
            elif not force and (w.local.covers(start, end) or not w.dirty.overlaps(start, end)):
                ready.append(n)
        log.debug("parts ready for background upload of %r: %s (frontier %d)", w.key_at_start, ready, w.frontier)
        if not ready:
            return None
        if mp is None:
            await self.start()
            mp = self.upload
            assert mp is not None
            if mp.part_size != ps:
                return None
        for n in ready:
            mp.busy[n] = trio.Event()
        return mp, ready

    async def upload_part(self, mp: Multipart, n: int) -> None:
        """Upload part n (marked busy by the caller) as the file holds it now."""
        w = self.w
        event = mp.busy[n]
        watch: Watch | None = None  # (what changes while a part goes out from staging)
        try:
            start = n * mp.part_size
            key = w.path.ns.key(w.inode)
            zos = w.path.zos
            async with w.path.part_slots:
                if self.upload is not mp or (n and start >= w.size):
                    return  # aborted before its turn, or truncated away
                # (A change from here on makes the part's generation newer:
                # it is uploaded again.)
                gen = self._generation(mp, n)
                end = min(w.size, start + mp.part_size)
                if (
                    end > start  # (an empty range, `bytes=0--1`, is InvalidArgument: the empty file's part)
                    and not w.dirty.overlaps(start, end)
                    and end <= w.base_limit
                    and (end - start >= MIN_PART or end == w.size)
                ):
                    # Unchanged: copied on the server, never downloaded.
                    source = w.base_etag
                    etag = await zos.upload_part_copy(key, mp.upload_id, n + 1, key, start, end, source or None)
                    copied = True
                else:
                    watch = w.watch()
                    await w.fill(start, end)
                    region = FileRegion(w.stage().fd, start, end - start)
                    try:
                        etag = await zos.upload_part(key, mp.upload_id, n + 1, region)
                    except LocalFileError:
                        if w.size >= end and self._generation(mp, n) == gen:
                            raise
                        # Cut short by a truncation while it went out (staging
                        # is shorter than the part was): not a failure of the
                        # staging directory. The part goes again at its new
                        # extent, if it still has one.
                        log.debug("part %d of %r was truncated while it went out", n + 1, key)
                        return
                    copied = False
                log.debug("uploaded part %d [%d, %d) of %r (generation %d)", n + 1, start, end, key, gen)
            if self.upload is mp:
                mp.done[n] = Sent(gen, etag, end)
                # The part's blocks go into the block cache, to be the
                # object's when the upload completes with it (cachefeed.py);
                # a part sent from staging leaves it only after that.
                feeds = w.path.feeds
                if copied:
                    feeds.part_copied(w, mp.upload_id, n + 1, etag, start, end, source)
                else:
                    assert watch is not None
                    free = (lambda: self._free_part(mp, n, etag)) if end - start == mp.part_size else None
                    feeds.part_uploaded(w, mp.upload_id, n + 1, etag, start, end, watch, after=free)
                w.uploaded()
                w.report_progress()
        finally:
            if watch is not None:
                w.unwatch(watch)
            del mp.busy[n]
            event.set()

    def outstanding(self) -> int:
        """Bytes written here that no part uploaded since has carried."""
        w = self.w
        mp, ps = self.upload, w.part_size
        total = 0
        for start, end in list(w.dirty):
            if mp is None or mp.part_size != ps:
                total += end - start
                continue
            for n in range(start // ps, (end - 1) // ps + 1):
                if not self.current(mp, n):
                    total += min(end, (n + 1) * ps) - max(start, n * ps)
        return total

    # -- freeing parts from staging ------------------------------------------------------

    def frees_parts(self) -> bool:
        """Whether uploaded parts leave staging (see _free_part); other
        writers' backlog shrinks only at close, so they are never held."""
        staged = self.w.staged
        return staged is not None and bool(staged.record.get("created")) and self.w.path.punch_ok

    def _free_part(self, mp: Multipart, n: int, etag: str) -> None:
        """Part n went out from staging: free it there (as appended bytes
        are, see staging.py), so that a large new file holds a few parts of
        page cache rather than all of itself until close. Only for a new
        file (recovery then completes the upload: see recovery.py), only
        while the part is unchanged since, and only whole parts.
        From then on that upload is the only copy of those bytes: whatever
        would need them before the upload completes (a read, a change at or
        below them) completes it first (`materialize`), and it is never
        aborted while it holds them, short of the file being deleted."""
        w = self.w
        staged = w.staged
        start, end = n * mp.part_size, (n + 1) * mp.part_size
        if (self.upload is not mp or staged is None or not self.frees_parts() or w.discarded
                or not self.current(mp, n) or not w.local.covers(start, end)):
            return
        try:
            freed = staged.free_part(mp.upload_id, n + 1, etag, start, end)
        except OSError as err:
            log.warning("freeing an uploaded part from staging failed (%s); staging keeps it until close", err)
            freed = None
        if freed is None:
            w.path.punch_ok = False
            return
        w.local.remove(start, end)
        w.freed.add(start, end)

    def forget_freed(self) -> None:
        """The upload holding the freed parts is complete (or given up)."""
        self.w.freed = RangeSet()
        if self.w.staged is not None:
            self.w.staged.forget_parts()

    async def before_change(self, at: int, truncating: bool = False) -> None:
        """A change from `at` on is coming: if parts at or beyond it were freed
        from staging, complete the upload that holds them first, so that the
        object has them (a part cannot be partly rewritten, and staging is
        "the rest of the object" only above what the object holds). A
        truncation also completes it first when it cuts into any uploaded
        part: RGW could not leave that part out (see Multipart.uploaded)."""
        w = self.w
        while w.freed and (mp := self.upload) is not None:
            end = w.freed.last_end()
            if truncating:
                end = max(end, mp.uploaded() * mp.part_size)
            if min(at, w.size) >= end:
                return
            await self.materialize()

    # -- completing and aborting ---------------------------------------------------------

    async def materialize(self) -> None:
        """Complete the multipart upload up to its last freed part, so that
        the object holds those bytes: a read of them, or a change at or below
        them, needs them. The object is then the file's first P bytes (as an
        appended object is), and the rest goes on as a rebuild that copies
        them on the server. Costs a copy of P bytes at the next flush; done
        only when a file is read or changed where it was already uploaded
        while it is still being written for the first time."""
        async with self.w.lock:
            await self.complete_prefix()

    async def complete_prefix(self) -> None:
        """`materialize`, caller holds the lock."""
        w = self.w
        mp = self.upload
        if not w.freed:
            return
        if mp is None:  # (freed parts are forgotten whenever their upload ends)
            raise FsError(errno.EIO, f"internal error: {w.key_at_start!r} has freed parts but no upload")
        await mp.settle()
        if self.upload is not mp or not w.freed:
            return
        ns = w.path.ns
        key = ns.key(w.inode)
        # Every byte staging does not hold must be in the completed object:
        # the freed parts, and what was appended before the upload began.
        # And RGW completes an upload only with all of its parts.
        size = w.size
        count = max(-(-max(w.freed.last_end(), w.base_limit) // mp.part_size), mp.uploaded())
        if count > -(-size // mp.part_size):  # (truncation below uploaded parts completes first)
            raise FsError(errno.EIO, f"internal error: {w.key_at_start!r} has parts beyond its end")
        watch = w.watch()
        try:
            parts = await self.complete(mp, key, count)
        except ZosError as err:
            raise FsError(errno.EIO, f"completing the upload of {w.key_at_start!r} to read or change it: {err}") from None
        finally:
            w.unwatch(watch)
        prefix = min(count * mp.part_size, size)
        etag = multipart_etag([p.etag for p in parts])
        w.path.feeds.completed(w, mp.upload_id, [(p.number, p.etag) for p in parts], etag, prefix)
        log.info("completed the upload of the first %d bytes of %r, which is read or changed there while it is "
                 "written", prefix, key)
        self.upload = None
        w.inode.remote, w.inode.appendable, w.inode.etag = True, False, etag
        ns.remember(key, w.inode)
        w.base_limit = min(watch.limit(prefix), w.size)
        w.dirty.remove(0, prefix)
        for s, e in watch.changed:
            if s < prefix:
                w.dirty.add(s, min(e, prefix))
        staged = w.stage()
        # Staging is now "the rest" above `prefix` (recovery uploads it as
        # such), unless a change below it came while the upload completed.
        staged.write_journal(appended=prefix, etag=etag, upload_id=None)
        if watch.changed and watch.changed.first_start() < prefix:
            staged.write_journal(created=False)
        self.forget_freed()

    async def complete(self, mp: Multipart, key: str, count: int) -> list[Part]:
        """Upload the parts below `count` that are missing or out of date (at
        once, within upload_concurrency), then complete the upload with parts
        1..count; returns them. Never asks for a completion the server would
        refuse: every part but the last is whole (a truncation while the
        parts went out may leave one short: it is sent again, a few times at
        most; then EIO, and the next flush starts over)."""
        w = self.w
        errors: list[ZosError | FsError] = []

        async def upload(n: int) -> None:
            try:
                await self.upload_part(mp, n)
            except (ZosError, FsError) as err:  # (raised in the nursery it would come wrapped)
                errors.append(err)

        def unfit(n: int) -> bool:
            sent = mp.done.get(n)
            return sent is None or (n < count - 1 and sent.end != (n + 1) * mp.part_size)

        todo = [n for n in range(count) if not self.current(mp, n)]
        for _ in range(COMPLETE_ROUNDS):
            if not todo:
                break
            await mp.settle()  # (the caller holds the lock: no part is claimed meanwhile)
            async with trio.open_nursery() as nursery:
                for n in todo:
                    mp.busy[n] = trio.Event()
                    nursery.start_soon(upload, n)
            if errors:
                raise errors[0]
            if self.upload is not mp:
                break
            # (What changed meanwhile stays dirty for the next flush; only
            # what the server would refuse is sent again now.)
            todo = [n for n in range(count) if unfit(n)]
        if self.upload is not mp or any(unfit(n) for n in range(count)):
            raise FsError(errno.EIO, f"{w.key_at_start!r} changed while its upload was being completed")
        parts = [Part(n + 1, mp.done[n].etag) for n in range(count)]
        with w.changing_object():
            await w.path.zos.complete_multipart(key, mp.upload_id, parts)
        return parts

    async def abort(self) -> None:
        """Abort the multipart upload, unless it holds freed parts of a file
        that still exists: it is then kept (with the staging file) for the
        next attempt, or for recovery, and the log says so."""
        w = self.w
        mp = self.upload
        if mp is not None and w.freed and not w.discarded:
            log.warning("multipart upload %s of %r is kept: it holds the only copy of some of its bytes",
                        mp.upload_id, w.key_at_start)
            return
        self.upload = None
        if mp is not None:
            await mp.settle()  # parts on their way would fail, or outlive the abort
            await w.path.zos.abort_quietly(w.path.ns.key(w.inode), mp.upload_id)
            self.forget_freed()
            w.path.feeds.aborted(w, mp.upload_id)
