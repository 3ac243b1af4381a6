"""A small HTTP/1.1 client on trio sockets, for the object-store data path.

Why not botocore for everything: a HEAD through botocore costs about 1.6 ms of
CPU (endpoint rules, validation, events, parsing) and a thread hop; this
client does it in about 0.1 ms in the trio loop itself. Listing a directory of
10,000 files needs 10,000 HEADs, so that difference decides whether `ls -l`
takes 2 s or 20 s on a 2-core machine shared with the server.

It does only what S3 needs: keep-alive connections in a pool, request bodies
of known length (bytes or a region of a file, sent with sendfile on plain
TCP), responses with Content-Length or chunked bodies, read into
caller-provided buffers without extra copies, timeouts, and TLS.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass

import trio

MAX_HEAD = 64 * 1024
QUICKACK = getattr(socket, "TCP_QUICKACK", None)
IDLE_LIMIT = 30.0  # seconds; servers drop idle connections after a minute or so


class HttpError(Exception):
    """The exchange failed before a complete answer arrived."""


class ConnectFailed(HttpError):
    """No connection could be made: the request was certainly not sent."""


class TimedOut(HttpError):
    pass


class LocalFileError(OSError):
    """The local file a request body comes from could not be read whole
    (the caller's staging is short or failing): not the server's fault, and
    not retried as if it were."""


@dataclass(frozen=True)
class FileRegion:
    """A request body that is a byte range of an open file."""

    fd: int
    offset: int
    length: int


Body = bytes | bytearray | memoryview | FileRegion | None
SMALL_BODY = 64 * 1024  # bodies up to this size go out in one send with the request's head
TLS_PIECE = 1024 * 1024  # a TLS send is bounded per piece of this size (see Connection.send)


def read_region(region: FileRegion) -> bytes:
    """The bytes of a small file region (a request body), or LocalFileError."""
    try:
        data = os.pread(region.fd, region.length, region.offset)
    except OSError as err:
        raise LocalFileError(err.errno, f"reading the request body: {err.strerror}") from None
    if len(data) != region.length:
        raise LocalFileError(errno.EIO, "the file is shorter than the request body")
    return data


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names
    body: bytes | bytearray | memoryview


class Connection:
    """One keep-alive connection. Plain TCP uses the socket directly (recv_into,
    sendfile); TLS goes through a trio.SSLStream."""

    def __init__(self, sock: trio.socket.SocketType, tls: trio.SSLStream | None, timeout: float = 60.0) -> None:
        self.sock = sock
        self.tls = tls
        # Seconds a send may wait for the server to take more bytes: a server
        # that stops reading a request body (RGW does, with a full OSD) would
        # otherwise hold the sender, and the FUSE request behind it, forever.
        self.timeout = timeout
        self.buffer = bytearray()  # bytes received beyond the last response
        self.scratch = bytearray(MAX_HEAD)  # receive buffer for heads and chunk lines
        self.last_used = time.monotonic()
        self.reused = False

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of `data`; trio.TooSlowError if the server takes none of
        it for `timeout` seconds."""
        view = memoryview(data)
        if self.tls is not None:
            while view:
                piece = view[:TLS_PIECE]
                with trio.fail_after(self.timeout):
                    await self.tls.send_all(piece)
                view = view[len(piece):]
            return
        while view:
            with trio.fail_after(self.timeout):
                sent = await self.sock.send(view)
            view = view[sent:]

    async def send_file(self, region: FileRegion) -> None:
        if self.tls is not None:
            # TLS needs the bytes in user space anyway.
            offset, left = region.offset, region.length
            while left:
                try:
                    chunk = os.pread(region.fd, min(left, 1 << 20), offset)
                except OSError as err:
                    raise LocalFileError(err.errno, f"reading the request body: {err.strerror}") from None
                if not chunk:
                    raise LocalFileError(errno.EIO, "the file is shorter than the request body")
                await self.send(chunk)
                offset += len(chunk)
                left -= len(chunk)
            return
        offset, left = region.offset, region.length
        fileno = self.sock.fileno()
        while left:
            with trio.fail_after(self.timeout):
                await trio.lowlevel.wait_writable(self.sock)
            try:
                sent = os.sendfile(fileno, region.fd, offset, left)
            except BlockingIOError:
                continue
            if sent == 0:
                raise LocalFileError(errno.EIO, "the file is shorter than the request body")
            offset += sent
            left -= sent

    async def recv_into(self, view: memoryview) -> int:
        """Receive into `view`; returns 0 at end of stream."""
        if self.buffer:
            n = min(len(view), len(self.buffer))
            view[:n] = self.buffer[:n]
            del self.buffer[:n]
            return n
        if self.tls is not None:
            data = await self.tls.receive_some(len(view))
            view[: len(data)] = data
            return len(data)
        return await self.sock.recv_into(view)

    def quick_ack(self) -> None:
        """ACK the answer's segments at once. Servers (RGW among them) send a
        response's head and body in separate writes; with Nagle on their side
        and delayed ACKs on ours, a small body waits 40 ms for our ACK. Linux
        clears this flag by itself, so it is set before every answer."""
        if self.tls is None and QUICKACK is not None:
            try:
                self.sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


class HttpPool:
    """Keep-alive connections to one endpoint, at most `max_connections` at once."""

    def __init__(
        self,
        endpoint: str,
        *,
        max_connections: int = 32,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        verify_tls: bool | str = True,
    ) -> None:
        url = urllib.parse.urlsplit(endpoint)
        self.tls = url.scheme == "https"
        self.hostname = url.hostname or "localhost"
        self.port = url.port or (443 if self.tls else 80)
        default_port = self.port == (443 if self.tls else 80)
        self.host_header = self.hostname if default_port else f"{self.hostname}:{self.port}"
        self.base_path = url.path.rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.slots = trio.Semaphore(max_connections)
        self.idle: list[Connection] = []
        self.ssl_context: ssl.SSLContext | None = None
        if self.tls:
            self.ssl_context = ssl.create_default_context(cafile=verify_tls if isinstance(verify_tls, str) else None)
            if verify_tls is False:
                self.ssl_context.check_hostname = False
                self.ssl_context.verify_mode = ssl.CERT_NONE

    async def _connect(self) -> Connection:
        try:
            with trio.fail_after(self.connect_timeout):
                infos = await trio.socket.getaddrinfo(self.hostname, self.port, type=socket.SOCK_STREAM)
                family, type_, proto, _, addr = infos[0]
                sock = trio.socket.socket(family, type_, proto)
                try:
                    await sock.connect(addr)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    tls = None
                    if self.ssl_context is not None:
                        tls = trio.SSLStream(trio.SocketStream(sock), self.ssl_context, server_hostname=self.hostname)
                        await tls.do_handshake()
                except BaseException:
                    sock.close()
                    raise
        except trio.TooSlowError:
            raise ConnectFailed(f"connecting to {self.hostname}:{self.port} timed out") from None
        except (OSError, ssl.SSLError, trio.BrokenResourceError) as err:
            raise ConnectFailed(f"cannot connect to {self.hostname}:{self.port}: {_reason(err)}") from None
        return Connection(sock, tls, self.read_timeout)

    def _take_idle(self) -> Connection | None:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if now - conn.last_used < IDLE_LIMIT:
                conn.reused = True
                return conn
            conn.close()
        return None

    async def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: Body = None,
        *,
        into: bytearray | memoryview | None = None,
    ) -> Response:
        """Send one request and read the whole answer.

        `target` is the path and query as they go on the wire (already
        encoded), relative to the endpoint. With `into`, a successful body is
        read into that buffer (which must be large enough) and `body` of the
        response is a memoryview of the part filled.
        """
        async with self.slots:
            conn = self._take_idle() or await self._connect()
            done = False
            try:
                response = await self._exchange(conn, method, target, headers, body, into)
                done = True
            except trio.TooSlowError:
                raise TimedOut(f"{method} timed out after {self.read_timeout:g} s") from None
            except LocalFileError:
                raise
            except (OSError, ssl.SSLError, trio.BrokenResourceError, trio.ClosedResourceError) as err:
                raise HttpError(f"connection failed: {_reason(err)}") from None
            finally:
                if not done:
                    conn.close()
            if response.headers.get("connection", "").lower() == "close":
                conn.close()
            else:
                conn.last_used = time.monotonic()
                self.idle.append(conn)
            return response

    async def _exchange(
        self, conn: Connection, method: str, target: str, headers: dict[str, str],
        body: Body, into: bytearray | memoryview | None,
    ) -> Response:
        length = body.length if isinstance(body, FileRegion) else len(body) if body is not None else 0
        if body is not None or method in ("PUT", "POST"):
            headers["content-length"] = str(length)
        lines = [f"{method} {self.base_path}{target} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
        if isinstance(body, FileRegion) and length <= SMALL_BODY:
            # (One send with the head: a second send, or sendfile, costs a
            # system call and a loopback segment each, on every small file.)
            body = read_region(body)
        if isinstance(body, (bytes, bytearray)) and len(body) <= SMALL_BODY:
            await conn.send(head + body)
        else:
            await conn.send(head)
            if isinstance(body, FileRegion):
                await conn.send_file(body)
            elif body is not None and length:
                await conn.send(body)
        if method != "HEAD":  # (no body comes after a HEAD's head: nothing to wait 40 ms for)
            conn.quick_ack()
        with trio.fail_after(self.read_timeout):
            status, reason, resp_headers = await self._read_head(conn)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return Response(status, reason, resp_headers, b"")
        target_buffer = into if (into is not None and 200 <= status < 300) else None
        data = await self._read_body(conn, resp_headers, target_buffer)
        return Response(status, reason, resp_headers, data)

    async def _fill(self, conn: Connection, scratch: bytearray) -> None:
        """Receive more bytes into conn.buffer (for parsing heads and chunks)."""
        view = memoryview(scratch)
        if conn.tls is not None:
            data = await conn.tls.receive_some(len(scratch))
            n = len(data)
            view[:n] = data
        else:
            n = await conn.sock.recv_into(view)
        if n == 0:
            raise HttpError("the server closed the connection" + (" (stale keep-alive connection)" if conn.reused else ""))
        conn.buffer += view[:n]

    async def _read_head(self, conn: Connection) -> tuple[int, str, dict[str, str]]:
        scratch = conn.scratch
        while True:
            end = conn.buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(conn.buffer) > MAX_HEAD:
                raise HttpError("response head too large")
            await self._fill(conn, scratch)
        raw = bytes(conn.buffer[:end]).decode("latin-1")
        del conn.buffer[: end + 4]
        status_line, *header_lines = raw.split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise HttpError(f"not an HTTP response: {status_line[:80]!r}")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return int(parts[1]), parts[2] if len(parts) > 2 else "", headers

    async def _read_body(
        self, conn: Connection, headers: dict[str, str], into: bytearray | memoryview | None
    ) -> bytes | bytearray | memoryview:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            data = await self._read_chunked(conn)
            if into is not None:
                into[: len(data)] = data
                return memoryview(into)[: len(data)]
            return data
        if "content-length" not in headers:
            headers["connection"] = "close"
            return await self._read_to_eof(conn)
        length = int(headers["content-length"])
        if into is None:
            into = bytearray(length)
        elif len(into) < length:
            raise HttpError(f"response body of {length} bytes does not fit the buffer of {len(into)}")
        view = memoryview(into)[:length]
        got = 0
        while got < length:
            with trio.fail_after(self.read_timeout):
                n = await conn.recv_into(view[got:])
            if n == 0:
                raise HttpError(f"response body cut short at {got} of {length} bytes")
            got += n
        return into if len(into) == length else view

    async def _read_chunked(self, conn: Connection) -> bytearray:
        scratch = conn.scratch
        out = bytearray()
        while True:
            while (eol := conn.buffer.find(b"\r\n")) < 0:
                with trio.fail_after(self.read_timeout):
                    await self._fill(conn, scratch)
            size = int(bytes(conn.buffer[:eol]).split(b";")[0], 16)
            del conn.buffer[: eol + 2]
            while len(conn.buffer) < size + 2:
                with trio.fail_after(self.read_timeout):
                    await self._fill(conn, scratch)
            out += conn.buffer[:size]
            del conn.buffer[: size + 2]
            if size == 0:
                return out

    async def _read_to_eof(self, conn: Connection) -> bytearray:
        out = bytearray()
        scratch = bytearray(1 << 20)
        view = memoryview(scratch)
        while True:
            with trio.fail_after(self.read_timeout):
                n = await conn.recv_into(view)
            if n == 0:
                return out
            out += view[:n]

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


# OpenSSL's reasons when the peer answered the handshake with something that
# is not TLS at all: most often a plain-HTTP server addressed as https://.
NOT_TLS = {"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "HTTP_REQUEST", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"}


def _reason(err: BaseException) -> str:
    """Why a connection failed, in words a user can act on (never the name of
    an internal class: trio wraps TLS failures in BrokenResourceError)."""
    if isinstance(err, trio.BrokenResourceError) and err.__cause__ is not None:
        err = err.__cause__
    if isinstance(err, ssl.SSLCertVerificationError):
        return (f"the server's TLS certificate was not accepted ({err.verify_message}); "
                "fix the certificate or, for a test server, use -o no_verify_ssl")
    if isinstance(err, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return "the server closed the connection during the TLS handshake (is the endpoint http://, not https://?)"
    if isinstance(err, ssl.SSLError):  # before OSError: its errno is OpenSSL's, not the system's
        if err.reason in NOT_TLS:
            return "the server does not speak TLS; the endpoint is probably http://, not https://"
        return f"TLS handshake failed ({err.reason or err})"
    if isinstance(err, OSError) and err.errno is not None:
        return os.strerror(err.errno) if err.errno != errno.ECONNREFUSED else "connection refused"
    if isinstance(err, (trio.BrokenResourceError, trio.ClosedResourceError)):
        return "the connection was broken"
    return str(err) or type(err).__name__
