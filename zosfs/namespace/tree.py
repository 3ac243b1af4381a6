"""The namespace: names, directories and attributes over a flat key space.

A key `a/b/c.txt` is the file `c.txt` in the directory `a/b`. A directory
exists when its marker object `a/b/` exists or when any key starts with
`a/b/` (an implicit directory). Attributes follow s3fs's metadata headers
(see `metadata.py`).

What is cached, and for how long (all configurable):
- an inode's attributes: `attr_timeout`;
- a directory listing: `dir_cache_ttl`; while fresh it answers lookups,
  including "no such file";
- a failed lookup: `negative_timeout`;
- metadata by (key, ETag): forever, in memory and on disk (`metacache.py`),
  since an object's metadata cannot change without its ETag changing.
The mount's own changes update all of them at once, so this mount never
contradicts itself; other writers become visible when the caches expire.
"""

from __future__ import annotations

import bisect
import errno
import logging
import stat
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import cachetools
import trio

from zosfs.fserror import FsError
from zosfs.namespace import names
from zosfs.namespace.deletes import DeleteQueue
from zosfs.namespace.inodes import ROOT_INO, Inode, InodeTable
from zosfs.namespace.listing import Entry, Listing, SkipLog
from zosfs.namespace.metacache import CachedMeta, MetaCache
from zosfs.namespace.metadata import Attrs, Defaults, decode, encode
from zosfs.options import Options
from zosfs.zos import Acl, Grant, ObjectInfo, WriteOptions, ZosClient, ZosError, next_append_etag

if TYPE_CHECKING:
    from zosfs.namespace.feed import Feed

log = logging.getLogger(__name__)

DIR_CONTENT_TYPE = "application/x-directory"
PREFETCH_WINDOW = 256
SMALL_DIR = 1000  # entries: one LIST page  # entries ahead of a reader of a listing whose metadata is fetched
RENAME_CONCURRENCY = 16


def now_ns() -> int:
    return time.time_ns()


class Namespace:
    """Lookups, listings and namespace changes, with their caches."""

    def __init__(
        self,
        zos: ZosClient,
        opts: Options,
        root_prefix: str,
        metacache: MetaCache,
    ) -> None:
        self.zos = zos
        self.opts = opts
        self.defaults = Defaults(opts.uid, opts.gid, opts.umask)
        start = now_ns()
        self.table = InodeTable(root_prefix, Attrs(self.defaults.dir_mode, opts.uid, opts.gid, start, start))
        self.table.root.meta_known = True
        self.metacache = metacache
        self.listings: cachetools.TTLCache[int, Listing] = cachetools.TTLCache(4096, max(opts.dir_cache_ttl, 1e-9))
        self.negative: cachetools.TTLCache[tuple[int, str], bool] = cachetools.TTLCache(
            65536, max(opts.negative_timeout, 1e-9)
        )
        self.dir_meta: cachetools.TTLCache[str, ObjectInfo | None] = cachetools.TTLCache(
            65536, max(opts.attr_timeout, 1.0)
        )
        self.skipped = SkipLog()
        self._heads: dict[str, _PendingHead] = {}
        self._listing_now: dict[int, trio.Event] = {}
        self.deletes = DeleteQueue(zos)  # the daemon runs its sender
        # Entries of directories at their last listing: small ones are listed
        # again rather than probed name by name once their listing expires.
        self.dir_sizes: cachetools.LRUCache[int, int] = cachetools.LRUCache(65536)
        self.prefetched_upto: cachetools.LRUCache[int, int] = cachetools.LRUCache(4096)  # dir -> listing index
        self.changed_at: cachetools.LRUCache[int, float] = cachetools.LRUCache(65536)  # ino -> when this mount last changed it
        self._prefetch_slots = trio.Semaphore(max(4, opts.max_requests))
        self.nursery: trio.Nursery | None = None  # set by the daemon; runs prefetches
        self.object_lock = False  # the bucket has object lock (set by the daemon from the probe)
        self.feed: Feed | None = None  # the change feed between mounts (set by the daemon)
        # Attribute revalidations with the server (HEAD of a stale inode), and what they found.
        self.revalidations = {"checked": 0, "changed": 0, "gone": 0}

    # -- helpers -------------------------------------------------------------

    def get(self, ino: int) -> Inode:
        inode = self.table.get(ino)
        if inode is None:
            raise FsError(errno.ESTALE, f"inode {ino} is not known (forgotten)")
        return inode

    def key(self, inode: Inode) -> str:
        return self.table.key(inode)

    def _refresh_deadline(self) -> float:
        return time.monotonic() + self.opts.attr_timeout

    def decode(self, metadata: dict[str, str], is_dir: bool, last_modified: float) -> Attrs:
        return decode(metadata, is_dir=is_dir, last_modified=last_modified, defaults=self.defaults)

    def apply_info(self, inode: Inode, info: ObjectInfo) -> None:
        """Take an object's HEAD into an inode (size, ETag, metadata, attributes)."""
        if inode.writer is None:
            inode.size = info.size
        inode.etag = info.etag
        inode.remote = True
        inode.meta = dict(info.metadata)
        inode.meta_known = True
        inode.content_type = info.content_type
        inode.storage_class = info.storage_class
        inode.appendable = info.appendable
        inode.last_modified = info.last_modified
        inode.attrs = self.decode(info.metadata, inode.is_dir, info.last_modified)
        if info.tag_count == 0:
            inode.tags = {}
        inode.fresh_until = self._refresh_deadline()

    def _apply_cached(self, inode: Inode, entry: Entry, cached: CachedMeta) -> None:
        inode.size = entry.size
        inode.etag = entry.etag
        inode.remote = True
        inode.meta = dict(cached.metadata)
        inode.meta_known = True
        inode.content_type = cached.content_type
        inode.storage_class = entry.storage_class
        inode.appendable = cached.appendable
        inode.last_modified = entry.last_modified
        inode.fresh_until = self._refresh_deadline()

    def announce(self, op: str, *keys: str, is_dir: bool = False) -> None:
        """Tell other mounts (through the change feed) what this mount changed."""
        if self.feed is not None:
            self.feed.publish(op, *keys, is_dir=is_dir)

    def touched(self, attrs: Attrs) -> Attrs:
        """Attributes after a change of content: mtime and ctime are now."""
        t = now_ns()
        return Attrs(attrs.mode, attrs.uid, attrs.gid, t, t)

    def remember(self, key: str, inode: Inode) -> None:
        """Record an inode's metadata under its current ETag for later mounts,
        and its new size and ETag in its directory's cached listing: the write
        path calls this after every upload, and a listing that still showed
        the old version would make readdir load the old size and ETag back
        into the inode (and reads then fail their If-Match)."""
        if inode.etag and not inode.is_dir:
            self.metacache.put(key, inode.etag, CachedMeta(inode.meta, inode.content_type, inode.appendable))
        elif inode.remote and not inode.is_dir:
            # What was stored has an ETag nobody computed (appends to an object
            # this mount did not create): ask the server before the next open
            # reads it, so that no cached data of the old version is reused.
            inode.fresh_until = 0.0
        self.changed_at[inode.ino] = time.monotonic()
        self.announce("change", key, is_dir=inode.is_dir)
        listing = self.listings.get(inode.parent)
        if listing is not None and not inode.gone and inode.name in listing.entries:
            listing.put(Entry(inode.name, inode.is_dir, inode.size, inode.etag, inode.last_modified, inode.storage_class))

    async def head(self, key: str) -> ObjectInfo | None:
        """HEAD an object, sharing one request among concurrent askers.
        None when there is no such object."""
        pending = self._heads.get(key)
        if pending is None:
            pending = self._heads[key] = _PendingHead()
            try:
                try:
                    pending.result = await self.zos.head(key)
                except ZosError as err:
                    if err.errno != errno.ENOENT:
                        pending.result = err
                info = pending.result
                if isinstance(info, ObjectInfo) and not key.endswith("/"):
                    self.metacache.put(key, info.etag, CachedMeta(info.metadata, info.content_type, info.appendable))
            finally:
                del self._heads[key]
                pending.done.set()
        else:
            await pending.done.wait()
        if isinstance(pending.result, ZosError):
            raise pending.result
        return pending.result

    # -- lookups ---------------------------------------------------------------

    def _child_key_base(self, parent: Inode, name: str) -> str:
        if not parent.is_dir:
            raise FsError(errno.ENOTDIR, "not a directory")
        base = self.table.prefix(parent) + name
        names.check_key(base)
        return base

    async def lookup(self, parent: Inode, name: str) -> Inode:
        """The inode for `name` in `parent` (FsError ENOENT if there is none).
        The caller takes a lookup reference if it hands the inode to the kernel."""
        base = self._child_key_base(parent, name)
        inode = self.table.child(parent.ino, name)
        if inode is not None and not inode.gone and inode.fresh():
            return inode
        if (parent.ino, name) in self.negative or base in self.deletes:
            raise FsError(errno.ENOENT)
        listing = self.listings.get(parent.ino)
        if listing is None and self.dir_sizes.get(parent.ino, SMALL_DIR + 1) <= SMALL_DIR:
            # One LIST of a small directory answers this and the next names
            # (cp -r, tar x: many new names) for less than a HEAD and a LIST each.
            listing = await self.listing(parent)
        if listing is not None:
            entry = listing.entries.get(name)
            if entry is None:
                raise FsError(errno.ENOENT)
            return await self._materialize(parent, entry, inode)
        entry, info = await self._probe(base, name, inode)
        if entry is None:
            self.negative[(parent.ino, name)] = True
            if inode is not None and inode.writer is None:
                self.table.detach(inode)
            raise FsError(errno.ENOENT)
        return await self._materialize(parent, entry, inode, info)

    async def _probe(self, base: str, name: str, known: Inode | None) -> tuple[Entry | None, ObjectInfo | None]:
        """Ask the server what `base` is: a file (HEAD), a directory (a key
        below `base/`), both (the directory wins), or nothing."""
        if known is not None and not known.is_dir and not known.gone:
            entry, info = await self._probe_file(base, name)
            if entry is not None:
                return entry, info
        entry = info = None
        below = False

        async def probe_file() -> None:
            nonlocal entry, info
            entry, info = await self._probe_file(base, name)

        async def list_dir() -> None:
            nonlocal below
            page = await self.zos.list(base + "/", "/", max_keys=1)
            below = bool(page.entries or page.prefixes)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(probe_file)
            nursery.start_soon(list_dir)
        if below:
            if entry is not None:
                self.skipped.note(base, f"file hidden by the directory {base + '/'!r} of the same name (it is kept in the bucket)")
            return Entry(name, True), None
        return entry, info

    async def _probe_file(self, base: str, name: str) -> tuple[Entry | None, ObjectInfo | None]:
        """The object `base`, if there is one: by HEAD (with its metadata), or
        with `no_metadata` by a one-key LIST (the key itself sorts first among
        the keys it prefixes), so that such a mount never sends a HEAD to look
        up a name."""
        if self.opts.no_metadata:
            page = await self.zos.list(base, "/", max_keys=1)
            obj = page.entries[0] if page.entries else None
            if obj is None or obj.key != base:
                return None, None
            return Entry(name, False, obj.size, obj.etag, obj.last_modified, obj.storage_class), None
        info = await self.head(base)
        if info is None:
            return None, None
        return Entry(name, False, info.size, info.etag, info.last_modified, info.storage_class), info

    async def _materialize(
        self, parent: Inode, entry: Entry, known: Inode | None, info: ObjectInfo | None = None, *, lazy: bool = False
    ) -> Inode:
        """An inode for a listed (or probed) name, with its attributes loaded.

        `lazy` (readdir): if the metadata is not known yet, the inode gets
        attributes guessed from the listing (`meta_known` False) and no HEAD
        is sent; the kernel is told not to cache them, so the first stat()
        asks `getattr`, which fetches them (and the neighbours' in advance).
        `find`, `rm -r` and `du --apparent-size -s`-like walks of d_type then
        cost LISTs only."""
        base = self.table.prefix(parent) + entry.name
        if entry.is_dir:
            inode = known if known is not None and known.is_dir and not known.gone else None
            if inode is None:
                inode = self.table.add(parent, entry.name, self.decode({}, True, 0))
                inode.attrs = Attrs(self.defaults.dir_mode, self.defaults.uid, self.defaults.gid,
                                    self.table.root.attrs.mtime_ns, self.table.root.attrs.mtime_ns)
            if not inode.fresh():
                if lazy and base + "/" not in self.dir_meta and not self.opts.no_metadata:
                    inode.meta_known = False
                    return inode
                self._prefetch_siblings(parent, entry.name)
                await self._load_dir(inode, base + "/")
            return inode
        if known is not None and not known.is_dir and not known.gone:
            if known.writer is not None:
                return known  # local, unflushed state is newer than anything listed
            if known.etag and known.etag == entry.etag and known.meta_known and info is None:
                known.fresh_until = self._refresh_deadline()
                return known
        cached = None
        if info is None and self.opts.no_metadata:
            cached = CachedMeta({}, None, False)
        elif info is None:
            cached = self.metacache.get(base, entry.etag)
            if cached is None and lazy:
                return self._provisional(parent, entry, known)
            if cached is None:
                self._prefetch_siblings(parent, entry.name)
                info = await self.head(base)
                if info is None:
                    self._vanished(parent, entry.name)
                    raise FsError(errno.ENOENT, "the object disappeared")
        metadata = info.metadata if info is not None else cached.metadata  # type: ignore[union-attr]
        attrs = self.decode(metadata, False, info.last_modified if info else entry.last_modified)
        if known is not None and not known.gone and not known.is_dir and stat.S_IFMT(known.attrs.mode) == attrs.kind:
            inode = known
        else:
            inode = self.table.add(parent, entry.name, attrs)
        if info is not None:
            self.apply_info(inode, info)
        else:
            self._apply_cached(inode, entry, cached)  # type: ignore[arg-type]
            inode.attrs = attrs
        return inode

    def _provisional(self, parent: Inode, entry: Entry, known: Inode | None) -> Inode:
        """A file's inode with attributes guessed from its listing entry
        (mount defaults, LastModified): the real ones come with the first
        getattr. A symlink not yet known to be one shows as a file until then."""
        inode = known
        if inode is None or inode.gone or inode.is_dir or inode.etag != entry.etag:
            inode = self.table.add(parent, entry.name, self.decode({}, False, entry.last_modified))
        inode.size, inode.etag, inode.remote = entry.size, entry.etag, True
        inode.last_modified, inode.storage_class = entry.last_modified, entry.storage_class
        inode.meta_known = False
        inode.fresh_until = 0.0
        return inode

    def _prefetch_siblings(self, parent: Inode, name: str) -> None:
        """Metadata is needed for `name`: fetch it for the names that follow
        in the directory too, concurrently (ls -l stats them one by one)."""
        listing = self.listings.get(parent.ino)
        if listing is None or self.nursery is None:
            return
        i = bisect.bisect_left(listing.names, name)
        ahead = self.prefetched_upto.get(parent.ino, -1)
        if ahead - 2 * PREFETCH_WINDOW < i < ahead - PREFETCH_WINDOW // 2:
            return  # the window is still well ahead of this reader
        self.prefetched_upto[parent.ino] = i + 1 + PREFETCH_WINDOW
        names = listing.names[i + 1 : i + 1 + PREFETCH_WINDOW]
        self.prefetch(parent, [listing.entries[n] for n in names if n in listing.entries])

    async def _load_dir(self, inode: Inode, marker: str) -> None:
        """Attributes of a directory from its marker object, if it has one."""
        if self.opts.no_metadata:
            inode.fresh_until = self._refresh_deadline()
            return
        if marker in self.dir_meta:
            info = self.dir_meta[marker]
        else:
            info = await self.head(marker)
            self.dir_meta[marker] = info
        if info is not None:
            self.apply_info(inode, info)
            inode.size = 0
        else:
            inode.remote = False
            inode.meta_known = True  # known to have none
            inode.fresh_until = self._refresh_deadline()

    def _vanished(self, parent: Inode, name: str) -> None:
        listing = self.listings.get(parent.ino)
        if listing is not None:
            listing.remove(name)
        self.negative[(parent.ino, name)] = True

    async def getattr(self, inode: Inode) -> Inode:
        """The inode with attributes no older than attr_timeout."""
        if inode.fresh() or inode.gone or inode.ino == ROOT_INO:
            return inode
        key = self.key(inode)
        if inode.is_dir:
            self.dir_meta.pop(key, None)
            await self._load_dir(inode, key)
            return inode
        if not inode.remote:
            return inode  # created here, not uploaded yet: nothing to revalidate
        parent = self.table.get(inode.parent)
        if not inode.meta_known and parent is not None:
            cached = self.metacache.get(key, inode.etag)  # perhaps prefetched meanwhile
            if cached is not None:
                self._same_kind(inode, key, self.decode(cached.metadata, False, inode.last_modified))
                self._apply_cached(inode, Entry(inode.name, False, inode.size, inode.etag, inode.last_modified,
                                                inode.storage_class), cached)
                inode.attrs = self.decode(cached.metadata, False, inode.last_modified)
                return inode
            self._prefetch_siblings(parent, inode.name)
        info = await self.head(key)
        self.revalidations["checked"] += 1
        if info is None:
            self.revalidations["gone"] += 1
            parent = self.table.get(inode.parent)
            if parent is not None:
                self._vanished(parent, inode.name)
            self.table.detach(inode)
            raise FsError(errno.ENOENT, "the object was deleted by another client")
        if info.etag != inode.etag:
            self.revalidations["changed"] += 1
        self._same_kind(inode, key, self.decode(info.metadata, False, info.last_modified))
        self.apply_info(inode, info)
        return inode

    def _same_kind(self, inode: Inode, key: str, attrs: Attrs) -> None:
        """The kernel never changes an inode's type (it would call the inode
        bad). If the object is now of another kind (another client replaced a
        file by a symlink, or a readdir guessed "file" for a symlink whose
        metadata was not known), the name gets a new inode, and ESTALE makes
        the kernel look the name up again at once and find it."""
        if attrs.kind != inode.attrs.kind:
            self.listings.pop(inode.parent, None)
            self.table.detach(inode)
            raise FsError(errno.ESTALE, f"{key!r} is a {_kind_name(attrs.kind)}, not a {_kind_name(inode.attrs.kind)}: looked up again")

    # -- listings ----------------------------------------------------------------

    async def listing(self, directory: Inode) -> Listing:
        """The directory's names, from the cache or by listing it (one
        listing at a time per directory, shared by all who ask)."""
        while True:
            listing = self.listings.get(directory.ino)
            if listing is not None:
                return listing
            busy = self._listing_now.get(directory.ino)
            if busy is None:
                break
            await busy.wait()
            if directory.ino not in self.listings:
                break  # it failed; try ourselves
        self._listing_now[directory.ino] = done = trio.Event()
        try:
            return await self._list(directory)
        finally:
            del self._listing_now[directory.ino]
            done.set()

    async def _list(self, directory: Inode) -> Listing:
        prefix = self.table.prefix(directory)
        listing = Listing(prefix)
        started = time.monotonic()
        async for page in self.zos.list_all(prefix, "/"):
            listing.add_page(page, self.skipped)
        if self.deletes.pending:
            for name in [n for n, e in listing.entries.items() if not e.is_dir and prefix + n in self.deletes]:
                del listing.entries[name]  # unlinked here, its delete still queued
        # Names this mount made that the LIST may not show yet: files not yet
        # uploaded, and ones created or uploaded while the LIST was on its way.
        for child in self.table.children(directory):
            if child.name not in listing.entries and (
                not child.remote or child.writer is not None or self.changed_at.get(child.ino, 0.0) >= started
            ):
                listing.entries[child.name] = Entry(child.name, child.is_dir, child.size, child.etag)
        listing.finish()
        self.dir_sizes[directory.ino] = len(listing.entries)
        if directory.ino != ROOT_INO:
            directory.remote = directory.remote or listing.has_marker
        self.listings[directory.ino] = listing
        if not self.opts.no_metadata:
            self.metacache.preload(prefix, {prefix + e.name: e.etag for e in listing.entries.values() if not e.is_dir})
        return listing

    def prefetch(self, directory: Inode, entries: list[Entry]) -> None:
        """Start fetching the metadata a reader of this listing will need next,
        concurrently, so that `ls -l` does not wait for one HEAD after another."""
        if self.nursery is None or self.opts.no_metadata:
            return
        prefix = self.table.prefix(directory)
        for entry in entries:
            key = prefix + entry.name + ("/" if entry.is_dir else "")
            if key in self._heads:
                continue
            if entry.is_dir:
                if key in self.dir_meta:
                    continue
            else:
                known = self.table.child(directory.ino, entry.name)
                if known is not None and known.etag and known.etag == entry.etag and known.meta_known:
                    continue
                if self.metacache.get(key, entry.etag) is not None:
                    continue
            self.nursery.start_soon(self._prefetch_one, key, entry.is_dir, entry.etag)

    async def _prefetch_one(self, key: str, is_dir: bool, etag: str) -> None:
        async with self._prefetch_slots:
            # While this waited for a slot, readdir may have needed the same
            # metadata and fetched it itself: do not ask twice.
            if key in self.dir_meta if is_dir else self.metacache.get(key, etag) is not None:
                return
            try:
                info = await self.head(key)
            except ZosError as err:
                log.debug("prefetching metadata of %r failed: %s", key, err)
                return
            if is_dir:
                self.dir_meta[key] = info

    async def entry_inode(self, directory: Inode, entry: Entry) -> Inode:
        """The inode of a listed name (for readdir): metadata only if known."""
        return await self._materialize(directory, entry, self.table.child(directory.ino, entry.name), lazy=True)

    # -- changes -------------------------------------------------------------------

    def _check_new(self, parent: Inode, name: str, is_dir: bool) -> str:
        """The key for a new name; EEXIST if this mount knows the name exists."""
        base = self._child_key_base(parent, name)
        if is_dir:
            names.check_key(base + "/")
        existing = self.table.child(parent.ino, name)
        if existing is not None and not existing.gone:
            raise FsError(errno.EEXIST)
        return base

    def _added(self, parent: Inode, inode: Inode) -> None:
        """Tell the caches about a name this mount created or moved here."""
        self.changed_at[inode.ino] = time.monotonic()
        self.negative.pop((parent.ino, inode.name), None)
        listing = self.listings.get(parent.ino)
        if listing is not None:
            listing.put(Entry(inode.name, inode.is_dir, inode.size, inode.etag))
        inode.fresh_until = self._refresh_deadline()

    def _removed(self, parent: Inode, inode: Inode, name: str) -> None:
        listing = self.listings.get(parent.ino)
        if listing is not None:
            listing.remove(name)
        self.negative[(parent.ino, name)] = True

    async def mkdir(self, parent: Inode, name: str, mode: int, uid: int, gid: int) -> Inode:
        key = self._check_new(parent, name, True) + "/"
        t = now_ns()
        attrs = Attrs(stat.S_IFDIR | stat.S_IMODE(mode), uid, gid, t, t)
        meta = encode(attrs)
        etag = await self.zos.put(key, b"", WriteOptions(metadata=meta, content_type=DIR_CONTENT_TYPE))
        inode = self.table.add(parent, name, attrs)
        inode.remote, inode.etag, inode.meta, inode.meta_known = True, etag, meta, True
        inode.content_type = DIR_CONTENT_TYPE
        inode.tags = {}
        self.dir_meta.pop(key, None)
        empty = Listing(key)
        empty.has_marker = True
        empty.finish()
        self.listings[inode.ino] = empty
        self.dir_sizes[inode.ino] = 0
        self._added(parent, inode)
        self.announce("create", key, is_dir=True)
        return inode

    async def create_file(self, parent: Inode, name: str, mode: int, uid: int, gid: int) -> Inode:
        """A new, empty file that exists only here until its first upload."""
        key = self._check_new(parent, name, False)
        await self.deletes.settle(key)  # an earlier file of that name must be gone first
        t = now_ns()
        inode = self.table.add(parent, name, Attrs(stat.S_IFREG | stat.S_IMODE(mode), uid, gid, t, t))
        inode.meta_known = True
        inode.tags = {}
        self._added(parent, inode)
        return inode

    async def symlink(self, parent: Inode, name: str, target: str, uid: int, gid: int) -> Inode:
        """A symlink, stored as s3fs does: the target as the body, S_IFLNK in the mode."""
        key = self._check_new(parent, name, False)
        await self.deletes.settle(key)
        t = now_ns()
        attrs = Attrs(stat.S_IFLNK | 0o777, uid, gid, t, t)
        meta = encode(attrs)
        body = target.encode("utf-8", "surrogateescape")
        etag = await self.zos.put(key, body, WriteOptions(metadata=meta))
        inode = self.table.add(parent, name, attrs)
        inode.remote, inode.etag, inode.meta, inode.meta_known = True, etag, meta, True
        inode.size, inode.target, inode.tags = len(body), target, {}
        self.remember(key, inode)
        self._added(parent, inode)
        return inode

    async def readlink(self, inode: Inode) -> str:
        if not inode.is_link:
            raise FsError(errno.EINVAL, "not a symlink")
        if inode.target is None:
            data = await self.zos.get(self.key(inode), if_match=inode.etag or None)
            inode.target = bytes(data).decode("utf-8", "surrogateescape")
        return inode.target

    async def unlink(self, parent: Inode, name: str) -> Inode:
        """Delete a file or symlink. Returns the unlinked inode (which lives on
        while open). The delete itself is queued and batched (see deletes.py),
        except in object-lock buckets, where a refusal must reach the caller."""
        inode = self.table.child(parent.ino, name)
        if inode is None or inode.gone or not (inode.remote or inode.fresh()):
            inode = await self.lookup(parent, name)  # (an inode from readdir needs no metadata here)
        if inode.is_dir:
            raise FsError(errno.EISDIR)
        await self.check_unlocked(inode, "delete")
        key = self.key(inode)
        if inode.remote and self.object_lock:
            await self._delete(key)
            self.announce("delete", key)
        elif inode.remote:  # announced once the queue has deleted it
            self.deletes.add(key)
        self.metacache.forget(key)
        self.table.detach(inode)
        self._removed(parent, inode, name)
        return inode

    async def _delete(self, key: str) -> None:
        try:
            await self.zos.delete(key)
        except ZosError as err:
            if err.errno != errno.ENOENT:
                raise

    async def rmdir(self, parent: Inode, name: str) -> None:
        inode = await self.lookup(parent, name)
        await self.deletes.settle(prefix=self.table.prefix(inode))  # rm -r: the files first
        if not inode.is_dir:
            raise FsError(errno.ENOTDIR)
        if any(not child.remote or child.writer is not None for child in self.table.children(inode)):
            raise FsError(errno.ENOTEMPTY)
        prefix = self.table.prefix(inode)
        page = await self.zos.list(prefix, None, max_keys=2)
        if any(e.key != prefix for e in page.entries) or page.prefixes:
            raise FsError(errno.ENOTEMPTY)
        if page.entries:
            await self._delete(prefix)
        self.announce("delete", prefix, is_dir=True)
        self.listings.pop(inode.ino, None)
        self.dir_meta.pop(prefix, None)
        self.table.detach(inode)
        self._removed(parent, inode, name)

    async def rename(self, src_parent: Inode, src_name: str, dst_parent: Inode, dst_name: str, flags: int) -> Inode:
        """Rename by copy-then-delete (files) or by moving every key below a
        directory, copies first, so an interruption leaves duplicates, never
        losses. The caller flushes unwritten data first."""
        if flags & RENAME_EXCHANGE:
            raise FsError(errno.EINVAL, "RENAME_EXCHANGE is not supported: two objects cannot be swapped atomically")
        src = await self.lookup(src_parent, src_name)
        dst_base = self._child_key_base(dst_parent, dst_name)
        await self.deletes.settle(dst_base)  # a deleted file of that name must not outlive the copy
        try:
            dst: Inode | None = await self.lookup(dst_parent, dst_name)
        except FsError as err:
            if err.errno != errno.ENOENT:
                raise
            dst = None
        if dst is src:
            return src
        if dst is not None and flags & RENAME_NOREPLACE:
            raise FsError(errno.EEXIST)
        await self.check_unlocked(src, "rename")
        if dst is not None:
            await self.check_unlocked(dst, "replacing it by rename")
        if src.is_dir:
            if dst is not None and not dst.is_dir:
                raise FsError(errno.ENOTDIR)
            if dst_parent is src or self.table.is_below(dst_parent, src):
                raise FsError(errno.EINVAL, "cannot move a directory into itself")
            if dst is not None:
                await self.rmdir(dst_parent, dst_name)  # ENOTEMPTY unless empty, as POSIX says
            names.check_key(dst_base + "/")
            await self._move_tree(self.table.prefix(src), dst_base + "/")
            self.listings.pop(src.ino, None)
        else:
            if dst is not None and dst.is_dir:
                raise FsError(errno.EISDIR)
            src_key = self.key(src)
            if src.remote:
                etag = await self.zos.copy(src_key, dst_base, size=src.size, grants=_explicit(await self.acl(src)))
                await self._delete(src_key)
                if etag:
                    src.etag = etag
                self.metacache.forget(src_key)
            if dst is not None:
                self.metacache.forget(dst_base)
        src_old_key = self.key(src)
        self._removed(src_parent, src, src_name)
        if dst is not None:
            self.table.detach(dst)
        self.announce("rename", src_old_key, dst_base + "/" if src.is_dir else dst_base, is_dir=src.is_dir)
        self.table.move(src, dst_parent, dst_name)
        self.remember(dst_base, src)
        self._added(dst_parent, src)
        return src

    async def _move_tree(self, src_prefix: str, dst_prefix: str) -> None:
        await self.deletes.settle(prefix=src_prefix)  # deleted files must not move along
        objects = []
        async for page in self.zos.list_all(src_prefix, None):
            objects += page.entries
        for obj in objects:
            names.check_key(dst_prefix + obj.key[len(src_prefix):])
        if self.object_lock:
            await self._check_tree_unlocked(objects)
        slots = trio.Semaphore(RENAME_CONCURRENCY)
        failures: list[ZosError] = []

        async def copy_one(obj: Any) -> None:
            async with slots:
                try:
                    # A copy would get the default ACL: carry each object's own.
                    grants = _explicit(await self.zos.get_acl(obj.key))
                    await self.zos.copy(obj.key, dst_prefix + obj.key[len(src_prefix):], size=obj.size, grants=grants)
                except ZosError as err:
                    failures.append(err)

        async with trio.open_nursery() as nursery:
            for obj in objects:
                nursery.start_soon(copy_one, obj)
        if failures:
            log.error("moving %r to %r: %d of %d copies failed (first: %s); the source is untouched",
                      src_prefix, dst_prefix, len(failures), len(objects), failures[0])
            raise failures[0]
        for failure in await self.zos.delete_many(o.key for o in objects):
            log.error("moved %r, but could not delete the original %r: %s (%s)",
                      src_prefix, failure.key, failure.message, failure.code)
        for obj in objects:
            self.metacache.forget(obj.key)
        for marker in [k for k in self.dir_meta if k.startswith(src_prefix)]:
            self.dir_meta.pop(marker, None)  # those markers are gone

    # -- attributes ------------------------------------------------------------------

    async def write_options(self, inode: Inode, metadata: dict[str, str], *, replacing: bool) -> WriteOptions:
        """What a write of this object must carry so that nothing is lost.

        An append, PUT or multipart upload replaces metadata, content type,
        tags and ACL, so it (`replacing`) sends them all; a copy keeps the tags
        by itself but resets the ACL, so a copy sends the ACL.
        """
        key = self.key(inode)
        tags = None
        if replacing:
            if inode.tags is None:
                inode.tags = await self.zos.get_tags(key) if inode.remote else {}
            tags = inode.tags or None
        acl = await self.acl(inode)
        grants = None if acl is None or is_default_acl(acl) else acl.grants
        return WriteOptions(metadata=metadata, content_type=inode.content_type, tags=tags, grants=grants)

    async def acl(self, inode: Inode) -> Acl | None:
        """The object's ACL (read once, then kept); None for objects not uploaded."""
        if inode.acl is None and inode.remote:
            inode.acl = await self.zos.get_acl(self.key(inode))
        return inode.acl

    async def check_unlocked(self, inode: Inode, action: str) -> None:
        """EPERM if the object is under retention or legal hold.

        In an object-lock bucket a plain DELETE or PUT would succeed (it adds
        a delete marker or a new version, and the locked version stays), so
        a user would believe a protected file gone or replaced. zosfs refuses
        instead. The lock can change without the ETag changing: always asks.
        """
        if not self.object_lock or not inode.remote or inode.is_dir:
            return
        key = self.key(inode)
        info = await self.zos.head(key)
        reasons = []
        if info.legal_hold:
            reasons.append("a legal hold")
        if info.lock_until and info.lock_until > time.time():
            until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.lock_until))
            reasons.append(f"{info.lock_mode or 'object-lock'} retention until {until}")
        if reasons:
            raise FsError(errno.EPERM, f"{key!r} is under {' and '.join(reasons)}: {action} refused, the object is unchanged")

    async def _check_tree_unlocked(self, objects: list[Any]) -> None:
        """Before moving a directory in an object-lock bucket: none of its
        objects may be locked, or the move would leave them behind."""
        locked: list[str] = []

        async def check(key: str) -> None:
            info = await self.zos.head(key)
            if info.legal_hold or (info.lock_until and info.lock_until > time.time()):
                locked.append(key)

        async with trio.open_nursery() as nursery:
            for obj in objects:
                nursery.start_soon(check, obj.key)
        if locked:
            raise FsError(errno.EPERM, f"{len(locked)} object(s) below are under retention or legal hold "
                          f"(first: {sorted(locked)[0]!r}): rename refused, nothing was moved")

    async def set_attrs(self, inode: Inode, attrs: Attrs, *, persist: bool) -> None:
        """Change mode/owner/times; with `persist`, rewrite the object's metadata
        now (otherwise the next upload of pending data carries them)."""
        inode.attrs = attrs
        if not persist:
            return
        key = self.key(inode)
        meta = encode(attrs, inode.meta)
        if inode.is_dir:
            if inode.ino == ROOT_INO and not key:
                return  # the bucket's root has no marker to hold metadata
            opts = await self.write_options(inode, meta, replacing=True)
            opts.content_type = inode.content_type or DIR_CONTENT_TYPE
            inode.etag = await self.zos.put(key, b"", opts)
            inode.remote = True
            self.dir_meta.pop(key, None)
        elif not inode.remote:
            return
        elif inode.appendable:
            opts = await self.write_options(inode, meta, replacing=True)
            # A zero-length append replaces the metadata and keeps the object
            # appendable (a copy would make it a normal object).
            appended = await self.zos.append(key, inode.size, b"", opts)
            # RGW chains the ETag through every append, empty ones too.
            inode.etag = next_append_etag(inode.etag, appended.etag) if inode.etag and appended.etag else ""
        else:
            opts = await self.write_options(inode, meta, replacing=False)
            inode.etag = await self.zos.copy(key, key, opts, size=inode.size)
        inode.meta = meta
        self.remember(key, inode)


def _kind_name(kind: int) -> str:
    return {stat.S_IFLNK: "symlink", stat.S_IFDIR: "directory"}.get(kind, "file")


class _PendingHead:
    """One HEAD in flight, and its answer for everyone who waited for it."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: ObjectInfo | ZosError | None = None


RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def _explicit(acl: Acl | None) -> tuple[Grant, ...] | None:
    """The grants a copy must carry to keep this ACL (None: the default will do)."""
    return None if acl is None or is_default_acl(acl) else acl.grants


def is_default_acl(acl: Acl) -> bool:
    """Only the owner, with full control: what every new object gets anyway."""
    return len(acl.grants) == 1 and acl.grants[0].permission == "FULL_CONTROL" and acl.grants[0].grantee == acl.owner_id


AsyncFn = Callable[..., Awaitable[Any]]
