"""Listing with ListObjects V2 and V1 against the real local RGW: every key
exactly once and in order, whatever the page size, with and without a
delimiter, including a key holding a control character; the mount-time
check of which version the endpoint honours; and a server that knows only
V1 (played by the fault proxy dropping `list-type`, which signature V2
leaves unsigned), also when it turns up in the middle of a listing."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.client import client_config, run_client
from tests.support.faultproxy import FaultProxy, Rule
from tests.support.rgw import LocalRGW
from zosfs.zos import ListPage, ZosClient

KEYS = ["a/1", "a/2", "a/b/3", "c", "ctl\x01char", "d/x", "f&g", "h i+j", "per%25cent", "z"]
FLAT = sorted(KEYS)
NESTED = ["a/", "c", "ctl\x01char", "d/", "f&g", "h i+j", "per%25cent", "z"]  # under "/"
V1_ONLY = ("list-type", "continuation-token", "start-after")  # what a V1 server does not know


@pytest.fixture
def listed_bucket(rgw: LocalRGW, bucket: str) -> Iterator[str]:
    """The bucket with KEYS; deleted through the client (boto3's DeleteObjects
    cannot carry the control character, so the fixture's cleanup could not)."""

    async def put(zos: ZosClient) -> None:
        for key in KEYS:
            await zos.put(key, key.encode())

    run_client(client_config(rgw.endpoint, bucket), put)
    yield bucket

    async def delete(zos: ZosClient) -> None:
        for key in KEYS:
            await zos.delete(key)

    run_client(client_config(rgw.endpoint, bucket), delete)


@pytest.fixture
def proxy(rgw: LocalRGW) -> Iterator[FaultProxy]:
    with FaultProxy(rgw.endpoint) as p:
        yield p


async def whole(zos: ZosClient, delimiter: str | None, max_keys: int) -> tuple[list[str], int]:
    """Every key and prefix of a paged listing, and the number of pages."""
    names: list[str] = []
    pages = 0
    token = None
    while True:
        page: ListPage = await zos.list("", delimiter, token=token, max_keys=max_keys)
        pages += 1
        names += sorted([e.key for e in page.entries] + page.prefixes)
        token = page.next_token
        if token is None:
            return names, pages


@pytest.mark.parametrize("list_api", ["v1", "v2"])
@pytest.mark.parametrize("delimiter", [None, "/"])
@pytest.mark.parametrize("max_keys", [1, 2, 3, 1000])
def test_paging_lists_every_key_once_in_order(listed_bucket, proxy, list_api, delimiter, max_keys):
    async def scenario(zos: ZosClient) -> tuple[list[str], int]:
        return await whole(zos, delimiter, max_keys)

    names, pages = run_client(client_config(proxy.endpoint, listed_bucket, list_api=list_api), scenario)
    expected = FLAT if delimiter is None else NESTED
    assert names == expected
    assert pages == -(-len(expected) // max_keys)  # full pages, no empty or repeated one
    used, unused = ("ListObjects", "ListObjectsV2") if list_api == "v1" else ("ListObjectsV2", "ListObjects")
    assert (proxy.count(used), proxy.count(unused)) == (pages, 0)
    for record in proxy.records():
        assert record.query.get("encoding-type") == "url"


@pytest.mark.parametrize("list_api", ["v1", "v2"])
def test_a_control_character_key_at_a_page_end_and_under_a_prefix(rgw, listed_bucket, list_api):
    async def scenario(zos: ZosClient) -> Any:
        first = await zos.list("c", None, max_keys=1)  # "c", then the token points at "ctl\x01char"
        second = await zos.list("c", None, max_keys=1, token=first.next_token)
        after = await zos.list("", None, start_after="ctl\x01char", max_keys=1)
        return first, second, after

    first, second, after = run_client(client_config(rgw.endpoint, listed_bucket, list_api=list_api), scenario)
    assert [e.key for e in first.entries] == ["c"]
    assert [e.key for e in second.entries] == ["ctl\x01char"] and second.next_token is None
    assert second.entries[0].size == len("ctl\x01char")
    assert [e.key for e in after.entries] == ["d/x"]


@pytest.mark.parametrize("list_api", ["v1", "v2"])
def test_a_server_that_ignores_encoding_type_is_read_as_it_answers(listed_bucket, proxy, list_api):
    """Played by the proxy dropping `encoding-type` (unsigned with signature
    V2): RGW then sends keys as they are, with no <EncodingType>, and a key
    holding `%25` must not be decoded into another key. The control
    character comes as `&#x01;` then, and is read too."""
    proxy.add_rule(Rule(op={"ListObjects", "ListObjectsV2"}, drop_query=("encoding-type",)))

    async def scenario(zos: ZosClient) -> Any:
        return await whole(zos, "/", 2), await whole(zos, None, 3)

    cfg = client_config(proxy.endpoint, listed_bucket, signature="v2", list_api=list_api)
    nested, flat = run_client(cfg, scenario)
    assert nested == (NESTED, 4) and flat == (FLAT, 4)


@pytest.mark.parametrize("max_uploads", [1, 2, 1000])
def test_multipart_uploads_of_odd_keys_are_listed_exactly_on_every_page(rgw, bucket, max_uploads):
    """ListMultipartUploads asks for URL-encoded keys too (RGW echoes the
    markers unencoded, a control character as `&#x01;`): every upload once,
    in order, with its exact key, however the listing is paged."""
    odd = ["up\x01load", "a&b<c>", "per%25cent", "h i+j", "trailing "]

    async def scenario(zos: ZosClient) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        made = [(key, await zos.create_multipart(key)) for key in odd for _ in range(2)]
        try:
            listed = await zos.list_uploads("", max_uploads=max_uploads)
            under = await zos.list_uploads("up", max_uploads=max_uploads)
        finally:
            for key, upload_id in made:
                await zos.abort_multipart(key, upload_id)
        assert all(u.initiated > 0 for u in listed)
        return sorted(made), [(u.key, u.upload_id) for u in listed] + [("under", u.key) for u in under]

    made, listed = run_client(client_config(rgw.endpoint, bucket), scenario)
    assert listed == made + [("under", "up\x01load")] * 2


@pytest.mark.parametrize("list_api", ["auto", "v1", "v2"])
def test_rgw_honours_v2_and_auto_uses_it(rgw, listed_bucket, list_api):
    async def scenario(zos: ZosClient) -> tuple[str, bool]:
        return await zos.detect_list_api(), zos.list_v1

    assert run_client(client_config(rgw.endpoint, listed_bucket, list_api=list_api), scenario) == ("v2", list_api == "v1")


def test_a_v1_only_server_is_found_at_mount_time_and_listed_with_markers(listed_bucket, proxy):
    proxy.add_rule(Rule(op="ListObjectsV2", drop_query=V1_ONLY))

    async def scenario(zos: ZosClient) -> Any:
        found = await zos.detect_list_api()
        proxy.reset_stats()
        return found, zos.list_v1, await whole(zos, "/", 2), await whole(zos, None, 3)

    cfg = client_config(proxy.endpoint, listed_bucket, signature="v2", list_api="auto")
    found, v1, nested, flat = run_client(cfg, scenario)
    assert (found, v1) == ("v1", True)
    assert nested == (NESTED, 4) and flat == (FLAT, 4)
    assert (proxy.count("ListObjects"), proxy.count("ListObjectsV2")) == (8, 0)


@pytest.mark.parametrize("delimiter", [None, "/"])
def test_a_v1_only_server_found_by_the_first_answer(listed_bucket, proxy, caplog, delimiter):
    """Without the probe: the first V2 request is answered as V1 (its page is
    the first page all the same), and auto lists with V1 from then on."""
    proxy.add_rule(Rule(op="ListObjectsV2", drop_query=V1_ONLY))
    caplog.set_level(logging.WARNING)

    async def scenario(zos: ZosClient) -> Any:
        return await whole(zos, delimiter, 3), [e.key for e in (await zos.list("", None, start_after="d/x")).entries]

    cfg = client_config(proxy.endpoint, listed_bucket, signature="v2")
    (names, pages), after = run_client(cfg, scenario)
    assert names == (FLAT if delimiter is None else NESTED)
    assert after == ["f&g", "h i+j", "per%25cent", "z"]
    assert proxy.count("ListObjectsV2") == 1 and proxy.count("ListObjects") == pages
    assert sum("answered a ListObjects V2 request" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("list_api", ["auto", "v2"])
@pytest.mark.parametrize("delimiter", [None, "/"])
def test_v2_answered_as_v1_in_the_middle_of_a_listing(listed_bucket, proxy, list_api, delimiter):
    """The second page's V2 request reaches a server that ignores list-type
    and the continuation token (it answers the first page again, as V1): the
    request is asked again as V1 from the last name shown, so nothing is lost
    or listed twice."""
    rule = proxy.add_rule(Rule(op="ListObjectsV2", drop_query=V1_ONLY, every=2, times=1))

    async def scenario(zos: ZosClient) -> Any:
        return await whole(zos, delimiter, 2), zos.list_v1

    cfg = client_config(proxy.endpoint, listed_bucket, signature="v2", list_api=list_api)
    (names, pages), v1 = run_client(cfg, scenario)
    expected = FLAT if delimiter is None else NESTED
    assert names == expected and pages == len(expected) // 2
    assert rule.fired == 1
    assert v1 == (list_api == "auto")
    if list_api == "auto":  # page 1 by V2; page 2 asked both ways; then V1 only
        assert (proxy.count("ListObjectsV2"), proxy.count("ListObjects")) == (2, pages - 1)
    else:  # v2 stays: only the page answered as V1 was asked again
        assert (proxy.count("ListObjectsV2"), proxy.count("ListObjects")) == (pages, 1)
