"""The x-amz-meta-xattr codec against a line-by-line port of s3fs-fuse 1.97's
own (src/string_util.cpp `raw_build_xattrs`, `parse_xattrs`,
`takeout_str_dquart`, `s3fs_decode64`, `urlEncodePath`, `urlDecode`): what
s3fs writes reads back here, and what zosfs writes reads back in s3fs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.support.s3fs_codec import s3fs_header, s3fs_parse, s3fs_url_encode_path
from zosfs.namespace.metadata import decode_xattrs, encode_xattrs


# Names as the kernel passes them: any namespace, any UTF-8 but the few
# characters s3fs's format cannot carry (see encode_xattrs).
NAMES = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters='",\\' + "".join(map(chr, range(32)))),
    min_size=1, max_size=24,
)
TABLES = st.dictionaries(NAMES, st.binary(max_size=40), min_size=1, max_size=6)


@given(TABLES)
def test_zosfs_writes_the_header_byte_for_byte_as_s3fs(table: dict[str, bytes]) -> None:
    as_bytes = {k.encode(): v for k, v in table.items()}
    assert encode_xattrs(table, {})["xattr"] == s3fs_header(as_bytes)


@given(TABLES)
def test_what_s3fs_writes_reads_back_here(table: dict[str, bytes]) -> None:
    header = s3fs_header({k.encode(): v for k, v in table.items()})
    assert decode_xattrs({"xattr": header}) == table


@given(TABLES)
def test_what_zosfs_writes_reads_back_in_s3fs(table: dict[str, bytes]) -> None:
    header = encode_xattrs(table, {})["xattr"]
    assert s3fs_parse(header) == {k.encode(): v for k, v in table.items()}


def test_every_namespace_is_kept() -> None:
    table = {"user.a": b"1", "trusted.b": b"2", "security.c": b"3", "nonamespace": b"4"}
    header = encode_xattrs(table, {})["xattr"]
    assert header == "%7B%22nonamespace%22%3A%22NA%3D%3D%22%2C%22security.c%22%3A%22Mw%3D%3D%22%2C" \
                     "%22trusted.b%22%3A%22Mg%3D%3D%22%2C%22user.a%22%3A%22MQ%3D%3D%22%7D"
    assert decode_xattrs({"xattr": header}) == table


def test_a_name_with_a_raw_control_character_from_s3fs_is_read_as_s3fs_reads_it() -> None:
    # Not JSON (a raw tab inside a string), so read the way s3fs reads it.
    header = s3fs_header({b"user.a\tb": b"x", b"user.c": b"y"})
    assert decode_xattrs({"xattr": header}) == {"user.a\tb": b"x", "user.c": b"y"}


def test_names_s3fs_cannot_carry_round_trip_here_and_cost_s3fs_only_themselves() -> None:
    table = {'user.q"uote': b"1", "user.com,ma": b"2", "user.back\\slash": b"3", "user.plain": b"4"}
    header = encode_xattrs(table, {})["xattr"]
    assert decode_xattrs({"xattr": header}) == table
    assert s3fs_parse(header)[b"user.plain"] == b"4"


def test_an_unreadable_entry_is_left_out_and_the_others_kept() -> None:
    header = s3fs_url_encode_path(b'{"user.bad":"!!","user.good":"Zw=="}')
    assert decode_xattrs({"xattr": header}) == {"user.good": b"g"}
