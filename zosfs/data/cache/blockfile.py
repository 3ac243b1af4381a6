"""One block file of the disk tier: its layout, reading it back with every
check, and writing it.

A file is a small header (magic, format version, checksum kind, name length,
block index, data length, checksum of the data), the name (the mount's
namespace and the object key), zero padding to the next 4 KiB, and the data.
The checksum is XXH3-64 from the system's libxxhash (a dependency of apt: on
every Debian), about 15 GB/s, else CRC32 (zlib, about 2-4 GB/s: 0.3-0.5 s of
CPU per GiB, which on a 2-core machine made the disk tier fall behind a cold
read and cost a warm read a third of its speed); a file whose kind cannot be
checked here is a miss. Files of format 2 (CRC32, a 4-byte field) are still read.

The data is written with O_DIRECT where the filesystem allows it, from the
block's own buffer when it is an anonymous map (page-aligned), else through
a small page-aligned bounce buffer: a buffered write of a fetched block cost
the daemon about 2 s of CPU per GiB (page-cache copies and allocation,
charged to the reader's process on a 2-core machine), a direct write about
0.1 s. It is read back the same way, header and data in one direct read into
the block's buffer (a buffered read of 8 MiB files ran at a third of the
disk's speed, and filled the page cache with copies the kernel also keeps
of the FUSE file). Filesystems without O_DIRECT (tmpfs before Linux 6.6) get
plain reads and writes of the same layout. A read checks magic, version,
name, index, length and checksum: a torn or damaged file is reported, never
served.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import mmap
import os
import struct
import threading
import zlib
from collections.abc import Callable

from zosfs.data.cache.base import Block, new_block

log = logging.getLogger(__name__)

MAGIC = b"ZOSFSBLK"
VERSION = 3  # 3: a 64-bit checksum field and its kind; the data starts at the next 4 KiB boundary
HEADER = struct.Struct("<8sHHIQQQ")  # magic, version, checksum kind, name length, block index, data length, checksum
HEADER_V2 = struct.Struct("<8sHHIQQI")  # (version 2: the kind field 0, a CRC32)
CRC32, XXH3 = 1, 2  # checksum kinds
ALIGN = 4096  # O_DIRECT's offset, length and buffer alignment (a page: safe for every block device)
BOUNCE = 1024 * 1024  # the page-aligned buffer direct writes copy through, a piece at a time


def _xxh3() -> Callable[[Block], int] | None:
    """XXH3-64 of a buffer from libxxhash (ctypes releases the GIL during the call), or None."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("xxhash") or "libxxhash.so.0")
        fn = lib.XXH3_64bits
    except (OSError, AttributeError):
        return None
    fn.restype, fn.argtypes = ctypes.c_uint64, [ctypes.c_void_p, ctypes.c_size_t]

    def xxh3(data: Block) -> int:
        if isinstance(data, bytes):
            return int(fn(data, len(data)))
        if not len(data):
            return int(fn(None, 0))
        try:
            view = (ctypes.c_char * len(data)).from_buffer(data)  # (no copy; released below)
        except TypeError:  # (a read-only buffer)
            return int(fn(bytes(data), len(data)))
        try:
            return int(fn(ctypes.addressof(view), len(data)))
        finally:
            del view

    return xxh3


CHECKSUMS: dict[int, Callable[[Block], int]] = {CRC32: zlib.crc32}
if (_fast := _xxh3()) is not None:
    CHECKSUMS[XXH3] = _fast
KIND = XXH3 if XXH3 in CHECKSUMS else CRC32  # what new files get


def head_area(name_len: int) -> int:
    """Where a block file's data starts: after its header and name, at a 4 KiB boundary."""
    return -(-(HEADER.size + name_len) // ALIGN) * ALIGN


def _parse(head: bytes | bytearray | mmap.mmap) -> tuple[int, int, int, int, int, int] | None:
    """(header size, checksum kind, name length, index, data length, checksum) of a block file's head."""
    if len(head) < HEADER_V2.size or head[:8] != MAGIC:
        return None
    version = struct.unpack_from("<H", head, 8)[0]
    if version == VERSION and len(head) >= HEADER.size:
        _, _, kind, name_len, index, data_len, checksum = HEADER.unpack_from(head)
        return HEADER.size, kind, name_len, index, data_len, checksum
    if version == 2:
        _, _, _, name_len, index, data_len, checksum = HEADER_V2.unpack_from(head)
        return HEADER_V2.size, CRC32, name_len, index, data_len, checksum
    return None


def _data_start(header_size: int, name_len: int) -> int:
    return -(-(header_size + name_len) // ALIGN) * ALIGN


def read_block(path: str, name: bytes, index: int, length: int,
               buf: bytearray | mmap.mmap | None = None) -> tuple[Block | None, str]:
    """Read and check one block file (in a thread): (data, "") or (None, why).
    Into `buf` if given (a recycled buffer of `length` bytes), else into a
    new one (`new_block`: no zero-fill holding the GIL)."""
    data = buf if buf is not None and len(buf) == length else new_block(length)
    try:
        got = _read_direct(path, name, data) if isinstance(data, mmap.mmap) else None
        if got is None:
            got = _read_buffered(path, name, data)
    except FileNotFoundError:
        return None, ""  # renamed or evicted meanwhile: a plain miss
    except OSError as err:
        return None, f"unreadable ({err.strerror})"
    head, size = got
    parsed = _parse(head)
    if parsed is None:
        return None, "not a block file of a known version"
    header_size, kind, name_len, stored_index, data_len, checksum = parsed
    if head[header_size:header_size + name_len] != name or name_len != len(name) or stored_index != index:
        return None, "header names another block"
    if data_len != length or size != _data_start(header_size, name_len) + length:
        return None, "wrong length (torn write)"
    check = CHECKSUMS.get(kind)
    if check is None:
        return None, f"checksum of an unknown kind ({kind})"
    if check(data) != checksum:
        return None, "checksum mismatch"
    return data, ""


def _read_buffered(path: str, name: bytes, data: Block) -> tuple[bytes, int]:
    """Head and data of a block file by plain reads: (head, file size)."""
    with open(path, "rb", buffering=0) as f:
        head = f.read(HEADER.size + len(name))
        parsed = _parse(head)
        f.seek(_data_start(parsed[0], len(name)) if parsed else head_area(len(name)))
        f.readinto(data)  # (short if torn: the file size tells)
        os.utime(f.fileno())  # the LRU order that the next mount rebuilds
        return head, os.fstat(f.fileno()).st_size


def _read_direct(path: str, name: bytes, data: mmap.mmap) -> tuple[mmap.mmap, int] | None:
    """Head and data of a block file by one direct read into `data` (a
    page-aligned map) and a page-aligned head buffer: (head, file size), or
    None if the filesystem takes no direct reads. A last block's partial
    page is read through the head buffer."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError as err:
        if err.errno != errno.EINVAL:
            raise
        return None
    try:
        start = head_area(len(name))
        whole = len(data) - len(data) % ALIGN
        head = mmap.mmap(-1, start + ALIGN)  # (the head area, then room for a partial last page)
        try:
            with memoryview(head) as hv, memoryview(data) as dv, hv[:start] as area, dv[:whole] as body:
                got = os.preadv(fd, [area, body] if whole else [area], 0)
                if whole < len(data) and got == start + whole:
                    with hv[start:] as tail:
                        more = os.preadv(fd, [tail], start + whole)
                    n = min(more, len(data) - whole)  # (short if torn: the file size tells)
                    dv[whole:whole + n] = hv[start:start + n]
        except OSError as err:
            head.close()
            if err.errno == errno.EINVAL:
                return None  # (a filesystem that opens with O_DIRECT but refuses the read)
            raise
        os.utime(fd)  # the LRU order that the next mount rebuilds
        return head, os.fstat(fd).st_size
    finally:
        os.close(fd)


def data_length(path: str, file_size: int) -> int | None:
    """The data length a block file's header gives, if it matches the file's size."""
    try:
        with open(path, "rb", buffering=0) as f:
            head = f.read(HEADER.size)
    except OSError:
        return None
    parsed = _parse(head)
    if parsed is None:
        return None
    header_size, _, name_len, _, data_len, _ = parsed
    if _data_start(header_size, name_len) + data_len != file_size:
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
    """Writes block files for one cache directory, from any number of
    threads (each has its own bounce buffer)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.direct = hasattr(os, "O_DIRECT")  # until the filesystem refuses it
        self._local = threading.local()  # .bounce: the thread's page-aligned buffer
        self._bounces: list[mmap.mmap] = []

    def write(self, tmp: str, path: str, name: bytes, index: int, data: Block) -> bool:
        """Write block `index` of `name` as the file `path`, by way of `tmp`
        (renamed into place: never a torn file under a block's name). False
        (logged) if the disk refused it."""
        head = HEADER.pack(MAGIC, VERSION, KIND, len(name), index, len(data), CHECKSUMS[KIND](data)) + name
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
            bounce = getattr(self._local, "bounce", None)
            if bounce is None:
                bounce = self._local.bounce = mmap.mmap(-1, BOUNCE)
                self._bounces.append(bounce)
            view = memoryview(data).cast("B")
            try:
                bounce[:len(head)] = head  # (a head area is at most a few pages: the name is bounded)
                offset = len(view) - len(view) % ALIGN if isinstance(data, mmap.mmap) else 0
                with memoryview(bounce) as whole, whole[:len(head)] as area, view[:offset] as body:
                    # Head and data in one write: one allocation of the
                    # file's extent (a separate write of the head cost as
                    # much as the 8 MiB after it).
                    self._pwritev(fd, [area, body] if offset else [area], 0)
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
                BlockWriter._pwritev(fd, [piece], offset)

    @staticmethod
    def _pwritev(fd: int, pieces: list[memoryview], offset: int) -> None:
        """Write all of the page-aligned pieces, one after the other from
        `offset`, with O_DIRECT (a short write goes on where it stopped)."""
        pieces = list(pieces)
        while pieces:
            try:
                written = os.pwritev(fd, pieces, offset)
            except OSError as err:
                if err.errno == errno.EINVAL:
                    raise _NoDirect() from err
                raise
            if written <= 0 or written % ALIGN:
                raise OSError(errno.EIO, f"short direct write ({written} bytes at {offset})")
            offset += written
            while pieces and written >= len(pieces[0]):
                written -= len(pieces.pop(0))
            if written:
                pieces[0] = pieces[0][written:]

    def _no_direct(self, err: BaseException | None) -> None:
        self.direct = False
        log.info("disk cache %s: no direct writes on this filesystem (%s); using buffered writes", self.directory, err)

    def close(self) -> None:
        """Give back the bounce buffers."""
        while self._bounces:
            self._bounces.pop().close()
        self._local = threading.local()



class _NoDirect(Exception):
    """The filesystem refused a direct write."""
