"""Real FUSE mounts of zosfs for the filesystem tests.

`ZosfsMount` runs `python -m zosfs BUCKET MOUNTPOINT -f -o ...` as a child
process against the local RGW (or a fault proxy in front of it), waits until
the mount answers, and unmounts it afterwards. The daemon logs to a file;
`check_log` fails a test whose daemon logged a traceback or an internal
error, so that an error swallowed into EIO is still noticed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from tests.support.rgw import MAIN_USER, User

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0


def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def staging_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The files under a staging directory that hold written data, and their
    journals (sorted): not the lock, and not the spares a mount makes ahead
    (empty files whose journal says "spare": see `zosfs.data.staging`).
    Files of a finished upload are removed in the background: wait for []."""
    found = []
    root = Path(directory)
    for path in sorted(root.rglob("*")) if root.exists() else []:
        if not path.is_file() or path.name == "lock":
            continue
        try:
            record = json.loads(path.with_suffix(".json").read_text())
        except (OSError, ValueError):
            record = {}
        if not (isinstance(record, dict) and record.get("spare")):
            found.append(path)
    return found


def mount_type(path: str | os.PathLike[str]) -> str | None:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        found = None
        for line in f:
            fields = line.split()
            if fields[4] == target:
                found = fields[fields.index("-") + 1]
    return found


class ZosfsMount:
    """One zosfs daemon and its mount point."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        workdir: Path,
        *,
        prefix: str = "",
        options: dict[str, str] | None = None,
        user: User = MAIN_USER,
        name: str = "mnt",
    ) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self.workdir = workdir
        self.path = workdir / name
        self.log = workdir / f"{name}.log"
        self.cache_dir = workdir / f"{name}-cache"
        self.prefix = prefix
        self.user = user
        self.options = {
            "endpoint": endpoint,
            "log_file": str(self.log),
            "cache_dir": str(self.cache_dir),
            "log_level": "debug",
            "retries": "3",
        }
        self.options.update(options or {})
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def source(self) -> str:
        return f"{self.bucket}:/{self.prefix}" if self.prefix else self.bucket

    def command(self) -> list[str]:
        opts = ",".join(f"{k}={v}" if v != "" else k for k, v in self.options.items())
        return [sys.executable, "-m", "zosfs", self.source, str(self.path), "-f", "-o", opts]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["AWS_ACCESS_KEY_ID"] = self.user.access_key
        env["AWS_SECRET_ACCESS_KEY"] = self.user.secret_key
        env.pop("ZOS_ACCESS_KEY_ID", None)
        env.pop("ZOS_SECRET_ACCESS_KEY", None)
        return env

    def start(self) -> ZosfsMount:
        self.path.mkdir(parents=True, exist_ok=True)
        stderr = open(self.workdir / f"{self.path.name}.stderr", "ab")
        self.process = subprocess.Popen(self.command(), env=self.env(), stdout=stderr, stderr=stderr)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"zosfs exited with {self.process.returncode} before mounting:\n{self.tail()}")
            if mount_type(self.path) == "fuse.zosfs":
                try:
                    os.statvfs(self.path)  # asks the daemon; stat() may come from a stale mount's cache
                    return self
                except OSError:
                    pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"zosfs did not mount within {READY_TIMEOUT} s:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        text = ""
        for path in (self.log, self.workdir / f"{self.path.name}.stderr"):
            if path.exists():
                text += f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    def stats(self) -> dict:
        """The daemon's live numbers (what `zosfs stats --json` shows)."""
        return json.loads(os.getxattr(self.path, "user.zosfs.stats"))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @property
    def mounted(self) -> bool:
        return mount_type(self.path) == "fuse.zosfs"

    def unmount(self) -> int:
        """fusermount3 -u, then wait for the daemon to flush and exit."""
        assert self.process is not None
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.mounted and time.monotonic() < deadline:
            result = subprocess.run(["fusermount3", "-u", str(self.path)], capture_output=True, text=True)
            if result.returncode == 0:
                break
            time.sleep(0.2)  # busy: a test's file may still be closing
        try:
            return self.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGUSR1)  # the daemon logs what each of its tasks waits for
            time.sleep(1)
            self.kill()
            raise RuntimeError(f"zosfs did not exit after unmount:\n{self.tail(200)}") from None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self, *open_files: IO[bytes]) -> None:
        """SIGKILL the daemon and clean up its dead mount. Files the test
        still holds open on it are closed in between, while the mount is
        dead: their close fails (ENOTCONN), as it would for a user."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        for f in open_files:
            try:
                f.close()
            except OSError:
                pass
        subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)

    def check_log(self) -> None:
        """No traceback, no internal error, and never the secret key."""
        text = self.log_text()
        for marker in ("Traceback", "internal error"):
            assert marker not in text, f"zosfs logged {marker!r}:\n{self.tail(200)}"
        stderr = self.workdir / f"{self.path.name}.stderr"
        for source in (text, stderr.read_text(errors="replace") if stderr.exists() else ""):
            assert self.user.secret_key not in source, "the secret key appeared in zosfs's output"


def vm_hwm(pid: int) -> int:
    """Peak resident memory of a process, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def drop_page_cache() -> None:
    """Make the next reads reach the daemon instead of the kernel's page cache."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
