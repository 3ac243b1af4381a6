"""The write path when something runs out (issue 18, items 1, 2, 3, 5): the
staging budget, the staging filesystem, the server. Every case ends within a
bound (never a hang), with success or the errno that names the resource,
and afterwards the bucket, the staging directory and the log agree: nothing
acknowledged is missing from the bucket or staging, and no log line claims
otherwise. Real mounts, real RGW, a real tmpfs."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.faultproxy import FaultProxy, Rule
from tests.support.mount import ZosfsMount, wait_until
from tests.support.objects import get, pattern

MiB = 1024 * 1024
WRITES = {"AppendObject", "PutObject", "UploadPart", "UploadPartCopy", "CreateMultipartUpload",
          "CompleteMultipartUpload"}

# Writes `data` at `offset` of `path` in 1 MiB write() calls, then closes it;
# prints what was acknowledged and the errno of the first failure (a separate
# process, so that a hang cannot take the test runner with it).
WRITER = r"""
import errno, json, os, sys
path, data_path, offset, create = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
data = open(data_path, "rb").read()
out = {"acked": 0, "write_errno": None, "close_errno": None}
fd = os.open(path, os.O_WRONLY | (os.O_CREAT | os.O_TRUNC if create else 0), 0o644)
try:
    while out["acked"] < len(data):
        piece = data[out["acked"] : out["acked"] + (1 << 20)]
        out["acked"] += os.pwrite(fd, piece, offset + out["acked"])
except OSError as err:
    out["write_errno"] = err.errno
try:
    os.close(fd)
except OSError as err:
    out["close_errno"] = err.errno
print(json.dumps(out), flush=True)
"""


def run_writer(tmp_path: Path, m: ZosfsMount, name: str, data: bytes, offset: int = 0, create: bool = False,
               timeout: float = 30) -> tuple[dict[str, Any], float]:
    """Run WRITER; returns its report and how long it took. A writer that
    does not finish within `timeout` fails the test (after the daemon is
    killed, so that the writer is released)."""
    data_path = tmp_path / f"{name.replace('/', '_')}.input"
    data_path.write_bytes(data)
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(m.path / name), str(data_path), str(offset),
                             "1" if create else "0"], stdout=subprocess.PIPE, text=True)
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        m.signal(10)  # SIGUSR1: the daemon logs where each task waits
        time.sleep(1)
        tail = m.tail(80)
        m.kill()
        proc.kill()
        proc.communicate(timeout=30)
        pytest.fail(f"the writer hung for {timeout} s:\n{tail}")
    data_path.unlink()
    assert proc.returncode == 0, stdout
    return json.loads(stdout), time.monotonic() - start


def staging_journals(m: ZosfsMount, staging: Path | None = None) -> list[Path]:
    root = staging or m.cache_dir / "staging"
    return sorted(p for p in root.rglob("*.json") if "recovery" not in p.parts)


def errors_in_log(m: ZosfsMount) -> list[str]:
    return [line for line in m.log_text().splitlines() if " ERROR " in line or "Traceback" in line]


def assert_nothing_left_and_log_clean(m: ZosfsMount, staging: Path | None = None) -> None:
    """Everything acknowledged was stored: no journal in staging, and no
    ERROR in the log claiming data is elsewhere."""
    assert staging_journals(m, staging) == [], m.tail(40)
    assert errors_in_log(m) == [], m.tail(40)
    assert "cannot reach the server" not in m.log_text()


# -- 18.1: the staging budget ----------------------------------------------------------


CASES = {
    # name: (object size, offset, length): a 4 MiB patch of a 50 MiB file, a 12 MiB in-place rewrite
    "patch": (50 * MiB, 20 * MiB + 12345, 4 * MiB),
    "rewrite": (12 * MiB, 0, 12 * MiB),
}


@pytest.mark.parametrize("budget", ["1M", "8M"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_change_larger_than_the_staging_budget_ends_within_30_s(
    budget: str, case: str, bucket: str, s3: Any, make_mount: Any, tmp_path: Path
) -> None:
    size, offset, length = CASES[case]
    old = pattern(size, 1)
    s3.put_object(Bucket=bucket, Key="f", Body=old)
    m = make_mount(bucket, options={"staging_size": budget, "write_deadline": "20"})
    change = pattern(length, 2)
    report, took = run_writer(tmp_path, m, "f", change, offset)
    assert took < 30
    # It goes out piecewise (each part as often as the budget fills): no ENOSPC.
    assert report == {"acked": length, "write_errno": None, "close_errno": None}, (report, m.tail(40))
    expected = old[:offset] + change + old[offset + length:]
    assert get(s3, bucket, "f") == expected
    assert (m.path / "f").read_bytes() == expected
    m.unmount()
    assert_nothing_left_and_log_clean(m)


def test_a_staging_budget_below_one_write_is_refused_at_mount(bucket: str, make_mount: Any) -> None:
    with pytest.raises(RuntimeError) as caught:
        make_mount(bucket, options={"staging_size": "512K"}, check_log=False)
    assert "option staging_size: must be at least 1M" in str(caught.value)


# -- 18.2: the staging filesystem is full ----------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "small-staging"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_staging_filesystem_is_enospc_and_the_mount_recovers_by_itself(
    bucket: str, s3: Any, make_mount: Any, tmp_path: Path, small_tmpfs: Path
) -> None:
    staging = small_tmpfs / "staging"
    m = make_mount(bucket, options={"staging_dir": str(staging)})
    filler = small_tmpfs / "filler"
    filler.write_bytes(bytes(7 * MiB))  # leaves under 1 MiB of the 8 MiB
    data = pattern(4 * MiB, 3)
    report, took = run_writer(tmp_path, m, "full", data, create=True)
    assert report["write_errno"] == errno.ENOSPC, report
    assert report["acked"] < len(data)
    assert report["close_errno"] is None, (report, m.tail(40))
    # What was acknowledged is in the bucket; what was not was reported.
    assert get(s3, bucket, "full") == data[: report["acked"]]
    text = m.log_text()
    assert "Traceback" not in text and "cannot reach the server" not in text
    assert re.search(rf"the staging directory {re.escape(str(small_tmpfs))}\S* is full \(\d+ bytes free", text), \
        m.tail(40)
    # Space is freed: the same mount takes the whole file.
    filler.unlink()
    report, took = run_writer(tmp_path, m, "full", data, create=True)
    assert report == {"acked": len(data), "write_errno": None, "close_errno": None}, (report, m.tail(40))
    assert get(s3, bucket, "full") == data
    # A 50 MiB copy into 8 MiB of staging: appended bytes leave staging as
    # they go, so it fits, or fails with ENOSPC; never EIO, never a hang.
    big = pattern(50 * MiB, 4)
    report, took = run_writer(tmp_path, m, "big", big, create=True)
    assert report["write_errno"] in (None, errno.ENOSPC) and report["close_errno"] is None, (report, m.tail(40))
    assert get(s3, bucket, "big") == big[: report["acked"]]
    m.unmount()
    assert_nothing_left_and_log_clean(m, staging)


# -- 18.3: the server stops storing --------------------------------------------------------


def test_a_writer_ahead_of_a_stalled_server_is_held_back_once_not_at_every_write(
    bucket: str, s3: Any, proxy: FaultProxy, make_mount: Any, tmp_path: Path
) -> None:
    """A writer more than 128 MiB ahead of its appends waits for them (at
    most write_deadline). With the server stalled, that wait runs out once;
    the writes after it must not each wait write_deadline again (a 1 MiB
    write every two minutes looked like a hang to `cp`). The staging budget
    still bounds them, and close says EIO with the data kept."""
    deadline = 3
    m = make_mount(bucket, endpoint=proxy.endpoint, check_log=False,
                   options={"write_deadline": str(deadline), "read_timeout": "60", "flush_timeout": "5"})
    stall = proxy.add_rule(Rule(op=WRITES, stall=True))
    data = pattern(140 * MiB, 8)  # 12 MiB past the 128 MiB a writer may be ahead
    report, took = run_writer(tmp_path, m, "ahead", data, create=True, timeout=12 * deadline + 30)
    assert report["write_errno"] is None and report["acked"] == len(data), report
    assert report["close_errno"] == errno.EIO, report
    # Held once (deadline), the close's flush (deadline), then the close's
    # own attempt: far below the twelve waits of one MiB each.
    assert took < 4 * deadline + 8, f"writing 140 MiB took {took:.1f} s with write_deadline={deadline}"
    assert m.log_text().count("made no progress within write_deadline") == 1, m.tail(40)
    m.unmount()
    proxy.remove_rule(stall)
    assert "ahead" not in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.mark.parametrize("case", ["new", "rewrite"])
def test_a_stalled_server_turns_into_eio_within_write_deadline(
    case: str, bucket: str, s3: Any, proxy: FaultProxy, make_mount: Any, tmp_path: Path
) -> None:
    old = pattern(12 * MiB, 5)
    if case == "rewrite":
        s3.put_object(Bucket=bucket, Key="f", Body=old)
    deadline, flush_timeout = 5, 8
    m = make_mount(bucket, endpoint=proxy.endpoint,
                   options={"write_deadline": str(deadline), "flush_timeout": str(flush_timeout),
                            "read_timeout": "60"})
    stall = proxy.add_rule(Rule(op=WRITES, stall=True))
    data = pattern(3 * MiB, 6)
    report, took = run_writer(tmp_path, m, "f", data, create=case == "new", timeout=4 * deadline + 10)
    assert report["write_errno"] is None and report["acked"] == len(data), report
    assert report["close_errno"] == errno.EIO, report
    assert took < 3 * deadline + 5, f"close took {took:.1f} s with write_deadline={deadline}"
    # The log names where the data is, and says what the bucket holds.
    kept = re.findall(r"the data of 'f' could not be uploaded \(.*?\); it is kept in (\S+) ", m.log_text())
    assert kept, m.tail(40)
    with open(kept[-1], "rb") as staged:
        assert staged.read(len(data)) == data
    said = "no object of it" if case == "new" else "the object as it was before these changes"
    assert f"The bucket holds {said}" in m.log_text(), m.tail(40)
    # umount ends within flush_timeout even with the server still stalled.
    start = time.monotonic()
    m.unmount()
    assert time.monotonic() - start < flush_timeout + 5
    proxy.remove_rule(stall)
    if case == "rewrite":
        assert get(s3, bucket, "f") == old  # never a partial object
    else:
        assert "f" not in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    # A new mount comes up at once and recovers in the background.
    m2 = make_mount(bucket, endpoint=proxy.endpoint, options={"cache_dir": str(m.cache_dir)})
    deadline_at = time.monotonic() + 30
    while "recovery of" not in m2.log_text() and time.monotonic() < deadline_at:
        time.sleep(0.2)
    assert "recovery of" in m2.log_text(), m2.tail(40)
    if case == "new":
        assert get(s3, bucket, "f") == data  # a new file's data: recovered into the key
    else:
        # A change to an existing object is moved aside for a person, and the log says where.
        moved = re.findall(r"it is in (\S+)", m2.log_text())
        assert moved and Path(moved[0]).exists(), m2.tail(40)
        assert get(s3, bucket, "f") == old
    m2.unmount()
    assert staging_journals(m2) == []


def test_sigusr1_says_where_each_fuse_request_waits(
    bucket: str, s3: Any, proxy: FaultProxy, make_mount: Any
) -> None:
    """A request that hangs must be diagnosable: `kill -USR1` logs each FUSE
    request in progress, how long it has run and where it waits (pyfuse3's
    own tasks show only its Cython frames)."""
    data = pattern(3 * MiB, 2)
    s3.put_object(Bucket=bucket, Key="held", Body=data)
    m = make_mount(bucket, endpoint=proxy.endpoint, check_log=False)
    assert (m.path / "held").stat().st_size == len(data)
    stall = proxy.add_rule(Rule(op="GetObject", stall=True))
    reader = subprocess.Popen(["cat", str(m.path / "held")], stdout=subprocess.PIPE)
    try:
        assert wait_until(lambda: stall.fired >= 1, timeout=10)
        time.sleep(0.5)
        m.signal(10)  # SIGUSR1
        assert wait_until(lambda: "FUSE requests in progress:" in m.log_text(), timeout=10), m.tail(20)
        dump = m.log_text().split("FUSE requests in progress:")[-1]
        reads = [ln for ln in dump.splitlines() if ln.startswith("  read for ")]  # (the kernel reads ahead too)
        assert reads, dump
        assert float(reads[0].split()[2]) >= 0.5, reads[0]
        assert any("_load:" in ln and " > " in ln for ln in reads), dump  # (down to the block's GET)
    finally:
        proxy.remove_rule(stall)  # (the held GET is reset and sent again)
        out, _ = reader.communicate(timeout=60)
    assert out == data


def test_a_request_that_runs_long_is_logged_with_where_it_waits_without_asking(
    bucket: str, s3: Any, proxy: FaultProxy, make_mount: Any
) -> None:
    """A hang must be in the log while it happens, not only when someone
    thinks of `kill -USR1`: a FUSE request still running after slow_request
    is logged once, with where it waits, and its end is logged too."""
    data = pattern(3 * MiB, 3)
    s3.put_object(Bucket=bucket, Key="held", Body=data)
    m = make_mount(bucket, endpoint=proxy.endpoint, options={"slow_request": "0.5"})
    assert (m.path / "held").stat().st_size == len(data)
    stall = proxy.add_rule(Rule(op="GetObject", stall=True))
    reader = subprocess.Popen(["cat", str(m.path / "held")], stdout=subprocess.PIPE)
    try:
        assert wait_until(lambda: "FUSE read still running after" in m.log_text(), timeout=10), m.tail(20)
        time.sleep(1.5)  # (three more looks at the running requests)
        slow = [ln for ln in m.log_text().splitlines() if "FUSE read still running after" in ln]
        assert any("_load:" in ln and " > " in ln for ln in slow), slow  # (down to the block's GET)
        # Once per request: the kernel's read-ahead may have a few reads waiting, not one line per look.
        assert len(slow) <= 4, slow
        assert "FUSE read ended after" not in m.log_text()
    finally:
        proxy.remove_rule(stall)  # (the held GET is reset and sent again)
        out, _ = reader.communicate(timeout=60)
    assert out == data
    assert wait_until(lambda: "FUSE read ended after" in m.log_text(), timeout=10), m.tail(20)
    ended = [ln for ln in m.log_text().splitlines() if "FUSE read ended after" in ln]
    assert float(ended[0].split("ended after ")[1].split()[0]) >= 2.0, ended


# -- the server's quota ------------------------------------------------------------------


@pytest.mark.parametrize("size", [3 * MiB, 9 * MiB])  # one PUT at close; appends while written
def test_a_bucket_quota_on_the_server_is_edquot_at_close_and_the_data_stays_in_staging(
    size: int, bucket: str, s3: Any, rgw: Any, make_mount: Any, tmp_path: Path
) -> None:
    rgw.admin("quota", "set", "--quota-scope=bucket", f"--bucket={bucket}", "--max-size=1048576")
    rgw.admin("quota", "enable", "--quota-scope=bucket", f"--bucket={bucket}")
    m = make_mount(bucket, options={"write_deadline": "30"})
    small = pattern(100 * 1024, 1)
    (m.path / "small").write_bytes(small)  # within the quota: stored as usual
    (m.path / "sub").mkdir()
    data = pattern(size, 7)
    report, _ = run_writer(tmp_path, m, "sub/big", data, create=True, timeout=60)
    assert report["write_errno"] is None and report["acked"] == len(data), report
    # "Disk quota exceeded", as a full disk of one's own would say, not "Input/output error".
    assert report["close_errno"] == errno.EDQUOT, report
    # (The log names where the data is when the file is released, just after close returns.)
    said = r"the data of 'sub/big' could not be uploaded \(.*QuotaExceeded.*?\); it is kept in (\S+) "
    assert wait_until(lambda: re.search(said, m.log_text()), 10), m.tail(40)
    with open(re.findall(said, m.log_text())[-1], "rb") as staged:
        assert staged.read() == data
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert "small" in keys and get(s3, bucket, "small") == small
    stored = "sub/big" in keys
    # The log says what the bucket holds under the key, and it is true; and
    # the mount shows what the bucket holds: no name for data never stored.
    assert ("The bucket holds no object of it" in m.log_text()) == (not stored), (keys, m.tail(40))
    assert ("big" in os.listdir(m.path / "sub")) == stored
    assert (m.path / "sub" / "big").exists() == stored
    if not stored:
        (m.path / "sub").rmdir()  # (not ENOTEMPTY for a name that holds nothing)
        assert not (m.path / "sub").exists()
    rgw.admin("quota", "disable", "--quota-scope=bucket", f"--bucket={bucket}")
