"""Bucket lifecycle rules that zosfs owns, one per directory and kind,
kept among the bucket's other rules.

S3 has no request that changes one lifecycle rule: the whole configuration
is read, changed and written back. Rules are told apart by ID: zosfs's
are `zosfs-expire:<prefix>` and `zosfs-transition:<prefix>` (a prefix too
long for S3's 255-character IDs is replaced by its SHA-256), and every other
rule is written back exactly as it was read. Two writers changing the
bucket's lifecycle at the same moment can still lose one's change (S3 offers
no condition on PutBucketLifecycleConfiguration): the README says so.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from zosfs.zos.core import ClientCore
from zosfs.zos.errors import ZosError

KINDS = ("expire", "transition")
MAX_RULE_ID = 255


@dataclass(frozen=True)
class PrefixRule:
    """One zosfs rule: objects under `prefix` expire (kind "expire") or move
    to `storage_class` (kind "transition") `days` days after they were written."""

    kind: str
    prefix: str
    days: int
    storage_class: str = ""


def rule_id(kind: str, prefix: str) -> str:
    """The ID of zosfs's rule of `kind` for `prefix`."""
    rid = f"zosfs-{kind}:{prefix}"
    if len(rid) > MAX_RULE_ID:
        rid = f"zosfs-{kind}:sha256:{hashlib.sha256(prefix.encode()).hexdigest()}"
    return rid


def _rule_body(rule: PrefixRule) -> dict[str, Any]:
    body: dict[str, Any] = {"ID": rule_id(rule.kind, rule.prefix), "Filter": {"Prefix": rule.prefix}, "Status": "Enabled"}
    if rule.kind == "expire":
        body["Expiration"] = {"Days": rule.days}
    else:
        body["Transitions"] = [{"Days": rule.days, "StorageClass": rule.storage_class}]
    return body


def _from_body(kind: str, prefix: str, body: dict[str, Any]) -> PrefixRule | None:
    if kind == "expire":
        days = (body.get("Expiration") or {}).get("Days")
        return PrefixRule(kind, prefix, int(days)) if days else None
    transitions = body.get("Transitions") or []
    if not transitions or not transitions[0].get("Days"):
        return None
    return PrefixRule(kind, prefix, int(transitions[0]["Days"]), transitions[0].get("StorageClass", ""))


class LifecycleRequests(ClientCore):
    """Read, set and remove zosfs's per-prefix rules in the bucket's lifecycle."""

    async def _lifecycle_rules(self) -> list[dict[str, Any]]:
        try:
            r = await self._boto_call("GetBucketLifecycleConfiguration", "", "get_bucket_lifecycle_configuration")
        except ZosError as err:
            if err.code == "NoSuchLifecycleConfiguration":
                return []
            raise
        return list(r.get("Rules", []))

    async def _put_lifecycle_rules(self, rules: list[dict[str, Any]]) -> None:
        if rules:
            await self._boto_call("PutBucketLifecycleConfiguration", "", "put_bucket_lifecycle_configuration",
                                  LifecycleConfiguration={"Rules": rules})
        else:
            await self._boto_call("DeleteBucketLifecycle", "", "delete_bucket_lifecycle")

    async def get_prefix_rule(self, kind: str, prefix: str) -> PrefixRule | None:
        """zosfs's rule of `kind` for `prefix`, or None."""
        rid = rule_id(kind, prefix)
        for body in await self._lifecycle_rules():
            if body.get("ID") == rid:
                return _from_body(kind, prefix, body)
        return None

    async def set_prefix_rule(self, rule: PrefixRule) -> None:
        """Add or replace zosfs's rule (same kind and prefix); every other
        rule of the bucket is written back unchanged."""
        rid = rule_id(rule.kind, rule.prefix)
        rules = [b for b in await self._lifecycle_rules() if b.get("ID") != rid]
        await self._put_lifecycle_rules(rules + [_rule_body(rule)])

    async def remove_prefix_rule(self, kind: str, prefix: str) -> bool:
        """Remove zosfs's rule of `kind` for `prefix`; False if there was none."""
        rid = rule_id(kind, prefix)
        current = await self._lifecycle_rules()
        rules = [b for b in current if b.get("ID") != rid]
        if len(rules) == len(current):
            return False
        await self._put_lifecycle_rules(rules)
        return True

    async def lifecycle_supported(self) -> bool:
        """Whether the endpoint answers GetBucketLifecycleConfiguration
        (with a configuration, or with "none set")."""
        try:
            await self._lifecycle_rules()
        except ZosError as err:
            if err.code in ("NotImplemented", "MethodNotAllowed") or err.status in (405, 501):
                return False
            raise
        return True
