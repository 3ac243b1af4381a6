"""FUSE answers for the read-only views (`zosfs.namespace.views`): their
entries, directory handles and file handles.

A mixin of `Operations`: each handler of fuse_ops.py and fuse_files.py asks
`views.owns` (or `views.handles` for a name) first and comes here; nothing
else of the mount sees a view's inode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyfuse3

from zosfs.namespace.views import ROOT_INO, VNode, Views

if TYPE_CHECKING:
    from zosfs.options import Options

# A view changes when the bucket does (a new version, a changed source
# image): the kernel keeps what it was told for a second at most.
VIEW_TIMEOUT = 1.0


@dataclass
class ViewDir:
    node: VNode
    children: list[VNode]


@dataclass
class ViewFile:
    node: VNode
    held: Any


class ViewOps:
    """Entries and handles of view nodes, for `Operations`."""

    views: Views
    opts: Options
    view_dirs: dict[int, ViewDir]
    view_files: dict[int, ViewFile]

    # (`_fh` is Operations' own.)

    def view_entry(self, node: VNode) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = node.ino
        e.generation = 0
        e.entry_timeout = VIEW_TIMEOUT
        # An image whose processed size is not known yet: the kernel asks again.
        e.attr_timeout = VIEW_TIMEOUT if node.size_known else 0
        e.st_mode = node.mode
        e.st_nlink = 1
        e.st_uid = self.views.uid
        e.st_gid = self.views.gid
        e.st_size = 0 if node.is_dir else node.size
        e.st_blksize = 1 << 20
        e.st_blocks = -(-e.st_size // 512)
        e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = int(node.mtime * 1e9)
        return e

    async def view_lookup(self, parent_ino: int, name: str) -> pyfuse3.EntryAttributes:
        return self.view_entry(await self.views.lookup(parent_ino, name))

    async def view_opendir(self, ino: int) -> int:
        children = await self.views.listdir(ino)
        node = self.views.get(ino)
        node.opens += 1
        fh = self._fh()  # type: ignore[attr-defined]
        self.view_dirs[fh] = ViewDir(node, children)
        return fh

    def view_readdir(self, handle: ViewDir, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        node = handle.node
        if start_id == 0 and not pyfuse3.readdir_reply(token, b".", self.view_entry(node), 1):
            return
        if start_id <= 1:
            parent = self.views.nodes.get(node.parent)
            entry = self.view_entry(parent) if parent is not None else self.view_entry(node)
            if node.parent == ROOT_INO:
                entry.st_ino = ROOT_INO
            if not pyfuse3.readdir_reply(token, b"..", entry, 2):
                return
        for i in range(max(start_id - 2, 0), len(handle.children)):
            child = handle.children[i]
            if child.ino not in self.views.nodes:  # forgotten since the listing: make it again
                child = self.views.node_for(node.ino, child.name, child.view,
                                         {"is_dir": child.is_dir, "size": child.size, "mtime": child.mtime,
                                          "size_known": child.size_known, "data": child.data})
            if not pyfuse3.readdir_reply(token, child.name.encode("utf-8", "surrogateescape"),
                                         self.view_entry(child), i + 3):
                return
            child.lookups += 1

    def view_releasedir(self, fh: int) -> None:
        handle = self.view_dirs.pop(fh)
        self.views.drop_unused(handle.children)
        self.views.close(handle.node)

    async def view_open(self, ino: int, writable: bool) -> pyfuse3.FileInfo:
        node, held = await self.views.open(ino, writable)
        fh = self._fh()  # type: ignore[attr-defined]
        self.view_files[fh] = ViewFile(node, held)
        fi = pyfuse3.FileInfo(fh=fh)
        fi.keep_cache = node.view.immutable
        fi.direct_io = node.view.direct_io
        return fi

    async def view_read(self, fh: int, off: int, size: int) -> bytes | bytearray | memoryview:
        handle = self.view_files[fh]
        return await self.views.read(handle.node, handle.held, off, size)

    def view_release(self, fh: int) -> None:
        handle = self.view_files.pop(fh)
        self.views.close(handle.node)
