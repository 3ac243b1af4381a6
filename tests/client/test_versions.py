"""ListObjectVersions and GET of one version (zosfs/zos/versions.py) against
the local RGW, compared with what boto3 lists."""

from __future__ import annotations

from typing import Any

from tests.support.client import client_config, run_client
from tests.support.rgw import LocalRGW
from zosfs.zos import ZosClient


def test_versions_page_by_page_match_boto3(rgw: LocalRGW, versioned_bucket: str, s3) -> None:
    for body in (b"one", b"two!", b"three"):
        s3.put_object(Bucket=versioned_bucket, Key="d/k", Body=body)
    s3.delete_object(Bucket=versioned_bucket, Key="d/k")
    s3.put_object(Bucket=versioned_bucket, Key="d/k 2+%", Body=b"x")
    s3.put_object(Bucket=versioned_bucket, Key="d/sub/deep", Body=b"y")
    s3.put_object(Bucket=versioned_bucket, Key="other", Body=b"z")

    async def scenario(zos: ZosClient) -> dict[str, Any]:
        pages = [page async for page in zos.list_versions("d/", "/", max_keys=2)]
        whole = [page async for page in zos.list_versions("d/", None)]
        oldest = [v for p in whole for v in p.versions if v.key == "d/k" and not v.deleted][-1]
        return {"pages": pages, "whole": whole, "oldest": bytes(await zos.get("d/k", version_id=oldest.version_id)),
                "part": bytes(await zos.get("d/k", 1, 3, version_id=oldest.version_id))}

    out = run_client(client_config(rgw.endpoint, versioned_bucket), scenario)
    assert len(out["pages"]) >= 3  # max_keys=2 made it page
    paged = [(v.key, v.version_id, v.deleted, v.size) for p in out["pages"] for v in p.versions]
    assert sorted({p for page in out["pages"] for p in page.prefixes}) == ["d/sub/"]
    answer = s3.list_object_versions(Bucket=versioned_bucket, Prefix="d/", Delimiter="/")
    expected = [(v["Key"], v["VersionId"], False, v["Size"]) for v in answer["Versions"]]
    expected += [(d["Key"], d["VersionId"], True, 0) for d in answer["DeleteMarkers"]]
    assert sorted(paged) == sorted(expected)
    assert len(paged) == len(set(paged)) == 5  # three versions and a marker of d/k, one of "d/k 2+%", once each
    assert {v.key for p in out["whole"] for v in p.versions} == {"d/k", "d/k 2+%", "d/sub/deep"}
    assert all(v.last_modified > 0 and v.last_modified_text.endswith("Z") for p in out["pages"] for v in p.versions)
    assert (out["oldest"], out["part"]) == (b"one", b"ne")


def test_versions_of_odd_keys_list_exactly_once_whatever_the_page_size(rgw: LocalRGW, versioned_bucket: str, s3) -> None:
    """RGW sends NextKeyMarker unencoded even with encoding-type=url: a page
    ending at `a%25b` must go on from that key, not from `a%b` (which started
    the listing over, forever). Null versions (versioning suspended) too."""
    keys = ["a%25b", "c+d", "d/", "d/x", "e\x01f", "g h", "i%41j", "z"]
    for key in keys:
        for body in (b"1", b"22"):
            s3.put_object(Bucket=versioned_bucket, Key=key, Body=body)
    s3.put_bucket_versioning(Bucket=versioned_bucket, VersioningConfiguration={"Status": "Suspended"})
    for key in ("c+d", "n"):
        s3.put_object(Bucket=versioned_bucket, Key=key, Body=b"null")
    answer = s3.list_object_versions(Bucket=versioned_bucket)  # boto3 asks for and decodes URL-encoded keys
    every = sorted((v["Key"], v["VersionId"]) for v in answer["Versions"])
    assert len(every) == 18 and not answer["IsTruncated"]

    async def scenario(zos: ZosClient) -> dict[tuple[str | None, int], Any]:
        out: dict[tuple[str | None, int], Any] = {}
        for delimiter in (None, "/"):
            for max_keys in (1, 2, 3, 1000):
                pages = [p async for p in zos.list_versions("", delimiter, max_keys=max_keys)]
                out[delimiter, max_keys] = ([(v.key, v.version_id) for p in pages for v in p.versions],
                                            [x for p in pages for x in p.prefixes], len(pages))
        return out

    try:
        out = run_client(client_config(rgw.endpoint, versioned_bucket), scenario)
    finally:
        for v in every:  # one by one: DeleteObjects' XML cannot carry the control character
            s3.delete_object(Bucket=versioned_bucket, Key=v[0], VersionId=v[1])
    for (delimiter, max_keys), (versions, prefixes, pages) in out.items():
        expected = every if delimiter is None else [v for v in every if not v[0].startswith("d/")]
        assert sorted(versions) == expected and len(versions) == len(expected), (delimiter, max_keys)
        assert sorted(set(prefixes)) == ([] if delimiter is None else ["d/"])
        assert pages >= len(expected) // max_keys
