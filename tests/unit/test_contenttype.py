"""Content-Type from names (s3fs's rule over the system's mime.types), the
rename rule, the check of a user's type, and the set-group-ID owner rule."""

from __future__ import annotations

import stat

import pytest

from zosfs.namespace import contenttype
from zosfs.namespace.metadata import Attrs, decode_rdev
from zosfs.namespace.owners import new_owner


def test_guess_uses_the_last_extension_then_the_one_before() -> None:
    assert contenttype.guess("page.html") == "text/html"
    assert contenttype.guess("PHOTO.PNG") == "image/png"
    assert contenttype.guess("data.json.unknownext") == "application/json"
    assert contenttype.guess("archive.tar.gz") == "application/gzip"
    for name in ("Makefile", ".bashrc", "x.unknownext", "trailing."):
        assert contenttype.guess(name) == contenttype.DEFAULT, name


def test_rename_recomputes_only_an_automatic_type() -> None:
    assert contenttype.after_rename("text/html", "a.html", "a.txt") == "text/plain"
    assert contenttype.after_rename(None, "a.html", "a.txt") == "text/plain"
    assert contenttype.after_rename("binary/octet-stream", "a", "a.txt") == "text/plain"
    assert contenttype.after_rename("text/markdown", "a.txt", "a.json") == "text/markdown"


def test_check_accepts_media_types_only() -> None:
    assert contenttype.check(" text/plain; charset=utf-8 ") == "text/plain; charset=utf-8"
    for bad in ("text", "not a type", "/plain", "text/plain\r\nX-Evil: 1", "a/" + "b" * 300):
        with pytest.raises(ValueError):
            contenttype.check(bad)


def test_setgid_directory_owner_rule() -> None:
    plain = Attrs(stat.S_IFDIR | 0o775, 0, 100, 0, 0)
    shared = Attrs(stat.S_IFDIR | 0o2775, 0, 100, 0, 0)
    assert new_owner(plain, 0o755, 7, is_dir=True) == (0o755, 7)
    assert new_owner(shared, 0o755, 7, is_dir=True) == (0o2755, 100)
    assert new_owner(shared, 0o644, 7, is_dir=False) == (0o644, 100)


def test_rdev_is_read_only_when_sane() -> None:
    assert decode_rdev({"rdev": "259"}) == 259
    assert decode_rdev({}) == 0
    assert decode_rdev({"rdev": "-1"}) == 0
    assert decode_rdev({"rdev": "x"}) == 0
