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

from zosfs.fserror import FsError
from zosfs.zos import ZosError

log = logging.getLogger("zosfs.fuse_ops")  # (the name the log has always shown)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

# The FUSE requests being handled: id of the handler's coroutine -> (handler, start, coroutine).
# pyfuse3 runs each in a task whose frames are Cython's, which trio cannot
# walk; `requests_dump` walks the handler's own coroutine instead, so that
# `kill -USR1` says where a request that hangs waits, and for how long.
RUNNING: dict[int, tuple[str, float, Any]] = {}


def requests_dump() -> str:
    """Where each FUSE request in progress waits, oldest first (for the
    task dump of a mount that hangs)."""
    now = time.monotonic()
    lines = []
    for name, start, coro in sorted(RUNNING.values(), key=lambda r: r[1]):
        ours, last = [], ""
        while coro is not None and len(ours) < 60:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is None:
                break
            last = f"{frame.f_code.co_name}:{frame.f_lineno}"
            if "/zosfs/" in frame.f_code.co_filename:
                ours.append(last)
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        where = " > ".join(ours) + (f" (in {last})" if last and last not in ours[-1:] else "")
        lines.append(f"  {name} for {now - start:.1f} s: {where}")
    return "\n".join(lines) or "  (none)"


# Errors that answer what was asked, not failures of the mount.
ROUTINE_ERRORS = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.ENOTSUP, errno.ENODATA}


def handler(fn: F) -> F:
    """Map every failure of a handler to an errno, and log its cause."""

    @functools.wraps(fn)
    async def wrapper(self: Any, *args: Any) -> Any:
        coro = fn(self, *args)
        RUNNING[id(coro)] = (fn.__name__, time.monotonic(), coro)
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

    return wrapper  # type: ignore[return-value]
