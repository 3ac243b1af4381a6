"""One thread for background work that must never compete with the mount's
requests for CPU: it runs at a lower scheduling priority (nice 10).

The write path copies what it uploaded into the disk cache (data/write/
cachefeed.py): a page-cache copy of every byte written, about as much CPU
as staging the write itself. At nice 10 it takes only the CPU that writers,
readers (and a local object store) leave; when it falls behind, the work is
skipped by the callers' own bounds, never queued without end. (A thread's
nice value is its own on Linux; this thread is never given other work.)
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import trio

log = logging.getLogger(__name__)

NICE = 10
T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None


def _lower() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
    except OSError as err:  # (a container may refuse it: the work then runs at normal priority)
        log.debug("cannot lower the priority of the background thread: %s", err)


async def run_low(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in the low-priority thread. Like trio.to_thread.run_sync,
    not cancellable: a cancelled caller still waits for the call to end."""
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zosfs-low", initializer=_lower)
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["value"] = fn(*args)
        except BaseException as err:
            outcome["error"] = err
        finally:
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

    _executor.submit(call)
    with trio.CancelScope(shield=True):
        await done.wait()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]
