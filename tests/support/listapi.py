"""Fixtures that run a test module once per listing API (ListObjects V1 and
V2): import `list_api` and `make_mount` into the module. ZOS's manual
documents only V1, RGW answers both, and zosfs must read every key through
either (`-o list_api=`). `ZOSFS_TEST_LIST_API=v1` runs one of them."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.mount import ZosfsMount

MountFactory = Callable[..., ZosfsMount]


@pytest.fixture(params=os.environ.get("ZOSFS_TEST_LIST_API", "v2,v1").split(","))
def list_api(request: pytest.FixtureRequest) -> str:
    """The listing API the module's mounts use."""
    return request.param


@pytest.fixture
def make_mount(make_mount: MountFactory, list_api: str) -> MountFactory:
    """The shared factory (and so `mnt` too), with the module's list_api."""

    def make(bucket: str, *, options: dict[str, str] | None = None, **kwargs: Any) -> ZosfsMount:
        return make_mount(bucket, options={"list_api": list_api, **(options or {})}, **kwargs)

    return make
