"""One block file of the disk tier: its layout, reading it back with every
check, and writing it.

A file is a small header (magic, format version, 0, name length, block
index, data length, CRC32 of the data), the name (the mount's namespace and
the object key), zero padding to the next 4 KiB, and the data. The data is
written with O_DIRECT where the filesystem allows it, from the block's own
buffer when it is an anonymous map (page-aligned), else through a small
page-aligned bounce buffer: a buffered write of a fetched block cost the
daemon about 2 s of CPU per GiB (page-cache copies and allocation, charged to
the reader's process on a 2-core machine), a direct write about 0.1 s;
filesystems without O_DIRECT (tmpfs before Linux 6.6) get plain writes of the
same layout. A read checks magic, version, name, index, length and checksum:
a torn or damaged file is reported, never served.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import struct
import zlib

from zosfs.data.cache.base import Block, new_block

log = logging.getLogger(__name__)

MAGIC = b"ZOSFSBLK"
VERSION = 2  # 2: the data starts at the next 4 KiB boundary after the header and name
HEADER = struct.Struct("<8sHHIQQI")  # magic, version, 0, name length, block index, data length, crc32
ALIGN = 4096  # O_DIRECT's offset, length and buffer alignment (a page: safe for every block device)
BOUNCE = 1024 * 1024  # the page-aligned buffer direct writes copy through, a piece at a time


def head_area(name_len: int) -> int:
    """Where a block file's data starts: after its header and name, at a 4 KiB boundary."""
    return -(-(HEADER.size + name_len) // ALIGN) * ALIGN


def read_block(path: str, name: bytes, index: int, length: int,
               buf: bytearray | mmap.mmap | None = None) -> tuple[Block | None, str]:
    """Read and check one block file (in a thread): (data, "") or (None, why).
    Into `buf` if given (a recycled buffer of `length` bytes), else into a
    new one (`new_block`: no zero-fill holding the GIL)."""
    data: Block
    try:
        with open(path, "rb", buffering=0) as f:
            head = f.read(HEADER.size + len(name))
            f.seek(head_area(len(name)))
            if buf is not None and len(buf) == length:
                data = buf
                got = f.readinto(data)
            else:
                data = new_block(length)
                got = f.readinto(data)
            extra = f.read(1)
        os.utime(path)  # the LRU order that the next mount rebuilds
    except FileNotFoundError:
        return None, ""  # renamed or evicted meanwhile: a plain miss
    except OSError as err:
        return None, f"unreadable ({err.strerror})"
    if len(head) < HEADER.size:
        return None, "truncated header"
    magic, version, _, name_len, stored_index, data_len, crc = HEADER.unpack_from(head)
    if magic != MAGIC or version != VERSION:
        return None, "not a block file of this version"
    if head[HEADER.size:] != name or name_len != len(name) or stored_index != index:
        return None, "header names another block"
    if data_len != length or got != length or extra:
        return None, "wrong length (torn write)"
    if zlib.crc32(data) != crc:
        return None, "checksum mismatch"
    return data, ""


def data_length(path: str, file_size: int) -> int | None:
    """The data length a block file's header gives, if it matches the file's size."""
    try:
        with open(path, "rb", buffering=0) as f:
            head = f.read(HEADER.size)
    except OSError:
        return None
    if len(head) < HEADER.size:
        return None
    magic, version, _, name_len, _, data_len, _ = HEADER.unpack(head)
    if magic != MAGIC or version != VERSION or head_area(name_len) + data_len != file_size:
        return None
    return int(data_len)


def unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        log.warning("disk cache: cannot remove %s: %s", path, err.strerror)



class BlockWriter:
    """Writes block files for one cache directory. Only the cache's one
    worker thread writes at a time: the bounce buffer is not shared."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.direct = hasattr(os, "O_DIRECT")  # until the filesystem refuses it
        self._bounce: mmap.mmap | None = None  # page-aligned

    def write(self, tmp: str, path: str, name: bytes, index: int, data: Block) -> bool:
        """Write block `index` of `name` as the file `path`, by way of `tmp`
        (renamed into place: never a torn file under a block's name). False
        (logged) if the disk refused it."""
        head = HEADER.pack(MAGIC, VERSION, 0, len(name), index, len(data), zlib.crc32(data)) + name
        head = head.ljust(head_area(len(name)), b"\0")
        try:
            if not (self.direct and self._write_direct(tmp, head, data)):
                with open(tmp, "wb", buffering=0) as f:
                    f.write(head)
                    f.write(data)
            os.rename(tmp, path)
            return True
        except OSError as err:
            log.warning("disk cache: cannot write a block: %s", err)
            unlink(tmp)
            return False

    def _write_direct(self, tmp: str, head: bytes, data: Block) -> bool:
        """Write a block file with O_DIRECT through the bounce buffer: False
        (and no more tries) if the filesystem does not take direct writes.
        A block in an anonymous map (page-aligned: `new_block`) is written
        straight from it, up to its last whole page, without the copy."""
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT | os.O_CLOEXEC, 0o600)
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise
            self._no_direct(err)
            return False
        try:
            if self._bounce is None:
                self._bounce = mmap.mmap(-1, BOUNCE)
            bounce, view = self._bounce, memoryview(data).cast("B")
            try:
                bounce[:len(head)] = head  # (a head area is at most a few pages: the name is bounded)
                self._pwrite(fd, bounce, len(head), 0)
                offset = 0
                if isinstance(data, mmap.mmap):
                    offset = len(view) - len(view) % ALIGN
                    if offset:
                        self._pwrite_view(fd, view[:offset], len(head))
                while offset < len(view):
                    piece = min(BOUNCE, len(view) - offset)
                    bounce[:piece] = view[offset:offset + piece]
                    padded = -(-piece // ALIGN) * ALIGN
                    if padded != piece:
                        bounce[piece:padded] = bytes(padded - piece)
                    self._pwrite(fd, bounce, padded, len(head) + offset)
                    offset += piece
            finally:
                view.release()
            if len(data) % ALIGN:
                os.ftruncate(fd, len(head) + len(data))  # the padding of the last piece
            return True
        except _NoDirect as err:
            self._no_direct(err.__cause__)
            return False
        finally:
            os.close(fd)

    @staticmethod
    def _pwrite(fd: int, bounce: mmap.mmap, length: int, offset: int) -> None:
        with memoryview(bounce) as whole:
            with whole[:length] as piece:
                BlockWriter._pwrite_view(fd, piece, offset)

    @staticmethod
    def _pwrite_view(fd: int, piece: memoryview, offset: int) -> None:
        """Write all of a page-aligned piece at `offset` with O_DIRECT."""
        done = 0
        while done < len(piece):
            try:
                written = os.pwrite(fd, piece[done:], offset + done)
            except OSError as err:
                if err.errno == errno.EINVAL:
                    raise _NoDirect() from err
                raise
            if written <= 0 or written % ALIGN:
                raise OSError(errno.EIO, f"short direct write ({done + written} of {len(piece)} bytes)")
            done += written

    def _no_direct(self, err: BaseException | None) -> None:
        self.direct = False
        log.info("disk cache %s: no direct writes on this filesystem (%s); using buffered writes", self.directory, err)

    def close(self) -> None:
        """Give back the bounce buffer."""
        if self._bounce is not None:
            self._bounce.close()
            self._bounce = None



class _NoDirect(Exception):
    """The filesystem refused a direct write."""
