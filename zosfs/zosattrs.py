"""The xattrs that act on ZOS features rather than on one object's stored
data: share links, storage class changes and per-directory lifecycle rules.

  user.zos.url            (files, read) a presigned GET URL, valid for -o url_expiry
  user.zos.upload_form    (directories, read) JSON {url, fields, key_prefix,
                          expires}: a presigned POST form that uploads files
                          into the directory
  user.zos.storage_class  (files, write) move the object to another class
  user.zos.expire         (directories) `Nd`: objects below expire N days
                          after they were written
  user.zos.transition     (directories) `CLASS:Nd`: objects below move to
                          CLASS N days after they were written

None of them is listed by listxattr: a link is a credential, not something
`cp -a` or `getfattr -d` should copy or print, and a lifecycle rule belongs
to the bucket, not to the directory's marker object. `zosfs.xattrs` hands
these names here.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable

from zosfs.fserror import FsError
from zosfs.namespace.inodes import ROOT_INO, Inode
from zosfs.namespace.tree import Namespace
from zosfs.zos import ZosError
from zosfs.zos.lifecycle import PrefixRule

log = logging.getLogger(__name__)

NAMES = ("url", "upload_form", "expire", "transition")
STORAGE_CLASSES = ("STANDARD", "STANDARD_IA", "GLACIER")
# getfattr asks twice (the size, then the value): both must get the same link.
LINK_REUSE = 10.0  # seconds, and at most a tenth of the link's life
_DAYS = re.compile(r"^\s*(\d+)\s*d?\s*$", re.IGNORECASE)


def parse_days(text: str) -> int:
    """'30d' or '30' -> 30 (at least 1)."""
    m = _DAYS.match(text)
    if not m or int(m.group(1)) < 1:
        raise FsError(errno.EINVAL, f"expected a number of days such as 30d, not {text!r}")
    return int(m.group(1))


def parse_transition(text: str) -> tuple[str, int]:
    """'STANDARD_IA:30d' (or 'STANDARD_IA 30d') -> ('STANDARD_IA', 30)."""
    cls, _, days = text.strip().replace(" ", ":", 1).partition(":")
    cls = cls.strip().upper()
    if cls not in STORAGE_CLASSES or cls == "STANDARD":
        raise FsError(errno.EINVAL, f"transition must be CLASS:Nd with CLASS STANDARD_IA or GLACIER, not {text!r}")
    return cls, parse_days(days)


def format_rule(rule: PrefixRule) -> str:
    """How getfattr shows a rule; the same text can be set again."""
    return f"{rule.days}d" if rule.kind == "expire" else f"{rule.storage_class}:{rule.days}d"


class FeatureAttrs:
    """Get, set and remove of the names in NAMES, and the storage class change."""

    def __init__(self, ns: Namespace, object_key: Callable[[Inode], Awaitable[str]]) -> None:
        """`object_key(inode)` stores whatever of the inode is not stored
        yet and returns its key (see `Xattrs._stored_object`)."""
        self.ns = ns
        self.zos = ns.zos
        self.object_key = object_key
        self._links: dict[tuple[int, str], tuple[float, str]] = {}

    # -- share links ---------------------------------------------------------------

    async def get(self, inode: Inode, what: str) -> str:
        if what in ("expire", "transition"):
            if not inode.is_dir:
                raise FsError(errno.ENODATA)  # (setting one on a file gives ENOTDIR)
            rule = await self._call(self.zos.get_prefix_rule(what, self._dir_prefix(inode)), what)
            if rule is None:
                raise FsError(errno.ENODATA)
            return format_rule(rule)
        now = time.monotonic()
        self._links = {k: v for k, v in self._links.items() if v[0] > now}
        cached = self._links.get((inode.ino, what))
        if cached is not None:
            return cached[1]
        if what == "url":
            value = await self._url(inode)
        else:
            value = await self._upload_form(inode)
        reuse = min(LINK_REUSE, self.zos.config.url_expiry / 10)
        self._links[(inode.ino, what)] = (now + reuse, value)
        return value

    async def _url(self, inode: Inode) -> str:
        if inode.is_dir or inode.ino == ROOT_INO:
            raise FsError(errno.ENODATA, "user.zos.url is a file's; a directory has user.zos.upload_form")
        key = await self.object_key(inode)
        url = await self._call(self.zos.presign_get(key), "share link")
        # The URL itself is a credential until it expires: never logged.
        log.info("share link made for %r, valid %d s", key, self.zos.config.url_expiry)
        return url

    async def _upload_form(self, inode: Inode) -> str:
        if not inode.is_dir:
            raise FsError(errno.ENODATA, "user.zos.upload_form is a directory's; a file has user.zos.url")
        prefix = self._dir_prefix(inode)
        if inode.ino != ROOT_INO:
            await self.object_key(inode)  # a new directory gets its marker, so it outlives an empty listing
        form = await self._call(self.zos.presign_post(prefix), "upload form")
        log.info("upload form made for %r, valid %d s", prefix, self.zos.config.url_expiry)
        expires = dt.datetime.fromtimestamp(form.expires, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return json.dumps({"url": form.url, "fields": form.fields, "key_prefix": form.key_prefix,
                           "expires": expires}, sort_keys=True) + "\n"

    # -- setting and removing ------------------------------------------------------

    async def set(self, inode: Inode, what: str, text: str) -> None:
        if what == "storage_class":
            await self._set_storage_class(inode, text)
        elif what == "expire":
            rule = PrefixRule("expire", self._dir_prefix(inode), parse_days(text))
            await self._call(self.zos.set_prefix_rule(rule), "lifecycle rule")
            log.info("lifecycle: objects under %r expire after %d days", rule.prefix, rule.days)
        elif what == "transition":
            cls, days = parse_transition(text)
            rule = PrefixRule("transition", self._dir_prefix(inode), days, cls)
            await self._call(self.zos.set_prefix_rule(rule), "lifecycle rule")
            log.info("lifecycle: objects under %r move to %s after %d days", rule.prefix, cls, days)
        else:
            raise FsError(errno.EPERM, f"user.zos.{what} is read-only")

    async def remove(self, inode: Inode, what: str) -> None:
        if what not in ("expire", "transition"):
            raise FsError(errno.EPERM, f"user.zos.{what} cannot be removed")
        prefix = self._dir_prefix(inode)
        if not await self._call(self.zos.remove_prefix_rule(what, prefix), "lifecycle rule"):
            raise FsError(errno.ENODATA)
        log.info("lifecycle: %s rule for %r removed", what, prefix)

    async def _set_storage_class(self, inode: Inode, text: str) -> None:
        cls = text.strip().upper()
        if cls not in STORAGE_CLASSES:
            raise FsError(errno.EINVAL, f"storage class must be one of {', '.join(STORAGE_CLASSES)}, not {text!r}")
        if inode.is_dir or inode.ino == ROOT_INO:
            raise FsError(errno.EISDIR, "a directory has no storage class; set it on its files")
        key = await self.object_key(inode)
        await self._call(self.zos.change_storage_class(key, cls), "storage class change")
        log.info("storage class of %r is now %s", key, cls)
        # The copy has a new ETag: take it in, so readers and writers go on from it.
        inode.fresh_until = 0
        inode.acl = None
        await self.ns.getattr(inode)
        if inode.writer is not None:
            inode.writer.base_etag = inode.etag

    # -- helpers ---------------------------------------------------------------------

    def _dir_prefix(self, inode: Inode) -> str:
        if not inode.is_dir:
            raise FsError(errno.ENOTDIR, "lifecycle rules are set on directories (they apply to a key prefix)")
        return self.ns.key(inode)

    async def _call(self, call: Awaitable, what: str):  # type: ignore[no-untyped-def]
        """Await a client call; the server's refusals become EINVAL or EPERM with its reason."""
        try:
            return await call
        except ZosError as err:
            if err.code in ("InvalidArgument", "InvalidRequest", "MalformedXML", "InvalidStorageClass"):
                raise FsError(errno.EINVAL, f"the server refused the {what}: {err.message} ({err.code})") from None
            if err.code == "AccessDenied":
                raise FsError(errno.EPERM, f"the server refused the {what}: {err.message}") from None
            raise
