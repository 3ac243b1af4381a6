"""Fixtures for tests that mount zosfs with real FUSE against the local RGW."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.mount import ZosfsMount
from tests.support.rgw import LocalRGW

MountFactory = Callable[..., ZosfsMount]


@pytest.fixture
def make_mount(rgw: LocalRGW, tmp_path: Path) -> Iterator[MountFactory]:
    """Start zosfs mounts on demand: make_mount(bucket, prefix="", options={}, endpoint=None).
    Every mount is unmounted at the end and its log checked for tracebacks."""
    mounts: list[ZosfsMount] = []
    counter = iter(range(1000))

    def make(bucket: str, *, prefix: str = "", options: dict[str, str] | None = None,
             endpoint: str | None = None, check_log: bool = True, **kwargs: object) -> ZosfsMount:
        m = ZosfsMount(endpoint or rgw.endpoint, bucket, tmp_path, prefix=prefix, options=options,
                       name=f"mnt{next(counter)}", **kwargs)  # type: ignore[arg-type]
        m.check_log_at_end = check_log  # type: ignore[attr-defined]
        mounts.append(m)
        return m.start()

    yield make
    errors = []
    for m in mounts:
        try:
            if m.process is not None and m.process.poll() is None:
                m.unmount()
        except Exception as err:  # keep unmounting the others
            errors.append(err)
            m.kill()
    for m in mounts:
        if m.check_log_at_end:  # type: ignore[attr-defined]
            m.check_log()
    if errors:
        raise errors[0]


@pytest.fixture
def mnt(make_mount: MountFactory, bucket: str) -> ZosfsMount:
    """zosfs mounted on a fresh, empty bucket."""
    return make_mount(bucket)


@pytest.fixture
def proxy(rgw: LocalRGW) -> Iterator[FaultProxy]:
    """A request-counting, fault-injecting proxy in front of the RGW. Ask for
    it after `bucket` and before `make_mount`, so that mounts go first."""
    with FaultProxy(rgw.endpoint) as p:
        yield p
