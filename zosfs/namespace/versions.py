"""The versions view: `.zos-versions/PATH/<time>_<version id>`, every version
of every file of a versioned bucket, read-only.

Each name of the mount (file or directory) is a directory in the view. It
holds the versions of the key of that name, one file each, named by the
version's last-modified time (ISO 8601, UTC, as the server wrote it) and its
version id: `2026-12-04T21:55:56.123Z_3Jz0...`; a version written while
versioning was off or suspended has the id `null`. A delete marker is an
empty file whose name ends in `_deleted`. A directory of the mount also
holds, under the same name, the view of its children. Reading a version is
a ranged GET with `versionId`; `cp` out of the view restores it.
"""

from __future__ import annotations

from typing import Any

from zosfs.namespace import names
from zosfs.namespace.views import View, VNode
from zosfs.zos import ZosClient
from zosfs.zos.versions import ObjectVersion

NAME = ".zos-versions"
DELETED = "_deleted"


def version_name(v: ObjectVersion) -> str:
    """The file name of one version: '<ISO time>_<version id>[_deleted]'."""
    stamp = v.last_modified_text or "unknown-time"
    return f"{stamp}_{v.version_id}{DELETED if v.deleted else ''}"


def _hidden(key: str) -> bool:
    """zosfs's own objects (the change feed, the metadata index) are not shown."""
    return names.reserved(key)  # everything zosfs keeps is under one prefix


class VersionsView(View):
    """Versions of the keys under the mount's prefix."""

    name = NAME
    immutable = True  # (a version id names one content forever)

    def __init__(self, zos: ZosClient, root_prefix: str) -> None:
        self.zos = zos
        self.root_prefix = root_prefix

    def _prefix(self, node: VNode) -> str:
        """The key prefix of the directory a view directory stands for."""
        return node.data.get("prefix", self.root_prefix)

    def _child_dir(self, parent: VNode, name: str) -> dict[str, Any]:
        return {"is_dir": True, "mtime": parent.mtime,
                "data": {"prefix": self._prefix(parent) + name + "/", "key": self._prefix(parent) + name}}

    @staticmethod
    def _version_file(v: ObjectVersion) -> dict[str, Any]:
        return {"is_dir": False, "size": 0 if v.deleted else v.size, "mtime": v.last_modified,
                "data": {"key": v.key, "version_id": v.version_id, "deleted": v.deleted}}

    async def _own_versions(self, key: str) -> list[ObjectVersion]:
        """The versions of exactly `key` (those of keys it prefixes are skipped)."""
        found = []
        async for page in self.zos.list_versions(key, "/"):
            found += [v for v in page.versions if v.key == key]
            if page.versions and page.versions[-1].key > key:
                break  # (keys come in order: none later is `key`)
        return found

    async def list(self, node: VNode) -> dict[str, dict[str, Any]]:
        prefix = self._prefix(node)
        children: dict[str, dict[str, Any]] = {}
        if "key" in node.data:
            for v in await self._own_versions(node.data["key"]):
                children[version_name(v)] = self._version_file(v)
        async for page in self.zos.list_versions(prefix, "/"):
            for v in page.versions:
                rel = v.key[len(prefix):]
                if rel and not _hidden(v.key):  # ('' is the directory's own marker)
                    children.setdefault(rel, self._child_dir(node, rel))
            for p in page.prefixes:
                rel = p[len(prefix):].rstrip("/")
                if rel and not _hidden(p):
                    children.setdefault(rel, self._child_dir(node, rel))
        return children

    async def find(self, node: VNode, name: str) -> dict[str, Any] | None:
        if "key" in node.data and "_" in name:  # perhaps the name of one of its versions
            for v in await self._own_versions(node.data["key"]):
                if version_name(v) == name:
                    return self._version_file(v)
        key = self._prefix(node) + name
        if _hidden(key):
            return None
        async for page in self.zos.list_versions(key, "/"):
            if any(v.key == key for v in page.versions) or key + "/" in page.prefixes:
                return self._child_dir(node, name)
            if page.versions and page.versions[-1].key > key + "/":
                break
        return None

    async def read(self, node: VNode, held: Any, off: int, size: int) -> bytes | bytearray | memoryview:
        if node.data.get("deleted") or off >= node.size:
            return b""
        return await self.zos.get(node.data["key"], off, min(off + size, node.size), version_id=node.data["version_id"])
