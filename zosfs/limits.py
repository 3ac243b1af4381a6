"""The largest file a mount can hold, and the errno a local disk gives beyond it."""

from __future__ import annotations

import errno

from zosfs.fserror import FsError

# S3's largest object (5 TiB). The write path grows the part size of a large
# file so that 10,000 parts hold it (data/write.py MAX_PARTS), so this, not
# part_size x 10,000, is the limit; beyond it truncate and write give EFBIG,
# as ext4 does beyond its own (16 TiB - 4 KiB), checked before anything is staged.
MAX_FILE_SIZE = 5 * 2**40


def within_max_size(off: int, buf: bytes) -> bytes:
    """The part of a write that fits below MAX_FILE_SIZE, as ext4 (and the
    VFS's generic_write_check_limits) cut one: a short write that ends at the
    limit, EFBIG for a write that starts at or beyond it."""
    if off + len(buf) <= MAX_FILE_SIZE:
        return buf
    if off >= MAX_FILE_SIZE:
        raise FsError(errno.EFBIG, f"write at {off}: an object holds at most {MAX_FILE_SIZE} bytes (5 TiB)")
    return buf[:MAX_FILE_SIZE - off]
