"""The cut of a write at the largest object size (zosfs.limits.within_max_size),
as the kernel cuts one at ext4's limit (a short write, then EFBIG)."""

from __future__ import annotations

import errno

import pytest

from zosfs.fserror import FsError
from zosfs.limits import MAX_FILE_SIZE, within_max_size


def test_a_write_below_the_limit_is_whole() -> None:
    assert within_max_size(0, b"abc") == b"abc"
    assert within_max_size(MAX_FILE_SIZE - 3, b"abc") == b"abc"


def test_a_write_across_the_limit_is_cut_there() -> None:
    assert within_max_size(MAX_FILE_SIZE - 2, b"abcd") == b"ab"


@pytest.mark.parametrize("off", [MAX_FILE_SIZE, MAX_FILE_SIZE + 1, 2**62])
def test_a_write_at_or_beyond_the_limit_is_efbig(off: int) -> None:
    with pytest.raises(FsError) as info:
        within_max_size(off, b"x")
    assert info.value.errno == errno.EFBIG
