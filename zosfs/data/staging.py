"""Staging: local files that hold written data until the object store has it.

Every open-for-writing file with changes has one sparse staging file of the
same logical size; only its dirty ranges (see `write.py`) mean anything. A
small JSON journal beside it names the object key, so that data left behind
by a failed upload, or by a daemon that was killed, can be found and
recovered: the log names both paths.

The budget bounds bytes that are written but not yet uploaded. Writers wait
(backpressure) while it is exhausted and uploads that free it are under way,
at most `write_deadline`; when nothing can free it they get ENOSPC at once.
A full staging filesystem is ENOSPC too (`Staging.local_error`), never EIO,
and never blamed on the server.

Bytes that an append upload has stored are punched out of the staging file
(`StagedFile.release`) as soon as they are in the object: a file written at
hundreds of MiB/s then holds a few chunks of page cache rather than all of
itself until close, and the kernel hands the same (already mapped) pages
back for the next chunk. On a VM, fresh page-cache pages cost a host page
fault each; writing a 1 GiB file through staging took 1-2 CPU seconds of
page faults before this; after it, copying into staging is 6% of the
daemon's profile of such a write. The journal then records how
much of the file the object holds (`appended`, with its ETag), so recovery
knows that the holes below that are in the bucket, not lost.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from zosfs.fserror import FsError

log = logging.getLogger(__name__)

MAKE_ROOM_INTERVAL = 1.0  # seconds between calls of make_room while a writer waits for the budget
PAGE = 4096
PUNCH_MIN = 256 * 1024
SPARES = 4  # staging files made ahead (see Staging)  # smaller ranges are not worth a filesystem transaction (and a journal write)
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02


def _libc_fallocate() -> Callable[..., int] | None:
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn


_fallocate = _libc_fallocate()


def punch_hole(fd: int, start: int, end: int) -> tuple[int, int] | None:
    """Free [start, end) of a file, whole pages (reads return zeros there);
    returns the range freed, or None where the filesystem cannot."""
    if _fallocate is None or _fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, start, end - start) != 0:
        code = ctypes.get_errno() if _fallocate is not None else errno.ENOSYS
        if code in (errno.EOPNOTSUPP, errno.ENOSYS):
            return None
        raise OSError(code, os.strerror(code))
    return start, end


def spare_record(name: str) -> bytes:
    """The journal of a staging file made ahead (a spare): recovery removes
    it, as it removes the data of a finished upload."""
    return json.dumps({"data": name + ".data", "state": "uploaded", "spare": True}).encode()


class StagedFile:
    """One staging file and its journal."""

    def __init__(self, directory: str, key: str, created: bool, spare: Spare | None = None) -> None:
        name = spare.name if spare is not None else new_name()
        self.path, self.journal = staging_paths(directory, name)
        self.parts = os.path.join(directory, name + ".parts")
        self.fd = self.parts_fd = self.journal_fd = -1
        self._journal_len = 0
        self.key = key
        # created: the object did not exist, so this file holds all of it.
        self.record: dict[str, Any] = {"key": key, "data": os.path.basename(self.path), "created": created}
        try:
            if spare is not None:
                self.fd, self.journal_fd = spare.fd, spare.journal_fd
                self._journal_len = spare.journal_len  # (padded over: never a spare's tail after the record)
            else:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                self.journal_fd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            self.write_journal(state="writing")
        except OSError:
            self.discard()  # (a full staging filesystem: leave nothing half made)
            raise

    def write_journal(self, **fields: Any) -> None:
        """Update what this file is for, in place with one write (a killed
        daemon leaves the old text or the new, never a mix). Not by writing a
        new file and renaming it over the old: on ext4 that rename flushes the
        new file's blocks and cost 230 us against 16 us, three times per file
        written; with small files it was most of the daemon's time."""
        self.record.update(fields, updated=time.time())
        if "key" in fields:
            self.key = fields["key"]
        text = json.dumps(self.record).encode()
        # Shorter text is padded with spaces (JSON ignores them): no truncate
        # that a kill could separate from the write.
        padded = text.ljust(self._journal_len)
        os.pwrite(self.journal_fd, padded, 0)
        self._journal_len = len(padded)

    def pwrite(self, data: bytes | memoryview, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view = view[n:]
            offset += n

    def pwrite_some(self, data: bytes | memoryview, offset: int) -> int:
        """Write as much of `data` at `offset` as the filesystem takes;
        returns how much that was. Raises OSError only if it took nothing
        (a full staging filesystem then shows as a short write first)."""
        view = memoryview(data)
        done = 0
        while done < len(view):
            try:
                n = os.pwrite(self.fd, view[done:], offset + done)
            except OSError:
                if done:
                    return done
                raise
            done += n
        return done

    def pread(self, length: int, offset: int) -> bytes:
        data = os.pread(self.fd, length, offset)
        if len(data) < length:  # a hole past the end of the file reads as zeros
            data += bytes(length - len(data))
        return data

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def release(self, start: int, end: int, appended: int, etag: str) -> tuple[int, int] | None:
        """The object holds the file's first `appended` bytes (ETag `etag`):
        free the whole pages of [start, end) below that. The journal says so
        first, so that recovery never takes the holes for data. Returns the
        range freed (None: the staging filesystem cannot punch holes)."""
        start, end = -(-start // PAGE) * PAGE, min(end, appended) // PAGE * PAGE
        if end - start < PUNCH_MIN:
            return start, start
        self.note_appended(appended, etag)
        return punch_hole(self.fd, start, end)

    def note_appended(self, appended: int, etag: str) -> None:
        """The object holds the file's first `appended` bytes (ETag `etag`):
        the journal says so at once, whenever staging frees them, so that a
        killed daemon's next mount appends only what the object lacks."""
        if self.record.get("appended") != appended or self.record.get("etag") != etag:
            self.write_journal(appended=appended, etag=etag)

    def free_part(self, upload_id: str, number: int, etag: str, start: int, end: int) -> tuple[int, int] | None:
        """Part `number` of multipart upload `upload_id` holds [start, end) of
        the file (whole pages): note that in the parts log, then free those
        pages. The log is only ever appended to, one line per part (a journal
        rewritten per part would cost the square of the parts in a large
        file); recovery completes the upload with the parts it names, which
        are then the only copy of those bytes."""
        if self.parts_fd < 0:
            self.parts_fd = os.open(self.parts, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        line = json.dumps({"upload_id": upload_id, "part": number, "etag": etag}) + "\n"
        os.write(self.parts_fd, line.encode())
        return punch_hole(self.fd, start, end)

    def forget_parts(self) -> None:
        """The upload whose parts the log names is complete (or gone)."""
        if self.parts_fd >= 0:
            os.ftruncate(self.parts_fd, 0)

    def discard(self) -> None:
        """The data is safely uploaded (or no longer wanted): remove its files."""
        self.close()
        remove_files(self.path, self.journal, self.parts)

    @property
    def uploaded(self) -> bool:
        """Whether the journal says the object holds all of this (recovery would only remove it)."""
        return self.record.get("state") == "uploaded"

    def keep(self, reason: str, bucket: str = "") -> None:
        """Leave the data on disk for recovery and say where it is, and
        (`bucket`) what the bucket holds of it."""
        self.write_journal(state="failed", reason=reason)
        self.close()
        appended = self.record.get("appended")
        upload_id = self.record.get("upload_id")
        if upload_id and os.path.exists(self.parts) and os.path.getsize(self.parts):
            how = (f"Some of its bytes are only in multipart upload {upload_id} (its parts are listed in "
                   f"{self.parts}; the data file holds zeros there): do not abort that upload. The next mount "
                   "completes it from those parts and this file.")
        elif appended:
            how = (f"Its first {appended} bytes are in the object already (the data file holds zeros there); "
                   f"the rest follows from byte {appended} on.")
        else:
            how = "Copy it back into the mount or upload it with any S3 tool."
        log.error("the data of %r could not be uploaded (%s); it is kept in %s (journal %s).%s %s",
                  self.key, reason, self.path, self.journal, f" {bucket}." if bucket else "", how)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.journal_fd >= 0:
            os.close(self.journal_fd)
            self.journal_fd = -1
        if self.parts_fd >= 0:
            os.close(self.parts_fd)
            self.parts_fd = -1


def new_name() -> str:
    """A staging file's name (without suffix): its time, for a person, and a unique part."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"


def staging_paths(directory: str, name: str) -> tuple[str, str]:
    """The data file and journal of the staging file `name` (no suffix)."""
    return os.path.join(directory, name + ".data"), os.path.join(directory, name + ".json")


def remove_files(*paths: str) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


@dataclass
class Spare:
    """A staging file and its journal made ahead, not yet anyone's."""

    name: str
    fd: int
    journal_fd: int
    journal_len: int


class Staging:
    """The staging directory and its budget of not-yet-uploaded bytes.

    Its housekeeping task (`run`) makes staging files ahead (`SPARES` of
    them) and removes those whose data is uploaded, in a worker thread: a
    new file's first write then costs no file creation, and its release no
    unlinks, on the thread that answers FUSE. Creating the two files took
    220 us of the 5 ms a 4 KiB file costs from open to close (profiled with
    `cp` of small files), removing them 80 us; both sat between the
    writer's requests."""

    def __init__(self, directory: str, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._freed = trio.Event()
        self._spares: list[Spare] = []
        self._doomed: list[StagedFile] = []  # uploaded: to be closed and removed
        self._wake = trio.Event()
        self._running = False
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        # One mount at a time owns the directory (and recovers what an earlier
        # one left); a second mount of the same source stages beside it.
        self._lock = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.exclusive = True
        except BlockingIOError:
            self.exclusive = False
            directory = os.path.join(directory, f"mount-{os.getpid()}")
            os.makedirs(directory, mode=0o700, exist_ok=True)
        self.directory = directory

    def create(self, key: str, created: bool) -> StagedFile:
        """A staging file for `key` (a spare one if there is)."""
        spare = self._spares.pop() if self._spares else None
        if self._running:
            self._wake.set()
        return StagedFile(self.directory, key, created, spare)

    def discard(self, staged: StagedFile) -> None:
        """Remove a staging file no longer needed: in the background when its
        journal says it is uploaded (a crash before that leaves what
        recovery removes), at once otherwise (it could be taken for data to
        recover)."""
        if not self._running or not staged.uploaded:
            staged.discard()
            return
        self._doomed.append(staged)
        self._wake.set()

    async def run(self) -> None:
        """The housekeeping task (see the class docstring); runs until cancelled."""
        self._running = True
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                doomed, self._doomed = self._doomed, []
                await trio.to_thread.run_sync(self._housekeeping, doomed)
        finally:
            self._running = False

    def _housekeeping(self, doomed: list[StagedFile]) -> None:
        """In a worker thread: remove `doomed`, and make spares up to SPARES
        (appended one by one: the trio thread may take them meanwhile)."""
        for staged in doomed:
            staged.discard()
        while len(self._spares) < SPARES:
            name = new_name()
            data, journal = staging_paths(self.directory, name)
            fd = journal_fd = -1
            try:
                fd = os.open(data, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                journal_fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                record = spare_record(name)
                os.pwrite(journal_fd, record, 0)
            except OSError as err:
                # (A full staging filesystem: files are made when needed, where
                # the failure becomes the writer's ENOSPC.)
                log.debug("no spare staging file (%s)", err)
                for f in (fd, journal_fd):
                    if f >= 0:
                        os.close(f)
                remove_files(data, journal)
                return
            self._spares.append(Spare(name, fd, journal_fd, len(record)))

    def close(self) -> None:
        """At unmount: remove the spares and the uploaded files not yet removed."""
        self._running = False
        doomed, self._doomed = self._doomed, []
        for staged in doomed:
            staged.discard()
        spares, self._spares = self._spares, []
        for spare in spares:
            os.close(spare.fd)
            os.close(spare.journal_fd)
            remove_files(*staging_paths(self.directory, spare.name))

    def would_wait(self, nbytes: int) -> bool:
        """Whether `reserve(nbytes)` would wait now."""
        return bool(self.used) and self.used + nbytes > self.budget

    async def reserve(self, nbytes: int, make_room: Callable[[], bool] | None = None,
                      deadline: float = math.inf) -> None:
        """Wait until `nbytes` more fit in the budget (a single write larger
        than the whole budget is let through alone, rather than never).
        While waiting, `make_room` is called now and then: it starts the
        uploads that free the budget (again, if they failed meanwhile), and
        says whether any can (False: nothing will ever free it). Raises
        FsError(ENOSPC) when nothing can, or when `deadline` (trio time)
        passes first; the message names the budget and the option."""
        while self.would_wait(nbytes):
            if make_room is not None and not make_room():
                raise FsError(errno.ENOSPC, self._exhausted(nbytes, "no upload can free it (nothing else is "
                                                            "written but not yet uploaded that could go now)"))
            if trio.current_time() >= deadline:
                raise FsError(errno.ENOSPC, self._exhausted(nbytes, "the uploads that would free it did not "
                                                            "finish within write_deadline"))
            with trio.move_on_at(min(deadline, trio.current_time() + MAKE_ROOM_INTERVAL)):
                await self._freed.wait()
        self.used += nbytes

    def _exhausted(self, nbytes: int, why: str) -> str:
        return (f"the staging budget (staging_size={self.budget} bytes, {self.used} of them written but not yet "
                f"uploaded) has no room for {nbytes} more bytes: {why}; set -o staging_size= higher")

    def local_error(self, err: OSError, doing: str) -> FsError:
        """A failure of local I/O in staging, as the errno a writer sees:
        ENOSPC (or EDQUOT) when the staging filesystem is full, EIO
        otherwise; the message names the directory and its free space, and
        is never taken for the server's."""
        try:
            st = os.statvfs(self.directory)
            free = f"{st.f_bavail * st.f_frsize} bytes free"
        except OSError:
            free = "free space unknown"
        code = err.errno if err.errno in (errno.ENOSPC, errno.EDQUOT) else errno.EIO
        what = "is full" if code != errno.EIO else "failed"
        return FsError(code, f"{doing}: the staging directory {self.directory} {what} ({free}; "
                             f"{os.strerror(err.errno or errno.EIO)}); free space there, or set -o staging_dir= "
                             "to a larger filesystem")

    def release(self, nbytes: int) -> None:
        self.used = max(0, self.used - nbytes)
        self._freed.set()
        self._freed = trio.Event()

    def remove_unfinished(self) -> int:
        """At mount, before anything is staged here: remove what a daemon
        killed while making a staging file (a spare, or one for a writer)
        left, an empty data file whose journal is missing or empty, and such
        a journal. Nothing was written to those: a staging file's journal is
        written before the file takes data. Returns how many files went."""
        names = set(os.listdir(self.directory))
        doomed = []
        for name in names:
            stem, dot, suffix = name.rpartition(".")
            if not dot or suffix not in ("data", "json"):
                continue
            data, journal = os.path.join(self.directory, stem + ".data"), os.path.join(self.directory, stem + ".json")
            try:
                data_empty = not os.path.exists(data) or os.path.getsize(data) == 0
                journal_empty = not os.path.exists(journal) or os.path.getsize(journal) == 0
            except OSError:
                continue
            if data_empty and journal_empty:
                doomed.append(os.path.join(self.directory, name))
        remove_files(*doomed)
        return len(doomed)

    def leftovers(self) -> list[dict[str, Any]]:
        """Journals of data that an earlier run could not upload."""
        found = []
        for name in sorted(os.listdir(self.directory)):
            if not name.endswith(".json") or not os.path.isfile(os.path.join(self.directory, name)):
                continue
            try:
                with open(os.path.join(self.directory, name), encoding="utf-8") as f:
                    record = json.load(f)
            except (OSError, ValueError):
                continue
            record["journal"] = os.path.join(self.directory, name)
            record["path"] = os.path.join(self.directory, record.get("data", ""))
            record["parts_path"] = os.path.join(self.directory, name[: -len(".json")] + ".parts")
            found.append(record)
        return found
