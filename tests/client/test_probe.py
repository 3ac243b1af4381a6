"""The mount-time capability probe, against the real local RGW: what each
kind of bucket allows, and one clear line for each way of failing."""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterator

import pytest
import trio

from tests.support.client import client_config
from tests.support.faultproxy import FaultProxy, Rule
from tests.support.rgw import SECOND_USER
from zosfs.zos import Capabilities, ClientConfig, ZosClient, ZosError, probe

config = client_config


def run_probe(cfg: ClientConfig) -> Capabilities:
    async def main() -> Capabilities:
        async with ZosClient(cfg) as zos:
            return await probe(zos)

    return trio.run(main)


def probe_error(cfg: ClientConfig) -> ZosError:
    with pytest.raises(ZosError) as caught:
        run_probe(cfg)
    err = caught.value
    assert "\n" not in str(err), "a probe failure is one line"
    return err


@pytest.fixture
def closed_port() -> int:
    """A loopback port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An endpoint that accepts connections (in the kernel's backlog) and
    never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_plain_bucket_allows_append(rgw, bucket):
    caps = run_probe(config(rgw.endpoint, bucket))
    assert caps == Capabilities(rgw.endpoint, bucket, None, False, True, "v2", "v2")
    assert caps.describe().splitlines() == [
        f"endpoint:    {rgw.endpoint}",
        f"bucket:      {bucket}",
        "versioning:  off",
        "object lock: off",
        "append:      available",
        "listing:     ListObjects V2 (the endpoint honours V2)",
    ]


@pytest.mark.parametrize(("list_api", "used"), [("auto", "V1"), ("v1", "V1"), ("v2", "V2")])
def test_a_server_that_knows_only_listobjects_v1_is_found(rgw, bucket, list_api, used):
    """Played by the proxy dropping list-type (unsigned with signature V2):
    RGW then answers V2 requests in V1 form, as a V1-only server does."""
    with FaultProxy(rgw.endpoint) as proxy:
        proxy.add_rule(Rule(op="ListObjectsV2", drop_query=("list-type",)))
        caps = run_probe(config(proxy.endpoint, bucket, signature="v2", list_api=list_api))
    assert (caps.list_api, caps.append) == ("v1", True)
    assert f"listing:     ListObjects {used} (the endpoint does not honour V2)" in caps.describe().splitlines()


def test_versioned_bucket_does_not_allow_append(rgw, versioned_bucket):
    caps = run_probe(config(rgw.endpoint, versioned_bucket))
    assert (caps.versioning, caps.object_lock, caps.append) == ("Enabled", False, False)
    assert "append:      unavailable" in caps.describe()


def test_suspended_versioning_does_not_allow_append(rgw, bucket, s3):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    caps = run_probe(config(rgw.endpoint, bucket))
    assert (caps.versioning, caps.append) == ("Suspended", False)


def test_locked_bucket_does_not_allow_append(rgw, locked_bucket):
    caps = run_probe(config(rgw.endpoint, locked_bucket))
    assert (caps.versioning, caps.object_lock, caps.append) == ("Enabled", True, False)
    assert "object lock: enabled" in caps.describe()


def test_missing_bucket(rgw):
    err = probe_error(config(rgw.endpoint, "zosfs-no-such-bucket"))
    assert err.errno == errno.ENOENT
    assert str(err) == f"mount 'zosfs-no-such-bucket': bucket 'zosfs-no-such-bucket' does not exist at {rgw.endpoint} (NotFound)"


def test_wrong_secret_key(rgw, bucket):
    err = probe_error(config(rgw.endpoint, bucket, secret_key="not-the-secret-key-at-all"))
    assert (err.errno, err.code) == (errno.EACCES, "SignatureDoesNotMatch")
    assert err.message == f"the server at {rgw.endpoint} rejected the credentials: the secret key is wrong (signature mismatch)"


def test_unknown_access_key(rgw, bucket):
    err = probe_error(config(rgw.endpoint, bucket, access_key="ZOSFSUNKNOWNKEY00000"))
    assert (err.errno, err.code) == (errno.EACCES, "InvalidAccessKeyId")
    assert err.message == f"the server at {rgw.endpoint} rejected the credentials: the access key is not known to the server"


def test_bucket_of_another_user(rgw, bucket):
    err = probe_error(config(rgw.endpoint, bucket, access_key=SECOND_USER.access_key, secret_key=SECOND_USER.secret_key))
    assert (err.errno, err.code) == (errno.EACCES, "AccessDenied")
    assert err.message == f"access to bucket {bucket!r} denied for these credentials"


def test_unreachable_endpoint(closed_port):
    endpoint = f"http://127.0.0.1:{closed_port}"
    start = time.monotonic()
    err = probe_error(config(endpoint, "any-bucket"))
    assert time.monotonic() - start < 5
    assert (err.errno, err.code) == (errno.EIO, "ConnectionFailed")
    assert err.message.startswith(f"cannot reach the endpoint {endpoint} (")
    assert "connection refused" in err.message
    assert err.message.endswith("; check the endpoint option and the network")


def test_silent_server_times_out_within_the_read_timeout(silent_server):
    start = time.monotonic()
    err = probe_error(config(silent_server, "any-bucket", read_timeout=0.5))
    elapsed = time.monotonic() - start
    assert (err.errno, err.code) == (errno.ETIMEDOUT, "Timeout")
    assert err.message.startswith(f"cannot reach the endpoint {silent_server} (the server did not answer in time")
    assert 0.5 <= elapsed < 1.5


def test_stalled_bucket_answer_times_out(rgw, bucket):
    """The server is up but HeadBucket hangs (fault proxy stall)."""
    with FaultProxy(rgw.endpoint) as proxy:
        stall = proxy.add_rule(Rule(op="HeadBucket", stall=True))
        start = time.monotonic()
        err = probe_error(config(proxy.endpoint, bucket, read_timeout=0.5))
        elapsed = time.monotonic() - start
        proxy.remove_rule(stall)
        assert proxy.count("HeadBucket") == 1
    assert (err.errno, err.code) == (errno.ETIMEDOUT, "Timeout")
    assert 0.5 <= elapsed < 1.5


def test_silent_server_fails_within_the_connect_timeout_not_the_read_timeout(silent_server):
    """A server that accepts and never answers is unreachable: the mount says so
    in connect_timeout, not after a 60 s read timeout."""
    start = time.monotonic()
    err = probe_error(config(silent_server, "any-bucket", connect_timeout=1.0, read_timeout=60.0))
    elapsed = time.monotonic() - start
    assert (err.errno, err.code) == (errno.ETIMEDOUT, "Timeout")
    assert "it accepted the connection but sent no answer within 1 s" in err.message
    assert 1.0 <= elapsed < 3


def test_https_against_the_plain_http_rgw_says_so(rgw, bucket):
    endpoint = rgw.endpoint.replace("http://", "https://")
    start = time.monotonic()
    err = probe_error(config(endpoint, bucket))
    assert time.monotonic() - start < 5
    assert err.code == "ConnectionFailed"
    assert "the server does not speak TLS; the endpoint is probably http://, not https://" in err.message
    assert "BrokenResource" not in err.message and "SSL" not in err.message


@pytest.fixture
def self_signed_endpoint(tmp_path) -> Iterator[str]:
    """A TLS server on loopback whose certificate no CA signed."""
    import ssl
    import subprocess
    import threading

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            try:
                context.wrap_socket(conn, server_side=True).close()
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.getsockname()[1]}"
    server.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
    server.close()
    thread.join(5)
    assert not thread.is_alive()


def test_certificate_that_does_not_verify_is_named(self_signed_endpoint):
    err = probe_error(config(self_signed_endpoint, "any-bucket"))
    assert err.code == "ConnectionFailed"
    assert "the server's TLS certificate was not accepted (self-signed certificate)" in err.message
    assert "-o no_verify_ssl" in err.message
