"""Append upload (RGW's `PUT ?append&position=N`) through the ZOS client,
against the real local RGW."""

from __future__ import annotations

import errno
import os
from collections.abc import Awaitable
from typing import Any

import pytest

from tests.support.client import client_config, md5, run_client
from tests.support.rgw import LocalRGW
from zosfs.zos import (
    Appended,
    ClientConfig,
    FileRegion,
    WriteOptions,
    ZosClient,
    ZosError,
    next_append_etag,
)


def config(rgw: LocalRGW, bucket: str, **overrides: Any) -> ClientConfig:
    return client_config(rgw.endpoint, bucket, **overrides)


run = run_client


def chained_etag(etags: list[str]) -> str:
    """The object ETag after appends with these chunk ETags, as RGW chains
    it: E1 = md5(c1); En = md5(bin(E(n-1) without "-k") + bin(md5(cn)))-n."""
    etag = etags[0]
    for n, chunk in enumerate(etags[1:], 2):
        etag = f"{md5(bytes.fromhex(etag.split('-')[0]) + bytes.fromhex(chunk))}-{n}"
    return etag


def multipart_style_etag(etags: list[str]) -> str:
    return f"{md5(b''.join(bytes.fromhex(e) for e in etags))}-{len(etags)}"


async def failure(call: Awaitable[Any]) -> ZosError:
    try:
        await call
    except ZosError as err:
        return err
    raise AssertionError("the call succeeded")


def test_append_creates_an_appendable_object_and_extends_it(rgw, bucket, tmp_path):
    path = tmp_path / "chunk"
    path.write_bytes(b"0123456789")

    async def scenario(zos: ZosClient) -> dict[str, Any]:
        out: dict[str, Any] = {"first": await zos.append("log", 0, b"hello")}
        out["head1"] = await zos.head("log")
        out["second"] = await zos.append("log", 5, bytearray(b" world"))
        fd = os.open(path, os.O_RDONLY)
        try:
            out["third"] = await zos.append("log", 11, FileRegion(fd, 2, 5))
        finally:
            os.close(fd)
        out["head"] = await zos.head("log")
        out["data"] = bytes(await zos.get("log"))
        out["tail"] = bytes(await zos.get("log", 11))
        return out

    out = run(config(rgw, bucket), scenario)
    assert out["first"] == Appended(5, md5(b"hello"))
    assert out["head1"].appendable and out["head1"].next_append_position == 5 and out["head1"].size == 5
    assert out["second"] == Appended(11, md5(b" world"))
    assert out["third"] == Appended(16, md5(b"23456"))
    assert out["data"] == b"hello world23456"
    assert out["tail"] == b"23456"
    assert out["head"].size == 16 and out["head"].next_append_position == 16 and out["head"].appendable


def test_append_at_a_wrong_position_reports_the_real_length(rgw, bucket):
    async def scenario(zos: ZosClient) -> Any:
        await zos.append("log", 0, b"0123456789")
        behind = await failure(zos.append("log", 4, b"xx"))
        ahead = await failure(zos.append("log", 99, b"xx"))
        restart = await failure(zos.append("log", 0, b"xx"))
        return behind, ahead, restart, bytes(await zos.get("log"))

    behind, ahead, restart, data = run(config(rgw, bucket), scenario)
    for err in (behind, ahead, restart):
        assert err.code == "PositionNotEqualToLength"
        assert err.next_position == 10
        assert err.errno == errno.EIO
        assert err.op == "AppendObject" and err.key == "log"
    assert data == b"0123456789"  # nothing was appended


def test_append_to_an_object_made_by_put_is_refused(rgw, bucket):
    async def scenario(zos: ZosClient) -> Any:
        await zos.put("normal", b"plain put")
        return await failure(zos.append("normal", 9, b"more")), bytes(await zos.get("normal"))

    err, data = run(config(rgw, bucket), scenario)
    assert (err.code, err.errno) == ("ObjectNotAppendable", errno.EOPNOTSUPP)
    assert data == b"plain put"


def test_a_put_over_an_appendable_object_makes_it_normal(rgw, bucket):
    async def scenario(zos: ZosClient) -> Any:
        await zos.append("obj", 0, b"appended")
        await zos.put("obj", b"replaced")
        return await zos.head("obj"), await failure(zos.append("obj", 8, b"x"))

    info, err = run(config(rgw, bucket), scenario)
    assert not info.appendable and info.next_append_position is None
    assert err.code == "ObjectNotAppendable"


def test_append_in_a_versioned_bucket_is_refused(rgw, versioned_bucket):
    async def scenario(zos: ZosClient) -> Any:
        return await failure(zos.append("log", 0, b"x")), (await zos.list(delimiter=None)).entries

    err, entries = run(config(rgw, versioned_bucket), scenario)
    assert (err.code, err.errno) == ("InvalidBucketState", errno.EOPNOTSUPP)
    assert "versioned" in err.message
    assert entries == []


def test_metadata_content_type_and_tags_sent_with_each_append_survive(rgw, bucket):
    opts = WriteOptions(metadata={"mode": "33188", "mtime": "1700000000"}, content_type="text/x-log",
                        tags={"kind": "log", "owner": "zosfs"})

    async def scenario(zos: ZosClient) -> dict[str, Any]:
        position = 0
        for chunk in (b"one ", b"two ", b"three "):
            position = (await zos.append("log", position, chunk, opts)).position
        out: dict[str, Any] = {"head": await zos.head("log"), "tags": await zos.get_tags("log")}
        # A zero-length append changes no data, but replaces the metadata.
        newer = WriteOptions({**opts.metadata, "mtime": "1700000999"}, opts.content_type, opts.tags)
        out["touch"] = await zos.append("log", position, b"", newer)
        out["touched"] = await zos.head("log")
        # An append without them: RGW replaces them with nothing.
        await zos.append("log", position, b"bare")
        out["bare"] = await zos.head("log")
        out["bare_tags"] = await zos.get_tags("log")
        out["data"] = bytes(await zos.get("log"))
        return out

    out = run(config(rgw, bucket), scenario)
    head = out["head"]
    assert head.metadata == {"mode": "33188", "mtime": "1700000000"}
    assert head.content_type == "text/x-log"
    assert out["tags"] == {"kind": "log", "owner": "zosfs"} and head.tag_count == 2
    assert out["touch"].position == 14
    assert out["touched"].metadata["mtime"] == "1700000999" and out["touched"].size == 14
    assert out["touched"].appendable
    assert out["bare"].metadata == {}
    assert out["bare"].content_type != "text/x-log"
    assert out["bare_tags"] == {} and out["bare"].tag_count == 0
    assert out["data"] == b"one two three bare"


@pytest.mark.parametrize("sizes", [[7], [1, 2], [100, 0, 3, 65536, 1]])
def test_object_etag_follows_from_the_appended_etags(rgw, bucket, sizes):
    """After one append the ETag is the chunk's MD5; after that RGW chains
    it (see chained_etag), so a writer knows the ETag without asking. The
    multipart-style md5(all MD5s)-n agrees only up to n = 2."""
    chunks = [os.urandom(n) for n in sizes]

    async def scenario(zos: ZosClient) -> Any:
        results, etags, position = [], [], 0
        for chunk in chunks:
            result = await zos.append("obj", position, chunk)
            results.append(result)
            etags.append((await zos.head("obj")).etag)
            position = result.position
        return results, etags, (await zos.list(delimiter=None)).entries

    results, object_etags, entries = run(config(rgw, bucket), scenario)
    chunk_etags = [r.etag for r in results]
    assert chunk_etags == [md5(c) for c in chunks]
    assert object_etags[0] == chunk_etags[0]
    for n in range(2, len(chunks) + 1):
        assert object_etags[n - 1] == chained_etag(chunk_etags[:n])
        assert (object_etags[n - 1] == multipart_style_etag(chunk_etags[:n])) == (n == 2)
    known = None  # what a writer computes from the answers alone
    for chunk_etag, object_etag in zip(chunk_etags, object_etags):
        known = next_append_etag(known, chunk_etag)
        assert known == object_etag
    assert entries[0].etag == object_etags[-1]
    assert results[-1].position == sum(sizes)
