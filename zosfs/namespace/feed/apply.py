"""Acting on other mounts' records: forget exactly the names they list.

For each key a record names, the mount drops the cached listing of the
key's directory, the "no such file" answer for the name, and the
freshness of the name's inode (so the next lookup or stat asks the server),
and tells the kernel to forget the name (`invalidate_entry_async`, which
cannot deadlock against a request in progress). A key below a directory
this mount has not looked into is handled at the deepest directory it
knows. `all` records and lost continuity forget everything.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pyfuse3

from zosfs.namespace.feed.common import FeedStats
from zosfs.namespace.feed.records import Record

if TYPE_CHECKING:
    from zosfs.namespace.inodes import Inode
    from zosfs.namespace.tree import Namespace

log = logging.getLogger(__name__)


class FeedApplier:
    """Invalidates, in one Namespace and the kernel, what records name."""

    def __init__(self, ns: Namespace, stats: FeedStats, *, kernel: bool = True) -> None:
        self.ns = ns
        self.stats = stats
        self.kernel = kernel  # False where no FUSE session runs (tests of the namespace alone)

    def on_records(self, records: list[Record]) -> None:
        """The FeedReader callback."""
        for rec in records:
            if rec.op == "all":
                self.invalidate_all(f"mount {rec.mount} asked for it")
                continue
            for key in rec.keys:
                self.invalidate_key(key, rec.is_dir, changed_only=rec.op == "change")

    def on_resync(self, why: str) -> None:
        """The FeedReader callback for lost continuity."""
        self.invalidate_all(why)

    def _place(self, key: str) -> tuple[Inode, str, Inode | None] | None:
        """(deepest known directory on the key's path, the next name below
        it, that name's inode if known), or None for keys outside this mount."""
        table = self.ns.table
        root = table.root
        root_prefix = table.root_prefix
        if not key.startswith(root_prefix):
            return None
        parts = [p for p in key[len(root_prefix):].split("/") if p]
        if not parts:
            return None
        directory = root
        for depth, name in enumerate(parts):
            child = table.child(directory.ino, name)
            if depth == len(parts) - 1 or child is None or child.gone or not child.is_dir:
                return directory, name, child
            directory = child
        return None  # unreachable: the loop returns at the last part

    def invalidate_key(self, key: str, is_dir: bool = False, *, changed_only: bool = False) -> None:
        """Forget what this mount knows of `key` and of its directory's listing.
        `changed_only`: the name still stands for the same file, whose content
        or metadata changed; the kernel keeps the name and forgets only the
        file's attributes, so the next open costs its one check, not a lookup."""
        place = self._place(key)
        if place is None:
            return
        directory, name, child = place
        ns = self.ns
        ns.listings.pop(directory.ino, None)
        ns.negative.discard(directory.ino, name)
        ns.readdir.prefetched_upto.pop(directory.ino, None)
        if child is not None and child.writer is None:
            child.fresh_until = 0.0
            if child.is_dir:
                ns.listings.pop(child.ino, None)
                ns.dir_meta.pop(ns.table.prefix(child), None)
        self.stats.invalidations += 1
        if changed_only and child is not None and not child.is_dir:
            self._kernel_forget_attrs(child.ino)
        else:
            self._kernel_forget(directory.ino, name)

    def invalidate_all(self, why: str) -> None:
        """Forget every listing, negative answer and attribute (always safe)."""
        ns = self.ns
        log.info("change feed: invalidating everything cached (%s)", why)
        ns.listings.clear()
        ns.negative.clear()
        ns.dir_meta.clear()
        ns.readdir.prefetched_upto.clear()
        names = list(ns.table.by_name)
        root = ns.table.root
        for inode in list(ns.table.by_ino.values()):
            if inode.writer is None and inode is not root:
                inode.fresh_until = 0.0
        self.stats.full_invalidations += 1
        for parent, name in names:
            self._kernel_forget(parent, name)

    def _kernel_forget_attrs(self, ino: int) -> None:
        if not self.kernel:
            return
        try:
            pyfuse3.invalidate_inode(ino, attr_only=True)  # attributes only: takes no lock
        except Exception as err:  # (ENOENT: the kernel holds no such inode any more)
            log.debug("change feed: kernel invalidation of inode %d failed: %s", ino, err)

    def _kernel_forget(self, parent: int, name: str) -> None:
        if not self.kernel:
            return
        try:
            pyfuse3.invalidate_entry_async(parent, name.encode("utf-8", "surrogateescape"), ignore_enoent=True)
        except Exception as err:  # never let a notification failure end the feed
            log.debug("change feed: kernel invalidation of %r failed: %s", name, err)
