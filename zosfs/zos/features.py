"""`zosfs check`'s table of what the endpoint can do, found out by trying.

The mount's own probe (`zosfs.zos.probe`) reads settings only; this one
also writes: it stores one small object (a 1x1 PNG) under the checked
prefix, appends to it, GETs it with `x-zos-process=image/info` (ZOS's image
processing; RGW ignores the parameter and sends the bytes unchanged),
fetches it through a presigned URL, and deletes it again.
"""

from __future__ import annotations

import ssl
import struct
import urllib.error
import urllib.request
import uuid
import zlib
from dataclasses import dataclass

import trio

from zosfs.zos.client import ZosClient
from zosfs.zos.errors import ZosError
from zosfs.zos.probe import Capabilities

# `info` answers JSON whatever the image: a server that processes images
# cannot send the PNG back unchanged (a resize of a 1x1 image could).
PROCESS = "image/info"


@dataclass(frozen=True)
class Feature:
    name: str
    supported: str  # "yes", "no" or "?" (could not be found out)
    detail: str = ""


def tiny_png() -> bytes:
    """A valid 1x1 grey PNG (67 bytes), so that a server that does process
    images has an image to process."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b"")


def format_table(features: list[Feature]) -> str:
    """The table `zosfs check` prints."""
    rows = [("capability", "supported", "detail")] + [(f.name, f.supported, f.detail) for f in features]
    wide = [max(len(r[i]) for r in rows) for i in range(2)]
    return "\n".join(f"{r[0]:<{wide[0]}}  {r[1]:<{wide[1]}}  {r[2]}".rstrip() for r in rows)


async def check_features(client: ZosClient, caps: Capabilities, prefix: str = "") -> list[Feature]:
    """Every capability in the table, trying the ones that settings do not tell."""
    listing = "?" if caps.list_api is None else "yes" if caps.list_api == "v2" else "no"
    features = [
        Feature("ListObjects V2", listing, "" if caps.list_api else "could not be found out"),
        Feature("versioning", "yes" if caps.versioning else "no", caps.versioning or "off (never enabled)"),
        Feature("object lock", "yes" if caps.object_lock else "no"),
    ]
    features.append(await _version_listing(client))
    try:
        features.append(Feature("lifecycle rules", "yes" if await client.lifecycle_supported() else "no"))
    except ZosError as err:
        features.append(Feature("lifecycle rules", "?", f"{err.code}: {err.message}"))
    key = f"{prefix}.zosfs-check-{uuid.uuid4().hex}"
    body = tiny_png()
    try:
        try:
            await client.append(key, 0, body)
            features.append(Feature("append upload", "yes"))
        except ZosError as err:
            features.append(Feature("append upload", "no", f"{err.code}"))
            try:
                await client.put(key, body)
            except ZosError as put_err:
                reason = f"could not store a test object ({put_err.code})"
                return features + [Feature("image processing", "?", reason), Feature("presigned URLs", "?", reason)]
        features.append(await _image_processing(client, key, body))
        features.append(await _presigned(client, key, body))
    finally:
        with trio.CancelScope(shield=True):
            try:
                await client.delete(key)
            except ZosError:
                pass
    return features


async def _version_listing(client: ZosClient) -> Feature:
    """Whether ListObjectVersions answers (what the versions view lists with)."""
    try:
        async for _ in client.list_versions("", "/", max_keys=1):
            break
    except ZosError as err:
        return Feature("ListObjectVersions", "no", f"refused ({err.code})")
    return Feature("ListObjectVersions", "yes", "the versions view `.zos-versions/` can list")


async def _image_processing(client: ZosClient, key: str, body: bytes) -> Feature:
    try:
        got, _ = await client.get_processed_object(key, PROCESS)
    except ZosError as err:
        return Feature("image processing", "no", f"GET with x-zos-process refused ({err.code})")
    if bytes(got) == body:
        return Feature("image processing", "no", "x-zos-process ignored (the image came back unchanged)")
    return Feature("image processing", "yes", f"x-zos-process={PROCESS} answered; the image view `.zos-process/` works")


async def _presigned(client: ZosClient, key: str, body: bytes) -> Feature:
    url = await client.presign_get(key, 60)
    verify = client.config.verify_tls
    context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    if verify is False:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE

    def fetch() -> bytes:
        with urllib.request.urlopen(url, timeout=client.config.read_timeout, context=context) as answer:
            return answer.read()

    try:
        got = await trio.to_thread.run_sync(fetch)
    except urllib.error.HTTPError as err:
        return Feature("presigned URLs", "no", f"a presigned GET was refused (HTTP {err.code})")
    except (urllib.error.URLError, OSError) as err:
        return Feature("presigned URLs", "?", f"a presigned GET failed ({err})")
    if got != body:
        return Feature("presigned URLs", "no", "a presigned GET returned other bytes")
    return Feature("presigned URLs", "yes", "a presigned GET fetched the object without credentials")
