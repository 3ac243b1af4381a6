"""A real, throw-away, single-host Ceph RGW for the tests and the demo.

ZOS is Ceph RGW underneath, so the client and filesystem tests run against
the real thing rather than a mock (moto ignores `?append` and copies whole
objects on ranged GETs). One monitor, one bluestore OSD on a sparse file and
one radosgw (beast frontend) run from the Debian packages, with every file -
configuration, stores, sockets, pid files, logs - inside one work directory
and every port picked free on 127.0.0.1 at start, so that several clusters can
run side by side and nothing touches /etc/ceph or /var/lib/ceph.

Library use::

    with LocalRGW(tmp_path) as rgw:
        rgw.client().list_buckets()

Command line use (the daemons outlive the command)::

    eval "$(python -m tests.support.rgw start DIR)"
    python -m tests.support.rgw status DIR
    python -m tests.support.rgw stop DIR
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError


@dataclass(frozen=True)
class User:
    """An RGW user with fixed S3 credentials (known to tests and the demo)."""

    uid: str
    access_key: str
    secret_key: str


MAIN_USER = User("zosfs-main", "ZOSFSMAINACCESSKEY01", "zosfs-main-secret-0123456789abcdefghij")
SECOND_USER = User("zosfs-second", "ZOSFSSECONDACCESSKEY", "zosfs-second-secret-0123456789abcdefgh")

# RGW does not check the region of a SigV4 credential scope, and
# "rgw relaxed region enforcement" lets CreateBucket name any location.
REGION = "us-east-1"

# Storage classes besides STANDARD that ZOS offers; each gets its own pool.
EXTRA_STORAGE_CLASSES = ("STANDARD_IA", "GLACIER")

# Size of the sparse file holding the OSD. Disk is only used as data is
# written, but bluestore never gives it back (no discard on a plain file), so
# the file grows to the peak amount of data (including data awaiting gc).
OSD_BLOCK_SIZE = "20G"

# Seconds in one lifecycle day of the test server (`rgw lc debug interval`).
LC_DAY_SECONDS = 5

MON, OSD, RGW = "mon.a", "osd.0", "client.rgw"
DAEMONS_IN_STOP_ORDER = (RGW, OSD, MON)  # radosgw hangs 120 s if the osd goes first

LOG_TAIL_LINES = 40
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL


class RGWStartError(RuntimeError):
    """The cluster did not come up; the message carries the daemons' log tails."""


def _free_loopback_ports(count: int) -> list[int]:
    """Ports the kernel considers free on 127.0.0.1 right now, all distinct.

    The sockets stay open until all ports are chosen so that the kernel
    cannot hand out the same port twice.
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _is_running(pid: int) -> bool:
    """Whether `pid` is a live process; a zombie counts as gone.

    The daemons detach from us, so when they exit they may linger as zombies
    of an init that does not reap them (as in some sandboxes); `kill(pid, 0)`
    would call those alive.
    """
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X")


def _wait_until(predicate: Callable[[], bool], deadline: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it holds (True) or `deadline` passes (False)."""
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _remaining(deadline: float) -> float:
    """Seconds left before `deadline`, as a subprocess timeout (never 0)."""
    return max(0.1, deadline - time.monotonic())


def _run(*command: str, deadline: float | None = None) -> str:
    """Run a command to completion; return stdout, raise with stderr on failure."""
    timeout = None if deadline is None else _remaining(deadline)
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def _tail(path: pathlib.Path, lines: int = LOG_TAIL_LINES) -> str:
    with path.open("rb") as file:
        file.seek(max(0, path.stat().st_size - 64 * 1024))
        return b"\n".join(file.read().splitlines()[-lines:]).decode(errors="replace")


def _ceph_conf(workdir: pathlib.Path, fsid: str, mon_port: int, rgw_port: int) -> str:
    """The cluster's ceph.conf; each setting says why it is there."""
    return f"""\
# Written by tests/support/rgw.py: a throw-away single-host cluster.
[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
public addr = 127.0.0.1
# msgr2 only: the v1 protocol would need a second mon port.
ms bind msgr1 = false

# No cephx: nothing to protect, and no keyrings to create and distribute.
auth cluster required = none
auth service required = none
auth client required = none
# Without cephx the msgr2 modes must all be crc, or radosgw loops on
# "get_initial_auth_request returned -13".
ms mon client mode = crc
ms client mode = crc
ms cluster mode = crc
ms service mode = crc
ms mon cluster mode = crc
ms mon service mode = crc

# Every file inside the work directory; $run_dir also holds the admin sockets.
run dir = {workdir}/run
pid file = $run_dir/$name.pid
log file = {workdir}/log/$name.log
mon cluster log file = {workdir}/log/cluster.log
crash dir = {workdir}/log/crash
mon data = {workdir}/data/mon
osd data = {workdir}/data/osd
rgw data = {workdir}/data/rgw

# Errors only (levels -1 and 0), nothing gathered in memory: logging at the
# default levels costs RGW and the OSD real CPU on every request.
log max recent = 500
debug ms = 0/0
debug mon = 0/0
debug paxos = 0/0
debug monc = 0/0
debug auth = 0/0
debug osd = 0/0
debug bluestore = 0/0
debug bluefs = 0/0
debug bdev = 0/0
debug rocksdb = 0/0
debug rgw = 0/0
debug objecter = 0/0
debug rados = 0/0

# A lifecycle "day" lasts this many seconds, so that a rule of 1 day can be
# tested (Ceph's documented debug setting); in [global] so that
# `radosgw-admin lc process` sees it too.
rgw lc debug interval = {LC_DAY_SECONDS}

# Without these each mon command (pool creation, osd boot) takes about 1 s.
paxos propose interval = 0.01
paxos min wait = 0.001

# One OSD: pools of size 1, placed on the one host, and few PGs per pool,
# since RGW's dozen pools would otherwise exceed the PG-per-OSD limit.
mon allow pool size one = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon max pg per osd = 1000
osd crush chooseleaf type = 0

[osd]
# bluestore, not memstore: tests write GiB-sized files and memstore keeps
# all data, even deleted, in RAM.
osd objectstore = bluestore
bluestore block create = true
bluestore block size = {OSD_BLOCK_SIZE}
bluestore fsck on mkfs = false
# Closing the block device waits for the aio thread's poll timeout (250 ms),
# and mkfs and start open and close it about ten times.
bdev aio poll ms = 20
# A fixed, small cache instead of the default 4 GiB memory target.
bluestore cache autotune = false
bluestore cache size = 128M

[{RGW}]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
# 64 request threads instead of 512: ample for tests (beyond that requests
# queue), and each thread's allocator cache otherwise adds to RSS.
rgw thread pool size = 64
# Accept CreateBucket with any LocationConstraint (ZOS regions): the
# zonegroup is called "default".
rgw relaxed region enforcement = true
# No lifecycle processing behind the tests' back: a test that needs it runs
# `radosgw-admin lc process` (LocalRGW.process_lifecycle), which reads the
# [global] `rgw lc debug interval`.
rgw enable lc threads = false
# Reclaim the data of deleted objects after a minute, not two hours, so that
# GiB-sized test files do not fill the OSD during a long session.
rgw gc obj min wait = 60
rgw gc processor period = 60
# Let stop_rgw() end radosgw in seconds even with requests in flight
# (default: wait up to 120 s for them).
rgw exit timeout secs = 5
"""


class LocalRGW:
    """One throw-away Ceph cluster (mon, bluestore osd, radosgw) in `workdir`.

    `start()` builds a new cluster and `stop()` stops its daemons; `destroy()`
    also removes its stores. A `LocalRGW` made for a directory where the
    command line started a cluster can stop it, since daemons are found
    through pid files.
    """

    def __init__(self, workdir: pathlib.Path, *, timeout: float = 60.0):
        self.workdir = pathlib.Path(workdir).resolve()
        self.timeout = timeout
        self.endpoint = ""
        # Clients come from one session, which caches the S3 model (a client
        # of a fresh session takes about 0.1 s to make); sessions are not
        # thread-safe, hence the lock.
        self._session = boto3.session.Session()
        self._session_lock = threading.Lock()
        self._conf = self.workdir / "ceph.conf"
        self._state = self.workdir / "state.json"
        self._data_dir = self.workdir / "data"
        self._run_dir = self.workdir / "run"
        self._log_dir = self.workdir / "log"
        if self._state.exists():
            self.endpoint = json.loads(self._state.read_text())["endpoint"]

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Create and start a new cluster; return once S3 answers for MAIN_USER.

        Raises RGWStartError (with the daemons' log tails) if that takes more
        than `timeout` seconds or anything fails; whatever was started is
        stopped first.
        """
        if self._data_dir.exists():
            raise RGWStartError(f"{self.workdir} already holds a cluster: destroy it first or use another directory")
        deadline = time.monotonic() + self.timeout
        try:
            fsid, mon_port = self._write_config()
            self._start_mon(fsid, mon_port, deadline)
            self._start_osd(deadline)
            self._create_users(deadline)
            self._configure_zone(deadline)
            self._start_rgw(deadline)
        except Exception as error:
            self.stop()
            message = f"local RGW in {self.workdir} did not start: {error}"
            raise RGWStartError(f"{message}\n{self._log_tails()}") from error
        except BaseException:  # e.g. Ctrl-C: leave no daemons behind either
            self.stop()
            raise

    def stop(self) -> None:
        """Stop radosgw, the osd and the mon, in that order. Idempotent."""
        for name in DAEMONS_IN_STOP_ORDER:
            self._stop_daemon(name)

    def destroy(self) -> None:
        """Stop the cluster and delete its stores (the OSD file can hold GiBs).

        The configuration and logs stay for post-mortems.
        """
        self.stop()
        shutil.rmtree(self._data_dir, ignore_errors=True)
        self._state.unlink(missing_ok=True)

    def stop_rgw(self) -> None:
        """Stop only radosgw (mon and osd keep the data)."""
        self._stop_daemon(RGW)

    def start_rgw(self) -> None:
        """Start radosgw again on the same port, after `stop_rgw()`."""
        self._start_rgw(time.monotonic() + self.timeout)

    def __enter__(self) -> LocalRGW:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- using the cluster ---------------------------------------------------

    def client(self, user: User = MAIN_USER, **config_kwargs: Any) -> Any:
        """A boto3 S3 client for `user`: path-style, no default checksums.

        Recent botocore adds CRC32 checksums and aws-chunked bodies by
        default, which RGW 16.2 (and ZOS) reject; `config_kwargs` override
        or extend the botocore Config.
        """
        if not self.endpoint:
            raise RuntimeError(f"no cluster started in {self.workdir}")
        settings = {
            "s3": {"addressing_style": "path"},
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
            **config_kwargs,
        }
        with self._session_lock:
            return self._session.client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=REGION,
                aws_access_key_id=user.access_key,
                aws_secret_access_key=user.secret_key,
                config=Config(**settings),
            )

    def admin(self, *args: str) -> str:
        """Run radosgw-admin against this cluster and return its stdout."""
        return self._tool("radosgw-admin", *args)

    def process_lifecycle(self) -> None:
        """Run one lifecycle pass over every bucket now (about 4 s); with
        `rgw lc debug interval` a rule's day is LC_DAY_SECONDS long."""
        self._tool("radosgw-admin", "lc", "process", deadline=time.monotonic() + 120)

    def answers(self) -> bool:
        """Whether S3 answers a ListBuckets for MAIN_USER right now."""
        if not self.endpoint:
            return False
        probe = self.client(
            connect_timeout=1, read_timeout=5, retries={"total_max_attempts": 1, "mode": "standard"}
        )
        try:
            probe.list_buckets()
        except (BotoCoreError, ClientError):
            return False
        return True

    @property
    def log_paths(self) -> list[pathlib.Path]:
        """The daemons' log files, and the captured output of their launches."""
        names = (MON, OSD, RGW)
        return [self._log_dir / f"{name}.{suffix}" for name in names for suffix in ("log", "out")]

    # -- start steps ---------------------------------------------------------

    def _write_config(self) -> tuple[str, int]:
        """Pick fsid and ports, write ceph.conf and state.json; return (fsid, mon port)."""
        fsid = str(uuid.uuid4())
        mon_port, rgw_port = _free_loopback_ports(2)
        for directory in (self._data_dir, self._run_dir, self._log_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._conf.write_text(_ceph_conf(self.workdir, fsid, mon_port, rgw_port))
        self.endpoint = f"http://127.0.0.1:{rgw_port}"
        self._state.write_text(json.dumps({"fsid": fsid, "endpoint": self.endpoint}) + "\n")
        return fsid, mon_port

    def _start_mon(self, fsid: str, port: int, deadline: float) -> None:
        """Create the mon store from a one-mon map and start the mon."""
        monmap = self._data_dir / "monmap"
        address = f"[v2:127.0.0.1:{port}]"
        _run("monmaptool", "--create", "--fsid", fsid, "--addv", "a", address, str(monmap), deadline=deadline)
        self._tool("ceph-mon", "-i", "a", "--mkfs", "--monmap", str(monmap), deadline=deadline)
        self._launch(MON, "ceph-mon", "-i", "a", deadline=deadline)

    def _start_osd(self, deadline: float) -> None:
        """Register osd.0, create its bluestore and wait until the mon sees it up.

        `ceph osd new` is also the first mon command, so it waits for the mon.
        """
        osd_uuid = str(uuid.uuid4())
        self._ceph("osd", "new", osd_uuid, "0", deadline=deadline)
        (self._data_dir / "osd").mkdir()
        self._tool("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid, deadline=deadline)
        self._launch(OSD, "ceph-osd", "-i", "0", deadline=deadline)
        if not _wait_until(lambda: self._osd_up(deadline), deadline, interval=0.1):
            raise TimeoutError("osd.0 did not come up")

    def _osd_up(self, deadline: float) -> bool:
        osds = json.loads(self._ceph("osd", "dump", "--format=json", deadline=deadline))["osds"]
        return any(osd["osd"] == 0 and osd["up"] for osd in osds)

    def _configure_zone(self, deadline: float) -> None:
        """Add the extra storage classes to the default placement target.

        Without a realm there is no period to commit (`period update
        --commit` fails with ENOENT): radosgw reads the default zonegroup and
        zone directly at startup, so this must happen before radosgw starts,
        and after `user create`, which creates the default zonegroup and zone
        (`zonegroup placement add` does not).
        """
        for storage_class in EXTRA_STORAGE_CLASSES:
            placement = ("--placement-id", "default-placement", "--storage-class", storage_class)
            pool = f"default.rgw.{storage_class.lower()}.data"
            self._tool("radosgw-admin", "zonegroup", "placement", "add", "--rgw-zonegroup", "default", *placement,
                       deadline=deadline)
            self._tool("radosgw-admin", "zone", "placement", "add", "--rgw-zone", "default", *placement,
                       "--data-pool", pool, deadline=deadline)

    def _create_users(self, deadline: float) -> None:
        """Create MAIN_USER and SECOND_USER with their fixed keys."""
        for user in (MAIN_USER, SECOND_USER):
            self._tool("radosgw-admin", "user", "create", f"--uid={user.uid}", f"--display-name={user.uid}",
                       f"--access-key={user.access_key}", f"--secret-key={user.secret_key}", deadline=deadline)

    def _start_rgw(self, deadline: float) -> None:
        """Start radosgw and wait until S3 answers (it creates its pools first)."""
        self._launch(RGW, "radosgw", "-n", RGW, deadline=deadline)
        if not _wait_until(self.answers, deadline, interval=0.1):
            raise TimeoutError(f"S3 at {self.endpoint} did not answer")

    # -- processes -----------------------------------------------------------

    def _ceph(self, *args: str, deadline: float) -> str:
        """Run the ceph CLI, which waits for the mon up to the deadline."""
        connect = str(max(1, int(_remaining(deadline))))
        return self._tool("ceph", "--connect-timeout", connect, *args, deadline=deadline)

    def _tool(self, tool: str, *args: str, deadline: float | None = None) -> str:
        """Run a Ceph tool with this cluster's ceph.conf."""
        return _run(tool, "-c", str(self._conf), *args, deadline=deadline)

    def _launch(self, name: str, daemon: str, *args: str, deadline: float) -> None:
        """Start a daemon, which forks into the background once initialised.

        The launcher's own output (errors before the log file opens) goes to
        log/NAME.out, not a pipe, so no daemon can hold a pipe of ours open.
        """
        command = (daemon, "-c", str(self._conf), *args)
        with (self._log_dir / f"{name}.out").open("ab") as output:
            launcher = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                                      timeout=_remaining(deadline), check=False)
        if launcher.returncode != 0:
            raise RuntimeError(f"{shlex.join(command)} exited {launcher.returncode}")

    def _daemon_pid(self, name: str) -> int | None:
        """The pid of our running daemon `name`, from its pid file.

        The process must name our ceph.conf on its command line, so a stale
        pid file never makes us signal someone else's process.
        """
        try:
            pid = int((self._run_dir / f"{name}.pid").read_text())
            cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ValueError):
            return None
        if os.fsencode(self._conf) not in cmdline or not _is_running(pid):
            return None
        return pid

    def _stop_daemon(self, name: str) -> None:
        """SIGTERM the daemon, SIGKILL it after STOP_GRACE seconds."""
        pid = self._daemon_pid(name)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            if not _wait_until(lambda: not _is_running(pid), time.monotonic() + STOP_GRACE):
                os.kill(pid, signal.SIGKILL)
                _wait_until(lambda: not _is_running(pid), time.monotonic() + STOP_GRACE)
        (self._run_dir / f"{name}.pid").unlink(missing_ok=True)

    def _log_tails(self) -> str:
        """The end of every non-empty log, for RGWStartError."""
        parts = []
        for path in self.log_paths:
            if path.exists() and path.stat().st_size:
                parts.append(f"--- last {LOG_TAIL_LINES} lines of {path} ---\n{_tail(path)}")
        return "\n".join(parts)


# -- command line ----------------------------------------------------------


def _exports(rgw: LocalRGW) -> str:
    values = {
        "ZOSFS_TEST_ENDPOINT": rgw.endpoint,
        "AWS_ACCESS_KEY_ID": MAIN_USER.access_key,
        "AWS_SECRET_ACCESS_KEY": MAIN_USER.secret_key,
        "AWS_DEFAULT_REGION": REGION,
    }
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in values.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.rgw", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("start", "stop", "status"),
                        help="start: new cluster, prints shell exports; stop: stop it and delete its data; "
                             "status: exit 0 if S3 answers")
    parser.add_argument("workdir", type=pathlib.Path)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed for start (default 60)")
    args = parser.parse_args(argv)
    rgw = LocalRGW(args.workdir, timeout=args.timeout)
    if args.action == "start":
        try:
            rgw.start()
        except RGWStartError as error:
            print(error, file=sys.stderr)
            return 1
        sys.stdout.write(_exports(rgw))
        return 0
    if args.action == "stop":
        rgw.destroy()
        return 0
    answers = rgw.answers()
    print(f"{rgw.endpoint} answers" if answers else f"no cluster answers in {args.workdir}")
    return 0 if answers else 1


if __name__ == "__main__":
    sys.exit(main())
