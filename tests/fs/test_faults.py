"""Reliability under faults: injected errors, stalls, server restarts, a soak.

The fault proxy sits between zosfs and the RGW; the mount sees the proxy as
its endpoint. Whatever the proxy does, what a program was told is stored is
stored, what failed says so, and the mount stays usable.
"""

from __future__ import annotations

import errno
import filecmp
import os
import random
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.support.faultproxy import FaultProxy, Rule
from tests.support.mount import ZosfsMount
from tests.support.rgw import LocalRGW

MiB = 1 << 20
SMALL = {"append_chunk": "1M", "part_size": "5M", "rewrite_threshold": "10M", "multipart_threshold": "24M"}




def make_tree(root: Path, seed: int) -> None:
    rng = random.Random(seed)
    sizes = [0, 1, 100, 4096, 200_000, MiB + 7, 3 * MiB, 12 * MiB, 30 * MiB]
    for d in range(3):
        (root / f"d{d}").mkdir(parents=True)
        for i, size in enumerate(sizes):
            (root / f"d{d}" / f"f{i}").write_bytes(rng.randbytes(size))


def test_a_copy_through_20_percent_503s_is_byte_identical(make_mount, bucket: str, proxy: FaultProxy, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 1)
    m = make_mount(bucket, endpoint=proxy.endpoint, options={**SMALL, "retries": "8"})
    rule = proxy.add_rule(Rule(probability=0.2, seed=7, status=503))
    shutil.copytree(src, m.path / "copy")
    assert rule.fired > 10
    proxy.clear_rules()
    m2 = make_mount(bucket)  # a fresh mount reads what is in the bucket
    cmp = filecmp.dircmp(src, m2.path / "copy")
    assert not cmp.left_only and not cmp.right_only
    for d in cmp.common_dirs:
        match, mismatch, errors = filecmp.cmpfiles(src / d, m2.path / "copy" / d, os.listdir(src / d), shallow=False)
        assert not mismatch and not errors, (d, mismatch, errors)


def test_connection_resets_in_the_middle_of_appends_neither_duplicate_nor_lose_bytes(
    make_mount, bucket: str, proxy: FaultProxy, s3
) -> None:
    m = make_mount(bucket, endpoint=proxy.endpoint, options={**SMALL, "retries": "8"})
    # Answers lost after the server applied the append, and connections cut
    # before it: both must be resolved without sending bytes twice.
    lost = proxy.add_rule(Rule(op="AppendObject", every=3, reset_after=True))
    cut = proxy.add_rule(Rule(op="AppendObject", every=5, reset_before=True))
    expected = b""
    path = m.path / "journal.log"
    for n in range(60):
        line = f"entry {n:03d} ".encode() * random.Random(n).randint(1, 2000) + b"\n"
        with open(path, "ab") as f:
            f.write(line)
        expected += line
    assert lost.fired > 5 and cut.fired > 3
    proxy.clear_rules()
    body = s3.get_object(Bucket=bucket, Key="journal.log")["Body"].read()
    assert body == expected
    assert s3.head_object(Bucket=bucket, Key="journal.log")["ResponseMetadata"]["HTTPHeaders"]["x-rgw-object-type"] == "Appendable"


def test_a_stalled_server_fails_operations_after_the_timeout_and_the_mount_recovers(
    make_mount, bucket: str, proxy: FaultProxy, s3
) -> None:
    s3.put_object(Bucket=bucket, Key="before.txt", Body=b"was here")
    m = make_mount(bucket, endpoint=proxy.endpoint,
                   options={"read_timeout": "2", "retries": "2", "attr_timeout": "0", "dir_cache_ttl": "0",
                            "negative_timeout": "0", "entry_timeout": "0"},
                   check_log=False)
    stall = proxy.add_rule(Rule(stall=True))
    start = time.monotonic()
    with pytest.raises(OSError) as info:
        (m.path / "before.txt").read_bytes()
    took = time.monotonic() - start
    assert info.value.errno in (errno.ETIMEDOUT, errno.EIO, errno.EAGAIN)
    assert took < 2 * 2 + 10, f"took {took:.1f} s"  # retries x read_timeout, plus backoff
    assert stall.fired >= 1
    proxy.remove_rule(stall)
    assert (m.path / "before.txt").read_bytes() == b"was here"
    (m.path / "after.txt").write_text("works again")
    assert s3.get_object(Bucket=bucket, Key="after.txt")["Body"].read() == b"works again"
    assert m.mounted


def test_the_mount_survives_an_rgw_restart_in_the_middle_of_a_workload(
    make_mount, bucket: str, rgw: LocalRGW, s3
) -> None:
    m = make_mount(bucket, options={**SMALL, "retries": "10", "read_timeout": "10"})
    errors: list[BaseException] = []
    written: dict[str, bytes] = {}
    stop = threading.Event()

    def workload() -> None:
        n = 0
        while not stop.is_set() and n < 400:
            data = random.Random(n).randbytes(random.Random(n).randint(0, 300_000))
            name = f"w{n:04d}"
            try:
                (m.path / name).write_bytes(data)
                written[name] = data
            except OSError as err:  # allowed while the server is down: the write says so
                errors.append(err)
            n += 1

    worker = threading.Thread(target=workload)
    worker.start()
    time.sleep(1.0)
    rgw.stop_rgw()
    time.sleep(2.0)
    rgw.start_rgw()
    time.sleep(1.0)
    stop.set()
    worker.join(120)
    assert not worker.is_alive()
    # Everything that was acknowledged is in the bucket, exactly.
    for name, data in written.items():
        assert s3.get_object(Bucket=bucket, Key=name)["Body"].read() == data, name
    # The same mount works on, without a remount.
    (m.path / "after-restart").write_bytes(b"fine")
    assert (m.path / "after-restart").read_bytes() == b"fine"
    assert sorted(os.listdir(m.path)) == sorted([*written, "after-restart"])


def daemon_resources(m: ZosfsMount) -> tuple[int, int]:
    """(RSS in bytes, open file descriptors) of the daemon."""
    pid = m.process.pid
    with open(f"/proc/{pid}/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def soak(m: ZosfsMount, seconds: float, seed: int) -> None:
    """Several writers and readers at once for a while."""
    deadline = time.monotonic() + seconds
    failures: list[BaseException] = []

    def writer(w: int) -> None:
        rng = random.Random(seed * 100 + w)
        while time.monotonic() < deadline:
            name = m.path / f"soak-{w}-{rng.randint(0, 20)}"
            data = rng.randbytes(rng.choice([1000, 70_000, 3 * MiB]))
            try:
                name.write_bytes(data)
                if name.read_bytes() != data:
                    failures.append(AssertionError(f"{name} read back wrong"))
                if rng.random() < 0.3:
                    name.unlink()
            except FileNotFoundError:
                pass
            except OSError as err:
                failures.append(err)

    def reader() -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            for entry in os.scandir(m.path):
                try:
                    with open(entry.path, "rb") as f:
                        f.seek(rng.randint(0, 100_000))
                        f.read(65536)
                except FileNotFoundError:
                    pass

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]


def test_soak_keeps_memory_and_file_descriptors_flat(make_mount, bucket: str) -> None:
    """Short in CI; ZOSFS_SOAK_SECONDS=600 runs the long version (README)."""
    seconds = float(os.environ.get("ZOSFS_SOAK_SECONDS", "8"))
    m = make_mount(bucket, options={**SMALL, "cache_size": "32M", "block_size": "1M"})
    soak(m, seconds / 2, seed=1)  # warm up: caches, connections, interpreter
    rss1, fds1 = daemon_resources(m)
    soak(m, seconds / 2, seed=2)
    rss2, fds2 = daemon_resources(m)
    assert rss2 <= rss1 + 24 * MiB, f"RSS grew from {rss1 >> 20} to {rss2 >> 20} MiB"
    assert fds2 <= fds1 + 8, f"open files grew from {fds1} to {fds2}"
    subprocess.run(["sync"], check=False)


def test_sigkill_during_writes_loses_nothing_that_fsync_acknowledged(make_mount, bucket: str, s3) -> None:
    m = make_mount(bucket, options=SMALL, check_log=False)
    acknowledged: dict[str, bytes] = {}
    rng = random.Random(3)
    open_files = []
    for n in range(30):
        data = rng.randbytes(rng.choice([0, 10, 5000, 300_000, 2 * MiB, 13 * MiB]))
        f = open(m.path / f"f{n:02d}", "wb")
        f.write(data)
        if n % 3:  # two in three are fsync'd; the rest stay open and unsynced
            f.flush()
            os.fsync(f.fileno())
            acknowledged[f"f{n:02d}"] = data
        open_files.append(f)
    m.kill(*open_files)
    m2 = make_mount(bucket, options=SMALL)
    for name, data in acknowledged.items():
        assert s3.get_object(Bucket=bucket, Key=name)["Body"].read() == data, name
        assert (m2.path / name).read_bytes() == data, name
