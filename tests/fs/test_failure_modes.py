"""Failure modes at the edges of a mount's life (issue 18): where the log goes
when there is no syslog, what a wrong or silent endpoint looks like, and the
warnings for an empty prefix and a non-empty mount point. Real mounts, real
RGW, real sockets on loopback."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mount import mount_type, wait_until
from tests.support.rgw import MAIN_USER, LocalRGW


def credentials_file(tmp_path: Path) -> Path:
    path = tmp_path / "credentials"
    path.write_text(f"{MAIN_USER.access_key}:{MAIN_USER.secret_key}\n")
    path.chmod(0o600)
    return path


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "ZOS_ACCESS_KEY_ID", "ZOS_SECRET_ACCESS_KEY")}
    env.update(extra)
    return env


def zosfs(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the `zosfs` command as a user would (a mount without -f goes to the background)."""
    return subprocess.run([sys.executable, "-m", "zosfs", *args], env=env, capture_output=True, text=True, timeout=timeout)


def unmount(mountpoint: Path) -> None:
    subprocess.run(["fusermount3", "-u", str(mountpoint)], check=True)
    assert wait_until(lambda: mount_type(mountpoint) is None, 30)


@pytest.fixture
def mountpoint(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "mp"
    path.mkdir()
    yield path
    if mount_type(path) is not None:
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)


# -- 18.4: the log always goes somewhere ------------------------------------------------


def test_background_mount_without_syslog_logs_to_a_rotated_file_and_says_where(
    rgw: LocalRGW, bucket: str, s3, mountpoint: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    env = clean_env(ZOSFS_SYSLOG_SOCKET=str(tmp_path / "no-such-socket"))
    opts = f"endpoint={rgw.endpoint},credentials={credentials_file(tmp_path)},cache_dir={cache}"
    result = zosfs(bucket, str(mountpoint), "-o", opts, env=env)
    assert result.returncode == 0, result.stderr
    try:
        lines = [line for line in result.stderr.splitlines() if "logs to" in line]
        assert len(lines) == 1, result.stderr
        log_path = Path(lines[0].split("logs to ", 1)[1])
        assert log_path.parent == cache / "log" and log_path.suffix == ".log"
        assert f"mounted {bucket} at {mountpoint}" in log_path.read_text()
        stats = json.loads(os.getxattr(mountpoint, "user.zosfs.stats"))
        assert stats["log"] == str(log_path)
        shown = subprocess.run([sys.executable, "-m", "zosfs", "stats", str(mountpoint)], capture_output=True, text=True)
        assert f"log {log_path}" in shown.stdout.splitlines()
        (mountpoint / "through-the-daemon.txt").write_text("x")
    finally:
        unmount(mountpoint)
    assert s3.get_object(Bucket=bucket, Key="through-the-daemon.txt")["Body"].read() == b"x"
    assert wait_until(lambda: f"unmounted {mountpoint}" in log_path.read_text(), 30)  # the daemon's last line
    assert MAIN_USER.secret_key not in log_path.read_text()


def test_background_mount_with_a_syslog_socket_logs_there(
    rgw: LocalRGW, bucket: str, mountpoint: Path, tmp_path: Path
) -> None:
    """The other side of the same check: where a syslog socket exists, the
    daemon's lines arrive on it, no file is written, and nothing is announced."""
    address = str(tmp_path / "syslog.sock")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(address)
    sink.settimeout(30)
    cache = tmp_path / "cache"
    try:
        opts = f"endpoint={rgw.endpoint},credentials={credentials_file(tmp_path)},cache_dir={cache}"
        result = zosfs(bucket, str(mountpoint), "-o", opts, env=clean_env(ZOSFS_SYSLOG_SOCKET=address))
        assert result.returncode == 0, result.stderr
        try:
            received = ""
            deadline = time.monotonic() + 30
            while f"mounted {bucket} at {mountpoint}" not in received and time.monotonic() < deadline:
                received += sink.recv(65536).decode(errors="replace") + "\n"
            assert f"mounted {bucket} at {mountpoint}" in received
            assert "zosfs[" in received  # syslog's tag and pid
            assert "logs to" not in result.stderr
            assert json.loads(os.getxattr(mountpoint, "user.zosfs.stats"))["log"] == "syslog"
        finally:
            unmount(mountpoint)
    finally:
        sink.close()
    assert not (cache / "log").exists()


def test_lookup_misses_and_unconfigured_features_are_not_errors_in_stats(make_mount, bucket: str, s3) -> None:
    s3.put_object(Bucket=bucket, Key="present.txt", Body=b"p")
    s3.put_object(Bucket=bucket, Key="doomed.txt", Body=b"d")
    m = make_mount(bucket)
    for name in ("absent-1", "absent-2", "absent-3"):
        assert not (m.path / name).exists()
    with pytest.raises(OSError) as caught:  # a bucket without object lock: no such attribute, no request
        os.getxattr(m.path / "present.txt", "user.zos.retention")
    assert caught.value.errno == errno.ENODATA
    stats = m.stats()["requests"]
    assert stats["HeadObject"]["count"] >= 3 and "GetObjectRetention" not in stats
    assert stats["GetObjectLockConfiguration"]["count"] == 1  # answered "not configured" at mount time
    assert sum(s["errors"] for s in stats.values()) == 0, stats
    # A real failure still counts: a GET of an object deleted behind the mount's back.
    assert (m.path / "doomed.txt").exists()
    s3.delete_object(Bucket=bucket, Key="doomed.txt")
    with pytest.raises(OSError):
        (m.path / "doomed.txt").read_bytes()
    stats = m.stats()["requests"]
    assert stats["GetObject"]["errors"] >= 1, stats


# -- 18.7: wrong scheme, silent endpoint ---------------------------------------------------


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A loopback server that accepts every connection and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_mount_against_a_silent_endpoint_fails_within_connect_timeout(
    silent_endpoint: str, scheme: str, mountpoint: Path, tmp_path: Path
) -> None:
    endpoint = f"{scheme}://{silent_endpoint}"
    opts = f"endpoint={endpoint},credentials={credentials_file(tmp_path)},cache_dir={tmp_path / 'c'},connect_timeout=2"
    start = time.monotonic()
    result = zosfs("some-bucket", str(mountpoint), "-o", opts, env=clean_env(), timeout=30)
    elapsed = time.monotonic() - start
    assert result.returncode == 1
    assert 2 <= elapsed < 8, f"took {elapsed:.1f} s (read_timeout is 60 s)"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"zosfs: cannot reach the endpoint {endpoint} (")
    assert "2 s" in last and "Traceback" not in result.stderr
    assert mount_type(mountpoint) is None


def test_https_against_a_plain_http_server_says_so(rgw: LocalRGW, bucket: str, mountpoint: Path, tmp_path: Path) -> None:
    endpoint = rgw.endpoint.replace("http://", "https://")
    opts = f"endpoint={endpoint},credentials={credentials_file(tmp_path)},cache_dir={tmp_path / 'c'}"
    start = time.monotonic()
    result = zosfs(bucket, str(mountpoint), "-o", opts, env=clean_env(), timeout=30)
    assert time.monotonic() - start < 8
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "does not speak TLS" in last and "http://" in last, last
    assert "Error" not in last.replace("zosfs: ", ""), f"an internal class name in {last!r}"
    check = zosfs("check", bucket, "-o", opts, env=clean_env(), timeout=30)
    assert check.returncode == 1 and "does not speak TLS" in check.stderr


# -- warnings that do not stop the mount ---------------------------------------------------


def test_missing_prefix_and_non_empty_mount_point_each_warn_in_one_line(
    rgw: LocalRGW, bucket: str, s3, mountpoint: Path, tmp_path: Path
) -> None:
    s3.put_object(Bucket=bucket, Key="real/file.txt", Body=b"r")
    (mountpoint / "left-here").write_text("hidden while mounted")
    base = f"endpoint={rgw.endpoint},credentials={credentials_file(tmp_path)},cache_dir={tmp_path / 'c'},log_file={tmp_path / 'm.log'}"
    result = zosfs(f"{bucket}:/reall", str(mountpoint), "-o", base, env=clean_env())
    assert result.returncode == 0, result.stderr
    try:
        warnings = [line for line in result.stderr.splitlines() if line.startswith("zosfs: warning: ")]
        assert len(warnings) == 2, result.stderr
        assert any("'reall/'" in w and "holds no objects" in w for w in warnings), warnings
        assert any(f"mount point {mountpoint} is not empty" in w for w in warnings), warnings
        assert os.listdir(mountpoint) == []
    finally:
        unmount(mountpoint)
    (mountpoint / "left-here").unlink()
    result = zosfs(f"{bucket}:/real", str(mountpoint), "-o", base, env=clean_env())
    assert result.returncode == 0, result.stderr
    try:
        assert "warning" not in result.stderr
        assert os.listdir(mountpoint) == ["file.txt"]
    finally:
        unmount(mountpoint)


def test_foreground_mount_with_a_log_file_warns_on_the_terminal_too(make_mount, bucket: str) -> None:
    m = make_mount(bucket, prefix="nothing-here")
    stderr = (m.workdir / f"{m.path.name}.stderr").read_text()
    assert "zosfs: warning: prefix 'nothing-here/' of bucket" in stderr
    assert "holds no objects yet" in m.log_text()
