"""Fixtures shared by all tests under tests/.

Keep each group of fixtures in its own section.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.rgw import MAIN_USER, SECOND_USER, LocalRGW

# --- Local Ceph RGW ------------------------------------------------------------
#
# One real RGW for the whole session (tests/support/rgw.py); each test that
# needs S3 gets fresh buckets. Tests that use these fixtures are marked `rgw`
# automatically, so `-m "not rgw"` runs only the tests that need no server.


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "rgw: uses the local Ceph RGW (set automatically from the fixtures)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "rgw" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.rgw)


@pytest.fixture(scope="session")
def rgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRGW]:
    """The session's RGW. If it cannot start, every test using it errors with
    the RGWStartError text (daemon log tails): a missing server is a failure,
    not a reason to skip."""
    server = LocalRGW(tmp_path_factory.mktemp("rgw"))
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the whole run: no log or captured output that any test left
    (daemons' logs and stderr, helpers' output) contains a secret key.
    Each mount checks its own log too; this also covers the mounts that
    tests expected to fail or to be killed. The RGW's own directory holds
    the keys by design and is not searched."""
    yield
    base = tmp_path_factory.getbasetemp()
    secrets = [user.secret_key.encode() for user in (MAIN_USER, SECOND_USER)]
    leaks = []
    for path in base.rglob("*"):
        relative = path.relative_to(base).parts
        if relative and relative[0].startswith("rgw") or path.suffix not in (".log", ".stderr", ".out"):
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if any(secret in data for secret in secrets):
            leaks.append(str(path))
    assert not leaks, f"a secret key appears in {leaks}"


@pytest.fixture
def s3(rgw: LocalRGW) -> Any:
    """boto3 S3 client of MAIN_USER (a new one per test, so that event hooks
    a test registers do not leak into others)."""
    return rgw.client()


@pytest.fixture
def s3_second(rgw: LocalRGW) -> Any:
    """boto3 S3 client of SECOND_USER, for permission tests."""
    return rgw.client(SECOND_USER)


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    """A new, empty bucket of MAIN_USER; emptied and deleted afterwards."""
    yield from _temporary_bucket(s3)


@pytest.fixture
def versioned_bucket(s3: Any) -> Iterator[str]:
    """A new bucket with versioning Enabled."""
    for name in _temporary_bucket(s3):
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        yield name


@pytest.fixture
def locked_bucket(s3: Any) -> Iterator[str]:
    """A new bucket created with object lock enabled (hence versioned)."""
    yield from _temporary_bucket(s3, ObjectLockEnabledForBucket=True)


def _temporary_bucket(s3: Any, **create_args: Any) -> Iterator[str]:
    name = f"zosfs-test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name, **create_args)
    try:
        yield name
    finally:
        _delete_bucket(s3, name)


def _delete_bucket(s3: Any, name: str) -> None:
    """Abort its uploads, delete every version and delete marker, then the
    bucket. Best effort: objects under COMPLIANCE retention or legal hold
    cannot be deleted, and their bucket simply stays."""
    try:
        for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=name):
            for upload in page.get("Uploads", []):
                s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
            entries = page.get("Versions", []) + page.get("DeleteMarkers", [])
            if entries:
                objects = [{"Key": entry["Key"], "VersionId": entry["VersionId"]} for entry in entries]
                s3.delete_objects(Bucket=name, Delete={"Objects": objects, "Quiet": True},
                                  BypassGovernanceRetention=True)
        s3.delete_bucket(Bucket=name)
    except ClientError:
        pass
