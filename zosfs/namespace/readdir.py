"""Listing directories, and fetching ahead the metadata their readers will need.

A listing is one paged LIST with delimiter '/', taken once per directory at
a time (concurrent askers share it) and merged with what this mount changed
that the LIST may not show yet. Listings carry no metadata, so `ls -l` would
wait for one HEAD after another; instead, when one name's metadata is
needed, the HEADs of the names that follow it are started concurrently, a
bounded window ahead of the reader. Kept apart from lookup.py because it
is the only part that sends LISTs of whole directories and runs background
requests.
"""

from __future__ import annotations

import bisect
import collections
import logging
from typing import TYPE_CHECKING

import cachetools
import trio

from zosfs.namespace.inodes import ROOT_INO, Inode
from zosfs.namespace.listing import Entry, Listing
from zosfs.namespace.names import RESERVED_NAME
from zosfs.zos import ObjectInfo, ZosError

if TYPE_CHECKING:
    from zosfs.namespace.tree import Namespace

log = logging.getLogger(__name__)

PREFETCH_WINDOW = 256  # entries ahead of a reader of a listing whose metadata is fetched


class Readdir:
    """Directory listings, shared and cached, and metadata prefetch."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.table = ns.table
        self.opts = ns.opts
        self._listing_now: dict[int, trio.Event] = {}
        self.prefetched_upto: cachetools.LRUCache[int, int] = cachetools.LRUCache(4096)  # dir -> listing index
        # The last listing of recent directories, kept past dir_cache_ttl for
        # its order of names only: once a listing expires in the middle of a
        # long `ls -l`, the kernel looks each name up again, and the names
        # that follow are revalidated concurrently from this order.
        self._order: cachetools.LRUCache[int, Listing] = cachetools.LRUCache(64)
        # Metadata prefetches waiting for a worker, and the workers running:
        # a few long-lived tasks that take one after another, not a task (and
        # a wait for a slot) per name - 10,000 of them for one `ls -l`.
        self._prefetch_queue: collections.deque[tuple[int, str, str, bool, str | None, float]] = collections.deque()
        self._prefetch_workers = 0
        self._prefetch_limit = max(4, ns.opts.max_requests)

    async def listing(self, directory: Inode, *, since: float | None = None) -> Listing:
        """The directory's names, from the cache or by listing it (one
        listing at a time per directory, shared by all who ask). With `since`
        (monotonic), a cached listing whose LIST was sent before it will not
        do: lookup asks for one young enough to say that a name is absent."""
        while True:
            cached = self.ns.listings.get(directory.ino)
            if cached is not None and (since is None or cached.started >= since):
                return cached
            busy = self._listing_now.get(directory.ino)
            if busy is None:
                break
            await busy.wait()
            listing = self.ns.listings.get(directory.ino)
            if listing is not None and listing is not cached:
                return listing  # the one just taken, sent no earlier than the cached one
            break  # it failed; try ourselves
        self._listing_now[directory.ino] = done = trio.Event()
        try:
            return await self._list(directory)
        finally:
            # Several waiters of a listing that failed may each list again;
            # only the last to start holds the slot.
            if self._listing_now.get(directory.ino) is done:
                del self._listing_now[directory.ino]
            done.set()

    async def _list(self, directory: Inode) -> Listing:
        ns = self.ns
        prefix = self.table.prefix(directory)
        listing = Listing(prefix)
        async for page in ns.zos.list_all(prefix, "/"):
            listing.add_page(page, ns.skipped)
        if ns.deletes.pending:
            for name in [n for n, e in listing.entries.items() if not e.is_dir and prefix + n in ns.deletes]:
                del listing.entries[name]  # unlinked here, its delete still queued
        # Names this mount made that the LIST may not show yet: files not yet
        # uploaded, and ones created or uploaded while the LIST was on its way.
        for child in self.table.children(directory):
            if child.name not in listing.entries and (
                not child.remote or child.writer is not None or ns.changed_at.get(child.ino, 0.0) >= listing.started
            ):
                listing.entries[child.name] = Entry(child.name, child.is_dir, child.size, child.etag)
        if prefix == "":
            listing.entries.pop(RESERVED_NAME, None)  # zosfs's own (names.py): also a file of that name
        listing.finish()
        ns.dir_sizes[directory.ino] = len(listing.entries)
        if directory.ino != ROOT_INO:
            directory.remote = directory.remote or listing.has_marker
        ns.listings[directory.ino] = listing
        self._order[directory.ino] = listing
        if not self.opts.no_metadata:
            ns.metacache.preload(prefix, {prefix + e.name: (e.etag, e.last_modified) for e in listing.entries.values() if not e.is_dir})
        if ns.index is not None:
            await ns.index.apply(listing)
        return listing

    def was_file(self, directory: Inode, name: str) -> bool:
        """Whether the directory's last listing (even an expired one) showed
        `name` as a file."""
        listing = self._order.get(directory.ino)
        entry = listing.entries.get(name) if listing is not None else None
        return entry is not None and not entry.is_dir

    def latest(self, prefix: str) -> Listing | None:
        """The last listing taken of the directory with this key prefix, if recent."""
        for listing in reversed(list(self._order.values())):
            if listing.prefix == prefix:
                return listing
        return None

    def prefetch_siblings(self, parent: Inode, name: str, *, revalidate: bool = False) -> None:
        """Metadata is needed for `name`: fetch it for the names that follow
        in the directory too, concurrently (ls -l stats them one by one).
        With `revalidate` (a lookup of a known name whose attributes and
        listing have expired), the known names that follow are asked again
        even if their metadata is known, so that the kernel's lookups of them
        find their inodes fresh instead of sending one HEAD after another."""
        listing = self.ns.listings.get(parent.ino)
        if listing is None and revalidate:
            listing = self._order.get(parent.ino)
        if listing is None or self.ns.nursery is None:
            return
        i = bisect.bisect_left(listing.names, name)
        ahead = self.prefetched_upto.get(parent.ino, -1)
        if ahead - 2 * PREFETCH_WINDOW < i < ahead - PREFETCH_WINDOW // 2:
            return  # the window is still well ahead of this reader
        self.prefetched_upto[parent.ino] = i + 1 + PREFETCH_WINDOW
        names = listing.names[i + 1 : i + 1 + PREFETCH_WINDOW]
        self.prefetch(parent, [listing.entries[n] for n in names if n in listing.entries], revalidate=revalidate)

    def prefetch(self, directory: Inode, entries: list[Entry], *, revalidate: bool = False) -> None:
        """Start fetching the metadata a reader of this listing will need next,
        concurrently, so that `ls -l` does not wait for one HEAD after another."""
        ns = self.ns
        if ns.nursery is None or self.opts.no_metadata:
            return
        prefix = self.table.prefix(directory)
        for entry in entries:
            key = prefix + entry.name + ("/" if entry.is_dir else "")
            if ns.head_pending(key):
                continue
            etag: str | None = entry.etag
            if entry.is_dir:
                if key in ns.dir_meta:
                    continue
            else:
                known = self.table.child(directory.ino, entry.name)
                if known is not None and (known.fresh() or known.gone):
                    continue
                if revalidate:
                    if known is None:
                        continue  # its lookup HEADs it; an answer could not be matched to an inode here
                    etag = None  # what is known may be old: ask
                elif known is not None and known.etag and known.etag == entry.etag and known.meta_known:
                    continue
                elif ns.metacache.get(key, entry.etag, entry.last_modified) is not None:
                    continue
            self._prefetch_queue.append((directory.ino, entry.name, key, entry.is_dir, etag, entry.last_modified))
        while self._prefetch_queue and self._prefetch_workers < self._prefetch_limit:
            self._prefetch_workers += 1
            ns.nursery.start_soon(self._prefetch_worker)

    async def _prefetch_worker(self) -> None:
        try:
            while self._prefetch_queue:
                await self._prefetch_one(*self._prefetch_queue.popleft())
        finally:
            self._prefetch_workers -= 1

    async def _prefetch_one(
        self, parent: int, name: str, key: str, is_dir: bool, etag: str | None, last_modified: float
    ) -> None:
        ns = self.ns
        # While this waited in the queue, readdir or a lookup may have needed
        # the same metadata and fetched it itself: do not ask twice.
        if ns.head_pending(key):
            return
        if is_dir:
            if key in ns.dir_meta:
                return
        else:
            known = self.table.child(parent, name)
            if known is not None and known.fresh():
                return
            if etag is not None and ns.metacache.get(key, etag, last_modified) is not None:
                return
        try:
            info = await ns.head(key)
        except ZosError as err:
            log.debug("prefetching metadata of %r failed: %s", key, err)
            return
        if is_dir:
            ns.dir_meta[key] = info
        elif info is not None:
            self._take(parent, name, info)

    def _take(self, parent: int, name: str, info: ObjectInfo) -> None:
        """Give a prefetched HEAD to the name's inode, if the kernel knows
        one: its attributes are then current (attr_timeout from now), so the
        kernel's getattr or lookup of it is answered without a request. A
        change of kind, and local unflushed state, are left to getattr."""
        inode = self.table.child(parent, name)
        if inode is None or inode.gone or inode.is_dir or inode.writer is not None or inode.fresh():
            return
        attrs = self.ns.decode(info.metadata, False, info.last_modified)
        if attrs.kind != inode.attrs.kind:
            return
        self.ns.apply_info(inode, info, attrs)
