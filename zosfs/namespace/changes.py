"""Changes to names: mkdir, create, symlink, unlink, rmdir, rename.

Each change is made on the server (or queued, for deletes) and then applied
to the inode table, the listing, the negative answers and the metadata
cache at once, so that this mount never contradicts itself. Rename is
copy-then-delete, copies first, so an interruption leaves duplicates, never
losses. Kept apart from lookup.py and readdir.py because these are the only
operations that modify the bucket's names, and their ordering rules (settle
queued deletes first, copy before delete, refuse locked objects) belong
together.
"""

from __future__ import annotations

import errno
import logging
import stat
import time
from typing import TYPE_CHECKING, Any

import trio

from zosfs.fserror import FsError
from zosfs.namespace import contenttype, hidden, kernel, names
from zosfs.namespace.attributes import DIR_CONTENT_TYPE, explicit_grants
from zosfs.namespace.inodes import Inode
from zosfs.namespace.listing import Entry, Listing
from zosfs.namespace.metadata import Attrs, encode, with_times
from zosfs.zos import WriteOptions, ZosError

if TYPE_CHECKING:
    from zosfs.namespace.tree import Namespace

log = logging.getLogger(__name__)

RENAME_CONCURRENCY = 16
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


class Changes:
    """Creating, deleting and renaming names."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.table = ns.table
        self.zos = ns.zos
        self.metacache = ns.metacache
        self.deletes = ns.deletes

    def _check_new(self, parent: Inode, name: str, is_dir: bool) -> str:
        """The key for a new name; EEXIST if this mount knows the name exists."""
        base = self.ns.child_key_base(parent, name)
        if is_dir:
            names.check_key(base + "/")
        existing = self.table.child(parent.ino, name)
        if existing is not None and not existing.gone:
            raise FsError(errno.EEXIST)
        return base

    def _added(self, parent: Inode, inode: Inode) -> None:
        """Tell the caches about a name this mount created or moved here."""
        ns = self.ns
        ns.changed_at[inode.ino] = time.monotonic()
        ns.negative.discard(parent.ino, inode.name)
        listing = ns.listings.get(parent.ino)
        if listing is not None:
            listing.put(Entry(inode.name, inode.is_dir, inode.size, inode.etag))
        inode.fresh_until = ns.refresh_deadline()
        ns.dir_times.changed(parent)

    def _removed(self, parent: Inode, inode: Inode, name: str) -> None:
        listing = self.ns.listings.get(parent.ino)
        if listing is not None:
            listing.remove(name)
        self.ns.negative.add(parent.ino, name)
        self.ns.dir_times.changed(parent)

    # -- creation ----------------------------------------------------------------

    async def mkdir(self, parent: Inode, name: str, mode: int, uid: int, gid: int) -> Inode:
        """A new directory, stored as a marker object `name/`."""
        key = self._check_new(parent, name, True) + "/"
        t = time.time_ns()
        attrs = Attrs(stat.S_IFDIR | stat.S_IMODE(mode), uid, gid, t, t)
        meta = encode(attrs)
        async with self.ns.writing(key):
            etag = await self.zos.put(key, b"", WriteOptions(metadata=meta, content_type=DIR_CONTENT_TYPE))
        inode = self.table.add(parent, name, attrs)
        inode.remote, inode.etag, inode.meta, inode.meta_known = True, etag, meta, True
        inode.content_type = DIR_CONTENT_TYPE
        inode.tags = {}
        empty = Listing(key)
        empty.has_marker = True
        empty.finish()
        self.ns.listings[inode.ino] = empty
        self.ns.dir_sizes[inode.ino] = 0
        self._added(parent, inode)
        self.ns.announce("create", key, is_dir=True)
        return inode

    async def create_file(self, parent: Inode, name: str, mode: int, uid: int, gid: int) -> Inode:
        """A new, empty file that exists only here until its first upload."""
        key = self._check_new(parent, name, False)
        await self.deletes.settle(key)  # an earlier file of that name must be gone first
        t = time.time_ns()
        inode = self.table.add(parent, name, Attrs(stat.S_IFREG | stat.S_IMODE(mode), uid, gid, t, t))
        inode.meta_known = True
        inode.tags = {}
        inode.content_type = contenttype.guess(name)
        self._added(parent, inode)
        return inode

    async def symlink(self, parent: Inode, name: str, target: str, uid: int, gid: int) -> Inode:
        """A symlink, stored as s3fs does: the target as the body, S_IFLNK in the mode."""
        key = self._check_new(parent, name, False)
        await self.deletes.settle(key)
        t = time.time_ns()
        attrs = Attrs(stat.S_IFLNK | 0o777, uid, gid, t, t)
        meta = encode(attrs)
        body = target.encode("utf-8", "surrogateescape")
        content_type = contenttype.guess(name)
        etag = await self.zos.put(key, body, WriteOptions(metadata=meta, content_type=content_type))
        inode = self.table.add(parent, name, attrs)
        inode.remote, inode.etag, inode.meta, inode.meta_known = True, etag, meta, True
        inode.size, inode.target, inode.tags = len(body), target, {}
        inode.content_type = content_type
        self.ns.remember(key, inode)
        self._added(parent, inode)
        return inode

    # -- deletion -------------------------------------------------------------------

    async def unlink(self, parent: Inode, name: str) -> Inode:
        """Delete a file or symlink. Returns the unlinked inode (which lives on
        while open). The delete itself is queued and batched (see deletes.py),
        except where a refusal must reach the caller: in object-lock buckets,
        and for the mount's first delete or after a refusal (deletes.py)."""
        ns = self.ns
        inode = self.table.child(parent.ino, name)
        if inode is None or inode.gone or not (inode.remote or inode.fresh()):
            inode = await ns.lookup(parent, name)  # (an inode from readdir needs no metadata here)
        if inode.is_dir:
            raise FsError(errno.EISDIR)
        await ns.check_unlocked(inode, "delete")
        key = ns.key(inode)
        if inode.remote and (ns.object_lock or self.deletes.must_wait()):
            await self.deletes.delete_now(key)
            ns.announce("delete", key)
        elif inode.remote:  # announced once the queue has deleted it
            self.deletes.add(key)
        self.metacache.forget(key)
        self.table.detach(inode)
        self._removed(parent, inode, name)
        return inode

    def reverted(self, inode: Inode) -> None:
        """A change of an existing object could not be stored (its data stays
        in staging): the mount shows the object as the bucket holds it again,
        and the kernel forgets the attributes it took from the change (a
        size truncated to 0 would otherwise show for attr_timeout). Its ETag
        is forgotten too: a listing that shows the same ETag would otherwise
        keep the size and times the failed change gave it."""
        inode.fresh_until = 0.0
        inode.etag = ""
        kernel.forget_attrs(inode.ino)

    def unstored(self, inode: Inode) -> None:
        """A new file's data could not be stored and its last handle closed
        (staging keeps the data; the log says where): the bucket has no
        object of it, so the mount shows none either. Else readdir would
        list a name that stat cannot find, and rmdir of its directory would
        answer ENOTEMPTY for as long as the mount runs."""
        if inode.remote or inode.gone:
            return  # (an append stored part of it: the bucket holds that, under its name)
        parent = self.table.get(inode.parent)
        self.table.detach(inode)
        if parent is not None:
            self._removed(parent, inode, inode.name)
            kernel.forget_entry(parent.ino, inode.name)

    async def rmdir(self, parent: Inode, name: str) -> None:
        """Delete an empty directory's marker (ENOTEMPTY if any key is below it;
        with hidden_keys=delete, keys that cannot be names do not count)."""
        inode = await self.ns.lookup(parent, name)
        await self.deletes.settle(prefix=self.table.prefix(inode))  # rm -r: the files first
        if not inode.is_dir:
            raise FsError(errno.ENOTDIR)
        if any(not child.remote or child.writer is not None for child in self.table.children(inode)):
            raise FsError(errno.ENOTEMPTY)
        prefix = self.table.prefix(inode)
        page = await self.zos.list(prefix, None, max_keys=2)
        if any(e.key != prefix for e in page.entries) or page.prefixes:
            if not (self.ns.opts.hidden_keys == "delete" and await hidden.delete_hidden(self.zos, prefix)):
                listing = self.ns.listings.get(inode.ino)
                await hidden.explain_not_empty(self.zos, prefix, looked_empty=listing is not None and not listing.entries)
                raise FsError(errno.ENOTEMPTY)
            hidden_deleted = True
        else:
            hidden_deleted = False
        await self.ns.dir_times.settle(inode)  # no write of its marker may follow the delete
        if page.entries or hidden_deleted:
            await self.deletes.delete_now(prefix)  # the marker, if any (deleting none succeeds)
        if inode.legacy:
            await self.deletes.delete_now(inode.legacy)  # `dir` or `dir_$folder$` too, or the directory stays
            self.ns.dir_meta.pop(inode.legacy, None)
        self.ns.announce("delete", prefix, is_dir=True)
        self.ns.listings.pop(inode.ino, None)
        self.ns.dir_meta.pop(prefix, None)
        self.ns.dir_times.removed(prefix)
        self.table.detach(inode)
        self._removed(parent, inode, name)
        if self.ns.index is not None:
            self.ns.index.forget(prefix)

    # -- rename -----------------------------------------------------------------------

    async def rename(self, src_parent: Inode, src_name: str, dst_parent: Inode, dst_name: str, flags: int) -> Inode:
        """Rename by copy-then-delete (files) or by moving every key below a
        directory, copies first, so an interruption leaves duplicates, never
        losses. The caller flushes unwritten data first."""
        ns = self.ns
        if flags & RENAME_EXCHANGE:
            raise FsError(errno.EINVAL, "RENAME_EXCHANGE is not supported: two objects cannot be swapped atomically")
        src = await ns.lookup(src_parent, src_name)
        dst_base = ns.child_key_base(dst_parent, dst_name)
        await self.deletes.settle(dst_base)  # a deleted file of that name must not outlive the copy
        try:
            dst: Inode | None = await ns.lookup(dst_parent, dst_name)
        except FsError as err:
            if err.errno != errno.ENOENT:
                raise
            dst = None
        if dst is src:
            return src
        if dst is not None and flags & RENAME_NOREPLACE:
            raise FsError(errno.EEXIST)
        await ns.check_unlocked(src, "rename")
        if dst is not None:
            await ns.check_unlocked(dst, "replacing it by rename")
        if src.is_dir:
            if dst is not None and not dst.is_dir:
                raise FsError(errno.ENOTDIR)
            if dst_parent is src or self.table.is_below(dst_parent, src):
                raise FsError(errno.EINVAL, "cannot move a directory into itself")
            if dst is not None:
                await self.rmdir(dst_parent, dst_name)  # ENOTEMPTY unless empty, as POSIX says
            names.check_key(dst_base + "/")
            queued_times = await ns.dir_times.settle_below(src)  # (no marker write to an old key)
            old_prefix = self.table.prefix(src)
            try:
                await self._move_tree(old_prefix, dst_base + "/")
            except BaseException:
                ns.dir_times.requeue(queued_times)  # nothing moved: they are still to be stored
                raise
            ns.listings.pop(src.ino, None)
            if src.legacy:
                await self._move_legacy(src, dst_base + "/")
        else:
            if dst is not None and dst.is_dir:
                raise FsError(errno.EISDIR)
            src_key = ns.key(src)
            if src.remote:
                etag = await self._copy_renamed(src, src_key, dst_base, src_name, dst_name)
                await self.deletes.delete_now(src_key)
                if etag:
                    src.etag = etag
                self.metacache.forget(src_key)
            if dst is not None:
                self.metacache.forget(dst_base)
        src_old_key = ns.key(src)
        self._removed(src_parent, src, src_name)
        if dst is not None:
            self.table.detach(dst)
        ns.announce("rename", src_old_key, dst_base + "/" if src.is_dir else dst_base, is_dir=src.is_dir)
        self.table.move(src, dst_parent, dst_name)
        ns.remember(dst_base, src)
        self._added(dst_parent, src)
        if src.is_dir:
            ns.dir_times.moved(old_prefix, dst_base + "/", queued_times)
            ns.dir_times.changed(src, entries=False)  # a renamed directory's ctime moves
        elif not src.remote:
            src.attrs = with_times(src.attrs, ctime_ns=time.time_ns())  # (its upload carries it)
        return src

    async def _move_legacy(self, src: Inode, dst_marker: str) -> None:
        """A renamed directory whose attributes were on an older-convention
        object (`dir`, `dir_$folder$`): they go to the new name's `dir/`
        marker, as s3fs renames such a directory, and the old object goes."""
        if not src.remote:  # (a `dir/` marker, if there was one, has moved with the tree)
            async with self.ns.writing(dst_marker):
                src.etag = await self.zos.put(dst_marker, b"", WriteOptions(metadata=encode(src.attrs, src.meta),
                                                                             content_type=DIR_CONTENT_TYPE))
            src.remote, src.content_type = True, DIR_CONTENT_TYPE
        await self.deletes.delete_now(src.legacy)
        self.ns.dir_meta.pop(src.legacy, None)
        src.legacy = ""

    async def _move_tree(self, src_prefix: str, dst_prefix: str) -> None:
        await self.deletes.settle(prefix=src_prefix)  # deleted files must not move along
        objects = []
        async for page in self.zos.list_all(src_prefix, None):
            objects += page.entries
        for obj in objects:
            names.check_key(dst_prefix + obj.key[len(src_prefix):])
        if self.ns.object_lock:
            await self.ns.attributes.check_tree_unlocked(objects)
        slots = trio.Semaphore(RENAME_CONCURRENCY)
        failures: list[ZosError] = []

        async def copy_one(obj: Any) -> None:
            async with slots:
                try:
                    # A copy would get the default ACL: carry each object's own.
                    grants = explicit_grants(await self.zos.get_acl(obj.key))
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
        for marker in [k for k in self.ns.dir_meta if k.startswith(src_prefix)]:
            self.ns.dir_meta.pop(marker, None)  # those markers are gone

    async def _copy_renamed(self, src: Inode, src_key: str, dst_key: str, src_name: str, dst_name: str) -> str:
        """Copy a file for rename, with its new ctime in the metadata (a rename
        changes the file's ctime, as on a local disk). Its Content-Type follows
        the new name only if it was the automatic one of the old name
        (contenttype.py)."""
        ns = self.ns
        if not src.meta_known:
            src.fresh_until = 0.0
            await ns.getattr(src)  # the metadata of other tools must come along
        new_type = contenttype.after_rename(src.content_type, src_name, dst_name)
        attrs = with_times(src.attrs, ctime_ns=time.time_ns())
        meta = encode(attrs, src.meta)
        opts = await ns.write_options(src, meta, replacing=False)
        opts.content_type = new_type
        if src.tags is not None:
            opts.tags = dict(src.tags)  # (known, none too: saves the copy a GET of them)
        etag = await self.zos.copy(src_key, dst_key, opts, size=src.size)
        src.attrs, src.meta, src.content_type = attrs, meta, new_type
        src.appendable = False  # a copy that replaces the metadata makes a normal object (FACTS.md)
        return etag

    async def mknod(self, parent: Inode, name: str, mode: int, rdev: int, uid: int, gid: int) -> Inode:
        """A FIFO, socket or device, stored as s3fs's mknod stores it: an empty
        object whose `mode` carries the file type bits. s3fs keeps no device
        number; zosfs keeps it in `rdev` (s3fs ignores it)."""
        key = self._check_new(parent, name, False)
        await self.deletes.settle(key)
        t = time.time_ns()
        attrs = Attrs(mode, uid, gid, t, t)
        meta = encode(attrs)
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            meta["rdev"] = str(rdev)
        content_type = contenttype.guess(name)
        etag = await self.zos.put(key, b"", WriteOptions(metadata=meta, content_type=content_type))
        inode = self.table.add(parent, name, attrs)
        inode.remote, inode.etag, inode.meta, inode.meta_known = True, etag, meta, True
        inode.content_type, inode.tags = content_type, {}
        self.ns.remember(key, inode)
        self._added(parent, inode)
        return inode
