"""Our Signer against botocore's signers, for the same request, time and
credentials (no server): SigV4 must equal S3SigV4Auth with UNSIGNED-PAYLOAD,
V2 must equal HmacV1Auth wherever botocore and RGW agree on what V2 signs,
and the RGW-adjusted botocore signer (the control path) everywhere."""

from __future__ import annotations

import datetime as dt
from unittest import mock

import botocore.auth
import botocore.config
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from zosfs.zos import signing
from zosfs.zos.signing import Signer, query_string, quote_path
from zosfs.zos.transport import rgw_v2_signer

ACCESS, SECRET, TOKEN = "AKIDEXAMPLE0123456789", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "token/with+chars=="
NOW = dt.datetime(2024, 2, 29, 23, 59, 58, tzinfo=dt.timezone.utc)
HOST = "zos.example.com:8443"

KEYS = [
    "/bucket/plain.txt",
    "/bucket/dir with space/file",
    "/bucket/plus+sign&amp=eq?q#frag",
    "/bucket/per%cent/~tilde!*'()",
    "/bucket/grüße/日本語",
    "/bucket/a//b",
    "/bucket/new\nline\ttab",
    "/bucket",
    "/bucket/",
]
QUERIES: list[dict[str, str | None]] = [
    {},
    {"append": None, "position": "0"},
    {"append": None, "position": "123456789"},
    {"partNumber": "7", "uploadId": "2~abc/def+ghi=="},
    {"uploads": None},
    {"tagging": None},
    {"acl": None},
    {"delete": None},
    {"list-type": "2", "prefix": "dir with space/ü+%&=", "delimiter": "/", "max-keys": "1000",
     "encoding-type": "url", "continuation-token": "tok/+=ü", "start-after": "a b"},
    {"versionId": "abc+/=", "response-content-type": "text/plain; charset=utf-8"},
]
HEADER_SETS: list[dict[str, str]] = [
    {},
    {"content-type": "application/xml", "content-md5": "1B2M2Y8AsgTpgAmY7PhCfg=="},
    {"range": "bytes=0-1023"},
    {"x-amz-meta-mode": "33188", "x-amz-meta-note": "  two  spaces  ", "x-amz-tagging": "a=1&b=two%20words",
     "x-amz-acl": "public-read", "content-type": "text/plain"},
    {"x-amz-copy-source": "/bucket/src%20key", "x-amz-metadata-directive": "REPLACE"},
]


def url(path: str, query: dict[str, str | None]) -> str:
    return f"https://{HOST}{quote_path(path)}" + (f"?{query_string(query)}" if query else "")


def ours(version: str, method: str, path: str, query: dict[str, str | None], headers: dict[str, str],
         token: str | None = None) -> dict[str, str]:
    signer = Signer(ACCESS, SECRET, "cn-east-1", version, token)
    signed = dict(headers)
    signer.sign(method, HOST, path, query, signed, now=NOW)
    return signed


def botocore_v4(method: str, path: str, query: dict[str, str | None], headers: dict[str, str],
                token: str | None = None) -> str:
    request = AWSRequest(method=method, url=url(path, query), headers=dict(headers))
    request.context["client_config"] = botocore.config.Config(s3={"payload_signing_enabled": False})
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        botocore.auth.S3SigV4Auth(Credentials(ACCESS, SECRET, token), "s3", "cn-east-1").add_auth(request)
    assert request.headers["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    return request.headers["Authorization"]


def botocore_v2(auth_class: type, method: str, path: str, query: dict[str, str | None], headers: dict[str, str],
                token: str | None = None) -> str:
    request = AWSRequest(method=method, url=url(path, query), headers=dict(headers))
    auth = auth_class(Credentials(ACCESS, SECRET, token))
    with mock.patch.object(auth, "_get_date", return_value="Thu, 29 Feb 2024 23:59:58 GMT"):
        auth.add_auth(request)
    return request.headers["Authorization"]


@pytest.mark.parametrize("path", KEYS)
@pytest.mark.parametrize("query", QUERIES)
def test_v4_equals_botocore(path, query):
    for method, headers in (("GET", {}), ("PUT", HEADER_SETS[3]), ("POST", HEADER_SETS[1]), ("HEAD", HEADER_SETS[2])):
        signed = ours("v4", method, path, query, headers)
        assert signed["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
        assert signed["x-amz-date"] == "20240229T235958Z"
        assert signed["host"] == HOST
        assert signed["authorization"] == botocore_v4(method, path, query, headers)


@pytest.mark.parametrize("headers", HEADER_SETS)
def test_v4_with_session_token_equals_botocore(headers):
    signed = ours("v4", "PUT", "/bucket/k", {"append": None, "position": "5"}, headers, TOKEN)
    assert signed["x-amz-security-token"] == TOKEN
    assert signed["authorization"] == botocore_v4("PUT", "/bucket/k", {"append": None, "position": "5"}, headers, TOKEN)


def test_v4_signature_depends_on_what_matters():
    base = ours("v4", "GET", "/bucket/k", {}, {})["authorization"]
    assert ours("v4", "GET", "/bucket/k", {}, {"if-match": '"x"'})["authorization"] == base  # not signed
    for variant in (
        ours("v4", "HEAD", "/bucket/k", {}, {}),
        ours("v4", "GET", "/bucket/k2", {}, {}),
        ours("v4", "GET", "/bucket/k", {"acl": None}, {}),
        ours("v4", "GET", "/bucket/k", {}, {"range": "bytes=0-1"}),
    ):
        assert variant["authorization"] != base


@settings(max_examples=150, deadline=None, database=None)
@given(
    key=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40),
    value=st.text(st.characters(blacklist_categories=("Cs",)), max_size=30),
    meta=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
)
def test_v4_equals_botocore_for_any_key_and_query_value(key, value, meta):
    path = f"/bucket/{key}"
    query: dict[str, str | None] = {"list-type": "2", "prefix": value, "append": None}
    headers = {"x-amz-meta-m": meta} if meta.strip() else {}
    assert ours("v4", "PUT", path, query, headers)["authorization"] == botocore_v4("PUT", path, query, headers)


# -- V2 -------------------------------------------------------------------------------

# Sub-resources both botocore and RGW sign: here stock HmacV1Auth must agree.
SHARED_V2 = [q for q in QUERIES if all(n in botocore.auth.HmacV1Auth.QSAOfInterest or n not in signing.V2_SUBRESOURCES
                                       for n in q)]


@pytest.mark.parametrize("path", [k for k in KEYS if k.count("/") > 1])
@pytest.mark.parametrize("query", SHARED_V2)
@pytest.mark.parametrize("headers", HEADER_SETS)
def test_v2_equals_botocore_on_objects(path, query, headers):
    signed = ours("v2", "PUT", path, query, headers)
    assert signed["date"] == "Thu, 29 Feb 2024 23:59:58 GMT"
    assert signed["authorization"] == botocore_v2(botocore.auth.HmacV1Auth, "PUT", path, query, headers)


@pytest.mark.parametrize("headers", HEADER_SETS)
def test_v2_with_session_token_equals_botocore(headers):
    query: dict[str, str | None] = {"partNumber": "1", "uploadId": "2~x"}
    signed = ours("v2", "PUT", "/bucket/k", query, headers, TOKEN)
    assert signed["authorization"] == botocore_v2(botocore.auth.HmacV1Auth, "PUT", "/bucket/k", query, headers, TOKEN)


@pytest.mark.parametrize("query", [*QUERIES, {"object-lock": None}, {"restore": None}, {"retention": None},
                                   {"legal-hold": None}, {"policyStatus": None}, {"publicAccessBlock": None}])
@pytest.mark.parametrize("path", ["/bucket", "/bucket/k", "/bucket/dir with space/ü"])
def test_v2_equals_the_rgw_adjusted_botocore_signer(path, query):
    """The control path's botocore signer and our data-path signer agree on
    every sub-resource, including the ones stock botocore gets wrong for RGW."""
    rgw_auth = botocore.auth.AUTH_TYPE_MAPS[rgw_v2_signer()]
    signed = ours("v2", "GET", path, query, {})
    assert signed["authorization"] == botocore_v2(rgw_auth, "GET", path, query, {})


@pytest.mark.parametrize("query", [{"object-lock": None}, {"restore": None}])
def test_stock_botocore_v2_signs_sub_resources_rgw_does_not(query):
    assert ours("v2", "GET", "/bucket/k", query, {})["authorization"] != botocore_v2(
        botocore.auth.HmacV1Auth, "GET", "/bucket/k", query, {})
    # ... which is the same as signing without them:
    assert ours("v2", "GET", "/bucket/k", query, {})["authorization"] == ours("v2", "GET", "/bucket/k", {}, {})["authorization"]


def test_v2_signs_rgw_sub_resources_only():
    """The canonical resource, as RGW 16.2 builds it: its sub-resources in
    sorted order, bare names without "=", everything else left out."""
    def resource(query: dict[str, str | None]) -> str:
        captured = {}
        real_new = signing.hmac.new

        def spy(key: bytes, msg: bytes, digestmod: object) -> object:
            captured["to_sign"] = msg.decode()
            return real_new(key, msg, digestmod)

        with mock.patch.object(signing.hmac, "new", spy):
            ours("v2", "GET", "/bucket/k", query, {})
        return captured["to_sign"].rsplit("\n", 1)[1]

    assert resource({"append": None, "position": "3"}) == "/bucket/k"
    assert resource({"uploadId": "2~x", "partNumber": "3"}) == "/bucket/k?partNumber=3&uploadId=2~x"
    assert resource({"versionId": "", "tagging": None}) == "/bucket/k?tagging&versionId"
    assert resource({"list-type": "2", "prefix": "a", "acl": None}) == "/bucket/k?acl"
    assert resource({"retention": None, "legal-hold": None, "restore": None, "object-lock": None}) == "/bucket/k"
