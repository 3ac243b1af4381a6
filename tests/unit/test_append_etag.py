"""next_append_etag follows RGW's ETag of an appended object, computed here with
hashlib from its definition: after the first append the chunk's MD5, then
md5(binary previous digest + binary MD5 of the chunk) with "-n" for n
appends (zero-length appends included). Checked against the real RGW in
tests/client/test_append.py (the chain) and tests/fs/test_write.py (reads
with If-Match after appends)."""

from __future__ import annotations

import hashlib
import random

import pytest

from zosfs.data.read import EMPTY_MD5, same_data
from zosfs.data.write import multipart_etag
from zosfs.zos import next_append_etag


def expected_etag(chunks: list[bytes]) -> str:
    digest = hashlib.md5(chunks[0]).digest()
    for chunk in chunks[1:]:
        digest = hashlib.md5(digest + hashlib.md5(chunk).digest()).digest()
    return digest.hex() if len(chunks) == 1 else f"{digest.hex()}-{len(chunks)}"


@pytest.mark.parametrize("n", [1, 2, 5])
def test_append_etag_matches_the_running_hash(n: int) -> None:
    rng = random.Random(n)
    chunks = [rng.randbytes(rng.randrange(0, 5000)) for _ in range(n)]
    etag = ""
    for chunk in chunks:
        etag = next_append_etag(etag, hashlib.md5(chunk).hexdigest())
    assert etag == expected_etag(chunks)


def chain(md5s: list[str], start: str = "") -> str:
    etag = start
    for m in md5s:
        etag = next_append_etag(etag, m)
    return etag


def test_two_appends_equal_the_multipart_formula_but_five_do_not() -> None:
    md5s = [hashlib.md5(bytes([n])).hexdigest() for n in range(5)]
    assert chain(md5s[:2]) == multipart_etag(md5s[:2])
    assert chain(md5s) != multipart_etag(md5s)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_the_chain_continues_from_a_known_etag(n: int) -> None:
    """A writer that appends to an object it did not make starts from its ETag."""
    chunks = [bytes([n]) * (100 * (i + 1)) for i in range(n + 2)]
    resumed = chain([hashlib.md5(c).hexdigest() for c in chunks[n:]], start=expected_etag(chunks[:n]))
    assert resumed == expected_etag(chunks)


def test_metadata_only_changes_are_recognised() -> None:
    """A zero-length append (chmod of an appendable file) moves the ETag on
    without changing the data; anything else is a different version."""
    etag = expected_etag([b"data", b"more"])
    after_chmod = next_append_etag(etag, EMPTY_MD5)
    after_two = next_append_etag(after_chmod, EMPTY_MD5)
    assert EMPTY_MD5 == hashlib.md5(b"").hexdigest()
    assert same_data(etag, after_chmod) and same_data(etag, after_two)
    assert not same_data(etag, expected_etag([b"data", b"more", b"x"]))
    assert not same_data(etag, hashlib.md5(b"datamore").hexdigest())
