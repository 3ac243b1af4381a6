"""The one wrapper every FUSE handler wears: errors become an errno and a log line.

pyfuse3 ends the whole mount on any exception other than `FUSEError`, so
every handler of every operations mixin goes through `handler`; it lives
apart so that each of them can import it without importing the others.
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pyfuse3

from zosfs.fserror import FsError
from zosfs.zos import ZosError

log = logging.getLogger("zosfs.fuse_ops")  # (the name the log has always shown)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

# Errors that answer what was asked, not failures of the mount.
ROUTINE_ERRORS = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.ENOTSUP, errno.ENODATA}


def handler(fn: F) -> F:
    """Map every failure of a handler to an errno, and log its cause."""

    @functools.wraps(fn)
    async def wrapper(self: Any, *args: Any) -> Any:
        try:
            return await fn(self, *args)
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

    return wrapper  # type: ignore[return-value]
