"""What is mounted: a bucket and a prefix, and the name of its local state.

Its own module because the lifecycle, the log setup and the command line all
name a mount by it, and none of them should import the others for that.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zosfs.options import Options


@dataclass(frozen=True)
class Source:
    bucket: str
    prefix: str  # "" or "some/prefix/"

    @classmethod
    def parse(cls, text: str) -> Source:
        """'BUCKET', 'BUCKET:/PREFIX' or 'BUCKET:PREFIX'."""
        bucket, _, prefix = text.partition(":")
        bucket = bucket.strip()
        if not bucket or "/" in bucket or len(bucket) > 255:
            raise ValueError(f"not a bucket name: {bucket!r} (expected BUCKET or BUCKET:/PREFIX)")
        parts = [p for p in prefix.split("/") if p]
        if any(p in (".", "..") for p in parts):
            # (Keys under such a prefix are not names (Semantics: Names), and
            # HTTP software on the way may resolve the segments in the URL.)
            raise ValueError(f"prefix {prefix!r}: '.' and '..' are not allowed in a prefix")
        prefix = "/".join(parts)
        return cls(bucket, prefix + "/" if prefix else "")

    def __str__(self) -> str:
        return f"{self.bucket}:/{self.prefix}" if self.prefix else self.bucket


def state_name(opts: Options, source: Source) -> str:
    """One mount's name for its files (metadata cache, staging, log): the
    bucket, and a hash that tells apart endpoints and prefixes."""
    ident = f"{opts.endpoint}|{source.bucket}|{source.prefix}"
    return f"{source.bucket}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}"
