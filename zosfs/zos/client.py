"""The ZOS client: typed, async operations on one bucket, in one class.

`ZosClient` is the one face the rest of zosfs uses. It is assembled from
the request families, one module each (see `zosfs.zos.core`):

- the data path, over the small HTTP client (`zosfs.zos.http`, signed by
  `zosfs.zos.signing`): `objects` (HEAD, GET, PUT, DELETE, delete-many),
  `append`, `copies`, `multipart`, `listing`, `versions` (ListObjectVersions,
  GET of one version) and `process` (GET through ZOS's image processing). These are the requests a
  filesystem makes thousands of times; see `http.py` for why botocore is too
  expensive there.
- the control path, through boto3 in worker threads: `control` (tags, ACLs,
  retention, legal hold, restore, bucket versioning and object lock, listing
  uploads and parts), `lifecycle` (zosfs's per-prefix rules among the
  bucket's) and `presign` (presigned GET URLs and POST forms, computed
  locally). These requests are rare and their XML is where botocore's
  models earn their keep.

Every method raises only `ZosError`. Retries and error translation live in
`zosfs.zos.transport` and `zosfs.zos.errors`; appends are never repeated
blindly (see `zosfs.zos.append`).
"""

from __future__ import annotations

from zosfs.zos.append import AppendRequests
from zosfs.zos.copies import CopyRequests
from zosfs.zos.lifecycle import LifecycleRequests
from zosfs.zos.listing import ListRequests
from zosfs.zos.presign import PresignRequests
from zosfs.zos.process import ProcessRequests
from zosfs.zos.versions import VersionRequests


class ZosClient(
    AppendRequests, CopyRequests, ListRequests, PresignRequests, LifecycleRequests, VersionRequests, ProcessRequests
):
    """Typed operations on one bucket of a ZOS (or RGW) endpoint.

    Use from a single trio run: `async with ZosClient(cfg) as zos: ...`.
    """

    async def __aenter__(self) -> ZosClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
