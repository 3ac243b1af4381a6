"""The change feed's record format and where its objects live.

One record is one line of JSON (ASCII only, so no raw newline can appear
inside a record) ending in "\\n"; one append carries one batch of whole
lines. Fields of version 1:

    {"v": 1, "m": "<mount id>", "s": <seq>, "t": <unix seconds>,
     "op": "create|change|rename|delete|all|seal|gen", "k": ["key", ...],
     "d": true|false, "n": <next generation, seal only>,
     "a": {"e": "<ETag>", "z": <size>, "md": {"mode": "...", ...},
           "ct": "<Content-Type>", "ap": true|false}}   (optional, see below)

Keys are bucket keys (not names relative to a mount's prefix), so mounts of
different prefixes of one bucket understand each other. `rename` lists the
old key then the new one; `all` means "invalidate everything" (a writer
that had to drop records says so instead of staying silent); `seal` is the
last record of a generation and names the next one; `gen` is a
generation's first line, the same bytes whoever writes it (see
`header`). A reader skips any line
it cannot parse, any version it does not know and any op it does not know:
newer writers may add fields and ops.

`a` (added within version 1: readers that predate it ignore it, and
records without it are handled as before) is what the writer knows of the
version it just stored, on a `change` of one file: its ETag, size, the
metadata it sent (the s3fs headers without `x-amz-meta-`), Content-Type and
whether it is appendable. A reader takes it into a file it knows instead
of forgetting the file's attributes, so that its next stat and lookup need
no request; it is a hint: opens still check the ETag with the server.

Objects: `.zosfs/feed/<shard>/<generation as 12 digits>`, shard 0 when the
feed is not split. Keys are never reused: a generation only grows, is sealed,
and is deleted two generations later.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

from zosfs.namespace.names import RESERVED_PREFIX  # hidden from listings

VERSION = 1
FEED_PREFIX = RESERVED_PREFIX + "feed/"
OPS = frozenset({"create", "change", "rename", "delete", "all", "seal", "gen"})
SEALED_META = "zosfs-feed-next"  # metadata on a sealed generation: the next one


@dataclass(frozen=True)
class FileVersion:
    """What a writer knows of a file version it just stored (field `a`)."""

    etag: str
    size: int
    metadata: dict[str, str]
    content_type: str | None = None
    appendable: bool = False

    def encode(self) -> dict[str, object]:
        doc: dict[str, object] = {"e": self.etag, "z": self.size, "md": self.metadata}
        if self.content_type:
            doc["ct"] = self.content_type
        if self.appendable:
            doc["ap"] = True
        return doc

    @staticmethod
    def parse(doc: object) -> FileVersion | None:
        """The version in a record's `a` field, or None if it is not one."""
        if not isinstance(doc, dict):
            return None
        etag, size, meta, ctype = doc.get("e"), doc.get("z"), doc.get("md"), doc.get("ct")
        if not isinstance(etag, str) or not etag or type(size) is not int or size < 0:
            return None
        if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            return None
        if ctype is not None and not isinstance(ctype, str):
            return None
        return FileVersion(etag, size, dict(meta), ctype, doc.get("ap") is True)


@dataclass(frozen=True)
class Record:
    """One change another mount announced."""

    mount: str
    seq: int
    time: float
    op: str
    keys: tuple[str, ...] = ()
    is_dir: bool = False
    next_gen: int | None = None  # seal: the next generation; gen: this one
    attrs: FileVersion | None = None  # change of a file: the version stored (field "a")

    def encode(self) -> bytes:
        """The record as one line, newline included."""
        doc: dict[str, object] = {"v": VERSION, "m": self.mount, "s": self.seq, "t": round(self.time, 3), "op": self.op}
        if self.keys:
            doc["k"] = list(self.keys)
        if self.is_dir:
            doc["d"] = True
        if self.next_gen is not None:
            doc["n"] = self.next_gen
        if self.attrs is not None:
            doc["a"] = self.attrs.encode()
        return json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"


def header(gen: int) -> bytes:
    """A generation's first line. Two appends at position 0 that race to
    create an object both succeed on RGW and the later one replaces the
    earlier, so only these bytes, identical for every writer, are ever
    appended at 0; records go at positions > 0, where the server refuses
    all but one of racing appends."""
    return Record("", 0, 0.0, "gen", next_gen=gen).encode()


def parse_line(line: bytes) -> Record | None:
    """The record on one line (without its newline), or None if this reader
    cannot use it: not JSON, another version, an unknown op, wrong types."""
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("v") != VERSION or doc.get("op") not in OPS:
        return None
    keys = doc.get("k", [])
    mount, seq, when = doc.get("m"), doc.get("s"), doc.get("t")
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        return None
    if not isinstance(mount, str) or not isinstance(seq, int) or not isinstance(when, (int, float)):
        return None
    op = doc["op"]
    next_gen = doc.get("n")
    if op in ("seal", "gen") and not isinstance(next_gen, int):
        return None
    if op == "rename" and len(keys) != 2:
        return None
    if op in ("create", "change", "delete") and not keys:
        return None
    attrs = FileVersion.parse(doc.get("a")) if op == "change" and len(keys) == 1 and not doc.get("d") else None
    return Record(mount, seq, float(when), op, tuple(keys), bool(doc.get("d", False)),
                  next_gen if op in ("seal", "gen") else None, attrs)


def split_lines(data: bytes | bytearray | memoryview) -> tuple[list[bytes], int]:
    """The complete lines in `data` and how many bytes they span; a trailing
    partial line is left for the next read."""
    raw = bytes(data)
    end = raw.rfind(b"\n") + 1
    if end == 0:
        return [], 0
    return raw[: end - 1].split(b"\n"), end


def shard_of(key: str, shards: int) -> int:
    """The feed shard that announces changes of `key`: by its first path
    segment, so that a mount of a prefix `top/...` polls one shard."""
    if shards <= 1:
        return 0
    top = key.split("/", 1)[0]
    return zlib.crc32(top.encode("utf-8", "surrogateescape")) % shards


def shards_for_prefix(prefix: str, shards: int) -> list[int]:
    """The shards a mount of `prefix` ("" or "a/b/") must poll."""
    if not prefix or shards <= 1:
        return list(range(max(1, shards)))
    return [shard_of(prefix, shards)]


def shard_prefix(shard: int) -> str:
    return f"{FEED_PREFIX}{shard}/"


def generation_key(shard: int, gen: int) -> str:
    return f"{shard_prefix(shard)}{gen:012d}"


def generation_of(key: str) -> int | None:
    """The generation a feed key names, or None for foreign keys."""
    tail = key.rsplit("/", 1)[-1]
    return int(tail) if len(tail) == 12 and tail.isdigit() else None
