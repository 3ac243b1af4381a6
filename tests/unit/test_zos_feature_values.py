"""Pure logic of the ZOS feature attributes: values of expire/transition,
lifecycle rule IDs, url_expiry, and zosfs check's test image and table."""

from __future__ import annotations

import struct
import zlib

import pytest

from zosfs.fserror import FsError
from zosfs.options import OptionError, build
from zosfs.zos.features import Feature, format_table, tiny_png
from zosfs.zos.lifecycle import MAX_RULE_ID, PrefixRule, rule_id
from zosfs.zosattrs import format_rule, parse_days, parse_transition


def test_days_and_transitions_round_trip() -> None:
    assert parse_days("30d") == 30 and parse_days(" 7 ") == 7 and parse_days("2D") == 2
    for bad in ("0d", "-1d", "soon", "3w", ""):
        with pytest.raises(FsError):
            parse_days(bad)
    assert parse_transition("standard_ia:30d") == ("STANDARD_IA", 30)
    assert parse_transition("GLACIER 90d") == ("GLACIER", 90)
    for bad in ("STANDARD:3d", "COLD:3d", "GLACIER", "GLACIER:0d"):
        with pytest.raises(FsError):
            parse_transition(bad)
    rule = PrefixRule("transition", "logs/", 30, "GLACIER")
    assert parse_transition(format_rule(rule)) == ("GLACIER", 30)
    assert parse_days(format_rule(PrefixRule("expire", "logs/", 12))) == 12


def test_rule_ids_name_the_prefix_and_fit_s3s_limit() -> None:
    assert rule_id("expire", "a/b/") == "zosfs-expire:a/b/"
    long_prefix = "d" * 300 + "/"
    rid = rule_id("transition", long_prefix)
    assert len(rid) <= MAX_RULE_ID and rid.startswith("zosfs-transition:sha256:")
    assert rid != rule_id("transition", "e" * 300 + "/") and rid == rule_id("transition", long_prefix)


def test_url_expiry_option() -> None:
    assert build([("url_expiry", "90")]).url_expiry == 90
    assert build([("url_expiry", "30m")]).url_expiry == 1800
    assert build([("url_expiry", "7d")]).url_expiry == 7 * 86400
    assert build([]).url_expiry == 86400
    for bad in ("8d", "0", "soon", "1w"):
        with pytest.raises(OptionError):
            build([("url_expiry", bad)])
    with pytest.raises(OptionError):
        build([("storage_class", "COLD")])


def test_check_image_is_a_valid_png() -> None:
    png = tiny_png()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pos, kinds = 8, []
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + data) & 0xFFFFFFFF
        kinds.append(kind)
        if kind == b"IDAT":
            assert zlib.decompress(data) == b"\x00\x80"  # filter byte, one grey pixel
        pos += 12 + length
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]


def test_check_table_columns_line_up() -> None:
    text = format_table([Feature("ListObjects V2", "yes"), Feature("image processing", "no", "ignored")])
    lines = text.splitlines()
    assert lines[0].split() == ["capability", "supported", "detail"]
    assert lines[2] == "image processing  no         ignored"
    assert lines[1] == "ListObjects V2    yes"
