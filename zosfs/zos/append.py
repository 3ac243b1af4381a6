"""Append upload (`PUT ?append&position=N`), RGW's extension that ZOS offers.

An append is not idempotent, so it gets its own retry logic instead of the
transport's: after an ambiguous failure it reads the object's real length
before doing anything else (FACTS.md, "Append upload, as RGW does it").
"""

from __future__ import annotations

import hashlib
import logging
import os

import trio

from zosfs.zos import wire
from zosfs.zos.errors import ZosError, backoff, from_code
from zosfs.zos.http import Body, FileRegion
from zosfs.zos.objects import ObjectRequests
from zosfs.zos.values import Appended, WriteOptions

log = logging.getLogger(__name__)

MiB = 1024 * 1024


async def md5_hex(body: Body) -> str:
    """The MD5 of a request body (the ETag of an append whose answer was lost)."""
    if not isinstance(body, FileRegion):
        return hashlib.md5(body or b"").hexdigest()

    def digest() -> str:
        md5, offset, left = hashlib.md5(), body.offset, body.length
        while left:
            chunk = os.pread(body.fd, min(left, MiB), offset)
            if not chunk:
                break
            md5.update(chunk)
            offset += len(chunk)
            left -= len(chunk)
        return md5.hexdigest()

    return await trio.to_thread.run_sync(digest)


class AppendRequests(ObjectRequests):
    """Appends, exactly once each (HEAD, from ObjectRequests, finds the real length)."""

    async def append(self, key: str, position: int, body: Body, opts: WriteOptions | None = None) -> Appended:
        """Append `body` at `position`; returns the new length and the chunk's MD5.

        Position 0 creates an appendable object. An append is not idempotent,
        so after an ambiguous failure (connection lost, timeout, 5xx) this
        reads the object's real length before anything else: if it already
        grew by exactly the body's length the append had been applied; if it
        is still `position` the append is sent again; anything else is a
        PositionNotEqualToLength error carrying the real length. So the same
        bytes are never appended twice and none are skipped.
        """
        headers = (opts or WriteOptions()).headers()
        length = body.length if isinstance(body, FileRegion) else len(body) if body is not None else 0
        expected = position + length
        query: dict[str, str | None] = {"append": None, "position": str(position)}
        for attempt in range(self.config.max_attempts):
            try:
                resp = await self._request(
                    "AppendObject", "PUT", key, query=query, headers=headers, body=body or b"", attempts=1
                )
                value = resp.headers.get(self.config.append_position_header, "")
                return Appended(int(value) if value.isdigit() else expected, wire.unquote_etag(resp.headers.get("etag")))
            except ZosError as err:
                if err.code == "PositionNotEqualToLength":
                    # A retry may find its own earlier attempt already applied.
                    if attempt > 0 and length and err.next_position == expected:
                        return Appended(expected, await md5_hex(body))
                    raise
                if not err.transient or attempt == self.config.max_attempts - 1:
                    raise
                log.warning("append to %r at %d failed (%s); checking the object's length", key, position, err.code)
            await trio.sleep(backoff(attempt + 1))
            real = await self._real_length(key)
            if real == expected and length:
                return Appended(expected, await md5_hex(body))  # applied, but its answer was lost
            # (A zero-length append changes no length: it is simply sent again.)
            if real != position:
                err = from_code("PositionNotEqualToLength", 409, op="AppendObject", key=key)
                err.next_position = real
                raise err
        raise AssertionError("unreachable")

    async def _real_length(self, key: str) -> int:
        try:
            info = await self.head(key)
        except ZosError as err:
            if err.errno == 2:  # ENOENT: nothing was appended yet
                return 0
            raise
        return info.next_append_position if info.next_append_position is not None else info.size
