"""Running zosfs for real: systemd unit, fstab, signals, credentials, stats."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.mount import ZosfsMount, mount_type
from tests.support.rgw import MAIN_USER, LocalRGW

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "zosfs@.service"
ZOSFS = shutil.which("zosfs", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")


def credentials_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "credentials"
    path.write_text(f"{MAIN_USER.access_key}:{MAIN_USER.secret_key}\n")
    path.chmod(mode)
    return path


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def unit_lines(section: str) -> dict[str, str]:
    """Key=value lines of one section of the shipped unit."""
    current, out = None, {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            current = line
        elif current == f"[{section}]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    if not os.path.exists("/usr/local/bin/zosfs"):
        pytest.fail("/usr/local/bin/zosfs is missing: .ci/setup links it there (run as root)")
    for unit in ("zosfs@.service", "mnt-zos.mount"):
        shutil.copy(REPO / "systemd" / unit, tmp_path / unit)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "zosfs@.service"), str(tmp_path / "mnt-zos.mount")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr


def test_unit_runs_under_a_service_manager(rgw: LocalRGW, bucket: str, s3, tmp_path: Path) -> None:
    """Play systemd: NOTIFY_SOCKET, ExecStart with the unit's environment,
    wait for READY=1, use the mount, then SIGTERM as `systemctl stop` does."""
    service = unit_lines("Service")
    assert service["Type"] == "notify"
    assert service["Restart"] == "on-failure"
    mountpoint = tmp_path / "svc"
    mountpoint.mkdir()
    env_values = {
        "ZOSFS_SOURCE": bucket,
        "ZOSFS_MOUNTPOINT": str(mountpoint),
        "ZOSFS_OPTIONS": f"endpoint={rgw.endpoint},credentials={credentials_file(tmp_path)},"
                         f"cache_dir={tmp_path / 'cache'},log_file={tmp_path / 'svc.log'}",
    }
    command = service["ExecStart"]
    for name, value in env_values.items():
        command = command.replace("${" + name + "}", value)
    argv = shlex.split(command)
    argv[0] = ZOSFS  # the unit's /usr/local/bin/zosfs, as installed by .ci/setup
    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.settimeout(30)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "ZOS_ACCESS_KEY_ID", "ZOS_SECRET_ACCESS_KEY"):
        env.pop(name, None)
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE)
    try:
        messages = sock.recv(4096).decode()
        assert "READY=1" in messages and "STATUS=" in messages
        assert mount_type(mountpoint) == "fuse.zosfs"
        (mountpoint / "from-service.txt").write_text("ok")
        assert s3.get_object(Bucket=bucket, Key="from-service.txt")["Body"].read() == b"ok"
        proc.send_signal(signal.SIGTERM)
        stopping = sock.recv(4096).decode()
        assert "STOPPING=1" in stopping
        assert proc.wait(timeout=60) == 0
        assert mount_type(mountpoint) is None
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True)
        sock.close()
    assert MAIN_USER.secret_key not in (tmp_path / "svc.log").read_text()


def test_fstab_line_mounts_with_mount_t(rgw: LocalRGW, bucket: str, s3, tmp_path: Path) -> None:
    mountpoint = tmp_path / "fst"
    mountpoint.mkdir()
    s3.put_object(Bucket=bucket, Key="sub/hello.txt", Body=b"from fstab")
    fstab = tmp_path / "fstab"
    options = (f"_netdev,endpoint={rgw.endpoint},credentials={credentials_file(tmp_path)},"
               f"cache_dir={tmp_path / 'cache'},log_file={tmp_path / 'fstab.log'}")
    fstab.write_text(f"{bucket}:/sub {mountpoint} fuse.zosfs {options} 0 0\n")
    env = dict(os.environ, PATH=f"{Path(ZOSFS).parent}:{os.environ.get('PATH', '')}")
    result = subprocess.run(["mount", "-T", str(fstab), str(mountpoint)], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    try:
        assert mount_type(mountpoint) == "fuse.zosfs"
        assert (mountpoint / "hello.txt").read_text() == "from fstab"
        (mountpoint / "new.txt").write_text("via fstab mount")
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
    wait_for(lambda: mount_type(mountpoint) is None, 30, "umount")
    assert s3.get_object(Bucket=bucket, Key="sub/new.txt")["Body"].read() == b"via fstab mount"


def test_background_mount_returns_when_ready_and_second_mount_is_refused(rgw: LocalRGW, bucket: str, tmp_path: Path) -> None:
    mountpoint = tmp_path / "bg"
    mountpoint.mkdir()
    opts = f"endpoint={rgw.endpoint},credentials={credentials_file(tmp_path)},cache_dir={tmp_path / 'c'},log_file={tmp_path / 'bg.log'}"
    subprocess.run([ZOSFS, bucket, str(mountpoint), "-o", opts], check=True, timeout=60)
    try:
        assert mount_type(mountpoint) == "fuse.zosfs"  # ready when the command returned
        second = subprocess.run([ZOSFS, bucket, str(mountpoint), "-o", opts], capture_output=True, text=True, timeout=60)
        assert second.returncode != 0
        assert "already mounted" in second.stderr and "Traceback" not in second.stderr
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=True)


def test_stale_mount_of_a_killed_daemon_is_cleaned_up(make_mount, bucket: str, tmp_path: Path) -> None:
    m = make_mount(bucket)
    m.process.send_signal(signal.SIGKILL)
    m.process.wait()
    with pytest.raises(OSError):
        os.listdir(m.path)  # Transport endpoint is not connected
    again = ZosfsMount(m.endpoint, bucket, tmp_path, name=m.path.name)
    again.start()
    try:
        assert os.listdir(again.path) == []
        assert "daemon that died" in again.log_text() + (tmp_path / f"{m.path.name}.stderr").read_text()
    finally:
        again.unmount()


def test_sigterm_during_a_large_write_leaves_the_complete_file(mnt: ZosfsMount, s3) -> None:
    data = os.urandom(48 * 1024 * 1024)
    writer = subprocess.Popen(
        [sys.executable, "-c",
         "import sys,time; f=open(sys.argv[1],'wb'); f.write(sys.stdin.buffer.read()); f.flush(); "
         "print('written', flush=True); time.sleep(60)",
         str(mnt.path / "big.bin")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    try:
        writer.stdin.write(data)
        writer.stdin.close()
        assert writer.stdout.readline().strip() == b"written"  # written, not yet closed
        mnt.signal(signal.SIGTERM)
        assert mnt.process.wait(timeout=120) == 0
    finally:
        writer.kill()
        writer.wait()
    body = s3.get_object(Bucket=mnt.bucket, Key="big.bin")["Body"].read()
    assert len(body) == len(data) and body == data


@pytest.mark.parametrize("environment", ["none", "valid"])
def test_world_readable_credentials_file_is_refused(rgw: LocalRGW, bucket: str, tmp_path: Path, environment: str) -> None:
    # (With valid credentials in the environment too: the file the mount
    # names wins, as s3fs's passwd_file does, so it is checked all the same.)
    mountpoint = tmp_path / "x"
    mountpoint.mkdir()
    creds = credentials_file(tmp_path, mode=0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ZOS_"))}
    env["HOME"] = str(tmp_path)
    if environment == "valid":
        env.update(AWS_ACCESS_KEY_ID=MAIN_USER.access_key, AWS_SECRET_ACCESS_KEY=MAIN_USER.secret_key)
    result = subprocess.run([ZOSFS, bucket, str(mountpoint), "-f", "-o", f"endpoint={rgw.endpoint},credentials={creds}"],
                            capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 1
    assert "chmod 600" in result.stderr and str(creds) in result.stderr
    assert MAIN_USER.secret_key not in result.stderr
    assert mount_type(mountpoint) is None
    assert stat.S_IMODE(creds.stat().st_mode) == 0o644


@pytest.mark.parametrize("foreground", [False, True])
def test_unusable_local_paths_give_one_line_and_no_mount(rgw: LocalRGW, bucket: str, tmp_path: Path,
                                                         foreground: bool) -> None:
    mountpoint = tmp_path / "x"
    mountpoint.mkdir()
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    base = f"endpoint={rgw.endpoint},credentials={credentials_file(tmp_path)}"
    cases = [
        (f"cache_dir={tmp_path / 'c'},log_file={tmp_path / 'missing' / 'zosfs.log'}",
         f"cannot write the log file {tmp_path / 'missing' / 'zosfs.log'}: No such file or directory"),
        (f"cache_dir={tmp_path / 'c'},log_file={tmp_path}", "Is a directory (check log_file)"),
        # (in the background the log file under cache_dir is the first thing that fails)
        (f"cache_dir={a_file}", "cannot use the staging directory" if foreground else "(check cache_dir, or set log_file)"),
        (f"cache_dir={tmp_path / 'c'},log_file={tmp_path / 'l.log'},staging_dir={a_file}",
         f"cannot use the staging directory {a_file}/"),
    ]
    for extra, expected in cases:
        args = [ZOSFS, bucket, str(mountpoint), "-o", f"{base},{extra}"] + (["-f"] if foreground else [])
        result = subprocess.run(args, capture_output=True, text=True, timeout=60)
        errors = [line for line in result.stderr.splitlines() if line.startswith("zosfs: ") and "warning" not in line
                  and "no syslog socket" not in line]
        assert result.returncode == 1, (extra, result.stderr)
        assert "Traceback" not in result.stderr, (extra, result.stderr)
        assert len(errors) == 1 and expected in errors[0], (extra, result.stderr)
        assert mount_type(mountpoint) is None


def test_bad_options_and_sources_give_one_line(rgw: LocalRGW, tmp_path: Path) -> None:
    cases = [
        ([], "endpoint is required"),
        (["-o", "endpoint=http://x,cache_size=lots"], "cache_size"),
        (["-o", "endpoint=http://x,frobnicate=1"], "unknown option 'frobnicate'"),
        (["-o", "endpoint=http://x,secret_key=abc"], "secrets are not accepted"),
    ]
    for extra, expected in cases:
        result = subprocess.run([ZOSFS, "bucket", str(tmp_path), *extra], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, (extra, result.stderr)
        assert expected in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) <= 2


def test_check_command(rgw: LocalRGW, bucket: str, tmp_path: Path) -> None:
    env = dict(os.environ, AWS_ACCESS_KEY_ID=MAIN_USER.access_key, AWS_SECRET_ACCESS_KEY=MAIN_USER.secret_key)
    ok = subprocess.run([ZOSFS, "check", bucket, "-o", f"endpoint={rgw.endpoint}"], capture_output=True, text=True, env=env, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert "append:      available" in ok.stdout and rgw.endpoint in ok.stdout
    assert "listing:     ListObjects V2 (the endpoint honours V2)" in ok.stdout
    v1 = subprocess.run([ZOSFS, "check", bucket, "-o", f"endpoint={rgw.endpoint},list_api=v1"], capture_output=True,
                        text=True, env=env, timeout=30)
    assert "listing:     ListObjects V1 (the endpoint honours V2)" in v1.stdout, v1.stderr
    bad = [
        (["check", "no-such-bucket-zz", "-o", f"endpoint={rgw.endpoint}"], env, "does not exist"),
        (["check", bucket, "-o", "endpoint=http://127.0.0.1:9"], env, "cannot reach"),
        (["check", bucket, "-o", f"endpoint={rgw.endpoint}"], dict(env, AWS_SECRET_ACCESS_KEY="wrong"), "rejected the credentials"),
    ]
    for args, e, expected in bad:
        result = subprocess.run([ZOSFS, *args], capture_output=True, text=True, env=e, timeout=60)
        assert result.returncode == 1 and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_stats_on_a_busy_mount(mnt: ZosfsMount) -> None:
    for i in range(20):
        (mnt.path / f"f{i}").write_bytes(b"x" * 1000)
    os.listdir(mnt.path)
    human = subprocess.run([ZOSFS, "stats", str(mnt.path)], capture_output=True, text=True, check=True).stdout
    assert "request" in human and "hit ratio" in human
    data = json.loads(subprocess.run([ZOSFS, "stats", str(mnt.path), "--json"], capture_output=True, text=True, check=True).stdout)
    assert data["requests"]["PutObject"]["count"] >= 20  # (small new files: one PUT each, see whole_put)
    assert data["requests"]["ListObjects"]["count"] >= 1
    assert data["memory_rss"] > 0 and "hit_ratio" in data["cache"] and "uploads" in data


def test_version_and_help() -> None:
    assert subprocess.run([ZOSFS, "--version"], capture_output=True, text=True, check=True).stdout.startswith("zosfs ")
    text = subprocess.run([ZOSFS, "--help"], capture_output=True, text=True, check=True).stdout
    assert "usage:" in text and "multipart_threshold" in text
