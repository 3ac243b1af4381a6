"""The `zosfs` command.

    zosfs BUCKET[:/PREFIX] MOUNTPOINT [-o OPT[,OPT...]] [-f]   mount (mount(8) calls it this way)
    zosfs check BUCKET[:/PREFIX] [-o OPT...]                   test the connection and the bucket
    zosfs stats MOUNTPOINT [--json]                            live numbers of a running mount
    zosfs cache [--drop] PATH...                               what the block caches hold of files (or drop it)
    zosfs restore PATH... --days N [--tier T] [-r]             restore archived (GLACIER) files
    zosfs --version | --help

Errors are one line on stderr and a non-zero exit status: 2 for bad usage or
options (nothing was mounted), 1 for failures (bucket, credentials, mount).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from zosfs import __version__
from zosfs.options import OptionError, Options, build, plain_text, split_o

USAGE = """\
usage: zosfs BUCKET[:/PREFIX] MOUNTPOINT [-o OPT[,OPT...]] [-f] [-d]
       zosfs check BUCKET[:/PREFIX] [-o OPT[,OPT...]]
       zosfs stats MOUNTPOINT [--json]
       zosfs cache [--drop] PATH...
       zosfs restore PATH... --days N [--tier TIER] [-r]
       zosfs --version
"""


def fail(message: str, status: int = 1) -> NoReturn:
    print(f"zosfs: {message}", file=sys.stderr)
    raise SystemExit(status)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        fail(f"{message}\n{USAGE.rstrip()}", 2)


def _options(raw: list[str] | None) -> Options:
    items = [item for text in raw or [] for item in split_o(text)]
    try:
        return build(items).with_defaults_resolved()
    except OptionError as err:
        fail(str(err), 2)


def _help() -> str:
    return (
        f"zosfs {__version__}: mount a ZOS (S3-compatible) bucket as a filesystem.\n\n{USAGE}\n"
        "options (-o name=value, comma-separated; flags: -o name):\n\n" + plain_text() + "\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The `zosfs` command; returns its exit status."""
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:  # `zosfs --help | head`: the reader has gone, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _dispatch(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(_help())
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        print(f"zosfs {__version__}")
        return 0
    if args[0] == "check":
        return check(args[1:])
    if args[0] == "stats":
        return stats(args[1:])
    if args[0] == "cache":
        return cache(args[1:])
    if args[0] == "restore":
        return restore(args[1:])
    return mount(args)


def _source(text: str):  # type: ignore[no-untyped-def]
    from zosfs.source import Source

    try:
        return Source.parse(text)
    except ValueError as err:
        fail(str(err), 2)


def _credentials(opts: Options, bucket: str):  # type: ignore[no-untyped-def]
    from zosfs.credentials import CredentialsError, resolve

    try:
        return resolve(opts.access_key, opts.credentials, opts.profile, bucket, os.environ)
    except CredentialsError as err:
        fail(str(err), 1)


def check(argv: list[str]) -> int:
    p = _Parser(prog="zosfs check", add_help=False)
    p.add_argument("source")
    p.add_argument("-o", action="append")
    a = p.parse_args(argv)
    opts = _options(a.o)
    if not opts.endpoint:
        fail("option endpoint is required (-o endpoint=https://...)", 2)
    source = _source(a.source)
    creds = _credentials(opts, source.bucket)

    import trio

    from zosfs.daemon import Mount
    from zosfs.zos import ZosClient, ZosError, probe
    from zosfs.zos.features import check_features, format_table

    async def run() -> str:
        async with ZosClient(Mount(opts, source, ".", creds).client_config()) as zos:
            caps = await probe(zos)
            table = format_table(await check_features(zos, caps, source.prefix))
            return caps.describe() + "\n\n" + table

    try:
        print(trio.run(run))
    except ZosError as err:
        fail(err.message)
    return 0


def stats(argv: list[str]) -> int:
    p = _Parser(prog="zosfs stats", add_help=False)
    p.add_argument("mountpoint")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    try:
        data = json.loads(os.getxattr(a.mountpoint, "user.zosfs.stats"))
    except OSError as err:
        fail(f"{a.mountpoint}: not a running zosfs mount ({err.strerror})")
    if a.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"zosfs {data['version']}  {data['source']} on {data['mountpoint']}  up {data['uptime']:.0f} s  pid {data['pid']}")
    print(f"memory {data['memory_rss'] / 2**20:.1f} MiB   inodes {data['inodes']}   open files {data['open_files']}")
    if data.get("log"):
        print(f"log {data['log']}")
    c = data["cache"]
    ratio = f"{c['hit_ratio']:.1%}" if c["hit_ratio"] is not None else "-"
    fed = c.get("from_writes") or {}
    print(f"cache {c['bytes'] / 2**20:.1f} / {c['budget'] / 2**20:.0f} MiB   hit ratio {ratio}   "
          f"from writes {fed.get('stored_bytes', 0) / 2**20:.1f} MiB ({fed.get('pending', 0)} pending)")
    d = data.get("disk_cache", {})
    if d.get("enabled"):
        ratio = f"{d['hit_ratio']:.1%}" if d["hit_ratio"] is not None else "-"
        print(f"disk cache {d['bytes'] / 2**20:.1f} / {d['cap'] / 2**20:.0f} MiB   hit ratio {ratio}   "
              f"served {d['bytes_served'] / 2**20:.1f} MiB   in {d['directory']}")
    else:
        print(f"disk cache off: {d.get('reason', '-')}")
    print(f"dirty {data['dirty_bytes'] / 2**20:.1f} MiB   uploads in flight {len(data['uploads'])}")
    for u in data["uploads"]:
        done = u["uploaded"] / u["size"] if u["size"] else 1.0
        print(f"  {u['key']}: {u['uploaded']}/{u['size']} bytes ({done:.0%}) by {u['mode']}" + (f"  error: {u['error']}" if u["error"] else ""))
    _print_feed(data.get("feed"), data.get("revalidations"))
    print(f"{'request':28} {'count':>8} {'errors':>7} {'avg ms':>8} {'max ms':>8} {'MiB':>9}")
    for op, s in sorted(data["requests"].items()):
        avg = s["seconds"] / s["count"] * 1000 if s["count"] else 0
        print(f"{op:28} {s['count']:>8} {s['errors']:>7} {avg:>8.1f} {s['max_seconds'] * 1000:>8.1f} {s['bytes'] / 2**20:>9.1f}")
    return 0


def _print_feed(feed: dict[str, Any] | None, revalidations: dict[str, int] | None) -> None:
    """The change feed's lag and counts, and the revalidations, as two lines."""
    if feed is None:
        print("change feed off: other mounts' changes show after the cache timers")
    else:
        age = f"{feed['poll_age']:.1f} s ago" if feed.get("poll_age") is not None else "not yet"
        print(f"change feed: lag {feed['last_lag']:.2f} s (max {feed['max_lag']:.2f} s), last poll {age}; "
              f"records read {feed['records_read']}, published {feed['records_published']}, "
              f"names invalidated {feed['invalidations']}, everything {feed['full_invalidations']} times")
        reqs = feed.get("requests") or {}
        print("change feed requests: " + (", ".join(f"{op} {s['count']}" for op, s in sorted(reqs.items())) or "none"))
    if revalidations:
        print("revalidations: " + ", ".join(f"{k} {v}" for k, v in sorted(revalidations.items())))


def cache(argv: list[str]) -> int:
    """Show (or with --drop, drop) the cached blocks of files; directories recursively."""
    p = _Parser(prog="zosfs cache", add_help=False)
    p.add_argument("--drop", action="store_true")
    p.add_argument("paths", nargs="+")
    a = p.parse_args(argv)
    status = 0
    for top in a.paths:
        files = [top] if not os.path.isdir(top) else [os.path.join(d, f) for d, _, fs in os.walk(top) for f in sorted(fs)]
        for path in files:
            try:
                if a.drop:
                    os.setxattr(path, "user.zosfs.cache", b"drop")
                info = json.loads(os.getxattr(path, "user.zosfs.cache"))
            except OSError as err:
                print(f"zosfs: {path}: not on a running zosfs mount ({err.strerror})", file=sys.stderr)
                status = 1
                continue
            print(f"{path}: memory {info['memory_bytes']} bytes in {info['memory_blocks']} blocks, "
                  f"disk {info['disk_bytes']} bytes in {info['disk_blocks']} blocks")
    return status


RESTORE_TIERS = ("Standard", "Bulk", "Expedited")


def restore(argv: list[str]) -> int:
    """Ask for archived files on a mount to be restored: `user.zos.restore`
    set on each (with -r, on each file below a directory). Files not in the
    GLACIER class are skipped; every failure is one line on stderr, and
    the status is 1 if any file failed."""
    p = _Parser(prog="zosfs restore", add_help=False)
    p.add_argument("paths", nargs="+")
    p.add_argument("--days", type=int, required=True)
    p.add_argument("--tier", default="Standard", choices=RESTORE_TIERS)
    p.add_argument("-r", "--recursive", action="store_true")
    a = p.parse_args(argv)
    if a.days < 1:
        fail("--days must be at least 1", 2)
    value = f"days={a.days},tier={a.tier}".encode()
    requested = skipped = failed = 0
    for path in _files(a.paths, a.recursive):
        if os.path.isdir(path):
            failed += 1
            print(f"zosfs: {path}: is a directory (use -r for the files below it)", file=sys.stderr)
            continue
        try:
            cls = os.getxattr(path, "user.zos.storage_class").decode()
            if cls != "GLACIER":
                skipped += 1
                print(f"{path}: not archived ({cls}), skipped")
                continue
            os.setxattr(path, "user.zos.restore", value)
        except OSError as err:
            failed += 1
            print(f"zosfs: {path}: {err.strerror}", file=sys.stderr)
            continue
        requested += 1
        print(f"{path}: restore requested for {a.days} days ({a.tier})")
    print(f"{requested} restore(s) requested, {skipped} skipped, {failed} failed")
    return 1 if failed else 0


def _files(paths: list[str], recursive: bool) -> list[str]:
    """The files named, and with `recursive` the files below the directories named."""
    found = []
    for path in paths:
        if os.path.isdir(path) and recursive:
            for top, _dirs, names in os.walk(path):
                found += [os.path.join(top, n) for n in sorted(names)]
        else:
            found.append(path)
    return found


def mount(argv: list[str]) -> int:
    p = _Parser(prog="zosfs", add_help=False)
    p.add_argument("source")
    p.add_argument("mountpoint")
    p.add_argument("-o", action="append")
    p.add_argument("-f", "--foreground", action="store_true")
    p.add_argument("-d", "--debug", action="store_true")
    p.add_argument("-s", action="store_true", help=argparse.SUPPRESS)  # fuse's single-thread flag: meaningless here
    p.add_argument("-n", action="store_true", help=argparse.SUPPRESS)  # mount(8): don't write mtab
    a = p.parse_args(argv)
    opts = _options(a.o)
    if a.debug:
        import dataclasses

        opts = dataclasses.replace(opts, log_level="debug")
    if not opts.endpoint:
        fail("option endpoint is required (-o endpoint=https://...)", 2)
    source = _source(a.source)
    creds = _credentials(opts, source.bucket)

    from zosfs.host import MountError, check_mountpoint
    from zosfs.logs import LogError, log_destination, open_log_file, setup_logging

    try:
        setup_logging(opts, source, foreground=True, secrets=[creds.secret_key])
        warnings = check_mountpoint(a.mountpoint)
        where = log_destination(opts, source, foreground=a.foreground)
        if where not in ("syslog", "stderr"):
            open_log_file(opts, where)
    except (MountError, LogError) as err:
        fail(str(err))
    for text in warnings:
        print(f"zosfs: warning: {text}", file=sys.stderr)
    if a.foreground:
        return _serve(opts, source, a.mountpoint, creds, foreground=True, pipe=None)
    if where != "syslog" and not opts.log_file:
        print(f"zosfs: no syslog socket here: the daemon logs to {where}", file=sys.stderr)
    return _daemonize(opts, source, a.mountpoint, creds, where)


class ReadyPipe:
    """The background daemon's line to the command that started it: warnings,
    then "ok" once the mount answers or "err:" with why it failed. One
    message per line; closed after the last."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def send(self, kind: str, text: str = "") -> None:
        if self.fd is None:
            return
        os.write(self.fd, f"{kind}:{text.replace(chr(10), ' ')}\n".encode())
        if kind in ("ok", "err"):
            os.close(self.fd)
            self.fd = None


def _serve(opts, source, mountpoint, creds, *, foreground: bool, pipe: ReadyPipe | None) -> int:  # type: ignore[no-untyped-def]
    import trio

    from zosfs.daemon import Mount
    from zosfs.host import MountError
    from zosfs.logs import LogError, setup_logging
    from zosfs.zos import ZosError

    def ready() -> None:
        if pipe is not None:
            pipe.send("ok")

    def warn(text: str) -> None:
        if pipe is not None:
            pipe.send("warn", text)
        elif where != "stderr":  # in the foreground with log_file: the terminal hears it too
            print(f"zosfs: warning: {text}", file=sys.stderr)

    try:
        where = setup_logging(opts, source, foreground=foreground, secrets=[creds.secret_key])
        m = Mount(opts, source, mountpoint, creds, log_where=where)
        return trio.run(m.run, ready, warn)
    except (ZosError, MountError, LogError) as err:
        message = err.message if isinstance(err, ZosError) else str(err)
        if pipe is not None:
            pipe.send("err", message)
            return 1
        fail(message)


def _daemonize(opts, source, mountpoint, creds, log_where: str) -> int:  # type: ignore[no-untyped-def]
    """Fork; the parent returns once the mount answers (or reports why not),
    printing the daemon's warnings on the way."""
    mountpoint = os.path.abspath(mountpoint)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as messages:
            for raw in messages:
                kind, _, text = raw.decode(errors="replace").rstrip("\n").partition(":")
                if kind == "warn":
                    print(f"zosfs: warning: {text}", file=sys.stderr)
                elif kind == "ok":
                    return 0
                elif kind == "err":
                    fail(text)
        where = "the system log" if log_where == "syslog" else log_where
        fail(f"the mount daemon exited before the mount was ready (see {where})")
    os.close(read_end)
    os.setsid()
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    try:
        status = _serve(opts, source, mountpoint, creds, foreground=False, pipe=ReadyPipe(write_end))
    except BaseException:
        os._exit(1)
    os._exit(status)


if __name__ == "__main__":
    raise SystemExit(main())
