"""What the mount needs from the host: systemd, the mount point, memory and
readahead tuning, and diagnostics.

These talk to the kernel and the init system, not to ZOS or to FUSE
requests; keeping them here leaves `daemon.py` with the lifecycle alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Callable

import trio

log = logging.getLogger("zosfs")

READ_AHEAD_KB = 1024  # the kernel then asks in 1 MiB reads instead of 128 KiB ones


class MountError(Exception):
    """A failure before the mount was ready; one line for the user."""


# -- systemd -------------------------------------------------------------------------


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) how we are, if it is listening."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(address)
            s.sendall(message.encode())
    except OSError as err:
        log.warning("cannot notify systemd: %s", err)


# -- mount point checks ----------------------------------------------------------------


def mount_type(mountpoint: str) -> str | None:
    """The filesystem type mounted exactly at `mountpoint`, if any."""
    target = os.path.realpath(mountpoint)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    found = None
    for line in lines:
        fields = line.split()
        sep = fields.index("-")
        point = fields[4].replace("\\040", " ")
        if point == target:
            found = fields[sep + 1]
    return found


def check_mountpoint(mountpoint: str) -> list[str]:
    """Refuse a mount point that cannot work; clean up one left by a crash.
    Returns warnings (one line each) about a mount point that works but
    hides something.

    A FUSE mount whose daemon died still answers stat() from the kernel's
    attribute cache, so liveness is tested with statfs, which always asks the
    daemon (and fails with ENOTCONN when there is none).
    """
    warnings: list[str] = []
    kind = mount_type(mountpoint)
    if kind is not None and kind.startswith("fuse"):
        try:
            os.statvfs(mountpoint)
        except OSError as err:
            if err.errno not in (errno.ENOTCONN, errno.ECONNABORTED):
                raise MountError(f"mount point {mountpoint}: {err.strerror}") from None
            log.warning("%s was left mounted by a daemon that died; unmounting it", mountpoint)
            subprocess.run(["fusermount3", "-u", "-z", mountpoint], check=False, capture_output=True)
            print(f"zosfs: cleaned up a stale mount at {mountpoint} (its daemon had died)", file=sys.stderr)
        else:
            if kind == "fuse.zosfs":
                raise MountError(f"{mountpoint} is already mounted by zosfs; unmount it first (fusermount3 -u {mountpoint})")
    try:
        st = os.stat(mountpoint)
    except OSError as err:
        raise MountError(f"mount point {mountpoint}: {err.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"mount point {mountpoint} is not a directory")
    try:
        hidden = len(os.listdir(mountpoint))
    except OSError:
        hidden = 0
    if hidden:
        warnings.append(f"mount point {mountpoint} is not empty: its {hidden} entr{'y is' if hidden == 1 else 'ies are'} "
                        "hidden while the bucket is mounted over it")
    return warnings


M_MMAP_THRESHOLD = -3  # mallopt(3)
MMAP_THRESHOLD = 1024 * 1024


def return_freed_blocks() -> None:
    """Make glibc give block buffers (8 MiB) back to the system when freed.
    By default it raises its mmap threshold after the first such free, and
    later buffers come from heaps (one per thread that allocates: disk cache
    reads run in threads) that keep freed memory resident: a 64 MiB cache
    then cost over 300 MiB of RSS. A fixed threshold keeps them mmapped."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError) as err:  # not glibc
        log.debug("mallopt unavailable: %s", err)


def set_read_ahead(dev: int) -> None:
    """Raise the mount's readahead so sequential reads arrive in 1 MiB requests
    (needs root; without it the kernel's 128 KiB default stays). Takes the
    mount's device number: a stat here, on the trio thread, could wait for
    this very daemon to answer it."""
    path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
    try:
        with open(path, "w") as f:
            f.write(str(READ_AHEAD_KB))
    except OSError as err:
        log.debug("cannot set %s: %s", path, err.strerror)


# -- test-only fault injection ------------------------------------------------------------

FAULT_ENV = "ZOSFS_TEST_FAULT"


def injected_faults(spec: str) -> Callable[[str], None]:
    """For tests only: `Operations.fault` from ZOSFS_TEST_FAULT.

    `spec` is `OP[:N][,OP[:N]...]`: the first N calls (default 1) of handler
    OP (one of those that call `_check_fault`: lookup, getattr, opendir,
    mkdir, read, write, ...) raise an unexpected RuntimeError, so that a test
    can show such an error becomes EIO and a log line while the mount lives on.
    Never set this in production.
    """
    remaining: dict[str, int] = {}
    for item in spec.split(","):
        op, _, count = item.strip().partition(":")
        if op:
            remaining[op] = int(count) if count.strip().isdigit() else 1

    def fault(op: str) -> None:
        if remaining.get(op, 0) > 0:
            remaining[op] -= 1
            raise RuntimeError(f"fault injected into {op} by {FAULT_ENV}")

    return fault


def task_dump() -> str:
    """Where every trio task is waiting: for diagnosing a mount that hangs
    (`kill -USR1 PID` writes it to the log)."""
    lines: list[str] = []

    def walk(task: trio.lowlevel.Task, depth: int) -> None:
        frames = [f"{f.f_code.co_name}:{f.f_lineno}" for f, _ in task.iter_await_frames()]
        lines.append("  " * depth + f"{task.name}: " + " > ".join(frames[-6:]))
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child, depth + 1)

    walk(trio.lowlevel.current_root_task(), 0)
    return "\n".join(lines)


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0
