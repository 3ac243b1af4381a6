"""The image view: `.zos-process/SPEC/PATH`, the mount's files as ZOS's image
processing makes them (a GET with `x-zos-process=image/SPEC`), read-only.

`SPEC` is the manual's processing string without `image/`, operations
separated by `%2F` (`zosfs.zos.process`): `.zos-process/resize,w_200/a.jpg`.
The view's root lists nothing (any valid spec can be looked up); below a
spec, directories list as the mount's do. A file's size is that of the
processed result: the lookup (or a getattr once its attributes expire) GETs
it, and the bytes are kept per (key, ETag, spec), so that a later read is
served from them and a changed source is processed again.
"""

from __future__ import annotations

import errno
import time
from typing import Any

import cachetools

from zosfs.fserror import FsError
from zosfs.namespace import names
from zosfs.namespace.views import View, VNode
from zosfs.zos import ZosClient, ZosError
from zosfs.zos.process import SpecError, process_param

NAME = ".zos-process"
CACHE_BYTES = 64 * 1024 * 1024  # processed results kept (a handle keeps its own while open)


def _hidden(key: str) -> bool:
    return names.reserved(key)  # everything zosfs keeps is under one prefix


class ImageView(View):
    """Processed images of the keys under the mount's prefix."""

    name = NAME
    direct_io = True

    def __init__(self, zos: ZosClient, root_prefix: str, attr_timeout: float) -> None:
        self.zos = zos
        self.root_prefix = root_prefix
        self.attr_timeout = attr_timeout
        self.results: cachetools.LRUCache[tuple[str, str, str], tuple[bytes, str | None]] = cachetools.LRUCache(
            CACHE_BYTES, getsizeof=lambda r: len(r[0]) or 1)
        self.fetches = 0  # processed GETs sent (the tests check the cache with it)

    async def list(self, node: VNode) -> dict[str, dict[str, Any]]:
        if node.data.get("root"):
            return {}  # (specs are looked up, not listed)
        prefix = node.data["prefix"]
        children: dict[str, dict[str, Any]] = {}
        async for page in self.zos.list_all(prefix, "/"):
            for e in page.entries:
                rel = e.key[len(prefix):]
                if rel and "/" not in rel and not _hidden(e.key):
                    children[rel] = self._file(node, e.key, e.etag, e.last_modified)
            for p in page.prefixes:
                rel = p[len(prefix):].rstrip("/")
                if rel and not _hidden(p):
                    children.setdefault(rel, self._dir(node, p))
        return children

    def _dir(self, parent: VNode, prefix: str) -> dict[str, Any]:
        return {"is_dir": True, "mtime": parent.mtime,
                "data": {"prefix": prefix, "process": parent.data["process"]}}

    def _file(self, parent: VNode, key: str, etag: str, mtime: float) -> dict[str, Any]:
        return {"is_dir": False, "size": 0, "size_known": False, "mtime": mtime,
                "data": {"key": key, "etag": etag, "process": parent.data["process"], "checked": 0.0}}

    async def find(self, node: VNode, name: str) -> dict[str, Any] | None:
        if node.data.get("root"):
            try:
                process = process_param(name)
            except SpecError as err:
                raise FsError(errno.EINVAL, f"{NAME}/{name}: {err}") from None
            return {"is_dir": True, "mtime": node.mtime, "data": {"prefix": self.root_prefix, "process": process}}
        key = node.data["prefix"] + name
        if _hidden(key):
            return None
        try:
            info = await self.zos.head(key)
            return self._file(node, key, info.etag, info.last_modified)
        except ZosError as err:
            if err.errno != errno.ENOENT:
                raise
        page = await self.zos.list(key + "/", None, max_keys=1)
        return self._dir(node, key + "/") if page.entries or page.prefixes else None

    async def _result(self, node: VNode) -> tuple[bytes, str | None]:
        """The processed bytes of the file's current version."""
        d = node.data
        cache_key = (d["key"], d["etag"], d["process"])
        found = self.results.get(cache_key)
        if found is None:
            self.fetches += 1
            found = await self.zos.get_processed_object(d["key"], d["process"])
            if len(found[0]) <= CACHE_BYTES:
                self.results[cache_key] = found
        return found

    async def refresh(self, node: VNode) -> None:
        d = node.data
        if node.size_known and time.monotonic() - d["checked"] < self.attr_timeout:
            return
        if node.size_known or d["checked"]:
            info = await self.zos.head(d["key"])  # the source may have changed since
            d["etag"], node.mtime = info.etag, info.last_modified
        body, _ = await self._result(node)
        node.size, node.size_known, d["checked"] = len(body), True, time.monotonic()

    async def open(self, node: VNode) -> Any:
        await self.refresh(node)
        body, _ = await self._result(node)
        node.size = len(body)
        return body

    async def read(self, node: VNode, held: Any, off: int, size: int) -> bytes | bytearray | memoryview:
        return memoryview(held)[off:off + size]
