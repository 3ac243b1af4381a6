"""The error table: every code of the ZOS manual's global error table, the
append and availability codes RGW adds, and connection failures map to a
sensible errno and a plain one-line message; unknown codes fall back by
HTTP status."""

from __future__ import annotations

import errno as E

import pytest

from zosfs.zos.errors import (
    CONNECTION_FAILED,
    ERROR_TABLE,
    STATUS_TABLE,
    TIMEOUT,
    ZosError,
    from_code,
)

# The manual's global error table (status, code), with the errno a
# filesystem user should see.
MANUAL = [
    (400, "InvalidArgument", E.EINVAL),
    (400, "InvalidDigest", E.EIO),
    (400, "BadDigest", E.EIO),
    (400, "InvalidBucketName", E.EINVAL),
    (400, "InvalidObjectName", E.EINVAL),
    (400, "UnresolvableGrantByEmailAddress", E.EINVAL),
    (400, "InvalidPart", E.EIO),
    (400, "InvalidPartOrder", E.EIO),
    (400, "RequestTimeout", E.ETIMEDOUT),
    (400, "EntityTooLarge", E.EFBIG),
    (403, "AccessDenied", E.EACCES),
    (403, "UserSuspended", E.EACCES),
    (403, "RequestTimeTooSkewed", E.EACCES),
    (404, "NoSuchKey", E.ENOENT),
    (404, "NoSuchBucket", E.ENOENT),
    (404, "NoSuchUpload", E.EIO),
    (405, "MethodNotAllowed", E.EOPNOTSUPP),
    (408, "RequestTimeout", E.ETIMEDOUT),
    (409, "BucketAlreadyExists", E.EEXIST),
    (409, "BucketNotEmpty", E.ENOTEMPTY),
    (411, "MissingContentLength", E.EIO),
    (412, "PreconditionFailed", E.ESTALE),
    (416, "InvalidRange", E.EINVAL),
    (422, "UnprocessableEntity", E.EINVAL),
    (500, "InternalError", E.EIO),
]

# What RGW (and any busy server) adds, and whether a retry may help.
EXTRA = [
    (409, "ObjectNotAppendable", E.EOPNOTSUPP, False),
    (409, "PositionNotEqualToLength", E.EIO, False),
    (409, "InvalidBucketState", E.EOPNOTSUPP, False),
    (503, "SlowDown", E.EIO, True),
    (503, "ServiceUnavailable", E.EIO, True),
    (None, CONNECTION_FAILED, E.EIO, True),
    (None, TIMEOUT, E.ETIMEDOUT, True),
]


@pytest.mark.parametrize("status,code,err", MANUAL)
def test_manual_codes(status, code, err):
    assert code in ERROR_TABLE
    mapped = from_code(code, status, op="GetObject", key="a/b")
    assert (mapped.errno, mapped.code, mapped.status) == (err, code, status)
    assert mapped.message and "\n" not in mapped.message
    assert str(mapped) == f"GetObject 'a/b': {mapped.message} ({code})"


@pytest.mark.parametrize("status,code,err,transient", EXTRA)
def test_append_availability_and_connection_codes(status, code, err, transient):
    mapped = from_code(code, status, op="AppendObject", key="log")
    assert (mapped.errno, mapped.code) == (err, code)
    assert mapped.transient is transient
    assert mapped.message and "\n" not in mapped.message


def test_messages_say_what_happened():
    assert "append" in from_code("ObjectNotAppendable", 409).message
    assert "versioned" in from_code("InvalidBucketState", 409).message
    assert "clock" in from_code("RequestTimeTooSkewed", 403).message
    assert "secret key" in from_code("SignatureDoesNotMatch", 403).message
    assert "access key" in from_code("InvalidAccessKeyId", 403).message
    assert "cannot reach" in from_code(CONNECTION_FAILED, None).message
    assert from_code(CONNECTION_FAILED, None, detail="connection refused").message.endswith(": connection refused")


@pytest.mark.parametrize("status", sorted({status for status, _, _ in MANUAL}))
def test_every_manual_status_has_a_fallback(status):
    """HEAD answers have no body, so no code: the status alone must do."""
    assert status in STATUS_TABLE
    mapped = from_code("", status)
    assert mapped.code == STATUS_TABLE[status][0] and mapped.status == status
    assert "unexpected" not in mapped.message


@pytest.mark.parametrize(
    "status,err,transient",
    [(400, E.EINVAL, False), (403, E.EACCES, False), (404, E.ENOENT, False), (408, E.ETIMEDOUT, True),
     (412, E.ESTALE, False), (416, E.EINVAL, False), (500, E.EIO, True), (501, E.EOPNOTSUPP, False),
     (502, E.EIO, True), (503, E.EIO, True), (504, E.EIO, True), (418, E.EIO, False)],
)
def test_unknown_codes_fall_back_by_status(status, err, transient):
    mapped = from_code("SomethingNewFromTheFuture", status, op="HeadObject", key="k")
    assert mapped.errno == err
    assert mapped.code == "SomethingNewFromTheFuture"  # the server's code is kept for the logs
    assert mapped.transient is transient
    assert str(mapped).startswith("HeadObject 'k': ")


def test_an_answer_with_neither_code_nor_known_status():
    mapped = from_code("", 599)
    assert (mapped.errno, mapped.code, mapped.transient) == (E.EIO, "HTTP599", True)
    assert from_code("", 418).message == "unexpected answer from the server"


def test_not_implemented_is_never_retried():
    assert not from_code("NotImplemented", 501).transient
    assert not from_code("", 501).transient


def test_zos_error_is_an_exception_carrying_the_position():
    err = from_code("PositionNotEqualToLength", 409, op="AppendObject", key="log")
    err.next_position = 42
    with pytest.raises(ZosError) as caught:
        raise err
    assert caught.value.next_position == 42
    assert str(caught.value) == "AppendObject 'log': append position does not match the object's length (PositionNotEqualToLength)"
    assert str(from_code("NoSuchBucket", 404, op="mount")) == "mount: no such bucket (NoSuchBucket)"
