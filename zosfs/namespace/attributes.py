"""An object's attributes beyond its name: changing them, and keeping them.

Every way of writing an object on ZOS (append, PUT, multipart upload, copy)
replaces some of what the object carries besides its bytes: metadata,
content type, tags, ACL. This module says what each write must send so that
nothing is lost (`write_options`), rewrites metadata in place (`set_attrs`:
a zero-length append keeps an object appendable, a self-copy otherwise),
and refuses changes to objects under retention or legal hold. Kept apart
from the name operations because the data path needs it on every upload.
"""

from __future__ import annotations

import errno
import time
from typing import TYPE_CHECKING, Any

import trio

from zosfs.fserror import FsError
from zosfs.namespace import contenttype
from zosfs.namespace.inodes import ROOT_INO, Inode
from zosfs.namespace.metadata import Attrs, encode
from zosfs.zos import Acl, Grant, WriteOptions, ZosError, next_append_etag

if TYPE_CHECKING:
    from zosfs.namespace.tree import Namespace

DIR_CONTENT_TYPE = "application/x-directory"


class ObjectAttrs:
    """Metadata, tags, ACL and object-lock checks of the namespace's objects."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.zos = ns.zos

    async def write_options(self, inode: Inode, metadata: dict[str, str], *, replacing: bool) -> WriteOptions:
        """What a write of this object must carry so that nothing is lost.

        An append, PUT or multipart upload replaces metadata, content type,
        tags and ACL, so it (`replacing`) sends them all; a copy keeps the tags
        by itself but resets the ACL, so a copy sends the ACL. Every write
        carries the file's Content-Type (see contenttype.py): the automatic
        one of its name unless one was set on purpose.
        """
        key = self.ns.key(inode)
        if not inode.is_dir and contenttype.is_automatic(inode.content_type, inode.name):
            inode.content_type = contenttype.guess(inode.name)
        tags = None
        if replacing:
            if inode.tags is None:
                inode.tags = await self.zos.get_tags(key) if inode.remote else {}
            tags = inode.tags or None
        acl = await self.acl(inode)
        grants = None if acl is None or is_default_acl(acl) else acl.grants
        return WriteOptions(metadata=metadata, content_type=inode.content_type, tags=tags, grants=grants)

    async def acl(self, inode: Inode) -> Acl | None:
        """The object's ACL (read once, then kept); None for objects not uploaded."""
        if inode.acl is None and inode.remote:
            inode.acl = await self.zos.get_acl(self.ns.key(inode))
        return inode.acl

    async def check_unlocked(self, inode: Inode, action: str) -> None:
        """EPERM if the object is under retention or legal hold.

        In an object-lock bucket a plain DELETE or PUT would succeed (it adds
        a delete marker or a new version, and the locked version stays), so
        a user would believe a protected file gone or replaced. zosfs refuses
        instead. The lock can change without the ETag changing: always asks.
        """
        if not self.ns.object_lock or not inode.remote or inode.is_dir:
            return
        key = self.ns.key(inode)
        info = await self.zos.head(key)
        reasons = []
        if info.legal_hold:
            reasons.append("a legal hold")
        if info.lock_until and info.lock_until > time.time():
            until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.lock_until))
            reasons.append(f"{info.lock_mode or 'object-lock'} retention until {until}")
        if reasons:
            raise FsError(errno.EPERM, f"{key!r} is under {' and '.join(reasons)}: {action} refused, the object is unchanged")

    async def check_tree_unlocked(self, objects: list[Any]) -> None:
        """Before moving a directory in an object-lock bucket: none of its
        objects may be locked, or the move would leave them behind."""
        locked: list[str] = []

        async def check(key: str) -> None:
            info = await self.zos.head(key)
            if info.legal_hold or (info.lock_until and info.lock_until > time.time()):
                locked.append(key)

        async with trio.open_nursery() as nursery:
            for obj in objects:
                nursery.start_soon(check, obj.key)
        if locked:
            raise FsError(errno.EPERM, f"{len(locked)} object(s) below are under retention or legal hold "
                          f"(first: {sorted(locked)[0]!r}): rename refused, nothing was moved")

    async def set_attrs(self, inode: Inode, attrs: Attrs, *, persist: bool) -> None:
        """Change mode/owner/times; with `persist`, rewrite the object's metadata
        now (otherwise the next upload of pending data carries them). If the
        server refuses, the inode keeps the attributes it had (a refused
        `touch -d` must not show its time until the attributes expire)."""
        before, inode.attrs = inode.attrs, attrs
        if not persist:
            return
        key = self.ns.key(inode)
        if inode.is_dir and inode.ino == ROOT_INO and not key:
            return  # the bucket's root has no marker to hold metadata
        if not inode.is_dir and not inode.remote:
            return
        legacy = inode.legacy if inode.is_dir else ""
        if legacy:
            inode.content_type = DIR_CONTENT_TYPE  # (not the older object's)
        try:
            async with self.ns.writing(key):
                latest = inode.attrs  # (another write of it may have gone first)
                if inode.is_dir:
                    self.ns.dir_times.storing(key, latest.mtime_ns, latest.ctime_ns)
                await self._rewrite(inode, key, latest)
        except BaseException:
            if inode.attrs is attrs:  # (unless a later change replaced them)
                inode.attrs = before
            raise
        self.ns.remember(key, inode)
        if legacy:
            await self.drop_legacy(inode, legacy)

    async def drop_legacy(self, inode: Inode, legacy: str) -> None:
        """The directory's attributes are on its `dir/` marker now: its older
        object (`dir`, `dir_$folder$`) goes, as s3fs replaces it."""
        try:
            await self.zos.delete(legacy)
        except ZosError as err:
            if err.errno != errno.ENOENT:
                raise
        inode.legacy = ""
        self.ns.dir_meta.pop(legacy, None)
        listing = self.ns.listings.get(inode.parent)
        entry = listing.entries.get(inode.name) if listing is not None else None
        if entry is not None:
            entry.legacy = ""

    async def _rewrite(self, inode: Inode, key: str, attrs: Attrs) -> None:
        base = inode.meta
        meta = encode(attrs, base)
        if inode.is_dir:
            opts = await self.write_options(inode, meta, replacing=True)
            opts.content_type = inode.content_type or DIR_CONTENT_TYPE
            inode.etag = await self.zos.put(key, b"", opts)
            inode.remote = True
        elif inode.appendable:
            opts = await self.write_options(inode, meta, replacing=True)
            # A zero-length append replaces the metadata and keeps the object
            # appendable (a copy would make it a normal object).
            appended = await self.zos.append(key, inode.size, b"", opts)
            # RGW chains the ETag through every append, empty ones too.
            inode.etag = next_append_etag(inode.etag, appended.etag) if inode.etag and appended.etag else ""
        else:
            opts = await self.write_options(inode, meta, replacing=False)
            inode.etag = await self.zos.copy(key, key, opts, size=inode.size)
        if inode.meta is base:
            inode.meta = meta
        # (else a setxattr changed it meanwhile, and its own write, waiting
        # for this one, carries it: it must not be undone here.)


def explicit_grants(acl: Acl | None) -> tuple[Grant, ...] | None:
    """The grants a copy must carry to keep this ACL (None: the default will do)."""
    return None if acl is None or is_default_acl(acl) else acl.grants


def is_default_acl(acl: Acl) -> bool:
    """Only the owner, with full control: what every new object gets anyway."""
    return len(acl.grants) == 1 and acl.grants[0].permission == "FULL_CONTROL" and acl.grants[0].grantee == acl.owner_id
