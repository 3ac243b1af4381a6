"""The object-store client layer: the only package in zosfs that speaks to the
object store (and the only one that imports boto3)."""

from zosfs.zos.client import ZosClient
from zosfs.zos.errors import ZosError
from zosfs.zos.http import FileRegion, LocalFileError
from zosfs.zos.probe import Capabilities, probe
from zosfs.zos.stats import RequestStats
from zosfs.zos.values import (
    Acl,
    Appended,
    ClientConfig,
    DeleteFailure,
    Grant,
    ListEntry,
    ListPage,
    ListToken,
    ObjectInfo,
    Part,
    Retention,
    Upload,
    WriteOptions,
    next_append_etag,
)

__all__ = [
    "Acl", "Appended", "Capabilities", "ClientConfig", "DeleteFailure", "FileRegion", "LocalFileError", "Grant", "ListEntry", "ListPage", "ListToken",
    "ObjectInfo", "Part", "RequestStats", "Retention", "Upload", "WriteOptions", "ZosClient", "ZosError", "next_append_etag", "probe",
]
