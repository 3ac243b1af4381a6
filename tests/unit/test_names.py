"""Names and keys (zosfs/namespace/names.py)."""

from __future__ import annotations

import errno

import pytest

from zosfs.fserror import FsError
from zosfs.namespace.names import KEY_MAX, NAME_MAX, SHADOWED, check_key, from_fuse, hidden_reason, listable


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


@pytest.mark.parametrize("key", ["d/a", "d/sub/", "d/sub/f", "d/.hidden", "d/tab\tand\x01ctl", "d/" + "x" * NAME_MAX])
def test_keys_below_a_directory_that_are_names(key: str) -> None:
    assert hidden_reason(key, "d/", [key]) is None


@pytest.mark.parametrize("key", ["d//b", "d/./b", "d/../b", "d/.", "d/..", "d//", "d/a//", "d/a/./b/",
                                 "d/" + "x" * (NAME_MAX + 1), "d/ok/" + "y" * (NAME_MAX + 1) + "/z"])
def test_keys_below_a_directory_that_cannot_be_names_say_why(key: str) -> None:
    reason = hidden_reason(key, "d/", [key])
    assert isinstance(reason, str) and reason and reason != SHADOWED


def test_a_file_hidden_by_the_directory_of_its_name() -> None:
    assert hidden_reason("d/x", "d/", ["d/x", "d/x/in"]) == SHADOWED
    assert hidden_reason("d/x", "d/", ["d/x", "d/xy/in"]) is None
