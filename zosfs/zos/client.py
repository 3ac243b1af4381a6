"""The ZOS client: typed, async operations on one bucket.

Two transports sit behind one interface:

- the data path (HEAD, GET, PUT, append, DELETE, delete-many, LIST, COPY,
  multipart create/part/part-copy/complete/abort) goes through `zosfs.zos.http`, a
  small HTTP client on trio sockets, signed by `zosfs.zos.signing`. These are
  the requests a filesystem makes thousands of times; see `http.py` for why
  botocore is too expensive there.
- the control path (tags, ACLs, retention, legal hold, restore, bucket
  versioning and object lock, listing uploads and parts) goes
  through boto3, run in worker threads. These requests are rare and their
  XML is where botocore's models earn their keep. This module and
  `zosfs.zos.probe` are the only places that touch boto3.

Every method raises only `ZosError`. Idempotent requests are retried with
exponential backoff and full jitter on throttling, 5xx and connection
failures; appends are never repeated blindly (see `append`).
"""

from __future__ import annotations

import base64
import calendar
import datetime as dt
import email.utils
import hashlib
import logging
import os
import random
import re
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any
from xml.sax.saxutils import escape

import trio

from zosfs.zos.errors import CONNECTION_FAILED, TIMEOUT, ZosError, from_code
from zosfs.zos.http import Body, ConnectFailed, FileRegion, HttpError, HttpPool, Response, TimedOut
from zosfs.zos.signing import V2_SUBRESOURCES, Signer, query_string, quote_path

log = logging.getLogger(__name__)

MiB = 1024 * 1024
GiB = 1024 * MiB
MAX_SINGLE_COPY = 5 * GiB  # above this a copy must go part by part
MULTIPART_COPY_PART = 512 * MiB
DELETE_BATCH = 1000  # the most keys one DeleteObjects request may carry
V2_SIGNER = "zosfs-rgw-s3v2"  # botocore signature_version name of our V2 signer


@dataclass(frozen=True)
class ClientConfig:
    """How to reach the object store. Built once by the daemon from options."""

    endpoint: str
    bucket: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str = "us-east-1"
    signature: str = "v4"  # or "v2"
    max_connections: int = 32
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_attempts: int = 5
    append_position_header: str = "x-rgw-next-append-position"
    verify_tls: bool | str = True


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD (or the headers of a GET) says about one object."""

    key: str
    size: int
    etag: str
    last_modified: float
    metadata: dict[str, str]
    content_type: str | None = None
    storage_class: str = "STANDARD"
    appendable: bool = False
    next_append_position: int | None = None
    version_id: str | None = None
    restore: str | None = None
    tag_count: int = 0
    lock_mode: str | None = None
    lock_until: float | None = None
    legal_hold: bool = False


@dataclass(frozen=True)
class ListEntry:
    """One object in a listing (listings carry no user metadata)."""

    key: str
    size: int
    etag: str
    last_modified: float
    storage_class: str = "STANDARD"


@dataclass(frozen=True)
class ListPage:
    entries: list[ListEntry]
    prefixes: list[str]
    next_token: str | None  # continue with this; None when this was the last page


@dataclass(frozen=True)
class Grant:
    permission: str  # FULL_CONTROL, READ, WRITE, READ_ACP, WRITE_ACP
    grantee_type: str  # CanonicalUser, Group, AmazonCustomerByEmail
    grantee: str  # canonical id, group URI or e-mail
    display_name: str = ""


@dataclass(frozen=True)
class Acl:
    owner_id: str
    owner_name: str
    grants: tuple[Grant, ...]


@dataclass(frozen=True)
class Upload:
    key: str
    upload_id: str
    initiated: float


@dataclass(frozen=True)
class Part:
    number: int
    etag: str
    size: int = 0


@dataclass(frozen=True)
class Retention:
    mode: str  # GOVERNANCE or COMPLIANCE
    until: float  # epoch seconds


@dataclass(frozen=True)
class Appended:
    """The answer to an append: the object's new length and the MD5 (ETag) of
    the appended bytes. RGW chains the object's ETag from these (see
    `next_append_etag`), so a writer that knows the ETag before its append
    knows the one after without asking."""

    position: int
    etag: str


def next_append_etag(previous: str | None, chunk: str) -> str:
    """The object's ETag after an append of a chunk with MD5 `chunk`, given
    the ETag before it (None or "" when the append creates the object).

    RGW chains them: after the first append the ETag is the chunk's MD5;
    after the n-th it is md5(binary previous ETag (without its "-k") +
    binary chunk MD5)-n. Zero-length appends count too. (For n = 2 this
    equals the multipart formula md5(MD5s)-2; from n = 3 on it does not.)
    """
    if not previous:
        return chunk
    digest, _, count = previous.partition("-")
    n = int(count) + 1 if count else 2
    return f"{hashlib.md5(bytes.fromhex(digest) + bytes.fromhex(chunk)).hexdigest()}-{n}"


@dataclass(frozen=True)
class DeleteFailure:
    key: str
    code: str
    message: str


GRANT_HEADERS = {
    "FULL_CONTROL": "x-amz-grant-full-control",
    "READ": "x-amz-grant-read",
    "WRITE": "x-amz-grant-write",
    "READ_ACP": "x-amz-grant-read-acp",
    "WRITE_ACP": "x-amz-grant-write-acp",
}
_GRANTEE_FIELD = {"CanonicalUser": "id", "Group": "uri", "AmazonCustomerByEmail": "emailAddress"}


@dataclass
class WriteOptions:
    """What a new object (PUT, multipart, append, copy with REPLACE) carries.

    RGW replaces all of this on every append, so appends send it in full.
    """

    metadata: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    tags: dict[str, str] | None = None
    acl: str | None = None  # canned ACL
    grants: tuple[Grant, ...] | None = None  # explicit grants (replace the canned ACL)
    storage_class: str | None = None

    def headers(self) -> dict[str, str]:
        h = {f"x-amz-meta-{k.lower()}": v for k, v in self.metadata.items()}
        if self.content_type:
            h["content-type"] = self.content_type
        if self.tags:
            h["x-amz-tagging"] = urllib.parse.urlencode(self.tags, quote_via=urllib.parse.quote)
        if self.grants:
            by_permission: dict[str, list[str]] = {}
            for g in self.grants:
                by_permission.setdefault(g.permission, []).append(f'{_GRANTEE_FIELD[g.grantee_type]}="{g.grantee}"')
            for permission, grantees in by_permission.items():
                h[GRANT_HEADERS[permission]] = ", ".join(grantees)
        elif self.acl:
            h["x-amz-acl"] = self.acl
        if self.storage_class and self.storage_class != "STANDARD":
            h["x-amz-storage-class"] = self.storage_class
        return h


Observer = Callable[[str, float, str | None, int], None]
"""Called after every request with (operation, seconds, error code or None, payload bytes)."""


def _unquote_etag(value: str | None) -> str:
    return (value or "").strip('"')


_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def _http_date(value: str | None) -> float:
    if not value:
        return 0.0
    # Every response carries an IMF-fixdate ("Wed, 25 Nov 2026 00:51:28 GMT");
    # parsing it by position costs a tenth of email.utils, which showed in
    # profiles of `ls -l` (one HEAD per file).
    parts = value.split()
    if len(parts) == 6 and parts[5] == "GMT" and parts[2] in _MONTHS and len(parts[4]) == 8:
        try:
            hms = parts[4]
            return float(calendar.timegm((int(parts[3]), _MONTHS[parts[2]], int(parts[1]),
                                          int(hms[0:2]), int(hms[3:5]), int(hms[6:8]), 0, 0, 0)))
        except ValueError:
            pass
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return 0.0


def _iso_date(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


# Characters that XML 1.0 cannot carry, not even as character references.
_XML_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml(body: bytes | bytearray | memoryview) -> ET.Element:
    root = ET.fromstring(bytes(body))
    for el in root.iter():
        if "}" in el.tag:
            el.tag = el.tag.rsplit("}", 1)[1]
    return root


def _text(el: ET.Element, path: str, default: str = "") -> str:
    found = el.find(path)
    return found.text or default if found is not None else default


def _header_text(value: str) -> str:
    """Headers arrive as latin-1; metadata written by other tools may be UTF-8."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


async def _md5_hex(body: Body) -> str:
    """The MD5 of a request body (the ETag of an append whose answer was lost)."""
    if not isinstance(body, FileRegion):
        return hashlib.md5(body or b"").hexdigest()

    def digest() -> str:
        md5, offset, left = hashlib.md5(), body.offset, body.length
        while left:
            chunk = os.pread(body.fd, min(left, MiB), offset)
            if not chunk:
                break
            md5.update(chunk)
            offset += len(chunk)
            left -= len(chunk)
        return md5.hexdigest()

    return await trio.to_thread.run_sync(digest)


def _backoff(attempt: int) -> float:
    """Full jitter, as botocore's standard mode: random in [0, min(20, 0.1*2^n))."""
    return random.random() * min(20.0, 0.1 * 2**attempt)


class ZosClient:
    """Typed operations on one bucket of a ZOS (or RGW) endpoint.

    Use from a single trio run: `async with ZosClient(cfg) as zos: ...`.
    """

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
        self._threads = trio.CapacityLimiter(max(4, config.max_connections // 4))
        self._boto_lock = threading.Lock()
        self._boto_client: Any = None
        # Tags of multipart uploads in progress, set when they complete (RGW
        # ignores x-amz-tagging on CreateMultipartUpload).
        self._upload_tags: dict[str, dict[str, str]] = {}

    async def __aenter__(self) -> ZosClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # -- the lean transport ------------------------------------------------

    def _path(self, key: str) -> str:
        return f"/{self.bucket}/{key}" if key else f"/{self.bucket}"

    async def _request(
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
        """One request with retries for transient failures; 2xx or ZosError."""
        query = query or {}
        path = self._path(key)
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
                if 200 <= resp.status < 300:
                    self._observe(op, start, None, nbytes + len(resp.body))
                    return resp
                err = self._error(op, error_key or key, resp)
            self._observe(op, start, err.code, nbytes)
            if not err.transient or attempt == attempts - 1 or (err.code == TIMEOUT and not retry_timeouts):
                raise err
            await trio.sleep(_backoff(attempt))
        raise AssertionError("unreachable")

    def _observe(self, op: str, start: float, code: str | None, nbytes: int) -> None:
        if self._observer is not None:
            self._observer(op, time.monotonic() - start, code, nbytes)

    def _error(self, op: str, key: str, resp: Response) -> ZosError:
        code = message = ""
        if resp.body:
            try:
                root = _xml(resp.body)
                code, message = _text(root, "Code"), _text(root, "Message")
            except ET.ParseError:
                pass
        err = from_code(code, resp.status, op=op, key=key)
        pos = resp.headers.get(self.config.append_position_header)
        if pos is not None and pos.isdigit():
            err.next_position = int(pos)
        if message and code not in ("SignatureDoesNotMatch",):
            log.debug("%s %r: server says %s: %s", op, key, code, message)
        return err

    # -- objects ----------------------------------------------------------

    async def head(self, key: str) -> ObjectInfo:
        resp = await self._request("HeadObject", "HEAD", key)
        return self._info(key, resp.headers)

    def _info(self, key: str, h: dict[str, str]) -> ObjectInfo:
        next_pos = h.get(self.config.append_position_header)
        return ObjectInfo(
            key=key,
            size=int(h.get("content-length", 0)),
            etag=_unquote_etag(h.get("etag")),
            last_modified=_http_date(h.get("last-modified")),
            metadata={n[11:]: _header_text(v) for n, v in h.items() if n.startswith("x-amz-meta-")},
            content_type=h.get("content-type"),
            storage_class=h.get("x-amz-storage-class") or "STANDARD",
            appendable=h.get("x-rgw-object-type", "").lower() == "appendable",
            next_append_position=int(next_pos) if next_pos and next_pos.isdigit() else None,
            version_id=h.get("x-amz-version-id"),
            restore=h.get("x-amz-restore"),
            tag_count=int(h.get("x-amz-tagging-count", "0") or 0),
            lock_mode=h.get("x-amz-object-lock-mode"),
            lock_until=_iso_date(h.get("x-amz-object-lock-retain-until-date")) or None,
            legal_hold=h.get("x-amz-object-lock-legal-hold", "").upper() == "ON",
        )

    async def get(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        *,
        if_match: str | None = None,
        into: bytearray | memoryview | None = None,
    ) -> bytes | bytearray | memoryview:
        """Bytes [start, end) of an object (end None: to the end).

        With `if_match` the read fails with ESTALE if the object's ETag has
        changed, so that a reader never mixes two versions of an object.
        With `into`, the bytes land in that buffer without another copy.
        """
        headers: dict[str, str] = {}
        if end is not None:
            if end <= start:
                return b""
            headers["range"] = f"bytes={start}-{end - 1}"
        elif start:
            headers["range"] = f"bytes={start}-"
        if if_match:
            headers["if-match"] = f'"{if_match}"'
        resp = await self._request("GetObject", "GET", key, headers=headers, into=into)
        return resp.body

    async def put(self, key: str, body: Body, opts: WriteOptions | None = None) -> str:
        """Create or replace an object; returns its ETag."""
        headers = (opts or WriteOptions()).headers()
        resp = await self._request("PutObject", "PUT", key, headers=headers, body=body if body is not None else b"")
        return _unquote_etag(resp.headers.get("etag"))

    async def append(self, key: str, position: int, body: Body, opts: WriteOptions | None = None) -> Appended:
        """Append `body` at `position`; returns the new length and the chunk's MD5.

        Position 0 creates an appendable object. An append is not idempotent,
        so after an ambiguous failure (connection lost, timeout, 5xx) this
        reads the object's real length before anything else: if it already
        grew by exactly the body's length the append had been applied; if it
        is still `position` the append is sent again; anything else is a
        PositionNotEqualToLength error carrying the real length. So the same
        bytes are never appended twice and none are skipped.
        """
        headers = (opts or WriteOptions()).headers()
        length = body.length if isinstance(body, FileRegion) else len(body) if body is not None else 0
        expected = position + length
        query: dict[str, str | None] = {"append": None, "position": str(position)}
        for attempt in range(self.config.max_attempts):
            try:
                resp = await self._request(
                    "AppendObject", "PUT", key, query=query, headers=headers, body=body or b"", attempts=1
                )
                value = resp.headers.get(self.config.append_position_header, "")
                return Appended(int(value) if value.isdigit() else expected, _unquote_etag(resp.headers.get("etag")))
            except ZosError as err:
                if err.code == "PositionNotEqualToLength":
                    # A retry may find its own earlier attempt already applied.
                    if attempt > 0 and length and err.next_position == expected:
                        return Appended(expected, await _md5_hex(body))
                    raise
                if not err.transient or attempt == self.config.max_attempts - 1:
                    raise
                log.warning("append to %r at %d failed (%s); checking the object's length", key, position, err.code)
            await trio.sleep(_backoff(attempt + 1))
            real = await self._real_length(key)
            if real == expected and length:
                return Appended(expected, await _md5_hex(body))  # applied, but its answer was lost
            # (A zero-length append changes no length: it is simply sent again.)
            if real != position:
                err = from_code("PositionNotEqualToLength", 409, op="AppendObject", key=key)
                err.next_position = real
                raise err
        raise AssertionError("unreachable")

    async def _real_length(self, key: str) -> int:
        try:
            info = await self.head(key)
        except ZosError as err:
            if err.errno == 2:  # ENOENT: nothing was appended yet
                return 0
            raise
        return info.next_append_position if info.next_append_position is not None else info.size

    async def delete(self, key: str, bypass_governance: bool = False) -> None:
        headers = {"x-amz-bypass-governance-retention": "true"} if bypass_governance else {}
        await self._request("DeleteObject", "DELETE", key, headers=headers)

    async def copy(
        self,
        src: str,
        dst: str,
        opts: WriteOptions | None = None,
        *,
        size: int | None = None,
        if_match: str | None = None,
        grants: tuple[Grant, ...] | None = None,
    ) -> str:
        """Server-side copy; returns the new ETag.

        With `opts` metadata, content type and (if given) tags are replaced;
        without, they are copied. A copy gets the default ACL unless `grants`
        (or `opts.grants`) say otherwise. Objects above 5 GiB are copied part
        by part with upload-part-copy (pass `size` to save a HEAD).
        """
        if grants and opts is not None:
            opts = replace(opts, grants=grants)
        if opts is not None and opts.tags is None:
            # RGW drops the tags when the metadata is replaced, even with
            # x-amz-tagging-directive COPY: carry the source's tags over.
            opts = replace(opts, tags=await self.get_tags(src) or None)
        if size is None:
            size = (await self.head(src)).size
        if size > MAX_SINGLE_COPY:
            if opts is None:
                info = await self.head(src)
                opts = WriteOptions(info.metadata, info.content_type, await self.get_tags(src) or None, grants=grants)
            return await self._multipart_copy(src, dst, size, opts, if_match)
        headers = self._copy_source(src, if_match)
        if opts is None and grants:
            headers.update(WriteOptions(grants=grants).headers())
        elif opts is not None:
            headers.update(opts.headers())
            headers["x-amz-metadata-directive"] = "REPLACE"
            if opts.tags is not None:
                headers["x-amz-tagging-directive"] = "REPLACE"
        resp = await self._request("CopyObject", "PUT", dst, headers=headers)
        etag = self._copy_result_etag("CopyObject", dst, resp)
        if opts is not None and opts.tags:
            # RGW 16.2 ignores x-amz-tagging on a copy with REPLACE.
            await self.put_tags(dst, opts.tags)
        return etag

    def _copy_source(self, src: str, if_match: str | None) -> dict[str, str]:
        headers = {"x-amz-copy-source": quote_path(f"/{self.bucket}/{src}")}
        if if_match:
            # S3's name, and the one RGW 16.2 reads (it ignores S3's).
            headers["x-amz-copy-source-if-match"] = headers["x-amz-copy-if-match"] = f'"{if_match}"'
        return headers

    def _copy_result_etag(self, op: str, key: str, resp: Response) -> str:
        """Copies may answer 200 with an error inside; S3 documents it."""
        root = _xml(resp.body)
        if root.tag == "Error":
            raise from_code(_text(root, "Code"), 500, op=op, key=key)
        return _unquote_etag(_text(root, "ETag"))

    async def _multipart_copy(self, src: str, dst: str, size: int, opts: WriteOptions, if_match: str | None) -> str:
        upload_id = await self.create_multipart(dst, opts)
        try:
            parts = []
            for n, start in enumerate(range(0, size, MULTIPART_COPY_PART), 1):
                end = min(size, start + MULTIPART_COPY_PART)
                parts.append(Part(n, await self.upload_part_copy(dst, upload_id, n, src, start, end, if_match)))
            etag = await self.complete_multipart(dst, upload_id, parts)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.abort_quietly(dst, upload_id)
            raise
        return etag or (await self.head(dst)).etag  # RGW completes with an empty ETag

    async def abort_quietly(self, key: str, upload_id: str) -> None:
        """Abort an upload, logging (not raising) if that fails too."""
        try:
            await self.abort_multipart(key, upload_id)
        except ZosError as err:
            log.warning("could not abort multipart upload %s of %r: %s", upload_id, key, err)

    # -- listing ----------------------------------------------------------

    async def list(
        self,
        prefix: str = "",
        delimiter: str | None = "/",
        *,
        start_after: str | None = None,
        token: str | None = None,
        max_keys: int = 1000,
    ) -> ListPage:
        """One page of ListObjectsV2 (keys URL-encoded on the wire, so that any
        key, even one with control characters, survives the XML)."""
        query: dict[str, str | None] = {
            "list-type": "2", "prefix": prefix, "max-keys": str(max_keys), "encoding-type": "url",
        }
        if delimiter:
            query["delimiter"] = delimiter
        if token:
            query["continuation-token"] = token
        elif start_after:
            query["start-after"] = start_after
        resp = await self._request("ListObjects", "GET", "", query=query, error_key=prefix)
        root = _xml(resp.body)
        unquote = urllib.parse.unquote_plus
        entries = [
            ListEntry(
                key=unquote(_text(c, "Key")),
                size=int(_text(c, "Size", "0")),
                etag=_unquote_etag(_text(c, "ETag")),
                last_modified=_iso_date(_text(c, "LastModified")),
                storage_class=_text(c, "StorageClass") or "STANDARD",
            )
            for c in root.iterfind("Contents")
        ]
        prefixes = [unquote(_text(p, "Prefix")) for p in root.iterfind("CommonPrefixes")]
        truncated = _text(root, "IsTruncated").lower() == "true"
        next_token = _text(root, "NextContinuationToken") or None if truncated else None
        if truncated and next_token is None:
            raise from_code("InternalError", 500, op="ListObjects", key=prefix, detail="truncated listing without a continuation token")
        return ListPage(entries, prefixes, next_token)

    async def list_all(self, prefix: str = "", delimiter: str | None = "/") -> AsyncIterator[ListPage]:
        """Every page of a listing, in key order."""
        token: str | None = None
        while True:
            page = await self.list(prefix, delimiter, token=token)
            yield page
            if page.next_token is None:
                return
            token = page.next_token

    # -- multipart --------------------------------------------------------

    async def create_multipart(self, key: str, opts: WriteOptions | None = None) -> str:
        resp = await self._request(
            "CreateMultipartUpload", "POST", key, query={"uploads": None}, headers=(opts or WriteOptions()).headers()
        )
        upload_id = _text(_xml(resp.body), "UploadId")
        if opts is not None and opts.tags:
            self._upload_tags[upload_id] = opts.tags
        return upload_id

    async def upload_part(self, key: str, upload_id: str, number: int, body: Body) -> str:
        resp = await self._request(
            "UploadPart", "PUT", key, query={"partNumber": str(number), "uploadId": upload_id}, body=body or b""
        )
        return _unquote_etag(resp.headers.get("etag"))

    async def upload_part_copy(
        self, key: str, upload_id: str, number: int, src: str, start: int, end: int, if_match: str | None = None
    ) -> str:
        """Make part `number` from bytes [start, end) of object `src`, server-side."""
        headers = self._copy_source(src, if_match)
        headers["x-amz-copy-source-range"] = f"bytes={start}-{end - 1}"
        resp = await self._request(
            "UploadPartCopy", "PUT", key, query={"partNumber": str(number), "uploadId": upload_id}, headers=headers
        )
        etag = self._copy_result_etag("UploadPartCopy", key, resp)
        if if_match and (await self.head(src)).etag != if_match:
            # RGW 16.2 ignores copy conditions on UploadPartCopy. The source
            # still having that ETag after the copy means the part came from it.
            raise from_code("PreconditionFailed", 412, op="UploadPartCopy", key=key)
        return etag

    async def complete_multipart(self, key: str, upload_id: str, parts: list[Part]) -> str:
        """Complete an upload; returns the ETag, or "" (RGW answers with an
        empty one: HEAD the object when the ETag is needed)."""
        xml = "".join(f"<Part><PartNumber>{p.number}</PartNumber><ETag>\"{escape(p.etag)}\"</ETag></Part>" for p in parts)
        body = f"<CompleteMultipartUpload>{xml}</CompleteMultipartUpload>".encode()
        resp = await self._request(
            "CompleteMultipartUpload", "POST", key, query={"uploadId": upload_id}, body=body,
            headers={"content-type": "application/xml"},
        )
        root = _xml(resp.body)
        if root.tag == "Error":
            raise from_code(_text(root, "Code"), 500, op="CompleteMultipartUpload", key=key)
        tags = self._upload_tags.pop(upload_id, None)
        if tags:
            await self.put_tags(key, tags)  # RGW ignored them on CreateMultipartUpload
        return _unquote_etag(_text(root, "ETag"))

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await self._request("AbortMultipartUpload", "DELETE", key, query={"uploadId": upload_id})
        self._upload_tags.pop(upload_id, None)

    # -- the control path (boto3, in worker threads) ------------------------

    def _boto(self) -> Any:
        """The boto3 client, made on first use (it takes ~0.2 s to build)."""
        with self._boto_lock:
            if self._boto_client is None:
                import boto3
                import botocore.config

                c = self.config
                self._boto_client = boto3.session.Session(
                    aws_access_key_id=c.access_key,
                    aws_secret_access_key=c.secret_key,
                    aws_session_token=c.session_token,
                    region_name=c.region,
                ).client(
                    "s3",
                    endpoint_url=c.endpoint,
                    verify=c.verify_tls,
                    config=botocore.config.Config(
                        signature_version=_rgw_v2_signer() if c.signature == "v2" else "s3v4",
                        s3={"addressing_style": "path"},
                        request_checksum_calculation="when_required",
                        response_checksum_validation="when_required",
                        retries={"mode": "standard", "max_attempts": c.max_attempts},
                        max_pool_connections=max(4, c.max_connections // 4),
                        connect_timeout=c.connect_timeout,
                        read_timeout=c.read_timeout,
                    ),
                )
            return self._boto_client

    async def _boto_call(self, op: str, key: str, method: str, **params: Any) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            return getattr(self._boto(), method)(Bucket=self.bucket, **params)

        start = time.monotonic()
        try:
            result = await trio.to_thread.run_sync(call, limiter=self._threads)
        except Exception as exc:
            err = _translate_boto(exc, op, key)
            self._observe(op, start, err.code, 0)
            raise err from None
        self._observe(op, start, None, 0)
        return result

    async def delete_many(self, keys: Iterable[str]) -> list[DeleteFailure]:
        """Delete keys, 1,000 per request; returns the keys that failed.

        Keys with characters XML 1.0 cannot carry (control characters) are
        deleted one by one: in the batch they would fail the whole request.
        """
        keys = list(keys)
        failures: list[DeleteFailure] = []
        for key in [k for k in keys if _XML_UNSAFE.search(k)]:
            try:
                await self.delete(key)
            except ZosError as err:
                failures.append(DeleteFailure(key, err.code, err.message))
        keys = [k for k in keys if not _XML_UNSAFE.search(k)]
        for i in range(0, len(keys), DELETE_BATCH):
            batch = keys[i : i + DELETE_BATCH]
            # A bare CR would reach the server as LF (XML end-of-line handling).
            items = "".join(f"<Object><Key>{escape(k, {chr(13): '&#13;'})}</Key></Object>" for k in batch)
            body = f"<Delete><Quiet>true</Quiet>{items}</Delete>".encode()
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
            resp = await self._request(
                "DeleteObjects", "POST", "", query={"delete": None}, body=body,
                headers={"content-md5": md5, "content-type": "application/xml"}, error_key=batch[0],
            )
            for e in _xml(resp.body).iterfind("Error"):
                failures.append(DeleteFailure(_text(e, "Key"), _text(e, "Code"), _text(e, "Message")))
        return failures

    async def list_uploads(self, prefix: str = "") -> list[Upload]:
        uploads: list[Upload] = []
        params: dict[str, Any] = {"Prefix": prefix}
        while True:
            r = await self._boto_call("ListMultipartUploads", prefix, "list_multipart_uploads", **params)
            uploads += [Upload(u["Key"], u["UploadId"], u["Initiated"].timestamp()) for u in r.get("Uploads", [])]
            if not r.get("IsTruncated"):
                return uploads
            params["KeyMarker"] = r.get("NextKeyMarker")
            params["UploadIdMarker"] = r.get("NextUploadIdMarker")

    async def list_parts(self, key: str, upload_id: str) -> list[Part]:
        parts: list[Part] = []
        params: dict[str, Any] = {"Key": key, "UploadId": upload_id}
        while True:
            r = await self._boto_call("ListParts", key, "list_parts", **params)
            parts += [Part(p["PartNumber"], _unquote_etag(p.get("ETag")), int(p.get("Size", 0))) for p in r.get("Parts", [])]
            if not r.get("IsTruncated"):
                return parts
            params["PartNumberMarker"] = r.get("NextPartNumberMarker")

    async def get_tags(self, key: str) -> dict[str, str]:
        r = await self._boto_call("GetObjectTagging", key, "get_object_tagging", Key=key)
        return {t["Key"]: t["Value"] for t in r.get("TagSet", [])}

    async def put_tags(self, key: str, tags: dict[str, str]) -> None:
        tag_set = [{"Key": k, "Value": v} for k, v in tags.items()]
        await self._boto_call("PutObjectTagging", key, "put_object_tagging", Key=key, Tagging={"TagSet": tag_set})

    async def delete_tags(self, key: str) -> None:
        await self._boto_call("DeleteObjectTagging", key, "delete_object_tagging", Key=key)

    async def get_acl(self, key: str) -> Acl:
        """The object's ACL. On the lean path: renaming a directory reads the
        ACL of every object in it, to carry it over to the copies."""
        resp = await self._request("GetObjectAcl", "GET", key, query={"acl": None})
        root = _xml(resp.body)
        grants = []
        for g in root.iterfind("AccessControlList/Grant"):
            grantee = g.find("Grantee")
            if grantee is None:
                continue
            kind = next((v for k, v in grantee.attrib.items() if k.endswith("type")), "")
            ident = _text(grantee, "ID") or _text(grantee, "URI") or _text(grantee, "EmailAddress")
            grants.append(Grant(_text(g, "Permission"), kind, ident, _text(grantee, "DisplayName")))
        return Acl(_text(root, "Owner/ID"), _text(root, "Owner/DisplayName"), tuple(grants))

    async def put_acl(self, key: str, *, canned: str | None = None, acl: Acl | None = None) -> None:
        """Set a canned ACL by name, or a full ACL (owner and grants)."""
        params: dict[str, Any] = {"Key": key}
        if canned is not None:
            params["ACL"] = canned
        elif acl is not None:
            fields = {"CanonicalUser": "ID", "Group": "URI", "AmazonCustomerByEmail": "EmailAddress"}
            params["AccessControlPolicy"] = {
                "Owner": {"ID": acl.owner_id, "DisplayName": acl.owner_name},
                "Grants": [
                    {"Grantee": {"Type": g.grantee_type, fields[g.grantee_type]: g.grantee}, "Permission": g.permission}
                    for g in acl.grants
                ],
            }
        else:
            raise ValueError("put_acl needs canned or acl")
        await self._boto_call("PutObjectAcl", key, "put_object_acl", **params)

    async def get_retention(self, key: str) -> Retention | None:
        try:
            r = await self._boto_call("GetObjectRetention", key, "get_object_retention", Key=key)
        except ZosError as err:
            if err.code in ("NoSuchObjectLockConfiguration", "ObjectLockConfigurationNotFoundError"):
                return None
            raise
        ret = r.get("Retention") or {}
        if not ret.get("Mode"):
            return None
        until = ret.get("RetainUntilDate")
        return Retention(ret["Mode"], until.timestamp() if until else 0.0)

    async def put_retention(self, key: str, retention: Retention | None, bypass_governance: bool = False) -> None:
        """Set (or with None, clear) an object's retention.

        RGW 16.2 cannot clear one (MalformedXML): with GOVERNANCE and the
        bypass it can only be shortened."""
        body: dict[str, Any] = {}
        if retention is not None:
            body = {"Mode": retention.mode, "RetainUntilDate": dt.datetime.fromtimestamp(retention.until, dt.timezone.utc)}
        params: dict[str, Any] = {"Key": key, "Retention": body}
        if bypass_governance:
            params["BypassGovernanceRetention"] = True
        await self._boto_call("PutObjectRetention", key, "put_object_retention", **params)

    async def get_legal_hold(self, key: str) -> bool:
        try:
            r = await self._boto_call("GetObjectLegalHold", key, "get_object_legal_hold", Key=key)
        except ZosError as err:
            if err.code in ("NoSuchObjectLockConfiguration", "ObjectLockConfigurationNotFoundError"):
                return False
            raise
        return (r.get("LegalHold") or {}).get("Status") == "ON"

    async def put_legal_hold(self, key: str, on: bool) -> None:
        await self._boto_call(
            "PutObjectLegalHold", key, "put_object_legal_hold", Key=key, LegalHold={"Status": "ON" if on else "OFF"}
        )

    async def restore(self, key: str, days: int, tier: str = "Standard") -> None:
        """Ask for an archived (GLACIER) object to be restored for `days` days."""
        await self._boto_call(
            "RestoreObject", key, "restore_object",
            Key=key, RestoreRequest={"Days": days, "GlacierJobParameters": {"Tier": tier}},
        )

    # -- bucket -----------------------------------------------------------

    async def head_bucket(self, *, retry_timeouts: bool = True) -> None:
        """Check the bucket answers. Without `retry_timeouts` a server that
        does not answer fails after one read timeout, not after every attempt."""
        await self._request("HeadBucket", "HEAD", "", error_key="", retry_timeouts=retry_timeouts)

    async def get_versioning(self) -> str | None:
        """'Enabled', 'Suspended', or None if versioning was never turned on."""
        r = await self._boto_call("GetBucketVersioning", "", "get_bucket_versioning")
        return r.get("Status")

    async def put_versioning(self, enabled: bool) -> None:
        await self._boto_call(
            "PutBucketVersioning", "", "put_bucket_versioning",
            VersioningConfiguration={"Status": "Enabled" if enabled else "Suspended"},
        )

    async def get_object_lock(self) -> dict[str, Any] | None:
        """The bucket's object lock configuration, or None if it has none."""
        try:
            r = await self._boto_call("GetObjectLockConfiguration", "", "get_object_lock_configuration")
        except ZosError as err:
            if err.code in ("ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration") or err.status == 404:
                return None
            raise
        return r.get("ObjectLockConfiguration")


def _rgw_v2_signer() -> str:
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


def _translate_boto(exc: BaseException, op: str, key: str) -> ZosError:
    """Turn whatever botocore raised into a ZosError (never leaks secrets)."""
    import botocore.exceptions as bx

    if isinstance(exc, bx.ClientError):
        resp = exc.response
        status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(resp.get("Error", {}).get("Code") or "")
        if op == "RestoreObject" and code == "InvalidArgument" and "multipart/form-data" in str(resp["Error"].get("Message")):
            # RGW 16.2 has no RestoreObject: with V2 (or an unsigned payload) it
            # takes the POST for a browser upload form; with SigV4 it says 501.
            code, status = "NotImplemented", 501
        return from_code("" if code.isdigit() else code, status, op=op, key=key)
    if isinstance(exc, (bx.ReadTimeoutError, bx.ConnectTimeoutError)):
        return from_code(TIMEOUT, None, op=op, key=key)
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectionError)):
        return from_code(CONNECTION_FAILED, None, op=op, key=key)
    if isinstance(exc, bx.BotoCoreError):
        # botocore's messages describe the request's shape, never the secret.
        return from_code("ClientError", None, op=op, key=key, detail=type(exc).__name__)
    raise exc


class RequestStats:
    """Counts requests by operation: number, errors, bytes, total latency.

    Fed from the trio thread and from worker threads (hence the lock), read
    by `zosfs stats`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ops: dict[str, dict[str, float]] = {}

    def __call__(self, op: str, seconds: float, error: str | None, nbytes: int) -> None:
        with self._lock:
            s = self.ops.get(op)
            if s is None:
                s = self.ops[op] = {"count": 0, "errors": 0, "bytes": 0, "seconds": 0.0, "max_seconds": 0.0}
            s["count"] += 1
            s["bytes"] += nbytes
            s["seconds"] += seconds
            if seconds > s["max_seconds"]:
                s["max_seconds"] = seconds
            if error:
                s["errors"] += 1

    def snapshot(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {op: dict(v) for op, v in self.ops.items()}

