"""The change feed between zosfs mounts of one bucket.

Each mount appends small records of the keys it creates, changes, renames
and deletes to an appendable object under the reserved prefix `.zosfs/feed/`
(`FeedWriter`) and polls the same object for other mounts' records
(`FeedReader`), so that it invalidates exactly those names within about a
second instead of waiting for its cache timers. `records` defines the
format and the object names; `Feed` puts a writer and the readers a mount
needs together.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from zosfs.namespace.feed.common import FeedConfig, FeedStats, new_mount_id
from zosfs.namespace.feed.reader import FeedReader
from zosfs.namespace.feed.records import FEED_PREFIX, RESERVED_PREFIX, FileVersion, Record, parse_line, shards_for_prefix
from zosfs.namespace.feed.writer import FeedWriter
from zosfs.zos import ZosClient, ZosError

__all__ = [
    "FEED_PREFIX", "RESERVED_PREFIX", "Feed", "FeedConfig", "FeedReader", "FeedStats", "FeedWriter", "FileVersion", "Record",
    "parse_line",
]


class Feed:
    """One mount's feed: a writer for its changes, readers for the shards
    its prefix covers, one set of counters."""

    def __init__(
        self,
        zos: ZosClient,
        config: FeedConfig,
        prefix: str,
        on_records: Callable[[list[Record]], None],
        on_resync: Callable[[str], None],
        *,
        append_available: bool = True,
        stats: FeedStats | None = None,
    ) -> None:
        self.config = config
        self.stats = stats or FeedStats()
        self.mount_id = new_mount_id()
        self.writer = FeedWriter(zos, config, self.mount_id, self.stats)
        if not append_available:
            self.writer.disable("append unavailable (versioned or object-lock bucket)")
        self.readers = [
            FeedReader(zos, config, shard, on_records, on_resync, mount_id=self.mount_id, stats=self.stats)
            for shard in shards_for_prefix(prefix, config.shards)
        ]

    @property
    def enabled(self) -> bool:
        return self.writer.enabled

    def publish(self, op: str, *keys: str, is_dir: bool = False, attrs: FileVersion | None = None) -> None:
        """Announce one change of this mount (see `FeedWriter.publish`)."""
        self.writer.publish(op, *keys, is_dir=is_dir, attrs=attrs)

    async def close(self, timeout: float = 5.0) -> None:
        """Append what is still queued (at unmount), within `timeout` seconds."""
        if self.enabled and self.writer.pending:
            with trio.move_on_after(timeout):
                await self.writer.flush()

    async def run(self) -> None:
        """Write and follow the feed until cancelled; returns at once when it is off."""
        if not self.enabled:
            return
        for reader in self.readers:
            try:
                await reader.start()  # before anything is cached, so nothing is missed
            except ZosError:
                pass  # run() tries again
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.writer.run)
            for reader in self.readers:
                nursery.start_soon(reader.run)
