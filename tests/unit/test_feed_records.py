"""The change feed's record format and object names (zosfs/namespace/feed/records.py),
and the reserved prefix being hidden from listings."""

from __future__ import annotations

import json

import pytest

from zosfs.namespace.feed.records import (
    FEED_PREFIX,
    FileVersion,
    Record,
    generation_key,
    generation_of,
    header,
    parse_line,
    shard_of,
    shards_for_prefix,
    split_lines,
)
from zosfs.namespace.listing import Listing, SkipLog
from zosfs.zos import ListEntry, ListPage


def test_records_round_trip_as_one_ascii_line() -> None:
    rec = Record("m1", 7, 1796412183.25, "rename", ("d/\u00e9t\u00e9\nx", "d/new"), is_dir=True)
    line = rec.encode()
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.isascii()
    assert parse_line(line[:-1]) == rec


@pytest.mark.parametrize("line", [
    b"", b"garbage", b"[1,2]", b"\xff\xfe",
    b'{"v":2,"m":"m","s":1,"t":1,"op":"create","k":["x"]}',  # unknown version
    b'{"v":1,"m":"m","s":1,"t":1,"op":"truncate","k":["x"]}',  # unknown op
    b'{"v":1,"m":"m","s":"1","t":1,"op":"create","k":["x"]}',  # wrong type
    b'{"v":1,"m":"m","s":1,"t":1,"op":"create","k":[1]}',
    b'{"v":1,"m":"m","s":1,"t":1,"op":"create"}',  # no key
    b'{"v":1,"m":"m","s":1,"t":1,"op":"rename","k":["only-one"]}',
    b'{"v":1,"m":"m","s":1,"t":1,"op":"seal"}',  # seal without next generation
])
def test_lines_a_reader_cannot_use_are_none(line: bytes) -> None:
    assert parse_line(line) is None


def test_newer_writers_may_add_fields() -> None:
    doc = {"v": 1, "m": "m", "s": 3, "t": 5, "op": "delete", "k": ["a"], "future": {"x": 1}}
    rec = parse_line(json.dumps(doc).encode())
    assert rec is not None and rec.op == "delete" and rec.keys == ("a",)


def test_a_change_carries_the_stored_version() -> None:
    version = FileVersion('"0cc175b9c0f1b6a831c399e269772661"', 4096,
                          {"mode": "33188", "uid": "1000", "gid": "1000", "mtime": "1796412183.5"}, "text/plain", True)
    rec = Record("m1", 8, 1796412183.5, "change", ("d/f",), attrs=version)
    line = rec.encode()
    assert line.isascii() and parse_line(line[:-1]) == rec


def test_records_of_writers_without_the_version_still_work() -> None:
    """Writers that predate the `a` field: a change without it (the reader
    then forgets the file's attributes, as before)."""
    rec = parse_line(b'{"v":1,"m":"old","s":1,"t":5,"op":"change","k":["d/f"]}')
    assert rec is not None and rec.op == "change" and rec.keys == ("d/f",) and rec.attrs is None


@pytest.mark.parametrize("attrs", [
    "x", [], {"z": 1, "md": {}},  # no ETag
    {"e": "", "z": 1, "md": {}}, {"e": "e", "z": -1, "md": {}}, {"e": "e", "z": True, "md": {}},
    {"e": "e", "z": 1, "md": {"mode": 33188}}, {"e": "e", "z": 1}, {"e": "e", "z": 1, "md": {}, "ct": 3},
])
def test_a_version_the_reader_cannot_use_is_ignored_not_the_record(attrs: object) -> None:
    doc = {"v": 1, "m": "m", "s": 3, "t": 5, "op": "change", "k": ["a"], "a": attrs}
    rec = parse_line(json.dumps(doc).encode())
    assert rec is not None and rec.op == "change" and rec.keys == ("a",) and rec.attrs is None


def test_only_a_change_of_one_file_carries_a_version() -> None:
    version = {"e": "e", "z": 1, "md": {}}
    for doc in ({"op": "create", "k": ["a"]}, {"op": "change", "k": ["a/"], "d": True},
                {"op": "rename", "k": ["a", "b"]}):
        rec = parse_line(json.dumps({"v": 1, "m": "m", "s": 3, "t": 5, "a": version, **doc}).encode())
        assert rec is not None and rec.attrs is None, doc


def test_header_is_the_same_bytes_for_every_writer() -> None:
    assert header(3) == header(3) != header(4)
    rec = parse_line(header(3)[:-1])
    assert rec is not None and rec.op == "gen" and rec.next_gen == 3


def test_split_lines_leaves_a_partial_line() -> None:
    assert split_lines(b"a\nb\nc") == ([b"a", b"b"], 4)
    assert split_lines(b"partial") == ([], 0)
    assert split_lines(b"") == ([], 0)


def test_object_names() -> None:
    key = generation_key(2, 15)
    assert key == FEED_PREFIX + "2/000000000015" and generation_of(key) == 15
    assert generation_of(FEED_PREFIX + "2/notes.txt") is None


def test_shards_follow_the_first_path_segment() -> None:
    assert shard_of("anything/at/all", 1) == 0 and shards_for_prefix("", 1) == [0]
    assert shard_of("team/a", 16) == shard_of("team/b/c", 16) == shards_for_prefix("team/sub/", 16)[0]
    assert shards_for_prefix("", 16) == list(range(16))  # a mount of the whole bucket polls all


def test_the_reserved_prefix_is_hidden_from_listings() -> None:
    listing = Listing("")
    page = ListPage([ListEntry("file", 1, "e", 0.0)], [".zosfs/", "dir/"], None)
    listing.add_page(page, SkipLog())
    listing.finish()
    assert listing.names == ["dir", "file"]
    inner = Listing("dir/")  # a user's own ".zosfs" deeper down is an ordinary name
    inner.add_page(ListPage([], ["dir/.zosfs/"], None), SkipLog())
    inner.finish()
    assert inner.names == [".zosfs"]
