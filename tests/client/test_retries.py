"""Retries through the fault-injecting proxy in front of the real local RGW:
idempotent requests ride out a burst of 503s; an append is never sent twice
blindly, so its bytes land exactly once whatever failed."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio

from tests.support.client import client_config, md5, run_client
from tests.support.faultproxy import FaultProxy, Rule
from tests.support.rgw import LocalRGW
from zosfs.zos import Appended, RequestStats, ZosClient, ZosError


@pytest.fixture
def proxy(rgw: LocalRGW) -> Iterator[FaultProxy]:
    with FaultProxy(rgw.endpoint) as p:
        yield p


def run(proxy: FaultProxy, bucket: str, scenario: Callable[[ZosClient], Awaitable[Any]],
        stats: RequestStats | None = None, **overrides: Any) -> Any:
    return run_client(client_config(proxy.endpoint, bucket, **overrides), scenario, stats)


def test_a_burst_of_slowdowns_is_retried(proxy, bucket, s3):
    s3.put_object(Bucket=bucket, Key="existing", Body=b"already there")
    rules = {op: proxy.add_rule(Rule(op=op, status=503, times=3)) for op in ("GetObject", "HeadObject", "PutObject")}
    stats = RequestStats()

    async def scenario(zos: ZosClient) -> Any:
        return bytes(await zos.get("existing")), await zos.head("existing"), await zos.put("new", b"fresh")

    data, info, etag = run(proxy, bucket, scenario, stats)
    assert data == b"already there"
    assert info.size == 13
    assert etag == md5(b"fresh")
    assert s3.get_object(Bucket=bucket, Key="new")["Body"].read() == b"fresh"
    for op, rule in rules.items():
        assert rule.fired == 3
        assert proxy.count(op) == 4, op  # three refused, the fourth answered
        assert [r.status for r in proxy.records(op)] == [503, 503, 503, 200]
    seen = stats.snapshot()
    assert (seen["GetObject"]["count"], seen["GetObject"]["errors"]) == (4, 3)


def test_retries_give_up_after_max_attempts(proxy, bucket, s3):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    proxy.add_rule(Rule(op="GetObject", status=503))

    with pytest.raises(ZosError) as caught:
        run(proxy, bucket, lambda zos: zos.get("k"), max_attempts=3)
    assert (caught.value.code, caught.value.errno) == ("SlowDown", errno.EIO)
    assert proxy.count("GetObject") == 3


def test_errors_that_will_not_change_are_not_retried(proxy, bucket):
    with pytest.raises(ZosError) as caught:
        run(proxy, bucket, lambda zos: zos.get("missing"))
    assert caught.value.code == "NoSuchKey"
    assert proxy.count("GetObject") == 1


def test_control_path_retries_a_burst_of_slowdowns(proxy, bucket, s3):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="a=1")
    rule = proxy.add_rule(Rule(op="GetObjectTagging", status=503, times=2))

    tags = run(proxy, bucket, lambda zos: zos.get_tags("k"))
    assert tags == {"a": "1"}
    assert rule.fired == 2 and proxy.count("GetObjectTagging") == 3


def test_a_lost_append_answer_is_resolved_by_reading_the_length(proxy, bucket, s3):
    """reset_after: RGW applied the append, the answer never arrived."""
    rule = proxy.add_rule(Rule(op="AppendObject", reset_after=True, times=1, key="log"))

    async def scenario(zos: ZosClient) -> Any:
        return await zos.append("log", 0, b"first "), await zos.append("log", 6, b"second")

    first, second = run(proxy, bucket, scenario)
    assert rule.fired == 1
    assert first == Appended(6, md5(b"first "))  # the ETag is computed locally
    assert second == Appended(12, md5(b"second"))
    assert proxy.count("AppendObject") == 2  # the lost one was not sent again
    assert proxy.count("HeadObject") >= 1  # ... its length was read instead
    assert s3.get_object(Bucket=bucket, Key="log")["Body"].read() == b"first second"


def test_a_refused_append_is_sent_again(proxy, bucket, s3):
    """A 503 before forwarding: RGW never saw it, so it must be sent again."""
    rule = proxy.add_rule(Rule(op="AppendObject", status=503, times=2))

    async def scenario(zos: ZosClient) -> Any:
        return await zos.append("log", 0, b"once"), await zos.append("log", 4, b" only")

    first, second = run(proxy, bucket, scenario)
    assert rule.fired == 2
    assert (first, second) == (Appended(4, md5(b"once")), Appended(9, md5(b" only")))
    assert [r.status for r in proxy.records("AppendObject")] == [503, 503, 200, 200]
    assert proxy.count("HeadObject") == 2  # each retry was preceded by a length check
    assert s3.get_object(Bucket=bucket, Key="log")["Body"].read() == b"once only"


def test_an_append_that_failed_after_someone_else_appended(proxy, bucket, s3):
    """The connection drops (reset_before) and the length is neither the old
    position nor old + ours: the client sends nothing and reports the real
    length."""
    async def scenario(zos: ZosClient) -> ZosError:
        await zos.append("log", 0, b"abc")
        await zos.append("log", 3, b"de")  # "another writer"
        proxy.add_rule(Rule(op="AppendObject", reset_before=True, times=1))
        try:
            await zos.append("log", 3, b"zzzz")  # we still believe the length is 3
        except ZosError as err:
            return err
        raise AssertionError("a stale append succeeded")

    err = run(proxy, bucket, scenario)
    assert err.code == "PositionNotEqualToLength" and err.next_position == 5
    assert [r.fault for r in proxy.records("AppendObject")] == [None, None, "reset_before"]
    assert s3.get_object(Bucket=bucket, Key="log")["Body"].read() == b"abcde"


@pytest.mark.parametrize("op", ["PutObject", "AppendObject"])
def test_a_server_that_stops_reading_the_body_times_the_request_out(proxy, bucket, s3, op):
    """RGW stops reading request bodies when its OSD is full. A sender that
    waits for the socket to take more bytes must give up after read_timeout
    like any other wait, never hold its caller (a FUSE request) forever: the
    body is larger than the loopback socket buffers, so it cannot all be
    sent before the server reads."""
    stall = proxy.add_rule(Rule(op=op, stall=True))
    body = os.urandom(48 * 1024 * 1024)

    async def scenario(zos: ZosClient) -> Any:
        with trio.fail_after(60):  # (the bug this tests was a hang: fail, don't hang the suite)
            with pytest.raises(ZosError) as failed:
                if op == "PutObject":
                    await zos.put("stalled", body)
                else:
                    await zos.append("stalled", 0, body)
        return failed.value

    start = time.monotonic()
    err = run(proxy, bucket, scenario, read_timeout=2, max_attempts=2)
    took = time.monotonic() - start
    assert err.code == "Timeout" and err.errno == errno.ETIMEDOUT, err
    assert stall.fired >= 2  # sent again once, and timed out again
    assert 2 * 2 <= took < 2 * 2 + 15, f"took {took:.1f} s with read_timeout 2 and 2 attempts"
    proxy.remove_rule(stall)
    assert "stalled" not in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
