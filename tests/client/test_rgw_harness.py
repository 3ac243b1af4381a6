"""Smoke tests of the local RGW harness: the server really does what the
filesystem's tests rely on."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.support.rgw import MAIN_USER, REGION, LocalRGW

MIB = 1024 * 1024


def _append(rgw: LocalRGW, bucket: str, key: str, position: int, data: bytes) -> tuple[int, dict[str, str]]:
    """`PUT ?append&position=N`, SigV4-signed by hand, so that the harness is
    tested independently of the project's botocore extension; returns the
    status and the lower-cased response headers."""
    request = AWSRequest(method="PUT", url=f"{rgw.endpoint}/{bucket}/{key}?append&position={position}", data=data)
    S3SigV4Auth(Credentials(MAIN_USER.access_key, MAIN_USER.secret_key), "s3", REGION).add_auth(request)
    prepared = request.prepare()
    sent = urllib.request.Request(prepared.url, data=data, headers=dict(prepared.headers), method="PUT")
    try:
        with urllib.request.urlopen(sent, timeout=30) as response:
            return response.status, {name.lower(): value for name, value in response.headers.items()}
    except urllib.error.HTTPError as error:
        return error.code, {name.lower(): value for name, value in error.headers.items()}


def test_put_get_and_ranged_get(s3, bucket):
    s3.put_object(Bucket=bucket, Key="a/b.txt", Body=b"0123456789")

    assert s3.get_object(Bucket=bucket, Key="a/b.txt")["Body"].read() == b"0123456789"
    ranged = s3.get_object(Bucket=bucket, Key="a/b.txt", Range="bytes=2-5")
    assert ranged["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert ranged["ContentRange"] == "bytes 2-5/10"
    assert ranged["Body"].read() == b"2345"


def test_multipart_with_upload_part_copy(s3, bucket):
    source = bytes(range(256)) * (6 * MIB // 256)
    s3.put_object(Bucket=bucket, Key="source", Body=source)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="target")["UploadId"]
    copied = s3.upload_part_copy(Bucket=bucket, Key="target", UploadId=upload_id, PartNumber=1,
                                 CopySource={"Bucket": bucket, "Key": "source"},
                                 CopySourceRange=f"bytes=0-{5 * MIB - 1}")
    uploaded = s3.upload_part(Bucket=bucket, Key="target", UploadId=upload_id, PartNumber=2, Body=b"tail")
    s3.complete_multipart_upload(Bucket=bucket, Key="target", UploadId=upload_id, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": copied["CopyPartResult"]["ETag"]},
        {"PartNumber": 2, "ETag": uploaded["ETag"]},
    ]})

    assert s3.get_object(Bucket=bucket, Key="target")["Body"].read() == source[: 5 * MIB] + b"tail"
    assert s3.head_object(Bucket=bucket, Key="target")["ETag"].endswith('-2"')


def test_append_at_zero_then_at_returned_position(rgw, s3, bucket):
    status, headers = _append(rgw, bucket, "log", 0, b"hello ")
    assert status == 200
    status, headers = _append(rgw, bucket, "log", int(headers["x-rgw-next-append-position"]), b"world")
    assert (status, headers["x-rgw-next-append-position"]) == (200, "11")

    status, headers = _append(rgw, bucket, "log", 3, b"!")
    assert (status, headers["x-rgw-next-append-position"]) == (409, "11")
    assert s3.get_object(Bucket=bucket, Key="log")["Body"].read() == b"hello world"
    head = s3.head_object(Bucket=bucket, Key="log")["ResponseMetadata"]["HTTPHeaders"]
    assert head["x-rgw-object-type"] == "Appendable"


def test_second_user_cannot_read_private_object(s3, s3_second, bucket):
    s3.put_object(Bucket=bucket, Key="private", Body=b"secret")

    with pytest.raises(ClientError) as denied:
        s3_second.get_object(Bucket=bucket, Key="private")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"


def test_glacier_storage_class(s3, bucket):
    s3.put_object(Bucket=bucket, Key="cold", Body=b"ice", StorageClass="GLACIER")

    assert s3.head_object(Bucket=bucket, Key="cold")["StorageClass"] == "GLACIER"


def test_object_lock_bucket_keeps_retained_version(s3, locked_bucket):
    version = s3.put_object(Bucket=locked_bucket, Key="held", Body=b"x")["VersionId"]
    s3.put_object_legal_hold(Bucket=locked_bucket, Key="held", LegalHold={"Status": "ON"})

    with pytest.raises(ClientError) as denied:
        s3.delete_object(Bucket=locked_bucket, Key="held", VersionId=version)
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    s3.put_object_legal_hold(Bucket=locked_bucket, Key="held", LegalHold={"Status": "OFF"})


def test_rgw_restart_keeps_data_and_endpoint(rgw, s3, bucket):
    s3.put_object(Bucket=bucket, Key="durable", Body=b"still here")
    endpoint = rgw.endpoint

    rgw.stop_rgw()
    try:
        assert not rgw.answers()
    finally:
        rgw.start_rgw()

    assert rgw.endpoint == endpoint
    assert s3.get_object(Bucket=bucket, Key="durable")["Body"].read() == b"still here"
