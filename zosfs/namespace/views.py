"""Read-only views under reserved names at the mount root: the inode table of
virtual nodes, and the dispatch to the view that fills them.

Two views exist: `.zos-versions/` (every version of every file, see
`versions.py`) and `.zos-process/SPEC/` (files as ZOS's image processing
makes them, see `imageview.py`). Their nodes are not objects of the bucket
and never enter the namespace's inode table: they have inode numbers of
their own (from `VIEW_INO_BASE` up), and the FUSE handlers ask `Views.owns`
before anything else. A view's name is not listed in the root directory
unless its option says `shown` (so `find` and `rsync` of the mount never
walk into it), but a lookup of the name always works; `off` leaves the name
to the bucket. Nothing in a view can be written: every change is EROFS.
"""

from __future__ import annotations

import errno
import stat
import time
from dataclasses import dataclass, field
from typing import Any

from zosfs.fserror import FsError

VIEW_INO_BASE = 1 << 56  # far above any number the namespace's table hands out
ROOT_INO = 1
DIR_MODE = stat.S_IFDIR | 0o555
FILE_MODE = stat.S_IFREG | 0o444
LISTING_TTL = 1.0  # seconds a view's directory listing answers lookups


@dataclass
class VNode:
    """One directory or file of a view."""

    ino: int
    parent: int
    name: str
    view: View
    is_dir: bool
    size: int = 0
    mtime: float = 0.0
    size_known: bool = True  # False: the size is found out on getattr (image view)
    data: dict[str, Any] = field(default_factory=dict)  # what the view needs to list or read it
    lookups: int = 0
    opens: int = 0
    listing: dict[str, dict[str, Any]] | None = None  # child name -> what makes the child
    listed_at: float = 0.0

    @property
    def mode(self) -> int:
        return DIR_MODE if self.is_dir else FILE_MODE


class View:
    """What each view implements: its children, and the bytes of its files."""

    name = ""
    # Whether reads bypass the kernel's page cache and its idea of the size
    # (a processed image may change size between a lookup and a read).
    direct_io = False
    # Whether a file's bytes never change (a version), so the kernel may keep its pages.
    immutable = False

    async def list(self, node: VNode) -> dict[str, dict[str, Any]]:
        """Every child of a directory: name -> the child's fields
        (`is_dir`, `size`, `mtime`, `size_known`, `data`)."""
        raise NotImplementedError

    async def find(self, node: VNode, name: str) -> dict[str, Any] | None:
        """One child without listing the whole directory (None: no such name).
        By default, from the listing."""
        return (await self.list(node)).get(name)

    async def refresh(self, node: VNode) -> None:
        """Bring a file's size up to date (getattr). By default nothing."""

    async def open(self, node: VNode) -> Any:
        """What a handle of the file holds while open."""
        return None

    async def read(self, node: VNode, held: Any, off: int, size: int) -> bytes | bytearray | memoryview:
        raise NotImplementedError


class Views:
    """The virtual nodes of every view of one mount."""

    def __init__(self, uid: int, gid: int, start: float) -> None:
        self.uid, self.gid, self.start = uid, gid, start
        self.roots: dict[str, tuple[View, bool]] = {}  # name at the root -> (view, listed in the root)
        self.nodes: dict[int, VNode] = {}
        self.by_name: dict[tuple[int, str], VNode] = {}
        self._next = VIEW_INO_BASE

    def add_view(self, view: View, shown: bool) -> None:
        self.roots[view.name] = (view, shown)

    def owns(self, ino: int) -> bool:
        return ino >= VIEW_INO_BASE

    def handles(self, parent_ino: int, name: str) -> bool:
        """Whether the name in that directory belongs to a view."""
        return parent_ino >= VIEW_INO_BASE or (parent_ino == ROOT_INO and name in self.roots)

    def shown_at_root(self) -> list[str]:
        return [name for name, (_, shown) in self.roots.items() if shown]

    def refuse(self, parent_ino: int, name: str) -> None:
        """EROFS for a change of a name in a view (or of a view's own name)."""
        if self.handles(parent_ino, name):
            raise FsError(errno.EROFS, f"{name!r} is in a read-only view")

    def get(self, ino: int) -> VNode:
        node = self.nodes.get(ino)
        if node is None:
            raise FsError(errno.ESTALE, f"view inode {ino} is not known (forgotten)")
        return node

    def node_for(self, parent: int, name: str, view: View, fields: dict[str, Any]) -> VNode:
        """The node of a name, the one already known if its kind is unchanged."""
        known = self.by_name.get((parent, name))
        if known is not None and known.is_dir == fields.get("is_dir", False):
            # A listing does not know an image's processed size: keep one found out.
            keep_size = not fields.get("size_known", True) and known.size_known
            for attr in ("size", "mtime", "size_known", "data"):
                if attr in fields and not (keep_size and attr in ("size", "size_known")):
                    setattr(known, attr, fields[attr])
            return known
        node = VNode(self._next, parent, name, view, **fields)
        self._next += 1
        self.nodes[node.ino] = node
        self.by_name[(parent, name)] = node
        return node

    async def lookup(self, parent_ino: int, name: str) -> VNode:
        """The node of a name (ENOENT if the view has no such name); counts a lookup."""
        if parent_ino == ROOT_INO:
            view, _ = self.roots[name]
            node = self.node_for(ROOT_INO, name, view, {"is_dir": True, "mtime": self.start, "data": {"root": True}})
        else:
            parent = self.get(parent_ino)
            if not parent.is_dir:
                raise FsError(errno.ENOTDIR)
            fresh = parent.listing is not None and time.monotonic() - parent.listed_at < LISTING_TTL
            fields = parent.listing.get(name) if fresh and parent.listing is not None else None
            if fields is None:
                fields = await parent.view.find(parent, name)
            if fields is None:
                raise FsError(errno.ENOENT)
            node = self.node_for(parent.ino, name, parent.view, fields)
            if not node.is_dir:
                await node.view.refresh(node)
        node.lookups += 1
        return node

    async def getattr(self, ino: int) -> VNode:
        node = self.get(ino)
        if not node.is_dir:
            await node.view.refresh(node)
        return node

    async def listdir(self, ino: int) -> list[VNode]:
        """The children of a view's directory, in name order (lookups not counted)."""
        parent = self.get(ino)
        if not parent.is_dir:
            raise FsError(errno.ENOTDIR)
        parent.listing = await parent.view.list(parent)
        parent.listed_at = time.monotonic()
        return [self.node_for(parent.ino, name, parent.view, fields) for name, fields in sorted(parent.listing.items())]

    async def open(self, ino: int, writable: bool) -> tuple[VNode, Any]:
        node = self.get(ino)
        if writable:
            raise FsError(errno.EROFS, f"{node.name!r} is in a read-only view")
        if node.is_dir:
            raise FsError(errno.EISDIR)
        held = await node.view.open(node)
        node.opens += 1
        return node, held

    async def read(self, node: VNode, held: Any, off: int, size: int) -> bytes | bytearray | memoryview:
        return await node.view.read(node, held, off, size)

    def close(self, node: VNode) -> None:
        node.opens -= 1
        self._drop_if_unused(node)

    def forget(self, ino: int, count: int) -> None:
        node = self.nodes.get(ino)
        if node is not None:
            node.lookups = max(0, node.lookups - count)
            self._drop_if_unused(node)

    def drop_unused(self, nodes: list[VNode]) -> None:
        """Forget the nodes a listing made that the kernel did not take."""
        for node in nodes:
            self._drop_if_unused(node)

    def _drop_if_unused(self, node: VNode) -> None:
        if node.lookups or node.opens:
            return
        self.nodes.pop(node.ino, None)
        if self.by_name.get((node.parent, node.name)) is node:
            del self.by_name[(node.parent, node.name)]

