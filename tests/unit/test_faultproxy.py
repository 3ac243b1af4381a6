"""Tests of the fault-injecting proxy, against a small in-process object store.

The store speaks just enough S3 over HTTP/1.1 (keep-alive, Expect:
100-continue, chunked bodies, ranges, RGW's append) for the proxy's paths to
be exercised by http.client and by a real boto3 client, without Ceph.
"""

from __future__ import annotations

import http.client
import io
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

import boto3
import botocore.exceptions
import botocore.retries.standard
import pytest
from botocore.config import Config

from tests.support.faultproxy import FaultProxy, Rule, classify_op

MiB = 1 << 20
BUCKET = "bkt"


# --------------------------------------------------------------------------
# A tiny S3-ish upstream
# --------------------------------------------------------------------------


class _Store(ThreadingHTTPServer):
    """Objects by unquoted path, plus what each request looked like on arrival."""

    daemon_threads = True  # idle keep-alive handlers must not block server_close()

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _StoreHandler)
        self.objects: dict[str, bytes] = {}
        self.seen: list[tuple[str, str, tuple[str, int], str | None]] = []
        self.targets: list[str] = []  # request targets (path and query) as they arrived
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class _StoreHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and a 100 Continue on Expect
    disable_nagle_algorithm = True  # head and body go in separate writes
    server: _Store

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _target(self) -> tuple[str, dict[str, list[str]]]:
        url = urlsplit(self.path)
        with self.server.lock:
            self.server.seen.append(
                (self.command, url.path, self.client_address, self.headers.get("Host"))
            )
            self.server.targets.append(self.path)
        return unquote(url.path), parse_qs(url.query, keep_blank_values=True)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n"):
                pass
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str) -> None:
        self._reply(
            status,
            f"<Error><Code>{code}</Code></Error>".encode(),
            {"Content-Type": "application/xml"},
        )

    def do_PUT(self) -> None:
        path, query = self._target()
        body = self._body()
        with self.server.lock:
            objects = self.server.objects
            if "append" in query:
                current = objects.get(path, b"")
                if int(query["position"][0]) != len(current):
                    return self._error(409, "PositionNotEqualToLength")
                objects[path] = current + body
            elif source := self.headers.get("x-amz-copy-source"):
                objects[path] = objects["/" + unquote(source).lstrip("/")]
                copied = b'<CopyObjectResult><ETag>"x"</ETag></CopyObjectResult>'
                return self._reply(200, copied, {"Content-Type": "application/xml"})
            else:
                objects[path] = body
        self._reply(200, headers={"ETag": '"x"'})

    def do_GET(self) -> None:
        path, _ = self._target()
        if path.count("/") == 1:
            return self._list(path)
        with self.server.lock:
            data = self.server.objects.get(path)
        if data is None:
            return self._error(404, "NoSuchKey")
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if not ranged:
            return self._reply(200, data, {"ETag": '"x"'})
        first = int(ranged[1])
        last = min(int(ranged[2] or len(data) - 1), len(data) - 1)
        self._reply(
            206,
            data[first : last + 1],
            {"ETag": '"x"', "Content-Range": f"bytes {first}-{last}/{len(data)}"},
        )

    def do_HEAD(self) -> None:
        path, _ = self._target()
        with self.server.lock:
            data = self.server.objects.get(path)
        if data is None:
            return self._reply(404)
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", '"x"')
        self.end_headers()

    def do_DELETE(self) -> None:
        path, _ = self._target()
        with self.server.lock:
            self.server.objects.pop(path, None)
        self._reply(204)

    def _list(self, bucket_path: str) -> None:
        """A ListObjectsV2 answer, sent chunked as RGW does."""
        with self.server.lock:
            keys = sorted(
                p[len(bucket_path) + 1 :]
                for p in self.server.objects
                if p.startswith(bucket_path + "/")
            )
        contents = "".join(f"<Contents><Key>{k}</Key><Size>1</Size></Contents>" for k in keys)
        xml = (
            f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>{BUCKET}</Name>'
            f"<KeyCount>{len(keys)}</KeyCount><IsTruncated>false</IsTruncated>{contents}"
            "</ListBucketResult>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for start in range(0, len(xml), 50):
            piece = xml[start : start + 50]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")


# --------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------


@pytest.fixture
def store() -> Iterator[_Store]:
    server = _Store()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def proxy(store: _Store) -> Iterator[FaultProxy]:
    with FaultProxy(store.endpoint) as running:
        yield running


def s3_client(proxy: FaultProxy, *, retries: int = 5):
    """A boto3 client set up as the daemon's is, through the proxy.

    botocore's ``max_attempts`` counts retries: 5 means up to 6 attempts.
    """
    config = Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"mode": "standard", "max_attempts": retries},
        connect_timeout=5,
        read_timeout=10,
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=proxy.endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIDFAKE",
        aws_secret_access_key="fake-secret",
        config=config,
    )


def connect(proxy: FaultProxy, timeout: float = 10) -> http.client.HTTPConnection:
    url = urlsplit(proxy.endpoint)
    return http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)


def request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read()


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry at once: the standard mode waits up to 2**n s after a SlowDown."""
    monkeypatch.setattr(
        botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda self, context: 0
    )


def proxy_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("faultproxy")]


# --------------------------------------------------------------------------
# Pass-through
# --------------------------------------------------------------------------


def test_passthrough_streams_big_bodies_over_kept_alive_connections(proxy, store):
    data = os.urandom(8 * MiB)
    conn = connect(proxy)
    assert request(conn, "PUT", f"/{BUCKET}/big", data) == (200, b"")
    assert request(conn, "GET", f"/{BUCKET}/big") == (200, data)
    conn.request("HEAD", f"/{BUCKET}/big")
    head = conn.getresponse()
    assert (head.status, head.getheader("Content-Length"), head.read()) == (200, str(8 * MiB), b"")
    ranged = request(conn, "GET", f"/{BUCKET}/big", headers={"Range": "bytes=5-9"})
    assert ranged == (206, data[5:10])
    conn.close()

    proxy.wait_idle()
    records = proxy.records()
    assert [r.op for r in records] == ["PutObject", "GetObject", "HeadObject", "GetObject"]
    assert {r.connection for r in records} == {1}
    assert len({peer for _, _, peer, _ in store.seen}) == 1  # one upstream connection too
    put, get = records[0], records[1]
    assert (put.request_bytes, put.response_bytes, put.status) == (8 * MiB, 0, 200)
    assert (get.request_bytes, get.response_bytes, get.status) == (0, 8 * MiB, 200)
    assert get.response_body == data[: proxy.capture_limit]
    assert all(r.duration is not None and r.fault is None for r in records)


def test_boto3_traffic_passes_with_host_header_and_expect_continue(proxy, store):
    s3 = s3_client(proxy)
    data = os.urandom(5 * MiB)
    s3.put_object(Bucket=BUCKET, Key="dir/a file", Body=io.BytesIO(data))
    assert s3.get_object(Bucket=BUCKET, Key="dir/a file")["Body"].read() == data
    assert s3.head_object(Bucket=BUCKET, Key="dir/a file")["ContentLength"] == len(data)
    ranged = s3.get_object(Bucket=BUCKET, Key="dir/a file", Range="bytes=10-19")
    assert ranged["Body"].read() == data[10:20]
    s3.copy_object(Bucket=BUCKET, Key="copy", CopySource={"Bucket": BUCKET, "Key": "dir/a file"})
    listing = s3.list_objects_v2(Bucket=BUCKET)  # a chunked response
    assert [c["Key"] for c in listing["Contents"]] == ["copy", "dir/a file"]

    put = proxy.records("PutObject")[0]
    assert put.headers["expect"] == "100-continue"
    assert (put.path, put.bucket, put.key) == (f"/{BUCKET}/dir/a file", BUCKET, "dir/a file")
    assert put.request_bytes == len(data) and store.objects[f"/{BUCKET}/copy"] == data
    assert proxy.count("CopyObject") == proxy.count("ListObjectsV2") == 1
    assert {host for _, _, _, host in store.seen} == {urlsplit(proxy.endpoint).netloc}


def test_chunked_request_and_response_bodies_pass(proxy, store):
    conn = connect(proxy)
    conn.request("PUT", f"/{BUCKET}/chunky", body=iter([b"abc", b"", b"defg"]), encode_chunked=True)
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"")
    status, body = request(conn, "GET", f"/{BUCKET}?list-type=2")
    assert status == 200 and b"<Key>chunky</Key>" in body
    conn.close()

    assert store.objects[f"/{BUCKET}/chunky"] == b"abcdefg"
    put, listing = proxy.records()
    assert (put.request_bytes, put.request_body) == (7, b"abcdefg")
    assert (listing.op, listing.connection) == ("ListObjectsV2", 1)
    assert listing.response_bytes == len(body)


# --------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers", "op"),
    [
        ("GET", "/", {}, "ListBuckets"),
        ("HEAD", "/b", {}, "HeadBucket"),
        ("PUT", "/b", {}, "CreateBucket"),
        ("GET", "/b?list-type=2&prefix=x", {}, "ListObjectsV2"),
        ("GET", "/b?prefix=x", {}, "ListObjects"),
        ("GET", "/b?uploads", {}, "ListMultipartUploads"),
        ("POST", "/b?delete", {}, "DeleteObjects"),
        ("GET", "/b/k", {}, "GetObject"),
        ("HEAD", "/b/k", {}, "HeadObject"),
        ("PUT", "/b/k", {}, "PutObject"),
        ("PUT", "/b/k", {"x-amz-copy-source": "b/j"}, "CopyObject"),
        ("PUT", "/b/k?append&position=0", {}, "AppendObject"),
        ("PUT", "/b/k?tagging", {}, "PutObjectTagging"),
        ("GET", "/b/k?tagging", {}, "GetObjectTagging"),
        ("PUT", "/b/k?acl", {}, "PutObjectAcl"),
        ("POST", "/b/k?uploads", {}, "CreateMultipartUpload"),
        ("PUT", "/b/k?partNumber=2&uploadId=u", {}, "UploadPart"),
        ("PUT", "/b/k?partNumber=2&uploadId=u", {"x-amz-copy-source": "b/j"}, "UploadPartCopy"),
        ("GET", "/b/k?uploadId=u", {}, "ListParts"),
        ("POST", "/b/k?uploadId=u", {}, "CompleteMultipartUpload"),
        ("DELETE", "/b/k?uploadId=u", {}, "AbortMultipartUpload"),
        ("DELETE", "/b/k", {}, "DeleteObject"),
        ("PATCH", "/b/k", {}, "Other"),
    ],
)
def test_classify_op(method, path, headers, op):
    url = urlsplit(path)
    bucket, _, key = url.path.lstrip("/").partition("/")
    query = dict(parse_qsl(url.query, keep_blank_values=True))
    assert classify_op(method, bucket, key, query, headers) == op


def test_counts_requests_by_operation_and_fields(proxy, store):
    conn = connect(proxy)
    assert request(conn, "PUT", f"/{BUCKET}/log?append&position=0", b"abc")[0] == 200
    assert request(conn, "PUT", f"/{BUCKET}/log?append&position=3", b"de")[0] == 200
    assert request(conn, "PUT", f"/{BUCKET}/log?append&position=3", b"xx")[0] == 409
    assert request(conn, "GET", f"/{BUCKET}/log") == (200, b"abcde")
    assert request(conn, "GET", f"/{BUCKET}/missing")[0] == 404
    assert request(conn, "DELETE", f"/{BUCKET}/log")[0] == 204
    conn.close()

    assert proxy.count() == 6
    assert proxy.count("AppendObject") == 3
    assert proxy.count("AppendObject", status=200) == 2
    assert proxy.count("GetObject", key="missing") == 1
    assert proxy.stats == {"AppendObject": 3, "GetObject": 2, "DeleteObject": 1}
    assert proxy.records("AppendObject")[1].query == {"append": "", "position": "3"}
    assert b"PositionNotEqualToLength" in proxy.records("AppendObject")[2].response_body
    with pytest.raises(TypeError):
        proxy.count(colour="red")
    proxy.reset_stats()
    assert proxy.count() == 0 and proxy.records() == []


# --------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------


@pytest.mark.usefixtures("no_backoff")
def test_503_for_the_first_three_requests_is_retried_by_boto3(proxy, store):
    store.objects[f"/{BUCKET}/k"] = b"payload"
    rule = proxy.add_rule(Rule(op="GetObject", status=503, times=3))
    s3 = s3_client(proxy)
    assert s3.get_object(Bucket=BUCKET, Key="k")["Body"].read() == b"payload"
    assert (rule.matched, rule.fired) == (4, 3)
    assert proxy.count("GetObject") == 4
    assert proxy.count("GetObject", status=503, fault="status") == 3
    assert b"<Code>SlowDown</Code>" in proxy.records("GetObject")[0].response_body
    assert [seen[0] for seen in store.seen] == ["GET"]  # the errors were not forwarded


@pytest.mark.usefixtures("no_backoff")
def test_error_before_100_continue_closes_and_boto3_retries(proxy, store):
    rule = proxy.add_rule(Rule(op="PutObject", status=500, times=2))
    s3 = s3_client(proxy)
    s3.put_object(Bucket=BUCKET, Key="k", Body=io.BytesIO(b"x" * 1000))
    assert store.objects[f"/{BUCKET}/k"] == b"x" * 1000
    assert rule.fired == 2
    records = proxy.records("PutObject")
    assert [r.status for r in records] == [500, 500, 200]
    assert len({r.connection for r in records}) == 3  # closed after each error
    assert b"<Code>InternalError</Code>" in records[0].response_body


def test_reset_before_fails_the_client_without_reaching_the_server(proxy, store):
    store.objects[f"/{BUCKET}/k"] = b"payload"
    rule = proxy.add_rule(Rule(op="GetObject", reset_before=True))
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        s3_client(proxy, retries=0).get_object(Bucket=BUCKET, Key="k")
    conn = connect(proxy)
    with pytest.raises(ConnectionResetError):
        request(conn, "GET", f"/{BUCKET}/k")
    conn.close()
    assert rule.fired == 2
    assert store.seen == []
    assert proxy.count("GetObject", fault="reset_before", status=None) == 2


@pytest.mark.parametrize("body", [b"new data", io.BytesIO(b"new data")], ids=["bytes", "expect"])
def test_reset_after_applies_the_request_but_fails_the_client(proxy, store, body):
    rule = proxy.add_rule(Rule(op="PutObject", reset_after=True, times=1))
    s3 = s3_client(proxy, retries=0)
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        s3.put_object(Bucket=BUCKET, Key="k", Body=body)
    assert store.objects[f"/{BUCKET}/k"] == b"new data"
    assert rule.fired == 1
    record = proxy.records("PutObject")[0]
    assert (record.fault, record.status, record.request_bytes) == ("reset_after", 200, 8)
    s3.put_object(Bucket=BUCKET, Key="k2", Body=b"fine")  # the next one passes
    assert store.objects[f"/{BUCKET}/k2"] == b"fine"


def _get_in_thread(proxy: FaultProxy, path: str) -> tuple[threading.Thread, list[BaseException]]:
    """Start a GET that is expected to fail; the list receives its exception."""
    errors: list[BaseException] = []

    def get() -> None:
        conn = connect(proxy)
        try:
            request(conn, "GET", path)
        except Exception as error:
            errors.append(error)
        finally:
            conn.close()

    thread = threading.Thread(target=get)
    thread.start()
    return thread, errors


def test_stall_holds_the_request_until_the_rules_are_cleared(proxy, store):
    store.objects[f"/{BUCKET}/k"] = b"payload"
    proxy.add_rule(Rule(op="GetObject", stall=True))
    thread, errors = _get_in_thread(proxy, f"/{BUCKET}/k")
    proxy.wait_count(1, "GetObject", timeout=5)
    thread.join(0.3)
    assert thread.is_alive()
    assert proxy.records()[0].duration is None
    proxy.clear_rules()
    thread.join(5)
    assert not thread.is_alive()
    assert [type(e) for e in errors] == [ConnectionResetError]
    assert proxy.count("GetObject", fault="stall") == 1
    assert store.seen == []


def test_stop_releases_stalls_and_leaves_no_threads(store):
    proxy = FaultProxy(store.endpoint)
    proxy.start()
    idle = connect(proxy)
    assert request(idle, "HEAD", f"/{BUCKET}/nothing")[0] == 404  # stays open, kept alive
    proxy.add_rule(Rule(op="GetObject", stall=True))
    thread, errors = _get_in_thread(proxy, f"/{BUCKET}/k")
    proxy.wait_count(1, "GetObject", timeout=5)
    proxy.stop()
    thread.join(5)
    assert not thread.is_alive() and [type(e) for e in errors] == [ConnectionResetError]
    assert proxy_threads() == []
    url = urlsplit(proxy.endpoint)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((url.hostname, url.port), timeout=1)
    idle.close()


def test_truncate_sends_part_of_the_body(proxy, store):
    data = os.urandom(1000)
    store.objects[f"/{BUCKET}/k"] = data
    proxy.add_rule(Rule(op="GetObject", truncate=0.5))
    conn = connect(proxy)
    conn.request("GET", f"/{BUCKET}/k")
    response = conn.getresponse()
    assert response.status == 200
    with pytest.raises(http.client.IncompleteRead) as raised:
        response.read()
    assert raised.value.partial == data[:500]
    conn.close()

    body = s3_client(proxy, retries=0).get_object(Bucket=BUCKET, Key="k")["Body"]
    with pytest.raises(botocore.exceptions.BotoCoreError):
        body.read()
    proxy.wait_idle()
    record = proxy.records()[0]
    assert (record.fault, record.status, record.response_bytes) == ("truncate", 200, 1000)


def test_truncate_cuts_a_chunked_body(proxy, store):
    store.objects[f"/{BUCKET}/k"] = b"x"
    proxy.add_rule(Rule(op="ListObjectsV2", truncate=0.5))
    conn = connect(proxy)
    conn.request("GET", f"/{BUCKET}?list-type=2")
    response = conn.getresponse()
    with pytest.raises(http.client.IncompleteRead) as raised:
        response.read()
    conn.close()
    full = proxy.records()[0].response_bytes
    assert len(raised.value.partial) == full // 2


def test_drop_query_forwards_without_those_parameters(proxy, store):
    store.objects[f"/{BUCKET}/k"] = b"x"
    rule = proxy.add_rule(Rule(op="ListObjectsV2", drop_query=("list-type", "continuation-token"), times=1))
    conn = connect(proxy)
    for _ in range(2):
        status, answer = request(conn, "GET", f"/{BUCKET}?list-type=2&prefix=a%20b&continuation-token=t&max-keys=1")
        assert status == 200 and b"<Key>k</Key>" in answer
    conn.close()
    proxy.wait_idle()
    assert store.targets == [f"/{BUCKET}?prefix=a%20b&max-keys=1",
                             f"/{BUCKET}?list-type=2&prefix=a%20b&continuation-token=t&max-keys=1"]
    assert rule.fired == 1
    assert [(r.op, r.fault) for r in proxy.records()] == [("ListObjectsV2", "drop_query"), ("ListObjectsV2", None)]


def test_delay_adds_latency(proxy, store):
    store.objects[f"/{BUCKET}/k"] = b"payload"
    conn = connect(proxy)
    began = time.monotonic()
    assert request(conn, "HEAD", f"/{BUCKET}/k")[0] == 200
    quick = time.monotonic() - began
    rule = proxy.add_rule(Rule(op="HeadObject", delay=0.4))
    began = time.monotonic()
    assert request(conn, "HEAD", f"/{BUCKET}/k")[0] == 200
    slow = time.monotonic() - began
    conn.close()
    proxy.wait_idle()
    assert quick < 0.4 <= slow
    assert rule.fired == 1 and proxy.records()[1].fault == "delay"
    assert proxy.records()[1].duration >= 0.4


def _statuses_under(proxy: FaultProxy, rule: Rule, requests: int) -> list[int]:
    proxy.add_rule(rule)
    conn = connect(proxy)
    statuses = [request(conn, "GET", f"/{BUCKET}/k")[0] for _ in range(requests)]
    conn.close()
    proxy.clear_rules()
    return statuses


def test_probability_selection_is_reproducible_with_a_seed(proxy, store):
    store.objects[f"/{BUCKET}/k"] = b"payload"
    first = _statuses_under(proxy, Rule(op="GetObject", status=500, probability=0.5, seed=7), 40)
    again = _statuses_under(proxy, Rule(op="GetObject", status=500, probability=0.5, seed=7), 40)
    other = _statuses_under(proxy, Rule(op="GetObject", status=500, probability=0.5, seed=8), 40)
    assert first == again != other
    assert 5 < first.count(500) < 35


def test_every_and_times_select_matching_requests(proxy, store):
    store.objects[f"/{BUCKET}/k"] = b"payload"
    every = Rule(op="GetObject", key="k", status=503, every=3)
    assert _statuses_under(proxy, every, 7) == [200, 200, 503, 200, 200, 503, 200]
    capped = Rule(method="get", key=re.compile(r"^k$"), status=503, every=2, times=2)
    assert _statuses_under(proxy, capped, 7) == [200, 503, 200, 503, 200, 200, 200]
    assert (capped.matched, capped.fired) == (7, 2)
    unmatched = Rule(op={"PutObject", "HeadObject"}, status=503)
    assert _statuses_under(proxy, unmatched, 2) == [200, 200]
    assert unmatched.matched == 0


def test_unreachable_upstream_answers_502():
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]  # bound, not listening: refuses
        with FaultProxy(f"http://127.0.0.1:{port}") as proxy:
            conn = connect(proxy)
            status, body = request(conn, "GET", f"/{BUCKET}/k")
            conn.close()
    assert status == 502 and b"<Code>BadGateway</Code>" in body


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"status": 503, "stall": True}, {"truncate": 1.0}, {"every": 0, "stall": True}],
)
def test_rule_rejects_bad_configurations(kwargs):
    with pytest.raises(ValueError):
        Rule(**kwargs)
