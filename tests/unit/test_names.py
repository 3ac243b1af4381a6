"""Names and keys (zosfs/namespace/names.py)."""

from __future__ import annotations

import errno

import pytest

from zosfs.fserror import FsError
from zosfs.namespace.names import KEY_MAX, NAME_MAX, check_key, from_fuse, listable


@pytest.mark.parametrize("name", ["a", "file.txt", "with space", "a+b", "100%", "\u00e9t\u00e9", "\u6587\u4ef6", "...",
                                  ".hidden", "x" * NAME_MAX, "\u00e9" * (NAME_MAX // 2)])
def test_listable_names(name: str) -> None:
    assert listable(name) is None


@pytest.mark.parametrize("name", ["", ".", "..", "a\0b", "x" * (NAME_MAX + 1), "\u00e9" * (NAME_MAX // 2 + 1)])
def test_unlistable_names_say_why(name: str) -> None:
    reason = listable(name)
    assert isinstance(reason, str) and reason


def test_a_key_that_is_not_utf8_is_measured_without_crashing() -> None:
    assert listable("bad\udcff") is None  # surrogate-escaped bytes count as one byte each


def test_from_fuse() -> None:
    assert from_fuse(b"plain") == "plain"
    assert from_fuse("\u00e9t\u00e9".encode()) == "\u00e9t\u00e9"
    assert from_fuse(b"x" * NAME_MAX) == "x" * NAME_MAX


def test_from_fuse_too_long() -> None:
    with pytest.raises(FsError) as e:
        from_fuse(b"x" * (NAME_MAX + 1))
    assert e.value.errno == errno.ENAMETOOLONG
    with pytest.raises(FsError) as e:
        from_fuse("\u00e9".encode() * 128)  # 128 characters, 256 bytes
    assert e.value.errno == errno.ENAMETOOLONG


def test_from_fuse_not_utf8() -> None:
    with pytest.raises(FsError) as e:
        from_fuse(b"caf\xe9")
    assert e.value.errno == errno.EINVAL


def test_check_key_counts_bytes() -> None:
    check_key("k" * KEY_MAX)
    check_key("\u00e9" * (KEY_MAX // 2))
    for key in ("k" * (KEY_MAX + 1), "\u00e9" * (KEY_MAX // 2 + 1)):
        with pytest.raises(FsError) as e:
            check_key(key)
        assert e.value.errno == errno.ENAMETOOLONG
