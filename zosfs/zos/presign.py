"""Presigned requests: a GET URL for one object and a POST form for uploads
under a prefix (the SDK manual's `getSignedUrl` and `createPresignedPost`).

Presigning is local computation, no request is sent; it runs in a worker
thread because the presigning boto3 client takes ~0.2 s to build the first
time. Nothing here logs a URL, a policy or a signature: a link is a
credential until it expires.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import trio

from zosfs.zos.core import ClientCore
from zosfs.zos.errors import from_boto

MAX_EXPIRY = 7 * 86400  # SigV4's limit; zosfs holds V2 links to it too


@dataclass(frozen=True)
class UploadForm:
    """An HTML-form upload (POST) that any client may send until `expires`:
    every field, then the file as the form's last field `file`."""

    url: str
    fields: dict[str, str]
    key_prefix: str
    expires: float  # epoch seconds


class PresignRequests(ClientCore):
    """Presigned GET URLs and POST upload forms."""

    def _expiry(self, seconds: int | None) -> int:
        value = self.config.url_expiry if seconds is None else seconds
        return max(1, min(int(value), MAX_EXPIRY))

    async def presign_get(self, key: str, expires_in: int | None = None) -> str:
        """A URL that GETs `key` without credentials for `expires_in` seconds
        (default: the mount's url_expiry; at most 7 days)."""
        seconds = self._expiry(expires_in)

        def sign() -> str:
            return self.boto.presigner().generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=seconds
            )

        try:
            return await trio.to_thread.run_sync(sign)
        except Exception as exc:
            raise from_boto(exc, "PresignGet", key) from None

    async def presign_post(self, prefix: str, expires_in: int | None = None) -> UploadForm:
        """A form that uploads files as `prefix` + the file's name (the
        policy allows any key starting with `prefix`, nothing else)."""
        seconds = self._expiry(expires_in)

        def sign() -> dict:
            return self.boto.presigner().generate_presigned_post(
                self.bucket, prefix + "${filename}",
                Conditions=[["starts-with", "$key", prefix]], ExpiresIn=seconds,
            )

        try:
            post = await trio.to_thread.run_sync(sign)
        except Exception as exc:
            raise from_boto(exc, "PresignPost", prefix) from None
        return UploadForm(post["url"], dict(post["fields"]), prefix, time.time() + seconds)
