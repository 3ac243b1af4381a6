"""Dates in response headers: the fast path must agree with email.utils."""

from __future__ import annotations

import email.utils

from hypothesis import given
from hypothesis import strategies as st

from zosfs.zos.wire import http_date


@given(st.integers(min_value=0, max_value=2**33))
def test_imf_fixdate_parses_like_email_utils(seconds: int) -> None:
    text = email.utils.formatdate(seconds, usegmt=True)
    assert http_date(text) == seconds == email.utils.parsedate_to_datetime(text).timestamp()


def test_other_date_forms_fall_back() -> None:
    assert http_date("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777.0  # RFC 850
    assert http_date("Sun Nov  6 08:49:37 1994") == 784111777.0  # asctime
    assert http_date("") == 0.0
    assert http_date("not a date") == 0.0
    assert http_date(None) == 0.0
