"""One error type for everything the object store can say, and the table that
turns ZOS error codes and HTTP statuses into errnos and plain messages.

Everything above the client layer sees only `ZosError`: the FUSE handlers
return its `errno`, the CLI prints its `message`. The message never contains
credentials: it is built from the operation, the key, the service's error code
and a sentence from this table, never from the request.
"""

from __future__ import annotations

import errno as E
from dataclasses import dataclass

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

TRANSPORT_TABLE: dict[str, tuple[int, str]] = {
    CONNECTION_FAILED: (E.EIO, "cannot reach the server"),
    TIMEOUT: (E.ETIMEDOUT, "the server did not answer in time"),
    NO_CREDENTIALS: (E.EACCES, "no credentials were given"),
    CLIENT_BUG: (E.EIO, "the request could not be made"),
}

# Failures after which the same request may succeed. Never used to retry an
# append blindly: see zosfs.zos.client.ZosClient.append.
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
