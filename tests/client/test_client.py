"""The ZOS client's object, listing, multipart and control-path operations,
against the real local RGW.

Each test builds a `ZosClient` inside `trio.run` and checks what a user of
the client would check: the bytes, the attributes, the error a failure maps
to. Append, the probe, retries, secrets and signature V2 have their own
modules.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
import trio
from botocore.exceptions import ClientError

import zosfs.zos.copies as copies_module
from tests.support.client import client_config, md5, run_client
from tests.support.rgw import MAIN_USER, SECOND_USER, LocalRGW
from zosfs.zos import (
    Acl,
    ClientConfig,
    DeleteFailure,
    FileRegion,
    Grant,
    LocalFileError,
    Part,
    RequestStats,
    Retention,
    WriteOptions,
    ZosClient,
    ZosError,
)

MiB = 1024 * 1024
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


def config(rgw: LocalRGW, bucket: str, **overrides: Any) -> ClientConfig:
    return client_config(rgw.endpoint, bucket, **overrides)


run = run_client


def multipart_etag(parts: list[bytes]) -> str:
    return f"{md5(b''.join(hashlib.md5(p).digest() for p in parts))}-{len(parts)}"


def second_user_reads(s3_second: Any, bucket: str, key: str) -> bytes | str:
    """The object's bytes as SECOND_USER sees them, or the error code."""
    try:
        return s3_second.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as err:
        return err.response["Error"]["Code"]


# -- head, get, put, delete ---------------------------------------------------


def test_put_then_head_reports_what_was_written(rgw, bucket):
    opts = WriteOptions(
        metadata={"mode": "33188", "mtime": "1700000000.25", "note": "grüße x"},
        content_type="text/plain; charset=utf-8",
        tags={"project": "zosfs", "with space": "a b&c"},
    )

    async def scenario(zos: ZosClient) -> Any:
        etag = await zos.put("dir/file.txt", b"hello world", opts)
        return etag, await zos.head("dir/file.txt")

    before = time.time()
    etag, info = run(config(rgw, bucket), scenario)
    assert etag == md5(b"hello world")
    assert info.key == "dir/file.txt"
    assert info.size == 11
    assert info.etag == etag
    assert info.metadata == {"mode": "33188", "mtime": "1700000000.25", "note": "grüße x"}
    assert info.content_type == "text/plain; charset=utf-8"
    assert info.tag_count == 2
    assert info.storage_class == "STANDARD"
    assert not info.appendable and info.next_append_position is None
    assert info.version_id is None and info.lock_mode is None and not info.legal_hold
    assert before - 5 <= info.last_modified <= time.time() + 5


def test_head_of_a_missing_object_is_enoent(rgw, bucket):
    with pytest.raises(ZosError) as caught:
        run(config(rgw, bucket), lambda zos: zos.head("no/such/key"))
    assert caught.value.errno == errno.ENOENT
    assert caught.value.status == 404
    assert str(caught.value).startswith("HeadObject 'no/such/key': ")


def test_get_ranges(rgw, bucket):
    data = bytes(range(256)) * 40  # 10,240 bytes

    async def scenario(zos: ZosClient) -> dict[str, Any]:
        await zos.put("blob", data)
        out: dict[str, Any] = {
            "whole": bytes(await zos.get("blob")),
            "middle": bytes(await zos.get("blob", 1000, 1010)),
            "open_end": bytes(await zos.get("blob", 10_000)),
            "empty": bytes(await zos.get("blob", 50, 50)),
            "past_end": bytes(await zos.get("blob", 10_230, 20_000)),
        }
        try:
            await zos.get("blob", 10_240)
        except ZosError as err:
            out["beyond"] = err
        try:
            await zos.get("missing")
        except ZosError as err:
            out["missing"] = err
        return out

    out = run(config(rgw, bucket), scenario)
    assert out["whole"] == data
    assert out["middle"] == data[1000:1010]
    assert out["open_end"] == data[10_000:]
    assert out["empty"] == b""
    assert out["past_end"] == data[10_230:]  # a range past the end is cut, as S3 does
    assert (out["beyond"].code, out["beyond"].errno) == ("InvalidRange", errno.EINVAL)
    assert (out["missing"].code, out["missing"].errno) == ("NoSuchKey", errno.ENOENT)


def test_get_into_a_buffer(rgw, bucket):
    data = os.urandom(300_000)

    async def scenario(zos: ZosClient) -> Any:
        await zos.put("blob", data)
        exact = bytearray(100_000)
        got_exact = await zos.get("blob", 50_000, 150_000, into=exact)
        larger = bytearray(b"\xee" * 400_000)
        got_larger = await zos.get("blob", into=memoryview(larger))
        return exact, got_exact, larger, got_larger

    exact, got_exact, larger, got_larger = run(config(rgw, bucket), scenario)
    assert exact == data[50_000:150_000]
    assert bytes(got_exact) == data[50_000:150_000]
    assert bytes(got_larger) == data  # the part filled
    assert larger[:300_000] == data and larger[300_000:] == b"\xee" * 100_000


def test_get_if_match(rgw, bucket):
    async def scenario(zos: ZosClient) -> Any:
        first = await zos.put("f", b"version one")
        same = bytes(await zos.get("f", 0, 7, if_match=first))
        await zos.put("f", b"version two")
        try:
            await zos.get("f", 0, 7, if_match=first)
        except ZosError as err:
            return same, err
        return same, None

    same, err = run(config(rgw, bucket), scenario)
    assert same == b"version"
    assert err is not None, "a read against a changed object must fail"
    assert (err.code, err.errno) == ("PreconditionFailed", errno.ESTALE)


@pytest.mark.parametrize("storage_class", ["STANDARD_IA", "GLACIER"])
def test_put_with_storage_class(rgw, bucket, storage_class):
    async def scenario(zos: ZosClient) -> Any:
        await zos.put("cold", b"archived bytes", WriteOptions(storage_class=storage_class))
        await zos.put("warm", b"normal bytes")
        listing = await zos.list()
        return await zos.head("cold"), await zos.head("warm"), listing, bytes(await zos.get("cold"))

    cold, warm, listing, data = run(config(rgw, bucket), scenario)
    assert cold.storage_class == storage_class
    assert warm.storage_class == "STANDARD"
    assert {e.key: e.storage_class for e in listing.entries} == {"cold": storage_class, "warm": "STANDARD"}
    assert data == b"archived bytes"  # RGW does not really archive: GLACIER reads back at once


def test_put_with_canned_acl(rgw, bucket, s3_second):
    async def scenario(zos: ZosClient) -> Any:
        await zos.put("public", b"for everyone", WriteOptions(acl="public-read"))
        await zos.put("private", b"for me")
        return await zos.get_acl("public")

    acl = run(config(rgw, bucket), scenario)
    assert Grant("READ", "Group", ALL_USERS) in acl.grants
    assert second_user_reads(s3_second, bucket, "public") == b"for everyone"
    assert second_user_reads(s3_second, bucket, "private") == "AccessDenied"
    with urllib.request.urlopen(f"{rgw.endpoint}/{bucket}/public", timeout=10) as anonymous:
        assert anonymous.read() == b"for everyone"
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{rgw.endpoint}/{bucket}/private", timeout=10)
    assert denied.value.code == 403


def test_put_with_grants(rgw, bucket, s3, s3_second):
    grants = (
        Grant("FULL_CONTROL", "CanonicalUser", MAIN_USER.uid),
        Grant("READ", "CanonicalUser", SECOND_USER.uid),
    )

    async def scenario(zos: ZosClient) -> Any:
        await zos.put("shared", b"for two", WriteOptions(grants=grants, acl="private"))
        return await zos.get_acl("shared")

    acl = run(config(rgw, bucket), scenario)
    assert {(g.permission, g.grantee) for g in acl.grants} == {
        ("FULL_CONTROL", MAIN_USER.uid), ("READ", SECOND_USER.uid)
    }
    assert second_user_reads(s3_second, bucket, "shared") == b"for two"
    assert s3.get_object(Bucket=bucket, Key="shared")["Body"].read() == b"for two"


def test_put_from_a_file_region(rgw, bucket, tmp_path):
    data = os.urandom(3 * MiB)
    path = tmp_path / "source"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        async def scenario(zos: ZosClient) -> Any:
            etag = await zos.put("region", FileRegion(fd, 1000, 2 * MiB))
            empty = await zos.put("empty-region", FileRegion(fd, 0, 0))
            return etag, bytes(await zos.get("region")), empty, await zos.head("empty-region")

        etag, got, empty_etag, empty = run(config(rgw, bucket), scenario)
    finally:
        os.close(fd)
    assert got == data[1000 : 1000 + 2 * MiB]
    assert etag == md5(got)
    assert empty.size == 0 and empty_etag == md5(b"")


def test_put_of_a_small_file_region_and_of_one_past_the_end(rgw, bucket, s3, tmp_path):
    """A small region goes out with the request's head in one send (read
    first); a region the file does not hold is a local error, never a short
    object."""
    data = os.urandom(9000)
    path = tmp_path / "source"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        async def scenario(zos: ZosClient) -> Any:
            await zos.put("small-region", FileRegion(fd, 10, 5000))
            with pytest.raises(LocalFileError):
                await zos.put("past-the-end", FileRegion(fd, 8000, 5000))
            return bytes(await zos.get("small-region"))

        got = run(config(rgw, bucket), scenario)
    finally:
        os.close(fd)
    assert got == data[10:5010]
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket=bucket, Key="past-the-end")
    assert missing.value.response["Error"]["Code"] in ("404", "NoSuchKey")


def test_delete(rgw, bucket):
    async def scenario(zos: ZosClient) -> Any:
        await zos.put("doomed", b"x")
        await zos.delete("doomed")
        await zos.delete("never-existed")  # S3 deletes are idempotent
        try:
            await zos.head("doomed")
        except ZosError as err:
            return err
        return None

    err = run(config(rgw, bucket), scenario)
    assert err is not None and err.errno == errno.ENOENT


# -- delete_many and listing ------------------------------------------------------


def test_many_keys_list_all_and_delete_many(rgw, bucket, s3):
    """1,001 keys: listing pages through them, delete_many sends two requests
    and reports the one key a bucket policy protects."""
    keys = [f"many/{i:05d}" for i in range(1001)]
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject",
                       "Resource": f"arn:aws:s3:::{bucket}/keep/*"}],
    }
    stats = RequestStats()

    async def scenario(zos: ZosClient) -> Any:
        limiter = trio.CapacityLimiter(16)

        async def put(key: str) -> None:
            async with limiter:
                await zos.put(key, b"")

        async with trio.open_nursery() as nursery:
            for key in [*keys, "keep/precious"]:
                nursery.start_soon(put, key)
        pages = [page async for page in zos.list_all("many/", delimiter=None)]
        top = [page async for page in zos.list_all("", delimiter="/")]
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
        try:
            failures = await zos.delete_many(["keep/precious", *keys])
        finally:
            s3.delete_bucket_policy(Bucket=bucket)
        return pages, top, failures, await zos.list(delimiter=None)

    pages, top, failures, after = run(config(rgw, bucket), scenario, stats)
    assert [len(p.entries) for p in pages] == [1000, 1]
    assert pages[0].next_token is not None and pages[1].next_token is None
    assert [e.key for p in pages for e in p.entries] == keys
    assert [p.prefixes for p in top] == [["keep/", "many/"]] and top[0].entries == []
    assert [(f.key, f.code) for f in failures] == [("keep/precious", "AccessDenied")]
    assert isinstance(failures[0], DeleteFailure)
    assert stats.snapshot()["DeleteObjects"]["count"] == 2
    assert [e.key for e in after.entries] == ["keep/precious"]


ODD_KEYS = [
    "with space",
    "plus+sign",
    "per%cent",
    "unicode/grüße/日本",
    "a//b",
    "new\nline",
    "carriage\rreturn",
    "tab\tkey",
    "control\x01char",
    "amp&lt;<>\"'",
    "~tilde!*()",
]


def test_odd_keys_round_trip_list_and_delete(rgw, bucket):
    async def scenario(zos: ZosClient) -> Any:
        for key in ODD_KEYS:
            await zos.put(key, key.encode())
        heads = {key: (await zos.head(key)).size for key in ODD_KEYS}
        bodies = {key: bytes(await zos.get(key)) for key in ODD_KEYS}
        flat = await zos.list(delimiter=None)
        under_a = await zos.list("a/", "/")
        under_unicode = await zos.list("unicode/grüße/", "/")
        copied = await zos.copy("plus+sign", "copy of per%cent")
        failures = await zos.delete_many(ODD_KEYS)
        return heads, bodies, flat, under_a, under_unicode, copied, failures, await zos.list(delimiter=None)

    heads, bodies, flat, under_a, under_unicode, copied, failures, after = run(config(rgw, bucket), scenario)
    assert heads == {key: len(key.encode()) for key in ODD_KEYS}
    assert bodies == {key: key.encode() for key in ODD_KEYS}
    assert [e.key for e in flat.entries] == sorted(ODD_KEYS, key=lambda k: k.encode())
    assert under_a.prefixes == ["a//"] and under_a.entries == []
    assert [e.key for e in under_unicode.entries] == ["unicode/grüße/日本"]
    assert copied == md5(b"plus+sign")
    assert failures == []
    assert [e.key for e in after.entries] == ["copy of per%cent"]


def test_list_prefix_delimiter_start_after_and_max_keys(rgw, bucket):
    keys = ["a/1", "a/2", "a/b/3", "a/c/4", "b", "c/5", "d"]

    async def scenario(zos: ZosClient) -> dict[str, Any]:
        for key in keys:
            await zos.put(key, b"12345")
        first = await zos.list(max_keys=2)
        return {
            "top": await zos.list(),
            "a": await zos.list("a/"),
            "flat_a": await zos.list("a/", None),
            "after_b": await zos.list(delimiter=None, start_after="b"),
            "first": first,
            "second": await zos.list(max_keys=2, token=first.next_token),
            "none": await zos.list("zzz/"),
        }

    out = run(config(rgw, bucket), scenario)
    assert [e.key for e in out["top"].entries] == ["b", "d"]
    assert out["top"].prefixes == ["a/", "c/"]
    assert out["top"].next_token is None
    assert [e.key for e in out["a"].entries] == ["a/1", "a/2"]
    assert out["a"].prefixes == ["a/b/", "a/c/"]
    assert [e.key for e in out["flat_a"].entries] == ["a/1", "a/2", "a/b/3", "a/c/4"]
    assert [e.key for e in out["after_b"].entries] == ["c/5", "d"]
    entry = out["flat_a"].entries[0]
    assert entry.size == 5 and entry.etag == md5(b"12345") and entry.storage_class == "STANDARD"
    assert abs(entry.last_modified - time.time()) < 60
    # max_keys counts entries and common prefixes together
    assert ([e.key for e in out["first"].entries], out["first"].prefixes) == (["b"], ["a/"])
    assert out["first"].next_token is not None
    assert ([e.key for e in out["second"].entries], out["second"].prefixes) == (["d"], ["c/"])
    assert out["second"].next_token is None
    assert out["none"].entries == [] and out["none"].prefixes == []


# -- copy --------------------------------------------------------------------------


def test_copy_keeps_or_replaces_metadata(rgw, bucket):
    src_opts = WriteOptions(metadata={"mode": "33188", "uid": "1000"}, content_type="text/x-src", tags={"t": "1"})

    async def scenario(zos: ZosClient) -> dict[str, Any]:
        src_etag = await zos.put("src", b"source bytes", src_opts)
        out: dict[str, Any] = {"src_etag": src_etag}
        out["kept_etag"] = await zos.copy("src", "kept")
        out["replaced_etag"] = await zos.copy(
            "src", "replaced", WriteOptions(metadata={"mode": "33261"}, content_type="text/x-new")
        )
        await zos.copy("src", "retagged", WriteOptions(metadata={}, tags={"n": "2"}))
        await zos.copy("src", "src", WriteOptions(metadata={"mode": "33152"}, content_type="text/x-src"))
        for key in ("kept", "replaced", "retagged", "src"):
            out[key] = (await zos.head(key), await zos.get_tags(key), bytes(await zos.get(key)))
        out["matched"] = await zos.copy("src", "matched", if_match=src_etag)
        for name, call in (
            ("stale", zos.copy("src", "stale", if_match=md5(b"something else"))),
            ("missing", zos.copy("no-such-source", "x")),
        ):
            try:
                await call
            except ZosError as err:
                out[name] = err
        return out

    out = run(config(rgw, bucket), scenario)
    kept, kept_tags, kept_data = out["kept"]
    assert out["kept_etag"] == out["src_etag"] == kept.etag
    assert kept.metadata == {"mode": "33188", "uid": "1000"}
    assert kept.content_type == "text/x-src" and kept_tags == {"t": "1"} and kept_data == b"source bytes"
    replaced, replaced_tags, _ = out["replaced"]
    assert out["replaced_etag"] == replaced.etag == out["src_etag"]
    assert replaced.metadata == {"mode": "33261"} and replaced.content_type == "text/x-new"
    assert replaced_tags == {"t": "1"}  # WriteOptions.tags None: tags are copied
    retagged, retagged_tags, _ = out["retagged"]
    assert retagged.metadata == {} and retagged_tags == {"n": "2"}
    self_copy, self_tags, self_data = out["src"]  # a self-copy with REPLACE changes only metadata
    assert self_copy.metadata == {"mode": "33152"} and self_data == b"source bytes" and self_tags == {"t": "1"}
    assert out["matched"] == out["src_etag"]
    assert (out["stale"].code, out["stale"].errno) == ("PreconditionFailed", errno.ESTALE)
    assert out["missing"].errno == errno.ENOENT


def test_copy_above_the_single_copy_limit_goes_part_by_part(rgw, bucket, monkeypatch):
    """The >5 GiB path, with the limits scaled down: 12 MiB in 5 MiB parts."""
    monkeypatch.setattr(copies_module, "MAX_SINGLE_COPY", 8 * MiB)
    monkeypatch.setattr(copies_module, "MULTIPART_COPY_PART", 5 * MiB)
    data = os.urandom(12 * MiB)
    stats = RequestStats()

    async def scenario(zos: ZosClient) -> Any:
        await zos.put("big", data, WriteOptions(metadata={"mode": "33188"}, content_type="video/x-big", tags={"k": "v"}))
        etag = await zos.copy("big", "big-copy")
        small = await zos.copy("big", "big-replaced", WriteOptions(metadata={"mode": "33261"}), size=len(data))
        try:
            await zos.copy("big", "big-stale", if_match=md5(b"other"), size=len(data))
        except ZosError as err:
            stale = err
        return (etag, small, await zos.head("big-copy"), await zos.get_tags("big-copy"), bytes(await zos.get("big-copy")),
                await zos.head("big-replaced"), stale, (await zos.list(delimiter=None)).entries, await zos.list_uploads())

    etag, replaced_etag, info, tags, got, replaced, stale, entries, uploads = run(config(rgw, bucket), scenario, stats)
    parts = [data[:5 * MiB], data[5 * MiB : 10 * MiB], data[10 * MiB :]]
    assert got == data
    assert info.etag == multipart_etag(parts)
    assert etag == info.etag and replaced_etag == replaced.etag
    assert info.metadata == {"mode": "33188"} and info.content_type == "video/x-big" and tags == {"k": "v"}
    assert replaced.metadata == {"mode": "33261"}
    # RGW ignores copy conditions on UploadPartCopy; the client checks the source itself
    assert (stale.code, stale.errno) == ("PreconditionFailed", errno.ESTALE)
    assert [e.key for e in entries] == ["big", "big-copy", "big-replaced"] and uploads == []
    assert stats.snapshot()["UploadPartCopy"]["count"] == 7
    assert "CopyObject" not in stats.snapshot()


# -- multipart -------------------------------------------------------------------


def test_multipart_upload(rgw, bucket):
    part1 = os.urandom(5 * MiB)
    source = os.urandom(8 * MiB)
    part3 = b"the tail"
    opts = WriteOptions(metadata={"mode": "33188"}, content_type="application/x-parts", tags={"mp": "yes"})

    async def scenario(zos: ZosClient) -> dict[str, Any]:
        await zos.put("source", source)
        upload_id = await zos.create_multipart("assembled", opts)
        other_id = await zos.create_multipart("other/abandoned")
        e1 = await zos.upload_part("assembled", upload_id, 1, part1)
        e2 = await zos.upload_part_copy("assembled", upload_id, 2, "source", MiB, 7 * MiB - 7)
        e3 = await zos.upload_part("assembled", upload_id, 3, part3)
        out: dict[str, Any] = {"etags": [e1, e2, e3]}
        out["uploads"] = await zos.list_uploads()
        out["other_uploads"] = await zos.list_uploads("other/")
        out["parts"] = await zos.list_parts("assembled", upload_id)
        out["complete"] = await zos.complete_multipart(
            "assembled", upload_id, [Part(1, e1), Part(2, e2), Part(3, e3)]
        )
        out["head"] = await zos.head("assembled")
        out["tags"] = await zos.get_tags("assembled")
        out["data"] = bytes(await zos.get("assembled"))
        await zos.abort_multipart("other/abandoned", other_id)
        out["after_abort"] = await zos.list_uploads()
        try:
            await zos.upload_part("other/abandoned", other_id, 1, b"late")
        except ZosError as err:
            out["late"] = err
        out["ids"] = (upload_id, other_id)
        return out

    out = run(config(rgw, bucket), scenario)
    copied = source[MiB : 7 * MiB - 7]
    upload_id, other_id = out["ids"]
    assert out["etags"] == [md5(part1), md5(copied), md5(part3)]
    assert {(u.key, u.upload_id) for u in out["uploads"]} == {("assembled", upload_id), ("other/abandoned", other_id)}
    assert all(abs(u.initiated - time.time()) < 60 for u in out["uploads"])
    assert [(u.key, u.upload_id) for u in out["other_uploads"]] == [("other/abandoned", other_id)]
    assert [(p.number, p.etag, p.size) for p in out["parts"]] == [
        (1, md5(part1), len(part1)), (2, md5(copied), len(copied)), (3, md5(part3), len(part3))
    ]
    # RGW answers CompleteMultipartUpload with an empty ETag; HEAD has the real one.
    assert out["complete"] == ""
    assert out["head"].etag == multipart_etag([part1, copied, part3])
    assert out["data"] == part1 + copied + part3
    assert out["head"].metadata == {"mode": "33188"} and out["head"].content_type == "application/x-parts"
    assert out["tags"] == {"mp": "yes"}
    assert out["after_abort"] == []
    assert (out["late"].code, out["late"].errno) == ("NoSuchUpload", errno.EIO)


def test_multipart_part_too_small_is_refused(rgw, bucket):
    async def scenario(zos: ZosClient) -> ZosError:
        upload_id = await zos.create_multipart("small")
        e1 = await zos.upload_part("small", upload_id, 1, b"a" * 1024)
        e2 = await zos.upload_part("small", upload_id, 2, b"b" * 1024)
        try:
            await zos.complete_multipart("small", upload_id, [Part(1, e1), Part(2, e2)])
        except ZosError as err:
            return err
        finally:
            await zos.abort_quietly("small", upload_id)
        raise AssertionError("RGW accepted a 1 KiB first part")

    err = run(config(rgw, bucket), scenario)
    assert err.code == "EntityTooSmall" and err.errno == errno.EIO


# -- tags, ACLs --------------------------------------------------------------------


def test_tags(rgw, bucket):
    async def scenario(zos: ZosClient) -> list[Any]:
        await zos.put("t", b"x")
        seen = [await zos.get_tags("t")]
        await zos.put_tags("t", {"a": "1", "b": "two words", "ü": "ß"})
        seen += [await zos.get_tags("t"), (await zos.head("t")).tag_count]
        await zos.put_tags("t", {"only": "one"})
        seen.append(await zos.get_tags("t"))
        await zos.delete_tags("t")
        seen += [await zos.get_tags("t"), (await zos.head("t")).tag_count]
        try:
            await zos.get_tags("missing")
        except ZosError as err:
            seen.append(err)
        return seen

    none, three, count, one, cleared, zero, missing = run(config(rgw, bucket), scenario)
    assert none == {}
    assert three == {"a": "1", "b": "two words", "ü": "ß"} and count == 3
    assert one == {"only": "one"}
    assert cleared == {} and zero == 0
    assert missing.errno == errno.ENOENT


def test_acl_canned_and_explicit(rgw, bucket, s3_second):
    async def scenario(zos: ZosClient, step: str) -> Any:
        if step == "put":
            await zos.put("obj", b"secret-ish")
            return await zos.get_acl("obj")
        if step == "public":
            await zos.put_acl("obj", canned="public-read")
            return await zos.get_acl("obj")
        if step == "grant":
            owner = await zos.get_acl("obj")
            await zos.put_acl("obj", acl=Acl(owner.owner_id, owner.owner_name, (
                Grant("FULL_CONTROL", "CanonicalUser", owner.owner_id),
                Grant("READ", "CanonicalUser", SECOND_USER.uid),
            )))
            return await zos.get_acl("obj")
        if step == "private":
            await zos.put_acl("obj", canned="private")
            try:
                await zos.put_acl("obj")
            except ValueError as err:
                return err
        raise AssertionError(step)

    cfg = config(rgw, bucket)
    initial = run(cfg, lambda zos: scenario(zos, "put"))
    assert (initial.owner_id, initial.owner_name) == (MAIN_USER.uid, MAIN_USER.uid)
    assert [(g.permission, g.grantee_type, g.grantee) for g in initial.grants] == [
        ("FULL_CONTROL", "CanonicalUser", MAIN_USER.uid)
    ]
    assert second_user_reads(s3_second, bucket, "obj") == "AccessDenied"

    public = run(cfg, lambda zos: scenario(zos, "public"))
    assert Grant("READ", "Group", ALL_USERS) in public.grants
    assert second_user_reads(s3_second, bucket, "obj") == b"secret-ish"

    granted = run(cfg, lambda zos: scenario(zos, "grant"))
    assert {(g.permission, g.grantee) for g in granted.grants} == {
        ("FULL_CONTROL", MAIN_USER.uid), ("READ", SECOND_USER.uid)
    }
    assert second_user_reads(s3_second, bucket, "obj") == b"secret-ish"

    err = run(cfg, lambda zos: scenario(zos, "private"))
    assert "canned or acl" in str(err)
    assert second_user_reads(s3_second, bucket, "obj") == "AccessDenied"


# -- object lock: retention, legal hold ----------------------------------------------


def test_retention_governance(rgw, locked_bucket, s3):
    now = time.time()

    async def scenario(zos: ZosClient) -> dict[str, Any]:
        await zos.put("gov", b"kept")
        out: dict[str, Any] = {"initial": await zos.get_retention("gov")}
        await zos.put_retention("gov", Retention("GOVERNANCE", now + 3600))
        out["set"] = await zos.get_retention("gov")
        out["head"] = await zos.head("gov")
        try:  # shortening governance retention needs the bypass
            await zos.put_retention("gov", Retention("GOVERNANCE", now + 600))
        except ZosError as err:
            out["shorten"] = err
        await zos.put_retention("gov", Retention("GOVERNANCE", now + 600), bypass_governance=True)
        out["shortened"] = await zos.get_retention("gov")
        await zos.put_retention("gov", Retention("GOVERNANCE", now + 7200))  # lengthening needs none
        out["lengthened"] = await zos.get_retention("gov")
        try:  # S3 clears a governance retention with an empty one; RGW 16.2 cannot
            await zos.put_retention("gov", None, bypass_governance=True)
        except ZosError as err:
            out["clear"] = err
        await zos.delete("gov")  # in a versioned bucket: a delete marker, the data stays
        try:
            await zos.head("gov")
        except ZosError as err:
            out["deleted"] = err
        return out

    out = run(config(rgw, locked_bucket), scenario)
    assert out["initial"] is None
    assert out["set"].mode == "GOVERNANCE" and abs(out["set"].until - (now + 3600)) < 1.5
    assert out["head"].lock_mode == "GOVERNANCE" and abs(out["head"].lock_until - (now + 3600)) < 1.5
    assert out["head"].version_id  # object-lock buckets are versioned
    assert out["shorten"].errno == errno.EACCES
    assert abs(out["shortened"].until - (now + 600)) < 1.5
    assert abs(out["lengthened"].until - (now + 7200)) < 1.5
    assert (out["clear"].code, out["clear"].errno) == ("MalformedXML", errno.EINVAL)
    assert out["deleted"].errno == errno.ENOENT
    versions = s3.list_object_versions(Bucket=locked_bucket)
    assert [v["Key"] for v in versions["Versions"]] == ["gov"]
    assert [m["Key"] for m in versions["DeleteMarkers"]] == ["gov"]


def test_retention_compliance_and_legal_hold(rgw, locked_bucket, s3):
    now = time.time()

    async def scenario(zos: ZosClient) -> dict[str, Any]:
        await zos.put("comp", b"regulated")
        # COMPLIANCE cannot be lifted: keep it short (the fixture's cleanup
        # leaves the bucket behind if the object is still locked).
        await zos.put_retention("comp", Retention("COMPLIANCE", now + 5))
        out: dict[str, Any] = {"retention": await zos.get_retention("comp")}
        try:
            await zos.put_retention("comp", Retention("GOVERNANCE", now + 5), bypass_governance=True)
        except ZosError as err:
            out["downgrade"] = err
        await zos.put("held", b"on hold")
        out["hold_initial"] = await zos.get_legal_hold("held")
        await zos.put_legal_hold("held", True)
        out["hold_on"] = await zos.get_legal_hold("held")
        out["head_on"] = await zos.head("held")
        version = out["head_on"].version_id
        try:
            await trio.to_thread.run_sync(lambda: s3.delete_object(Bucket=locked_bucket, Key="held", VersionId=version))
        except ClientError as err:
            out["delete_held"] = err.response["Error"]["Code"]
        await zos.put_legal_hold("held", False)
        out["hold_off"] = await zos.get_legal_hold("held")
        out["head_off"] = await zos.head("held")
        return out

    out = run(config(rgw, locked_bucket), scenario)
    assert out["retention"].mode == "COMPLIANCE"
    assert out["downgrade"].errno == errno.EACCES
    assert out["hold_initial"] is False
    assert out["hold_on"] is True and out["head_on"].legal_hold
    assert out["delete_held"] == "AccessDenied"
    assert out["hold_off"] is False and not out["head_off"].legal_hold


# -- restore, bucket configuration -----------------------------------------------


def test_restore_is_not_implemented_by_rgw(rgw, bucket):
    async def scenario(zos: ZosClient) -> ZosError:
        await zos.put("archived", b"cold", WriteOptions(storage_class="GLACIER"))
        try:
            await zos.restore("archived", days=1)
        except ZosError as err:
            return err
        raise AssertionError("RGW 16.2 restored an object")

    err = run(config(rgw, bucket), scenario)
    assert (err.code, err.status, err.errno) == ("NotImplemented", 501, errno.EOPNOTSUPP)
    assert str(err) == "RestoreObject 'archived': the server does not implement this operation (NotImplemented)"


def test_versioning(rgw, bucket):
    async def scenario(zos: ZosClient) -> list[str | None]:
        seen = [await zos.get_versioning()]
        await zos.put_versioning(True)
        seen.append(await zos.get_versioning())
        await zos.put_versioning(False)
        seen.append(await zos.get_versioning())
        return seen

    assert run(config(rgw, bucket), scenario) == [None, "Enabled", "Suspended"]


def test_get_object_lock(rgw, bucket, locked_bucket):
    assert run(config(rgw, bucket), lambda zos: zos.get_object_lock()) is None
    lock = run(config(rgw, locked_bucket), lambda zos: zos.get_object_lock())
    assert lock is not None and lock["ObjectLockEnabled"] == "Enabled"


def test_operations_on_a_missing_bucket(rgw):
    async def scenario(zos: ZosClient) -> list[ZosError]:
        errors = []
        for call in (zos.head_bucket(), zos.put("k", b"x"), zos.list(), zos.get_versioning()):
            try:
                await call
            except ZosError as err:
                errors.append(err)
        return errors

    errors = run(config(rgw, "zosfs-no-such-bucket"), scenario)
    assert [e.errno for e in errors] == [errno.ENOENT] * 4
    assert [e.code for e in errors[1:]] == ["NoSuchBucket"] * 3
