"""The staged state of one file with unflushed changes.

Its one job: what staging holds (`local`), which of it the object lacks
(`dirty`), which parts only a multipart upload holds (`freed`), how much of
the object is still the file's (`base_limit`), and what changed while an
upload ran (`Watch`). Every way bytes go out (append.py, multipart.py,
replace.py) reads and changes these same ranges, so they are defined, and
kept consistent, in one place; the ways themselves hold only what is theirs.

Uploads run while the file goes on changing (background appends and parts,
flushes during writes from other threads): each upload notes what changed
while it ran (`Watch`) and keeps that dirty, and never trusts object bytes
beyond a truncation that happened meanwhile.
"""

from __future__ import annotations

import errno
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import trio

from zosfs.data.ranges import RangeSet
from zosfs.data.staging import StagedFile
from zosfs.fserror import FsError
from zosfs.namespace.inodes import Inode
from zosfs.namespace.metadata import encode
from zosfs.zos import ZosError

if TYPE_CHECKING:
    from zosfs.data.write.registry import WritePath

MiB = 1024 * 1024
MAX_PARTS = 10_000


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


class FileState:
    """The ranges and staging file of one file with unflushed changes, and
    the object they relate to (see the module docstring). `Writer` is this
    state plus the ways it goes out."""

    def __init__(self, path: WritePath, inode: Inode, truncate: bool) -> None:
        self.path = path
        self.inode = inode
        self.key_at_start = path.ns.key(inode)
        self.staged: StagedFile | None = None
        self.local = RangeSet()  # bytes staging holds
        self.dirty = RangeSet()  # bytes staging holds that the object lacks
        # Parts of the multipart upload that were freed from staging: only
        # that upload holds those bytes (see StreamingMultipart.free_part).
        self.freed = RangeSet()
        exists = inode.remote
        self.created = not exists  # staging will hold all of the file (recovery may upload it)
        if truncate:
            inode.size = 0
        self.size = inode.size
        # The object's bytes below base_limit are the file's, except where
        # dirty; old bytes beyond it are gone (truncated) or never existed.
        self.base_limit = 0 if truncate or not exists else inode.size
        self.generation = 1 if (not exists or truncate) else 0
        self.flushed_generation = 0
        self.part_size = max(path.opts.part_size, math.ceil(self.size / MAX_PARTS / MiB) * MiB)
        self.part_generation: dict[int, int] = {}  # part -> generation of its last change
        self.frontier = 0  # where the last write ended: parts before it are finished
        self.first_write: float | None = None  # trio time of the first write (see STREAMING_RATE)
        self.opened_for_append = False  # written through an O_APPEND handle (see Replace.become_appendable)
        # Size of the PUT that stored this new file whole at a close (see
        # flush.py), while the writer lives; None if it did not.
        self.put_whole: int | None = None
        self.charged = 0  # bytes of the staging budget this writer holds
        self.error: ZosError | FsError | None = None
        self.discarded = False
        self.object_changes = 0  # requests of this writer in flight that change the object (its ETag)
        self._object_settled = trio.Event()  # set (and replaced) when the last of them ends
        self._watches: list[Watch] = []

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

    def pending_attrs(self) -> bool:
        return encode(self.inode.attrs, self.inode.meta) != self.inode.meta

    def stage(self) -> StagedFile:
        """The staging file, made on first use."""
        if self.staged is None:
            self.staged = self.path.staging.create(self.path.ns.key(self.inode), self.created)
        return self.staged

    def changing(self, at: int) -> StagedFile:
        """Staging, about to hold bytes the server lacks, from offset `at` on:
        the journal says so (and under which key: the file may have been
        renamed). A change below the bytes freed after appends means staging
        is no longer "the rest of the object" (recovery would append it to
        the old bytes): from then on it counts as a change to an existing
        object, which recovery keeps for a person to decide. (Bytes appended
        and not yet freed because they wait to be copied into the block cache
        count as freed: they will be, see `freeing_appended`.)"""
        staged = self.stage()
        if staged.record.get("state") != "writing":
            staged.write_journal(key=self.path.ns.key(self.inode), state="writing")
        if staged.record.get("created") and at < max(staged.record.get("appended", 0), self.freeing_appended()):
            staged.write_journal(created=False)
        return staged

    def freeing_appended(self) -> int:
        """How far appended bytes are about to be freed from staging (0: none are)."""
        return 0

    def touch(self, start: int, end: int) -> None:
        """[start, end) changed: a new generation, for the file and its parts."""
        self.generation += 1
        if end > start:
            ps = self.part_size
            for n in range(start // ps, (end - 1) // ps + 1):
                self.part_generation[n] = self.generation
        for watch in self._watches:
            watch.changed.add(start, end)

    def truncated(self, size: int) -> None:
        """The file was cut to `size`: uploads in flight must not trust object bytes beyond it."""
        for watch in self._watches:
            watch.truncated(size)

    def watch(self) -> Watch:
        """Start noting what changes from now on (until `unwatch`)."""
        watch = Watch()
        self._watches.append(watch)
        return watch

    def unwatch(self, watch: Watch) -> None:
        self._watches.remove(watch)

    # -- the object's unchanged bytes -------------------------------------------------

    async def get_base(self, start: int, end: int) -> bytes | bytearray | memoryview:
        """Bytes [start, end) of the object, as long as it is the base (by ETag)."""
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
    def changing_object(self) -> Iterator[None]:
        """Around a request that changes the object: readers that find it
        changed meanwhile wait for its answer (see get_base)."""
        self.object_changes += 1
        try:
            yield
        finally:
            self.object_changes -= 1
            if not self.object_changes:
                self._object_settled.set()
                self._object_settled = trio.Event()

    async def fill(self, start: int, end: int) -> None:
        """Bring unchanged bytes of the object into staging (before re-uploading them)."""
        for s, e, here in list(self.local.pieces(start, end)):
            if here:
                continue
            if self.freed.overlaps(s, e):  # (every change there completes the upload first)
                raise FsError(errno.EIO, f"internal error: {self.key_at_start!r} [{s}, {e}) is in freed parts")
            clean_end = min(e, self.base_limit)
            if s < clean_end:
                data = memoryview(await self.get_base(s, clean_end))
                # Meanwhile the file may have been written (those bytes win)
                # or truncated (nothing beyond its end may reappear).
                limit = min(clean_end, self.size, self.base_limit)
                try:
                    for ps, pe, written in list(self.local.pieces(s, limit)):
                        if not written:
                            self.stage().pwrite(data[ps - s : pe - s], ps)
                except OSError as err:
                    raise self.path.staging.local_error(
                        err, f"bringing unchanged bytes of {self.key_at_start!r} into staging to upload them") from None
            self.local.add(s, min(e, self.size))  # beyond base_limit staging holds zeros already
