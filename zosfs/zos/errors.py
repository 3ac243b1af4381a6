"""One error type for everything the object store can say; the table that
turns ZOS error codes and HTTP statuses into errnos and plain messages; the
translation of both transports' failures (an HTTP answer, a botocore
exception) into it; and the policy for retrying (which failures are
transient, how long to wait).

Everything above the client layer sees only `ZosError`: the FUSE handlers
return its `errno`, the CLI prints its `message`. The message never contains
credentials: it is built from the operation, the key, the service's error code
and a sentence from this table, never from the request. Keeping translation
and retry policy here means the two transports cannot disagree on them.
"""

from __future__ import annotations

import errno as E
import logging
import random
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass

from zosfs.zos import wire

log = logging.getLogger(__name__)

# code -> (errno, what it means for the user). Covers the global error table of
# the ZOS manual, the codes RGW adds (append, object lock) and the ones S3
# clients commonly meet.
ERROR_TABLE: dict[str, tuple[int, str]] = {
    # ZOS manual, global error table
    "InvalidArgument": (E.EINVAL, "invalid argument"),
    "InvalidDigest": (E.EIO, "the Content-MD5 sent was invalid"),
    "BadDigest": (E.EIO, "the data arrived damaged (checksum mismatch)"),
    "InvalidBucketName": (E.EINVAL, "invalid bucket name"),
    "InvalidObjectName": (E.EINVAL, "the name is not a valid object key"),
    "UnresolvableGrantByEmailAddress": (E.EINVAL, "no user has that e-mail address"),
    "InvalidPart": (E.EIO, "a multipart upload part is missing or changed"),
    "InvalidPartOrder": (E.EIO, "multipart upload parts out of order"),
    "RequestTimeout": (E.ETIMEDOUT, "the server timed out waiting for the request body"),
    "EntityTooLarge": (E.EFBIG, "the object is larger than the server allows"),
    "AccessDenied": (E.EACCES, "access denied"),
    "UserSuspended": (E.EACCES, "the account is suspended"),
    "RequestTimeTooSkewed": (
        E.EACCES,
        "this machine's clock differs too much from the server's; fix the clock (NTP)",
    ),
    "NoSuchKey": (E.ENOENT, "no such object"),
    "NoSuchBucket": (E.ENOENT, "no such bucket"),
    "NoSuchUpload": (E.EIO, "the multipart upload no longer exists"),
    "MethodNotAllowed": (E.EOPNOTSUPP, "the server does not allow this operation here"),
    "BucketAlreadyExists": (E.EEXIST, "the bucket already exists"),
    "BucketAlreadyOwnedByYou": (E.EEXIST, "the bucket already exists"),
    "BucketNotEmpty": (E.ENOTEMPTY, "the bucket is not empty"),
    "MissingContentLength": (E.EIO, "the request had no Content-Length"),
    "PreconditionFailed": (E.ESTALE, "the object changed on the server"),
    "InvalidRange": (E.EINVAL, "the requested range is outside the object"),
    "UnprocessableEntity": (E.EINVAL, "the server could not process the request"),
    "InternalError": (E.EIO, "internal server error"),
    # Append upload (RGW)
    "ObjectNotAppendable": (E.EOPNOTSUPP, "the object was not created by append upload"),
    "PositionNotEqualToLength": (E.EIO, "append position does not match the object's length"),
    "InvalidBucketState": (
        E.EOPNOTSUPP,
        "the bucket's state forbids this (append is refused in versioned and object-lock buckets)",
    ),
    # Throttling and availability
    "SlowDown": (E.EIO, "the server is overloaded (SlowDown)"),
    "ServiceUnavailable": (E.EIO, "the service is unavailable"),
    "ServiceUnavailableException": (E.EIO, "the service is unavailable"),
    "Throttling": (E.EIO, "the server is throttling requests"),
    # Credentials
    "InvalidAccessKeyId": (E.EACCES, "the access key is not known to the server"),
    "SignatureDoesNotMatch": (E.EACCES, "the secret key is wrong (signature mismatch)"),
    "ExpiredToken": (E.EACCES, "the security token has expired"),
    # Objects and keys
    "KeyTooLongError": (E.ENAMETOOLONG, "the key is longer than 1,024 bytes"),
    "EntityTooSmall": (E.EIO, "a multipart upload part is smaller than the 5 MiB minimum"),
    "InvalidObjectState": (
        E.EAGAIN,
        "the object is archived; restore it first (setfattr -n user.zos.restore -v 'days=1')",
    ),
    "InvalidStorageClass": (E.EINVAL, "the server does not know that storage class"),
    "InvalidRequest": (E.EINVAL, "invalid request"),
    "MalformedXML": (E.EINVAL, "the server could not parse the request"),
    "NotImplemented": (E.EOPNOTSUPP, "the server does not implement this operation"),
    "QuotaExceeded": (E.EDQUOT, "the account's quota is exceeded"),
    "TooManyBuckets": (E.EDQUOT, "too many buckets"),
    "XAmzContentSHA256Mismatch": (E.EIO, "the data arrived damaged (SHA-256 mismatch)"),
    # Tags, ACL, object lock
    "NoSuchTagSet": (E.ENODATA, "the object has no tags"),
    "NoSuchTagSetError": (E.ENODATA, "the object has no tags"),
    "InvalidTag": (E.EINVAL, "invalid tag"),
    "MalformedACLError": (E.EINVAL, "invalid ACL"),
    "InvalidRetentionPeriod": (E.EINVAL, "invalid retention period"),
    "ObjectLockConfigurationNotFoundError": (E.ENODATA, "the bucket has no object lock configuration"),
    "NoSuchObjectLockConfiguration": (E.ENODATA, "no retention or legal hold is set"),
    "ObjectLocked": (E.EPERM, "the object is under retention or legal hold"),
    "RestoreAlreadyInProgress": (E.EBUSY, "a restore of this object is already in progress"),
}

# Fallback by HTTP status, for answers without a code (HEAD has no body).
STATUS_TABLE: dict[int, tuple[str, int, str]] = {
    400: ("BadRequest", E.EINVAL, "bad request"),
    401: ("Unauthorized", E.EACCES, "unauthorized"),
    403: ("AccessDenied", E.EACCES, "access denied"),
    404: ("NotFound", E.ENOENT, "not found"),
    405: ("MethodNotAllowed", E.EOPNOTSUPP, "operation not allowed"),
    408: ("RequestTimeout", E.ETIMEDOUT, "the server timed out waiting for the request body"),
    409: ("Conflict", E.EIO, "conflict"),
    411: ("MissingContentLength", E.EIO, "the request had no Content-Length"),
    412: ("PreconditionFailed", E.ESTALE, "the object changed on the server"),
    413: ("EntityTooLarge", E.EFBIG, "the object is larger than the server allows"),
    416: ("InvalidRange", E.EINVAL, "the requested range is outside the object"),
    422: ("UnprocessableEntity", E.EINVAL, "the server could not process the request"),
    500: ("InternalError", E.EIO, "internal server error"),
    501: ("NotImplemented", E.EOPNOTSUPP, "not implemented"),
    503: ("ServiceUnavailable", E.EIO, "the service is unavailable"),
}

# Codes for failures that never reached an answer from the server.
CONNECTION_FAILED = "ConnectionFailed"
TIMEOUT = "Timeout"
NO_CREDENTIALS = "NoCredentials"
CLIENT_BUG = "ClientError"
BAD_ANSWER = "BadAnswer"

TRANSPORT_TABLE: dict[str, tuple[int, str]] = {
    CONNECTION_FAILED: (E.EIO, "cannot reach the server"),
    TIMEOUT: (E.ETIMEDOUT, "the server did not answer in time"),
    NO_CREDENTIALS: (E.EACCES, "no credentials were given"),
    CLIENT_BUG: (E.EIO, "the request could not be made"),
    BAD_ANSWER: (E.EIO, "the server's answer could not be read"),
}

# Failures after which the same request may succeed. Never used to retry an
# append blindly: see zosfs.zos.append.AppendRequests.append.
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "Throttling",
        "InternalError",
        "RequestTimeout",
        CONNECTION_FAILED,
        TIMEOUT,
    }
)


@dataclass
class ZosError(Exception):
    """A failed object-store request, already translated.

    `errno` is what a FUSE handler returns; `message` is one line for a log or
    a terminal. `next_position` is set when an append was refused because the
    position did not match: it is the object's real length.
    """

    errno: int
    code: str
    message: str
    op: str = ""
    key: str = ""
    status: int | None = None
    next_position: int | None = None

    def __str__(self) -> str:
        where = f"{self.op} {self.key!r}" if self.key else self.op
        prefix = f"{where}: " if where else ""
        return f"{prefix}{self.message} ({self.code})"

    @property
    def transient(self) -> bool:
        """True when repeating the request later may succeed."""
        if self.code == "NotImplemented" or self.status == 501:
            return False
        return self.code in TRANSIENT_CODES or self.status in (408, 429) or (self.status is not None and self.status >= 500)


def from_code(code: str, status: int | None, *, op: str = "", key: str = "", detail: str = "") -> ZosError:
    """Build a ZosError from the service's error code and/or HTTP status."""
    if code in ERROR_TABLE:
        err, text = ERROR_TABLE[code]
    elif code in TRANSPORT_TABLE:
        err, text = TRANSPORT_TABLE[code]
    elif status in STATUS_TABLE:
        fallback_code, err, text = STATUS_TABLE[status]
        code = code or fallback_code
    elif status is not None and status >= 500:
        err, text = E.EIO, "server error"
    else:
        err, text = E.EIO, "unexpected answer from the server"
    if detail:
        text = f"{text}: {detail}"
    return ZosError(err, code or f"HTTP{status}", text, op=op, key=key, status=status)


def bad_answer(op: str, key: str, detail: str) -> ZosError:
    """The error for a successful answer this client cannot read or use."""
    return from_code(BAD_ANSWER, None, op=op, key=key, detail=detail)


def from_answer(
    op: str, key: str, status: int, headers: Mapping[str, str], body: bytes | bytearray | memoryview,
    append_position_header: str,
) -> ZosError:
    """Build a ZosError from a non-2xx answer of the lean HTTP path.

    The body's XML gives the code (HEAD answers have none: the status
    decides); an append refused for its position carries the real one in
    `append_position_header`.
    """
    code = message = ""
    if body:
        try:
            root = wire.xml(body)
            code, message = wire.text(root, "Code"), wire.text(root, "Message")
        except ET.ParseError:
            pass
    err = from_code(code, status, op=op, key=key)
    pos = headers.get(append_position_header)
    if pos is not None and pos.isdigit():
        err.next_position = int(pos)
    if message and code not in ("SignatureDoesNotMatch",):
        log.debug("%s %r: server says %s: %s", op, key, code, message)
    return err


def from_boto(exc: BaseException, op: str, key: str) -> ZosError:
    """Turn whatever botocore raised into a ZosError (never leaks secrets).

    Anything that is not botocore's is re-raised: it is a bug here, not a
    failure of the store."""
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
        return from_code(CLIENT_BUG, None, op=op, key=key, detail=type(exc).__name__)
    raise exc


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` + 1 of a transient failure.

    Full jitter, as botocore's standard mode: random in [0, min(20, 0.1*2^n))."""
    return random.random() * min(20.0, 0.1 * 2**attempt)
