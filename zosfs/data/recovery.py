"""What a daemon that stopped without flushing left in staging.

Every staging file has a journal (see staging.py) naming its key, whether the
file was new (staging then holds all of it, from byte 0), its state, and a
multipart upload in progress. At mount time, in the background while the
mount already serves (a stalled server must not hold the mount back), for
the journals found before anything was staged:

- a multipart upload named in a journal is aborted (its parts cost space),
  unless the parts log names parts of it that were freed from staging: they
  are then the only copy of those bytes, and the upload is completed with
  them, the bytes the object held before it (copied on the server) and the
  rest from staging, provided the key still holds what it held then;
- data already uploaded (state "uploaded") is removed;
- a new file's data is uploaded if that cannot replace anything: the key is
  free, or holds the prefix of this very data that the dead daemon had
  already stored (the rest is appended, or, when the object is not
  appendable, the object is rebuilt by multipart upload). Staging may have
  holes where stored bytes were freed; the journal then names how many
  (`appended`) and the object's ETag after them, and the object must still be
  that one (or that one plus further appends of the staged bytes);
- everything else (changes to an existing object, whose unchanged parts are
  not in staging; a key someone else has written meanwhile) is moved to the
  `recovery` folder beside staging, and the log says where, so a person can
  decide. Nothing is ever overwritten on the server by recovery.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
from collections.abc import Sequence
from typing import Any

from zosfs.data.staging import Staging
from zosfs.zos import FileRegion, ObjectInfo, Part, WriteOptions, ZosClient, ZosError

log = logging.getLogger(__name__)

MiB = 1 << 20
COMPARE_CHUNK = 8 * MiB
MAX_PUT = 5 << 30
MIN_PART = 5 * MiB
MAX_PARTS = 10_000


async def recover(zos: ZosClient, staging: Staging, records: list[dict[str, Any]] | None = None) -> None:
    """Deal with every leftover of an earlier run (see the module docstring):
    `records` (taken before this mount staged anything), or all journals."""
    for record in staging.leftovers() if records is None else records:
        try:
            await _recover_one(zos, staging, record)
        except (ZosError, OSError) as err:
            _keep(staging, record, f"recovery failed: {err}")


async def _recover_one(zos: ZosClient, staging: Staging, record: dict[str, Any]) -> None:
    key, path = record.get("key", ""), record["path"]
    upload_id = record.get("upload_id") or None
    freed = _freed_parts(record) if upload_id and record.get("state") != "uploaded" else {}
    if upload_id and not freed:
        await zos.abort_quietly(key, upload_id)
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
    if freed or (appended and info is not None and not info.appendable):
        await _rebuild(zos, staging, record, info, size, freed)
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if appended and not await _holds_the_stored_bytes(zos, key, info, fd, appended, record.get("etag", ""), size):
            _keep(staging, record, _changed_since(appended))
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


def _freed_parts(record: dict[str, Any]) -> dict[int, str]:
    """Parts of the journal's upload that were freed from staging (part
    number -> ETag), from the parts log (a torn last line is no part: the
    log is written before the part is freed)."""
    freed: dict[int, str] = {}
    try:
        with open(record["parts_path"], encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return freed
    for line in lines:
        try:
            entry = json.loads(line)
            if entry["upload_id"] == record["upload_id"]:
                freed[int(entry["part"])] = str(entry["etag"])
        except (ValueError, KeyError, TypeError):
            continue
    return freed


async def _rebuild(zos: ZosClient, staging: Staging, record: dict[str, Any], info: ObjectInfo | None, size: int,
                   freed: dict[int, str]) -> None:
    """Store a new file whose bytes are partly in the object (its first
    `appended`, unchanged since), partly in freed parts of the journal's
    upload, and the rest in staging, by completing a multipart upload (that
    one, or a new one)."""
    key, appended, etag = record.get("key", ""), int(record.get("appended") or 0), record.get("etag", "")
    fd = os.open(record["path"], os.O_RDWR)
    part_size = int(record.get("part_size") or 0)
    freed_ranges = [((n - 1) * part_size, n * part_size) for n in sorted(freed)] if part_size else []
    try:
        holds = await _holds_the_stored_bytes(zos, key, info, fd, appended, etag, size, freed_ranges)
    except BaseException:
        os.close(fd)
        raise
    if not holds and (appended or info is not None):
        os.close(fd)
        _keep(staging, record, _changed_since(appended) if appended else "its key now holds other data")
        return
    stored, etag = (info.size, info.etag) if info is not None else (0, "")
    upload_id = record.get("upload_id")
    parts = []
    try:
        if not freed or not upload_id or part_size < MIN_PART:
            part_size = max(8 * MiB, math.ceil(size / MAX_PARTS / MiB) * MiB)
            opts = WriteOptions(metadata=info.metadata, content_type=info.content_type) if info is not None else None
            upload_id = await zos.create_multipart(key, opts)
        for n in range(max(1, math.ceil(size / part_size))):
            start, end = n * part_size, min(size, (n + 1) * part_size)
            if n + 1 in freed:
                parts.append(Part(n + 1, freed[n + 1]))
            elif end <= stored and (end - start >= MIN_PART or end == size):
                parts.append(Part(n + 1, await zos.upload_part_copy(key, upload_id, n + 1, key, start, end,
                                                                    etag or None)))
            else:
                if start < stored:  # (staging may have a hole there)
                    os.pwrite(fd, bytes(await zos.get(key, start, stored, if_match=etag or None)), start)
                region = FileRegion(fd, start, end - start)
                parts.append(Part(n + 1, await zos.upload_part(key, upload_id, n + 1, region)))
    finally:
        os.close(fd)
    await zos.complete_multipart(key, upload_id, parts)
    log.warning("recovered %r: completed a multipart upload of the %d bytes a daemon that stopped had not "
                "finished uploading", key, size)
    _remove(record)


def _changed_since(appended: int) -> str:
    return f"its first {appended} bytes were stored in the object, which has changed since; the data file holds zeros there"


async def _holds_the_stored_bytes(zos: ZosClient, key: str, info: ObjectInfo | None, fd: int, appended: int,
                                  etag: str, size: int, freed: Sequence[tuple[int, int]] = ()) -> bool:
    """Whether the object is still the one the journal names (its first
    `appended` bytes, ETag `etag`, appendable or not), or an appendable one
    grown from it (from nothing, if `appended` is 0) by appends of staged
    bytes that ended after the journal was written. Where those appends
    overlap `freed` parts, staging has holes: those bytes are not compared
    (a rebuild takes them from the parts, never from the object)."""
    if info is None or not appended <= info.size <= size:
        return False
    if appended and info.size == appended:
        return bool(etag) and info.etag == etag
    return info.appendable and await _is_prefix(zos, key, fd, info.size, appended, freed)


async def _is_prefix(zos: ZosClient, key: str, fd: int, length: int, start_at: int = 0,
                     skip: Sequence[tuple[int, int]] = ()) -> bool:
    """Whether the object's first `length` bytes are the file's (from
    `start_at` on: the file's bytes below it are holes), but in the `skip`
    ranges."""
    for start in range(start_at, length, COMPARE_CHUNK):
        end = min(length, start + COMPARE_CHUNK)
        remote, local = bytes(await zos.get(key, start, end)), os.pread(fd, end - start, start)
        for s, e in skip:
            s, e = max(s, start), min(e, end)
            if s < e:
                remote = remote[: s - start] + bytes(e - s) + remote[e - start :]
                local = local[: s - start] + bytes(e - s) + local[e - start :]
        if remote != local:
            return False
    return True


def _remove(record: dict[str, Any]) -> None:
    for path in (record["path"], record["journal"], record.get("parts_path", "")):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _keep(staging: Staging, record: dict[str, Any], why: str) -> None:
    """Move the data to the recovery folder and say so."""
    folder = os.path.join(os.path.dirname(staging.directory), "recovery")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    if record.get("upload_id") and record.get("parts_path") and _freed_parts(record):
        why += (f"; multipart upload {record['upload_id']} holds the bytes the data file has zeros for "
                "(its parts are listed in the .parts file): complete it with them, or abort it")
    moved = []
    for path in (record["path"], record["journal"], record.get("parts_path", "")):
        if path and os.path.exists(path):
            target = os.path.join(folder, os.path.basename(path))
            shutil.move(path, target)
            moved.append(target)
    if moved:
        log.error("data of %r left by a daemon that stopped was not uploaded (%s); it is in %s",
                  record.get("key"), why, " and ".join(moved))
