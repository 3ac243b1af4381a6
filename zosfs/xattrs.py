"""Extended attributes: what ZOS knows about an object, as xattrs.

Names:

  user.zos.tag.KEY        one object tag each (get, set, remove, list)
  user.zos.acl            the ACL as text: `owner=ID` then one `PERMISSION:TYPE=VALUE`
                          grant per line; set it to a canned ACL name or to grants in
                          the same form (lines or commas), so getfattr's output can be
                          fed back to setfattr
  user.zos.retention      `MODE UNTIL` (GOVERNANCE or COMPLIANCE, ISO 8601 date)
  user.zos.legal_hold     ON or OFF
  user.zos.restore        read: the restore status; write `days=N[,tier=T]` to restore
                          an archived object
  user.zos.content_type   the Content-Type the object is served with; set it to fix a
                          type for web serving (kept across rewrites and renames, see
                          zosfs/namespace/contenttype.py); not listed
  user.zos.etag, user.zos.version_id, user.zos.object_type
                          read-only facts
  user.zos.storage_class  read: a fact; write: move the object to that class
  user.zos.url, user.zos.upload_form, user.zos.expire, user.zos.transition
                          share links and per-directory lifecycle rules, in
                          `zosfs.zosattrs` (never listed)
  user.*, trusted.*, security.*, names without a namespace
                          anything else: kept with the object in s3fs's
                          `x-amz-meta-xattr` header (s3fs 1.97 keeps every name
                          there too), so cp -a, rsync -X and tar --xattrs round-trip

Never stored, and answered without a request (the kernel and ls ask for them
on every write and every `ls -l`): `security.capability` and
`security.selinux` (a label that the kernel would act on must not come from
whoever can write to the bucket), and all of `system.*`: POSIX ACLs
(`system.posix_acl_*`) would be shown by getfacl but not enforced (see the
README), and the other `system.*` names are the kernel's own, refused as ext4
refuses them.

listxattr names the tags, a non-default ACL, retention and legal hold when
set, and the stored attributes (trusted.* only to root, who alone may read
them); the read-only facts and restore status are read by name only, so that
copying a file's xattrs (cp, rsync, tar) does not copy facts about one object
onto another.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import re
import time
from collections.abc import Callable

import pyfuse3

from zosfs.data.write import WritePath
from zosfs.fserror import FsError
from zosfs.namespace import contenttype
from zosfs.namespace.inodes import ROOT_INO, Inode
from zosfs.namespace.metadata import decode_xattrs, encode_xattrs, with_times
from zosfs.namespace.tree import Namespace, is_default_acl
from zosfs.zos import Acl, Grant, Retention, ZosError
from zosfs.zosattrs import NAMES as FEATURE_NAMES
from zosfs.zosattrs import FeatureAttrs

log = logging.getLogger(__name__)

ENOATTR = pyfuse3.ENOATTR
PREFIX = "user.zos."
TAG_PREFIX = "user.zos.tag."
FACTS = ("etag", "storage_class", "version_id", "object_type")
CANNED_ACLS = ("private", "public-read", "public-read-write", "authenticated-read")
MAX_TAGS = 10
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256
TAG_CHARS = re.compile(r"^[\w .:/=+\-@]*$", re.UNICODE)  # S3's allowed tag characters
MAX_USER_XATTRS = 8 * 1024  # bytes of the encoded x-amz-meta-xattr header
# Asked by the kernel on every write (capability) and by ls -l on every file
# (selinux, the ACLs); never stored, so "no such attribute" is always right.
UNSTORED = frozenset({"security.capability", "security.selinux"})
UNSTORED_PREFIX = "system."
TRUSTED_PREFIX = "trusted."
GRANTEE_TYPES = {"id": "CanonicalUser", "uri": "Group", "email": "AmazonCustomerByEmail"}
GRANTEE_NAMES = {v: k for k, v in GRANTEE_TYPES.items()}
PERMISSIONS = ("FULL_CONTROL", "READ", "WRITE", "READ_ACP", "WRITE_ACP")
RESTORE_TIERS = ("Standard", "Bulk", "Expedited")


def _invalid(message: str, err: int = errno.EINVAL) -> FsError:
    return FsError(err, message)


def format_acl(acl: Acl) -> str:
    lines = [f"owner={acl.owner_id}"]
    for g in acl.grants:
        lines.append(f"{g.permission}:{GRANTEE_NAMES.get(g.grantee_type, g.grantee_type)}={g.grantee}")
    return "\n".join(lines) + "\n"


def parse_grants(text: str, owner: str) -> tuple[Grant, ...]:
    """`READ:id=someone, FULL_CONTROL:uri=http://...` (or one per line) -> grants.
    An `owner=` line (as getfattr shows it) is accepted and ignored."""
    grants = []
    for item in re.split(r"[,\n]", text):
        item = item.strip()
        if not item or item.startswith("owner="):
            continue
        permission, sep, grantee = item.partition(":")
        kind, sep2, value = grantee.partition("=")
        permission = permission.strip().upper()
        if not sep or not sep2 or permission not in PERMISSIONS or kind.strip() not in GRANTEE_TYPES or not value.strip():
            raise _invalid(
                f"bad ACL grant {item!r}: expected PERMISSION:TYPE=VALUE with PERMISSION one of "
                f"{', '.join(PERMISSIONS)} and TYPE one of id, uri, email; or a canned ACL ({', '.join(CANNED_ACLS)})"
            )
        grants.append(Grant(permission, GRANTEE_TYPES[kind.strip()], value.strip()))
    if not grants:
        raise _invalid("empty ACL: give a canned ACL name or at least one grant")
    return tuple(grants)


def check_tag(key: str, value: str, count_after: int) -> None:
    """The service's tag rules, as EINVAL/E2BIG with a reason."""
    if not key or len(key) > MAX_TAG_KEY:
        raise _invalid(f"tag key must be 1 to {MAX_TAG_KEY} characters")
    if len(value) > MAX_TAG_VALUE:
        raise _invalid(f"tag value must be at most {MAX_TAG_VALUE} characters")
    if not TAG_CHARS.match(key) or not TAG_CHARS.match(value):
        raise _invalid("tags may contain letters, digits, spaces and + - = . _ : / @ only")
    if key.lower().startswith("aws:"):
        raise _invalid("tag keys starting with 'aws:' are reserved")
    if count_after > MAX_TAGS:
        raise _invalid(f"an object can have at most {MAX_TAGS} tags", errno.E2BIG)


def parse_retention(text: str) -> Retention:
    parts = text.split()
    if len(parts) != 2 or parts[0].upper() not in ("GOVERNANCE", "COMPLIANCE"):
        raise _invalid("retention must be 'GOVERNANCE UNTIL' or 'COMPLIANCE UNTIL' (UNTIL an ISO 8601 date)")
    try:
        until = dt.datetime.fromisoformat(parts[1].replace("Z", "+00:00"))
    except ValueError:
        raise _invalid(f"not an ISO 8601 date: {parts[1]!r}") from None
    if until.tzinfo is None:
        until = until.replace(tzinfo=dt.timezone.utc)
    return Retention(parts[0].upper(), until.timestamp())


def format_retention(r: Retention) -> str:
    when = dt.datetime.fromtimestamp(r.until, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{r.mode} {when}"


def parse_restore(text: str) -> tuple[int, str]:
    days, tier = 0, "Standard"
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        if name == "days" and sep and value.isdigit() and int(value) > 0:
            days = int(value)
        elif name == "tier" and sep and value.capitalize() in RESTORE_TIERS:
            tier = value.capitalize()
        else:
            raise _invalid(f"restore request must be 'days=N[,tier={'|'.join(RESTORE_TIERS)}]', not {text!r}")
    if not days:
        raise _invalid("restore request needs days=N")
    return days, tier


class Xattrs:
    """get/set/list/remove of extended attributes of one mount."""

    def __init__(self, ns: Namespace, writes: WritePath, bypass_governance: bool) -> None:
        self.ns = ns
        self.writes = writes
        self.zos = ns.zos
        self.bypass_governance = bypass_governance
        self.features = FeatureAttrs(ns, self._stored_object)

    # -- helpers -------------------------------------------------------------------

    async def _object(self, inode: Inode) -> str:
        """The key of the object that carries this inode's attributes; uploads
        a pending file and creates a directory's marker when needed."""
        if inode.ino == ROOT_INO:
            raise FsError(errno.ENOTSUP, "the mount's root is not an object and has no attributes")
        if inode.writer is not None and not inode.remote:
            await self.writes.flush(inode)
        if inode.is_dir and not inode.remote:
            await self.ns.set_attrs(inode, inode.attrs, persist=True)  # writes the marker
        return self.ns.key(inode)

    async def _stored_object(self, inode: Inode) -> str:
        """`_object`, and the inode's unsaved writes stored too (a link or a
        copy must see the bytes written so far)."""
        if inode.writer is not None and inode.writer.pending:
            await self.writes.flush(inode)
        return await self._object(inode)

    async def _fresh(self, inode: Inode) -> None:
        if not inode.meta_known or not inode.fresh():
            inode.fresh_until = 0
            await self.ns.getattr(inode)

    async def _tags(self, inode: Inode) -> dict[str, str]:
        if not inode.remote:
            return dict(inode.tags or {})
        if inode.tags is None:
            inode.tags = await self.zos.get_tags(self.ns.key(inode))
        return dict(inode.tags)

    # -- the four operations -----------------------------------------------------------

    async def get(self, inode: Inode, name: str) -> bytes:
        if name.startswith(TAG_PREFIX):
            tags = await self._tags(inode)
            key = name[len(TAG_PREFIX):]
            if key not in tags:
                raise FsError(ENOATTR)
            return tags[key].encode()
        if name.startswith(PREFIX):
            return (await self._get_zos(inode, name[len(PREFIX):])).encode()
        if unstored(name):
            raise FsError(ENOATTR)
        await self._fresh(inode)
        value = decode_xattrs(inode.meta).get(name)
        if value is None:
            raise FsError(ENOATTR)
        return value

    async def _get_zos(self, inode: Inode, what: str) -> str:
        if what in FEATURE_NAMES:
            return await self.features.get(inode, what)
        if what == "content_type":
            return await self._content_type(inode)
        if not inode.remote and what in FACTS + ("acl", "retention", "legal_hold", "restore"):
            raise FsError(ENOATTR)
        if what in ("retention", "legal_hold") and not self.ns.object_lock:
            raise FsError(ENOATTR)  # the bucket cannot have them; RGW would answer InvalidRequest
        key = self.ns.key(inode)
        if what == "acl":
            acl = await self.ns.acl(inode)
            assert acl is not None
            return format_acl(acl)
        if what == "retention":
            retention = await self.zos.get_retention(key)
            if retention is None:
                raise FsError(ENOATTR)
            return format_retention(retention)
        if what == "legal_hold":
            return "ON" if await self.zos.get_legal_hold(key) else "OFF"
        info = await self.zos.head(key)
        self.ns.apply_info(inode, info)
        if what == "etag":
            return info.etag
        if what == "storage_class":
            return info.storage_class
        if what == "version_id":
            if not info.version_id:
                raise FsError(ENOATTR)
            return info.version_id
        if what == "object_type":
            return "appendable" if info.appendable else "normal"
        if what == "restore":
            if info.restore:
                return info.restore
            return "archived, not restored" if info.storage_class == "GLACIER" else "not archived"
        raise FsError(ENOATTR)

    async def list(self, inode: Inode, privileged: bool = True) -> list[bytes]:
        """Names to list; trusted.* only for a `privileged` caller (root), as
        ext4 lists them: the kernel would refuse anyone else reading them."""
        if inode.ino == ROOT_INO:
            return []
        await self._fresh(inode)
        names = sorted(n for n in decode_xattrs(inode.meta)
                       if not unstored(n) and (privileged or not n.startswith(TRUSTED_PREFIX)))
        if inode.remote:
            names += [TAG_PREFIX + k for k in sorted(await self._tags(inode))]
            acl = await self.ns.acl(inode)
            if acl is not None and not is_default_acl(acl):
                names.append(PREFIX + "acl")
            if self.ns.object_lock:
                key = self.ns.key(inode)
                if await self.zos.get_retention(key) is not None:
                    names.append(PREFIX + "retention")
                if await self.zos.get_legal_hold(key):
                    names.append(PREFIX + "legal_hold")
        return [n.encode() for n in names]

    async def set(self, inode: Inode, name: str, value: bytes) -> None:
        if name.startswith(TAG_PREFIX):
            await self._set_tag(inode, name[len(TAG_PREFIX):], _text(value))
        elif name.startswith(PREFIX):
            await self._set_zos(inode, name[len(PREFIX):], _text(value).strip())
        else:
            await self._set_stored(inode, name, value)

    async def remove(self, inode: Inode, name: str) -> None:
        if name.startswith(TAG_PREFIX):
            await self._remove_tag(inode, name[len(TAG_PREFIX):])
        elif name == PREFIX + "retention":
            await self._put_retention(inode, None)
        elif name.startswith(PREFIX) and name[len(PREFIX):] in FEATURE_NAMES:
            await self.features.remove(inode, name[len(PREFIX):])
        elif name.startswith(PREFIX):
            raise FsError(errno.EPERM, f"{name} cannot be removed (set it instead)")
        else:
            if unstored(name):
                raise FsError(ENOATTR)
            await self._fresh(inode)
            xattrs = decode_xattrs(inode.meta)
            if name not in xattrs:
                raise FsError(ENOATTR)
            del xattrs[name]
            await self._store_user(inode, xattrs)

    # -- tags --------------------------------------------------------------------------

    async def _set_tag(self, inode: Inode, key: str, value: str) -> None:
        key_obj = await self._object(inode)
        tags = await self._tags(inode)
        tags[key] = value
        check_tag(key, value, len(tags))
        await self.zos.put_tags(key_obj, tags)
        inode.tags = tags

    async def _remove_tag(self, inode: Inode, key: str) -> None:
        key_obj = await self._object(inode)
        tags = await self._tags(inode)
        if key not in tags:
            raise FsError(ENOATTR)
        del tags[key]
        if tags:
            await self.zos.put_tags(key_obj, tags)
        else:
            await self.zos.delete_tags(key_obj)
        inode.tags = tags

    # -- user.zos.* ------------------------------------------------------------------------

    async def _set_zos(self, inode: Inode, what: str, text: str) -> None:
        if what in FEATURE_NAMES or what == "storage_class":
            return await self.features.set(inode, what, text)
        if what in FACTS:
            raise FsError(errno.EPERM, f"user.zos.{what} is read-only")
        if what == "content_type":
            await self._set_content_type(inode, text)
            return
        if what == "acl":
            await self._set_acl(inode, text)
        elif what == "retention":
            await self._put_retention(inode, parse_retention(text))
        elif what == "legal_hold":
            if text.upper() not in ("ON", "OFF"):
                raise _invalid("legal_hold must be ON or OFF")
            if not self.ns.object_lock:
                raise FsError(errno.ENOTSUP, "legal hold needs a bucket created with object lock")
            key = await self._object(inode)
            await self._lock_call(self.zos.put_legal_hold(key, text.upper() == "ON"), "legal hold")
        elif what == "restore":
            days, tier = parse_restore(text)
            key = await self._object(inode)
            try:
                await self.zos.restore(key, days, tier)
            except ZosError as err:
                raise FsError(err.errno, f"restore of {key!r} refused: {err.message} ({err.code})") from None
            log.info("restore of %r requested for %d days (%s tier)", key, days, tier)
        else:
            raise FsError(errno.ENOTSUP, f"unknown attribute user.zos.{what} (see README: Extended attributes)")

    async def _set_acl(self, inode: Inode, text: str) -> None:
        key = await self._object(inode)
        if text in CANNED_ACLS:
            await self.zos.put_acl(key, canned=text)
        else:
            current = await self.ns.acl(inode)
            assert current is not None
            grants = parse_grants(text, current.owner_id)
            try:
                await self.zos.put_acl(key, acl=Acl(current.owner_id, current.owner_name, grants))
            except ZosError as err:
                if err.errno == errno.EINVAL:
                    raise FsError(errno.EINVAL, f"the server refused the ACL: {err.message}") from None
                raise
        inode.acl = None  # read again when next needed

    async def _put_retention(self, inode: Inode, retention: Retention | None) -> None:
        key = await self._object(inode)
        if not self.ns.object_lock:
            raise FsError(errno.ENOTSUP, "retention needs a bucket created with object lock")
        await self._lock_call(self.zos.put_retention(key, retention, self.bypass_governance), "retention")

    async def _lock_call(self, call: object, what: str) -> None:
        try:
            await call  # type: ignore[misc]
        except ZosError as err:
            if err.code == "AccessDenied":
                raise FsError(errno.EPERM, f"the server refused to change the {what} ({err.message}): "
                              "COMPLIANCE retention cannot be shortened or removed, GOVERNANCE only with "
                              "-o bypass_governance") from None
            if err.code in ("InvalidRequest", "InvalidArgument", "MalformedXML", "InvalidRetentionPeriod"):
                raise FsError(errno.EINVAL, f"the server refused the {what}: {err.message} ({err.code})") from None
            raise

    # -- user.zos.content_type ------------------------------------------------------------

    async def _content_type(self, inode: Inode) -> str:
        if inode.ino == ROOT_INO:
            raise FsError(ENOATTR)
        if inode.remote:
            await self._fresh(inode)
        if inode.is_dir:
            return inode.content_type or contenttype.DIRECTORY
        if inode.remote and inode.content_type:
            return inode.content_type
        return contenttype.guess(inode.name)  # what its first upload will carry

    async def _set_content_type(self, inode: Inode, text: str) -> None:
        if inode.ino == ROOT_INO or inode.is_dir:
            raise FsError(errno.EPERM, "a directory's marker keeps application/x-directory (s3fs reads it so)")
        try:
            value = contenttype.check(text)
        except ValueError as err:
            raise _invalid(str(err)) from None
        if inode.remote:
            await self._fresh(inode)
        previous, inode.content_type = inode.content_type, value
        writer = inode.writer
        await self._persist(inode, writer is not None and (writer.pending or not inode.remote),
                            lambda: setattr(inode, "content_type", previous))

    # -- other attributes, of any namespace (x-amz-meta-xattr) ------------------------------

    async def _set_stored(self, inode: Inode, name: str, value: bytes) -> None:
        if unstored(name):
            raise FsError(errno.ENOTSUP, f"{name} is not stored (see README: Extended attributes)")
        await self._fresh(inode)
        xattrs = decode_xattrs(inode.meta)
        xattrs[name] = value
        await self._store_user(inode, xattrs)

    async def _store_user(self, inode: Inode, xattrs: dict[str, bytes]) -> None:
        if inode.ino == ROOT_INO:
            raise FsError(errno.ENOTSUP, "the mount's root is not an object and has no attributes")
        meta = encode_xattrs(xattrs, inode.meta)
        if len(meta.get("xattr", "")) > MAX_USER_XATTRS:
            raise FsError(errno.E2BIG, f"the attributes of one object are limited to {MAX_USER_XATTRS} bytes (encoded)")
        previous, inode.meta = inode.meta, meta
        writer = inode.writer
        await self._persist(inode, writer is not None and writer.pending, lambda: setattr(inode, "meta", previous))

    async def _persist(self, inode: Inode, deferred: bool, undo: Callable[[], None]) -> None:
        """Store the inode's changed metadata: carried by the writer's pending
        upload when `deferred`, else rewritten now (and `undo` on failure).
        A change of xattrs (the content type too) moves ctime."""
        writer = inode.writer
        previous_attrs = inode.attrs
        changed = with_times(inode.attrs, ctime_ns=time.time_ns())
        if deferred and writer is not None:
            inode.attrs = changed
            writer.attrs_changed()  # the pending upload carries it
            return
        try:
            await self.ns.set_attrs(inode, changed, persist=True)
        except BaseException:
            inode.attrs = previous_attrs
            undo()
            raise
        if writer is not None:
            writer.base_etag = inode.etag


def unstored(name: str) -> bool:
    """True for the names zosfs never stores (see the module docstring)."""
    return name in UNSTORED or name.startswith(UNSTORED_PREFIX)


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("the value must be UTF-8 text") from None

