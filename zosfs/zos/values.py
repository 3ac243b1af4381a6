"""The values the client layer hands out and takes in: plain frozen
dataclasses, so that nothing above `zosfs.zos` sees a boto3 dict, an XML
element or an HTTP header.

They live apart from the requests so that every request module (and every
caller) can import them without importing a transport.
"""

from __future__ import annotations

import hashlib
import urllib.parse
from dataclasses import dataclass, field


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
    list_api: str = "auto"  # ListObjects "v2", "v1", or "auto": V2 unless the endpoint answers it as V1


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
class ListToken:
    """Where a listing goes on; callers pass it back as it is.

    It holds both ways on: the server's V2 continuation token, and the last
    key or common prefix of the page, from which a V1 listing (ListObjects
    with `marker`) goes on when the server turns out not to honour V2."""

    marker: str
    continuation: str | None = None


@dataclass(frozen=True)
class ListPage:
    entries: list[ListEntry]
    prefixes: list[str]
    next_token: ListToken | None  # continue with this; None when this was the last page


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
        """The request headers that carry these options."""
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
