"""The flush protocol of one writer: what `flush` (close) and `fsync` promise.

Its one job: store everything written so far, whichever way the file's
bytes go out, and settle what the writer knows afterwards. Durability:
`flush` returns only when everything written so far is stored in the object
store, and raises EIO otherwise (EDQUOT, EACCES or EFBIG when the server
said so: TOLD); the data then stays in staging, and on
release the log names the file that holds it (registry.py). What was
written while the upload ran may have missed it, so it stays dirty.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from zosfs.fserror import FsError
from zosfs.zos import ZosError

if TYPE_CHECKING:
    from zosfs.data.write.writer import Writer


# The server's refusals that `close` reports as themselves, not as EIO: each
# asks the user for a different next step (free space or raise the quota,
# fix the key's rights, split the file). The log line names the server's
# error code, so a quota of the bucket is never taken for one of the local
# disk. Anything else the server says, or its silence, is EIO.
TOLD = {errno.EDQUOT, errno.EACCES, errno.EFBIG}


async def flush(w: Writer, *, closing: bool = False) -> None:
    """Store everything `w` holds; raise FsError (EIO, or one of TOLD) if that fails.

    In order: a new file closed (`closing`) before any of it was appended
    is stored whole by one PUT (replace mode), not by a first append: RGW
    spends about 1.5 times the CPU on an AppendObject that creates an
    object as on a PUT of it (3.1 against 2.2 ms for 4 KiB, measured), which
    sets the pace of `cp -r`, `tar x` and rsync of small files; a small
    non-appendable file written through O_APPEND, or written beyond its end
    after such a PUT (a descriptor shared with a child process that closed
    its copy), first becomes appendable (which enters append mode), so that
    a log never costs a whole upload per close; in append mode what is
    pending is appended (the server may refuse, which ends append mode);
    in replace mode the object is replaced."""
    if w.discarded:
        return
    async with w.lock:
        if w.discarded or (not w.pending and not w.dirty):
            return
        generation = w.generation
        watch = w.watch()
        try:
            if closing and w.appends.whole_on_close():
                w.switch(w.replace, "a new file closed whole")
                w.put_whole = w.size
            elif (w.mode is w.replace and (w.opened_for_append or grew_after_put(w))
                  and w.replace.may_become_appendable()):
                await w.replace.become_appendable()
            if w.mode is w.appends:
                await w.appends.flush()
            if w.mode is w.replace and not w.discarded:
                await w.replace.flush()
        except ZosError as err:
            w.error = err
            code = err.errno if err.errno in TOLD else errno.EIO
            raise FsError(code, f"uploading {w.key_at_start!r} failed: {err}") from None
        except FsError as err:
            w.error = err
            # (ENOSPC of a full staging filesystem stays ENOSPC: it names the directory, not the server.)
            code = err.errno if err.errno in (errno.ENOSPC, errno.EDQUOT) else errno.EIO
            raise FsError(code, f"uploading {w.key_at_start!r} failed: {err.message}") from None
        except OSError as err:  # (reading staging to send it: local, never the server's fault)
            w.error = failure = w.path.staging.local_error(err, f"reading the staged data of {w.key_at_start!r}")
            raise failure from None
        finally:
            w.unwatch(watch)
        w.error = None
        w.flushed_generation = generation
        # What was written during the upload may have missed it.
        w.dirty = watch.changed
        w.dirty.remove(w.size, max(w.size, watch.changed.last_end()))
        w.inode.page_etag = w.inode.etag  # the kernel's pages are of this version
        w.path.ns.remember(w.path.ns.key(w.inode), w.inode)
        w.uploaded()
        if w.staged is not None and not w.dirty:
            w.staged.write_journal(state="uploaded", upload_id=None)  # nothing to recover


def grew_after_put(w: Writer) -> bool:
    """Whether this new file, stored whole by a PUT at an earlier close, was
    since written only beyond what that PUT stored (it goes on growing, as
    a log does)."""
    start = w.dirty.first_start()
    return w.put_whole is not None and start is not None and start >= w.put_whole


async def finish(w: Writer) -> None:
    """After the last flush: wait for background work, and abort a
    multipart upload that a background task began but nothing completed."""
    await w.wait_idle()
    if w.parts.upload is not None:
        async with w.lock:
            await w.parts.abort()
