"""What a daemon that stopped without flushing left in staging.

Every staging file has a journal (see staging.py) naming its key, whether the
file was new (staging then holds all of it, from byte 0), its state, and a
multipart upload in progress. At mount time, before anything is served:

- a multipart upload named in a journal is aborted (its parts cost space);
- data already uploaded (state "uploaded") is removed;
- a new file's data is uploaded if that cannot replace anything: the key is
  free, or holds the appendable prefix of this very data that the dead daemon
  had already appended (the rest is appended). Staging may have holes where
  appended bytes were freed; the journal then names how many (`appended`)
  and the object's ETag after them, and the object must still be that one
  (or that one plus further appends of the staged bytes);
- everything else (changes to an existing object, whose unchanged parts are
  not in staging; a key someone else has written meanwhile) is moved to the
  `recovery` folder beside staging, and the log says where, so a person can
  decide. Nothing is ever overwritten on the server by recovery.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from typing import Any

from zosfs.data.staging import Staging
from zosfs.zos import FileRegion, ObjectInfo, WriteOptions, ZosClient, ZosError

log = logging.getLogger(__name__)

MiB = 1 << 20
COMPARE_CHUNK = 8 * MiB
MAX_PUT = 5 << 30


async def recover(zos: ZosClient, staging: Staging) -> None:
    """Deal with every leftover of an earlier run (see the module docstring)."""
    for record in staging.leftovers():
        try:
            await _recover_one(zos, staging, record)
        except (ZosError, OSError) as err:
            _keep(staging, record, f"recovery failed: {err}")


async def _recover_one(zos: ZosClient, staging: Staging, record: dict[str, Any]) -> None:
    key, path = record.get("key", ""), record["path"]
    if record.get("upload_id"):
        await zos.abort_quietly(key, record["upload_id"])
    if record.get("state") == "uploaded" or not os.path.exists(path):
        _remove(record)
        return
    if not record.get("created"):
        _keep(staging, record, "it changed an existing object; only the changed bytes are in it")
        return
    size = os.path.getsize(path)
    appended = int(record.get("appended") or 0)  # staging's bytes below this may be holes
    try:
        info: ObjectInfo | None = await zos.head(key)
    except ZosError as err:
        if err.errno != errno.ENOENT:
            raise
        info = None
    fd = os.open(path, os.O_RDONLY)
    try:
        if appended and not await _holds_the_appended_bytes(zos, key, info, fd, appended, record.get("etag", ""), size):
            _keep(staging, record, f"its first {appended} bytes were appended to the object, which has changed since; "
                  "the data file holds zeros there")
            return
        if info is None and size <= MAX_PUT:
            await zos.put(key, FileRegion(fd, 0, size))
        elif info is not None and info.appendable and info.size <= size and (
            appended or await _is_prefix(zos, key, fd, info.size)  # (with `appended`, checked just above)
        ):
            if size > info.size:
                opts = WriteOptions(metadata=info.metadata, content_type=info.content_type)
                await zos.append(key, info.size, FileRegion(fd, info.size, size - info.size), opts)
        else:
            _keep(staging, record, "its key now holds other data")
            return
    finally:
        os.close(fd)
    log.warning("recovered %r: uploaded the %d bytes a daemon that stopped had not uploaded", key, size)
    _remove(record)


async def _holds_the_appended_bytes(zos: ZosClient, key: str, info: ObjectInfo | None, fd: int, appended: int,
                                    etag: str, size: int) -> bool:
    """Whether the object is still the one the journal names (its first
    `appended` bytes, ETag `etag`), or that one grown by appends of staged bytes."""
    if info is None or not info.appendable or not appended <= info.size <= size:
        return False
    if info.size == appended:
        return bool(etag) and info.etag == etag
    return await _is_prefix(zos, key, fd, info.size, appended)


async def _is_prefix(zos: ZosClient, key: str, fd: int, length: int, start_at: int = 0) -> bool:
    """Whether the object's first `length` bytes are the file's (from
    `start_at` on: the file's bytes below it are holes)."""
    for start in range(start_at, length, COMPARE_CHUNK):
        end = min(length, start + COMPARE_CHUNK)
        if bytes(await zos.get(key, start, end)) != os.pread(fd, end - start, start):
            return False
    return True


def _remove(record: dict[str, Any]) -> None:
    for path in (record["path"], record["journal"]):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _keep(staging: Staging, record: dict[str, Any], why: str) -> None:
    """Move the data to the recovery folder and say so."""
    folder = os.path.join(os.path.dirname(staging.directory), "recovery")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    moved = []
    for path in (record["path"], record["journal"]):
        if os.path.exists(path):
            target = os.path.join(folder, os.path.basename(path))
            shutil.move(path, target)
            moved.append(target)
    if moved:
        log.error("data of %r left by a daemon that stopped was not uploaded (%s); it is in %s",
                  record.get("key"), why, " and ".join(moved))
