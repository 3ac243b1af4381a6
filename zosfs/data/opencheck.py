"""Close-to-open: the one request with which `open()` makes sure it reads
the latest version of an object in the bucket.

NFS's close-to-open, which users know, checks with the server on every
open; so does zosfs by default (`open_revalidate=always`). The check costs
one request and is made to pay for itself:

- a small file (its size as last known up to `OPEN_FETCH`, and up to a
  block) is checked by a ranged GET of its first block, whose headers tell
  everything a HEAD does (the size from Content-Range), and whose body is
  put in the block cache: the first read that follows costs nothing, so
  opening and reading a small file takes one round trip, as a plain GET;
- a larger file is checked by a HEAD (its first block may not be wanted);
- when the cached bytes or the kernel's pages of the version last seen may
  be reused (or the file was empty), the request carries If-None-Match with
  its ETag: an unchanged object answers 304, a few hundred bytes, and
  everything cached is kept. (RGW checks If-None-Match before the range.)
- One case costs two requests: an object that became empty refuses the
  ranged GET (416, without its metadata), and a HEAD follows.

A file this mount has open for writing is not checked: its local state is
newer than the bucket's (see `WritePath`).
"""

from __future__ import annotations

import errno
import logging

from zosfs.data.read import BlockCache
from zosfs.namespace.inodes import Inode
from zosfs.namespace.listing import Entry
from zosfs.namespace.metacache import CachedMeta
from zosfs.namespace.tree import Namespace
from zosfs.zos import ObjectInfo, ZosError

log = logging.getLogger(__name__)

OPEN_FETCH = 1 << 20  # files up to this size are fetched whole by the check of their open


class OpenCheck:
    """Revalidates a file's inode against the bucket when it is opened."""

    def __init__(self, ns: Namespace, reads: BlockCache) -> None:
        self.ns = ns
        self.reads = reads
        self.fetch = min(OPEN_FETCH, reads.block_size)

    async def check(self, inode: Inode, reading: bool = True) -> bool:
        """Bring `inode` up to the object's current version (one request).
        Returns whether the version (ETag or size) differs from what the
        inode held, so that the kernel's copy of its attributes is stale.
        FsError ENOENT if the object was deleted, ESTALE if it is now of
        another kind (the kernel then looks the name up again). Not
        `reading` (an open for writing only: `>>` to a log): a HEAD, so
        that appending never downloads the file."""
        ns = self.ns
        if inode.writer is not None or not inode.remote or inode.gone:
            return False
        key = ns.key(inode)
        before = (inode.etag, inode.size)
        # Conditional only if something of this version may be reused: a
        # 304 then keeps it, and a 200 brings the new version.
        # (An empty file always: its 304 says all, where a ranged GET of an
        # empty object is refused with 416.)
        # Never for attributes only guessed from a listing: the answer must
        # bring the real ones.
        reusable = inode.size == 0 or inode.page_etag == inode.etag or self.reads.cached(key, inode.etag, 0)
        known = inode.etag if inode.etag and inode.meta_known and reusable else None
        try:
            if reading and inode.size <= self.fetch:
                got = await ns.zos.get_first(key, self.fetch, known)
                info, body = got if got is not None else (None, None)
            else:
                info, body = await ns.zos.head_if_changed(key, known), None
        except ZosError as err:
            if err.errno != errno.ENOENT and err.code != "InvalidRange":
                raise
            # Deleted (or emptied under a ranged GET): the usual revalidation
            # answers that, with its bookkeeping (a rare second request).
            inode.fresh_until = 0.0
            await ns.getattr(inode)
            return (inode.etag, inode.size) != before
        if info is None:  # 304: unchanged
            inode.fresh_until = ns.refresh_deadline()
            return False
        self._apply(inode, key, info)
        if body is not None and inode.etag and len(body) == min(info.size, self.reads.block_size):
            # The whole first block: the first read finds it in the cache.
            self.reads.store_first(key, inode.etag, body, whole=len(body) == info.size)
        changed = (inode.etag, inode.size) != before
        if changed:
            log.debug("open: %r changed on the server (%s, %d bytes)", key, inode.etag, inode.size)
        return changed

    def _apply(self, inode: Inode, key: str, info: ObjectInfo) -> None:
        """Take what the server said into the inode, the metadata cache and
        the directory's cached listing (which would otherwise bring the old
        size and ETag back at the next readdir)."""
        ns = self.ns
        ns.lookups.same_kind(inode, key, ns.decode(info.metadata, False, info.last_modified))
        ns.apply_info(inode, info)
        ns.metacache.put(key, info.etag, CachedMeta(info.metadata, info.content_type, info.appendable), info.last_modified)
        listing = ns.listings.get(inode.parent)
        if listing is not None and inode.name in listing.entries:
            listing.put(Entry(inode.name, False, inode.size, inode.etag, inode.last_modified, inode.storage_class))
