"""Directory listings: what ListObjects says is in one directory.

A listing is taken by paging ListObjectsV2 with delimiter '/' and kept for
`dir_cache_ttl` seconds. While fresh and complete it answers lookups
(including "no such file") without requests; the mount's own changes are
applied to it, so it never contradicts what this mount did. A key
`dir_$folder$` lists as the directory `dir` (an older tools' marker).
"""

from __future__ import annotations

import bisect
import logging
import time
from dataclasses import dataclass

from zosfs.namespace.metadata import FOLDER_SUFFIX
from zosfs.namespace.names import listable, reserved
from zosfs.zos import ListPage

log = logging.getLogger(__name__)


@dataclass
class Entry:
    """One name in a directory, as a listing shows it."""

    name: str
    is_dir: bool
    size: int = 0
    etag: str = ""
    last_modified: float = 0.0
    storage_class: str = "STANDARD"
    legacy: str = ""  # a directory's `dir` or `dir_$folder$` object, if the listing showed one


class Listing:
    """The names of one directory in key order, with their listing facts."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.entries: dict[str, Entry] = {}
        self.names: list[str] = []  # sorted
        self.has_marker = False  # the directory's own `prefix` object exists
        # When the server was asked: a name the listing lacks was absent then
        # (a negative answer as old as this; see negative.py).
        self.started = time.monotonic()
        self.taken = self.started

    def fresh(self, ttl: float) -> bool:
        return time.monotonic() - self.taken < ttl

    def add_page(self, page: ListPage, skipped: SkipLog) -> None:
        """Fold one page in. Pages come in key order, and a file `x` sorts
        before the prefix `x/`, so the directory always arrives second and wins."""
        plen = len(self.prefix)
        for obj in page.entries:
            if obj.key == self.prefix:
                self.has_marker = True
                continue
            name = obj.key[plen:]
            if "/" in name:  # cannot happen with a delimiter; guard against odd servers
                continue
            if name.endswith(FOLDER_SUFFIX) and len(name) > len(FOLDER_SUFFIX):
                # `dir_$folder$`: the directory `dir` (its `dir/` prefix, if
                # any, came before it: '/' sorts before '_').
                name = name[: -len(FOLDER_SUFFIX)]
                shadowed = self.entries.get(name)
                if shadowed is not None and not shadowed.is_dir and shadowed.size:
                    continue  # a file `dir` wins, as in s3fs (it asks for `dir` first)
                if not listable(name):
                    self.entries[name] = Entry(name, True, legacy=obj.key)
                    continue
            reason = listable(name)
            if reason:
                skipped.note(obj.key, reason)
                continue
            self.entries[name] = Entry(name, False, obj.size, obj.etag, obj.last_modified, obj.storage_class)
        for prefix in page.prefixes:
            if reserved(prefix):  # zosfs's own objects (the change feed, the metadata index)
                continue
            name = prefix[plen:-1]
            reason = listable(name)
            if reason:
                skipped.note(prefix, reason)
                continue
            shadowed = self.entries.get(name)
            legacy = ""
            if shadowed is not None and not shadowed.is_dir:
                if shadowed.size == 0:
                    # Perhaps `dir` as older s3fs versions made directories:
                    # the directory's attributes are read from it (lookup.py
                    # checks that its metadata says so).
                    legacy = self.prefix + name
                else:
                    skipped.note(
                        self.prefix + name,
                        f"file hidden by the directory {prefix!r} of the same name (it is kept in the bucket)",
                    )
            elif shadowed is not None:
                legacy = shadowed.legacy
            self.entries[name] = Entry(name, True, legacy=legacy)

    def finish(self) -> None:
        self.names = sorted(self.entries)
        self.taken = time.monotonic()

    def put(self, entry: Entry) -> None:
        """Record a name this mount created (or moved here)."""
        if entry.name not in self.entries:
            bisect.insort(self.names, entry.name)
        self.entries[entry.name] = entry

    def remove(self, name: str) -> None:
        if self.entries.pop(name, None) is not None:
            i = bisect.bisect_left(self.names, name)
            if i < len(self.names) and self.names[i] == name:
                del self.names[i]


class SkipLog:
    """One log line per key that cannot be shown, not one per listing."""

    def __init__(self, limit: int = 100_000) -> None:
        self.seen: set[str] = set()
        self.limit = limit

    def note(self, key: str, reason: str) -> None:
        if key in self.seen:
            return
        if len(self.seen) < self.limit:
            self.seen.add(key)
        log.warning("skipping key %r: %s", key, reason)
