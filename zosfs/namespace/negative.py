"""Negative answers: names known not to exist, each until its answer is too old.

"No such name" may be reused for `negative_timeout` seconds after the server
gave it, counted from when the server was asked: by a probe of the name, or
by the LIST of a listing that did not hold it. So a file made elsewhere is
found by name at most negative_timeout after it was made, however long the
directory's listing is cached for its other names, and the kernel is told
to keep each negative answer only for what is left of its time (see
`remaining`), so that its own cache of negative dentries adds nothing to
the bound. Kept apart (as mountpoint-s3's negative_cache.rs) because the
expiry of each entry is its own, not one TTL for all.
"""

from __future__ import annotations

import time

import cachetools

CAPACITY = 65536  # names


class NegativeCache:
    """(directory inode, name) -> until when (monotonic) the name is known absent."""

    def __init__(self, ttl: float, capacity: int = CAPACITY) -> None:
        self.ttl = ttl
        self._until: cachetools.TLRUCache[tuple[int, str], float] = cachetools.TLRUCache(
            capacity, ttu=lambda _key, until, _now: until, timer=time.monotonic
        )

    def add(self, parent: int, name: str, asked: float | None = None) -> None:
        """Record that `name` was absent when the server was asked at `asked`
        (monotonic; default now)."""
        until = (time.monotonic() if asked is None else asked) + self.ttl
        if until > time.monotonic():
            self._until[(parent, name)] = until

    def discard(self, parent: int, name: str) -> None:
        """The name exists now (this mount made it)."""
        self._until.pop((parent, name), None)

    def remaining(self, parent: int, name: str) -> float:
        """Seconds for which "no such name" may still be reused (0.0: ask again)."""
        until = self._until.get((parent, name))
        return 0.0 if until is None else max(0.0, until - time.monotonic())

    def __contains__(self, item: tuple[int, str]) -> bool:
        return self.remaining(*item) > 0.0
