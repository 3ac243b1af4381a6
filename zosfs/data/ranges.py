"""Sets of byte ranges: which parts of a file are dirty (held in staging)."""

from __future__ import annotations

import bisect
from collections.abc import Iterator


class RangeSet:
    """Disjoint, sorted half-open ranges [start, end); adjacent ranges merge."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def __bool__(self) -> bool:
        return bool(self.starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self.starts, self.ends))

    def __repr__(self) -> str:
        return f"RangeSet({list(self)})"

    def total(self) -> int:
        return sum(e - s for s, e in self)

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        # First range that ends at or after `start` (touching ranges merge).
        i = bisect.bisect_left(self.ends, start)
        j = i
        while j < len(self.starts) and self.starts[j] <= end:
            start = min(start, self.starts[j])
            end = max(end, self.ends[j])
            j += 1
        self.starts[i:j] = [start]
        self.ends[i:j] = [end]

    def remove(self, start: int, end: int) -> None:
        if end <= start:
            return
        i = bisect.bisect_right(self.ends, start)
        new_starts: list[int] = []
        new_ends: list[int] = []
        j = i
        while j < len(self.starts) and self.starts[j] < end:
            if self.starts[j] < start:
                new_starts.append(self.starts[j])
                new_ends.append(start)
            if self.ends[j] > end:
                new_starts.append(end)
                new_ends.append(self.ends[j])
            j += 1
        self.starts[i:j] = new_starts
        self.ends[i:j] = new_ends

    def covers(self, start: int, end: int) -> bool:
        """Whether all of [start, end) is in the set."""
        if end <= start:
            return True
        i = bisect.bisect_right(self.starts, start) - 1
        return i >= 0 and self.ends[i] >= end

    def overlaps(self, start: int, end: int) -> bool:
        """Whether any of [start, end) is in the set."""
        if end <= start:
            return False
        i = bisect.bisect_right(self.ends, start)
        return i < len(self.starts) and self.starts[i] < end

    def pieces(self, start: int, end: int) -> Iterator[tuple[int, int, bool]]:
        """[start, end) cut into (piece_start, piece_end, in_set) in order."""
        pos = start
        i = bisect.bisect_right(self.ends, start)
        while pos < end:
            if i < len(self.starts) and self.starts[i] <= pos:
                stop = min(end, self.ends[i])
                yield pos, stop, True
                i += 1
            else:
                stop = min(end, self.starts[i]) if i < len(self.starts) else end
                yield pos, stop, False
            pos = stop

    def first_start(self) -> int | None:
        return self.starts[0] if self.starts else None

    def last_end(self) -> int:
        """Where the last range ends (0 if empty)."""
        return self.ends[-1] if self.ends else 0
