"""An fsx-style randomized test: random writes, truncates, reads, fsyncs and
reopens of one file on a real mount, each checked against a bytearray model,
and the object in the bucket checked whenever the file is closed or synced.

Thresholds are small (append_chunk 256K, part_size and rewrite_threshold 5M,
multipart_threshold 8M) and the file grows to about 14 MiB, so that every
way of storing it is used: append upload, replace by PUT, and replace by
multipart upload with unchanged parts copied on the server. The proxy counts
the requests, to prove it.

The CI run is short and has a fixed seed. A longer run:

    ZOSFS_FSX_OPS=20000 ZOSFS_FSX_SEED=7 python -m pytest tests/fs/test_fsx.py -p no:cacheprovider -x
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.mount import ZosfsMount, staging_files
from tests.support.rgw import LocalRGW

KiB, MiB = 1024, 1024 * 1024
OPS = int(os.environ.get("ZOSFS_FSX_OPS", "300"))
SEED = int(os.environ.get("ZOSFS_FSX_SEED", "20261124"))
MAX_SIZE = 14 * MiB
OPTIONS = {
    "append_chunk": "256K", "part_size": "5M", "rewrite_threshold": "5M", "multipart_threshold": "8M",
    "cache_size": "2M", "block_size": "256K", "readahead": "1M", "attr_timeout": "1",
}


@pytest.fixture
def proxy(rgw: LocalRGW) -> Iterator[FaultProxy]:
    with FaultProxy(rgw.endpoint) as p:
        yield p


class Fsx:
    """One file on the mount, its model, and the operations on both."""

    def __init__(self, m: ZosfsMount, s3: Any, rng: random.Random) -> None:
        self.m = m
        self.s3 = s3
        self.rng = rng
        self.path = m.path / "fsx.bin"
        self.model = bytearray()
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self.writable = True
        self.o_append = False
        self.max_size = MAX_SIZE
        self.history: list[str] = []

    def note(self, text: str) -> None:
        self.history.append(text)

    def fail(self, what: str) -> str:
        return f"{what} after {len(self.history)} operations (seed {SEED}); last ones:\n" + "\n".join(self.history[-15:])

    # -- checks --------------------------------------------------------------------

    def check_range(self, offset: int, length: int) -> None:
        got = os.pread(self.fd, length, offset)
        want = bytes(self.model[offset : offset + length])
        if got != want:
            first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            raise AssertionError(self.fail(f"read {length} at {offset}: {len(got)} bytes, first difference at {offset + first}"))

    def check_bucket(self, why: str) -> None:
        body = self.s3.get_object(Bucket=self.m.bucket, Key="fsx.bin")["Body"].read()
        if body != bytes(self.model):
            first = next((i for i, (a, b) in enumerate(zip(body, self.model)) if a != b), min(len(body), len(self.model)))
            last = max((i for i, (a, b) in enumerate(zip(body, self.model)) if a != b), default=first)
            raise AssertionError(self.fail(
                f"object after {why}: {len(body)} bytes, model {len(self.model)}, differ in [{first}, {last}]"))

    # -- operations --------------------------------------------------------------------

    def write(self) -> None:
        rng, size = self.rng, len(self.model)
        kind = rng.random()
        if kind < 0.3:
            offset = size  # an append
        elif kind < 0.4:
            offset = size + rng.randrange(2 * MiB)  # past the end: a hole
        else:
            offset = rng.randrange(size + 1)
        length = rng.choice([1, 7, 512, 4 * KiB, 60 * KiB, 256 * KiB, 1 * MiB, 3 * MiB])
        if offset >= self.max_size - 1 or (self.o_append and size >= self.max_size - 1):
            return self.truncate()
        length = max(1, min(length, self.max_size - offset))
        if self.o_append:
            offset = size  # (Linux: pwrite on an O_APPEND file writes at the end, whatever the offset)
            length = max(1, min(length, self.max_size - offset))
        data = rng.randbytes(length)
        self.note(f"write {length} at {offset} (size {size})")
        assert os.pwrite(self.fd, data, offset) == length
        if offset > size:
            self.model.extend(bytes(offset - size))
        self.model[offset : offset + length] = data

    def truncate(self) -> None:
        size = len(self.model)
        new = self.rng.choice([0, size // 2, max(0, size - 1), size + 1, self.rng.randrange(self.max_size)])
        self.note(f"truncate {size} -> {new}")
        os.ftruncate(self.fd, new)
        if new < size:
            del self.model[new:]
        else:
            self.model.extend(bytes(new - size))

    def read(self) -> None:
        size = len(self.model)
        offset = self.rng.randrange(size + 10)
        length = self.rng.choice([1, 100, 4 * KiB, 128 * KiB, MiB, 4 * MiB])
        self.note(f"read {length} at {offset} (size {size})")
        self.check_range(offset, length)

    def fsync(self) -> None:
        self.note("fsync")
        os.fsync(self.fd)
        self.check_bucket("fsync")

    def reopen(self) -> None:
        os.close(self.fd)
        self.check_bucket("close")
        if self.rng.random() < 0.2:  # sometimes drop the kernel's pages, so that reads reach the daemon
            fd = os.open(self.path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
        how = self.rng.choice(["rw", "rw", "append", "readonly", "trunc", "recreate"])
        self.note(f"reopen {how}")
        if how == "recreate":
            # A new file written sequentially is stored by append upload:
            # what follows then works on an appendable object.
            self.recreate()
        else:
            flags = {"rw": os.O_RDWR, "append": os.O_RDWR | os.O_APPEND, "readonly": os.O_RDONLY,
                     "trunc": os.O_RDWR | os.O_TRUNC}[how]
            self.fd = os.open(self.path, flags)
        self.writable = how != "readonly"
        self.o_append = how == "append"
        if how == "trunc":
            self.model.clear()
        if how == "append":
            data = self.rng.randbytes(self.rng.choice([3, 5000, 300 * KiB]))
            self.note(f"append {len(data)} (O_APPEND)")
            os.write(self.fd, data)
            self.model += data
        if os.fstat(self.fd).st_size != len(self.model):
            raise AssertionError(self.fail(f"size {os.fstat(self.fd).st_size} after reopen, model {len(self.model)}"))

    def recreate(self) -> None:
        """Unlink the (closed) file and write the model as a new one, sequentially."""
        os.unlink(self.path)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        for start in range(0, len(self.model), MiB):
            os.write(self.fd, self.model[start : start + MiB])

    def step(self) -> None:
        r = self.rng.random()
        if not self.writable:
            self.read() if r < 0.85 else self.reopen()
        elif r < 0.45:
            self.write()
        elif r < 0.55:
            self.truncate()
        elif r < 0.80:
            self.read()
        elif r < 0.87:
            self.fsync()
        else:
            self.reopen()

    def close(self) -> None:
        os.close(self.fd)
        self.check_bucket("the last close")


def test_fsx(bucket: str, s3, proxy: FaultProxy, make_mount) -> None:
    m = make_mount(bucket, endpoint=proxy.endpoint, options=OPTIONS)
    fsx = Fsx(m, s3, random.Random(SEED))
    try:
        for _ in range(OPS):
            fsx.step()
    except BaseException:
        os.close(fsx.fd)  # (an open file would keep the mount busy)
        raise
    fsx.close()
    with open(fsx.path, "rb") as f:
        assert f.read() == bytes(fsx.model)
    stats = proxy.stats
    print(f"fsx: {OPS} operations, seed {SEED}, final size {len(fsx.model)}; requests {dict(stats)}")
    for op in ("AppendObject", "PutObject", "UploadPart", "UploadPartCopy"):
        assert stats[op] > 0, f"{op} was never used: {dict(stats)}"
    deadline = time.monotonic() + 10  # (the kernel sends the last release on its own)
    while json.loads(os.getxattr(m.path, "user.zosfs.stats"))["staging_reserved"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert json.loads(os.getxattr(m.path, "user.zosfs.stats"))["staging_reserved"] == 0
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_fsx_on_large_new_files_whose_parts_left_staging(bucket: str, s3, proxy: FaultProxy, make_mount) -> None:
    """The same operations on new files written sequentially past
    multipart_threshold, started once their uploaded parts have left staging
    (the multipart upload is then their only copy): a read of such a part, a
    write into it or a truncate below it completes that upload first, and
    every byte must still be the model's."""
    m = make_mount(bucket, endpoint=proxy.endpoint, options=OPTIONS)
    rng = random.Random(SEED)
    fsx = Fsx(m, s3, rng)
    fsx.max_size = 40 * MiB
    try:
        for _ in range(3):
            os.close(fsx.fd)
            fsx.model = bytearray(rng.randbytes(36 * MiB))
            fsx.note("recreate (36 MiB)")
            fsx.recreate()
            fsx.writable, fsx.o_append = True, False
            [staged] = [p for p in staging_files(m.cache_dir / "staging") if p.suffix == ".data"]
            deadline = time.monotonic() + 30
            while staged.stat().st_blocks * 512 > 12 * MiB:
                assert time.monotonic() < deadline, f"{staged.stat().st_blocks * 512} bytes still staged"
                time.sleep(0.02)
            os.posix_fadvise(fsx.fd, 0, 0, os.POSIX_FADV_DONTNEED)  # (reads reach the daemon)
            for _ in range(max(10, OPS // 10)):
                fsx.step()
    except BaseException:
        os.close(fsx.fd)
        raise
    fsx.close()
    with open(fsx.path, "rb") as f:
        assert f.read() == bytes(fsx.model)
    assert m.log_text().count("completed the upload of the first") >= 2, "no freed part was ever read or changed"
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
