"""What the bucket allows, found out once at mount time.

The probe answers three questions before anything is mounted: can we reach
the bucket at all (with a message a person can act on when not), can the
write path use append upload (RGW refuses it in versioned buckets, so in
every object-lock bucket too), and does the endpoint honour ListObjects V2
(the ZOS SDK manual documents only V1; see `zosfs.zos.listing`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from zosfs.zos.client import ZosClient
from zosfs.zos.errors import CONNECTION_FAILED, TIMEOUT, ZosError, from_code

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Capabilities:
    endpoint: str
    bucket: str
    versioning: str | None  # "Enabled", "Suspended" or None (never enabled)
    object_lock: bool
    append: bool
    list_api: str | None = None  # "v2" or "v1": the ListObjects the endpoint honours; None: not found out
    list_used: str = "v2"  # what listings use: list_api, unless the list_api option says otherwise

    def describe(self) -> str:
        """Lines for `zosfs check`."""
        return "\n".join(
            [
                f"endpoint:    {self.endpoint}",
                f"bucket:      {self.bucket}",
                f"versioning:  {self.versioning or 'off'}",
                f"object lock: {'enabled' if self.object_lock else 'off'}",
                f"append:      {'available' if self.append else 'unavailable (versioned or object-lock bucket)'}",
                f"listing:     {self.describe_listing()}",
            ]
        )

    def describe_listing(self) -> str:
        """One phrase: which ListObjects listings use, and why."""
        if self.list_api is None:
            return f"ListObjects {self.list_used.upper()} (the endpoint's support for V2 was not found out)"
        honoured = "honours V2" if self.list_api == "v2" else "does not honour V2"
        return f"ListObjects {self.list_used.upper()} (the endpoint {honoured})"


def _explain(err: ZosError, client: ZosClient) -> ZosError:
    """Rewrite a failed HeadBucket into a message that says what to fix."""
    endpoint, bucket = client.config.endpoint, client.bucket
    if err.code in (CONNECTION_FAILED, TIMEOUT):
        err.message = f"cannot reach the endpoint {endpoint} ({err.message}); check the endpoint option and the network"
    elif err.code in ("NoSuchBucket", "NotFound"):
        err.message = f"bucket {bucket!r} does not exist at {endpoint}"
    elif err.code == "RequestTimeTooSkewed":
        err.message = "this machine's clock differs too much from the server's; fix the clock (NTP) and retry"
    elif err.code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
        err.message = f"the server at {endpoint} rejected the credentials: {err.message}"
    elif err.code in ("AccessDenied", "Forbidden"):
        err.message = f"access to bucket {bucket!r} denied for these credentials"
    err.op, err.key = "mount", bucket
    return err


async def probe(client: ZosClient) -> Capabilities:
    """Check the bucket answers and learn what it allows. Raises ZosError."""
    # The first answer is bounded by connect_timeout, not read_timeout: a
    # server that accepts connections but never answers a HEAD (a wrong port,
    # a stuck proxy) is as unreachable as one that refuses them, and the user
    # should hear so in seconds, not after a minute.
    bound = min(client.config.connect_timeout, client.config.read_timeout)
    try:
        with trio.move_on_after(bound) as scope:
            await client.head_bucket(retry_timeouts=False)
        if scope.cancelled_caught:
            raise from_code(TIMEOUT, None, op="HeadBucket",
                            detail=f"it accepted the connection but sent no answer within {bound:g} s")
    except ZosError as err:
        if err.status in (400, 403):
            # HEAD answers have no body; a GET says which 403 this is
            # (unknown key, bad secret, clock skew, or a plain denial).
            try:
                await client.list(max_keys=1)
            except ZosError as detailed:
                err = detailed
        raise _explain(err, client) from None
    try:
        versioning = await client.get_versioning()
        lock = await client.get_object_lock()
    except ZosError as err:
        raise _explain(err, client) from None
    object_lock = bool(lock and lock.get("ObjectLockEnabled") == "Enabled")
    append = versioning is None and not object_lock
    try:
        list_api: str | None = await client.detect_list_api()
    except ZosError as err:
        # Listing may be denied where the rest is allowed; the mount can still
        # serve what it may, and every listing still reads answers by their form.
        log.warning("could not find out which ListObjects the endpoint honours: %s", err)
        list_api = None
    list_used = "v1" if client.list_v1 else "v2"
    return Capabilities(client.config.endpoint, client.bucket, versioning, object_lock, append, list_api, list_used)


async def prefix_is_empty(client: ZosClient, prefix: str) -> bool:
    """True when no key starts with `prefix` (a mount of a prefix that does
    not exist yet: often a typo, so the mount warns)."""
    if not prefix:
        return False
    page = await client.list(prefix, delimiter=None, max_keys=1)
    return not page.entries and not page.prefixes
