"""Block caches of the read path: the interface and its tiers (memory, disk, both)."""

from zosfs.data.cache.base import Block, BlockId, DataCache, NoCache
from zosfs.data.cache.disk import CacheLocked, DiskCache
from zosfs.data.cache.memory import MemoryCache
from zosfs.data.cache.multilevel import MultiLevelCache

__all__ = ["Block", "BlockId", "CacheLocked", "DataCache", "DiskCache", "MemoryCache", "MultiLevelCache", "NoCache"]
