"""Listing the bucket (ListObjects, V2 or V1) over the lean HTTP path.

Every directory a mount shows is a listing with delimiter '/', and rename
and rmdir list whole subtrees, so listing is a data-path request.

Two versions of the request exist. zosfs prefers V2 (`list-type=2`,
continuation tokens), but the ZOS SDK manual documents only V1 (`marker`,
`NextMarker`), and a server that does not know V2 ignores `list-type=2` and
answers in V1 form, without looking at `continuation-token` or `start-after`.
So every answer is read by its form, not by what was asked: a V1 answer to a
V2 request is used as the first page it is, or, when the request went on
from a token, asked again as V1 from the token's marker. With `list_api=auto`
(the default) the client then lists with V1 from there on; the mount-time
probe (`detect_list_api`) usually finds out before the first listing.

Keys, prefixes and markers are asked URL-encoded (`encoding-type=url`) on
every request, so any key, even one with control characters, survives the
XML; `zosfs.zos.wire` copes with the fields RGW still sends unencoded. An
answer is decoded only if it says it is encoded (`<EncodingType>url`, which
S3 and RGW send): a server that ignores the request sends keys as they are.
"""

from __future__ import annotations

import logging
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator

from zosfs.zos import wire
from zosfs.zos.core import ClientCore
from zosfs.zos.errors import ZosError, bad_answer
from zosfs.zos.values import ListEntry, ListPage, ListToken

log = logging.getLogger(__name__)

OP = "ListObjects"
# Elements only a V2 answer has (RGW sends KeyCount on every V2 page).
_V2_ONLY = ("KeyCount", "NextContinuationToken", "ContinuationToken", "StartAfter")


def is_v2_answer(root: ET.Element) -> bool:
    """Whether a ListBucketResult is in V2 form (a server that ignores
    `list-type=2` answers in V1 form)."""
    return any(root.find(name) is not None for name in _V2_ONLY)


def parse_page(root: ET.Element, prefix: str, after: str | None) -> ListPage:
    """Read one page of either form. `after` is the key or prefix the page
    follows (None for a first page): a page that shows nothing goes on from
    there, and a V1 page must go on past it. Raises ZosError."""
    if root.tag != "ListBucketResult":
        raise bad_answer(OP, prefix, f"a <{root.tag}> where a ListBucketResult belongs")
    # Keys are URL-encoded only where the answer says so: a server that
    # ignores `encoding-type=url` sends them as they are, and decoding those
    # would turn the key `per%25cent` into another key, `per%cent`.
    encoded = wire.text(root, "EncodingType").lower() == "url"
    unquote = urllib.parse.unquote_plus if encoded else _as_is
    try:
        entries = [
            ListEntry(
                key=unquote(wire.text(c, "Key")),
                size=int(wire.text(c, "Size", "0")),
                etag=wire.unquote_etag(wire.text(c, "ETag")),
                last_modified=wire.iso_date(wire.text(c, "LastModified")),
                storage_class=wire.text(c, "StorageClass") or "STANDARD",
            )
            for c in root.iterfind("Contents")
        ]
    except ValueError as err:
        raise bad_answer(OP, prefix, f"an object's Size is not a number ({err})") from None
    if any(not e.key for e in entries):
        raise bad_answer(OP, prefix, "an object without a Key")
    prefixes = [unquote(wire.text(p, "Prefix")) for p in root.iterfind("CommonPrefixes")]
    if wire.text(root, "IsTruncated").lower() != "true":
        return ListPage(entries, prefixes, None)
    # The last key or common prefix shown, from which either version goes
    # on. (Keys and prefixes are URL-encoded in the answer and so exact;
    # RGW sends NextMarker unencoded even with encoding-type=url, S3 encoded.)
    last = max([e.key for e in entries[-1:]] + prefixes[-1:], default=None)
    if is_v2_answer(root):
        continuation = wire.text(root, "NextContinuationToken")
        if not continuation:
            raise bad_answer(OP, prefix, "a truncated listing without a continuation token")
        return ListPage(entries, prefixes, ListToken(last or after or "", continuation))
    # V1: NextMarker is the last key or prefix shown (S3 documents it so);
    # RGW leaves it out without a delimiter, and then the last key is the
    # marker. Only a page that shows nothing needs NextMarker itself.
    marker = last if last is not None else wire.text(root, "NextMarker")
    if not marker or (after and marker <= after):
        raise bad_answer(OP, prefix, "a truncated listing that does not go on past its marker")
    return ListPage(entries, prefixes, ListToken(marker))


def _as_is(text: str) -> str:
    return text


class ListRequests(ClientCore):
    """Pages of a listing, and all of them in key order."""

    async def list(
        self,
        prefix: str = "",
        delimiter: str | None = "/",
        *,
        start_after: str | None = None,
        token: ListToken | None = None,
        max_keys: int = 1000,
    ) -> ListPage:
        """One page of the keys under `prefix` (and, with a delimiter, the
        common prefixes: the subdirectories), after `start_after` or where
        `token` (a page's `next_token`) says."""
        query: dict[str, str | None] = {"prefix": prefix, "max-keys": str(max_keys), "encoding-type": "url"}
        if delimiter:
            query["delimiter"] = delimiter
        after = token.marker if token is not None else start_after
        if not self.list_v1:
            v2 = dict(query, **{"list-type": "2"})
            if token is not None and token.continuation is not None:
                v2["continuation-token"] = token.continuation
            elif after:  # also after a page that came as V1, with list_api=v2
                v2["start-after"] = after
            root = await self._list_answer(v2, prefix)
            if is_v2_answer(root):
                return parse_page(root, prefix, after)
            self._answered_in_v1_form(prefix)
            if not after:
                return parse_page(root, prefix, None)  # a first page is the same in both forms
            # The server ignored where to go on from, too: ask again, as V1.
        if after:
            query["marker"] = after
        return parse_page(await self._list_answer(query, prefix), prefix, after or None)

    async def list_all(self, prefix: str = "", delimiter: str | None = "/") -> AsyncIterator[ListPage]:
        """Every page of a listing, in key order."""
        token: ListToken | None = None
        while True:
            page = await self.list(prefix, delimiter, token=token)
            yield page
            if page.next_token is None:
                return
            token = page.next_token

    async def detect_list_api(self) -> str:
        """Find out whether the endpoint honours ListObjects V2: "v2" or "v1".

        With list_api=auto, listings use what was found. One request: a V2
        listing of one key, answered in V2 form, or in V1 form (or refused)
        by a server that knows only V1. Raises ZosError for other failures.
        """
        query: dict[str, str | None] = {"list-type": "2", "max-keys": "1", "encoding-type": "url"}
        try:
            found = "v2" if is_v2_answer(await self._list_answer(query, "")) else "v1"
        except ZosError as err:
            if err.status not in (400, 501):
                raise
            found = "v1"  # list-type=2 refused as a bad or unknown request
        if self.config.list_api == "auto":
            self.list_v1 = found == "v1"
        return found

    async def _list_answer(self, query: dict[str, str | None], prefix: str) -> ET.Element:
        resp = await self._request(OP, "GET", "", query=query, error_key=prefix)
        return self._answer(resp, OP, prefix)

    def _answered_in_v1_form(self, prefix: str) -> None:
        if self.config.list_api == "auto" and not self.list_v1:
            self.list_v1 = True
            log.warning("the endpoint answered a ListObjects V2 request (of %r) in V1 form; "
                        "listing with V1 from now on (option list_api)", prefix)
        elif self.config.list_api == "v2":
            log.debug("ListObjects V2 of %r answered in V1 form (list_api=v2)", prefix)
