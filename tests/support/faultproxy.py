"""A fault-injecting, request-counting HTTP reverse proxy for S3 traffic.

The filesystem daemon talks to the object store with boto3 from another
process, so the tests cannot patch its client. Instead they point its endpoint
at this proxy, which forwards every request byte-exact to the real server
(SigV4 signs the Host header, so nothing may be rewritten) while it

* records each request, classified by S3 operation name (``GetObject``,
  ``AppendObject``, ``UploadPart``...), so a test can assert how many requests
  of which kind the daemon made, and
* applies the faults described by `Rule` objects: error replies, connection
  resets before or after the server saw the request, latency, stalls and
  truncated responses.

Usage::

    with FaultProxy(rgw_endpoint) as proxy:
        s3 = boto3.client("s3", endpoint_url=proxy.endpoint, ...)
        rule = proxy.add_rule(Rule(op="GetObject", status=503, times=3))
        s3.get_object(Bucket="b", Key="k")          # succeeds on retry 4
        assert rule.fired == 3 and proxy.count("GetObject") == 4

Only path-style addressing (``/bucket/key``) is understood when classifying.
Each client connection gets its own thread and its own upstream connection,
both kept alive across requests; bodies stream through in 1 MiB pieces.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import http
import random
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit
from xml.sax.saxutils import escape as xml_escape

__all__ = ["FaultProxy", "Record", "Rule", "classify_op"]

_IO_CHUNK = 1 << 20  # relay bodies in pieces this large
_MAX_HEAD = 64 * 1024  # longest request or response head accepted
_GRACE = 1.0  # seconds stop() waits for sessions to end by themselves
_JOIN_TIMEOUT = 5.0  # seconds stop() waits for threads after forcing them

# --------------------------------------------------------------------------
# S3 operation names
# --------------------------------------------------------------------------

# For each method, the query parameters that name an operation, checked in
# order; None is the operation when no listed parameter is present.
_OBJECT_OPS: dict[str, tuple[tuple[str | None, str], ...]] = {
    "GET": (
        ("uploadId", "ListParts"),
        ("tagging", "GetObjectTagging"),
        ("acl", "GetObjectAcl"),
        ("attributes", "GetObjectAttributes"),
        ("retention", "GetObjectRetention"),
        ("legal-hold", "GetObjectLegalHold"),
        (None, "GetObject"),
    ),
    "HEAD": ((None, "HeadObject"),),
    "PUT": (
        ("uploadId", "UploadPart"),
        ("tagging", "PutObjectTagging"),
        ("acl", "PutObjectAcl"),
        ("append", "AppendObject"),
        ("retention", "PutObjectRetention"),
        ("legal-hold", "PutObjectLegalHold"),
        (None, "PutObject"),
    ),
    "POST": (
        ("uploads", "CreateMultipartUpload"),
        ("uploadId", "CompleteMultipartUpload"),
        ("restore", "RestoreObject"),
        ("select", "SelectObjectContent"),
    ),
    "DELETE": (
        ("uploadId", "AbortMultipartUpload"),
        ("tagging", "DeleteObjectTagging"),
        (None, "DeleteObject"),
    ),
}

_BUCKET_OPS: dict[str, tuple[tuple[str | None, str], ...]] = {
    "GET": (
        ("uploads", "ListMultipartUploads"),
        ("versions", "ListObjectVersions"),
        ("location", "GetBucketLocation"),
        ("versioning", "GetBucketVersioning"),
        ("acl", "GetBucketAcl"),
        ("tagging", "GetBucketTagging"),
        ("policy", "GetBucketPolicy"),
        ("lifecycle", "GetBucketLifecycleConfiguration"),
        ("cors", "GetBucketCors"),
        ("list-type", "ListObjectsV2"),
        (None, "ListObjects"),
    ),
    "HEAD": ((None, "HeadBucket"),),
    "PUT": (
        ("versioning", "PutBucketVersioning"),
        ("acl", "PutBucketAcl"),
        ("tagging", "PutBucketTagging"),
        ("policy", "PutBucketPolicy"),
        ("lifecycle", "PutBucketLifecycleConfiguration"),
        ("cors", "PutBucketCors"),
        (None, "CreateBucket"),
    ),
    "POST": (("delete", "DeleteObjects"),),
    "DELETE": (
        ("tagging", "DeleteBucketTagging"),
        ("policy", "DeleteBucketPolicy"),
        ("lifecycle", "DeleteBucketLifecycle"),
        ("cors", "DeleteBucketCors"),
        (None, "DeleteBucket"),
    ),
}

# A PUT carrying x-amz-copy-source copies server-side instead of uploading.
_COPY_OPS = {"PutObject": "CopyObject", "UploadPart": "UploadPartCopy"}


def classify_op(
    method: str, bucket: str, key: str, query: Mapping[str, str], headers: Mapping[str, str]
) -> str:
    """Name the S3 operation of a path-style request, or "Other".

    `headers` must have lower-case names. ``list-type=2`` listings are
    ``ListObjectsV2``, plain ones ``ListObjects``; RGW's ``PUT ?append`` is
    ``AppendObject``.
    """
    if not bucket:
        return "ListBuckets" if method == "GET" else "Other"
    table = _OBJECT_OPS if key else _BUCKET_OPS
    for param, op in table.get(method, ()):
        if param is None or param in query:
            if "x-amz-copy-source" in headers:
                return _COPY_OPS.get(op, op)
            return op
    return "Other"


# --------------------------------------------------------------------------
# Rules and records
# --------------------------------------------------------------------------

_FAULTS = ("status", "reset_before", "reset_after", "stall", "truncate", "drop_query")

# S3 error codes for the statuses a test is likely to inject.
_ERROR_CODES = {
    400: "InvalidRequest",
    403: "AccessDenied",
    404: "NoSuchKey",
    409: "OperationAborted",
    412: "PreconditionFailed",
    416: "InvalidRange",
    500: "InternalError",
    501: "NotImplemented",
    502: "BadGateway",
    503: "SlowDown",
}


@dataclass(eq=False)
class Rule:
    """Which requests to disturb, and how.

    Matching: every given criterion must hold. `op` is one operation name or
    a collection of them, `method` an HTTP method, `key` a substring of the
    object key or a compiled regular expression searched in it.

    Selection among matching requests: with none of `times`, `every` and
    `probability`, every matching request fires the rule. Given ones combine:
    only every `every`-th match qualifies, qualifying ones fire with
    `probability` (drawn from ``random.Random(seed)``, so a run is
    reproducible for the same request sequence), and at most `times` fire.

    Action (exactly one, or `delay` alone; `delay` also goes before any
    other):

    * `status`: answer this HTTP status with an S3 error body (`error_code`,
      by default the usual code: 503 SlowDown, 500 InternalError...) without
      forwarding;
    * `reset_before`: reset the client connection (TCP RST) without forwarding;
    * `reset_after`: forward, let the server answer, then reset the client
      connection instead of relaying the answer (the ambiguous failure);
    * `stall`: hold the request unanswered until the rule is removed or the
      proxy stops, then reset the client connection;
    * `truncate`: forward, then send the response head and only this fraction
      (0 <= truncate < 1) of the body, and close the client connection;
    * `drop_query`: forward without these query parameters (to play a server
      that ignores them, e.g. ``list-type`` on a server that knows only
      ListObjects V1). SigV4 signs the query, so this suits only requests
      signed with V2, which leaves ``list-type``, ``continuation-token``,
      ``start-after``, ``max-keys`` and the like unsigned;
    * `delay`: wait this many seconds before forwarding.

    The first rule (in the order added) that fires on a request applies.
    `matched` and `fired` count the requests that matched and fired it.
    """

    op: str | Collection[str] | None = None
    method: str | None = None
    key: str | re.Pattern[str] | None = None
    times: int | None = None
    every: int | None = None
    probability: float | None = None
    seed: int = 0
    status: int | None = None
    error_code: str | None = None
    reset_before: bool = False
    reset_after: bool = False
    stall: bool = False
    truncate: float | None = None
    drop_query: tuple[str, ...] = ()
    delay: float = 0.0
    matched: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        faults = self._faults()
        if len(faults) > 1:
            raise ValueError(f"a rule has one action, got {faults}")
        if not faults and not self.delay:
            raise ValueError("a rule needs an action")
        if self.truncate is not None and not 0 <= self.truncate < 1:
            raise ValueError("truncate is the fraction of the body sent, in [0, 1)")
        if self.every is not None and self.every < 1:
            raise ValueError("every must be at least 1")
        self._rng = random.Random(self.seed)

    @property
    def action(self) -> str:
        """The name of what this rule does ("status", "delay"...), as recorded."""
        faults = self._faults()
        return faults[0] if faults else "delay"

    def _faults(self) -> list[str]:
        given = {
            "status": self.status is not None,
            "reset_before": self.reset_before,
            "reset_after": self.reset_after,
            "stall": self.stall,
            "truncate": self.truncate is not None,
            "drop_query": bool(self.drop_query),
        }
        return [name for name in _FAULTS if given[name]]

    def _matches(self, record: Record) -> bool:
        if self.op is not None:
            ops = {self.op} if isinstance(self.op, str) else self.op
            if record.op not in ops:
                return False
        if self.method is not None and record.method != self.method.upper():
            return False
        if isinstance(self.key, str):
            return self.key in record.key
        return self.key is None or self.key.search(record.key) is not None

    def _fires(self, record: Record) -> bool:
        """Count a match and decide whether to fire; the proxy holds its lock."""
        if not self._matches(record):
            return False
        self.matched += 1
        if self.every is not None and self.matched % self.every:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        if self.probability is not None and self._rng.random() >= self.probability:
            return False
        self.fired += 1
        return True


# Keys zosfs keeps for itself at a bucket's root (zosfs.namespace.names):
# the change feed (.zosfs/feed/) and the metadata index (.zosfs/index/).
RESERVED_KEYS = (".zosfs/",)


def _reserved(record: Record) -> bool:
    return record.key.startswith(RESERVED_KEYS)


@dataclass
class Record:
    """One request seen by the proxy, added when its head arrives.

    `path` is the unquoted request path (``/bucket/some key``), `bucket` and
    `key` its path-style parts, `query` the query parameters (subresources
    such as ``append`` have the value ""), `headers` the request headers with
    lower-case names. `started` is a `time.monotonic()` value; `duration`
    stays None while the request is in flight. `status` and the response
    fields describe the answer the server (or the proxy's `status` fault)
    gave, whatever the client then received; `fault` names the action of
    `rule`, if one fired. `request_body` and `response_body` keep the first
    bytes (up to the proxy's capture limit) of bodies whose sizes so far are
    `request_bytes` and `response_bytes`; they grow as the bodies pass, each
    piece counted before it is forwarded. `connection` numbers the client
    connection, so requests sharing one were kept alive.
    """

    connection: int
    method: str
    path: str
    bucket: str
    key: str
    query: dict[str, str]
    headers: dict[str, str]
    op: str
    started: float
    duration: float | None = None
    status: int | None = None
    request_bytes: int = 0
    request_body: bytes = b""
    response_bytes: int = 0
    response_body: bytes = b""
    fault: str | None = None
    rule: Rule | None = None


_RECORD_FIELDS = frozenset(f.name for f in dataclasses.fields(Record))


# --------------------------------------------------------------------------
# HTTP/1.1 wire handling
# --------------------------------------------------------------------------


class _ProtocolError(Exception):
    """A peer sent something that is not HTTP/1.1 as this proxy understands it."""


class _PeerClosed(ConnectionError):
    """A peer closed its connection in the middle of a message."""


class _ResetClient(Exception):
    """End the session by resetting the client connection (a fault, or stop())."""


class _Wire:
    """A socket plus the bytes read from it ahead of what has been parsed.

    Reading a head may read into the body behind it. Keeping that read-ahead
    here, rather than in a BufferedReader, lets the relay drain it first and
    lets the Expect handling see whether the client already started its body.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._ahead = bytearray()

    def has_ahead(self) -> bool:
        return bool(self._ahead)

    def readline(self, *, eof_ok: bool = False) -> bytes:
        """Return one line with its end; b"" at a clean EOF if `eof_ok`."""
        while (end := self._ahead.find(b"\n")) < 0:
            if len(self._ahead) > _MAX_HEAD:
                raise _ProtocolError("line too long")
            data = self.sock.recv(65536)
            if not data:
                if eof_ok and not self._ahead:
                    return b""
                raise _PeerClosed("connection closed inside a message")
            self._ahead += data
        line = bytes(self._ahead[: end + 1])
        del self._ahead[: end + 1]
        return line

    def read_into(self, view: memoryview) -> int:
        """Fill the start of `view` with read-ahead or one recv; 0 at EOF."""
        if not self._ahead:
            return self.sock.recv_into(view)
        count = min(len(view), len(self._ahead))
        view[:count] = self._ahead[:count]
        del self._ahead[:count]
        return count

    def send(self, data: bytes | memoryview) -> None:
        self.sock.sendall(data)


class _Discard:
    """A relay destination that drops what it is sent (draining a body)."""

    def send(self, data: bytes | memoryview) -> None:
        pass


_DISCARD = _Discard()


def _readable(wires: list[_Wire], timeout: float | None) -> list[_Wire]:
    """The wires with bytes to read (or EOF), waiting up to `timeout` seconds."""
    ready = [wire for wire in wires if wire.has_ahead()]
    if ready:
        return ready
    poller = select.poll()
    for wire in wires:
        poller.register(wire.sock, select.POLLIN)
    events = poller.poll(None if timeout is None else timeout * 1000)
    fds = {fd for fd, _ in events}
    return [wire for wire in wires if wire.sock.fileno() in fds]


_LINGER_ZERO = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST


def _quietly(call: Callable[..., object], *args: object) -> None:
    """Call a socket method whose failure only means the socket is gone already."""
    with contextlib.suppress(OSError):
        call(*args)


def _reset(sock: socket.socket) -> None:
    """Close `sock` with a TCP RST instead of a FIN."""
    _quietly(sock.setsockopt, socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    sock.close()


@dataclass(frozen=True)
class _Head:
    """A request or response head: byte-exact for forwarding, parsed for decisions."""

    raw: bytes
    start: tuple[str, str, str]
    headers: tuple[tuple[str, str], ...]  # names lower-cased

    @classmethod
    def parse(cls, raw: bytes) -> _Head:
        first, *lines = raw.decode("latin-1").split("\n")
        start = first.rstrip("\r").split(" ", 2)
        if len(start) == 2:  # a response without a reason phrase
            start.append("")
        if len(start) != 3:
            raise _ProtocolError(f"bad start line {first!r}")
        headers = []
        for line in lines:
            name, colon, value = line.partition(":")
            if colon:
                headers.append((name.strip().lower(), value.strip()))
        return cls(raw, (start[0], start[1], start[2]), tuple(headers))

    def get(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key == name]
        return ", ".join(values) if values else None

    def tokens(self, name: str) -> set[str]:
        """The lower-cased comma-separated tokens of all `name` headers."""
        return {token.strip().lower() for token in (self.get(name) or "").split(",")}

    @property
    def status(self) -> int:
        try:
            return int(self.start[1])
        except ValueError:
            raise _ProtocolError(f"bad status {self.start[1]!r}") from None

    def with_connection_close(self) -> bytes:
        """The raw head, plus "Connection: close" if it does not say so."""
        if "close" in self.tokens("connection"):
            return self.raw
        return self.raw.rstrip(b"\r\n") + b"\r\nConnection: close\r\n\r\n"


def _read_head(wire: _Wire) -> _Head | None:
    """Read one message head; None if the peer closed before sending one."""
    first = wire.readline(eof_ok=True)
    if not first:
        return None
    lines = [first]
    size = len(first)
    while lines[-1] not in (b"\r\n", b"\n"):
        lines.append(wire.readline())
        size += len(lines[-1])
        if size > _MAX_HEAD:
            raise _ProtocolError("head too long")
    return _Head.parse(b"".join(lines))


class _Framing(NamedTuple):
    """How a body is delimited: "length" (0 for none), "chunked" or "close"."""

    kind: str
    length: int = 0


_NO_BODY = _Framing("length", 0)


def _content_length(head: _Head) -> int:
    try:
        return int(head.get("content-length") or 0)
    except ValueError:
        raise _ProtocolError("bad Content-Length") from None


def _request_framing(request: _Head) -> _Framing:
    if "chunked" in request.tokens("transfer-encoding"):
        return _Framing("chunked")
    return _Framing("length", _content_length(request))


def _response_framing(response: _Head, method: str) -> _Framing:
    """RFC 9112 section 6.3: which body follows `response` to a `method` request."""
    if method == "HEAD" or response.status in (204, 304) or response.status < 200:
        return _NO_BODY
    if "chunked" in response.tokens("transfer-encoding"):
        return _Framing("chunked")
    if response.get("content-length") is not None:
        return _Framing("length", _content_length(response))
    return _Framing("close")


def _persistent(version: str, head: _Head) -> bool:
    """Whether the connection carrying `head` stays open after its message."""
    tokens = head.tokens("connection")
    return "close" not in tokens and (version == "HTTP/1.1" or "keep-alive" in tokens)


def _chunk_size(line: bytes) -> int:
    try:
        return int(line.split(b";", 1)[0].strip(), 16)
    except ValueError:
        raise _ProtocolError(f"bad chunk size line {line!r}") from None


class _Tap:
    """Adds the body bytes going one way to a record, keeping the first `limit`.

    It sees each piece before it is forwarded, so a client never holds an
    answer whose bytes its record does not count yet.
    """

    def __init__(self, record: Record, side: str, limit: int) -> None:
        self._record = record
        self._count = f"{side}_bytes"
        self._body = f"{side}_body"
        self._limit = limit

    def __call__(self, data: bytes | memoryview) -> None:
        record = self._record
        setattr(record, self._count, getattr(record, self._count) + len(data))
        kept = getattr(record, self._body)
        if len(kept) < self._limit:
            setattr(record, self._body, kept + bytes(data[: self._limit - len(kept)]))


def _error_body(code: str, resource: str, request_id: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>Injected by faultproxy</Message>"
        f"<Resource>{xml_escape(resource)}</Resource><RequestId>{request_id}</RequestId></Error>"
    ).encode()


# --------------------------------------------------------------------------
# One client connection
# --------------------------------------------------------------------------


@dataclass
class _Exchange:
    """One request in progress on a session."""

    request: _Head
    record: Record
    request_tap: _Tap
    response_tap: _Tap


# What a session does with the server's answer: (exchange, upstream,
# response head, its framing, whether the request body was sent) -> whether
# the client connection stays open. Each reads the whole upstream body, so
# the upstream connection stays in step.
_Deliver = Callable[[_Exchange, _Wire, _Head, _Framing, bool], bool]


class _Session:
    """A client connection, served by its own thread with its own upstream connection."""

    def __init__(self, proxy: FaultProxy, sock: socket.socket, number: int) -> None:
        self._proxy = proxy
        self._number = number
        self._client = _Wire(sock)
        self._upstream: _Wire | None = None
        self._buffer = memoryview(bytearray(_IO_CHUNK))
        self._lock = threading.Lock()  # guards _aborted against _upstream being set
        self._aborted = False
        self.thread = threading.Thread(
            target=self._run, name=f"faultproxy-conn-{number}", daemon=True
        )

    def abort(self, *, hard: bool = False) -> None:
        """Wake the thread wherever it waits, so that it ends (for stop()).

        The client connection is to be reset, not closed: its linger is set
        to 0 and only its receiving side is shut, which sends nothing. Only a
        thread stuck sending to a client that does not read needs `hard`,
        which shuts both ways (sending a FIN first).
        """
        with self._lock:
            self._aborted = True
            upstream = self._upstream
        client = self._client.sock
        _quietly(client.setsockopt, socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        _quietly(client.shutdown, socket.SHUT_RDWR if hard else socket.SHUT_RD)
        if upstream is not None:
            _quietly(upstream.sock.shutdown, socket.SHUT_RDWR)

    def _run(self) -> None:
        reset = False
        try:
            while self._exchange():
                pass
        except (OSError, _ProtocolError, _ResetClient):
            reset = True  # the client sees a failure, not a clean close
        finally:
            if reset:
                _reset(self._client.sock)
            else:
                self._client.sock.close()
            self._drop_upstream()
            self._proxy._forget(self)

    def _exchange(self) -> bool:
        """Serve one request; return whether the client connection stays open."""
        request = _read_head(self._client)
        if request is None:
            return False
        if not request.start[2].startswith("HTTP/1."):
            raise _ProtocolError(f"bad request line {request.start!r}")
        record = self._proxy._begin(request, self._number)
        limit = self._proxy.capture_limit
        exchange = _Exchange(
            request, record, _Tap(record, "request", limit), _Tap(record, "response", limit)
        )
        try:
            return self._apply(exchange, self._proxy._select_rule(record))
        finally:
            self._proxy._finish(record)

    def _apply(self, exchange: _Exchange, rule: Rule | None) -> bool:
        if rule is None:
            return self._forward(exchange, self._deliver)
        if rule.delay and self._proxy._stopping.wait(rule.delay):
            raise _ResetClient("proxy stopped during a delay")
        action = rule.action
        if action == "status":
            assert rule.status is not None
            code = rule.error_code or _ERROR_CODES.get(rule.status, "InternalError")
            return self._reply_error(exchange, rule.status, code)
        if action == "reset_before":
            raise _ResetClient(action)
        if action == "stall":
            self._proxy._hold(rule)
            raise _ResetClient("stall released")
        if action == "reset_after":
            return self._forward(exchange, self._deliver_then_reset)
        if action == "truncate":
            assert rule.truncate is not None
            deliver = functools.partial(self._deliver_truncated, rule.truncate)
            return self._forward(exchange, deliver)
        if action == "drop_query":
            exchange.request = _without_query(exchange.request, rule.drop_query)
        return self._forward(exchange, self._deliver)

    # -- forwarding ---------------------------------------------------------

    def _forward(self, exchange: _Exchange, deliver: _Deliver) -> bool:
        """Send the request upstream and hand the answer to `deliver`."""
        upstream = self._upstream_wire()
        if upstream is None:
            return self._reply_error(exchange, 502, "BadGateway")
        upstream.send(exchange.request.raw)
        early = self._send_body(exchange, upstream)
        response = self._read_final_response(upstream) if early is None else early
        exchange.record.status = response.status
        framing = _response_framing(response, exchange.record.method)
        keep_client = deliver(exchange, upstream, response, framing, early is None)
        reusable = (
            early is None and framing.kind != "close" and _persistent(response.start[0], response)
        )
        if not reusable:
            self._drop_upstream()
        return keep_client

    def _upstream_wire(self) -> _Wire | None:
        """The upstream connection, (re)opened as needed; None if unreachable."""
        if self._upstream is not None and _readable([self._upstream], 0):
            self._drop_upstream()  # the server closed it while idle
        if self._upstream is None:
            try:
                sock = socket.create_connection(self._proxy._upstream_address)
            except OSError:
                return None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._aborted:
                    sock.close()
                    raise _ResetClient("proxy stopped while connecting")
                self._upstream = _Wire(sock)
        return self._upstream

    def _drop_upstream(self) -> None:
        with self._lock:
            upstream, self._upstream = self._upstream, None
        if upstream is not None:
            upstream.sock.close()

    def _send_body(self, exchange: _Exchange, upstream: _Wire) -> _Head | None:
        """Relay the request body; return the server's final answer if it came first.

        With ``Expect: 100-continue`` the client waits for the interim 100
        before sending its body, and the server may instead answer at once
        (then botocore never sends the body).
        """
        framing = _request_framing(exchange.request)
        if framing == _NO_BODY:
            return None
        if "100-continue" in exchange.request.tokens("expect"):
            early = self._await_continue(upstream)
            if early is not None:
                return early
        self._relay(self._client, upstream, framing, exchange.request_tap)
        return None

    def _await_continue(self, upstream: _Wire) -> _Head | None:
        """Relay interim answers until the body may flow; return a final answer."""
        while not self._client.has_ahead():
            if upstream not in _readable([self._client, upstream], None):
                return None  # the client stopped waiting and sends its body
            response = _read_head(upstream)
            if response is None:
                raise _PeerClosed("server closed before answering")
            if response.status >= 200:
                return response
            self._client.send(response.raw)
            if response.status == 100:
                return None
        return None

    def _read_final_response(self, upstream: _Wire) -> _Head:
        """Read the server's answer, relaying interim (1xx) ones to the client."""
        while True:
            response = _read_head(upstream)
            if response is None:
                raise _PeerClosed("server closed before answering")
            if response.status >= 200:
                return response
            self._client.send(response.raw)

    # -- delivering the answer ----------------------------------------------

    def _deliver(
        self,
        exchange: _Exchange,
        upstream: _Wire,
        response: _Head,
        framing: _Framing,
        body_sent: bool,
    ) -> bool:
        """Relay the answer unchanged; close if the request body never went."""
        keep = (
            body_sent
            and framing.kind != "close"
            and _persistent(exchange.request.start[2], exchange.request)
            and _persistent(response.start[0], response)
        )
        self._client.send(response.raw if body_sent else response.with_connection_close())
        self._relay(upstream, self._client, framing, exchange.response_tap)
        return keep

    def _deliver_then_reset(
        self,
        exchange: _Exchange,
        upstream: _Wire,
        response: _Head,
        framing: _Framing,
        body_sent: bool,
    ) -> bool:
        """Let the server finish answering, then reset the client instead."""
        self._relay(upstream, _DISCARD, framing, exchange.response_tap)
        raise _ResetClient("reset_after")

    def _deliver_truncated(
        self,
        fraction: float,
        exchange: _Exchange,
        upstream: _Wire,
        response: _Head,
        framing: _Framing,
        body_sent: bool,
    ) -> bool:
        """Send the head and `fraction` of the body, then close the client."""
        tap = exchange.response_tap
        if framing.kind == "length":
            shown = int(framing.length * fraction)
            self._client.send(response.raw)
            self._relay_exact(upstream, self._client, shown, tap)
            self._relay_exact(upstream, _DISCARD, framing.length - shown, tap)
            return False
        body = bytearray()

        def collect(data: bytes | memoryview) -> None:
            tap(data)
            body.extend(data)

        self._relay(upstream, _DISCARD, framing, collect)
        part = bytes(body[: int(len(body) * fraction)])
        if framing.kind == "chunked" and part:
            part = b"%x\r\n" % len(part) + part  # no closing chunk follows
        self._client.send(response.raw + part)
        return False

    def _reply_error(self, exchange: _Exchange, status: int, code: str) -> bool:
        """Answer with an S3 error without forwarding the request.

        A client waiting for 100-continue will not send its body, so the
        connection cannot stay in step and is closed; otherwise the body is
        drained and the connection kept.
        """
        request = exchange.request
        waiting = "100-continue" in request.tokens("expect")
        if not waiting:  # unread bytes would turn closing into a reset
            self._relay(self._client, _DISCARD, _request_framing(request), exchange.request_tap)
        keep = not waiting and _persistent(request.start[2], request)
        body = _error_body(code, exchange.record.path, f"faultproxy-{self._number}")
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            "Content-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"x-amz-request-id: faultproxy-{self._number}\r\n"
            + ("" if keep else "Connection: close\r\n")
            + "\r\n"
        ).encode("latin-1")
        exchange.record.status = status
        exchange.response_tap(body)
        self._client.send(head if exchange.record.method == "HEAD" else head + body)
        return keep

    # -- body relays --------------------------------------------------------

    def _relay(
        self, src: _Wire, dst: _Wire | _Discard, framing: _Framing, tap: Callable[..., None]
    ) -> None:
        if framing.kind == "length":
            self._relay_exact(src, dst, framing.length, tap)
        elif framing.kind == "chunked":
            self._relay_chunked(src, dst, tap)
        else:
            while count := src.read_into(self._buffer):
                tap(self._buffer[:count])
                dst.send(self._buffer[:count])

    def _relay_exact(
        self, src: _Wire, dst: _Wire | _Discard, length: int, tap: Callable[..., None]
    ) -> None:
        while length:
            count = src.read_into(self._buffer[: min(length, _IO_CHUNK)])
            if not count:
                raise _PeerClosed("connection closed inside a body")
            tap(self._buffer[:count])
            dst.send(self._buffer[:count])
            length -= count

    def _relay_chunked(self, src: _Wire, dst: _Wire | _Discard, tap: Callable[..., None]) -> None:
        """Relay a chunked body with its framing byte-exact; `tap` sees the payload."""
        while True:
            line = src.readline()
            dst.send(line)
            size = _chunk_size(line)
            if not size:
                break
            self._relay_exact(src, dst, size, tap)
            dst.send(src.readline())  # the CRLF closing the chunk
        while line not in (b"\r\n", b"\n"):  # trailer fields, then an empty line
            line = src.readline()
            dst.send(line)


# --------------------------------------------------------------------------
# The proxy
# --------------------------------------------------------------------------


def _join_all(threads: list[threading.Thread], timeout: float) -> list[threading.Thread]:
    """Join `threads` within `timeout` seconds in all; return those still alive."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [thread for thread in threads if thread.is_alive()]


def _without_query(request: _Head, names: Collection[str]) -> _Head:
    """The request with the query parameters `names` left out of its target."""
    method, target, version = request.start
    path, _, query = target.partition("?")
    kept = [part for part in query.split("&") if part and unquote(part.partition("=")[0]) not in names]
    new_target = path + ("?" + "&".join(kept) if kept else "")
    _, rest = request.raw.split(b"\r\n", 1)
    return _Head.parse(f"{method} {new_target} {version}".encode("latin-1") + b"\r\n" + rest)


def _make_record(request: _Head, connection: int) -> Record:
    method, target = request.start[0], request.start[1]
    url = urlsplit(target)
    path = unquote(url.path)
    bucket, _, key = path.lstrip("/").partition("/")
    query = dict(parse_qsl(url.query, keep_blank_values=True))
    headers: dict[str, str] = {}
    for name, value in request.headers:
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return Record(
        connection=connection,
        method=method,
        path=path,
        bucket=bucket,
        key=key,
        query=query,
        headers=headers,
        op=classify_op(method, bucket, key, query, headers),
        started=time.monotonic(),
    )


class FaultProxy:
    """A reverse proxy on 127.0.0.1 in front of `upstream` ("http://host:port").

    `capture_limit` bounds how many bytes of each body a `Record` keeps.
    """

    def __init__(self, upstream: str, *, capture_limit: int = 64 * 1024) -> None:
        url = urlsplit(upstream)
        if url.scheme != "http" or not url.hostname or url.path not in ("", "/"):
            raise ValueError(f"upstream must be http://host[:port], not {upstream!r}")
        self._upstream_address = (url.hostname, url.port or 80)
        self.capture_limit = capture_limit
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # rules or records changed
        self._stopping = threading.Event()
        self._rules: list[Rule] = []
        self._records: list[Record] = []
        self._sessions: set[_Session] = set()
        self._connections = 0
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._endpoint: str | None = None

    # -- lifecycle ----------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The URL to give clients, e.g. boto3's endpoint_url."""
        if self._endpoint is None:
            raise RuntimeError("the proxy has not been started")
        return self._endpoint

    def start(self) -> None:
        """Listen on a free loopback port and start accepting connections."""
        if self._endpoint is not None:
            raise RuntimeError("a FaultProxy starts once")
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        host, port = self._listener.getsockname()[:2]
        self._endpoint = f"http://{host}:{port}"
        self._accept_thread = threading.Thread(
            target=self._accept_loop, args=(self._listener,), name="faultproxy-accept", daemon=True
        )
        self._accept_thread.start()

    def stop(self) -> None:
        """Close the listener and every connection, and join all threads.

        Requests in flight fail on the client side (stalled ones are reset).
        """
        with self._changed:
            listener, self._listener = self._listener, None
            if listener is None:
                return
            self._stopping.set()
            self._changed.notify_all()  # releases stalls
        _quietly(listener.shutdown, socket.SHUT_RDWR)  # wakes accept() on Linux
        listener.close()
        assert self._accept_thread is not None
        self._accept_thread.join(_JOIN_TIMEOUT)
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.abort()
        lingering = _join_all([session.thread for session in sessions], _GRACE)
        for session in sessions:
            if session.thread in lingering:
                session.abort(hard=True)
        stuck = _join_all([self._accept_thread, *lingering], _JOIN_TIMEOUT)
        if stuck:
            raise RuntimeError(f"faultproxy threads did not stop: {[t.name for t in stuck]}")

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return  # stop() shut the listener down
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._stopping.is_set():
                    sock.close()
                    return
                self._connections += 1
                session = _Session(self, sock, self._connections)
                self._sessions.add(session)
            session.thread.start()

    # -- rules --------------------------------------------------------------

    def add_rule(self, rule: Rule) -> Rule:
        """Apply `rule` to requests from now on (after the rules already added)."""
        with self._changed:
            self._rules.append(rule)
        return rule

    def remove_rule(self, rule: Rule) -> None:
        """Stop applying `rule`; requests it stalls are released (reset)."""
        with self._changed:
            self._rules.remove(rule)
            self._changed.notify_all()

    def clear_rules(self) -> None:
        """Remove every rule, releasing stalled requests (reset)."""
        with self._changed:
            self._rules.clear()
            self._changed.notify_all()

    # -- statistics ---------------------------------------------------------

    def records(self, op: str | None = None, *, reserved: bool = False) -> list[Record]:
        """The requests seen since the start or `reset_stats()`, oldest first.
        Requests for zosfs's own reserved keys (the change feed, the metadata
        index: `RESERVED_KEYS`) are left out unless `reserved`: tests count
        what the mount did with the files they made."""
        with self._lock:
            return [r for r in self._records if (op is None or r.op == op) and (reserved or not _reserved(r))]

    def count(self, op: str | None = None, **filters: object) -> int:
        """How many requests of `op` were seen whose Record fields equal `filters`.

        E.g. ``count("PutObject", key="a/b", status=200)``.
        """
        self._check_filters(filters)
        with self._lock:
            return self._count_locked(op, filters)

    def wait_count(
        self, n: int, op: str | None = None, *, timeout: float = 10.0, **filters: object
    ) -> None:
        """Block until `count(op, **filters)` reaches `n`, e.g. until a stall holds.

        Raises TimeoutError after `timeout` seconds.
        """
        self._check_filters(filters)
        with self._changed:
            if not self._changed.wait_for(lambda: self._count_locked(op, filters) >= n, timeout):
                raise TimeoutError(
                    f"{self._count_locked(op, filters)} of {n} {op or 'requests'} seen"
                )

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until no request is in flight (every record has its duration).

        The proxy finishes an exchange a moment after the client got the
        answer (and, for `truncate`, after draining the rest from the server).
        Raises TimeoutError after `timeout` seconds.
        """
        with self._changed:
            if not self._changed.wait_for(
                lambda: all(r.duration is not None for r in self._records), timeout
            ):
                raise TimeoutError("requests still in flight")

    @property
    def stats(self) -> collections.Counter[str]:
        """The number of requests seen per operation name (not counting
        zosfs's reserved keys: see `records`)."""
        with self._lock:
            return collections.Counter(r.op for r in self._records if not _reserved(r))

    def reset_stats(self) -> None:
        """Forget the records (rules keep their counters)."""
        with self._lock:
            self._records.clear()

    @staticmethod
    def _check_filters(filters: Mapping[str, object]) -> None:
        unknown = set(filters) - _RECORD_FIELDS
        if unknown:
            raise TypeError(f"Record has no fields {sorted(unknown)}")

    def _count_locked(self, op: str | None, filters: Mapping[str, object]) -> int:
        # (Requests for zosfs's reserved keys are not counted: see `records`.)
        return sum(
            1
            for r in self._records
            if (op is None or r.op == op)
            and not _reserved(r)
            and all(getattr(r, name) == value for name, value in filters.items())
        )

    # -- called by sessions -------------------------------------------------

    def _begin(self, request: _Head, connection: int) -> Record:
        record = _make_record(request, connection)
        with self._changed:
            self._records.append(record)
            self._changed.notify_all()
        return record

    def _select_rule(self, record: Record) -> Rule | None:
        """The first rule firing on `record`, noted in it."""
        with self._lock:
            for rule in self._rules:
                if rule._fires(record):
                    record.fault, record.rule = rule.action, rule
                    return rule
        return None

    def _hold(self, rule: Rule) -> None:
        """Wait until `rule` is removed or the proxy stops."""
        with self._changed:
            self._changed.wait_for(lambda: rule not in self._rules or self._stopping.is_set())

    def _finish(self, record: Record) -> None:
        with self._changed:
            record.duration = time.monotonic() - record.started
            self._changed.notify_all()

    def _forget(self, session: _Session) -> None:
        with self._lock:
            self._sessions.discard(session)
