"""A persistent cache of object metadata, keyed by key, ETag and LastModified.

Listings carry each object's ETag and LastModified but not its metadata, so
`ls -l` of a directory needs one HEAD per object. The ETag alone does not
name a version of the metadata: RGW keeps the ETag on a metadata-only copy
onto itself (CopyObject with MetadataDirective=REPLACE, which is how s3fs
does chmod, chown and utime), while LastModified moves. Every write, append
and copy moves LastModified, so metadata remembered under (key, ETag,
LastModified in whole seconds, the precision of a HEAD's Last-Modified)
stays correct: a remount lists a known directory with its LIST requests and
no HEADs, and an object changed by someone else is simply a miss. Metadata
whose LastModified is not known (this mount's own uploads: a PUT's answer
does not carry it) is not cached here; the next HEAD or listing brings it.
Rows of older versions of this file, keyed by the ETag alone, never match.

A bounded in-memory LRU sits in front of the file (and is all there is when
no file is configured). It is a cache: the file is opened without durability
(no fsync), and a file that cannot be opened or read is replaced by an empty
one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
from dataclasses import dataclass

import cachetools

log = logging.getLogger(__name__)

FLUSH_EVERY = 512  # pending rows written in one transaction


def version(etag: str, last_modified: float) -> str:
    """What one version of an object's metadata is known by: its ETag and
    its LastModified in whole seconds (listings give milliseconds, a HEAD's
    Last-Modified whole seconds)."""
    return f"{etag}@{math.floor(last_modified)}"


@dataclass(frozen=True)
class CachedMeta:
    metadata: dict[str, str]
    content_type: str | None
    appendable: bool


class MetaCache:
    """(key, ETag, LastModified) -> CachedMeta, in memory and in SQLite.
    Trio thread only. (The `etag` column holds `version()`.)"""

    def __init__(self, path: str | None, memory_entries: int = 200_000) -> None:
        self.path = path
        # key -> (etag, metadata), or (etag, None): the file is known to have
        # nothing for that version (a preload found no row), so a first
        # listing of a large directory does not query SQLite once per name.
        self._memory: cachetools.LRUCache[str, tuple[str, CachedMeta | None]] = cachetools.LRUCache(memory_entries)
        self._pending: dict[str, tuple[str, str]] = {}
        self._db = self._open() if path else None

    def _open(self) -> sqlite3.Connection | None:
        assert self.path is not None
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            return self._connect()
        except sqlite3.DatabaseError as err:
            log.warning("metadata cache %s is unusable (%s); starting a new one", self.path, err)
            try:
                os.unlink(self.path)
                return self._connect()
            except (OSError, sqlite3.Error) as err2:
                log.warning("metadata cache disabled: %s", err2)
                return None
        except OSError as err:
            log.warning("metadata cache disabled: cannot create %s: %s", self.path, err.strerror)
            return None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, etag TEXT NOT NULL, data TEXT NOT NULL)")
        db.execute("SELECT count(*) FROM meta").fetchone()  # fails here if the file is damaged
        os.chmod(self.path, 0o600)
        return db

    def get(self, key: str, etag: str, last_modified: float | None) -> CachedMeta | None:
        """The metadata of this version of `key`, if known; None when the
        LastModified is not known (nothing is matched on the ETag alone)."""
        if not etag or last_modified is None:
            return None
        etag = version(etag, last_modified)
        remembered = self._memory.get(key)
        if remembered is not None and remembered[0] == etag:
            return remembered[1]
        row = self._pending.get(key)
        if row is None and self._db is not None:
            try:
                found = self._db.execute("SELECT etag, data FROM meta WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error as err:
                log.warning("metadata cache read failed: %s", err)
                return None
            row = (found[0], found[1]) if found else None
        if row is None or row[0] != etag:
            return None
        data = json.loads(row[1])
        meta = CachedMeta(data["m"], data.get("t"), bool(data.get("a")))
        self._memory[key] = (etag, meta)
        return meta

    def preload(self, prefix: str, versions: dict[str, tuple[str, float]]) -> None:
        """Load what the file knows about these keys (key -> (ETag,
        LastModified)) below one prefix in a single query, rather than one
        query per name while a large directory is listed."""
        if self._db is None or not versions:
            return
        keys = {k: version(e, lm) for k, (e, lm) in versions.items()}
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else None
        sql = "SELECT key, etag, data FROM meta WHERE key >= ?" + (" AND key < ?" if end else "")
        try:
            rows = self._db.execute(sql, (prefix, end) if end else (prefix,)).fetchall()
        except sqlite3.Error as err:
            log.warning("metadata cache read failed: %s", err)
            return
        found = set()
        for key, etag, data in rows:
            if keys.get(key) == etag and key not in self._memory:
                d = json.loads(data)
                self._memory[key] = (etag, CachedMeta(d["m"], d.get("t"), bool(d.get("a"))))
                found.add(key)
        for key, etag in keys.items():
            if key not in found and key not in self._memory and key not in self._pending:
                self._memory[key] = (etag, None)

    def put(self, key: str, etag: str, meta: CachedMeta, last_modified: float | None) -> None:
        """Remember the metadata of one version (nothing if its ETag or
        LastModified is not known)."""
        if not etag or last_modified is None:
            return
        etag = version(etag, last_modified)
        self._memory[key] = (etag, meta)
        if self._db is None:
            return
        data = {"m": meta.metadata, "t": meta.content_type, "a": meta.appendable}
        self._pending[key] = (etag, json.dumps(data, separators=(",", ":")))
        if len(self._pending) >= FLUSH_EVERY:
            self.flush()

    def forget(self, key: str) -> None:
        self._memory.pop(key, None)
        self._pending.pop(key, None)
        if self._db is not None:
            try:
                self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
            except sqlite3.Error as err:
                log.warning("metadata cache write failed: %s", err)

    def flush(self) -> None:
        if not self._pending or self._db is None:
            return
        rows = [(k, e, d) for k, (e, d) in self._pending.items()]
        self._pending.clear()
        try:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO meta (key, etag, data) VALUES (?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as err:
            log.warning("metadata cache write failed: %s", err)

    def close(self) -> None:
        self.flush()
        if self._db is not None:
            self._db.close()
            self._db = None
