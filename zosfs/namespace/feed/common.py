"""What the feed's writer and reader share: settings, counters, and finding
a shard's newest generation."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from zosfs.namespace.feed.records import generation_of, shard_prefix
from zosfs.zos import ZosClient

MiB = 1024 * 1024


@dataclass(frozen=True)
class FeedConfig:
    """Settings of one mount's feed (from `-o change_feed=...` and friends)."""

    enabled: bool = True
    shards: int = 1  # feeds per bucket; a mount of a prefix polls one of them
    batch_interval: float = 0.2  # at most one append per shard this often
    max_bytes: int = 1 * MiB  # a generation past this is sealed and a new one begun
    max_pending: int = 10_000  # records held while appends fail; beyond: one "all"
    poll_min: float = 0.25  # poll interval right after a change was seen
    poll_max: float = 1.0  # idle polling backs off up to this
    poll_growth: float = 1.5  # each idle poll multiplies the interval by this
    max_attempts: int = 10  # appends per batch before it waits for the next flush


@dataclass
class FeedStats:
    """Counters for `zosfs stats` (one per mount; fed from the trio thread)."""

    records_published: int = 0
    appends: int = 0
    append_conflicts: int = 0  # 409s: another mount appended first
    append_failures: int = 0
    records_dropped: int = 0  # replaced by an "all" record
    rotations: int = 0
    polls: int = 0
    idle_polls: int = 0
    bytes_read: int = 0
    records_read: int = 0  # other mounts' records handed on
    records_skipped: int = 0  # unparsable or unknown
    resyncs: int = 0  # continuity lost: everything invalidated
    invalidations: int = 0  # names forgotten because another mount changed them
    versions_taken: int = 0  # of them: files updated from the record's attributes, no request
    full_invalidations: int = 0  # everything forgotten (resyncs and `all` records)
    last_lag: float = 0.0  # seconds from a record's append to its delivery here
    max_lag: float = 0.0
    last_poll: float = 0.0  # time.time() of the last successful poll
    disabled: str = ""  # why the feed is off, if it is
    lags: list[float] = field(default_factory=list, repr=False)  # recent, bounded

    def note_lag(self, lag: float) -> None:
        lag = max(0.0, lag)
        self.last_lag = lag
        self.max_lag = max(self.max_lag, lag)
        self.lags.append(lag)
        if len(self.lags) > 1000:
            del self.lags[:500]

    def snapshot(self) -> dict[str, object]:
        """Plain numbers for the stats file, with the age of the last poll."""
        out = {k: v for k, v in self.__dict__.items() if k != "lags"}
        out["poll_age"] = round(time.time() - self.last_poll, 3) if self.last_poll else None
        return out


def new_mount_id() -> str:
    """A random id for this mount's records (readers skip their own)."""
    return secrets.token_hex(6)


async def newest_generation(zos: ZosClient, shard: int) -> tuple[int, int] | None:
    """(generation, size) of a shard's newest feed object, or None if it has none."""
    best: tuple[int, int] | None = None
    async for page in zos.list_all(shard_prefix(shard), delimiter=None):
        for entry in page.entries:
            gen = generation_of(entry.key)
            if gen is not None and (best is None or gen > best[0]):
                best = (gen, entry.size)
    return best


async def older_generations(zos: ZosClient, shard: int, below: int) -> list[str]:
    """Keys of a shard's generations older than `below`."""
    keys: list[str] = []
    async for page in zos.list_all(shard_prefix(shard), delimiter=None):
        keys.extend(e.key for e in page.entries if (g := generation_of(e.key)) is not None and g < below)
    return keys
