"""The one wrapper every FUSE handler wears: errors become an errno and a log line.

pyfuse3 ends the whole mount on any exception other than `FUSEError`, so
every handler of every operations mixin goes through `handler`; it lives
apart so that each of them can import it without importing the others.
"""

from __future__ import annotations

import errno
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pyfuse3
import trio

from zosfs.fserror import FsError
from zosfs.zos import ZosError

log = logging.getLogger("zosfs.fuse_ops")  # (the name the log has always shown)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

class Request:
    """A FUSE request being handled (the entries of RUNNING)."""

    __slots__ = ("coro", "name", "reported", "start")

    def __init__(self, name: str, coro: Any) -> None:
        self.name, self.start, self.coro = name, time.monotonic(), coro
        self.reported = False  # logged by `report_slow` while it ran

    def where(self) -> str:
        """The chain of zosfs calls the request waits in, outermost first."""
        coro, last = self.coro, ""
        ours: list[str] = []
        while coro is not None and len(ours) < 60:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is None:
                break
            last = f"{frame.f_code.co_name}:{frame.f_lineno}"
            if "/zosfs/" in frame.f_code.co_filename:
                ours.append(last)
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        return " > ".join(ours) + (f" (in {last})" if last and last not in ours[-1:] else "")


# The FUSE requests being handled, by id of the handler's coroutine.
# pyfuse3 runs each in a task whose frames are Cython's, which trio cannot
# walk; `Request.where` walks the handler's own coroutine instead, so that
# `kill -USR1` and the slow-request watch say where a request waits.
RUNNING: dict[int, Request] = {}


def requests_dump() -> str:
    """Where each FUSE request in progress waits, oldest first (for the
    task dump of a mount that hangs)."""
    now = time.monotonic()
    lines = [f"  {r.name} for {now - r.start:.1f} s: {r.where()}"
             for r in sorted(RUNNING.values(), key=lambda r: r.start)]
    return "\n".join(lines) or "  (none)"


def report_slow(older_than: float) -> None:
    """Log, once each, the requests running for longer than `older_than`
    seconds and where they wait."""
    now = time.monotonic()
    slow = [r for r in RUNNING.values() if not r.reported and now - r.start > older_than]
    for r in slow:
        r.reported = True
        log.warning("FUSE %s still running after %.1f s (a slow server, or a hang): waiting in %s",
                    r.name, now - r.start, r.where())


async def watch_slow(older_than: float) -> None:
    """Look for slow requests (`report_slow`) every quarter of `older_than`
    (at least every 5 s): a hang is in the log without anyone asking."""
    while True:
        await trio.sleep(min(max(older_than / 4, 0.05), 5.0))
        report_slow(older_than)


# Errors that answer what was asked, not failures of the mount.
ROUTINE_ERRORS = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.ENOTSUP, errno.ENODATA}


def handler(fn: F) -> F:
    """Map every failure of a handler to an errno, and log its cause."""

    @functools.wraps(fn)
    async def wrapper(self: Any, *args: Any) -> Any:
        coro = fn(self, *args)
        RUNNING[id(coro)] = request = Request(fn.__name__, coro)
        try:
            return await coro
        except pyfuse3.FUSEError:
            raise
        except FsError as err:
            if err.message:
                # (Routine answers, such as ENOTSUP to `cp -a` setting a
                # POSIX ACL on every file, would flood the log.)
                level = logging.DEBUG if err.errno in ROUTINE_ERRORS else logging.WARNING
                log.log(level, "%s: %s (%s)", fn.__name__, err.message, errno.errorcode.get(err.errno, err.errno))
            raise pyfuse3.FUSEError(err.errno) from None
        except ZosError as err:
            log.warning("%s failed: %s [errno %s]", fn.__name__, err, errno.errorcode.get(err.errno, err.errno))
            raise pyfuse3.FUSEError(err.errno) from None
        except Exception:
            log.exception("internal error in %s; answering EIO", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None
        finally:
            del RUNNING[id(coro)]
            if request.reported:
                log.warning("FUSE %s ended after %.1f s", fn.__name__, time.monotonic() - request.start)

    return wrapper  # type: ignore[return-value]
