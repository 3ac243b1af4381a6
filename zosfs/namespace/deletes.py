"""Deletes, batched: `rm -r` of 10,000 files in 10 requests, not 10,000.

`unlink` takes the name out of the namespace at once and queues the key; a
background task sends the queue with DeleteObjects (up to 1,000 keys a
request) as soon as it has waited a moment for more. So the deletion is not
yet on the server when unlink returns, but:

- this mount never shows the name again (listings leave queued keys out);
- anything that writes the same key again, or needs the directory empty
  (rmdir, a rename onto it), first waits for the queued deletes;
- unmount and SIGTERM send the queue before exiting;
- a delete the server refuses is logged, and the name comes back with the
  next listing (the object was never lost).

In an object-lock bucket unlink stays synchronous (see `Namespace.unlink`):
the refusal must reach the caller. So is a mount's first delete, which tells
whether these credentials may delete at all, and every delete once the
server has refused one for want of rights (AccessDenied: a read-only key, a
bucket policy): `rm` then fails with EACCES, rather than succeeding for a
file that stays. The queue is for mounts the server lets delete.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable

import trio

from zosfs.zos import ZosClient, ZosError

log = logging.getLogger(__name__)

BATCH = 1000
GATHER = 0.02  # seconds to wait for more keys before sending a batch


class DeleteQueue:
    def __init__(self, zos: ZosClient) -> None:
        self.zos = zos
        self.queued: list[str] = []
        self.pending: set[str] = set()  # queued or being deleted
        self._work = trio.Event()
        self._progress = trio.Event()
        # Told the keys the server deleted (the change feed announces them then).
        self.on_deleted: Callable[[list[str]], None] | None = None
        self.refused = False  # the server refused a delete for want of rights: unlink waits for it
        self.allowed = False  # a delete sent at once succeeded: later ones may be queued

    def add(self, key: str) -> None:
        if key in self.pending:
            return
        self.queued.append(key)
        self.pending.add(key)
        self._work.set()

    def must_wait(self) -> bool:
        """Whether an unlink sends its delete at once and waits for the answer."""
        return self.refused or not self.allowed

    async def delete_now(self, key: str) -> None:
        """Delete one key and wait (ZosError if refused; a missing key is deleted)."""
        try:
            await self.zos.delete(key)
        except ZosError as err:
            if err.code == "AccessDenied":
                self._refused()
            if err.errno != errno.ENOENT:
                raise
        else:
            self.allowed = True

    def __contains__(self, key: str) -> bool:
        return key in self.pending

    def pending_below(self, prefix: str) -> bool:
        return any(k.startswith(prefix) for k in self.pending)

    async def settle(self, key: str | None = None, prefix: str | None = None) -> None:
        """Wait until `key` (or every key below `prefix`, or with neither,
        every key) is deleted on the server."""
        while True:
            if key is not None:
                waiting = key in self.pending
            elif prefix is not None:
                waiting = self.pending_below(prefix)
            else:
                waiting = bool(self.pending)
            if not waiting:
                return
            self._work.set()
            await self._progress.wait()

    async def run(self) -> None:
        """The background sender; runs for the life of the mount."""
        while True:
            await self._work.wait()
            self._work = trio.Event()
            if len(self.queued) < BATCH:
                await trio.sleep(GATHER)
            while self.queued:
                batch, self.queued = self.queued[:BATCH], self.queued[BATCH:]
                await self._send(batch)

    async def _send(self, batch: list[str]) -> None:
        try:
            failures = await self.zos.delete_many(batch)
        except ZosError as err:
            log.error("deleting %d object(s) failed (first %r): %s; they stay in the bucket", len(batch), batch[0], err)
            if err.code == "AccessDenied":
                self._refused()
        else:
            kept = set()
            for f in failures:
                if f.code not in ("NoSuchKey",):
                    kept.add(f.key)
                    log.error("could not delete %r: %s (%s); it stays in the bucket", f.key, f.message, f.code)
                if f.code == "AccessDenied":
                    self._refused()
            if self.on_deleted is not None:
                self.on_deleted([k for k in batch if k not in kept])
        finally:
            self.pending.difference_update(batch)
            self._progress.set()
            self._progress = trio.Event()

    def _refused(self) -> None:
        if not self.refused:
            self.refused = True
            log.warning("the server refuses deletes with these credentials: from now on unlink waits for "
                        "the server's answer, so that a refusal reaches the caller (EACCES)")
