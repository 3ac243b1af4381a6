"""Block files read back: the direct read into an anonymous map (whole
pages, and a last block's partial page), every damage reported and never
served, both checksum kinds, and files of the previous format (2, CRC32)."""

from __future__ import annotations

import mmap
import random
import struct
import zlib
from pathlib import Path

import pytest

from zosfs.data.cache import blockfile
from zosfs.data.cache.blockfile import CRC32, XXH3, BlockWriter, data_length, read_block

KiB, MiB = 1024, 1024 * 1024
NAME = b"ns\0some/key"
LENGTHS = [MiB, 2 * MiB + 123, MiB + 4096, 3 * MiB - 1]  # (>= 1 MiB: read into a map, directly)


def write_file(path: Path, index: int, data: bytes) -> None:
    writer = BlockWriter(str(path.parent))
    assert writer.write(str(path) + ".tmp", str(path), NAME, index, data)
    writer.close()


def as_map(data: bytes) -> mmap.mmap:
    m = mmap.mmap(-1, len(data))
    m[:] = data
    return m


@pytest.fixture(params=[k for k in (XXH3, CRC32) if k in blockfile.CHECKSUMS],
                ids=lambda k: {XXH3: "xxh3", CRC32: "crc32"}[k])
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Files written with each checksum kind this machine has."""
    monkeypatch.setattr(blockfile, "KIND", request.param)
    return int(request.param)


@pytest.mark.parametrize("length", LENGTHS)
def test_a_block_reads_back_intact_into_a_recycled_map_or_a_new_buffer(tmp_path: Path, kind: int, length: int) -> None:
    data = random.Random(length).randbytes(length)
    path = tmp_path / "b.blk"
    write_file(path, 7, data)
    assert struct.unpack_from("<H", path.read_bytes(), 10)[0] == kind
    for buf in (None, as_map(bytes(length)), mmap.mmap(-1, length + 1)):  # (the last is the wrong size: not used)
        got, why = read_block(str(path), NAME, 7, length, buf)
        assert why == "" and got is not None and bytes(got) == data
        if buf is not None and len(buf) == length:
            assert got is buf


@pytest.mark.parametrize("length", LENGTHS)
def test_every_kind_of_damage_is_reported_never_served(tmp_path: Path, kind: int, length: int) -> None:
    data = random.Random(length).randbytes(length)
    path = tmp_path / "b.blk"
    write_file(path, 3, data)
    good = path.read_bytes()
    size = len(good)

    def damaged(raw: bytes) -> str:
        path.write_bytes(raw)
        got, why = read_block(str(path), NAME, 3, length)
        assert got is None
        return why

    for at in (size - length, size - length + 4096, size - 1, size - length // 2):
        flipped = bytearray(good)
        flipped[at] ^= 0x01  # one bit of the data: first byte, a page in, last byte, middle
        assert damaged(bytes(flipped)) == "checksum mismatch"
    assert damaged(good[:-1]) == "wrong length (torn write)"
    assert damaged(good[:size - length + 4096]) == "wrong length (torn write)"
    assert damaged(good + b"\0") == "wrong length (torn write)"
    assert damaged(b"X" + good[1:]).startswith("not a block file")
    path.write_bytes(good)
    assert read_block(str(path), NAME, 4, length)[1] == "header names another block"
    assert read_block(str(path), b"ns\0other/key", 3, length)[1] == "header names another block"
    assert read_block(str(path), NAME, 3, length + 1)[1] == "wrong length (torn write)"
    assert read_block(str(tmp_path / "gone.blk"), NAME, 3, length) == (None, "")  # (a plain miss)


def test_a_file_of_the_previous_format_is_still_read_and_checked(tmp_path: Path) -> None:
    """Format 2: a 36-byte header with a CRC32, the data at the next 4 KiB."""
    data = random.Random(5).randbytes(MiB + 77)
    head = struct.pack("<8sHHIQQI", b"ZOSFSBLK", 2, 0, len(NAME), 9, len(data), zlib.crc32(data)) + NAME
    path = tmp_path / "old.blk"
    path.write_bytes(head.ljust(4096, b"\0") + data)
    assert data_length(str(path), path.stat().st_size) == len(data)
    got, why = read_block(str(path), NAME, 9, len(data))
    assert why == "" and got is not None and bytes(got) == data
    raw = bytearray(path.read_bytes())
    raw[5000] ^= 0x10
    path.write_bytes(bytes(raw))
    assert read_block(str(path), NAME, 9, len(data)) == (None, "checksum mismatch")


def test_a_checksum_kind_this_machine_cannot_compute_is_a_miss_not_served(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    data = random.Random(6).randbytes(MiB)
    path = tmp_path / "b.blk"
    write_file(path, 0, data)
    monkeypatch.setattr(blockfile, "CHECKSUMS", {})
    got, why = read_block(str(path), NAME, 0, len(data))
    assert got is None and why.startswith("checksum of an unknown kind")


def test_filesystems_without_direct_reads_get_the_same_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = random.Random(8).randbytes(2 * MiB + 5)
    path = tmp_path / "b.blk"
    write_file(path, 1, data)
    monkeypatch.setattr(blockfile, "_read_direct", lambda path, name, buf: None)  # (tmpfs before Linux 6.6)
    got, why = read_block(str(path), NAME, 1, len(data))
    assert why == "" and got is not None and bytes(got) == data
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x04
    path.write_bytes(bytes(raw))
    assert read_block(str(path), NAME, 1, len(data)) == (None, "checksum mismatch")


def test_short_direct_writes_go_on_where_they_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A direct write that the kernel takes only in part (one page per call
    here) still leaves the whole block file, which reads back intact."""
    real = blockfile.os.pwritev
    calls = []

    def one_page(fd: int, buffers: list[memoryview], offset: int) -> int:
        calls.append(offset)
        return real(fd, [buffers[0][:4096]], offset)

    monkeypatch.setattr(blockfile.os, "pwritev", one_page)
    data = random.Random(5).randbytes(MiB + 4096)
    path = tmp_path / "b.blk"
    write_file(path, 3, as_map(data))
    assert len(calls) > 2, "the direct path was not taken"
    monkeypatch.undo()
    got, problem = read_block(str(path), NAME, 3, len(data))
    assert problem == "" and got is not None and bytes(got) == data
