"""What every request family of `ZosClient` shares: the configuration and
the two transports.

`ZosClient` is assembled from one class per request family (objects,
append, copies, multipart, listing, control), each in its own module, as
mountpoint-s3's client crate puts each request family in its own file as an
`impl` block of a single client. Every family derives from `ClientCore`; a
family that uses another derives from it too (an append HEADs the object, so
`AppendRequests` derives from `ObjectRequests`), so the dependencies between
families are written down where the class is.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from zosfs.zos import wire
from zosfs.zos.errors import bad_answer
from zosfs.zos.http import Body, Response
from zosfs.zos.stats import Observer
from zosfs.zos.transport import BotoTransport, HttpTransport
from zosfs.zos.values import ClientConfig


class ClientCore:
    """Configuration and transports of one client, for the request families."""

    def __init__(self, config: ClientConfig, observer: Observer | None = None) -> None:
        self.config = config
        self.bucket = config.bucket
        self.transport = HttpTransport(config, observer)
        self.boto = BotoTransport(config, observer)
        self.http = self.transport.http
        self.signer = self.transport.signer
        # Tags of multipart uploads in progress, set when they complete (RGW
        # ignores x-amz-tagging on CreateMultipartUpload).
        self._upload_tags: dict[str, dict[str, str]] = {}
        # Whether listings use ListObjects V1; with list_api=auto this turns
        # True when the endpoint shows it does not honour V2 (`zosfs.zos.listing`).
        self.list_v1 = config.list_api == "v1"

    async def _request(
        self,
        op: str,
        method: str,
        key: str,
        *,
        query: dict[str, str | None] | None = None,
        headers: dict[str, str] | None = None,
        body: Body = None,
        into: bytearray | memoryview | None = None,
        attempts: int | None = None,
        error_key: str | None = None,
        retry_timeouts: bool = True,
    ) -> Response:
        """One request on the lean HTTP path (see `HttpTransport.request`)."""
        return await self.transport.request(
            op, method, key, query=query, headers=headers, body=body, into=into, attempts=attempts,
            error_key=error_key, retry_timeouts=retry_timeouts,
        )

    async def _boto_call(self, op: str, key: str, method: str, **params: Any) -> dict[str, Any]:
        """One boto3 call on the bucket (see `BotoTransport.call`)."""
        return await self.boto.call(op, key, method, **params)

    @staticmethod
    def _answer(resp: Response, op: str, key: str) -> ET.Element:
        """The XML of a successful answer; a ZosError (never a traceback) when
        it is not XML."""
        try:
            return wire.xml(resp.body)
        except ET.ParseError as err:
            raise bad_answer(op, key, f"not XML ({err})") from None

    def close(self) -> None:
        self.transport.close()
