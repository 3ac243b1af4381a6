"""The write path: staging, append upload, multipart, and rebuilds.

Every file with unflushed changes has a `Writer`: a sparse staging file, the
ranges of it that differ from the object (`dirty`), the ranges it holds at
all (`local`), and how the object on the server relates to it. How data goes
out depends on that relation:

- Append mode. While the object on the server is exactly the first
  `remote_len` bytes of the file and every change lies beyond them (a new
  file written sequentially, `>>` on an appendable object), new bytes go out
  by append upload as they arrive, in chunks that grow from `append_chunk`
  to 64 MiB. Only new bytes ever cross the wire, and a growing log can be
  read by others while it is written. A file that grows past
  `multipart_threshold` leaves append mode.
- Replace mode (anything else: overwrites, truncation, non-appendable
  objects, buckets without append). The object is replaced only when the new
  content is complete: files up to `rewrite_threshold` by one PUT (unchanged
  bytes downloaded first), larger ones by multipart upload in which unchanged
  parts are copied on the server (upload-part-copy) and changed parts are
  sent from staging. A sequential writer's finished parts are uploaded in the
  background while it writes.

Every object written carries the file's full metadata, tags and ACL, since
RGW replaces them on each append (see `Namespace.write_options`).

Durability: `flush` (close) and `fsync` return only when everything written
so far is stored in the object store, and raise EIO otherwise; the data then
stays in staging, and on release the log names the file that holds it.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import math
from dataclasses import dataclass, field

import trio

from zosfs.data.ranges import RangeSet
from zosfs.data.staging import StagedFile, Staging
from zosfs.fserror import FsError
from zosfs.namespace.inodes import Inode
from zosfs.namespace.metadata import encode
from zosfs.namespace.tree import Namespace
from zosfs.options import Options
from zosfs.zos import FileRegion, Part, WriteOptions, ZosClient, ZosError

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MAX_APPEND_CHUNK = 64 * MiB
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


class AppendEtag:
    """RGW's ETag of an object made by appends, followed append by append.

    After one append it is the MD5 of the data; after each further append it
    is md5(previous digest + MD5 of the new data), with "-n" for n appends
    (measured on RGW 16.2: a running hash, not the multipart formula).
    """

    def __init__(self) -> None:
        self.digest = b""
        self.count = 0

    def add(self, chunk_md5: str) -> None:
        part = bytes.fromhex(chunk_md5)
        self.digest = hashlib.md5(self.digest + part).digest() if self.count else part
        self.count += 1

    def __str__(self) -> str:
        if not self.count:
            return ""
        return self.digest.hex() if self.count == 1 else f"{self.digest.hex()}-{self.count}"


@dataclass
class Multipart:
    """A multipart upload in progress for a writer in replace mode."""

    upload_id: str
    part_size: int
    done: dict[int, tuple[int, str]] = field(default_factory=dict)  # part -> (generation, etag)
    busy: dict[int, trio.Event] = field(default_factory=dict)  # parts being uploaded


class Writer:
    """The unflushed state of one file (see the module docstring)."""

    def __init__(self, path: WritePath, inode: Inode, truncate: bool) -> None:
        self.path = path
        self.inode = inode
        self.key_at_start = path.ns.key(inode)
        self.staged: StagedFile | None = None
        self.local = RangeSet()  # bytes staging holds
        self.dirty = RangeSet()  # bytes staging holds that the object lacks
        exists = inode.remote
        if truncate:
            inode.size = 0
        self.size = inode.size
        self.base_size = inode.size if exists else 0
        self.base_limit = 0 if truncate else self.base_size  # old bytes beyond this are gone
        self.base_etag = inode.etag
        # Append mode: the object is exactly the file's first remote_len bytes.
        if not path.append_ok:
            self.remote_len: int | None = None
        elif not exists:
            self.remote_len = 0
        elif inode.appendable and not truncate:
            self.remote_len = self.base_size
        else:
            self.remote_len = None
        # The object's ETag, when this writer made every append of it.
        self.append_etag: AppendEtag | None = AppendEtag() if not exists else None
        self.appending = 0  # bytes of an append in flight
        self.generation = 1 if (not exists or truncate) else 0
        self.flushed_generation = 0
        self.part_size = max(path.opts.part_size, math.ceil(self.size / MAX_PARTS / MiB) * MiB)
        self.part_generation: dict[int, int] = {}  # part -> generation of its last change
        self.multipart: Multipart | None = None
        self.frontier = 0  # where the last write ended: parts before it are finished
        self.parts_checked = 0  # parts below this were looked at for background upload
        self.append_scheduled = False
        self.charged = 0
        self.error: ZosError | FsError | None = None
        self.lock = trio.Lock()
        self.tasks = 0
        self.idle = trio.Event()
        self.idle.set()
        self.discarded = False

    # -- state -----------------------------------------------------------------

    @property
    def pending(self) -> bool:
        return self.generation != self.flushed_generation

    def _stage(self) -> StagedFile:
        if self.staged is None:
            self.staged = self.path.staging.create(self.path.ns.key(self.inode))
        return self.staged

    def _touch(self, start: int, end: int) -> None:
        self.generation += 1
        if end > start:
            ps = self.part_size
            for n in range(start // ps, (end - 1) // ps + 1):
                self.part_generation[n] = self.generation

    def _leave_append_mode(self, why: str) -> None:
        if self.remote_len is not None:
            log.debug("%r leaves append mode: %s", self.key_at_start, why)
            self.remote_len = None

    # -- changes ---------------------------------------------------------------

    async def write(self, offset: int, data: bytes) -> int:
        if self.error is not None and not isinstance(self.error, FsError):
            self.error = None  # a new write is a new chance; flush retries anyway
        await self.path.staging.reserve(len(data))
        self.charged += len(data)
        end = offset + len(data)
        staged = self._stage()
        if end > self.size:
            self.size = end
            self.inode.size = end
        staged.pwrite(data, offset)
        self.local.add(offset, end)
        self.dirty.add(offset, end)
        if self.remote_len is not None and offset < self.remote_len + self.appending:
            self._leave_append_mode("a write below what was already appended")
        if self.remote_len is not None and self.size > self.path.opts.multipart_threshold:
            self._leave_append_mode("past multipart_threshold")
        self._touch(offset, end)
        self.frontier = end
        self.inode.attrs = self.path.ns.touched(self.inode.attrs)
        self._kick()
        return len(data)

    async def truncate(self, size: int) -> None:
        if size == self.size:
            return
        staged = self._stage()
        staged.truncate(size)
        if size < self.size:
            self.local.remove(size, self.size)
            self.dirty.remove(size, self.size)
            self.base_limit = min(self.base_limit, size)
            if self.remote_len is not None and size < self.remote_len + self.appending:
                self._leave_append_mode("truncated below what was already appended")
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
        for start, stop, here in self.local.pieces(offset, end):
            if here:
                out += self._stage().pread(stop - start, start)
                continue
            clean_end = min(stop, self.base_limit)
            if start < clean_end:
                out += await self._get_base(start, clean_end)
            if clean_end < stop:
                out += bytes(stop - max(start, clean_end))
        return bytes(out)

    async def _get_base(self, start: int, end: int) -> bytes | bytearray | memoryview:
        try:
            return await self.path.zos.get(self.path.ns.key(self.inode), start, end, if_match=self.base_etag or None)
        except ZosError as err:
            raise FsError(errno.EIO, f"reading the unchanged part of {self.key_at_start!r}: {err}") from None

    async def _fill(self, start: int, end: int) -> None:
        """Bring unchanged bytes of the object into staging (before re-uploading them)."""
        for s, e, here in list(self.local.pieces(start, end)):
            if here:
                continue
            clean_end = min(e, self.base_limit)
            if s < clean_end:
                data = await self._get_base(s, clean_end)
                self._stage().pwrite(data, s)
            self.local.add(s, e)  # beyond base_limit staging holds zeros already

    # -- background uploads ----------------------------------------------------------

    def _kick(self) -> None:
        """Start what can go out now: an append chunk, or finished parts."""
        if self.discarded or self.error is not None:
            return
        if self.remote_len is not None:
            if not self.append_scheduled and self.size - self.remote_len >= self._chunk():
                self.append_scheduled = True
                self._spawn(self._append_in_background)
        elif self.size > self.path.opts.rewrite_threshold and self.frontier // self.part_size > self.parts_checked:
            self.parts_checked = self.frontier // self.part_size
            self._spawn(self._parts_in_background)

    def _chunk(self) -> int:
        assert self.remote_len is not None
        return max(self.path.opts.append_chunk, min(MAX_APPEND_CHUNK, self.remote_len // 2))

    def _spawn(self, fn: object) -> None:
        nursery = self.path.nursery
        if nursery is None:
            return
        self.tasks += 1
        self.idle = trio.Event()
        nursery.start_soon(self._run_task, fn)

    async def _run_task(self, fn: object) -> None:
        try:
            await fn()  # type: ignore[operator]
        except (ZosError, FsError) as err:
            self.error = err
            log.warning("background upload of %r failed (flush will retry): %s", self.key_at_start, err)
        finally:
            self.tasks -= 1
            if not self.tasks:
                self.idle.set()

    async def _append_in_background(self) -> None:
        try:
            async with self.lock:
                while (
                    not self.discarded
                    and self.remote_len is not None
                    and self.size - self.remote_len >= self._chunk()
                ):
                    await self._append(self._chunk())
        finally:
            self.append_scheduled = False
        self._kick()  # replace mode may have begun meanwhile

    async def _parts_in_background(self) -> None:
        """Upload finished parts (wholly written, before the writer's frontier)."""
        async with self.lock:
            if self.discarded or self.remote_len is not None:
                return
            if self.multipart is None:
                await self._start_multipart()
            mp = self.multipart
            assert mp is not None
            ps = mp.part_size
            if ps != self.part_size:
                return  # the file outgrew its part size; everything goes at flush
            ready = []
            for n in range(self.frontier // ps):
                start, end = n * ps, (n + 1) * ps
                gen = self.part_generation.get(n, 0)
                if n in mp.busy or mp.done.get(n, (-1, ""))[0] == gen:
                    continue
                if self.local.covers(start, end):
                    ready.append(n)
            for n in ready:
                mp.busy[n] = trio.Event()
        for n in ready:
            self._spawn(lambda n=n: self._upload_part(n))

    # -- appends ---------------------------------------------------------------------

    async def _append(self, limit: int) -> None:
        """Append up to `limit` staged bytes after `remote_len`. Caller holds the lock."""
        assert self.remote_len is not None
        start = self.remote_len
        length = min(limit, self.size - start)
        ns, zos = self.path.ns, self.path.zos
        key = ns.key(self.inode)
        meta = encode(self.inode.attrs, self.inode.meta)
        opts = await ns.write_options(self.inode, meta, replacing=True)
        self.appending = length
        try:
            result = await zos.append(key, start, FileRegion(self._stage().fd, start, length), opts)
        except ZosError as err:
            if err.code in APPEND_UNSUPPORTED:
                self.path.append_unavailable(err)
            if err.code in NOT_APPENDABLE or err.code in APPEND_UNSUPPORTED:
                self._leave_append_mode(f"the server refused the append ({err.code})")
                return
            raise
        finally:
            self.appending = 0
        if result.position != start + length:
            log.warning("%r was appended to by someone else; it will be rewritten whole", key)
            self._leave_append_mode("foreign appends")
            return
        log.debug("appended %d bytes at %d to %r (chunk md5 %s)", length, start, key, result.etag)
        self.remote_len = result.position
        if self.append_etag is not None and result.etag:
            self.append_etag.add(result.etag)
        else:
            self.append_etag = None
        etag = str(self.append_etag or "")
        self.dirty.remove(start, start + length)
        self.inode.remote, self.inode.appendable, self.inode.meta = True, True, meta
        self.inode.etag = self.base_etag = etag
        self._uploaded(length)

    def _uploaded(self, nbytes: int) -> None:
        released = min(nbytes, self.charged)
        self.charged -= released
        self.path.staging.release(released)

    # -- replacing the object ------------------------------------------------------------

    async def _start_multipart(self) -> None:
        ns = self.path.ns
        meta = encode(self.inode.attrs, self.inode.meta)
        opts = await ns.write_options(self.inode, meta, replacing=True)
        part_size = max(self.part_size, math.ceil(self.size / MAX_PARTS / MiB) * MiB)
        upload_id = await self.path.zos.create_multipart(ns.key(self.inode), opts)
        self.multipart = Multipart(upload_id, part_size)

    async def _upload_part(self, n: int) -> None:
        mp = self.multipart
        assert mp is not None
        event = mp.busy[n]
        try:
            gen = self.part_generation.get(n, 0)
            start = n * mp.part_size
            end = min(self.size, start + mp.part_size)
            key = self.path.ns.key(self.inode)
            zos = self.path.zos
            async with self.path.part_slots:
                if (
                    not self.dirty.overlaps(start, end)
                    and end <= self.base_limit
                    and (end - start >= MIN_PART or end == self.size)
                ):
                    # Unchanged: copied on the server, never downloaded.
                    etag = await zos.upload_part_copy(key, mp.upload_id, n + 1, key, start, end, self.base_etag or None)
                else:
                    await self._fill(start, end)
                    region = FileRegion(self._stage().fd, start, end - start)
                    etag = await zos.upload_part(key, mp.upload_id, n + 1, region)
            if self.multipart is mp:
                mp.done[n] = (gen, etag)
        finally:
            del mp.busy[n]
            event.set()

    async def _replace(self) -> None:
        """Make the object equal to the file, replacing it only when complete."""
        ns, zos = self.path.ns, self.path.zos
        key = ns.key(self.inode)
        meta = encode(self.inode.attrs, self.inode.meta)
        if self.size <= self.path.opts.rewrite_threshold and self.multipart is None:
            opts = await ns.write_options(self.inode, meta, replacing=True)
            await self._fill(0, self.size)
            etag = await zos.put(key, FileRegion(self._stage().fd, 0, self.size), opts)
        else:
            etag = await self._complete_multipart(key)
        self.inode.remote, self.inode.appendable, self.inode.meta = True, False, meta
        self.inode.etag = self.base_etag = etag
        self.append_etag = None

    async def _complete_multipart(self, key: str) -> str:
        zos = self.path.zos
        if self.multipart is not None and math.ceil(self.size / self.multipart.part_size) > MAX_PARTS:
            await self._abort_multipart()  # the file outgrew its part size: start over
        if self.multipart is None:
            await self._start_multipart()
        mp = self.multipart
        assert mp is not None
        nparts = max(1, math.ceil(self.size / mp.part_size))
        try:
            while mp.busy:
                await next(iter(mp.busy.values())).wait()
            async with trio.open_nursery() as nursery:
                for n in range(nparts):
                    gen = self.part_generation.get(n, 0)
                    if mp.done.get(n, (-1, ""))[0] != gen:
                        mp.busy[n] = trio.Event()
                        nursery.start_soon(self._upload_part, n)
            parts = [Part(n + 1, mp.done[n][1]) for n in range(nparts)]
            await zos.complete_multipart(key, mp.upload_id, parts)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._abort_multipart()
            raise
        self.multipart = None
        return multipart_etag([p.etag for p in parts])

    async def _abort_multipart(self) -> None:
        mp = self.multipart
        self.multipart = None
        if mp is not None:
            await self.path.zos.abort_quietly(self.path.ns.key(self.inode), mp.upload_id)

    # -- flushing ------------------------------------------------------------------------

    async def flush(self) -> None:
        """Store everything written so far; raise FsError(EIO) if that fails."""
        if self.discarded:
            return
        async with self.lock:
            if not self.pending and not self.dirty:
                return
            generation = self.generation
            try:
                if self.remote_len is not None:
                    await self._flush_appends()
                if self.remote_len is None:
                    await self._replace()
            except ZosError as err:
                self.error = err
                raise FsError(errno.EIO, f"uploading {self.key_at_start!r} failed: {err}") from None
            self.error = None
            self.flushed_generation = generation
            self.dirty = RangeSet()
            self.base_size = self.base_limit = self.size
            self.path.ns.remember(self.path.ns.key(self.inode), self.inode)
            self._uploaded(self.charged)

    async def _flush_appends(self) -> None:
        assert self.remote_len is not None
        while self.remote_len is not None and self.remote_len < self.size:
            await self._append(MAX_APPEND_CHUNK)
        if self.remote_len is not None and (self.pending and not self.inode.remote or self.pending_attrs()):
            await self._append(0)  # creates an empty file, or carries new metadata

    def pending_attrs(self) -> bool:
        return encode(self.inode.attrs, self.inode.meta) != self.inode.meta

    async def wait_idle(self) -> None:
        await self.idle.wait()

    def close(self, keep_reason: str | None = None) -> None:
        """Drop the staging file; with a reason, keep it for recovery instead."""
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
        self.part_slots = trio.Semaphore(opts.upload_concurrency)
        self.nursery: trio.Nursery | None = None
        self.writers: set[Writer] = set()

    def append_unavailable(self, err: ZosError) -> None:
        if self.append_ok:
            log.warning("append upload is refused by the server (%s); files are uploaded by PUT and multipart", err.code)
            self.append_ok = False

    def writer(self, inode: Inode) -> Writer:
        if inode.writer is None:
            inode.writer = Writer(self, inode, truncate=False)
            self.writers.add(inode.writer)
        return inode.writer

    async def open_truncated(self, inode: Inode) -> None:
        """open() with O_TRUNC: the file is empty from now on."""
        if inode.writer is None:
            inode.writer = Writer(self, inode, truncate=True)
            self.writers.add(inode.writer)
        else:
            await inode.writer.truncate(0)

    async def write(self, inode: Inode, offset: int, data: bytes) -> int:
        return await self.writer(inode).write(offset, data)

    async def truncate(self, inode: Inode, size: int) -> None:
        await self.writer(inode).truncate(size)

    async def read(self, inode: Inode, offset: int, length: int) -> bytes:
        assert inode.writer is not None
        return await inode.writer.read(offset, length)

    async def flush(self, inode: Inode) -> None:
        writer = inode.writer
        if writer is not None:
            await writer.flush()

    async def release(self, inode: Inode) -> None:
        """The last handle closed: flush, and let the writer go."""
        writer = inode.writer
        if writer is None or inode.opens:
            return
        try:
            await writer.flush()
        except FsError as err:
            writer.close(keep_reason=str(err.message))
        else:
            await writer.wait_idle()
            writer.close()
        self._drop(inode)

    async def discard(self, inode: Inode) -> None:
        """The file was unlinked: nothing of it must reach the server any more."""
        writer = inode.writer
        if writer is None:
            return
        writer.discarded = True
        async with writer.lock:
            pass  # wait for an upload in flight
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
        self.ns.table.release(inode)

    def dirty_bytes(self) -> int:
        return sum(w.dirty.total() for w in self.writers)

    async def flush_all(self, deadline: float) -> list[Inode]:
        """Flush every writer (unmount, SIGTERM); returns those that failed or
        did not finish by `deadline` (trio.current_time())."""
        failed: list[Inode] = []
        with trio.move_on_at(deadline):
            for writer in list(self.writers):
                try:
                    await writer.flush()
                    await writer.wait_idle()
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

