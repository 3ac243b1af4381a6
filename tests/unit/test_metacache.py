"""The persistent metadata cache: (key, ETag) -> metadata, in memory and SQLite."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from zosfs.namespace.metacache import CachedMeta, MetaCache

META = CachedMeta({"mode": "33188", "uid": "1000"}, "text/plain", True)


def test_metadata_survives_a_reopen_under_the_same_etag(tmp_path: Path) -> None:
    path = str(tmp_path / "cache" / "meta.db")
    cache = MetaCache(path)
    cache.put("a/f", "etag1", META)
    cache.flush()
    again = MetaCache(path)
    assert again.get("a/f", "etag1") == META
    assert again.get("a/f", "etag2") is None  # the object changed: a miss, never old metadata
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_unflushed_rows_are_visible(tmp_path: Path) -> None:
    cache = MetaCache(str(tmp_path / "meta.db"), memory_entries=1)
    cache.put("a", "e1", META)
    cache.put("b", "e2", META)  # evicts "a" from memory; it is still pending for the file
    assert cache.get("a", "e1") == META


def test_preload_remembers_misses_until_the_metadata_is_put(tmp_path: Path) -> None:
    path = str(tmp_path / "meta.db")
    first = MetaCache(path)
    first.put("d/known", "e1", META)
    first.put("d/changed", "old", META)
    first.put("e/other", "e3", META)
    first.flush()
    cache = MetaCache(path)
    cache.preload("d/", {"d/known": "e1", "d/changed": "new", "d/new": "e4"})
    assert cache.get("d/known", "e1") == META
    assert cache.get("d/changed", "new") is None
    assert cache.get("d/new", "e4") is None
    cache.put("d/new", "e4", META)
    assert cache.get("d/new", "e4") == META
    assert cache.get("e/other", "e3") == META  # outside the preloaded prefix: read from the file


def test_a_damaged_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    path.write_bytes(b"this is not a database" * 100)
    cache = MetaCache(str(path))
    cache.put("k", "e", META)
    cache.flush()
    assert MetaCache(str(path)).get("k", "e") == META


def test_forget_removes_a_key_everywhere(tmp_path: Path) -> None:
    path = str(tmp_path / "meta.db")
    cache = MetaCache(path)
    cache.put("k", "e", META)
    cache.flush()
    cache.forget("k")
    assert cache.get("k", "e") is None
    assert MetaCache(path).get("k", "e") is None
