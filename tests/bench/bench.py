"""Run the benchmark: get the peers (peers.py), start a local RGW, run each
workload with each contender in turn, write the results.

Contenders run one after another, never at once (two CPU cores are shared
with RGW, so anything concurrent would measure contention), and every daemon
is unmounted and reaped before the next starts. Whatever happens - an error,
Ctrl-C, SIGTERM - nothing stays mounted and the RGW is stopped and deleted.

Repetitions: the first pass runs every workload once with every contender,
so every cell has a value; further passes (up to `--runs`, default 3) repeat
the runs that took under SLOW_RUN seconds, as long as another such run fits
before the time budget (`--budget`, default 27 minutes) runs out. So the slow
peers on the slow workloads (s3fs on 1,000 small files, everyone on rm -r of
10,000 files, rclone's appends) get one run, and the whole benchmark fits in
30 minutes on a 2-core machine. The results say how many values each median has.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from tests.bench import disk, peers, report
from tests.bench.contenders import CONTENDERS, DEFAULT, Contender, Endpoint, Mount, Peer, Zosfs
from tests.bench.context import Context, DataError, Sizes, Sources
from tests.bench.workloads import Workload, workloads
from tests.support.rgw import MAIN_USER, REGION, LocalRGW

SLOW_RUN = 45.0
BUDGET_MINUTES = 27.0
RESULTS = Path(__file__).resolve().parent / "results"

METHOD = [
    "One local Ceph RGW (the one the tests use) serves all contenders; they run one after another, each "
    "workload's bucket is shared, and whatever a run wrote is deleted before the next run.",
    "Write times run from the first write until a HEAD/LIST shows every object in the bucket with its "
    "full size (time to durability; rclone uploads after close). Every written object is then read back "
    "with boto3 and compared (MD5) with the source; reads are compared with the source too. A contender "
    "that loses, truncates or corrupts data gets FAIL, not a time.",
    "Cold: kernel caches dropped (sync; echo 3 > /proc/sys/vm/drop_caches) and a new mount with empty "
    "cache directories. Warm: the same mount reads the file again.",
    "Reads (sequential, random) are of one object put by boto3 (multipart, 8 MiB parts, s3fs metadata), "
    "the same for every contender (the 256 MiB read: another such object, the first quarter of the 1 GiB one); "
    "the parallel read reads the four files the contender itself wrote.",
    "Writes through a mount are 1 MiB write() calls from a tmpfs source; reads are 1 MiB read() calls "
    "(random reads: one pread() each, 4 KiB-aligned offsets from a fixed seed).",
    "ls -l, find: 1 KiB / 256-byte objects with s3fs metadata headers (mode, uid, gid, mtime) and "
    "directory markers, put once with boto3 in parallel; rm -r gets a fresh tree (untimed) for every run.",
    "Appends: the 256 MiB and 1 KiB files are created through the contender's own mount; the ten "
    "appends (open O_APPEND, write 1 KiB, close) run on a second, cold mount; each value is one append.",
    f"Median of up to 3 runs: every workload runs once with every contender first; then runs that took "
    f"under {SLOW_RUN:.0f} s are repeated while the {BUDGET_MINUTES:.0f}-minute budget allows (n in each cell).",
    "Peak RSS: VmHWM of the daemon process (/proc/PID/status), sampled until it exits after unmount. "
    "boto3 runs inside the benchmark process and has no daemon.",
]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Results:
    """Raw results as they come in; report.py summarizes them."""

    def __init__(self, workload_list: list[Workload], contenders: list[Contender]):
        self.metrics: dict[str, dict[str, Any]] = {}
        for wl in workload_list:
            for metric in wl.metrics:
                self.metrics[metric.name] = {
                    "name": metric.name, "workload": wl.name, "title": metric.title, "unit": metric.unit,
                    "higher_is_better": metric.higher_is_better, "throughput": metric.throughput, "contenders": {},
                }
        self.contenders = contenders
        self.problems: list[str] = []
        self.skipped: list[dict[str, Any]] = []   # repeat runs the time budget left out
        self.rss: dict[str, dict[str, int]] = {}   # workload -> contender -> peak RSS bytes
        self.disk: dict[str, float] = {}   # MiB/s of the work directory's disk (disk.probe)

    def entry(self, metric: str, who: str) -> dict[str, Any]:
        return self.metrics[metric]["contenders"].setdefault(
            who, {"values": [], "runs": 0, "extras": [], "failure": None})

    def add(self, wl: Workload, who: Contender, samples: dict[str, Any]) -> None:
        for metric, sample in samples.items():
            e = self.entry(metric, who.name)
            e["values"].extend(sample.values)
            e["runs"] += 1
            e["extras"].append(sample.extra)

    def fail(self, wl: Workload, who: Contender, reason: str) -> None:
        for metric in wl.metrics:
            if wl.name == "ls" and metric.name in ("ls_remount", "ls_index") and who.name not in ("zosfs", "boto3"):
                continue
            self.entry(metric.name, who.name)["failure"] = reason
        self.problems.append(f"{wl.name}: {who.name} failed: {reason}")


def parse(argv: list[str] | None) -> argparse.Namespace:
    names = [wl.name for wl in workloads(Sizes())]
    p = argparse.ArgumentParser(prog="bash tests/bench/run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one run each, small sizes (for development)")
    p.add_argument("--only", default=",".join(DEFAULT),
                   help=f"contenders, comma-separated (default {','.join(DEFAULT)}; all: {','.join(CONTENDERS)})")
    p.add_argument("--workloads", default=",".join(names), help=f"workloads, comma-separated ({','.join(names)})")
    p.add_argument("--runs", type=int, default=None, help="runs per workload and contender (default 3; 1 with --quick)")
    p.add_argument("--budget", type=float, default=BUDGET_MINUTES,
                   help=f"minutes after which no run is repeated (default {BUDGET_MINUTES:.0f})")
    p.add_argument("--results", type=Path, default=RESULTS, help=f"results folder (default {RESULTS})")
    p.add_argument("--keep", action="store_true", help="keep the work directory (RGW, daemon logs) for post-mortems")
    p.add_argument("--zosfs-options", default="", metavar="K=V,...",
                   help="mount zosfs with these -o options too (for A/B runs; the report names them)")
    args = p.parse_args(argv)
    try:
        args.zosfs_options = dict(kv.split("=", 1) for kv in args.zosfs_options.split(",") if kv)
    except ValueError:
        p.error("--zosfs-options: expected K=V pairs separated by commas")
    args.only = [n.strip() for n in args.only.split(",") if n.strip()]
    args.workloads = [n.strip() for n in args.workloads.split(",") if n.strip()]
    for n in args.only:
        if n not in CONTENDERS:
            p.error(f"unknown contender {n!r}; choose from {', '.join(CONTENDERS)}")
    for n in args.workloads:
        if n not in names:
            p.error(f"unknown workload {n!r}; choose from {', '.join(names)}")
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    return args


def applies(wl: Workload, who: Contender) -> bool:
    return who.is_fs or wl.boto3


def run_once(ctx: Context, wl: Workload, who: Contender, run: int, results: Results) -> float | None:
    """One run of `wl` with `who`; returns its duration, or None if it failed (recorded as a failure)."""
    ctx.workload = wl.name
    t0 = time.monotonic()
    try:
        samples = wl.run(ctx, who, run)
    except DataError as error:
        log(f"  {who.name}: FAILED: {error}")
        results.fail(wl, who, str(error))
        return None
    except Exception as error:  # an fs error (EIO...), a mount that failed, a server error
        log(f"  {who.name}: FAILED: {type(error).__name__}: {error}")
        (ctx.workdir / "logs").mkdir(exist_ok=True)
        with (ctx.workdir / "logs" / "bench-errors.log").open("a") as f:
            f.write(f"--- {wl.name} {who.name} run {run}\n{traceback.format_exc()}\n")
        results.fail(wl, who, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        Mount.cleanup_all()
        return None
    took = time.monotonic() - t0
    results.add(wl, who, samples)
    shown = ", ".join(f"{k}={' '.join(f'{v:.4g}' for v in s.values[:10])}" for k, s in samples.items())
    log(f"  {who.name} run {run + 1}: {shown} ({took:.1f} s)")
    return took


def run_all(ctx: Context, selected: list[Workload], contenders: list[Contender], results: Results,
            args: argparse.Namespace, deadline: float) -> None:
    """Pass 1 runs every workload once with every contender, so each cell has a value; later passes
    repeat the runs that took under SLOW_RUN seconds, while the time budget allows another of them."""
    took: dict[tuple[str, str], float | None] = {}
    for wl in selected:
        log(f"{wl.name}: {', '.join(m.title for m in wl.metrics)}")
        ctx.workload = wl.name
        if wl.prepare:
            wl.prepare(ctx)
        for who in contenders:
            if applies(wl, who):
                took[(wl.name, who.name)] = run_once(ctx, wl, who, 0, results)
    for run in range(1, args.runs):
        for wl in selected:
            due = [who for who in contenders if applies(wl, who)
                   and (took.get((wl.name, who.name)) or SLOW_RUN + 1) <= SLOW_RUN]
            if not due:
                continue
            prepared = False
            for who in due:
                estimate = 1.5 * (took[(wl.name, who.name)] or 0) + 5
                if time.monotonic() + estimate > deadline:
                    results.skipped.append({"workload": wl.name, "run": run + 1, "contender": who.name})
                    continue
                if not prepared:
                    log(f"{wl.name}: run {run + 1}")
                    if wl.prepare:
                        wl.prepare(ctx)
                    prepared = True
                if run_once(ctx, wl, who, run, results) is None:
                    took[(wl.name, who.name)] = None


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if os.geteuid() != 0:
        print("the benchmark needs root (FUSE mounts, dropping the page cache)", file=sys.stderr)
        return 2
    try:  # first: a peer that cannot be built or installed stops the run before anything starts
        binaries = peers.binaries(args.only, log)
    except peers.PeerError as error:
        print(f"cannot run the benchmark: {error}", file=sys.stderr)
        return 2
    started_at = datetime.datetime.now()
    stamp = started_at.strftime("%Y%m%d-%H%M%S")
    started = time.monotonic()
    sizes = Sizes.quick() if args.quick else Sizes()
    selected = [wl for wl in workloads(sizes) if wl.name in args.workloads]
    workdir = Path(tempfile.mkdtemp(prefix=f"zosfs-bench-{stamp}-", dir="/var/tmp"))
    srcdir = Path(tempfile.mkdtemp(prefix=f"zosfs-bench-{stamp}-", dir="/dev/shm"))
    folder = args.results / stamp
    rgw = LocalRGW(workdir / "rgw", timeout=120)
    sources: Sources | None = None

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored (`cmd &`)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # respect nohup
        signal.signal(signal.SIGHUP, terminate)
    load_before = report.loadavg()
    interrupted = False
    results: Results | None = None
    try:
        log(f"work directory {workdir}; starting the local RGW")
        rgw.start()
        endpoint = Endpoint(rgw.endpoint, MAIN_USER.access_key, MAIN_USER.secret_key, REGION)
        contenders = [make(n, endpoint, workdir, args, binaries) for n in CONTENDERS if n in args.only]
        log(f"RGW at {rgw.endpoint}; generating {sizes.big // 2**20} MiB of source data in {srcdir}")
        sources = Sources(srcdir, sizes)
        ctx = Context(endpoint, workdir, sources, sizes, log)
        results = Results(selected, contenders)
        results.disk = disk.probe(workdir, sizes.big)
        results.rss = ctx.rss
        run_all(ctx, selected, contenders, results, args, started + 60 * args.budget)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: unmounting everything and stopping the RGW")
    finally:
        try:
            Mount.cleanup_all()
            if results is not None:
                results.problems += ctx.mount_problems
                if interrupted:
                    results.problems.append("the run was interrupted; results are partial")
                write_results(results, args, folder, started_at, started, load_before, workdir, interrupted)
        finally:  # whatever failed above, stop the RGW and free the disk and tmpfs
            if sources is not None:
                try:
                    sources.close()
                except BufferError:  # a slice still referenced (by a traceback): freed with the process
                    pass
            rgw.destroy()
            shutil.rmtree(srcdir, ignore_errors=True)
            if args.keep:
                log(f"kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    log(f"done in {(time.monotonic() - started) / 60:.1f} min")
    return 130 if interrupted else 0


def make(name: str, endpoint: Endpoint, workdir: Path, args: argparse.Namespace, binaries: dict[str, Path]
         ) -> Contender:
    """The contender called `name`, with its binary if it is a peer filesystem."""
    kind = CONTENDERS[name]
    if kind is Zosfs:
        return Zosfs(endpoint, workdir, args.zosfs_options)
    if issubclass(kind, Peer):
        return kind(endpoint, workdir, binaries[name])
    return kind(endpoint, workdir)


def write_results(results: Results, args: argparse.Namespace, folder: Path, started_at: datetime.datetime,
                  started: float, load_before: str, workdir: Path, interrupted: bool) -> None:
    """Gather everything into the results folder (daemon logs included, each cut to its last 256 KiB)."""
    contenders = {}
    for who in results.contenders:
        peaks = [p[who.name] for p in results.rss.values() if who.name in p]
        contenders[who.name] = {"version": who.version(), "notes": who.notes(),
                                "peak_rss": max(peaks) if peaks else None}
    versions = {f"{who.name}_version": contenders[who.name]["version"] for who in results.contenders}
    data = {
        "started": started_at.isoformat(timespec="seconds"),
        "command": shlex.join(["bash", "tests/bench/run", *sys.argv[1:]]),
        "quick": args.quick,
        "wall_seconds": time.monotonic() - started,
        "machine": report.machine(versions),
        "load_before": load_before,
        "load_after": report.loadavg(),
        "disk_read": results.disk.get("read"),
        "disk_read_writing": results.disk.get("read_while_writing"),
        "contenders": contenders,
        "metrics": [m for m in results.metrics.values() if m["contenders"]],
        "rss": results.rss,
        "problems": results.problems,
        "skipped": results.skipped,
        "method": [line.replace(f"{BUDGET_MINUTES:.0f}-minute", f"{args.budget:g}-minute") for line in METHOD],
    }
    logs = folder / "logs"
    if (workdir / "logs").exists():
        logs.mkdir(parents=True, exist_ok=True)
        for path in sorted((workdir / "logs").iterdir()):
            with path.open("rb") as f:
                f.seek(max(0, path.stat().st_size - 256 * 1024))
                (logs / path.name).write_bytes(f.read())
    # latest.md and latest.png are the last complete full run: quick, interrupted and partial runs
    # (fewer contenders or workloads, extra zosfs options) leave them alone.
    full = (not args.quick and not interrupted and not args.zosfs_options and set(DEFAULT) <= set(args.only)
            and set(args.workloads) == {wl.name for wl in workloads(Sizes())})
    latest = args.results / "latest.md" if full else None
    report.write(data, folder, latest)
    log(f"results in {folder}/results.md (and results.json, results.png, throughput.png)"
        + (f"; copies in {latest} and {latest.with_suffix('.png')}" if latest else ""))
