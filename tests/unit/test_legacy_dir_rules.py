"""Older directory conventions, in pure logic: which empty objects are
directories (as s3fs 1.97's metaheader.cpp decides), how a listing folds
`dir_$folder$` and `dir` into the directory `dir`, and the default modes."""

from __future__ import annotations

import stat

from zosfs.namespace.listing import Listing, SkipLog
from zosfs.namespace.metadata import Defaults, is_legacy_dir
from zosfs.zos import ListPage
from zosfs.zos.values import ListEntry


def test_which_empty_objects_are_directories() -> None:
    dir_mode = {"mode": str(stat.S_IFDIR | 0o755)}
    assert is_legacy_dir(dir_mode, "binary/octet-stream", 0)
    assert is_legacy_dir({}, "application/x-directory", 0)
    assert is_legacy_dir({}, "application/x-directory; charset=utf-8", 0)
    assert is_legacy_dir({}, "httpd/unix-directory", 0)
    assert is_legacy_dir({"mode": "493"}, "application/x-directory", 0)  # 0755 without a type: the type decides
    assert not is_legacy_dir(dir_mode, "application/x-directory", 1)  # not empty
    assert not is_legacy_dir({"mode": str(stat.S_IFREG | 0o644)}, "application/x-directory", 0)
    assert not is_legacy_dir({}, "application/octet-stream", 0)
    assert not is_legacy_dir({}, None, 0)


def listing(keys: dict[str, int], prefixes: list[str]) -> Listing:
    lst = Listing("p/")
    entries = [ListEntry(f"p/{k}", size, "etag", 0.0) for k, size in sorted(keys.items())]
    lst.add_page(ListPage(entries, [f"p/{d}" for d in prefixes], None), SkipLog())
    lst.finish()
    return lst


def test_a_listing_folds_older_markers_into_directories() -> None:
    lst = listing({"a_$folder$": 0, "b": 0, "c_$folder$": 0, "f": 5, "f_$folder$": 0, "_$folder$": 0}, ["b/", "c/"])
    assert lst.names == ["_$folder$", "a", "b", "c", "f"]
    assert (lst.entries["a"].is_dir, lst.entries["a"].legacy) == (True, "p/a_$folder$")
    assert (lst.entries["b"].is_dir, lst.entries["b"].legacy) == (True, "p/b")  # to be checked by its metadata
    assert (lst.entries["c"].is_dir, lst.entries["c"].legacy) == (True, "p/c_$folder$")
    assert not lst.entries["f"].is_dir  # a file `f` wins over `f_$folder$`, as in s3fs
    assert not lst.entries["_$folder$"].is_dir  # (no name before the suffix: a file of that name)


def test_default_modes_follow_s3fs_unless_a_umask_is_given() -> None:
    s3fs_like = Defaults(uid=1, gid=2, umask=None)
    assert (s3fs_like.dir_mode, s3fs_like.file_mode, s3fs_like.root_mode) == (
        stat.S_IFDIR | 0o750, stat.S_IFREG | 0o644, stat.S_IFDIR | 0o755)
    given = Defaults(uid=1, gid=2, umask=0o027)
    assert (given.dir_mode, given.file_mode, given.root_mode) == (
        stat.S_IFDIR | 0o750, stat.S_IFREG | 0o640, stat.S_IFDIR | 0o750)
    assert Defaults(uid=1, gid=2, umask=0o022).dir_mode == stat.S_IFDIR | 0o755
