"""The bucket's metadata index: one object per large directory that names
each file's s3fs headers, so that a first mount lists it without HEADs.

A LIST carries each object's ETag and LastModified but not its metadata, so
`ls -l` of a directory of N files on a mount with an empty cache costs N
HEADs. A mount that has HEADed the files of a directory (of at least
`MIN_ENTRIES` files) stores what it learned in one object under the
reserved prefix `.zosfs/index/` at the bucket's root, and a later mount on
any host reads it with one GET after its LIST.

The index may only make a listing faster, never wrong: an entry is used only
if the listing shows the object with the same ETag *and* the same
LastModified (to the millisecond) as when its metadata was read. The ETag
alone would not do: RGW keeps an object's ETag when another tool replaces
only its metadata (s3fs's chmod is such a copy), but the copy moves
LastModified. Anything else (an object written by another tool, a newer
version) falls back to a HEAD. An index that cannot be read (damaged, of
another format, or not zosfs's) is ignored with one log line. Mounts that
write the same index at once simply replace each other's: every entry is
checked against the listing before use.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import time
import zlib
from typing import TYPE_CHECKING

import trio

from zosfs.namespace.listing import Listing
from zosfs.namespace.names import RESERVED_PREFIX
from zosfs.namespace.metacache import CachedMeta
from zosfs.zos import ObjectInfo, WriteOptions, ZosError

if TYPE_CHECKING:
    from zosfs.namespace.tree import Namespace

log = logging.getLogger(__name__)

# Under zosfs's one reserved prefix (names.py). Indexes that zosfs versions
# before it wrote under `.zosfs-index/` are neither read nor written any more.
INDEX_PREFIX = RESERVED_PREFIX + "index/"
FORMAT = "zosfs-meta-index-1"
MIN_ENTRIES = 64  # smaller directories cost few HEADs: not worth an object of their own
SETTLE = 2.0  # seconds without new HEADs in a directory before its index is written
MAX_NOTED = 200_000  # HEAD answers held for indexes not yet written
CONTENT_TYPE = "application/x-zosfs-index"
MAX_TEXT = 256 << 20  # bytes an index may unpack to (about a million entries)
READ_LIMIT = 10.0  # seconds a listing waits for its index before it goes on without


def index_key(prefix: str) -> str:
    """The index object of the directory with this key prefix ('' or 'a/b/')."""
    return f"{INDEX_PREFIX}{prefix}.index"


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class MetaIndex:
    """Reads directories' indexes after their LIST and writes them once their
    files' metadata has been read by HEAD. Trio thread only."""

    def __init__(self, ns: Namespace, *, writable: bool) -> None:
        self.ns = ns
        self.writable = writable
        # prefix -> name -> (etag, LastModified in whole seconds, metadata
        # parts): what HEADs answered, until the directory's index is written.
        self._noted: dict[str, dict[str, tuple[str, int, CachedMeta]]] = {}
        self._count = 0
        self._last_note: dict[str, float] = {}
        self._writing: set[str] = set()  # prefixes with a write waiting to settle
        self._putting: set[str] = set()  # prefixes whose index is being sent
        # prefix -> the entries of its index as read (or written), so that a
        # new index keeps what the old one knew and the listing still matches.
        self._base: dict[str, dict[str, list[object]]] = {}
        self._refused = False  # the server refused a write (read-only credentials): stop trying

    # -- reading -----------------------------------------------------------------

    async def apply(self, listing: Listing) -> None:
        """Load the index of a listed directory into the metadata cache, for
        the files whose ETag and LastModified it matches."""
        ns = self.ns
        files = [e for e in listing.entries.values() if not e.is_dir]
        if len(files) < MIN_ENTRIES:
            return
        missing = [e for e in files if ns.metacache.get(listing.prefix + e.name, e.etag, e.last_modified) is None]
        if len(missing) < MIN_ENTRIES:
            return  # the local cache knows them already
        key = index_key(listing.prefix)
        body = None
        with trio.move_on_after(READ_LIMIT):
            try:
                body = await ns.zos.get(key)
            except ZosError as err:
                if err.errno != errno.ENOENT:
                    log.info("metadata index %r not read (%s); listing with HEADs", key, err)
                return
        if body is None:
            log.info("metadata index %r not read within %g s; listing with HEADs", key, READ_LIMIT)
            return
        entries = self._parse(key, listing.prefix, bytes(body))
        if entries is None:
            return
        self._remember_base(listing.prefix, entries)
        used = 0
        for entry in missing:
            found = entries.get(entry.name)
            if not isinstance(found, list) or len(found) != 5:
                continue
            etag, lm_ms, metadata, content_type, appendable = found
            if etag != entry.etag or lm_ms != _ms(entry.last_modified) or not isinstance(metadata, dict):
                continue  # another version: its HEAD tells
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
                continue
            ns.metacache.put(listing.prefix + entry.name, etag, CachedMeta(
                metadata, content_type if isinstance(content_type, str) else None, bool(appendable)),
                entry.last_modified)
            used += 1
        log.debug("metadata index %r: %d of %d entries match the listing", key, used, len(missing))

    def _remember_base(self, prefix: str, entries: dict[str, list[object]]) -> None:
        if prefix not in self._base and len(self._base) >= 16:
            self._base.pop(next(iter(self._base)))  # the oldest
        self._base[prefix] = entries

    def _parse(self, key: str, prefix: str, body: bytes) -> dict[str, list[object]] | None:
        try:
            inflate = zlib.decompressobj()
            text = inflate.decompress(body, MAX_TEXT)
            if inflate.unconsumed_tail:
                raise ValueError(f"larger than {MAX_TEXT >> 20} MiB unpacked")
            doc = json.loads(text)
        except (zlib.error, ValueError, RecursionError) as err:
            log.warning("ignoring metadata index %r: not readable (%s)", key, err)
            return None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("prefix") != prefix \
                or not isinstance(doc.get("entries"), dict):
            log.warning("ignoring metadata index %r: not a zosfs index of this directory", key)
            return None
        return doc["entries"]

    # -- writing -------------------------------------------------------------------

    def note(self, key: str, info: ObjectInfo) -> None:
        """A HEAD of a file answered: remember it for its directory's index."""
        if not self.writable or self._refused or self._count >= MAX_NOTED:
            return
        slash = key.rfind("/")
        prefix, name = key[: slash + 1], key[slash + 1 :]
        if prefix.startswith(INDEX_PREFIX) or not info.etag:
            return
        per_dir = self._noted.setdefault(prefix, {})
        if name not in per_dir:
            self._count += 1
        per_dir[name] = (info.etag, math.floor(info.last_modified),
                         CachedMeta(dict(info.metadata), info.content_type, info.appendable))
        self._last_note[prefix] = time.monotonic()
        if prefix not in self._writing and self.ns.nursery is not None:
            self._writing.add(prefix)
            self.ns.nursery.start_soon(self._write_when_settled, prefix)

    async def _write_when_settled(self, prefix: str) -> None:
        try:
            while True:
                wait = self._last_note.get(prefix, 0.0) + SETTLE - time.monotonic()
                if wait <= 0:
                    break
                await trio.sleep(wait)
            await self._write(prefix)
        except ZosError as err:
            if err.code == "AccessDenied":
                self._refused = True
            log.warning("metadata index of %r not written: %s", prefix, err)
        finally:
            self._writing.discard(prefix)
            self._count -= len(self._noted.pop(prefix, {}))
            self._last_note.pop(prefix, None)

    def forget(self, prefix: str) -> None:
        """The directory is gone: its index goes too, if this mount read or
        wrote one (with the next batch of deletes)."""
        if self._base.pop(prefix, None) is not None and self.writable and not self._refused:
            self.ns.deletes.add(index_key(prefix))

    async def flush(self) -> None:
        """Write now the indexes still waiting to settle (at unmount)."""
        for prefix in list(self._noted):
            if prefix in self._putting:
                continue  # its settled write is on its way
            try:
                await self._write(prefix)
            except ZosError as err:
                log.warning("metadata index of %r not written: %s", prefix, err)
            self._count -= len(self._noted.pop(prefix, {}))

    async def _write(self, prefix: str) -> None:
        """Write the directory's index from its latest listing and what HEADs
        answered, if it would hold more than the index already there."""
        listing = self.ns.readdir.latest(prefix)
        noted = self._noted.get(prefix, {})
        if listing is None or self._refused:
            return
        base = self._base.get(prefix, {})
        entries: dict[str, list[object]] = {}
        added = 0
        for entry in listing.entries.values():
            if entry.is_dir:
                continue
            head = noted.get(entry.name)
            if head is not None and head[0] == entry.etag and head[1] == math.floor(entry.last_modified):
                meta = head[2]
                entries[entry.name] = [entry.etag, _ms(entry.last_modified), meta.metadata, meta.content_type,
                                       meta.appendable]
                added += base.get(entry.name) != entries[entry.name]
                continue
            old = base.get(entry.name)
            if isinstance(old, list) and len(old) == 5 and old[0] == entry.etag and old[1] == _ms(entry.last_modified):
                entries[entry.name] = old
        if len(entries) < MIN_ENTRIES or not added:
            return
        doc = {"format": FORMAT, "prefix": prefix, "written": time.time(), "entries": entries}
        body = zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 1)
        self._putting.add(prefix)
        try:
            await self.ns.zos.put(index_key(prefix), body, WriteOptions(content_type=CONTENT_TYPE))
        finally:
            self._putting.discard(prefix)
        self._remember_base(prefix, entries)
        log.info("metadata index of %r written: %d entries", prefix, len(entries))
