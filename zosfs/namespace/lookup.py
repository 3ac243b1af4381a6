"""Lookup: from a name in a directory to an inode with its attributes.

A name is answered, cheapest first, by the inode table (attributes younger
than attr_timeout), a negative answer or a queued delete, the directory's
listing (a small directory whose listing expired is listed again: one LIST
answers the names that follow too), and last by probing the server for that
one name. An inode's attributes come from the metadata cache or a HEAD; for
readdir (`lazy`) they may be guessed from the listing entry, and `getattr`
fetches the real ones when the kernel first asks, or revalidates them once
they are older than attr_timeout.

Directories of older conventions are decided here too: an empty object
`dir` whose metadata says directory, and `dir_$folder$` (see load_legacy).

Kept apart from listing (readdir.py) and changes (changes.py) because this
is where every name the kernel asks about is decided, including "no such
file", and the freshness rules are easier to check in one place.
"""

from __future__ import annotations

import errno
import stat
import time
from typing import TYPE_CHECKING

import trio

from zosfs.fserror import FsError
from zosfs.namespace.names import RESERVED_NAME
from zosfs.namespace.inodes import ROOT_INO, Inode
from zosfs.namespace.listing import Entry
from zosfs.namespace.metacache import CachedMeta
from zosfs.namespace.metadata import FOLDER_SUFFIX, Attrs, is_legacy_dir
from zosfs.zos import ObjectInfo

if TYPE_CHECKING:
    from zosfs.namespace.tree import Namespace

SMALL_DIR = 1000  # entries: one LIST page


class Lookups:
    """Names to inodes: probes, materialization, revalidation."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.table = ns.table
        self.opts = ns.opts

    async def lookup(self, parent: Inode, name: str) -> Inode:
        """The inode for `name` in `parent` (FsError ENOENT if there is none).

        A listing names what exists for dir_cache_ttl, but says that a name
        does not exist only while it is younger than negative_timeout; after
        that the server is asked again (a small directory is listed again,
        a large one probed for this name), so that a file made elsewhere can
        be opened by name within about negative_timeout. Every "no such
        name" is recorded in `ns.negative` with its age (see negative.py)."""
        ns = self.ns
        base = ns.child_key_base(parent, name)
        if base == RESERVED_NAME:
            raise FsError(errno.ENOENT)  # zosfs's own objects (names.py)
        inode = self.table.child(parent.ino, name)
        if inode is not None and not inode.gone and inode.fresh():
            return inode
        if (parent.ino, name) in ns.negative:
            raise FsError(errno.ENOENT)
        if base in ns.deletes:
            ns.negative.add(parent.ino, name)  # unlinked here, its delete still queued
            raise FsError(errno.ENOENT)
        heard = ns.heard.get(base) if inode is None or inode.gone else None
        later = ns.listings.get(parent.ino)
        if heard is not None and later is not None and later.started > heard[2] and name not in later.entries:
            heard = None  # a listing made since says the name is gone (deleted by another tool)
        if heard is not None and time.monotonic() - heard[2] < self.opts.attr_timeout:
            # Another zosfs mount just stored this file (its feed record):
            # no LIST, no HEAD; the open still checks the ETag (opencheck.py).
            version, when, _ = heard
            inode = self.table.add(parent, name, ns.decode(version.metadata, False, when))
            ns.apply_version(inode, version, inode.attrs, when)
            return inode
        since = time.monotonic() - self.opts.negative_timeout  # an absence older than this must be asked again
        listing = ns.listings.get(parent.ino)
        if listing is not None and name not in listing.entries and listing.started < since:
            listing = None  # it still names what exists, but is too old to say this name does not
        if listing is None and ns.dir_sizes.get(parent.ino, SMALL_DIR + 1) <= SMALL_DIR:
            # One LIST of a small directory answers this and the next names
            # (cp -r, tar x: many new names) for less than a HEAD and a LIST each.
            listing = await ns.readdir.listing(parent, since=since)
        if listing is not None:
            entry = listing.entries.get(name)
            if entry is None:
                ns.negative.add(parent.ino, name, asked=listing.started)
                raise FsError(errno.ENOENT)
            return await self.materialize(parent, entry, inode)
        if inode is not None and not inode.gone:
            ns.readdir.prefetch_siblings(parent, name, revalidate=True)
        was_file = heard is not None or ns.readdir.was_file(parent, name)  # (heard: a file another mount stored)
        entry, info = await self.probe(base, name, inode, was_file=was_file)
        if entry is None:
            ns.negative.add(parent.ino, name)
            if inode is not None and inode.writer is None:
                self.table.detach(inode)
            raise FsError(errno.ENOENT)
        return await self.materialize(parent, entry, inode, info)

    async def probe(
        self, base: str, name: str, known: Inode | None, *, was_file: bool = False
    ) -> tuple[Entry | None, ObjectInfo | None]:
        """Ask the server what `base` is: a file (HEAD), a directory (a key
        below `base/`), both (the directory wins), or nothing. A name known
        as a file (an inode, or the directory's last listing: `was_file`) is
        asked by HEAD alone first."""
        if was_file or (known is not None and not known.is_dir and not known.gone):
            entry, info = await self.probe_file(base, name)
            if entry is not None:
                return entry, info
        entry = info = None
        below = False

        async def probe_file() -> None:
            nonlocal entry, info
            entry, info = await self.probe_file(base, name)

        async def list_dir() -> None:
            nonlocal below
            page = await self.ns.zos.list(base + "/", "/", max_keys=1)
            below = bool(page.entries or page.prefixes)

        folder = None

        async def probe_folder() -> None:
            nonlocal folder
            folder = await self.ns.head(base + FOLDER_SUFFIX)
            if folder is not None:
                self.ns.dir_meta[base + FOLDER_SUFFIX] = folder

        async with trio.open_nursery() as nursery:
            nursery.start_soon(probe_file)
            nursery.start_soon(list_dir)
            if self.opts.compat_dir:
                nursery.start_soon(probe_folder)
        legacy = info is not None and is_legacy_dir(info.metadata, info.content_type, info.size)
        if legacy:
            self.ns.dir_meta[base] = info  # (load_legacy reads it from there)
        elif folder is not None and (entry is None or below):
            return Entry(name, True, legacy=base + FOLDER_SUFFIX), None
        if below:
            if entry is not None and not legacy:
                self.ns.skipped.note(base, f"file hidden by the directory {base + '/'!r} of the same name (it is kept in the bucket)")
            return Entry(name, True, legacy=base if legacy else ""), None
        if legacy:
            return Entry(name, True, legacy=base), None
        return entry, info

    async def probe_file(self, base: str, name: str) -> tuple[Entry | None, ObjectInfo | None]:
        """The object `base`, if there is one: by HEAD (with its metadata), or
        with `no_metadata` by a one-key LIST (the key itself sorts first among
        the keys it prefixes), so that such a mount never sends a HEAD to look
        up a name."""
        if self.opts.no_metadata:
            page = await self.ns.zos.list(base, "/", max_keys=1)
            obj = page.entries[0] if page.entries else None
            if obj is None or obj.key != base:
                return None, None
            return Entry(name, False, obj.size, obj.etag, obj.last_modified, obj.storage_class), None
        info = await self.ns.head(base)
        if info is None:
            return None, None
        return Entry(name, False, info.size, info.etag, info.last_modified, info.storage_class), info

    async def materialize(
        self, parent: Inode, entry: Entry, known: Inode | None, info: ObjectInfo | None = None, *, lazy: bool = False
    ) -> Inode:
        """An inode for a listed (or probed) name, with its attributes loaded.

        `lazy` (readdir): if the metadata is not known yet, the inode gets
        attributes guessed from the listing (`meta_known` False) and no HEAD
        is sent; the kernel is told not to cache them, so the first stat()
        asks `getattr`, which fetches them (and the neighbours' in advance).
        `find`, `rm -r` and `du --apparent-size -s`-like walks of d_type then
        cost LISTs only."""
        ns = self.ns
        base = self.table.prefix(parent) + entry.name
        if entry.is_dir:
            inode = known if known is not None and known.is_dir and not known.gone else None
            if inode is None:
                inode = self.table.add(parent, entry.name, ns.decode({}, True, 0))
                inode.attrs = Attrs(ns.defaults.dir_mode, ns.defaults.uid, ns.defaults.gid,
                                    self.table.root.attrs.mtime_ns, self.table.root.attrs.mtime_ns)
            if entry.legacy and entry.legacy != inode.legacy:
                inode.legacy, inode.fresh_until = entry.legacy, 0.0
            if not inode.fresh():
                if lazy and base + "/" not in ns.dir_meta and not self.opts.no_metadata:
                    inode.meta_known = False
                    ns.dir_times.apply(inode)  # (times this mount set and has not stored for sure)
                    return inode
                ns.readdir.prefetch_siblings(parent, entry.name)
                await self.load_dir(inode, base + "/")
            return inode
        if known is not None and not known.is_dir and not known.gone:
            if known.writer is not None:
                return known  # local, unflushed state is newer than anything listed
            if known.etag and known.etag == entry.etag and known.meta_known and info is None:
                known.fresh_until = ns.refresh_deadline()
                return known
        cached = None
        if info is None and self.opts.no_metadata:
            cached = CachedMeta({}, None, False)
        elif info is None:
            cached = ns.metacache.get(base, entry.etag, entry.last_modified)
            if cached is None and lazy:
                return self.provisional(parent, entry, known)
            if cached is None:
                ns.readdir.prefetch_siblings(parent, entry.name)
                info = await ns.head(base)
                if info is None:
                    self.vanished(parent, entry.name)
                    raise FsError(errno.ENOENT, "the object disappeared")
        metadata = info.metadata if info is not None else cached.metadata  # type: ignore[union-attr]
        content_type = info.content_type if info is not None else cached.content_type  # type: ignore[union-attr]
        if is_legacy_dir(metadata, content_type, entry.size):
            if info is not None:
                ns.dir_meta[base] = info  # (load_legacy needs no second HEAD)
            return await self.legacy_dir(parent, entry, known, base)
        attrs = ns.decode(metadata, False, info.last_modified if info else entry.last_modified)
        if known is not None and not known.gone and not known.is_dir and stat.S_IFMT(known.attrs.mode) == attrs.kind:
            inode = known
        else:
            inode = self.table.add(parent, entry.name, attrs)
        if info is not None:
            ns.apply_info(inode, info)
        else:
            ns.apply_cached(inode, entry, cached)  # type: ignore[arg-type]
            inode.attrs = attrs
        return inode

    def provisional(self, parent: Inode, entry: Entry, known: Inode | None) -> Inode:
        """A file's inode with attributes guessed from its listing entry
        (mount defaults, LastModified): the real ones come with the first
        getattr. A symlink not yet known to be one shows as a file until then."""
        inode = known
        if inode is None or inode.gone or inode.is_dir or inode.etag != entry.etag:
            inode = self.table.add(parent, entry.name, self.ns.decode({}, False, entry.last_modified))
        inode.size, inode.etag, inode.remote = entry.size, entry.etag, True
        inode.last_modified, inode.storage_class = entry.last_modified, entry.storage_class
        inode.meta_known = False
        inode.fresh_until = 0.0
        return inode

    async def load_dir(self, inode: Inode, marker: str) -> None:
        """Attributes of a directory from its marker object, if it has one."""
        ns = self.ns
        if self.opts.no_metadata:
            inode.fresh_until = ns.refresh_deadline()
            ns.dir_times.apply(inode)
            return
        if marker in ns.dir_meta:
            info = ns.dir_meta[marker]
        else:
            info = await ns.head(marker)
            ns.dir_meta[marker] = info
        if info is not None:
            ns.apply_info(inode, info)
            inode.size = 0
        elif inode.legacy and await self.load_legacy(inode):
            pass
        else:
            inode.remote = False
            inode.meta_known = True  # known to have none
            inode.fresh_until = ns.refresh_deadline()
        # Times this mount set and has not stored for sure win over the
        # marker's (or than none), also in an inode built again after the
        # kernel forgot the last one.
        ns.dir_times.apply(inode)

    async def load_legacy(self, inode: Inode) -> bool:
        """A directory without a `dir/` marker takes its attributes from its
        older-convention object (`dir_$folder$`, or `dir` if its metadata
        says directory), as s3fs reads them. That object is not a marker to
        this mount: changes of the directory's attributes write `dir/` and
        remove it (as s3fs does), its times stay in memory (dirtimes.py)."""
        ns = self.ns
        key = inode.legacy
        info = ns.dir_meta[key] if key in ns.dir_meta else await ns.head(key)
        ns.dir_meta[key] = info
        if info is None or not (key.endswith(FOLDER_SUFFIX) or is_legacy_dir(info.metadata, info.content_type, info.size)):
            if info is not None:
                ns.skipped.note(key, f"file hidden by the directory {key + '/'!r} of the same name (it is kept in the bucket)")
            inode.legacy = ""
            return False
        ns.apply_info(inode, info)
        inode.size = 0
        inode.remote = False  # (no `dir/` marker: nothing of this mount's is written to `key`)
        return True

    async def legacy_dir(self, parent: Inode, entry: Entry, known: Inode | None, base: str) -> Inode:
        """A listed (or probed) empty object that is a directory as older
        s3fs versions made them: a directory inode, and the listing says so."""
        inode = known if known is not None and known.is_dir and not known.gone else None
        if inode is None:
            if known is not None and not known.gone:
                self.table.detach(known)  # (it was taken for a file: the kernel looks it up again)
            inode = self.table.add(parent, entry.name, self.ns.decode({}, True, 0))
        inode.legacy = base
        listing = self.ns.listings.get(parent.ino)
        if listing is not None:
            listing.put(Entry(entry.name, True, legacy=base))
        await self.load_dir(inode, base + "/")
        return inode

    def vanished(self, parent: Inode, name: str) -> None:
        """A listed name whose object is gone: drop it from the listing, answer ENOENT."""
        listing = self.ns.listings.get(parent.ino)
        if listing is not None:
            listing.remove(name)
        self.ns.negative.add(parent.ino, name)

    async def getattr(self, inode: Inode) -> Inode:
        """The inode with attributes no older than attr_timeout."""
        ns = self.ns
        if inode.fresh() or inode.gone or inode.ino == ROOT_INO:
            return inode
        key = ns.key(inode)
        if inode.is_dir:
            ns.dir_meta.pop(key, None)
            await self.load_dir(inode, key)
            return inode
        if not inode.remote:
            return inode  # created here, not uploaded yet: nothing to revalidate
        parent = self.table.get(inode.parent)
        if not inode.meta_known and parent is not None:
            cached = ns.metacache.get(key, inode.etag, inode.last_modified)  # perhaps prefetched meanwhile
            if cached is not None:
                self.same_kind(inode, key, ns.decode(cached.metadata, is_legacy_dir(cached.metadata, cached.content_type,
                                                                                   inode.size), inode.last_modified))
                ns.apply_cached(inode, Entry(inode.name, False, inode.size, inode.etag, inode.last_modified,
                                             inode.storage_class), cached)
                inode.attrs = ns.decode(cached.metadata, False, inode.last_modified)
                return inode
            ns.readdir.prefetch_siblings(parent, inode.name)
        info = await ns.head(key)
        ns.revalidations["checked"] += 1
        if info is not None and inode.meta_known and inode.etag == info.etag and inode.fresh() and not inode.gone:
            return inode  # a metadata prefetch took this same answer while we waited for it
        if info is None:
            ns.revalidations["gone"] += 1
            parent = self.table.get(inode.parent)
            if parent is not None:
                self.vanished(parent, inode.name)
            self.table.detach(inode)
            raise FsError(errno.ENOENT, "the object was deleted by another client")
        if info.etag != inode.etag:
            ns.revalidations["changed"] += 1
        legacy = is_legacy_dir(info.metadata, info.content_type, info.size)  # (then ESTALE: a directory)
        attrs = ns.decode(info.metadata, legacy, info.last_modified)
        self.same_kind(inode, key, attrs)
        ns.apply_info(inode, info, attrs)
        return inode

    def same_kind(self, inode: Inode, key: str, attrs: Attrs) -> None:
        """The kernel never changes an inode's type (it would call the inode
        bad). If the object is now of another kind (another client replaced a
        file by a symlink, or a readdir guessed "file" for a symlink whose
        metadata was not known), the name gets a new inode, and ESTALE makes
        the kernel look the name up again at once and find it."""
        if attrs.kind != inode.attrs.kind:
            self.ns.listings.pop(inode.parent, None)
            self.table.detach(inode)
            raise FsError(errno.ESTALE, f"{key!r} is a {_kind_name(attrs.kind)}, not a {_kind_name(inode.attrs.kind)}: looked up again")

    async def readlink(self, inode: Inode) -> str:
        """A symlink's target (read from its object once)."""
        if not inode.is_link:
            raise FsError(errno.EINVAL, "not a symlink")
        if inode.target is None:
            data = await self.ns.zos.get(self.ns.key(inode), if_match=inode.etag or None)
            inode.target = bytes(data).decode("utf-8", "surrogateescape")
        return inode.target


def _kind_name(kind: int) -> str:
    return {stat.S_IFLNK: "symlink", stat.S_IFDIR: "directory"}.get(kind, "file")
