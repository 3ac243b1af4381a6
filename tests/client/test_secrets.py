"""Credentials never reach logs, error messages or reprs, with everything
(botocore included) logging at DEBUG, for good and bad credentials."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from tests.support.rgw import MAIN_USER, LocalRGW
from zosfs.zos import ClientConfig, WriteOptions, ZosClient, ZosError, probe
from zosfs.zos.signing import Signer

WRONG_SECRET = "wrong-secret-which-must-not-leak-0123456789"


def everything_said(caplog: pytest.LogCaptureFixture, errors: list[BaseException], objects: list[Any]) -> list[str]:
    texts = []
    for record in caplog.records:
        texts.append(record.getMessage())
        texts.append(repr(record.args))
        if record.exc_info and record.exc_info[1] is not None:
            texts.append(repr(record.exc_info[1]))
    for err in errors:
        texts += [str(err), repr(err), repr(err.__context__), repr(err.__cause__), repr(err.args)]
    texts += [repr(o) for o in objects] + [str(o) for o in objects]
    return texts


@pytest.mark.parametrize("signature", ["v4", "v2"])
def test_secret_key_appears_nowhere(rgw: LocalRGW, bucket: str, caplog: pytest.LogCaptureFixture, signature: str):
    caplog.set_level(logging.DEBUG)  # root logger, so botocore's and urllib3's records too
    errors: list[BaseException] = []
    good = ClientConfig(endpoint=rgw.endpoint, bucket=bucket, access_key=MAIN_USER.access_key,
                        secret_key=MAIN_USER.secret_key, signature=signature)
    bad = ClientConfig(endpoint=rgw.endpoint, bucket=bucket, access_key=MAIN_USER.access_key,
                       secret_key=WRONG_SECRET, signature=signature)
    objects: list[Any] = [good, bad]

    async def attempt(call: Any) -> None:
        try:
            await call
        except ZosError as err:
            errors.append(err)

    async def main() -> None:
        async with ZosClient(good) as zos:
            objects.extend([zos, zos.signer, zos.http])
            await probe(zos)
            await zos.put("k", b"data", WriteOptions(metadata={"m": "1"}, tags={"t": "1"}))
            await zos.append("log", 0, b"abc")
            await zos.get("k")
            await zos.list()
            await zos.get_tags("k")
            await zos.get_acl("k")
            await attempt(zos.get("missing"))
            await attempt(zos.get_tags("missing"))
            await attempt(zos.append("log", 1, b"x"))
        async with ZosClient(bad) as zos:
            objects.extend([zos, zos.signer])
            await attempt(probe(zos))
            await attempt(zos.get("k"))
            await attempt(zos.put("k2", b"x"))
            await attempt(zos.get_tags("k"))  # botocore path
            await attempt(zos.put_acl("k", canned="private"))

    trio.run(main)

    assert len(errors) == 8  # every failing call failed, and was seen
    assert any(record.name.startswith("botocore") for record in caplog.records), "botocore's DEBUG output was captured"
    assert any("Authorization" in record.getMessage() or "StringToSign" in record.getMessage()
               for record in caplog.records), "the signing details were logged, and checked"
    for text in everything_said(caplog, errors, objects):
        assert MAIN_USER.secret_key not in text
        assert WRONG_SECRET not in text
    assert repr(Signer("AK", "a-secret-value", version=signature)).count("a-secret-value") == 0
