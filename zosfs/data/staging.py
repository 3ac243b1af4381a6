"""Staging: local files that hold written data until the object store has it.

Every open-for-writing file with changes has one sparse staging file of the
same logical size; only its dirty ranges (see `write.py`) mean anything. A
small JSON journal beside it names the object key, so that data left behind
by a failed upload, or by a daemon that was killed, can be found and
recovered: the log names both paths.

The budget bounds bytes that are written but not yet uploaded. Writers wait
(backpressure) while it is exhausted rather than filling the disk.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import trio

log = logging.getLogger(__name__)

MAKE_ROOM_INTERVAL = 1.0  # seconds between calls of make_room while a writer waits for the budget


class StagedFile:
    """One staging file and its journal."""

    def __init__(self, directory: str, key: str, created: bool) -> None:
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"
        self.path = os.path.join(directory, name + ".data")
        self.journal = os.path.join(directory, name + ".json")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.key = key
        # created: the object did not exist, so this file holds all of it.
        self.record: dict[str, Any] = {"key": key, "data": os.path.basename(self.path), "created": created}
        self.write_journal(state="writing")

    def write_journal(self, **fields: Any) -> None:
        """Update what this file is for (atomically: write, then rename)."""
        self.record.update(fields, updated=time.time())
        if "key" in fields:
            self.key = fields["key"]
        tmp = self.journal + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.record, f)
        os.replace(tmp, self.journal)

    def pwrite(self, data: bytes | memoryview, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view = view[n:]
            offset += n

    def pread(self, length: int, offset: int) -> bytes:
        data = os.pread(self.fd, length, offset)
        if len(data) < length:  # a hole past the end of the file reads as zeros
            data += bytes(length - len(data))
        return data

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def discard(self) -> None:
        """The data is safely uploaded (or no longer wanted): remove both files."""
        self.close()
        for path in (self.path, self.journal):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def keep(self, reason: str) -> None:
        """Leave the data on disk for recovery and say where it is."""
        self.write_journal(state="failed", reason=reason)
        self.close()
        log.error(
            "the data of %r could not be uploaded (%s); it is kept in %s (journal %s). "
            "Copy it back into the mount or upload it with any S3 tool.",
            self.key, reason, self.path, self.journal,
        )

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Staging:
    """The staging directory and its budget of not-yet-uploaded bytes."""

    def __init__(self, directory: str, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._freed = trio.Event()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        # One mount at a time owns the directory (and recovers what an earlier
        # one left); a second mount of the same source stages beside it.
        self._lock = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.exclusive = True
        except BlockingIOError:
            self.exclusive = False
            directory = os.path.join(directory, f"mount-{os.getpid()}")
            os.makedirs(directory, mode=0o700, exist_ok=True)
        self.directory = directory

    def create(self, key: str, created: bool) -> StagedFile:
        return StagedFile(self.directory, key, created)

    def would_wait(self, nbytes: int) -> bool:
        """Whether `reserve(nbytes)` would wait now."""
        return bool(self.used) and self.used + nbytes > self.budget

    async def reserve(self, nbytes: int, make_room: Callable[[], None] | None = None) -> None:
        """Wait until `nbytes` more fit in the budget (a single write larger
        than the whole budget is let through alone, rather than never).
        While waiting, `make_room` is called now and then: it starts the
        uploads that free the budget (again, if they failed meanwhile)."""
        while self.would_wait(nbytes):
            if make_room is not None:
                make_room()
            with trio.move_on_after(MAKE_ROOM_INTERVAL):
                await self._freed.wait()
        self.used += nbytes

    def release(self, nbytes: int) -> None:
        self.used = max(0, self.used - nbytes)
        self._freed.set()
        self._freed = trio.Event()

    def leftovers(self) -> list[dict[str, Any]]:
        """Journals of data that an earlier run could not upload."""
        found = []
        for name in sorted(os.listdir(self.directory)):
            if not name.endswith(".json") or not os.path.isfile(os.path.join(self.directory, name)):
                continue
            try:
                with open(os.path.join(self.directory, name), encoding="utf-8") as f:
                    record = json.load(f)
            except (OSError, ValueError):
                continue
            record["journal"] = os.path.join(self.directory, name)
            record["path"] = os.path.join(self.directory, record.get("data", ""))
            found.append(record)
        return found
