"""The FUSE operations: thin handlers over the namespace and the data path.

Each handler decodes its arguments, calls down, and encodes the answer. No
policy lives here (no retries, no caching decisions). Every handler is
wrapped by `handler` (fuse_handler.py), so that only `FUSEError` ever leaves
it: pyfuse3 ends the whole mount on any other exception. The handlers of open
files (fuse_files.py) and of extended attributes (fuse_xattrs.py) are mixins
of `Operations`; this module holds the namespace and directory handlers.
"""

from __future__ import annotations

import errno
import logging
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyfuse3

from zosfs.data.opencheck import OpenCheck
from zosfs.data.read import BlockCache
from zosfs.data.write import WritePath
from zosfs.fserror import FsError
from zosfs.fuse_files import FileHandle, FileOps
from zosfs.fuse_handler import handler
from zosfs.fuse_views import ViewDir, ViewFile, ViewOps
from zosfs.fuse_xattrs import XattrOps
from zosfs.limits import MAX_FILE_SIZE
from zosfs.namespace import names
from zosfs.namespace.inodes import Inode
from zosfs.namespace.listing import Listing
from zosfs.namespace.metadata import atime_of, decode_rdev, with_times
from zosfs.namespace.owners import new_owner
from zosfs.namespace.tree import Namespace
from zosfs.namespace.views import Views
from zosfs.options import Options
from zosfs.xattrs import Xattrs

log = logging.getLogger(__name__)

# Offsets of a directory listing: "." is 0, ".." is 1, the names come after.
DOT_ENTRIES = 2


@dataclass
class DirHandle:
    inode: Inode
    listing: Listing
    names: list[str]
    extra: list[str]  # the views listed in the root (option versions_view=shown, image_view=shown)


class Operations(FileOps, XattrOps, ViewOps, pyfuse3.Operations):
    """pyfuse3 operations of one mount."""

    def __init__(
        self,
        ns: Namespace,
        reads: BlockCache,
        writes: WritePath,
        xattrs: Xattrs,
        opts: Options,
        stats: Callable[[], dict[str, Any]],
        views: Views | None = None,
    ) -> None:
        super().__init__()
        self.ns = ns
        self.reads = reads
        self.writes = writes
        self.xattrs = xattrs
        self.opts = opts
        self.stats = stats
        self.files: dict[int, FileHandle] = {}
        self.dirs: dict[int, DirHandle] = {}
        self._next_fh = 1
        self.fault: Callable[[str], None] | None = None  # tests: raise inside a handler
        self.open_check = OpenCheck(ns, reads)
        self.views = views or Views(opts.uid, opts.gid, time.time())
        self.view_dirs: dict[int, ViewDir] = {}
        self.view_files: dict[int, ViewFile] = {}

    def _fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def _check_fault(self, op: str) -> None:
        if self.fault is not None:
            self.fault(op)

    # -- attributes -------------------------------------------------------------

    def entry(self, inode: Inode) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        a = inode.attrs
        e.st_ino = inode.ino
        e.generation = 0
        e.entry_timeout = self.opts.entry_timeout
        # Attributes guessed from a listing must not be cached by the kernel:
        # the first stat() comes here and fetches the real ones.
        e.attr_timeout = self.opts.attr_timeout if inode.meta_known else 0
        e.st_mode = a.mode
        # 1 for directories too: "unknown", so find does not skip
        # subdirectories by counting links; 0 for a file unlinked while open.
        e.st_nlink = 0 if inode.gone and not inode.is_dir else 1
        e.st_uid = a.uid
        e.st_gid = a.gid
        e.st_rdev = decode_rdev(inode.meta) if stat.S_ISCHR(a.mode) or stat.S_ISBLK(a.mode) else 0
        e.st_size = 0 if inode.is_dir else inode.size
        e.st_blksize = 1 << 20  # cp and friends size their buffers by it: fewer, larger writes
        e.st_blocks = -(-e.st_size // 512)
        e.st_atime_ns = atime_of(a)
        e.st_mtime_ns = a.mtime_ns
        e.st_ctime_ns = a.ctime_ns
        return e

    def negative_entry(self, timeout: float) -> pyfuse3.EntryAttributes:
        """"No such name", cached by the kernel for `timeout` seconds: what is
        left of zosfs's own negative answer, so that the kernel's negative
        dentry never outlives it (a file made elsewhere would stay hidden)."""
        e = pyfuse3.EntryAttributes()
        e.st_ino = 0
        e.entry_timeout = timeout
        return e

    # -- names ----------------------------------------------------------------------

    @handler
    async def lookup(self, parent_ino: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._check_fault("lookup")
        text = names.from_fuse(name)
        if self.views.handles(parent_ino, text):
            return await self.view_lookup(parent_ino, text)
        parent = self.ns.get(parent_ino)
        try:
            inode = await self.ns.lookup(parent, text)
        except FsError as err:
            if err.errno == errno.ENOENT:
                return self.negative_entry(self.ns.negative_ttl(parent, text))
            raise
        inode.lookups += 1
        return self.entry(inode)

    @handler
    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            if self.views.owns(ino):
                self.views.forget(ino, count)
            else:
                self.ns.table.forget(ino, count)

    @handler
    async def getattr(self, ino: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._check_fault("getattr")
        if self.views.owns(ino):
            return self.view_entry(await self.views.getattr(ino))
        return self.entry(await self.ns.getattr(self.ns.get(ino)))

    @handler
    async def setattr(
        self, ino: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields, fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._check_fault("setattr")
        if self.views.owns(ino):
            raise FsError(errno.EROFS, "a view is read-only")
        inode = self.ns.get(ino)
        truncated = False
        if fields.update_size:
            if inode.is_dir:
                raise FsError(errno.EISDIR)
            if attr.st_size > MAX_FILE_SIZE:
                raise FsError(errno.EFBIG, f"{attr.st_size} bytes: an object holds at most {MAX_FILE_SIZE} (5 TiB)")
            await self.ns.check_unlocked(inode, "truncating")
            # (A change of size moves mtime and ctime with the data; to the
            # same size, truncate(2) moves them too, as on a local disk.)
            truncated = attr.st_size == inode.size
            await self.writes.truncate(inode, attr.st_size)
        if fields.update_size and not truncated:
            if not (fields.update_mode or fields.update_uid or fields.update_gid or fields.update_atime
                    or fields.update_mtime):
                return self.entry(inode)  # the upload of the new size carries the new times
        # (A setattr with no field at all is chown(-1, -1), or another change
        # of nothing: on a local disk it moves ctime, and so it does here.)
        a = inode.attrs
        now = time.time_ns()
        mode, uid, gid, mtime, atime = a.mode, a.uid, a.gid, a.mtime_ns, atime_of(a)
        if fields.update_mode:
            mode = stat.S_IFMT(a.mode) | stat.S_IMODE(attr.st_mode)
        if fields.update_uid:
            uid = attr.st_uid
        if fields.update_gid:
            gid = attr.st_gid
        if fields.update_mtime:
            mtime = attr.st_mtime_ns
        elif truncated:
            mtime = now
        if fields.update_atime:
            atime = attr.st_atime_ns
        # Every change of attributes moves ctime, to the same values too
        # (chown to the same ids, touch -d of the time a file has already).
        new = with_times(type(a)(mode, uid, gid, mtime, now), atime_ns=atime)
        if inode.is_dir:
            self.ns.dir_times.set_explicitly(inode)
        writer = inode.writer
        if writer is not None and writer.pending:
            inode.attrs = new
            writer.attrs_changed()  # the pending upload carries them
        else:
            await self.ns.set_attrs(inode, new, persist=True)
            if writer is not None:
                writer.base_etag = inode.etag
        return self.entry(inode)

    @handler
    async def readlink(self, ino: int, ctx: pyfuse3.RequestContext) -> bytes:
        self._check_fault("readlink")
        if self.views.owns(ino):
            raise FsError(errno.EINVAL)
        target = await self.ns.readlink(self.ns.get(ino))
        return target.encode("utf-8", "surrogateescape")

    @handler
    async def symlink(self, parent_ino: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._check_fault("symlink")
        self.views.refuse(parent_ino, names.from_fuse(name))
        parent = self.ns.get(parent_ino)
        _, gid = new_owner(parent.attrs, 0, ctx.gid, is_dir=False)
        inode = await self.ns.symlink(parent, names.from_fuse(name), target.decode("utf-8", "surrogateescape"), ctx.uid, gid)
        inode.lookups += 1
        return self.entry(inode)

    @handler
    async def mkdir(self, parent_ino: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._check_fault("mkdir")
        self.views.refuse(parent_ino, names.from_fuse(name))
        parent = self.ns.get(parent_ino)
        mode, gid = new_owner(parent.attrs, mode & ~ctx.umask, ctx.gid, is_dir=True)
        inode = await self.ns.mkdir(parent, names.from_fuse(name), mode, ctx.uid, gid)
        inode.lookups += 1
        return self.entry(inode)

    @handler
    async def mknod(self, parent_ino: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._check_fault("mknod")
        self.views.refuse(parent_ino, names.from_fuse(name))
        parent = self.ns.get(parent_ino)
        text = names.from_fuse(name)
        mode, gid = new_owner(parent.attrs, mode & ~ctx.umask, ctx.gid, is_dir=False)
        if stat.S_ISREG(mode):
            inode = await self.ns.create_file(parent, text, mode, ctx.uid, gid)
            self.writes.writer(inode)
            await self.writes.release(inode)  # uploads the empty object
        elif stat.S_IFMT(mode) in (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK):
            inode = await self.ns.changes.mknod(parent, text, mode, rdev, ctx.uid, gid)
        else:
            raise FsError(errno.EINVAL, f"mknod of file type {stat.S_IFMT(mode):o}")
        inode.lookups += 1
        return self.entry(inode)

    @handler
    async def unlink(self, parent_ino: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._check_fault("unlink")
        self.views.refuse(parent_ino, names.from_fuse(name))
        parent = self.ns.get(parent_ino)
        text = names.from_fuse(name)
        known = self.ns.table.child(parent.ino, text)
        if known is not None and known.writer is not None:
            await self.writes.discard(known)
        await self.ns.unlink(parent, text)

    @handler
    async def rmdir(self, parent_ino: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._check_fault("rmdir")
        self.views.refuse(parent_ino, names.from_fuse(name))
        await self.ns.rmdir(self.ns.get(parent_ino), names.from_fuse(name))

    @handler
    async def rename(
        self, parent_old: int, name_old: bytes, parent_new: int, name_new: bytes, flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        self._check_fault("rename")
        self.views.refuse(parent_old, names.from_fuse(name_old))
        self.views.refuse(parent_new, names.from_fuse(name_new))
        src_parent, dst_parent = self.ns.get(parent_old), self.ns.get(parent_new)
        src_name, dst_name = names.from_fuse(name_old), names.from_fuse(name_new)
        src = self.ns.table.child(src_parent.ino, src_name)
        if src is not None:
            # What is written must be in the bucket before it can be copied.
            pending = [src] if not src.is_dir else list(self.ns.table.below(src))
            for inode in pending:
                if inode.writer is not None:
                    await self.writes.flush(inode)
            dst = self.ns.table.child(dst_parent.ino, dst_name)
            if dst is not None and dst is not src and dst.writer is not None and not src.is_dir and not flags:
                # The file being replaced is open with unwritten data: like an
                # unlinked file, nothing of it may reach the server any more
                # (its key is about to hold the renamed file).
                await self.writes.discard(dst)
        await self.ns.rename(src_parent, src_name, dst_parent, dst_name, flags)

    @handler
    async def link(self, ino: int, new_parent: int, new_name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._check_fault("link")
        self.views.refuse(new_parent, names.from_fuse(new_name))
        raise FsError(errno.EPERM, "hard links are not supported: an object has exactly one key")

    # -- directories -------------------------------------------------------------------

    @handler
    async def opendir(self, ino: int, ctx: pyfuse3.RequestContext) -> int:
        self._check_fault("opendir")
        if self.views.owns(ino):
            return await self.view_opendir(ino)
        inode = self.ns.get(ino)
        if not inode.is_dir:
            raise FsError(errno.ENOTDIR)
        listing = await self.ns.listing(inode)
        fh = self._fh()
        extra = self.views.shown_at_root() if ino == pyfuse3.ROOT_INODE else []
        self.dirs[fh] = DirHandle(inode, listing, list(listing.names), [n for n in extra if n not in listing.entries])
        inode.opens += 1
        return fh

    @handler
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        self._check_fault("readdir")
        if fh in self.view_dirs:
            return self.view_readdir(self.view_dirs[fh], start_id, token)
        dh = self.dirs[fh]
        # "." and ".." first, as a local disk lists them (`ls -a`); the kernel
        # takes no lookup reference for them (fuse_direntplus_link).
        if start_id == 0 and not pyfuse3.readdir_reply(token, b".", self.entry(dh.inode), 1):
            return
        if start_id <= 1:
            parent = self.ns.table.get(dh.inode.parent) or dh.inode
            if not pyfuse3.readdir_reply(token, b"..", self.entry(parent), DOT_ENTRIES):
                return
        i = max(start_id - DOT_ENTRIES, 0)
        while i < len(dh.names):
            name = dh.names[i]
            entry = dh.listing.entries.get(name)
            if entry is None:  # removed since the listing was taken
                i += 1
                continue
            try:
                inode = await self.ns.entry_inode(dh.inode, entry)
            except FsError as err:
                if err.errno != errno.ENOENT:
                    raise
                i += 1
                continue
            if not pyfuse3.readdir_reply(token, name.encode("utf-8", "surrogateescape"), self.entry(inode),
                                         i + 1 + DOT_ENTRIES):
                self.ns.table.release(inode)
                break
            inode.lookups += 1
            i += 1
        else:
            await self._readdir_views(dh, max(start_id - DOT_ENTRIES - len(dh.names), 0), token)

    async def _readdir_views(self, dh: DirHandle, first: int, token: pyfuse3.ReaddirToken) -> None:
        """The views a root listing shows, after the bucket's names."""
        for j in range(first, len(dh.extra)):
            entry = await self.view_lookup(pyfuse3.ROOT_INODE, dh.extra[j])
            if not pyfuse3.readdir_reply(token, dh.extra[j].encode(), entry, len(dh.names) + j + 1 + DOT_ENTRIES):
                self.views.forget(entry.st_ino, 1)
                return

    @handler
    async def releasedir(self, fh: int) -> None:
        if fh in self.view_dirs:
            return self.view_releasedir(fh)
        dh = self.dirs.pop(fh)
        dh.inode.opens -= 1
        self.ns.table.release(dh.inode)
        self.ns.metacache.flush()

    @handler
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return None

    @handler
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        self._check_fault("statfs")
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        # An object store has no fixed size; report 1 PiB free so that df and
        # installers that check for space are content.
        s.f_blocks = s.f_bfree = s.f_bavail = (1 << 50) // 4096
        s.f_files = s.f_ffree = s.f_favail = 1 << 32
        s.f_namemax = names.NAME_MAX
        return s
