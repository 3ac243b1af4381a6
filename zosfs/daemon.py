"""The mount's life: set up the layers, mount, serve, flush, unmount.

`Mount.run` is the whole lifecycle inside one trio run: probe the bucket
(clear errors before anything is mounted), build the layers, mount with
pyfuse3, announce readiness (to the parent process, and to systemd via
NOTIFY_SOCKET) only once the mount answers, serve until unmounted or
signalled, then flush every dirty file (bounded by `flush_timeout`) before
unmounting.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import logging.handlers
import os
import signal
import time
from collections.abc import Callable
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
from zosfs.fuse_handler import requests_dump, watch_slow
from zosfs.fuse_ops import Operations
from zosfs.host import (FAULT_ENV, MountError, injected_faults, return_freed_blocks, rss_bytes, sd_notify, set_read_ahead,
                        task_dump)
from zosfs.namespace.feed import Feed, FeedConfig, FeedStats
from zosfs.namespace.feed.apply import FeedApplier
from zosfs.namespace.metacache import MetaCache
from zosfs.namespace.imageview import ImageView
from zosfs.namespace.tree import Namespace
from zosfs.namespace.versions import VersionsView
from zosfs.namespace.views import Views
from zosfs.options import Options
from zosfs.source import Source, state_name
from zosfs.xattrs import Xattrs
from zosfs.zos import ClientConfig, RequestStats, ZosClient, ZosError, probe
from zosfs.zos.probe import prefix_is_empty

log = logging.getLogger("zosfs")


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


class FeedRequests(RequestStats):
    """The change feed's request counts: a generation not created yet (404)
    and another mount's append first (409) are its normal work."""

    def __call__(self, op: str, seconds: float, error: str | None, nbytes: int) -> None:
        if error in LOOKUP_MISSES or error in ("PositionNotEqualToLength", "BucketAlreadyExists"):
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
        self.feed: Feed | None = None
        self.feed_client: ZosClient | None = None
        self.feed_requests = FeedRequests()
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
            storage_class=o.storage_class,
            url_expiry=o.url_expiry,
        )

    async def run(self, on_ready: Callable[[], None], on_warning: Callable[[str], None] | None = None) -> int:
        """Mount, serve until unmounted or signalled, then flush and unmount.
        Raises MountError or ZosError for failures before the mount is ready.
        `on_warning` receives the warnings found while mounting, besides the
        log (the parent of a background mount prints them on its stderr)."""
        opts = self.opts
        return_freed_blocks()
        async with ZosClient(self.client_config(), observer=self.requests) as zos:
            caps = await probe(zos)
            log.info("zosfs %s: %s at %s; versioning %s, object lock %s, append %s, listing with %s",
                     __version__, self.source, opts.endpoint, caps.versioning or "off",
                     "on" if caps.object_lock else "off", "available" if caps.append else "unavailable",
                     caps.describe_listing())
            await self._check_prefix(zos, on_warning)
            state = state_name(opts, self.source)
            metacache = MetaCache(os.path.join(opts.cache_dir, "meta", state + ".sqlite"))
            staging = _staging(os.path.join(opts.staging_dir, state), opts.staging_size)
            # What a daemon that stopped left behind, recovered in the background (below).
            if staging.exclusive:
                staging.remove_unfinished()  # (files a killed daemon was making, never written)
            leftovers = staging.leftovers() if staging.exclusive else []
            ns = Namespace(zos, opts, self.source.prefix, metacache)
            ns.object_lock = caps.object_lock
            self.feed = feed = self._feed(ns, caps.append)
            disk, self.disk_note = await trio.to_thread.run_sync(
                open_disk_cache, os.path.join(opts.disk_cache, state), opts.disk_cache_size,
                f"{opts.endpoint}|{self.source.bucket}|{opts.block_size}")  # (block n means another range under another block_size)
            reads = BlockCache(zos, opts.cache_size, opts.block_size, disk, opts.prefetch_whole)
            writes = WritePath(ns, zos, staging, opts, caps.append)
            writes.feeds.blocks = reads  # what this mount uploads is cached (see cachefeed.py)
            xattrs = Xattrs(ns, writes, opts.bypass_governance)
            self.ops = ops = Operations(ns, reads, writes, xattrs, opts, self.stats,
                                        make_views(zos, opts, self.source.prefix, caps.versioning))
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
            # What is allocated up to here lives as long as the mount: keep it
            # out of the cyclic collector's scans, and let it run less often
            # (per-request garbage is freed by reference counting; profiles of
            # `ls -l` showed the collector's scans of the inode table).
            gc.freeze()
            gc.set_threshold(20_000, 20, 20)
            try:
                async with trio.open_nursery() as nursery:
                    ns.nursery = reads.nursery = writes.nursery = nursery
                    nursery.start_soon(self._announce, on_ready)
                    nursery.start_soon(self._signals, writes)
                    if self.opts.slow_request > 0:
                        nursery.start_soon(watch_slow, self.opts.slow_request)
                    nursery.start_soon(ns.deletes.run)
                    nursery.start_soon(ns.dir_times.run)
                    if feed is not None:
                        nursery.start_soon(feed.run)
                    if leftovers:
                        log.info("recovering %d file(s) an earlier run left in %s, in the background",
                                 len(leftovers), staging.directory)
                        nursery.start_soon(self._recover, zos, staging, leftovers)
                    if disk is not None:
                        nursery.start_soon(disk.run)
                    nursery.start_soon(staging.run)
                    await pyfuse3.main()
                    unmounted_by_kernel = not self.stopping
                    deadline = self.stop_deadline or trio.current_time() + opts.flush_timeout
                    failed = await writes.flush_all(deadline)
                    with trio.move_on_at(max(deadline, trio.current_time() + 1)):
                        await ns.deletes.settle()  # queued deletes reach the server before exit
                    with trio.move_on_at(max(deadline, trio.current_time() + 1)):
                        await ns.dir_times.flush()  # directories' times, on their markers
                    if feed is not None:
                        await feed.close()  # other mounts hear of the last changes
                    with trio.move_on_after(10):
                        await writes.feeds.drain()  # what was uploaded last is cached for the next mount
                    if disk is not None:
                        with trio.move_on_after(10):
                            await disk.drain()  # blocks fetched last are on disk for the next mount
                    if ns.index is not None:
                        with trio.move_on_after(min(opts.flush_timeout, 10.0)):
                            await ns.index.flush()  # what this mount's HEADs learned, for the next mount
                    nursery.cancel_scope.cancel()
                if failed:
                    log.error("%d file(s) could not be uploaded before unmount; their data is in %s",
                              len(failed), staging.directory)
            finally:
                staging.close()
                metacache.close()
                if self.feed_client is not None:
                    self.feed_client.close()
                if disk is not None:
                    disk.close()
                pyfuse3.close(unmount=not unmounted_by_kernel)
            log.info("unmounted %s", self.mountpoint)
            return 0

    def _feed(self, ns: Namespace, append: bool) -> Feed | None:
        """The change feed between mounts (None when switched off); it
        announces through `ns.feed` and invalidates through a FeedApplier.
        It has its own client, so that `zosfs stats` counts its requests
        apart (and its normal 404s and 409s are not the mount's errors)."""
        if not self.opts.change_feed:
            log.info("change feed off (change_feed=off): other mounts' changes show after the cache timers")
            return None
        config = FeedConfig(shards=self.opts.feed_shards, poll_max=max(self.opts.feed_poll_max, FeedConfig.poll_min))
        stats = FeedStats()
        applier = FeedApplier(ns, stats)
        if not append:
            log.info("change feed off: append is unavailable in this bucket; other mounts' changes show after the cache timers")
            return None
        self.feed_client = ZosClient(dataclasses.replace(self.client_config(), max_connections=4),
                                     observer=self.feed_requests)
        feed = Feed(self.feed_client, config, self.source.prefix, applier.on_records, applier.on_resync, stats=stats)
        ns.feed = feed

        def deleted(keys: list[str]) -> None:  # unlink's deletes are queued: announce them once done
            for key in keys:
                feed.publish("delete", key)

        ns.deletes.on_deleted = deleted
        return feed

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
                    log.warning("tasks (SIGUSR1):\n%s\nFUSE requests in progress:\n%s", task_dump(), requests_dump())
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
                      "misses": reads.misses, "hit_ratio": round(reads.hits / lookups, 3) if lookups else None,
                      "from_writes": writes.feeds.stats()},
            "disk_cache": reads.disk.stats() if self.disk_note == "" else {"enabled": False, "reason": self.disk_note},
            "dirty_bytes": writes.dirty_bytes(),
            "staging_reserved": writes.staging.used,
            "uploads": uploads,
            "inodes": len(ns.table.by_ino),
            "dir_times": {"queued": len(ns.dir_times.pending), "written": ns.dir_times.written,
                          "failed": ns.dir_times.failed, "skipped": ns.dir_times.skipped},
            "feed": {**self.feed.stats.snapshot(), "requests": self.feed_requests.snapshot()} if self.feed is not None else None,
            "revalidations": dict(ns.revalidations),
            "open_files": len(ops.files),
            "memory_rss": rss_bytes(),
            "log": self.log_where,
        }


def make_views(zos: ZosClient, opts: Options, root_prefix: str, versioning: str | None) -> Views:
    """The read-only views the options ask for. The versions view only in a
    bucket whose versioning is (or was) enabled: elsewhere every object has
    one version, and `.zos-versions` stays an ordinary name."""
    views = Views(opts.uid, opts.gid, time.time())
    if opts.versions_view != "off" and versioning:
        views.add_view(VersionsView(zos, root_prefix), shown=opts.versions_view == "shown")
    if opts.image_view != "off":
        views.add_view(ImageView(zos, root_prefix, opts.attr_timeout), shown=opts.image_view == "shown")
    return views


def _staging(directory: str, budget: int) -> Staging:
    """The mount's staging area; MountError (one line, before anything is
    mounted) if its directory cannot be made or locked."""
    try:
        return Staging(directory, budget)
    except OSError as err:
        raise MountError(f"cannot use the staging directory {directory}: {err.strerror or err} "
                         "(check staging_dir, or cache_dir)") from None
