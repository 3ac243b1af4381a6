"""The two ways requests reach the object store, with retries and
statistics: the lean HTTP path and boto3.

- `HttpTransport` signs requests (`zosfs.zos.signing`) and sends them over the
  small HTTP client (`zosfs.zos.http`). It carries the requests a filesystem
  makes thousands of times; see `http.py` for why botocore is too expensive
  there.
- `BotoTransport` runs boto3 calls in worker threads, for the rare control
  requests whose XML is where botocore's models earn their keep. It is the
  only place that calls boto3 (`errors.from_boto` reads its exceptions).

Both raise only `ZosError` (translated in `zosfs.zos.errors`) and report every
request to the observer. Idempotent requests are retried with exponential
backoff and full jitter on throttling, 5xx and connection failures: here on
the HTTP path, by botocore's standard mode on the boto3 path. Appends are
never repeated blindly (see `zosfs.zos.append`).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import trio

from zosfs.zos.errors import CONNECTION_FAILED, TIMEOUT, backoff, from_answer, from_boto, from_code
from zosfs.zos.http import Body, ConnectFailed, FileRegion, HttpError, HttpPool, Response, TimedOut
from zosfs.zos.signing import V2_SUBRESOURCES, Signer, query_string, quote_path
from zosfs.zos.stats import Observer
from zosfs.zos.values import ClientConfig

V2_SIGNER = "zosfs-rgw-s3v2"  # botocore signature_version name of our V2 signer


def _observe(observer: Observer | None, op: str, start: float, code: str | None, nbytes: int) -> None:
    if observer is not None:
        observer(op, time.monotonic() - start, code, nbytes)


class HttpTransport:
    """Signed requests to one bucket over keep-alive connections, retried
    when the failure is transient."""

    def __init__(self, config: ClientConfig, observer: Observer | None = None) -> None:
        self.config = config
        self.bucket = config.bucket
        self._observer = observer
        self.http = HttpPool(
            config.endpoint,
            max_connections=config.max_connections,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            verify_tls=config.verify_tls,
        )
        self.signer = Signer(
            config.access_key, config.secret_key, config.region, config.signature, config.session_token
        )

    def close(self) -> None:
        self.http.close()

    def path(self, key: str) -> str:
        """The request path of `key` (of the bucket itself for "")."""
        return f"/{self.bucket}/{key}" if key else f"/{self.bucket}"

    async def request(
        self,
        op: str,
        method: str,
        key: str,
        *,
        query: dict[str, str | None] | None = None,
        headers: dict[str, str] | None = None,
        body: Body = None,
        into: bytearray | memoryview | None = None,
        attempts: int | None = None,
        error_key: str | None = None,
        retry_timeouts: bool = True,
    ) -> Response:
        """One request with retries for transient failures; 2xx (or 304, the
        answer to a conditional request that held) or ZosError."""
        query = query or {}
        path = self.path(key)
        target = quote_path(path) + (f"?{query_string(query)}" if query else "")
        attempts = attempts or self.config.max_attempts
        nbytes = body.length if isinstance(body, FileRegion) else len(body) if body is not None else 0
        for attempt in range(attempts):
            h = dict(headers or {})
            self.signer.sign(method, self.http.host_header, self.http.base_path + path, query, h)
            start = time.monotonic()
            try:
                resp = await self.http.request(method, target, h, body, into=into)
            except ConnectFailed as exc:
                err = from_code(CONNECTION_FAILED, None, op=op, key=error_key or key, detail=str(exc))
            except TimedOut:
                err = from_code(TIMEOUT, None, op=op, key=error_key or key)
            except HttpError as exc:
                err = from_code(CONNECTION_FAILED, None, op=op, key=error_key or key, detail=str(exc))
            else:
                if 200 <= resp.status < 300 or resp.status == 304:  # (304: If-None-Match held)
                    _observe(self._observer, op, start, None, nbytes + len(resp.body))
                    return resp
                err = from_answer(op, error_key or key, resp.status, resp.headers, resp.body,
                                  self.config.append_position_header)
            _observe(self._observer, op, start, err.code, nbytes)
            if not err.transient or attempt == attempts - 1 or (err.code == TIMEOUT and not retry_timeouts):
                raise err
            await trio.sleep(backoff(attempt))
        raise AssertionError("unreachable")


class BotoTransport:
    """boto3 calls on one bucket, in worker threads; the client is made on
    first use (it takes ~0.2 s to build, and most mounts never need it)."""

    def __init__(self, config: ClientConfig, observer: Observer | None = None) -> None:
        self.config = config
        self._observer = observer
        self._threads = trio.CapacityLimiter(max(4, config.max_connections // 4))
        self._lock = threading.Lock()
        self._client: Any = None
        self._presigner: Any = None

    def client(self) -> Any:
        """The boto3 client, made on first use."""
        with self._lock:
            if self._client is None:
                c = self.config
                self._client = self._make(
                    signature_version=rgw_v2_signer() if c.signature == "v2" else "s3v4",
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    retries={"mode": "standard", "max_attempts": c.max_attempts},
                    max_pool_connections=max(4, c.max_connections // 4),
                    connect_timeout=c.connect_timeout,
                    read_timeout=c.read_timeout,
                )
            return self._client

    def presigner(self) -> Any:
        """A boto3 client that only presigns (no request is ever sent with it):
        SigV4, or with signature=v2 botocore's standard V2 query signing,
        which agrees with RGW for plain GETs and POST policies (the
        sub-resource quirks of `rgw_v2_signer` concern other requests)."""
        with self._lock:
            if self._presigner is None:
                self._presigner = self._make(signature_version="s3" if self.config.signature == "v2" else "s3v4")
            return self._presigner

    def _make(self, **config: Any) -> Any:
        """A boto3 S3 client for this bucket's endpoint and credentials (path
        style), with these botocore Config settings."""
        import boto3
        import botocore.config

        c = self.config
        return boto3.session.Session(
            aws_access_key_id=c.access_key,
            aws_secret_access_key=c.secret_key,
            aws_session_token=c.session_token,
            region_name=c.region,
        ).client(
            "s3",
            endpoint_url=c.endpoint,
            verify=c.verify_tls,
            config=botocore.config.Config(s3={"addressing_style": "path"}, **config),
        )

    async def call(self, op: str, key: str, method: str, **params: Any) -> dict[str, Any]:
        """Call boto3's `method` on the bucket in a worker thread; ZosError on failure."""

        def call() -> dict[str, Any]:
            return getattr(self.client(), method)(Bucket=self.config.bucket, **params)

        start = time.monotonic()
        try:
            result = await trio.to_thread.run_sync(call, limiter=self._threads)
        except Exception as exc:
            err = from_boto(exc, op, key)
            _observe(self._observer, op, start, err.code, 0)
            raise err from None
        _observe(self._observer, op, start, None, 0)
        return result


def rgw_v2_signer() -> str:
    """Register (once) and name botocore's V2 signer made to agree with RGW.

    botocore's HmacV1Auth signs sub-resources that RGW does not (so e.g.
    GetObjectLockConfiguration and RestoreObject fail with
    SignatureDoesNotMatch), and signs bucket requests as "/bucket/?sub"
    while it sends "/bucket?sub"; RGW checks what was sent.
    """
    import botocore.auth

    if V2_SIGNER not in botocore.auth.AUTH_TYPE_MAPS:

        class RgwHmacV1Auth(botocore.auth.HmacV1Auth):
            QSAOfInterest = sorted(V2_SUBRESOURCES)

            def canonical_resource(self, split: Any, auth_path: str | None = None) -> str:
                return super().canonical_resource(split, auth_path=None)

        botocore.auth.AUTH_TYPE_MAPS[V2_SIGNER] = RgwHmacV1Auth
    return V2_SIGNER
