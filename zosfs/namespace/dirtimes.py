"""Directory times: stored coalesced, off the handlers' path.

A directory's mtime and ctime move when an entry is made, removed or
renamed in it (and its ctime when it is renamed itself). They are kept in
its marker object's metadata (`dir/`), but rewriting the marker on every
create would double the requests of `cp -r`. So a change is made in memory
at once (the next stat sees it), and a background task rewrites the marker
(a zero-byte PUT with all its headers) at most once every `INTERVAL`
seconds per directory; unmount writes what is left (within flush_timeout).
Directories without a marker (implicit ones, the bucket's root) keep their
times in memory only: writing a marker would change what the bucket holds.

Everything here is keyed by the directory's marker key, not by its inode:
the kernel may forget a directory's inode at any time (memory pressure,
`drop_caches`), and the inode built again from a listing or a HEAD of the
marker would show the marker's older times. `kept` holds the times this
mount set, and every inode built or refreshed for that key takes them
(`apply`) until the marker holds them and no older answer (a HEAD begun
before the write, cached for attr_timeout) can still arrive; the queued
write finds the directory again by its key if its inode was forgotten.

The queue holds one entry per directory and at most `MAX_PENDING`; beyond
that, a directory's times stay in memory only (counted in `skipped`).
"""

from __future__ import annotations

import errno
import logging
import math
import time
from typing import TYPE_CHECKING

import cachetools
import trio

from zosfs.fserror import FsError
from zosfs.namespace.inodes import ROOT_INO, Inode
from zosfs.namespace.metadata import with_times
from zosfs.zos import ZosError

if TYPE_CHECKING:
    from zosfs.namespace.tree import Namespace

log = logging.getLogger(__name__)

INTERVAL = 1.0  # seconds between two marker writes of one directory
MAX_PENDING = 10_000
MAX_KEPT = 65536


class DirTimes:
    """The directories whose times changed in memory and wait to be stored."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.pending: dict[str, float] = {}  # marker key -> monotonic time it may be written
        self.last_write: cachetools.LRUCache[str, float] = cachetools.LRUCache(MAX_KEPT)
        self.inflight: dict[str, trio.Event] = {}
        # marker key -> (mtime, ctime, monotonic time after which the marker's
        # own answers may be believed again; inf while not stored).
        self.kept: cachetools.LRUCache[str, tuple[int, int, float]] = cachetools.LRUCache(MAX_KEPT)
        self.inos: dict[str, int] = {}  # marker key -> the inode last seen for it (a hint)
        # After the write: a HEAD begun before it (a readdir's prefetch) may
        # still answer with older times, and be cached for attr_timeout.
        # (Generous: under load a stale answer was seen later than 2 x attr_timeout.)
        self.grace = max(6 * ns.opts.attr_timeout, 30.0)
        self._work = trio.Event()
        self.written = 0
        self.skipped = 0
        self.failed = 0

    def _key(self, inode: Inode) -> str | None:
        try:
            return self.ns.key(inode)
        except LookupError:
            return None  # detached: nothing to keep

    def changed(self, inode: Inode, *, entries: bool = True) -> None:
        """An entry was made, removed or renamed in this directory (mtime and
        ctime are now), or, with `entries` False, the directory itself was
        renamed (ctime only). Costs no request."""
        t = time.time_ns()
        inode.attrs = with_times(inode.attrs, mtime_ns=t if entries else None, ctime_ns=t)
        key = self._key(inode)
        if key is None:
            return
        self.kept[key] = (inode.attrs.mtime_ns, inode.attrs.ctime_ns, math.inf)
        self._queue(inode, key)

    def _queue(self, inode: Inode, key: str) -> None:
        self.inos[key] = inode.ino
        if inode.gone or key in self.pending:
            return
        if inode.ino == ROOT_INO and not key:
            return  # the bucket's root has no marker
        if inode.meta_known and not inode.remote:
            return  # known to have no marker: memory only
        if len(self.pending) >= MAX_PENDING:
            self.skipped += 1
            return
        self._due(key)

    def _due(self, key: str) -> None:
        # Not at once either: `rm -r` empties a directory and removes it
        # within a moment, and its marker must not be rewritten meanwhile.
        self.pending[key] = max(time.monotonic(), self.last_write.get(key, -math.inf)) + INTERVAL
        self._work.set()

    def apply(self, inode: Inode) -> None:
        """After a directory's inode was built or its marker read again:
        times this mount set and has not stored for sure are the
        directory's, not the marker's, and stay."""
        key = self._key(inode)
        if key is None:
            return
        kept = self.kept.get(key)
        if kept is None:
            return
        mtime, ctime, until = kept
        if until < time.monotonic():
            del self.kept[key]
            return
        self.inos[key] = inode.ino
        a = inode.attrs
        # Not the later of the two: a utimensat may have put the marker's
        # mtime in the future, and an entry made since moved it back to now.
        inode.attrs = with_times(a, mtime_ns=mtime, ctime_ns=ctime)

    def storing(self, key: str, mtime_ns: int, ctime_ns: int) -> None:
        """The marker is being rewritten with these times (a chmod, a setxattr,
        this writer): they are the directory's now, also for `apply`."""
        kept = self.kept.get(key)
        if kept is not None:
            self.kept[key] = (mtime_ns, ctime_ns, kept[2])

    def set_explicitly(self, inode: Inode) -> None:
        """Times set by utimensat (or with other attributes) are the
        directory's, older or not: no overlay from before."""
        key = self._key(inode)
        if key is not None:
            self.kept.pop(key, None)

    def removed(self, key: str) -> None:
        """The directory is gone: a new one of that name starts afresh."""
        self.pending.pop(key, None)
        self.kept.pop(key, None)
        self.inos.pop(key, None)

    async def settle(self, inode: Inode) -> None:
        """Before the marker is deleted or moved: no write of it may be
        queued or on its way (it would bring the old key back)."""
        key = self._key(inode)
        if key is not None:
            await self._settle_key(key)

    async def _settle_key(self, key: str) -> None:
        self.pending.pop(key, None)
        done = self.inflight.get(key)
        if done is not None:
            await done.wait()  # (one request, bounded by the client's timeouts)

    async def settle_below(self, top: Inode) -> list[str]:
        """`settle` for a directory and every directory below it; returns the
        keys of those that had times to store (to be queued again after a move)."""
        prefix = self._key(top)
        if prefix is None:
            return []
        found = []
        for key in list(self.pending) + list(self.inflight):
            if key.startswith(prefix):
                if key in self.pending:
                    found.append(key)
                await self._settle_key(key)
        return found

    def requeue(self, keys: list[str]) -> None:
        """Queue again what `settle_below` took off (nothing was moved)."""
        for key in keys:
            if key not in self.pending:
                self._due(key)

    def moved(self, old_prefix: str, new_prefix: str, keys: list[str]) -> None:
        """A directory moved from `old_prefix` to `new_prefix`: the times kept
        for it and below it follow, and `keys` (from `settle_below`) are
        queued again under their new keys."""
        for key in [k for k in self.kept if k.startswith(old_prefix)]:
            self.kept[new_prefix + key[len(old_prefix):]] = self.kept.pop(key)
        for key in [k for k in self.inos if k.startswith(old_prefix)]:
            self.inos[new_prefix + key[len(old_prefix):]] = self.inos.pop(key)
        self.requeue([new_prefix + key[len(old_prefix):] for key in keys])

    async def run(self) -> None:
        """The background writer; runs for the life of the mount."""
        while True:
            if not self.pending:
                await self._work.wait()
                self._work = trio.Event()
                continue
            key, due = min(self.pending.items(), key=lambda item: item[1])
            wait = due - time.monotonic()
            if wait > 0:
                with trio.move_on_after(wait):
                    await self._work.wait()
                self._work = trio.Event()
                continue
            del self.pending[key]
            await self._write(key)

    async def flush(self) -> None:
        """Store every queued directory's times now (unmount)."""
        while self.pending:
            key = next(iter(self.pending))
            del self.pending[key]
            await self._write(key)
        for done in list(self.inflight.values()):
            await done.wait()

    def _known_inode(self, key: str) -> Inode | None:
        ino = self.inos.get(key)
        inode = self.ns.table.get(ino) if ino is not None else None
        if inode is None or inode.gone or not inode.is_dir or self._key(inode) != key:
            return None
        return inode

    async def _find(self, key: str) -> Inode | None:
        """The directory's inode, looked up again by its key if the kernel
        forgot it (None: it is gone)."""
        inode = self._known_inode(key)
        if inode is not None:
            return inode
        root = self.ns.table.root
        rel = key[len(self.ns.table.prefix(root)):]
        inode = root
        if not rel:
            return root
        try:
            for name in rel.rstrip("/").split("/"):
                inode = await self.ns.lookup(inode, name)
        except FsError as err:
            if err.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise
        return inode if inode.is_dir and self._key(inode) == key else None

    async def _write(self, key: str) -> None:
        done = self.inflight[key] = trio.Event()
        self.last_write[key] = time.monotonic()
        inode = None
        try:
            inode = await self._find(key)
            if inode is None:
                self.removed(key)  # (removed or renamed by another client)
                return
            if not inode.meta_known:
                inode.fresh_until = 0.0
                await self.ns.getattr(inode)  # does it have a marker, and what else does it carry? (kept times stay)
            self.apply(inode)
            if inode.remote and not inode.gone:
                stored = (inode.attrs.mtime_ns, inode.attrs.ctime_ns)
                await self.ns.set_attrs(inode, inode.attrs, persist=True)
                self.written += 1
                kept = self.kept.get(key)
                if kept is not None and kept[:2] == stored:
                    # Stored; only answers begun before now can be older.
                    self.kept[key] = (*stored, time.monotonic() + self.grace)
        except (ZosError, FsError) as err:
            self.failed += 1
            log.warning("storing the times of directory %r failed: %s; they stay in memory", key, err)
        finally:
            del self.inflight[key]
            done.set()
