"""The control path: tags, ACLs, retention, legal hold, restore, bucket
versioning and object lock, and listing multipart uploads and their parts.

These requests are rare and their XML is where botocore's models earn their
keep, so they go through boto3 (`BotoTransport`, in worker threads). One
exception: GetObjectAcl goes over the lean path, because renaming a
directory reads the ACL of every object in it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from zosfs.zos import wire
from zosfs.zos.core import ClientCore
from zosfs.zos.errors import ZosError
from zosfs.zos.values import Acl, Grant, Part, Retention, Upload

_NO_LOCK_CONFIG = ("NoSuchObjectLockConfiguration", "ObjectLockConfigurationNotFoundError")


class ControlRequests(ClientCore):
    """Settings of objects and of the bucket, and multipart bookkeeping."""

    async def list_uploads(self, prefix: str = "") -> list[Upload]:
        """Every multipart upload in progress under `prefix`."""
        uploads: list[Upload] = []
        params: dict[str, Any] = {"Prefix": prefix}
        while True:
            r = await self._boto_call("ListMultipartUploads", prefix, "list_multipart_uploads", **params)
            uploads += [Upload(u["Key"], u["UploadId"], u["Initiated"].timestamp()) for u in r.get("Uploads", [])]
            if not r.get("IsTruncated"):
                return uploads
            params["KeyMarker"] = r.get("NextKeyMarker")
            params["UploadIdMarker"] = r.get("NextUploadIdMarker")

    async def list_parts(self, key: str, upload_id: str) -> list[Part]:
        """The parts uploaded so far to one multipart upload."""
        parts: list[Part] = []
        params: dict[str, Any] = {"Key": key, "UploadId": upload_id}
        while True:
            r = await self._boto_call("ListParts", key, "list_parts", **params)
            parts += [Part(p["PartNumber"], wire.unquote_etag(p.get("ETag")), int(p.get("Size", 0)))
                      for p in r.get("Parts", [])]
            if not r.get("IsTruncated"):
                return parts
            params["PartNumberMarker"] = r.get("NextPartNumberMarker")

    async def get_tags(self, key: str) -> dict[str, str]:
        """The object's tags (empty when it has none)."""
        r = await self._boto_call("GetObjectTagging", key, "get_object_tagging", Key=key)
        return {t["Key"]: t["Value"] for t in r.get("TagSet", [])}

    async def put_tags(self, key: str, tags: dict[str, str]) -> None:
        """Replace the object's tags."""
        tag_set = [{"Key": k, "Value": v} for k, v in tags.items()]
        await self._boto_call("PutObjectTagging", key, "put_object_tagging", Key=key, Tagging={"TagSet": tag_set})

    async def delete_tags(self, key: str) -> None:
        """Remove all of the object's tags."""
        await self._boto_call("DeleteObjectTagging", key, "delete_object_tagging", Key=key)

    async def get_acl(self, key: str) -> Acl:
        """The object's ACL. On the lean path: renaming a directory reads the
        ACL of every object in it, to carry it over to the copies."""
        resp = await self._request("GetObjectAcl", "GET", key, query={"acl": None})
        root = self._answer(resp, "GetObjectAcl", key)
        grants = []
        for g in root.iterfind("AccessControlList/Grant"):
            grantee = g.find("Grantee")
            if grantee is None:
                continue
            kind = next((v for k, v in grantee.attrib.items() if k.endswith("type")), "")
            ident = wire.text(grantee, "ID") or wire.text(grantee, "URI") or wire.text(grantee, "EmailAddress")
            grants.append(Grant(wire.text(g, "Permission"), kind, ident, wire.text(grantee, "DisplayName")))
        return Acl(wire.text(root, "Owner/ID"), wire.text(root, "Owner/DisplayName"), tuple(grants))

    async def put_acl(self, key: str, *, canned: str | None = None, acl: Acl | None = None) -> None:
        """Set a canned ACL by name, or a full ACL (owner and grants)."""
        params: dict[str, Any] = {"Key": key}
        if canned is not None:
            params["ACL"] = canned
        elif acl is not None:
            fields = {"CanonicalUser": "ID", "Group": "URI", "AmazonCustomerByEmail": "EmailAddress"}
            params["AccessControlPolicy"] = {
                "Owner": {"ID": acl.owner_id, "DisplayName": acl.owner_name},
                "Grants": [
                    {"Grantee": {"Type": g.grantee_type, fields[g.grantee_type]: g.grantee}, "Permission": g.permission}
                    for g in acl.grants
                ],
            }
        else:
            raise ValueError("put_acl needs canned or acl")
        await self._boto_call("PutObjectAcl", key, "put_object_acl", **params)

    async def get_retention(self, key: str) -> Retention | None:
        """The object's retention, or None if it has none."""
        try:
            r = await self._boto_call("GetObjectRetention", key, "get_object_retention", Key=key)
        except ZosError as err:
            if err.code in _NO_LOCK_CONFIG:
                return None
            raise
        ret = r.get("Retention") or {}
        if not ret.get("Mode"):
            return None
        until = ret.get("RetainUntilDate")
        return Retention(ret["Mode"], until.timestamp() if until else 0.0)

    async def put_retention(self, key: str, retention: Retention | None, bypass_governance: bool = False) -> None:
        """Set (or with None, clear) an object's retention.

        RGW 16.2 cannot clear one (MalformedXML): with GOVERNANCE and the
        bypass it can only be shortened."""
        body: dict[str, Any] = {}
        if retention is not None:
            body = {"Mode": retention.mode, "RetainUntilDate": dt.datetime.fromtimestamp(retention.until, dt.timezone.utc)}
        params: dict[str, Any] = {"Key": key, "Retention": body}
        if bypass_governance:
            params["BypassGovernanceRetention"] = True
        await self._boto_call("PutObjectRetention", key, "put_object_retention", **params)

    async def get_legal_hold(self, key: str) -> bool:
        """Whether the object is under legal hold."""
        try:
            r = await self._boto_call("GetObjectLegalHold", key, "get_object_legal_hold", Key=key)
        except ZosError as err:
            if err.code in _NO_LOCK_CONFIG:
                return False
            raise
        return (r.get("LegalHold") or {}).get("Status") == "ON"

    async def put_legal_hold(self, key: str, on: bool) -> None:
        """Put the object under legal hold, or release it."""
        await self._boto_call(
            "PutObjectLegalHold", key, "put_object_legal_hold", Key=key, LegalHold={"Status": "ON" if on else "OFF"}
        )

    async def restore(self, key: str, days: int, tier: str = "Standard") -> None:
        """Ask for an archived (GLACIER) object to be restored for `days` days."""
        await self._boto_call(
            "RestoreObject", key, "restore_object",
            Key=key, RestoreRequest={"Days": days, "GlacierJobParameters": {"Tier": tier}},
        )

    async def get_versioning(self) -> str | None:
        """'Enabled', 'Suspended', or None if versioning was never turned on."""
        r = await self._boto_call("GetBucketVersioning", "", "get_bucket_versioning")
        return r.get("Status")

    async def put_versioning(self, enabled: bool) -> None:
        """Turn the bucket's versioning on, or suspend it."""
        await self._boto_call(
            "PutBucketVersioning", "", "put_bucket_versioning",
            VersioningConfiguration={"Status": "Enabled" if enabled else "Suspended"},
        )

    async def get_object_lock(self) -> dict[str, Any] | None:
        """The bucket's object lock configuration, or None if it has none."""
        try:
            r = await self._boto_call("GetObjectLockConfiguration", "", "get_object_lock_configuration")
        except ZosError as err:
            if err.code in ("ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration") or err.status == 404:
                return None
            raise
        return r.get("ObjectLockConfiguration")
