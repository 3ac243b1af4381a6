"""Reading ListObjects answers of both versions, as RGW words them: keys
URL-encoded (and `<EncodingType>url` saying so), markers and continuation
tokens not (a control character comes as `&#x01;`, which XML 1.0 forbids),
and every unreadable answer a ZosError."""

from __future__ import annotations

import errno

import pytest

from zosfs.zos import ListToken, ZosError, wire
from zosfs.zos.core import ClientCore
from zosfs.zos.http import Response
from zosfs.zos.listing import is_v2_answer, parse_page

HEAD = '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'


def answer(inner: str) -> bytes:
    return (HEAD + inner + "</ListBucketResult>").encode()


def contents(*keys: str) -> str:
    return "".join(f"<Contents><Key>{k}</Key><LastModified>2026-12-04T18:40:00.000Z</LastModified>"
                   f"<ETag>&quot;9dd4e461268c8034f5c8564e155c67a6&quot;</ETag><Size>1</Size></Contents>" for k in keys)


def page_of(body: bytes, after: str | None = None):
    return parse_page(wire.xml(body), "", after)


def bad(body: bytes, after: str | None = None) -> ZosError:
    with pytest.raises(ZosError) as caught:
        page_of(body, after)
    assert (caught.value.errno, caught.value.code) == (errno.EIO, "BadAnswer")
    return caught.value


def test_control_characters_in_any_form_come_back_exactly():
    root = wire.xml(b'<R xmlns="x"><A>d&#x01;e&#1;f\x02g</A><B>&#65;&amp;&lt;zosfs-char c="1"/&gt;</B><C/></R>')
    assert wire.text(root, "A") == "d\x01e\x01f\x02g"
    assert wire.text(root, "B") == 'A&<zosfs-char c="1"/>'  # text that looks like the marker stays text
    assert wire.text(root, "C", "none") == "none"


def test_v1_page_with_an_unencoded_control_character_in_next_marker():
    body = answer("<EncodingType>url</EncodingType><Name>b</Name><Prefix></Prefix><MaxKeys>2</MaxKeys>"
                  "<Delimiter>/</Delimiter><IsTruncated>true</IsTruncated>" + contents("c", "d%01e")
                  + "<Marker>a/</Marker><NextMarker>d&#x01;e</NextMarker>")
    root = wire.xml(body)
    assert not is_v2_answer(root)
    page = parse_page(root, "", "a/")
    assert [e.key for e in page.entries] == ["c", "d\x01e"]
    assert (page.entries[0].size, page.entries[0].etag) == (1, "9dd4e461268c8034f5c8564e155c67a6")
    assert page.next_token == ListToken("d\x01e")


def test_v1_page_without_next_marker_goes_on_from_its_last_key_or_prefix():
    flat = page_of(answer("<EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>"
                          + contents("a%2F1", "a%2F2%2B%20x") + "<Marker></Marker>"))
    assert flat.next_token == ListToken("a/2+ x")
    nested = page_of(answer("<EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>" + contents("c")
                            + "<CommonPrefixes><Prefix>z%2F</Prefix></CommonPrefixes><Marker></Marker>"))
    assert (nested.prefixes, nested.next_token) == (["z/"], ListToken("z/"))


def test_keys_are_decoded_only_where_the_answer_says_they_are_encoded():
    """A server that ignores encoding-type=url sends keys as they are (and no
    <EncodingType>): `per%25cent` is that key, not `per%cent`."""
    raw = page_of(answer("<IsTruncated>true</IsTruncated>" + contents("a+b", "per%25cent")
                         + "<CommonPrefixes><Prefix>d%41/</Prefix></CommonPrefixes>"))
    assert ([e.key for e in raw.entries], raw.prefixes) == (["a+b", "per%25cent"], ["d%41/"])
    assert raw.next_token == ListToken("per%25cent")  # the last name shown, as it is
    encoded = page_of(answer("<EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>"
                             + contents("a%2Bb", "per%25cent")))
    assert [e.key for e in encoded.entries] == ["a+b", "per%cent"]


def test_last_v1_page_has_no_token():
    page = page_of(answer("<IsTruncated>false</IsTruncated>" + contents("k") + "<Marker>j</Marker>"), "j")
    assert [e.key for e in page.entries] == ["k"] and page.next_token is None


def test_v2_page_keeps_the_token_as_sent_and_the_marker_to_fall_back_on():
    body = answer("<EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>" + contents("d%01e")
                  + "<ContinuationToken>c</ContinuationToken><NextContinuationToken>d&#x01;e</NextContinuationToken>"
                  "<KeyCount>1</KeyCount>")
    root = wire.xml(body)
    assert is_v2_answer(root)
    assert parse_page(root, "", "c").next_token == ListToken("d\x01e", "d\x01e")
    empty = answer("<IsTruncated>true</IsTruncated><NextContinuationToken>t2</NextContinuationToken><KeyCount>0</KeyCount>")
    assert page_of(empty, "m").next_token == ListToken("m", "t2")  # nothing shown: the marker stays


def test_unreadable_answers_are_zos_errors_with_a_clear_message():
    with pytest.raises(ZosError) as caught:
        ClientCore._answer(Response(200, "OK", {}, b"<html>busy"), "ListObjects", "dir/")
    assert caught.value.code == "BadAnswer" and "not XML" in str(caught.value) and "'dir/'" in str(caught.value)
    assert "ListAllMyBucketsResult" in str(bad(b"<ListAllMyBucketsResult/>"))
    assert "Size" in str(bad(answer("<IsTruncated>false</IsTruncated><Contents><Key>k</Key><Size>x</Size></Contents>")))
    assert "without a Key" in str(bad(answer("<IsTruncated>false</IsTruncated><Contents><Size>1</Size></Contents>")))
    assert "continuation token" in str(bad(answer("<IsTruncated>true</IsTruncated><KeyCount>0</KeyCount>")))
    assert "does not go on" in str(bad(answer("<IsTruncated>true</IsTruncated><Marker></Marker>")))
    assert "does not go on" in str(bad(answer("<IsTruncated>true</IsTruncated>" + contents("a", "b")), "b"))
