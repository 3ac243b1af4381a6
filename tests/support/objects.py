"""Test data and looking at objects directly (not through a mount)."""

from __future__ import annotations

import random
from typing import Any


def pattern(size: int, seed: int) -> bytes:
    """`size` reproducible pseudo-random bytes."""
    return random.Random(seed).randbytes(size)


def get(s3: Any, bucket: str, key: str) -> bytes:
    """An object's bytes, read with boto3."""
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
