"""Running the client layer from synchronous tests."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from tests.support.rgw import MAIN_USER
from zosfs.zos import ClientConfig, ZosClient


def client_config(endpoint: str, bucket: str, **overrides: Any) -> ClientConfig:
    """MAIN_USER's client of one bucket."""
    settings: dict[str, Any] = {"access_key": MAIN_USER.access_key, "secret_key": MAIN_USER.secret_key, **overrides}
    return ClientConfig(endpoint=endpoint, bucket=bucket, **settings)


def run_client(cfg: ClientConfig, scenario: Callable[[ZosClient], Awaitable[Any]], observer: Any = None) -> Any:
    """Run `scenario(zos)` in a fresh trio run with a fresh client."""

    async def main() -> Any:
        async with ZosClient(cfg, observer) as zos:
            return await scenario(zos)

    return trio.run(main)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()
