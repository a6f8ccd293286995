from __future__ import annotations

import io
import json

import structlog

from keeperd.chain.rpc import redact_url
from keeperd.logs import Redactor, configure_logging

KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


def test_redact_url_drops_credentials_query_and_key_like_segments() -> None:
    assert redact_url("https://user:pw@eth.example.com/v2/abcdef0123456789abcd?key=1") == \
        "https://eth.example.com/v2/***"
    assert redact_url("https://api.telegram.org/bot123456:ABCdefGhIJKlmnoPQR/sendMessage") == \
        "https://api.telegram.org/***/sendMessage"
    assert redact_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"


def test_logged_secrets_never_reach_the_output() -> None:
    out = io.StringIO()
    redactor = configure_logging("debug", "json", stream=out)
    redactor.add(KEY)
    log = structlog.get_logger("t")
    log.info("loaded", private_key=KEY, note=f"key is {KEY.upper()}",
             url="https://x.example/v2/0123456789abcdefghij",
             nested={"token": "bot-token-value", "ok": KEY[2:]})
    try:
        raise ValueError(f"bad key {KEY}")
    except ValueError:
        log.exception("failed")
    text = out.getvalue()
    assert KEY[2:].lower() not in text.lower()
    assert "bot-token-value" not in text
    assert "0123456789abcdefghij" not in text
    first = json.loads(text.splitlines()[0])
    assert first["private_key"] == "[redacted]"
    assert first["nested"]["token"] == "[redacted]"
    assert first["url"] == "https://x.example/v2/***"


def test_short_strings_are_not_registered_as_secrets() -> None:
    r = Redactor()
    r.add("abc")
    assert r.scrub("abc abc") == "abc abc"


def test_urls_inside_punctuation_are_redacted_without_errors() -> None:
    r = Redactor()
    text = r.scrub("failed (endpoint 0 (http://127.0.0.1:33823): boom), [https://x.io/v2/abcdef0123456789xyz]")
    assert "http://127.0.0.1:33823)" in text
    assert "abcdef0123456789xyz" not in text
