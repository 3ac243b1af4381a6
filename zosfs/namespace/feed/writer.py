"""Announcing this mount's changes: batch them and append them to the feed.

`publish()` is synchronous and never waits on the network: it queues a
record. The `run()` task appends what is queued, one append per shard per
`batch_interval` at most (the first change after a quiet spell goes out at
once). Appends are position-checked by the server, so writers of many
mounts serialize on each feed object: a 409 PositionNotEqualToLength means
another mount appended first; the writer HEADs the object for its real
length (and for the seal mark) and tries again, a bounded number of times.

A writer never appends after a seal: it appends at position N only when it
has seen (by HEAD) that the object is N bytes long and unsealed, and the
server refuses the append if anything was appended since. So the seal
record is always a generation's last line, and readers that follow seals
see every record. One race the server does not settle: two appends at
position 0 that create an object both succeed, the later replacing the
earlier. So only a generation's header (the same bytes from every writer)
goes at 0, and a writer that appended to a generation within YOUNG_GRACE of
its creation checks YOUNG_GRACE later that its bytes are still there
(`check_young`); if not, it announces `all`. When appends keep failing, records stay queued (up to
`max_pending`); beyond that they are replaced by one `all` record, so that
other mounts invalidate everything instead of missing changes silently.
"""

from __future__ import annotations

import errno
import logging
import random
import time

import trio

from zosfs.namespace.feed.common import FeedConfig, FeedStats, new_mount_id, newest_generation
from zosfs.namespace.feed.records import SEALED_META, FileVersion, Record, generation_key, header, shard_of
from zosfs.zos import WriteOptions, ZosClient, ZosError

log = logging.getLogger(__name__)

YOUNG_GRACE = 2.0  # seconds a creating append may still be in flight elsewhere
UNAVAILABLE = ("InvalidBucketState", "ObjectNotAppendable", "NotImplemented", "MethodNotAllowed")


class FeedWriter:
    """Queues this mount's changes and appends them to the feed in batches."""

    def __init__(
        self, zos: ZosClient, config: FeedConfig, mount_id: str | None = None, stats: FeedStats | None = None
    ) -> None:
        self.zos = zos
        self.config = config
        self.mount_id = mount_id or new_mount_id()
        self.stats = stats or FeedStats()
        self._pending: dict[int, list[Record]] = {}
        self._seq = 0
        self._wake = trio.Event()
        # shard -> (generation, length); length None: HEAD before appending
        self._at: dict[int, tuple[int, int | None]] = {}
        # shard -> (generation, when this mount saw it with nothing but its header)
        self._born: dict[int, tuple[int, float]] = {}
        # shard -> (generation, position, bytes we appended there, when to check they still are)
        self._young: dict[int, tuple[int, int, bytes, float]] = {}
        if not config.enabled:
            self.stats.disabled = self.stats.disabled or "switched off"

    @property
    def enabled(self) -> bool:
        return not self.stats.disabled

    def disable(self, reason: str) -> None:
        """Stop announcing (append unavailable, or the option says so)."""
        if not self.stats.disabled:
            log.warning("change feed off: %s; other mounts see this mount's changes after their cache timers", reason)
        self.stats.disabled = reason
        self._pending.clear()
        self._wake.set()

    def publish(self, op: str, *keys: str, is_dir: bool = False, attrs: FileVersion | None = None) -> None:
        """Queue one change: `create`, `change`, `delete` of a key, or
        `rename` of old key to new key; `attrs`: the version a `change`
        of a file stored. Returns at once."""
        if not self.enabled:
            return
        self._seq += 1
        rec = Record(self.mount_id, self._seq, time.time(), op, tuple(keys), is_dir, attrs=attrs)
        for shard in sorted({shard_of(k, self.config.shards) for k in keys} or {0}):
            queue = self._pending.setdefault(shard, [])
            queue.append(rec)
            self.stats.records_published += 1
            if len(queue) > self.config.max_pending:
                self._collapse(shard)
        self._wake.set()

    def _collapse(self, shard: int) -> None:
        """Replace a shard's queue by one `all` record (too many to keep)."""
        queue = self._pending.get(shard, [])
        self.stats.records_dropped += len(queue)
        self._seq += 1
        self._pending[shard] = [Record(self.mount_id, self._seq, time.time(), "all")]

    @property
    def pending(self) -> int:
        return sum(len(q) for q in self._pending.values())

    async def run(self) -> None:
        """Append queued records until cancelled (a background task)."""
        failures = 0
        while self.enabled:
            due = min((y[3] for y in self._young.values()), default=None)
            with trio.move_on_at(due if due is not None else float("inf")):
                await self._wake.wait()
            await self.check_young()
            if not self._wake.is_set():
                continue
            self._wake = trio.Event()
            if not await self.flush():
                failures += 1
                self._wake.set()  # try again after a pause, even without news
                await trio.sleep(min(10.0, self.config.batch_interval * 2**failures))
                continue
            failures = 0
            await trio.sleep(self.config.batch_interval)

    async def flush(self) -> bool:
        """Append everything queued, one append per shard; False if some
        records stay queued (they go with the next flush)."""
        ok = True
        for shard in sorted(self._pending):
            records = self._pending.pop(shard)
            if not records:
                continue
            body = b"".join(r.encode() for r in records)
            try:
                done = await self._append(shard, body)
            except ZosError as err:
                log.warning("change feed: append failed (%s); %d records wait", err, len(records))
                done = False
            if not self.enabled:
                return True
            if not done:
                self.stats.append_failures += 1
                ok = False
                # put back in front of anything queued meanwhile
                self._pending[shard] = records + self._pending.get(shard, [])
                if len(self._pending[shard]) > self.config.max_pending:
                    self._collapse(shard)
        return ok

    async def _append(self, shard: int, body: bytes) -> bool:
        for attempt in range(self.config.max_attempts):
            if attempt:
                # Writers that lost a race must not meet again in lockstep:
                # RGW can refuse both of two appends at one position.
                await trio.sleep(random.random() * min(1.0, 0.02 * 2**attempt))
            gen, pos = self._at.get(shard) or await self._locate(shard)
            if not pos:  # unknown, or 0: records never go at 0 (see records.header)
                gen, pos = await self._refresh(shard, gen)
            try:
                done = await self.zos.append(generation_key(shard, gen), pos, body)
            except ZosError as err:
                # Two appends racing at one position: RGW refuses the loser
                # (sometimes both) with 409 BucketAlreadyExists (sic) rather
                # than PositionNotEqualToLength; both mean "look again".
                if err.code in ("PositionNotEqualToLength", "BucketAlreadyExists"):
                    self.stats.append_conflicts += 1
                    log.debug("change feed: %s at %d refused (%s); looking again", generation_key(shard, gen), pos, err.code)
                    self._at[shard] = (gen, None)
                    continue
                if err.code in UNAVAILABLE or err.errno == errno.EOPNOTSUPP:
                    self.disable(f"append unavailable ({err.code})")
                    return False
                self._at.pop(shard, None)  # unknown state: look again next time
                raise
            self.stats.appends += 1
            self._at[shard] = (gen, done.position)
            born = self._born.get(shard)
            young = self._young.get(shard)
            if (
                born is not None and born[0] == gen and trio.current_time() < born[1] + YOUNG_GRACE
                and (young is None or young[0] != gen)  # the first suffices: a late create replaces all after it
            ):
                self._young[shard] = (gen, pos, body, born[1] + YOUNG_GRACE)
            if done.position >= self.config.max_bytes:
                await self._seal(shard)
            return True
        return False

    async def check_young(self, force: bool = False) -> None:
        """Look again at generations this mount appended to right after
        their creation, once YOUNG_GRACE has passed: a creating append
        still in flight elsewhere may have replaced the object (RGW lets
        racing creates both succeed). Lost records become one `all`."""
        now = trio.current_time()
        for shard, (gen, pos, body, due) in list(self._young.items()):
            if not force and now < due:
                continue
            del self._young[shard]
            try:
                there = bytes(await self.zos.get(generation_key(shard, gen), pos, pos + len(body)))
            except ZosError as err:
                log.info("change feed: could not check %s (%s)", generation_key(shard, gen), err)
                there = b""
            if there != body:
                log.warning("change feed: records in %s may be lost; asking other mounts to invalidate all",
                            generation_key(shard, gen))
                self._seq += 1
                self._pending.setdefault(shard, []).insert(0, Record(self.mount_id, self._seq, time.time(), "all"))
                self._at.pop(shard, None)
                self._wake.set()

    async def _locate(self, shard: int) -> tuple[int, int | None]:
        newest = await newest_generation(self.zos, shard)
        return (1 if newest is None else newest[0]), None

    async def _create(self, shard: int, gen: int) -> None:
        """Begin a generation with its header (racing creators write the same bytes)."""
        try:
            await self.zos.append(generation_key(shard, gen), 0, header(gen))
        except ZosError as err:
            if err.code in UNAVAILABLE or err.errno == errno.EOPNOTSUPP:
                self.disable(f"append unavailable ({err.code})")
                raise
            # Most likely another mount created it first; the HEAD that follows tells.
            log.debug("change feed: creating %s: %s", generation_key(shard, gen), err)

    async def _refresh(self, shard: int, gen: int) -> tuple[int, int]:
        """The generation to append to and its length, following seals and
        skipping generations that were already deleted."""
        followed_seal = waited = False
        for _ in range(16):
            try:
                info = await self.zos.head(generation_key(shard, gen))
            except ZosError as err:
                if err.errno != errno.ENOENT:
                    raise
                if followed_seal and not waited:
                    # The sealer creates it right away; creating it too
                    # would race with that (see check_young).
                    waited = True
                    await trio.sleep(0.2 + 0.2 * random.random())
                    continue
                newest = await newest_generation(self.zos, shard)
                if newest is not None and newest[0] > gen:
                    gen = newest[0]  # ours was rotated away and deleted
                    continue
                await self._create(shard, gen)  # not created yet
                continue
            nxt = info.metadata.get(SEALED_META, "")
            if nxt.isdigit() and int(nxt) > gen:
                gen, followed_seal, waited = int(nxt), True, False
                continue
            length = info.next_append_position if info.next_append_position is not None else info.size
            if length == 0:
                await self._create(shard, gen)
                continue
            if length == len(header(gen)) and self._born.get(shard, (0,))[0] != gen:
                self._born[shard] = (gen, trio.current_time())
            self._at[shard] = (gen, length)
            return gen, length
        raise ZosError(errno.EIO, "FeedLoop", "the change feed's seal chain does not end", key=generation_key(shard, gen))

    async def _seal(self, shard: int) -> None:
        """End a full generation: a seal record (and mark) naming the next
        one, create that one, delete the one before this."""
        gen, pos = self._at[shard]
        assert pos is not None
        self._seq += 1
        seal = Record(self.mount_id, self._seq, time.time(), "seal", next_gen=gen + 1).encode()
        opts = WriteOptions(metadata={SEALED_META: str(gen + 1)})
        try:
            await self.zos.append(generation_key(shard, gen), pos, seal, opts)
        except ZosError as err:
            # Someone appended first; whoever next finds it too long seals it.
            self._at[shard] = (gen, None)
            if err.code != "PositionNotEqualToLength":
                log.info("change feed: could not seal %s (%s)", generation_key(shard, gen), err)
            return
        self.stats.rotations += 1
        self._at[shard] = (gen + 1, None)
        # Create the next generation at once, so readers that follow the seal find it.
        await self._create(shard, gen + 1)
        if gen > 1:
            try:
                await self.zos.delete(generation_key(shard, gen - 1))
            except ZosError as err:
                if err.errno != errno.ENOENT:
                    log.info("change feed: could not delete %s (%s)", generation_key(shard, gen - 1), err)
