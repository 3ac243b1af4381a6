"""Inodes: the kernel's handles on names, with their cached attributes.

An inode stands for one name in one directory. Its object key is derived from
its chain of parents, so renaming a directory moves everything below it by
changing one inode. Inodes live while the kernel holds a lookup reference
(`lookups`), a file handle is open (`opens`), unflushed data waits
(`writer`), or a child still needs it to make its key (`nchildren`); `forget`
drops the rest.

Everything here runs in the trio thread and never awaits: no locks needed.
"""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from typing import Any

from zosfs.namespace.metadata import Attrs

ROOT_INO = 1  # pyfuse3.ROOT_INODE


class Inode:
    """One file, directory or symlink as the kernel knows it."""

    __slots__ = (
        "ino", "parent", "name", "attrs", "size", "etag", "remote", "meta", "meta_known",
        "content_type", "storage_class", "appendable", "last_modified", "fresh_until",
        "lookups", "opens", "nchildren", "target", "writer", "gone", "tags", "acl", "page_etag", "legacy",
        "__weakref__",
    )

    def __init__(self, ino: int, parent: int, name: str, attrs: Attrs) -> None:
        self.ino = ino
        self.parent = parent
        self.name = name
        self.attrs = attrs
        self.size = 0
        self.etag = ""  # of the object as last seen on the server; "" if none
        self.remote = False  # an object (or, for a directory, a marker) exists
        self.meta: dict[str, str] = {}  # all of the object's metadata, to keep what we don't own
        self.meta_known = False  # metadata read from the object (not guessed from a listing)
        self.content_type: str | None = None
        self.storage_class = "STANDARD"
        self.appendable = False
        self.last_modified = 0.0
        self.fresh_until = 0.0  # monotonic time until which the attributes may be reused
        self.lookups = 0
        self.opens = 0
        self.nchildren = 0  # named children in the table: a parent lives while they do
        self.target: str | None = None  # symlink target, once known
        self.writer: Any = None  # the data path's state while data is unflushed
        self.gone = False  # unlinked or replaced; kept only until the kernel forgets it
        self.tags: dict[str, str] | None = None  # None: not known yet
        self.acl: Any = None  # the object's ACL once read (None: not known yet)
        self.page_etag = ""  # ETag of the version whose pages the kernel may hold
        # A directory's older-convention object (`dir` or `dir_$folder$`), if
        # one is known: its attributes when there is no `dir/` marker.
        self.legacy = ""

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.attrs.mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.attrs.mode)

    def fresh(self) -> bool:
        return self.writer is not None or time.monotonic() < self.fresh_until

    def __repr__(self) -> str:
        return f"<Inode {self.ino} {self.name!r} mode={self.attrs.mode:o} size={self.size}>"


class InodeTable:
    """All inodes by number and by (parent, name)."""

    def __init__(self, root_prefix: str, root_attrs: Attrs) -> None:
        self.root_prefix = root_prefix
        self.by_ino: dict[int, Inode] = {}
        self.by_name: dict[tuple[int, str], Inode] = {}
        # Directory inode -> key prefix. Every entry of a large listing needs
        # its directory's prefix; walking the parent chain each time showed up
        # in profiles. Cleared whenever a directory moves.
        self._prefixes: dict[int, str] = {}
        self._next = ROOT_INO + 1
        root = Inode(ROOT_INO, ROOT_INO, "", root_attrs)
        root.lookups = 1  # the kernel never forgets the root
        root.fresh_until = float("inf")
        self.by_ino[ROOT_INO] = root

    @property
    def root(self) -> Inode:
        return self.by_ino[ROOT_INO]

    def get(self, ino: int) -> Inode | None:
        return self.by_ino.get(ino)

    def child(self, parent: int, name: str) -> Inode | None:
        return self.by_name.get((parent, name))

    def add(self, parent: Inode, name: str, attrs: Attrs) -> Inode:
        """A new inode for `name` in `parent`; an old one under that name is detached."""
        old = self.by_name.get((parent.ino, name))
        if old is not None:
            self.detach(old)
        inode = Inode(self._next, parent.ino, name, attrs)
        self._next += 1
        self.by_ino[inode.ino] = inode
        self._link(inode, parent, name)
        return inode

    def _link(self, inode: Inode, parent: Inode, name: str) -> None:
        inode.parent = parent.ino
        inode.name = name
        self.by_name[(parent.ino, name)] = inode
        parent.nchildren += 1

    def _unlink(self, inode: Inode) -> None:
        """Forget an inode's place: its name entry and its hold on its parent."""
        if self.by_name.get((inode.parent, inode.name)) is inode:
            del self.by_name[(inode.parent, inode.name)]
        parent = self.by_ino.get(inode.parent)
        if parent is not None and parent is not inode:
            parent.nchildren -= 1
            self._drop_if_unused(parent)

    def detach(self, inode: Inode) -> None:
        """Take an inode out of the namespace (unlinked, replaced, or found to be
        stale). It stays reachable by number until the kernel forgets it, and
        keeps its parent alive so that its key can still be computed."""
        inode.gone = True
        if self.by_name.get((inode.parent, inode.name)) is inode:
            del self.by_name[(inode.parent, inode.name)]
        self._drop_if_unused(inode)

    def move(self, inode: Inode, parent: Inode, name: str) -> None:
        """Rename: everything below a directory moves with it, since keys are
        derived from the parent chain."""
        old = self.by_name.get((parent.ino, name))
        if old is not None and old is not inode:
            self.detach(old)
        parent.nchildren += 1  # before _unlink, so a shared parent is never dropped in between
        self._unlink(inode)
        parent.nchildren -= 1
        self._link(inode, parent, name)
        if inode.is_dir:
            self._prefixes.clear()

    def forget(self, ino: int, count: int) -> None:
        inode = self.by_ino.get(ino)
        if inode is None or ino == ROOT_INO:
            return
        inode.lookups = max(0, inode.lookups - count)
        self._drop_if_unused(inode)

    def release(self, inode: Inode) -> None:
        """Called when a handle closes or a writer finishes."""
        self._drop_if_unused(inode)

    def _drop_if_unused(self, inode: Inode) -> None:
        if inode.lookups or inode.opens or inode.nchildren or inode.writer is not None or inode.ino == ROOT_INO:
            return
        if self.by_ino.get(inode.ino) is inode:
            del self.by_ino[inode.ino]
            self._prefixes.pop(inode.ino, None)
            self._unlink(inode)

    def prefix(self, directory: Inode) -> str:
        """The key prefix of a directory ('' or 'a/b/')."""
        known = self._prefixes.get(directory.ino)
        if known is not None:
            return known
        parts = []
        node = directory
        while node.ino != ROOT_INO:
            parts.append(node.name)
            parent = self.by_ino.get(node.parent)
            if parent is None:
                raise LookupError(f"inode {node.ino} has lost its parent")
            node = parent
        prefix = self.root_prefix + "".join(f"{p}/" for p in reversed(parts))
        if not directory.gone:
            self._prefixes[directory.ino] = prefix
        return prefix

    def key(self, inode: Inode) -> str:
        """The object key: 'a/b/file' for files and symlinks, 'a/b/dir/' for directories."""
        if inode.ino == ROOT_INO:
            return self.root_prefix
        parent = self.by_ino.get(inode.parent)
        if parent is None:
            raise LookupError(f"inode {inode.ino} has lost its parent")
        base = self.prefix(parent) + inode.name
        return base + "/" if inode.is_dir else base

    def is_below(self, inode: Inode, directory: Inode) -> bool:
        node = inode
        while node.ino != ROOT_INO:
            if node.parent == directory.ino:
                return True
            parent = self.by_ino.get(node.parent)
            if parent is None:
                return False
            node = parent
        return False

    def below(self, directory: Inode) -> Iterator[Inode]:
        """Known inodes anywhere below a directory."""
        for inode in list(self.by_ino.values()):
            if not inode.gone and self.is_below(inode, directory):
                yield inode

    def children(self, directory: Inode) -> Iterator[Inode]:
        for (parent, _), inode in list(self.by_name.items()):
            if parent == directory.ino and not inode.gone:
                yield inode
