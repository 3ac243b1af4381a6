"""The mount's life: set up the layers, mount, serve, flush, unmount.

`Mount.run` is the whole lifecycle inside one trio run: probe the bucket
(clear errors before anything is mounted), build the layers, mount with
pyfuse3, announce readiness (to the parent process, and to systemd via
NOTIFY_SOCKET) only once the mount answers, serve until unmounted or
signalled, then flush every dirty file (bounded by `flush_timeout`) before
unmounting.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import logging.handlers
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyfuse3
import trio

from zosfs import __version__
from zosfs.credentials import Credentials
from zosfs.data.cache.disk import open_disk_cache
from zosfs.data.read import BlockCache
from zosfs.data.recovery import recover
from zosfs.data.staging import Staging
from zosfs.data.write import WritePath
from zosfs.fuse_ops import Operations
from zosfs.namespace.metacache import MetaCache
from zosfs.namespace.tree import Namespace
from zosfs.options import Options
from zosfs.xattrs import Xattrs
from zosfs.zos import ClientConfig, RequestStats, ZosClient, ZosError, probe
from zosfs.zos.probe import prefix_is_empty

log = logging.getLogger("zosfs")

READ_AHEAD_KB = 1024  # the kernel then asks in 1 MiB reads instead of 128 KiB ones


class MountError(Exception):
    """A failure before the mount was ready; one line for the user."""


@dataclass(frozen=True)
class Source:
    bucket: str
    prefix: str  # "" or "some/prefix/"

    @classmethod
    def parse(cls, text: str) -> Source:
        """'BUCKET', 'BUCKET:/PREFIX' or 'BUCKET:PREFIX'."""
        bucket, _, prefix = text.partition(":")
        bucket = bucket.strip()
        if not bucket or "/" in bucket or len(bucket) > 255:
            raise ValueError(f"not a bucket name: {bucket!r} (expected BUCKET or BUCKET:/PREFIX)")
        prefix = "/".join(p for p in prefix.split("/") if p)
        return cls(bucket, prefix + "/" if prefix else "")

    def __str__(self) -> str:
        return f"{self.bucket}:/{self.prefix}" if self.prefix else self.bucket


# -- logging -----------------------------------------------------------------------


class RedactFilter(logging.Filter):
    """Defence in depth: should a secret ever reach a log message, mask it."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            if any(s in message for s in self.secrets):
                for s in self.secrets:
                    message = message.replace(s, "***")
                record.msg, record.args = message, None
        return True


SYSLOG_ENV = "ZOSFS_SYSLOG_SOCKET"  # where the syslog socket is; unset: /dev/log
LOG_FILE_SIZE = 4 * 2**20  # a log zosfs writes on its own rotates at this size...
LOG_FILE_BACKUPS = 3  # ...keeping this many older files (16 MiB at most in all)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def state_name(opts: Options, source: Source) -> str:
    """One mount's name for its files (metadata cache, staging, log): the
    bucket, and a hash that tells apart endpoints and prefixes."""
    ident = f"{opts.endpoint}|{source.bucket}|{source.prefix}"
    return f"{source.bucket}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}"


def syslog_socket() -> str:
    return os.environ.get(SYSLOG_ENV) or "/dev/log"


def log_destination(opts: Options, source: Source, foreground: bool) -> str:
    """Where the mount's log goes: a file path, "stderr", or "syslog".

    A background mount on a machine without a syslog socket (containers,
    minimal VMs) has no stderr either, so it logs to a size-rotated file in
    the cache directory rather than nowhere."""
    if opts.log_file:
        return opts.log_file
    if foreground:
        return "stderr"
    if os.path.exists(syslog_socket()):
        return "syslog"
    return os.path.join(opts.cache_dir, "log", state_name(opts, source) + ".log")


def setup_logging(opts: Options, source: Source, foreground: bool, secrets: list[str]) -> str:
    """Send the log to `log_destination` and return it."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    where = log_destination(opts, source, foreground)
    handler: logging.Handler
    if where == "syslog":
        handler = logging.handlers.SysLogHandler(address=syslog_socket(), facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        handler.setFormatter(logging.Formatter("zosfs[%(process)d]: %(levelname)s %(name)s: %(message)s"))
    elif where == "stderr":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    elif where == opts.log_file:
        handler = logging.FileHandler(where)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    else:
        os.makedirs(os.path.dirname(where), mode=0o700, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(where, maxBytes=LOG_FILE_SIZE, backupCount=LOG_FILE_BACKUPS)
        handler.setFormatter(logging.Formatter("%(asctime)s zosfs[%(process)d] %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactFilter(secrets))
    root.addHandler(handler)
    root.setLevel(opts.log_level.upper())
    # Third-party debug logs carry request details we do not want in logs.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return where


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


# -- the mount ---------------------------------------------------------------------------

# Answers that are part of normal work, not failures, so `zosfs stats` does not
# count them as errors: a bucket feature that is not configured (no tags, no
# object lock) for any request, and "no such object" for a lookup.
NOT_FAILURES = frozenset({"NoSuchTagSet", "NoSuchTagSetError", "NoSuchObjectLockConfiguration",
                          "ObjectLockConfigurationNotFoundError"})
LOOKUP_MISSES = frozenset({"NotFound", "NoSuchKey"})


class MountRequests(RequestStats):
    """The mount's request counts, with expected answers not counted as errors."""

    def __call__(self, op: str, seconds: float, error: str | None, nbytes: int) -> None:
        if error in NOT_FAILURES or (op == "HeadObject" and error in LOOKUP_MISSES):
            error = None
        super().__call__(op, seconds, error, nbytes)


class Mount:
    def __init__(self, opts: Options, source: Source, mountpoint: str, creds: Credentials, log_where: str = "") -> None:
        self.opts = opts
        self.source = source
        self.mountpoint = os.path.abspath(mountpoint)
        self.creds = creds
        self.log_where = log_where  # what setup_logging chose, shown by `zosfs stats`
        self.requests = MountRequests()
        self.started = time.time()
        self.ops: Operations | None = None
        self.stopping = False
        self.stop_deadline: float | None = None  # (trio time) set by SIGTERM: unmount ends by then
        self.disk_note = ""  # why the mount has no disk cache

    def client_config(self) -> ClientConfig:
        o = self.opts
        return ClientConfig(
            endpoint=o.endpoint,
            bucket=self.source.bucket,
            access_key=self.creds.access_key,
            secret_key=self.creds.secret_key,
            session_token=self.creds.session_token,
            region=o.region,
            signature=o.signature,
            max_connections=o.max_requests,
            connect_timeout=o.connect_timeout,
            read_timeout=o.read_timeout,
            max_attempts=o.retries,
            append_position_header=o.append_header,
            verify_tls=not o.no_verify_ssl,
            list_api=o.list_api,
        )

    async def run(self, on_ready: Callable[[], None], on_warning: Callable[[str], None] | None = None) -> int:
        """Mount, serve until unmounted or signalled, then flush and unmount.
        Raises MountError or ZosError for failures before the mount is ready.
        `on_warning` receives the warnings found while mounting, besides the
        log (the parent of a background mount prints them on its stderr)."""
        opts = self.opts
        async with ZosClient(self.client_config(), observer=self.requests) as zos:
            caps = await probe(zos)
            log.info("zosfs %s: %s at %s; versioning %s, object lock %s, append %s, listing with %s",
                     __version__, self.source, opts.endpoint, caps.versioning or "off",
                     "on" if caps.object_lock else "off", "available" if caps.append else "unavailable",
                     caps.describe_listing())
            await self._check_prefix(zos, on_warning)
            state = state_name(opts, self.source)
            metacache = MetaCache(os.path.join(opts.cache_dir, "meta", state + ".sqlite"))
            staging = Staging(os.path.join(opts.staging_dir, state), opts.staging_size)
            # What a daemon that stopped left behind, recovered in the background (below).
            leftovers = staging.leftovers() if staging.exclusive else []
            ns = Namespace(zos, opts, self.source.prefix, metacache)
            ns.object_lock = caps.object_lock
            disk, self.disk_note = await trio.to_thread.run_sync(
                open_disk_cache, os.path.join(opts.disk_cache, state), opts.disk_cache_size,
                f"{opts.endpoint}|{self.source.bucket}")
            reads = BlockCache(zos, opts.cache_size, opts.block_size, disk, opts.prefetch_whole)
            writes = WritePath(ns, zos, staging, opts, caps.append)
            xattrs = Xattrs(ns, writes, opts.bypass_governance)
            self.ops = ops = Operations(ns, reads, writes, xattrs, opts, self.stats)
            if os.environ.get(FAULT_ENV):  # tests only
                log.warning("%s=%s: handlers will fail on purpose", FAULT_ENV, os.environ[FAULT_ENV])
                ops.fault = injected_faults(os.environ[FAULT_ENV])
            fuse_options = set(pyfuse3.default_options)
            fuse_options |= {f"fsname={opts.fsname or 'zosfs:' + str(self.source)}", "subtype=zosfs",
                             "default_permissions", "noatime"}
            if opts.allow_other:
                fuse_options.add("allow_other")
            if opts.ro:
                fuse_options.add("ro")
            try:
                pyfuse3.init(ops, self.mountpoint, fuse_options)
            except RuntimeError as err:
                raise MountError(f"cannot mount at {self.mountpoint}: {err}") from None
            unmounted_by_kernel = False
            try:
                async with trio.open_nursery() as nursery:
                    ns.nursery = reads.nursery = writes.nursery = nursery
                    nursery.start_soon(self._announce, on_ready)
                    nursery.start_soon(self._signals, writes)
                    nursery.start_soon(ns.deletes.run)
                    if leftovers:
                        log.info("recovering %d file(s) an earlier run left in %s, in the background",
                                 len(leftovers), staging.directory)
                        nursery.start_soon(self._recover, zos, staging, leftovers)
                    if disk is not None:
                        nursery.start_soon(disk.run)
                    await pyfuse3.main()
                    unmounted_by_kernel = not self.stopping
                    deadline = self.stop_deadline or trio.current_time() + opts.flush_timeout
                    failed = await writes.flush_all(deadline)
                    with trio.move_on_at(max(deadline, trio.current_time() + 1)):
                        await ns.deletes.settle()  # queued deletes reach the server before exit
                    if disk is not None:
                        with trio.move_on_after(10):
                            await disk.drain()  # blocks fetched last are on disk for the next mount
                    nursery.cancel_scope.cancel()
                if failed:
                    log.error("%d file(s) could not be uploaded before unmount; their data is in %s",
                              len(failed), staging.directory)
            finally:
                metacache.close()
                if disk is not None:
                    disk.close()
                pyfuse3.close(unmount=not unmounted_by_kernel)
            log.info("unmounted %s", self.mountpoint)
            return 0

    async def _recover(self, zos: ZosClient, staging: Staging, leftovers: list[dict[str, Any]]) -> None:
        """Recover what an earlier run left in staging, while the mount serves."""
        await recover(zos, staging, leftovers)
        log.info("recovery of %s finished", staging.directory)

    async def _check_prefix(self, zos: ZosClient, on_warning: Callable[[str], None] | None) -> None:
        """Warn about a prefix that holds nothing: a typo mounts an empty
        directory that silently fills a new prefix."""
        try:
            empty = await prefix_is_empty(zos, self.source.prefix)
        except ZosError as err:  # listing may be denied where reading is not
            log.debug("cannot check prefix %r: %s", self.source.prefix, err)
            return
        if empty:
            text = (f"prefix {self.source.prefix!r} of bucket {self.source.bucket!r} holds no objects yet: "
                    "the mount starts empty (check the spelling)")
            log.warning("%s", text)
            if on_warning is not None:
                on_warning(text)

    async def _announce(self, on_ready: Callable[[], None]) -> None:
        """Ready only when the mount answers (a stat through FUSE succeeds)."""
        st = await trio.to_thread.run_sync(os.stat, self.mountpoint)
        set_read_ahead(st.st_dev)
        log.info("mounted %s at %s", self.source, self.mountpoint)
        sd_notify(f"READY=1\nSTATUS=Mounted {self.source} at {self.mountpoint}\nMAINPID={os.getpid()}")
        on_ready()

    async def _signals(self, writes: WritePath) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1) as signals:
            async for signum in signals:
                if signum == signal.SIGUSR1:
                    log.warning("tasks (SIGUSR1):\n%s", task_dump())
                    continue
                log.info("%s: flushing and unmounting", signal.Signals(signum).name)
                sd_notify("STOPPING=1\nSTATUS=Flushing dirty files before unmount")
                self.stopping = True
                self.stop_deadline = trio.current_time() + self.opts.flush_timeout
                failed = await writes.flush_all(self.stop_deadline)
                if failed:
                    log.error("%d file(s) not uploaded; kept in staging", len(failed))
                pyfuse3.terminate()
                return

    def stats(self) -> dict[str, Any]:
        """Live numbers for `zosfs stats` (served as an xattr of the mount's root)."""
        ops = self.ops
        assert ops is not None
        reads, writes, ns = ops.reads, ops.writes, ops.ns
        uploads = []
        for w in list(writes.writers):
            uploads.append({
                "key": w.key_at_start, "size": w.size, "dirty": w.dirty.total(),
                "uploaded": w.remote_len if w.remote_len is not None else w.size - w.dirty.total(),
                "mode": "append" if w.remote_len is not None else "replace",
                "error": str(w.error) if w.error else None,
            })
        lookups = reads.hits + reads.misses
        return {
            "version": __version__,
            "pid": os.getpid(),
            "source": str(self.source),
            "mountpoint": self.mountpoint,
            "uptime": round(time.time() - self.started, 1),
            "requests": self.requests.snapshot(),
            "cache": {"bytes": reads.size, "budget": self.opts.cache_size, "hits": reads.hits,
                      "misses": reads.misses, "hit_ratio": round(reads.hits / lookups, 3) if lookups else None},
            "disk_cache": reads.disk.stats() if self.disk_note == "" else {"enabled": False, "reason": self.disk_note},
            "dirty_bytes": writes.dirty_bytes(),
            "staging_reserved": writes.staging.used,
            "uploads": uploads,
            "inodes": len(ns.table.by_ino),
            "open_files": len(ops.files),
            "memory_rss": rss_bytes(),
            "log": self.log_where,
        }
