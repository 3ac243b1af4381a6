"""The change feed (zosfs.namespace.feed) against the real local RGW: its
writers append with real position checks, its readers poll with real
ranged GETs. Each simulated mount has its own ZosClient unless a test says
otherwise."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from tests.support.client import client_config
from zosfs.namespace.feed import FEED_PREFIX, FeedConfig, FeedReader, FeedStats, FeedWriter, Record
from zosfs.namespace.feed.records import generation_key
from zosfs.zos import RequestStats, ZosClient

FAST = FeedConfig(batch_interval=0.05, poll_min=0.1, poll_max=0.3)


@dataclass
class Inbox:
    """What a reader handed on."""

    records: list[Record] = field(default_factory=list)
    resyncs: list[str] = field(default_factory=list)
    arrived: list[tuple[float, Record]] = field(default_factory=list)

    def on_records(self, records: list[Record]) -> None:
        now = time.time()
        self.records.extend(records)
        self.arrived.extend((now, r) for r in records)

    def on_resync(self, why: str) -> None:
        self.resyncs.append(why)

    def seen(self) -> set[tuple[str, int]]:
        return {(r.mount, r.seq) for r in self.records}


def run(rgw: Any, bucket: str, scenario: Callable[..., Awaitable[Any]], clients: int = 1, **cfg: Any) -> Any:
    """Run `scenario(*clients)` with that many fresh ZosClients."""

    async def main() -> Any:
        zs = [ZosClient(client_config(rgw.endpoint, bucket, **cfg)) for _ in range(clients)]
        try:
            return await scenario(*zs)
        finally:
            for z in zs:
                z.close()

    return trio.run(main)


def feed_objects(s3: Any, bucket: str) -> dict[str, int]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=FEED_PREFIX)
    return {o["Key"]: o["Size"] for p in pages for o in p.get("Contents", [])}


def mount(zos: ZosClient, config: FeedConfig, name: str) -> tuple[FeedWriter, FeedReader, Inbox]:
    """A simulated mount: writer and reader sharing one mount id."""
    inbox = Inbox()
    stats = FeedStats()
    writer = FeedWriter(zos, config, name, stats)
    reader = FeedReader(zos, config, 0, inbox.on_records, inbox.on_resync, mount_id=name, stats=stats)
    return writer, reader, inbox


def test_records_round_trip_between_two_mounts(rgw, bucket, s3):
    async def scenario(za: ZosClient, zb: ZosClient) -> tuple[Inbox, Inbox]:
        wa, ra, ia = mount(za, FAST, "mount-a")
        wb, rb, ib = mount(zb, FAST, "mount-b")
        await ra.start()
        await rb.start()
        wa.publish("create", "dir/new.txt")
        wa.publish("rename", "dir/new.txt", "dir/renamed.txt")
        wa.publish("delete", "gone/", is_dir=True)
        assert await wa.flush()
        wb.publish("change", "ünïcode\n name")
        assert await wb.flush()
        assert await ra.poll() and await rb.poll()
        assert not await ra.poll()  # nothing new: idle
        return ia, ib

    ia, ib = run(rgw, bucket, scenario, clients=2)
    assert [(r.op, r.keys, r.is_dir) for r in ib.records] == [
        ("create", ("dir/new.txt",), False),
        ("rename", ("dir/new.txt", "dir/renamed.txt"), False),
        ("delete", ("gone/",), True),
    ]
    assert [(r.mount, r.op, r.keys) for r in ia.records] == [("mount-b", "change", ("ünïcode\n name",))]
    assert ia.resyncs == ib.resyncs == []
    # one append per batch: both batches in one object, one line per record
    objects = feed_objects(s3, bucket)
    assert list(objects) == [generation_key(0, 1)]
    body = s3.get_object(Bucket=bucket, Key=generation_key(0, 1))["Body"].read()
    assert body.count(b"\n") == 1 + 4 and body.endswith(b"\n")  # the header, then the records


def test_racing_writers_of_two_mounts_both_land(rgw, bucket):
    async def scenario(za: ZosClient, zb: ZosClient, zr: ZosClient) -> tuple[Inbox, FeedStats, FeedStats]:
        wa, _, _ = mount(za, FAST, "mount-a")
        wb, _, _ = mount(zb, FAST, "mount-b")
        inbox = Inbox()
        reader = FeedReader(zr, FAST, 0, inbox.on_records, inbox.on_resync, mount_id="reader")
        await reader.start()
        seed = FeedWriter(zr, FAST, "seed")  # the feed exists (creation races: next test)
        seed.publish("create", "seed")
        assert await seed.flush()

        async def write(w: FeedWriter, n: int) -> None:
            for i in range(n):
                w.publish("create", f"{w.mount_id}/{i}")
                assert await w.flush()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, wa, 60)
            nursery.start_soon(write, wb, 60)
        while await reader.poll():
            pass
        return inbox, wa.stats, wb.stats

    inbox, sa, sb = run(rgw, bucket, scenario, clients=3)
    assert inbox.seen() == {(m, s) for m in ("mount-a", "mount-b") for s in range(1, 61)} | {("seed", 1)}
    assert len(inbox.records) == 121 and not inbox.resyncs
    assert sa.appends == sb.appends == 60
    # the two really raced: some appends were refused and retried
    assert sa.append_conflicts + sb.append_conflicts > 0, (sa, sb)
    # each mount's records stay in its own order
    for m in ("mount-a", "mount-b"):
        seqs = [r.seq for r in inbox.records if r.mount == m]
        assert seqs == sorted(seqs)


def test_racing_creators_of_a_generation_never_lose_records_silently(rgw, bucket, s3):
    """RGW lets two appends that create an object both succeed (the later
    replaces the earlier): readers get both records, or an `all`, or a resync."""

    async def trial(za: ZosClient, zb: ZosClient, zr: ZosClient) -> str:
        inbox = Inbox()
        reader = FeedReader(zr, FAST, 0, inbox.on_records, inbox.on_resync, mount_id="reader")
        await reader.start()
        wa, _, _ = mount(za, FAST, "mount-a")
        wb, _, _ = mount(zb, FAST, "mount-b")
        wa.publish("create", "a")
        wb.publish("create", "b")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wa.flush)
            nursery.start_soon(wb.flush)
        await reader.poll()
        await trio.sleep(0.3)
        for w in (wa, wb):
            await w.check_young(force=True)
            await w.flush()
        while await reader.poll():
            pass
        for key in feed_objects(s3, bucket):
            await zr.delete(key)
        ops = sorted(r.op for r in inbox.records)
        if {("mount-a", 1), ("mount-b", 1)} <= inbox.seen():
            return "both"
        assert "all" in ops or inbox.resyncs, (ops, inbox.resyncs)  # never silent
        return "invalidate all"

    async def scenario(za: ZosClient, zb: ZosClient, zr: ZosClient) -> list[str]:
        return [await trial(za, zb, zr) for _ in range(10)]

    outcomes = run(rgw, bucket, scenario, clients=3)
    print(f"\nracing creators, 10 trials: {outcomes}")


def test_rotation_keeps_the_feed_bounded_after_10000_changes(rgw, bucket, s3):
    config = FeedConfig(max_bytes=64 * 1024, batch_interval=0.0)
    changes, batch = 10_000, 50

    async def scenario(zw: ZosClient, zr: ZosClient) -> tuple[Inbox, Inbox, FeedStats, dict[str, int], list[int]]:
        writer = FeedWriter(zw, config, "writer")
        follower, lagger = Inbox(), Inbox()
        r1 = FeedReader(zr, config, 0, follower.on_records, follower.on_resync, mount_id="r1")
        r2 = FeedReader(zr, config, 0, lagger.on_records, lagger.on_resync, mount_id="r2")
        await r1.start()
        await r2.start()
        sizes: list[int] = []
        for i in range(changes):
            writer.publish("change", f"dir{i % 7}/file-{i:05d}")
            if (i + 1) % batch == 0:
                assert await writer.flush()
                await r1.poll()
                if (i + 1) % 1000 == 0:
                    sizes.append(sum(feed_objects(s3, bucket).values()))
        await r1.poll()
        await r2.poll()  # slept through several generations
        return follower, lagger, writer.stats, feed_objects(s3, bucket), sizes

    follower, lagger, wstats, objects, sizes = run(rgw, bucket, scenario, clients=2)
    print(f"\nrotations {wstats.rotations}; feed bytes every 1000 changes: {sizes}; objects at the end: {objects}")
    # every change reached the reader that kept up, without a full invalidation
    assert [r.keys[0] for r in follower.records] == [f"dir{i % 7}/file-{i:05d}" for i in range(changes)]
    assert not follower.resyncs
    # the one that lagged several generations behind was told to invalidate all
    assert lagger.resyncs and len(lagger.records) < changes
    # bounded: at most the sealed generation and the current one, each
    # within max_bytes plus one batch (records under 128 bytes) and a seal record
    assert wstats.rotations >= 10
    assert len(objects) <= 2, objects
    assert all(size <= config.max_bytes + 128 * batch + 200 for size in objects.values()), objects
    assert max(sizes) <= 2 * (config.max_bytes + 128 * batch + 200), sizes


def test_unparsable_records_are_skipped(rgw, bucket):
    async def scenario(zw: ZosClient, zr: ZosClient) -> tuple[Inbox, FeedStats]:
        inbox = Inbox()
        stats = FeedStats()
        reader = FeedReader(zr, FAST, 0, inbox.on_records, inbox.on_resync, mount_id="r", stats=stats)
        await reader.start()
        writer = FeedWriter(zw, FAST, "w")
        writer.publish("create", "first")
        assert await writer.flush()
        key = generation_key(0, 1)
        length = (await zw.head(key)).size
        junk = (
            b"not json at all\n"
            b'{"v":2,"m":"future","s":1,"t":1,"op":"create","k":["x"]}\n'  # a later version
            b'{"v":1,"m":"w2","s":1,"t":1,"op":"chmod-everything","k":["x"]}\n'  # an unknown op
            b'{"v":1,"m":"w2","s":"one","t":1,"op":"create","k":["x"]}\n'  # wrong type
            b"\xff\xfe\n"
        )
        await zw.append(key, length, junk)
        writer.publish("delete", "second")
        assert await writer.flush()
        while await reader.poll():
            pass
        return inbox, stats

    inbox, stats = run(rgw, bucket, scenario, clients=2)
    assert [(r.op, r.keys) for r in inbox.records] == [("create", ("first",)), ("delete", ("second",))]
    assert stats.records_skipped == 5 and not inbox.resyncs


def test_a_replaced_feed_object_makes_readers_invalidate_all(rgw, bucket, s3):
    async def scenario(zw: ZosClient, zr: ZosClient) -> tuple[Inbox, list[str]]:
        inbox = Inbox()
        reader = FeedReader(zr, FAST, 0, inbox.on_records, inbox.on_resync, mount_id="r")
        writer = FeedWriter(zw, FAST, "w")
        await reader.start()
        for i in range(5):
            writer.publish("create", f"k{i}")
        assert await writer.flush()
        assert await reader.poll()
        seen: list[str] = []
        # someone deletes the feed and it starts again, shorter
        await zw.delete(generation_key(0, 1))
        w2 = FeedWriter(zw, FAST, "w2")
        w2.publish("create", "after")
        assert await w2.flush()
        await reader.poll()
        seen.append(f"resyncs after shrink: {len(inbox.resyncs)}")
        # and again, now longer than the reader's offset
        await zw.delete(generation_key(0, 1))
        w3 = FeedWriter(zw, FAST, "w3")
        for i in range(40):
            w3.publish("create", f"a-name-much-longer-than-the-first-{i}")
        assert await w3.flush()
        await reader.poll()
        seen.append(f"resyncs after replace: {len(inbox.resyncs)}")
        return inbox, seen

    inbox, seen = run(rgw, bucket, scenario, clients=2)
    assert seen == ["resyncs after shrink: 1", "resyncs after replace: 2"], (seen, inbox.resyncs)
    assert [r.keys[0] for r in inbox.records] == [f"k{i}" for i in range(5)]


def test_feed_switches_off_where_append_is_unavailable(rgw, versioned_bucket, s3):
    async def scenario(zos: ZosClient) -> FeedWriter:
        writer = FeedWriter(zos, FAST, "w")
        writer.publish("create", "x")
        await writer.flush()
        writer.publish("create", "y")  # ignored once off
        return writer

    writer = run(rgw, versioned_bucket, scenario)
    assert "InvalidBucketState" in writer.stats.disabled
    assert not writer.enabled and writer.pending == 0
    assert feed_objects(s3, versioned_bucket) == {}


def test_idle_readers_back_off_and_wake_on_activity(rgw, bucket):
    idle_seconds = 5.0

    async def scenario(zw: ZosClient, zr: ZosClient) -> dict[str, Any]:
        steady = FeedConfig(poll_min=0.25, poll_max=0.25)
        backing = FeedConfig(poll_min=0.25, poll_max=2.0, poll_growth=2.0)
        writer = FeedWriter(zw, FAST, "w")
        writer.publish("create", "seed")  # the feed object exists
        assert await writer.flush()
        a, b = Inbox(), Inbox()
        ra = FeedReader(zr, steady, 0, a.on_records, a.on_resync, mount_id="a")
        rb = FeedReader(zr, backing, 0, b.on_records, b.on_resync, mount_id="b")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ra.run)
            nursery.start_soon(rb.run)
            await trio.sleep(idle_seconds)
            idle = {"steady": ra.stats.polls, "backing": rb.stats.polls, "interval": rb.interval}
            sent = time.time()
            writer.publish("create", "wake")
            assert await writer.flush()
            with trio.fail_after(10):
                while not b.records:
                    await trio.sleep(0.02)
            idle["delivery"] = time.time() - sent
            await trio.sleep(0.05)
            idle["interval_after"] = rb.interval
            nursery.cancel_scope.cancel()
        return idle

    out = run(rgw, bucket, scenario, clients=2)
    print(f"\nidle polls in {idle_seconds} s: steady {out['steady']}, backing off {out['backing']}; {out}")
    assert out["steady"] >= 12  # about 20 at 4/s, fewer under load
    assert out["backing"] <= out["steady"] / 2
    assert out["interval"] == 2.0 and out["interval_after"] == 0.25
    assert out["delivery"] < 2.0 + 1.0  # within poll_max (+ slack for a loaded machine)


def test_fifty_simulated_mounts_measure_request_rate_and_lag(rgw, bucket):
    """50 readers in one process share ONE ZosClient (one connection pool,
    as 50 mounts on one host would not, but the server sees the same
    requests); two writer mounts have their own. Default poll settings."""
    readers_n, busy, idle = 50, 8.0, 6.0
    config = FeedConfig()

    async def scenario(zw1: ZosClient, zw2: ZosClient) -> dict[str, Any]:
        counts = RequestStats()
        shared = ZosClient(client_config(rgw.endpoint, bucket, max_connections=64), counts)
        try:
            writers = [FeedWriter(zw1, config, "w1"), FeedWriter(zw2, config, "w2")]
            writers[0].publish("create", "seed")
            assert await writers[0].flush()
            inboxes = [Inbox() for _ in range(readers_n)]
            readers = [
                FeedReader(shared, config, 0, ib.on_records, ib.on_resync, mount_id=f"r{i}")
                for i, ib in enumerate(inboxes)
            ]
            for r in readers:
                await r.start()
            before = counts.snapshot().get("GetObject", {}).get("count", 0)
            async with trio.open_nursery() as nursery:
                for w in writers:
                    nursery.start_soon(w.run)
                for r in readers:
                    nursery.start_soon(r.run)
                t0 = time.monotonic()
                n = 0
                while time.monotonic() - t0 < busy:  # each writer: a change every 0.2 s
                    for w in writers:
                        w.publish("change", f"{w.mount_id}/file-{n}")
                    n += 1
                    await trio.sleep(0.2)
                t_busy = time.monotonic()
                mid = counts.snapshot().get("GetObject", {}).get("count", 0)
                # The last records arrive and the readers back off; the idle
                # rate is measured only after that settling half.
                await trio.sleep(idle / 2)
                settled = counts.snapshot().get("GetObject", {}).get("count", 0)
                t1 = time.monotonic()
                await trio.sleep(idle / 2)
                end = counts.snapshot().get("GetObject", {}).get("count", 0)
                t2 = time.monotonic()
                nursery.cancel_scope.cancel()
        finally:
            shared.close()
        lags = sorted(t - r.time for ib in inboxes for t, r in ib.arrived)
        expected = {f"{w}/file-{i}" for w in ("w1", "w2") for i in range(n)}
        return {
            "changes": 2 * n,
            "complete": sum(1 for ib in inboxes if expected == {r.keys[0] for r in ib.records}),
            "resyncs": sum(len(ib.resyncs) for ib in inboxes),
            "busy_get_per_s": (mid - before) / (t_busy - t0),
            "idle_get_per_s": (end - settled) / (t2 - t1),
            "appends": sum(w.stats.appends for w in writers),
            "append_conflicts": sum(w.stats.append_conflicts for w in writers),
            "lag_p50": statistics.median(lags),
            "lag_p95": lags[int(0.95 * (len(lags) - 1))],
            "lag_max": lags[-1],
        }

    out = run(rgw, bucket, scenario, clients=2)
    print(
        f"\n{readers_n} readers, 2 writers, {out['changes']} changes in {busy} s: "
        f"GET/s while busy {out['busy_get_per_s']:.1f} ({out['busy_get_per_s'] / readers_n:.2f} per reader), "
        f"after the last change {out['idle_get_per_s']:.1f}; appends {out['appends']} "
        f"({out['append_conflicts']} refused and retried); lag p50 {out['lag_p50']:.3f} s, "
        f"p95 {out['lag_p95']:.3f} s, max {out['lag_max']:.3f} s"
    )
    assert out["complete"] == readers_n and out["resyncs"] == 0
    assert out["lag_p50"] < 1.5 and out["lag_max"] < 5.0  # generous: 2 shared cores
    # polling is bounded by poll_min while busy and poll_max once idle
    assert out["busy_get_per_s"] <= readers_n / config.poll_min * 1.1
    assert out["idle_get_per_s"] <= readers_n / config.poll_max * 1.5
