"""The one I/O toolkit: token bucket, backoff with jitter, Retry-After, HTTP outcomes."""

from __future__ import annotations

import email.utils

import pytest

from keeperd.iokit import (
    MAX_RETRY_AFTER_S,
    TokenBucket,
    backoff_delay,
    classify_http,
    loads_shallow,
    parse_retry_after,
)


def test_bucket_bursts_then_spaces() -> None:
    bucket = TokenBucket(10.0, now=100.0)
    waits = [bucket.reserve(100.0) for _ in range(12)]
    assert waits[:10] == [0.0] * 10
    assert waits[10] == pytest.approx(0.1) and waits[11] == pytest.approx(0.2)
    assert bucket.wait_time(101.5) == 0.0  # refilled (to at most the burst)
    assert TokenBucket(1.0, burst=1, now=0.0).reserve(0.0) == 0.0


def test_backoff_grows_caps_and_jitters_half_either_way() -> None:
    assert backoff_delay(0, 2.0, 600.0, lambda: 0.5) == 2.0
    assert backoff_delay(3, 2.0, 600.0, lambda: 0.5) == 16.0
    assert backoff_delay(20, 2.0, 600.0, lambda: 0.5) == 600.0
    assert backoff_delay(3, 2.0, 600.0, lambda: 0.0) == 8.0
    assert backoff_delay(3, 2.0, 600.0, lambda: 0.999) == pytest.approx(23.984)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "soon", "", None, float("nan")])
def test_retry_after_that_is_not_a_finite_number_is_ignored(value: object) -> None:
    assert parse_retry_after(value) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [{}, [1], {"seconds": 3}, 10**400, b"3", True])
def test_retry_after_of_any_other_shape_is_none_not_an_exception(value: object) -> None:
    """(An audit: a 429 body's `retry_after` of `{}` or `[1]` raised AttributeError, a
    400-digit integer OverflowError, out of the sink and past everything that records a
    failed send: the row was claimed and retried every second for good.) Only a str, an int
    or a float says a wait; a bool does not."""
    assert parse_retry_after(value) is None  # type: ignore[arg-type]


def test_json_nested_too_deep_is_refused_unread() -> None:
    """Under py_ecc's recursion limit of 100,000 (keeperd puts it back to 1,000) json.loads of
    64 kB of `[` overflowed the C stack (SIGSEGV): an error body past 64 deep is refused."""
    with pytest.raises(ValueError, match="deeper than 64"):
        loads_shallow("[" * 65536)
    with pytest.raises(ValueError, match="deeper than 3"):
        loads_shallow('{"a": [[{"b": 1}]]}', max_depth=3)
    assert loads_shallow('{"a": "[[[[{{{{\\"[[[["}', max_depth=1) == {"a": '[[[[{{{{"[[[['}
    assert isinstance(loads_shallow("[" * 64 + "]" * 64), list)  # (64 deep: read)
    assert loads_shallow('{"parameters": {"retry_after": 3}}')["parameters"]["retry_after"] == 3


def test_retry_after_is_bounded_and_reads_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.3") == 0.3
    assert parse_retry_after(7) == 7.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("1e12") == MAX_RETRY_AFTER_S  # a huge pause is not obeyed
    date = email.utils.formatdate(1_000_120, usegmt=True)
    assert parse_retry_after(date, now=1_000_000) == pytest.approx(120)


def test_http_outcomes() -> None:
    codes = (200, 204, 429, 408, 425, 500, 503, 400, 413, 422, 401, 403, 404, 410)
    assert [classify_http(s) for s in codes] == [
        "ok", "ok", "rate_limited", "transient", "transient", "transient", "transient",
        "permanent", "permanent", "permanent", "refused", "refused", "refused", "refused"]


def test_a_retry_after_date_past_any_year_is_none() -> None:
    """(A review: a year of 20 digits raised OverflowError from the date parser.)"""
    from keeperd.iokit import parse_retry_after

    assert parse_retry_after("Mon, 01 Jan 99999999999999999999 00:00:00 GMT") is None
