"""Request statistics: what every request cost, counted by operation.

Both transports report each request to an `Observer`; the daemon passes a
`RequestStats`, which `zosfs stats` reads. Kept apart from the transports so
the daemon can hold one without importing either.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Observer = Callable[[str, float, str | None, int], None]
"""Called after every request with (operation, seconds, error code or None, payload bytes)."""


class RequestStats:
    """Counts requests by operation: number, errors, bytes, total latency.

    Fed from the trio thread and from worker threads (hence the lock), read
    by `zosfs stats`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ops: dict[str, dict[str, float]] = {}

    def __call__(self, op: str, seconds: float, error: str | None, nbytes: int) -> None:
        with self._lock:
            s = self.ops.get(op)
            if s is None:
                s = self.ops[op] = {"count": 0, "errors": 0, "bytes": 0, "seconds": 0.0, "max_seconds": 0.0}
            s["count"] += 1
            s["bytes"] += nbytes
            s["seconds"] += seconds
            if seconds > s["max_seconds"]:
                s["max_seconds"] = seconds
            if error:
                s["errors"] += 1

    def snapshot(self) -> dict[str, dict[str, float]]:
        """A copy of the counts, safe to read while requests go on."""
        with self._lock:
            return {op: dict(v) for op, v in self.ops.items()}
