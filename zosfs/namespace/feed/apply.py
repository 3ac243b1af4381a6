"""Acting on other mounts' records: forget exactly the names they list.

For each key a record names, the mount drops the cached listing of the
key's directory, the "no such file" answer for the name, and the
freshness of the name's inode (so the next lookup or stat asks the server),
and tells the kernel to forget the name (`invalidate_entry_async`, which
cannot deadlock against a request in progress). A key below a directory
this mount has not looked into is handled at the deepest directory it
knows. `all` records and lost continuity forget everything.

A `change` of a file that carries the stored version (`FileVersion`) is
taken into the file's inode instead, if this mount knows the file: its
attributes are then current, so the kernel's next lookup and stat of it
cost no request, and its directory's cached listing is updated rather than
dropped. It is a hint: an open still checks the ETag with the server (one
request, which also brings the first block), so a record that is late or
out of order (records of different mounts are in append order, not in the
order of their uploads) can make a stat show an older version for at most
attr_timeout, never make an open read one.
"""

from __future__ import annotations

import logging
import stat
import time
from typing import TYPE_CHECKING

from zosfs.namespace import kernel
from zosfs.namespace.feed.common import FeedStats
from zosfs.namespace.feed.records import FileVersion, Record
from zosfs.namespace.listing import Entry

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
        # While a batch of records is applied: the kernel notifications it
        # needs, each once (see _notify_batch).
        self._entries: dict[tuple[int, str], None] | None = None
        self._attrs: dict[int, None] | None = None
        self.notifications = 0  # sent to the kernel (for tests)

    def on_records(self, records: list[Record]) -> None:
        """The FeedReader callback."""
        self._entries, self._attrs = {}, {}
        try:
            self._apply(records)
        finally:
            self._notify_batch()

    def _notify_batch(self) -> None:
        """Send the batch's kernel notifications, each (parent, name) and
        inode once. They are queued and sent later by pyfuse3's notify
        thread: hundreds of copies of one (a directory this mount does not
        know yet, named by every record of the files below it) would still
        be arriving after the mount looked the directory up, and make the
        kernel forget it, and everything below it, again and again."""
        entries, attrs = self._entries or {}, self._attrs or {}
        self._entries = self._attrs = None
        for ino in attrs:
            self._kernel_forget_attrs(ino)
        for parent, name in entries:
            self._kernel_forget(parent, name)

    def _apply(self, records: list[Record]) -> None:
        for rec in records:
            if rec.op == "all":
                self.invalidate_all(f"mount {rec.mount} asked for it")
                continue
            if rec.attrs is not None and rec.op == "change" and len(rec.keys) == 1 and not rec.is_dir:
                if self.take_version(rec.keys[0], rec.attrs, rec.time):
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
        ns.heard.pop(key, None)
        if is_dir:
            for below in [k for k in ns.heard if k.startswith(key)]:
                ns.heard.pop(below, None)
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

    def take_version(self, key: str, version: FileVersion, when: float) -> bool:
        """Take a version another mount stored into the inode of a regular
        file this mount knows; False (invalidate instead) if it does not
        know one, or the name is no longer such a file here (a local writer,
        another kind: the usual path sorts those out)."""
        place = self._place(key)
        if place is None:
            return False
        directory, name, child = place
        ns = self.ns
        attrs = ns.decode(version.metadata, False, when)
        if not stat.S_ISREG(attrs.mode):
            return False
        direct = ns.table.prefix(directory) + name == key  # (not below a directory unknown here)
        if direct:
            ns.heard[key] = (version, when, time.monotonic())
        if child is None and direct:
            # Not known here (or forgotten by the kernel): the name's next
            # lookup takes the version instead of asking the server.
            ns.negative.discard(directory.ino, name)
            listing = ns.listings.get(directory.ino)
            if listing is not None:
                listing.put(Entry(name, False, version.size, version.etag, when))
            self.stats.invalidations += 1
            self.stats.versions_taken += 1
            self._kernel_forget(directory.ino, name)  # (a "no such file" the kernel may hold)
            return True
        if child is None or child.gone or child.is_dir or child.writer is not None or not child.meta_known:
            return False
        if not stat.S_ISREG(child.attrs.mode):
            return False
        ns.apply_version(child, version, attrs, when)
        ns.negative.discard(directory.ino, name)
        listing = ns.listings.get(directory.ino)
        if listing is not None and name in listing.entries:
            listing.put(Entry(name, False, child.size, child.etag, child.last_modified, child.storage_class))
        self.stats.invalidations += 1
        self.stats.versions_taken += 1
        self._kernel_forget_attrs(child.ino)  # the kernel asks getattr, which answers from the inode
        return True

    def invalidate_all(self, why: str) -> None:
        """Forget every listing, negative answer and attribute (always safe)."""
        ns = self.ns
        log.info("change feed: invalidating everything cached (%s)", why)
        ns.listings.clear()
        ns.negative.clear()
        ns.heard.clear()
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
        if self._attrs is not None:
            self._attrs[ino] = None
            return
        if not self.kernel:
            return
        self.notifications += 1
        kernel.forget_attrs(ino)

    def _kernel_forget(self, parent: int, name: str) -> None:
        if self._entries is not None:
            self._entries[(parent, name)] = None
            return
        if not self.kernel:
            return
        self.notifications += 1
        kernel.forget_entry(parent, name)
