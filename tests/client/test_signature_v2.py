"""Every client operation with signature V2 (`ClientConfig(signature="v2")`),
both our own signer (data path) and botocore's (control path), against the
real local RGW, whose V2 canonical resource differs from botocore's."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.support.client import client_config, md5, run_client
from tests.support.rgw import MAIN_USER, SECOND_USER, LocalRGW
from zosfs.zos import (
    Acl,
    Grant,
    Part,
    Retention,
    WriteOptions,
    ZosClient,
    ZosError,
    probe,
)

MiB = 1024 * 1024
ODD_KEYS = ["dir/with space", "plus+sign", "per%cent", "grüße/日本", "a//b", "new\nline", "amp&=?#"]


def run(rgw: LocalRGW, bucket: str, scenario: Callable[[ZosClient], Awaitable[Any]]) -> Any:
    return run_client(client_config(rgw.endpoint, bucket, signature="v2"), scenario)


async def failure(call: Awaitable[Any]) -> ZosError:
    try:
        await call
    except ZosError as err:
        return err
    raise AssertionError("the call succeeded")


def test_v2_data_path(rgw, bucket, s3):
    opts = WriteOptions(metadata={"mode": "33188", "note": "x  y"}, content_type="text/plain", tags={"a": "b c"})

    async def scenario(zos: ZosClient) -> dict[str, Any]:
        out: dict[str, Any] = {"caps": await probe(zos)}
        out["put"] = await zos.put("obj", b"0123456789", opts)
        out["head"] = await zos.head("obj")
        out["range"] = bytes(await zos.get("obj", 2, 5, if_match=out["put"]))
        out["appends"] = [await zos.append("log", 0, b"abc", opts), await zos.append("log", 3, b"def", opts)]
        out["wrong_position"] = await failure(zos.append("log", 1, b"x"))
        for key in ODD_KEYS:
            await zos.put(key, key.encode())
        out["odd"] = {key: bytes(await zos.get(key)) for key in ODD_KEYS}
        out["listing"] = await zos.list(delimiter=None)
        out["prefixed"] = await zos.list("grüße/", "/")
        out["paged"] = await zos.list(delimiter=None, max_keys=2, start_after="a//b")
        out["copy"] = await zos.copy("obj", "copy", WriteOptions(metadata={"mode": "33261"}))
        out["copy_tags"] = await zos.get_tags("copy")
        out["stale_copy"] = await failure(zos.copy("obj", "copy2", if_match=md5(b"nope")))
        out["deleted"] = await zos.delete_many(ODD_KEYS)
        await zos.delete("obj")
        out["after"] = [e.key for e in (await zos.list(delimiter=None)).entries]
        return out

    out = run(rgw, bucket, scenario)
    assert out["caps"].append is True
    assert out["put"] == md5(b"0123456789")
    assert out["head"].metadata == {"mode": "33188", "note": "x  y"} and out["head"].tag_count == 1
    assert out["range"] == b"234"
    assert [a.position for a in out["appends"]] == [3, 6]
    assert out["wrong_position"].next_position == 6
    assert out["odd"] == {key: key.encode() for key in ODD_KEYS}
    assert len(out["listing"].entries) == len(ODD_KEYS) + 2
    assert [e.key for e in out["prefixed"].entries] == ["grüße/日本"]
    assert [e.key for e in out["paged"].entries] == ["amp&=?#", "dir/with space"] and out["paged"].next_token
    assert out["copy"] == out["put"] and out["copy_tags"] == {"a": "b c"}
    assert out["stale_copy"].errno == errno.ESTALE
    assert out["deleted"] == []
    assert out["after"] == ["copy", "log"]
    assert s3.get_object(Bucket=bucket, Key="log")["Body"].read() == b"abcdef"


def test_v2_multipart(rgw, bucket):
    part1 = os.urandom(5 * MiB)

    async def scenario(zos: ZosClient) -> dict[str, Any]:
        await zos.put("src", b"copy me please")
        upload_id = await zos.create_multipart("mp key+", WriteOptions(metadata={"m": "1"}, tags={"t": "1"}))
        e1 = await zos.upload_part("mp key+", upload_id, 1, part1)
        e2 = await zos.upload_part_copy("mp key+", upload_id, 2, "src", 5, 9)
        out: dict[str, Any] = {
            "uploads": await zos.list_uploads("mp"),
            "parts": await zos.list_parts("mp key+", upload_id),
        }
        await zos.complete_multipart("mp key+", upload_id, [Part(1, e1), Part(2, e2)])
        out["head"] = await zos.head("mp key+")
        out["tags"] = await zos.get_tags("mp key+")
        out["data"] = bytes(await zos.get("mp key+"))
        doomed = await zos.create_multipart("doomed")
        await zos.abort_multipart("doomed", doomed)
        out["left"] = await zos.list_uploads()
        return out

    out = run(rgw, bucket, scenario)
    assert [u.key for u in out["uploads"]] == ["mp key+"]
    assert [(p.number, p.size) for p in out["parts"]] == [(1, 5 * MiB), (2, 4)]
    assert out["data"] == part1 + b"me p"
    assert out["head"].etag.endswith("-2") and out["head"].metadata == {"m": "1"}
    assert out["tags"] == {"t": "1"}
    assert out["left"] == []


def test_v2_control_path(rgw, bucket, s3_second):
    async def scenario(zos: ZosClient) -> dict[str, Any]:
        await zos.put("obj", b"x", WriteOptions(storage_class="GLACIER"))
        await zos.put_tags("obj", {"k": "v w"})
        out: dict[str, Any] = {"tags": await zos.get_tags("obj")}
        await zos.delete_tags("obj")
        out["no_tags"] = await zos.get_tags("obj")
        await zos.put_acl("obj", canned="public-read")
        out["public"] = await zos.get_acl("obj")
        await zos.put_acl("obj", acl=Acl(MAIN_USER.uid, MAIN_USER.uid, (
            Grant("FULL_CONTROL", "CanonicalUser", MAIN_USER.uid), Grant("READ", "CanonicalUser", SECOND_USER.uid))))
        out["granted"] = await zos.get_acl("obj")
        out["restore"] = await failure(zos.restore("obj", 1))
        out["lock"] = await zos.get_object_lock()
        out["versioning"] = [await zos.get_versioning()]
        await zos.put_versioning(True)
        out["versioning"].append(await zos.get_versioning())
        return out

    out = run(rgw, bucket, scenario)
    assert out["tags"] == {"k": "v w"} and out["no_tags"] == {}
    assert any(g.grantee.endswith("/AllUsers") for g in out["public"].grants)
    assert {(g.permission, g.grantee) for g in out["granted"].grants} == {
        ("FULL_CONTROL", MAIN_USER.uid), ("READ", SECOND_USER.uid)}
    assert s3_second.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"x"
    assert (out["restore"].code, out["restore"].errno) == ("NotImplemented", errno.EOPNOTSUPP)
    assert out["lock"] is None
    assert out["versioning"] == [None, "Enabled"]


def test_v2_object_lock(rgw, locked_bucket):
    until = time.time() + 3600

    async def scenario(zos: ZosClient) -> dict[str, Any]:
        await zos.put("obj", b"x")
        out: dict[str, Any] = {"caps": await probe(zos), "lock": await zos.get_object_lock()}
        await zos.put_retention("obj", Retention("GOVERNANCE", until))
        out["retention"] = await zos.get_retention("obj")
        await zos.put_retention("obj", Retention("GOVERNANCE", until - 60), bypass_governance=True)
        out["shortened"] = await zos.get_retention("obj")
        await zos.put_legal_hold("obj", True)
        out["hold"] = await zos.get_legal_hold("obj")
        await zos.put_legal_hold("obj", False)
        out["append"] = await failure(zos.append("log", 0, b"x"))
        return out

    out = run(rgw, locked_bucket, scenario)
    assert (out["caps"].object_lock, out["caps"].append) == (True, False)
    assert out["lock"]["ObjectLockEnabled"] == "Enabled"
    assert out["retention"].mode == "GOVERNANCE" and abs(out["retention"].until - until) < 1.5
    assert abs(out["shortened"].until - (until - 60)) < 1.5
    assert out["hold"] is True
    assert out["append"].code == "InvalidBucketState"
