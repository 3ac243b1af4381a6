"""RangeSet against a model: the set of byte offsets it stands for.

Every operation is applied to a RangeSet and to a Python set of integers;
after each step the ranges must be exactly the set's maximal runs (sorted,
disjoint, non-empty, never touching), and every query must agree.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from zosfs.data.ranges import RangeSet

LIMIT = 200  # offsets in [0, LIMIT): small, so that ranges collide often

span = st.tuples(st.integers(0, LIMIT), st.integers(0, LIMIT))
operation = st.tuples(st.sampled_from(["add", "remove"]), span)


def runs(model: set[int]) -> list[tuple[int, int]]:
    """The maximal runs of consecutive integers, as half-open ranges."""
    out: list[tuple[int, int]] = []
    for n in sorted(model):
        if out and out[-1][1] == n:
            out[-1] = (out[-1][0], n + 1)
        else:
            out.append((n, n + 1))
    return out


def check(rs: RangeSet, model: set[int]) -> None:
    assert list(rs) == runs(model)
    assert len(rs.starts) == len(rs.ends)
    assert rs.total() == len(model)
    assert bool(rs) == bool(model)
    assert rs.first_start() == (min(model) if model else None)
    assert rs.last_end() == (max(model) + 1 if model else 0)


@settings(max_examples=400, deadline=None)
@given(st.lists(operation, max_size=40), st.lists(span, min_size=1, max_size=10))
def test_rangeset_matches_a_set_of_offsets(ops: list[tuple[str, tuple[int, int]]], queries: list[tuple[int, int]]) -> None:
    rs, model = RangeSet(), set()
    for name, (start, end) in ops:
        if name == "add":
            rs.add(start, end)
            model |= set(range(start, end))
        else:
            rs.remove(start, end)
            model -= set(range(start, end))
        check(rs, model)
    for start, end in queries:
        wanted = set(range(start, end))
        assert rs.covers(start, end) == (wanted <= model)
        assert rs.overlaps(start, end) == bool(wanted & model)
        pieces = list(rs.pieces(start, end))
        if end <= start:
            assert pieces == []
            continue
        # Pieces tile [start, end) in order, alternate, and say truly whether they are in the set.
        assert pieces[0][0] == start and pieces[-1][1] == end
        for (s1, e1, in1), (s2, _, in2) in zip(pieces, pieces[1:]):
            assert e1 == s2 and in1 != in2
        for s, e, inside in pieces:
            assert s < e
            assert set(range(s, e)) <= model if inside else not (set(range(s, e)) & model)


def test_empty_and_reversed_ranges_change_nothing() -> None:
    rs = RangeSet()
    rs.add(5, 5)
    rs.add(9, 3)
    assert list(rs) == [] and not rs
    rs.add(0, 10)
    rs.remove(4, 4)
    rs.remove(8, 2)
    assert list(rs) == [(0, 10)]
    assert rs.covers(3, 3) and not rs.overlaps(3, 3)


def test_touching_ranges_merge() -> None:
    rs = RangeSet()
    rs.add(0, 5)
    rs.add(10, 15)
    rs.add(5, 10)
    assert list(rs) == [(0, 15)]
    rs.remove(5, 10)
    assert list(rs) == [(0, 5), (10, 15)]
