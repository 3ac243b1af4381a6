"""The namespace: names, directories and attributes over a flat key space.

A key `a/b/c.txt` is the file `c.txt` in the directory `a/b`. A directory
exists when its marker object `a/b/` exists or when any key starts with
`a/b/` (an implicit directory). Attributes follow s3fs's metadata headers
(see `metadata.py`).

What is cached, and for how long (all configurable):
- an inode's attributes: `attr_timeout`;
- a directory listing: `dir_cache_ttl`; while fresh it answers lookups of
  the names it holds, but "no such file" only while younger than
  `negative_timeout` (then the server is asked again);
- a failed lookup: `negative_timeout` from when the server was asked, in
  zosfs and in the kernel alike (`negative.py`);
- metadata by (key, ETag, LastModified): forever, in memory and on disk
  (`metacache.py`), since an object's metadata cannot change without one of
  them changing (a metadata-only copy keeps the ETag, not LastModified).
The mount's own changes update all of them at once, so this mount never
contradicts itself; other writers become visible when the caches expire.

`Namespace` owns the inode table and these caches, and is the one interface
the FUSE handlers, the xattrs and the data path use. The work is split as
mountpoint-s3 splits its superblock, so that each part can be read alone:
`lookup.py` turns names into inodes with attributes, `readdir.py` lists
directories and prefetches the metadata their readers will need,
`changes.py` creates, deletes and renames, and `attributes.py` changes
attributes and says what a write must carry to keep them.
"""

from __future__ import annotations

import contextlib
import errno
import math
import stat
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import cachetools
import trio

from zosfs.fserror import FsError
from zosfs.namespace import names
from zosfs.namespace.attributes import ObjectAttrs, is_default_acl
from zosfs.namespace.changes import Changes
from zosfs.namespace.deletes import DeleteQueue
from zosfs.namespace.dirtimes import DirTimes
from zosfs.namespace.feed.records import FileVersion
from zosfs.namespace.index import MetaIndex
from zosfs.namespace.inodes import Inode, InodeTable
from zosfs.namespace.listing import Entry, Listing, SkipLog
from zosfs.namespace.lookup import Lookups
from zosfs.namespace.negative import NegativeCache
from zosfs.namespace.metacache import CachedMeta, MetaCache
from zosfs.namespace.metadata import Attrs, Defaults, decode, with_times
from zosfs.namespace.readdir import Readdir
from zosfs.options import Options
from zosfs.zos import Acl, ObjectInfo, WriteOptions, ZosClient, ZosError

if TYPE_CHECKING:
    from zosfs.namespace.feed import Feed

MAX_RECORD_META = 2048  # bytes of metadata a change record carries at most (xattrs can be large)
HEARD_HINT = 120.0  # seconds a name another mount stored is known to be a file (a lookup then sends no LIST)

__all__ = ["Namespace", "is_default_acl"]


def now_ns() -> int:
    """The wall clock in nanoseconds, as mtime and ctime are kept."""
    return time.time_ns()


class Namespace:
    """The inode table, the caches around it, and the operations on names."""

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
        self.table = InodeTable(root_prefix, Attrs(self.defaults.root_mode, opts.uid, opts.gid, start, start))
        self.table.root.meta_known = True
        self.metacache = metacache
        self.listings: cachetools.TTLCache[int, Listing] = cachetools.TTLCache(4096, max(opts.dir_cache_ttl, 1e-9))
        self.negative = NegativeCache(opts.negative_timeout)
        self.dir_meta: cachetools.TTLCache[str, ObjectInfo | None] = cachetools.TTLCache(
            65536, max(opts.attr_timeout, 1.0)
        )
        self.skipped = SkipLog()
        self._heads: dict[str, _PendingHead] = {}
        # key -> monotonic time this mount's last rewrite of it completed: a
        # HEAD begun before then may carry the older metadata (seen as a
        # directory's times going back after utimensat, then forward again).
        self.written_at: cachetools.LRUCache[str, float] = cachetools.LRUCache(65536)
        self._writes: dict[str, _KeyWrites] = {}  # this mount's rewrites of a key on their way
        self.deletes = DeleteQueue(zos)  # the daemon runs its sender
        # Entries of directories at their last listing: small ones are listed
        # again rather than probed name by name once their listing expires.
        self.dir_sizes: cachetools.LRUCache[int, int] = cachetools.LRUCache(65536)
        self.changed_at: cachetools.LRUCache[int, float] = cachetools.LRUCache(65536)  # ino -> when this mount last changed it
        self.nursery: trio.Nursery | None = None  # set by the daemon; runs prefetches
        self.object_lock = False  # the bucket has object lock (set by the daemon from the probe)
        self.feed: Feed | None = None  # the change feed between mounts (set by the daemon)
        # key -> (version, when heard, monotonic) of files other mounts just
        # stored (feed/apply.py), kept even if the kernel makes this mount
        # forget the file's inode: a lookup of the name within attr_timeout
        # takes the version instead of asking the server, and a later one
        # asks by HEAD alone (the name is known to be a file: no LIST).
        self.heard: cachetools.TTLCache[str, tuple[FileVersion, float, float]] = cachetools.TTLCache(
            65536, max(opts.attr_timeout, HEARD_HINT))
        # Attribute revalidations with the server (HEAD of a stale inode), and what they found.
        self.revalidations = {"checked": 0, "changed": 0, "gone": 0}
        self.index = MetaIndex(self, writable=not opts.ro) if opts.meta_index and not opts.no_metadata else None
        self.lookups = Lookups(self)
        self.readdir = Readdir(self)
        self.changes = Changes(self)
        self.attributes = ObjectAttrs(self)
        self.dir_times = DirTimes(self)  # the daemon runs its writer

    # -- inodes and keys -------------------------------------------------------

    def get(self, ino: int) -> Inode:
        """The inode the kernel knows by this number (FsError ESTALE if forgotten)."""
        inode = self.table.get(ino)
        if inode is None:
            raise FsError(errno.ESTALE, f"inode {ino} is not known (forgotten)")
        return inode

    def key(self, inode: Inode) -> str:
        """The inode's object key ('a/b/file', 'a/b/dir/')."""
        return self.table.key(inode)

    def child_key_base(self, parent: Inode, name: str) -> str:
        """The key of `name` in `parent` without a directory's trailing '/'."""
        if not parent.is_dir:
            raise FsError(errno.ENOTDIR, "not a directory")
        base = self.table.prefix(parent) + name
        names.check_key(base)
        return base

    # -- attributes held by inodes ---------------------------------------------

    def refresh_deadline(self) -> float:
        """Until when attributes read now may be reused."""
        return time.monotonic() + self.opts.attr_timeout

    def decode(self, metadata: dict[str, str], is_dir: bool, last_modified: float) -> Attrs:
        """Attributes from an object's metadata, with the mount's defaults."""
        return decode(metadata, is_dir=is_dir, last_modified=last_modified, defaults=self.defaults)

    def apply_info(self, inode: Inode, info: ObjectInfo, attrs: Attrs | None = None) -> None:
        """Take an object's HEAD into an inode (size, ETag, metadata, attributes).
        `attrs`: what `decode` made of this HEAD already (a kind check), if so."""
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
        inode.attrs = attrs if attrs is not None else self.decode(info.metadata, inode.is_dir, info.last_modified)
        if info.tag_count == 0:
            inode.tags = {}
        inode.fresh_until = self.refresh_deadline()

    def apply_cached(self, inode: Inode, entry: Entry, cached: CachedMeta) -> None:
        """Take a listing entry and the metadata cached for its ETag into an
        inode (the caller sets the attributes)."""
        inode.size = entry.size
        inode.etag = entry.etag
        inode.remote = True
        inode.meta = dict(cached.metadata)
        inode.meta_known = True
        inode.content_type = cached.content_type
        inode.storage_class = entry.storage_class
        inode.appendable = cached.appendable
        inode.last_modified = entry.last_modified
        inode.fresh_until = self.refresh_deadline()

    def announce(self, op: str, *keys: str, is_dir: bool = False, attrs: FileVersion | None = None) -> None:
        """Tell other mounts (through the change feed) what this mount changed."""
        for key in keys:
            self.heard.pop(key, None)  # this mount's change is newer than what it heard
        if self.feed is not None:
            self.feed.publish(op, *keys, is_dir=is_dir, attrs=attrs)

    def feed_attrs(self, inode: Inode) -> FileVersion | None:
        """The version of a file this mount just stored, for the `change`
        record other mounts take it from (records.py); None where this
        mount does not know it exactly: no ETag computed (appends to a
        foreign object, multipart), data written meanwhile and not yet
        uploaded, not a regular file, or metadata too large for a record."""
        if inode.is_dir or not inode.etag or not inode.meta_known or not stat.S_ISREG(inode.attrs.mode):
            return None
        if inode.writer is not None and inode.writer.dirty:
            return None
        if sum(len(k) + len(v) for k, v in inode.meta.items()) > MAX_RECORD_META:
            return None
        return FileVersion(inode.etag, inode.size, dict(inode.meta), inode.content_type, inode.appendable)

    def apply_version(self, inode: Inode, version: FileVersion, attrs: Attrs, when: float) -> None:
        """Take a version another mount stored (a change feed record) into a
        file's inode: current for attr_timeout, like a HEAD's answer."""
        inode.size, inode.etag, inode.remote = version.size, version.etag, True
        inode.meta, inode.meta_known = dict(version.metadata), True
        inode.content_type, inode.appendable = version.content_type, version.appendable
        inode.last_modified = when  # (the writer's clock: the server's is not known to it)
        inode.attrs = attrs
        inode.fresh_until = self.refresh_deadline()

    def touched(self, attrs: Attrs) -> Attrs:
        """Attributes after a change of content: mtime and ctime are now."""
        t = now_ns()
        return with_times(attrs, mtime_ns=t, ctime_ns=t)  # (atime stays)

    def remember(self, key: str, inode: Inode) -> None:
        """Record an upload of this mount: its new size and ETag in its
        directory's cached listing (the write path calls this after every
        upload, and a listing that still showed the old version would make
        readdir load the old size and ETag back into the inode, and reads
        then fail their If-Match), and a `change` record for other mounts
        that carries the new version's attributes (see `feed_attrs`). (Not
        in the metadata cache: the upload's LastModified is not known.)"""
        if not inode.etag and inode.remote and not inode.is_dir:
            # What was stored has an ETag nobody computed (appends to an object
            # this mount did not create): ask the server before the next open
            # reads it, so that no cached data of the old version is reused.
            inode.fresh_until = 0.0
        self.changed_at[inode.ino] = time.monotonic()
        self.announce("change", key, is_dir=inode.is_dir, attrs=self.feed_attrs(inode))
        listing = self.listings.get(inode.parent)
        if listing is not None and not inode.gone and inode.name in listing.entries:
            listing.put(Entry(inode.name, inode.is_dir, inode.size, inode.etag, inode.last_modified, inode.storage_class))

    async def head(self, key: str) -> ObjectInfo | None:
        """HEAD an object, sharing one request among concurrent askers.
        None when there is no such object. An answer to a HEAD begun before
        this mount's own rewrite of the object completed may be older than
        what was written: it is not taken, and the object is asked again
        once the write is done (at most twice more)."""
        for _ in range(3):
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
                    if isinstance(info, ObjectInfo) and not key.endswith("/") and self._current(key, pending):
                        self.metacache.put(key, info.etag, CachedMeta(info.metadata, info.content_type, info.appendable),
                                           info.last_modified)
                        if self.index is not None:
                            self.index.note(key, info)
                finally:
                    del self._heads[key]
                    pending.done.set()
            else:
                await pending.done.wait()
            if self._current(key, pending):
                break
            writes = self._writes.get(key)
            if writes is not None:
                await writes.done.wait()  # (bounded by the client's timeouts)
        if isinstance(pending.result, ZosError):
            raise pending.result
        return pending.result

    def _current(self, key: str, pending: _PendingHead) -> bool:
        return key not in self._writes and pending.started >= self.written_at.get(key, -math.inf)

    @contextlib.asynccontextmanager
    async def writing(self, key: str) -> AsyncIterator[None]:
        """Around this mount's rewrite of `key` (a marker's or an object's
        metadata): one at a time per key, so that the last begun is the one
        the object keeps; HEADs answered meanwhile, or begun before it ended,
        are not taken (`head`), and the cached marker answer is dropped."""
        writes = self._writes.get(key)
        if writes is None:
            writes = self._writes[key] = _KeyWrites()
        writes.users += 1
        try:
            async with writes.lock:  # (the one ahead is one request, bounded by the client's timeouts)
                yield
        finally:
            writes.users -= 1
            if not writes.users:
                del self._writes[key]
                writes.done.set()
            self.written_at[key] = time.monotonic()
            self.dir_meta.pop(key, None)

    def head_pending(self, key: str) -> bool:
        """Whether a HEAD of `key` is in flight (a prefetch need not start one)."""
        return key in self._heads

    # -- lookups and listings (lookup.py, readdir.py) ----------------------------

    async def lookup(self, parent: Inode, name: str) -> Inode:
        """The inode for `name` in `parent` (FsError ENOENT if there is none).
        The caller takes a lookup reference if it hands the inode to the kernel."""
        return await self.lookups.lookup(parent, name)

    async def getattr(self, inode: Inode) -> Inode:
        """The inode with attributes no older than attr_timeout."""
        return await self.lookups.getattr(inode)

    def negative_ttl(self, parent: Inode, name: str) -> float:
        """For how many more seconds the kernel may keep the "no such name"
        that `lookup` just answered: no longer than zosfs itself keeps it."""
        return self.negative.remaining(parent.ino, name)

    async def readlink(self, inode: Inode) -> str:
        """A symlink's target (read from its object once)."""
        return await self.lookups.readlink(inode)

    async def listing(self, directory: Inode) -> Listing:
        """The directory's names, from the cache or by listing it."""
        return await self.readdir.listing(directory)

    async def entry_inode(self, directory: Inode, entry: Entry) -> Inode:
        """The inode of a listed name (for readdir): metadata only if known."""
        return await self.lookups.materialize(directory, entry, self.table.child(directory.ino, entry.name), lazy=True)

    # -- changes (changes.py) ------------------------------------------------------

    async def mkdir(self, parent: Inode, name: str, mode: int, uid: int, gid: int) -> Inode:
        """A new directory, stored as a marker object `name/`."""
        return await self.changes.mkdir(parent, name, mode, uid, gid)

    async def create_file(self, parent: Inode, name: str, mode: int, uid: int, gid: int) -> Inode:
        """A new, empty file that exists only here until its first upload."""
        return await self.changes.create_file(parent, name, mode, uid, gid)

    async def symlink(self, parent: Inode, name: str, target: str, uid: int, gid: int) -> Inode:
        """A symlink, stored as s3fs does: the target as the body, S_IFLNK in the mode."""
        return await self.changes.symlink(parent, name, target, uid, gid)

    async def unlink(self, parent: Inode, name: str) -> Inode:
        """Delete a file or symlink; returns the unlinked inode (it lives on while open)."""
        return await self.changes.unlink(parent, name)

    def reverted(self, inode: Inode) -> None:
        """A change of an existing object could not be stored: show the object again."""
        self.changes.reverted(inode)

    def unstored(self, inode: Inode) -> None:
        """A new file whose data could not be stored goes from the namespace."""
        self.changes.unstored(inode)

    async def rmdir(self, parent: Inode, name: str) -> None:
        """Delete an empty directory (ENOTEMPTY otherwise)."""
        await self.changes.rmdir(parent, name)

    async def rename(self, src_parent: Inode, src_name: str, dst_parent: Inode, dst_name: str, flags: int) -> Inode:
        """Rename a file or directory (copy, then delete); returns the moved inode."""
        return await self.changes.rename(src_parent, src_name, dst_parent, dst_name, flags)

    # -- object attributes (attributes.py) -------------------------------------------

    async def write_options(self, inode: Inode, metadata: dict[str, str], *, replacing: bool) -> WriteOptions:
        """What a write of this object must carry so that nothing is lost."""
        return await self.attributes.write_options(inode, metadata, replacing=replacing)

    async def acl(self, inode: Inode) -> Acl | None:
        """The object's ACL (read once, then kept); None for objects not uploaded."""
        return await self.attributes.acl(inode)

    async def check_unlocked(self, inode: Inode, action: str) -> None:
        """EPERM if the object is under retention or legal hold."""
        await self.attributes.check_unlocked(inode, action)

    async def set_attrs(self, inode: Inode, attrs: Attrs, *, persist: bool) -> None:
        """Change mode/owner/times; with `persist`, rewrite the object's metadata now."""
        await self.attributes.set_attrs(inode, attrs, persist=persist)


class _PendingHead:
    """One HEAD in flight, and its answer for everyone who waited for it."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.started = time.monotonic()
        self.result: ObjectInfo | ZosError | None = None


class _KeyWrites:
    """This mount's rewrites of one key: in turn (`lock`), `done` when none is left."""

    def __init__(self) -> None:
        self.lock = trio.Lock()
        self.done = trio.Event()
        self.users = 0
