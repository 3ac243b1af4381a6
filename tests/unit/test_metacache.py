"""The persistent metadata cache: (key, ETag, LastModified) -> metadata, in memory and SQLite."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from zosfs.namespace.metacache import CachedMeta, MetaCache

META = CachedMeta({"mode": "33188", "uid": "1000"}, "text/plain", True)
LM = 1_780_000_000.25  # a LastModified, as a listing gives it (milliseconds)


def test_metadata_survives_a_reopen_under_the_same_etag(tmp_path: Path) -> None:
    path = str(tmp_path / "cache" / "meta.db")
    cache = MetaCache(path)
    cache.put("a/f", "etag1", META, LM)
    cache.flush()
    again = MetaCache(path)
    assert again.get("a/f", "etag1", LM) == META
    assert again.get("a/f", "etag2", LM) is None  # the object changed: a miss, never old metadata
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_unflushed_rows_are_visible(tmp_path: Path) -> None:
    cache = MetaCache(str(tmp_path / "meta.db"), memory_entries=1)
    cache.put("a", "e1", META, LM)
    cache.put("b", "e2", META, LM)  # evicts "a" from memory; it is still pending for the file
    assert cache.get("a", "e1", LM) == META


def test_preload_remembers_misses_until_the_metadata_is_put(tmp_path: Path) -> None:
    path = str(tmp_path / "meta.db")
    first = MetaCache(path)
    first.put("d/known", "e1", META, LM)
    first.put("d/changed", "old", META, LM)
    first.put("e/other", "e3", META, LM)
    first.flush()
    cache = MetaCache(path)
    cache.preload("d/", {"d/known": ("e1", LM), "d/changed": ("new", LM), "d/new": ("e4", LM)})
    assert cache.get("d/known", "e1", LM) == META
    assert cache.get("d/changed", "new", LM) is None
    assert cache.get("d/new", "e4", LM) is None
    cache.put("d/new", "e4", META, LM)
    assert cache.get("d/new", "e4", LM) == META
    assert cache.get("e/other", "e3", LM) == META  # outside the preloaded prefix: read from the file


def test_a_damaged_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    path.write_bytes(b"this is not a database" * 100)
    cache = MetaCache(str(path))
    cache.put("k", "e", META, LM)
    cache.flush()
    assert MetaCache(str(path)).get("k", "e", LM) == META


def test_forget_removes_a_key_everywhere(tmp_path: Path) -> None:
    path = str(tmp_path / "meta.db")
    cache = MetaCache(path)
    cache.put("k", "e", META, LM)
    cache.flush()
    cache.forget("k")
    assert cache.get("k", "e", LM) is None
    assert MetaCache(path).get("k", "e", LM) is None


def test_a_metadata_copy_that_keeps_the_etag_is_a_miss(tmp_path: Path) -> None:
    """RGW keeps the ETag on a metadata-only self-copy (s3fs's chmod); only
    LastModified tells the versions apart."""
    path = str(tmp_path / "meta.db")
    cache = MetaCache(path)
    cache.put("f", "e", META, LM)
    cache.flush()
    again = MetaCache(path)
    assert again.get("f", "e", LM) == META
    assert again.get("f", "e", LM + 1) is None  # chmod by a metadata copy, a second later: not the old mode
    assert again.get("f", "e", int(LM)) == META  # a HEAD's Last-Modified: whole seconds
    assert again.get("f", "e", None) is None  # LastModified not known: never a match on the ETag alone
    again.put("g", "e", META, None)  # an upload of this mount: its LastModified is not known
    assert again.get("g", "e", LM) is None
