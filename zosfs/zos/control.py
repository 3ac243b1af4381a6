"""The control path: tags, ACLs, retention, legal hold, restore, bucket
versioning and object lock, and listing multipart uploads and their parts.

These requests are rare and their XML is where botocore's models earn their
keep, so they go through boto3 (`BotoTransport`, in worker threads). The
exceptions go over the lean path: GetObjectAcl, because renaming a directory
reads the ACL of every object in it; GetBucketVersioning and
GetObjectLockConfiguration, because every mount asks them at start and
importing boto3 for them alone cost each mount about 23 MiB; and
ListMultipartUploads, which must ask for URL-encoded keys (botocore does not
for that request, and an upload of a key holding a control character would
make its answer unreadable).
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from typing import Any

from zosfs.zos import wire
from zosfs.zos.core import ClientCore
from zosfs.zos.errors import ZosError, bad_answer
from zosfs.zos.values import Acl, Grant, Part, Retention, Upload

_NO_LOCK_CONFIG = ("NoSuchObjectLockConfiguration", "ObjectLockConfigurationNotFoundError")


class ControlRequests(ClientCore):
    """Settings of objects and of the bucket, and multipart bookkeeping."""

    async def list_uploads(self, prefix: str = "", *, max_uploads: int = 1000) -> list[Upload]:
        """Every multipart upload in progress under `prefix` (asked
        `max_uploads` per page).

        On the lean path with `encoding-type=url`, as listings are: botocore
        would ask for keys unencoded, and RGW echoes a control character as
        `&#1;`, which no XML parser accepts. Each page goes on from its last
        upload (key and upload id, both from the encoded entries), never from
        NextKeyMarker, which a server may send unencoded."""
        op = "ListMultipartUploads"
        uploads: list[Upload] = []
        query: dict[str, str | None] = {"uploads": None, "prefix": prefix, "encoding-type": "url",
                                        "max-uploads": str(max_uploads)}
        while True:
            resp = await self._request(op, "GET", "", query=query, error_key=prefix)
            root = self._answer(resp, op, prefix)
            if root.tag != "ListMultipartUploadsResult":
                raise bad_answer(op, prefix, f"a <{root.tag}> where a ListMultipartUploadsResult belongs")
            page = [Upload(urllib.parse.unquote_plus(wire.text(u, "Key")), wire.text(u, "UploadId"),
                           wire.iso_date(wire.text(u, "Initiated"))) for u in root.iterfind("Upload")]
            uploads += page
            if wire.text(root, "IsTruncated").lower() != "true":
                return uploads
            if not page:
                raise bad_answer(op, prefix, "a truncated listing of uploads without an upload")
            query["key-marker"], query["upload-id-marker"] = page[-1].key, page[-1].upload_id

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
        """'Enabled', 'Suspended', or None if versioning was never turned on.
        On the lean path: every mount asks, and boto3 alone costs the daemon
        about 23 MiB of memory."""
        resp = await self._request("GetBucketVersioning", "GET", "", query={"versioning": None}, error_key="")
        return wire.text(self._answer(resp, "GetBucketVersioning", ""), "Status") or None

    async def put_versioning(self, enabled: bool) -> None:
        """Turn the bucket's versioning on, or suspend it."""
        await self._boto_call(
            "PutBucketVersioning", "", "put_bucket_versioning",
            VersioningConfiguration={"Status": "Enabled" if enabled else "Suspended"},
        )

    async def get_object_lock(self) -> dict[str, Any] | None:
        """The bucket's object lock configuration (as boto3 shapes it:
        ObjectLockEnabled, Rule.DefaultRetention.Mode/Days/Years), or None if
        it has none. On the lean path, as `get_versioning`."""
        try:
            resp = await self._request("GetObjectLockConfiguration", "GET", "", query={"object-lock": None}, error_key="")
        except ZosError as err:
            if err.code in _NO_LOCK_CONFIG or err.status == 404:
                return None
            raise
        root = self._answer(resp, "GetObjectLockConfiguration", "")
        config: dict[str, Any] = {}
        if enabled := wire.text(root, "ObjectLockEnabled"):
            config["ObjectLockEnabled"] = enabled
        retention = root.find("Rule/DefaultRetention")
        if retention is not None:
            rule: dict[str, Any] = {}
            if mode := wire.text(retention, "Mode"):
                rule["Mode"] = mode
            for field in ("Days", "Years"):
                if (value := wire.text(retention, field)).isdigit():
                    rule[field] = int(value)
            config["Rule"] = {"DefaultRetention": rule}
        return config
