"""The disk tier: blocks as files in a directory, under a hard byte cap.

One file per block, named `KEYHASH.ETAG.INDEX.blk`, where KEYHASH hashes the
mount's namespace (endpoint, bucket, prefix) with the object key; the file's
layout, its checks and its direct writes are blockfile.py's. Files are
written under a temporary name and renamed into place, so a reader (or a
crash) never sees a torn file under a block's name; no fsync: a block damaged
by a power loss fails its checksum or its length check and is dropped and
fetched again, never served.

The index (which blocks exist, their sizes, their LRU order) lives in memory
and is rebuilt at mount by listing the directory (the order from the files'
mtimes, which a hit touches). Only the trio thread changes the index; it
reserves room (evicting least recently used blocks) before a write is queued,
so the files never exceed the cap, however many readers fill it at once.
All file changes (writes, unlinks, renames) go through one queue served by
one worker task (diskqueue.py, which also bounds the memory the queue holds
beyond the memory tier's); reads of blocks run in threads. A lock file makes
one mount at a time own the directory.
"""

from __future__ import annotations

import collections
import fcntl
import hashlib
import logging
import mmap
import os
import re
from collections.abc import Callable
from typing import Any

import trio

from zosfs.data.cache.base import Block, BlockId, DataCache
from zosfs.data.cache.blockfile import BlockWriter, data_length, head_area, read_block, unlink
from zosfs.data.cache.diskqueue import WRITABLE_WAIT, Entry, FileQueue, Write

log = logging.getLogger(__name__)

ALLOC = 4096  # what a file costs on disk is rounded up to this (what du counts)
SLACK = 64 * 1024  # room kept for the directory itself and the lock file
DEFAULT_FRACTION = 0.10  # of the free space, when no cap is given
DEFAULT_CEILING = 16 * 1024**3
ETAG_RE = re.compile(r"[0-9a-f]{32}(-[0-9]+)?")
NAME_RE = re.compile(r"([0-9a-f]{40})\.([0-9a-f]{32}(?:-[0-9]+)?)\.([0-9]+)\.blk")



class CacheLocked(Exception):
    """Another process owns the disk cache directory."""


def default_cap(directory: str, held: int) -> int:
    """The cap when none is given: a tenth of the space the cache could use
    (what is free on its filesystem plus what it holds), at most 16 GiB."""
    st = os.statvfs(directory)
    return int(min(DEFAULT_CEILING, (st.f_bavail * st.f_frsize + held) * DEFAULT_FRACTION))


def _charge(nbytes: int) -> int:
    return -(-nbytes // ALLOC) * ALLOC


class DiskCache(FileQueue, DataCache):
    """Blocks in files under `directory`, at most `cap` bytes of them
    (cap < 0: `default_cap`, decided by `scan`)."""

    def __init__(self, directory: str, cap: int, namespace: str) -> None:
        self.directory = directory
        self._cap = cap
        self.namespace = namespace
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._lock = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(self._lock, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._lock)
            raise CacheLocked(f"disk cache {directory} is in use by another zosfs mount (pid {owner})") from None
        os.ftruncate(self._lock, 0)
        os.pwrite(self._lock, f"{os.getpid()}\n".encode(), 0)
        # Index: entry -> (data length, bytes charged), least recently used first.
        self._lru: collections.OrderedDict[Entry, tuple[int, int]] = collections.OrderedDict()
        self._by_key: dict[str, dict[str, set[int]]] = {}  # key hash -> ETag -> block indexes
        self.used = 0  # bytes charged for indexed and queued blocks
        self._init_queue()
        self._readers = trio.CapacityLimiter(4)
        self._files = BlockWriter(directory)
        # Gives (on the trio thread) a spare buffer of the length asked for,
        # or None: a read into it costs no allocation and no page faults.
        self.buffer_for: Callable[[int], bytearray | mmap.mmap | None] = lambda length: None
        self.hits = self.misses = self.bytes_served = self.bytes_written = 0
        self.corrupt = self.evicted = self.skipped = 0

    # -- setup ------------------------------------------------------------------------

    def scan(self) -> None:
        """Rebuild the index from the directory (blocking: run it in a thread
        before serving). Leftover temporary files are removed; blocks beyond
        the cap (it was lowered) are evicted."""
        found = []
        with os.scandir(self.directory) as it:
            for e in it:
                if e.name.startswith(".tmp-"):
                    unlink(e.path)
                    continue
                m = NAME_RE.fullmatch(e.name)
                if m is None:
                    continue
                try:
                    st = e.stat()
                except FileNotFoundError:
                    continue
                length = data_length(e.path, st.st_size)
                if length is None:
                    unlink(e.path)  # not a whole block file: a torn write
                    continue
                entry = (m.group(1), m.group(2), int(m.group(3)))
                found.append((st.st_mtime_ns, entry, length, st.st_size))
        found.sort()
        for _, entry, length, nbytes in found:
            self._index(entry, length, _charge(nbytes))
        if self._cap < 0:
            self._cap = default_cap(self.directory, self.used)
        victims = self._make_room(0)
        for entry in victims:
            unlink(self._path(entry))

    def close(self) -> None:
        os.close(self._lock)
        self._files.close()

    # -- names ------------------------------------------------------------------------

    def _name(self, key: str) -> bytes:
        return self.namespace.encode() + b"\0" + key.encode("utf-8", "surrogateescape")

    def _hash(self, key: str) -> str:
        return hashlib.sha256(self._name(key)).hexdigest()[:40]

    def _path(self, entry: Entry) -> str:
        return os.path.join(self.directory, f"{entry[0]}.{entry[1]}.{entry[2]}.blk")

    def _entry(self, bid: BlockId) -> Entry | None:
        key, etag, n = bid
        if not ETAG_RE.fullmatch(etag):
            return None  # not an ETag we can name a file by (none, or not an MD5): memory only
        return self._hash(key), etag, n

    # -- index ------------------------------------------------------------------------

    def _index(self, entry: Entry, length: int, charged: int) -> None:
        self._lru[entry] = (length, charged)
        self.used += charged
        self._by_key.setdefault(entry[0], {}).setdefault(entry[1], set()).add(entry[2])

    def _unindex(self, entry: Entry) -> None:
        length, charged = self._lru.pop(entry)
        self.used -= charged
        versions = self._by_key[entry[0]]
        versions[entry[1]].discard(entry[2])
        if not versions[entry[1]]:
            del versions[entry[1]]
            if not versions:
                del self._by_key[entry[0]]

    def _make_room(self, nbytes: int) -> list[Entry]:
        """Evict least recently used blocks until `nbytes` more fit."""
        victims = []
        limit = self._cap - SLACK
        while self._lru and self.used + nbytes > limit:
            entry = next(iter(self._lru))
            self._unindex(entry)
            victims.append(entry)
            self.evicted += 1
        return victims

    # -- DataCache --------------------------------------------------------------------

    def contains(self, bid: BlockId) -> bool:
        entry = self._entry(bid)
        return entry is not None and entry in self._lru

    def peek(self, bid: BlockId) -> Block | None:
        return None  # a block on disk always costs I/O

    async def get(self, bid: BlockId) -> Block | None:
        entry = self._entry(bid)
        if entry is None or entry not in self._lru:
            self.misses += 1
            return None
        with trio.move_on_after(WRITABLE_WAIT):
            while entry in self._unsettled:  # its file is still being written or renamed
                await self._settled_event().wait()
        if entry not in self._lru:
            self.misses += 1
            return None
        self._lru.move_to_end(entry)
        length = self._lru[entry][0]
        async with self._readers:
            buf = self.buffer_for(length)
            data, problem = await trio.to_thread.run_sync(self._read, entry, self._name(bid[0]), length, buf)
        if data is None:
            if not problem and entry in self._lru and entry not in self._unsettled:
                # No such file (its write was dropped before a rename moved
                # it): not held. (The unlink keeps files and index agreeing.)
                self._unindex(entry)
                self._queue("unlink", [entry])
            elif problem and entry in self._lru:
                log.warning("disk cache: dropped block %d of %r: %s; fetching it again", bid[2], bid[0], problem)
                self.corrupt += 1
                self._unindex(entry)
                self._queue("unlink", [entry])
            self.misses += 1
            return None
        self.hits += 1
        self.bytes_served += len(data)
        return data

    def _read(self, entry: Entry, name: bytes, length: int,
              buf: bytearray | mmap.mmap | None = None) -> tuple[Block | None, str]:
        """Read and check one block file (in a thread): (data, "") or (None, why)."""
        return read_block(self._path(entry), name, entry[2], length, buf)

    def _write(self, entry: Entry, name: bytes, data: Block) -> bool:
        # (One name per write under way: two run at once.)
        tmp = os.path.join(self.directory, f".tmp-{entry[0]}.{entry[1]}.{entry[2]}.{os.getpid()}")
        return self._files.write(tmp, self._path(entry), name, entry[2], data)

    def put(self, bid: BlockId, data: Block, low: bool = False) -> None:
        """(DataCache.put.) `low`: the file is written by the low-priority
        thread (zosfs/lowprio.py): a block the write path uploaded, which no
        reader waits for."""
        entry = self._entry(bid)
        if entry is None:
            return
        known = self._lru.get(entry)
        if known is not None and known[0] == len(data):
            self._lru.move_to_end(entry)
            return
        charged = _charge(head_area(len(self._name(bid[0]))) + len(data))
        if charged > self._cap - SLACK or self.queue_full(bid, data):
            self.skipped += 1  # too big, or the disk is far behind: this block stays in memory only
            return
        if known is not None:
            self._unindex(entry)  # replaced (the prefix of an appended object grew)
            self._queue("unlink", [entry])  # before the new file is written: never both on disk
        victims = self._make_room(charged)
        if victims:
            self._queue("unlink", victims)
        self._index(entry, len(data), charged)
        self._queue("write", Write(entry, bid, self._name(bid[0]), data, low))

    def forget(self, key: str, etag: str | None = None) -> int:
        khash = self._hash(key)
        versions = self._by_key.get(khash, {})
        doomed = [(khash, e, n) for e in ([etag] if etag is not None else list(versions)) for n in versions.get(e, ())]
        for entry in doomed:
            self._unindex(entry)
        if doomed:
            self._queue("unlink", doomed)
        return len(doomed)

    def etags(self, key: str) -> dict[str, list[tuple[int, int]]]:
        khash = self._hash(key)
        return {e: sorted((n, self._lru[(khash, e, n)][0]) for n in ns) for e, ns in self._by_key.get(khash, {}).items()}

    def rename(self, key: str, old_etag: str, new_etag: str, only: set[int] | None = None) -> None:
        if not ETAG_RE.fullmatch(new_etag):
            self.forget(key, old_etag)
            return
        khash = self._hash(key)
        moves = []
        for n in sorted(self._by_key.get(khash, {}).get(old_etag, ())):
            if only is not None and n not in only:
                continue
            old, new = (khash, old_etag, n), (khash, new_etag, n)
            length, charged = self._lru[old]
            self._unindex(old)
            if new in self._lru:
                self._queue("unlink", [old])  # the new version has this block already
                continue
            self._index(new, length, charged)
            moves.append((old, new))
        if moves:
            self._queue("rename", moves)

    @property
    def size(self) -> int:
        return self.used

    @property
    def blocks(self) -> int:
        return len(self._lru)

    @property
    def cap(self) -> int:
        return self._cap

    def stats(self) -> dict[str, Any]:
        lookups = self.hits + self.misses
        return {
            "enabled": True, "directory": self.directory, "bytes": self.used, "cap": self._cap,
            "blocks": self.blocks, "hits": self.hits, "misses": self.misses,
            "hit_ratio": round(self.hits / lookups, 3) if lookups else None,
            "bytes_served": self.bytes_served, "bytes_written": self.bytes_written,
            "evicted": self.evicted, "corrupt": self.corrupt, "skipped": self.skipped,
            # File changes (writes, renames, unlinks) not done yet: the files
            # on disk lag the index by these.
            "queued": len(self._jobs) + len(self._writing),
        }

    def _apply(self, kind: str, what: Any) -> None:
        """Do a queued unlink or rename (in a thread)."""
        if kind == "unlink":
            for entry in what:
                unlink(self._path(entry))
        else:
            for old, new in what:
                try:
                    os.rename(self._path(old), self._path(new))
                except OSError:
                    pass  # gone: a read of it is a miss


def open_disk_cache(directory: str, cap: int, namespace: str) -> tuple[DiskCache | None, str]:
    """The disk cache of a mount, scanned and ready (blocking: run it in a
    thread), or None and why not (turned off, or owned by another mount)."""
    if cap == 0:
        return None, "off (disk_cache_size=0)"
    try:
        cache = DiskCache(directory, cap, namespace)
    except CacheLocked as err:
        log.warning("%s: this mount runs without a disk cache (give it its own: -o disk_cache=DIR)", err)
        return None, str(err)
    except OSError as err:
        log.warning("disk cache %s unusable (%s): this mount runs without one", directory, err.strerror)
        return None, f"{directory}: {err.strerror}"
    try:
        cache.scan()
    except OSError as err:
        cache.close()
        log.warning("disk cache %s unreadable (%s): this mount runs without one", directory, err.strerror)
        return None, f"{directory}: {err.strerror}"
    log.info("disk cache %s: %d blocks, %.1f of %.1f MiB", directory, cache.blocks, cache.used / 2**20, cache.cap / 2**20)
    return cache, ""
