"""Following one shard of the feed: poll for new records, hand them on.

A poll is one ranged GET from 32 bytes before the reader's offset
(`Range: bytes=OFF-32-`). Those bytes are always there and must equal the
end of what the reader read last, which shows the object is still the one
the reader was reading: when nothing changed the answer is those 32 bytes;
a 416 means the object became shorter than the offset (replaced); a 404
means it is gone. (zosfs never reuses a feed key, so a replacement takes
someone deleting the feed by hand.) Readers follow `seal` records from one generation
to the next at offset 0. Whenever a reader cannot prove it saw every
record since its last poll (object gone or replaced, generations skipped),
it starts over at the newest generation's end and calls `on_resync`, whose
job is to invalidate everything cached: always safe, never silent.

Polls come every `poll_min` seconds while records arrive and back off by
`poll_growth` per idle poll up to `poll_max`.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable

import trio

from zosfs.namespace.feed.common import FeedConfig, FeedStats, newest_generation
from zosfs.namespace.feed.records import Record, generation_key, parse_line, split_lines
from zosfs.zos import ZosClient, ZosError

log = logging.getLogger(__name__)

EDGE = 32  # bytes before the offset that each poll reads again and compares
MISSING_LIST_INTERVAL = 10.0  # seconds between LISTs while a generation is not created yet


class FeedReader:
    """Polls one shard's feed and hands other mounts' records to a callback."""

    def __init__(
        self,
        zos: ZosClient,
        config: FeedConfig,
        shard: int,
        on_records: Callable[[list[Record]], None],
        on_resync: Callable[[str], None],
        *,
        mount_id: str = "",
        stats: FeedStats | None = None,
    ) -> None:
        self.zos = zos
        self.config = config
        self.shard = shard
        self.on_records = on_records
        self.on_resync = on_resync
        self.mount_id = mount_id  # records of this mount are skipped
        self.stats = stats or FeedStats()
        self.gen = 1
        self.pos = 0
        self.edge: bytes | None = b""  # the EDGE bytes before pos; None: not known
        self.started = False
        self.interval = config.poll_min
        self._listed_at = -MISSING_LIST_INTERVAL  # (trio clock) last LIST because a generation was missing

    @property
    def key(self) -> str:
        return generation_key(self.shard, self.gen)

    async def start(self) -> None:
        """Begin at the end of the newest generation (nothing before it
        concerns a mount that has cached nothing yet)."""
        newest = await newest_generation(self.zos, self.shard)
        self.gen, self.pos = newest if newest is not None else (1, 0)
        await self._learn_edge()
        self.started = True

    async def run(self) -> None:
        """Poll until cancelled (a background task); never raises ZosError."""
        while True:
            try:
                if not self.started:
                    await self.start()
                active = await self.poll()
            except ZosError as err:
                log.info("change feed: poll of %s failed (%s)", self.key, err)
                active = False
            if active:
                self.interval = self.config.poll_min
            else:
                self.interval = min(self.config.poll_max, self.interval * self.config.poll_growth)
            await trio.sleep(self.interval)

    async def poll(self) -> bool:
        """One poll (following seals at once); True if anything new came."""
        active = False
        for _ in range(8):  # a few seals in a row at most, then the next poll
            more, sealed = await self._poll_once()
            active = active or more
            if not sealed:
                break
        return active

    async def _poll_once(self) -> tuple[bool, bool]:
        """(anything new, followed a seal)."""
        n = min(EDGE, self.pos)
        try:
            data = await self.zos.get(self.key, self.pos - n)
        except ZosError as err:
            if err.code == "InvalidRange" or err.status == 416:
                await self.resync(f"{self.key} is shorter than what was read of it")
                return True, False
            if err.errno != errno.ENOENT:
                raise
            return await self._missing(), False
        self.stats.polls += 1
        self.stats.last_poll = time.time()
        self.stats.bytes_read += len(data)
        seen, data = bytes(data[:n]), data[n:]
        if len(seen) < n or (self.edge is not None and seen != self.edge):
            await self.resync(f"{self.key} changed under the reader")
            return True, False
        if self.edge is None:
            self.edge = seen
        lines, used = split_lines(data)
        if not lines:
            self.stats.idle_polls += 1
            return False, False
        records: list[Record] = []
        sealed_to: int | None = None
        for line in lines:
            rec = parse_line(line)
            if rec is None:
                self.stats.records_skipped += 1
                continue
            if rec.op == "seal":
                sealed_to = rec.next_gen
                break
            if rec.op == "gen":
                continue
            if rec.mount != self.mount_id:
                records.append(rec)
        if sealed_to is not None:
            self.gen, self.pos, self.edge = sealed_to, 0, b""
        else:
            self.pos += used
            self.edge = (seen + bytes(data[:used]))[-EDGE:]
        self._deliver(records)
        return True, sealed_to is not None

    async def _missing(self) -> bool:
        """The generation being read is not there: not yet created (after a
        seal), or deleted while this reader lagged a whole generation."""
        if self.pos == 0 and trio.current_time() < self._listed_at + MISSING_LIST_INTERVAL:
            # Not created yet, most likely (a fresh bucket): skipping a whole
            # generation between two such polls takes 1 MiB of records.
            self._idle_poll()
            return False
        self._listed_at = trio.current_time()
        newest = await newest_generation(self.zos, self.shard)
        if self.pos == 0 and (newest is None or newest[0] <= self.gen):
            self._idle_poll()
            return False
        await self.resync(f"{self.key} is gone")
        return True

    def _idle_poll(self) -> None:
        self.stats.polls += 1
        self.stats.idle_polls += 1
        self.stats.last_poll = time.time()

    async def resync(self, why: str) -> None:
        """Continue from the newest generation's end and invalidate all."""
        log.info("change feed: %s; invalidating everything cached", why)
        newest = await newest_generation(self.zos, self.shard)
        self.gen, self.pos = newest if newest is not None else (1, 0)
        await self._learn_edge()
        self.stats.resyncs += 1
        self.stats.last_poll = time.time()
        self.on_resync(why)

    async def _learn_edge(self) -> None:
        """Read the bytes just before the offset, to compare with later polls."""
        n = min(EDGE, self.pos)
        self.edge = b""
        if n:
            try:
                self.edge = bytes((await self.zos.get(self.key, self.pos - n, self.pos)))
            except ZosError:
                self.edge = None  # taken as found by the next poll

    def _deliver(self, records: list[Record]) -> None:
        if not records:
            return
        now = time.time()
        for rec in records:
            self.stats.note_lag(now - rec.time)
        self.stats.records_read += len(records)
        self.on_records(records)
