"""Provider keys in RPC URLs never reach a log, whatever their length (`/v2/abc` was logged in
full in rpc.no_endpoint_answers while 32- and 64-character keys were redacted): a path
segment is shown only if it is a version or a known public word; the host stays."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from keeperd.chain.connect import check_chain_ids
from keeperd.chain.rpc import Endpoint, RpcPool, RpcPoolSettings, redact_url, url_secrets
from keeperd.logs import Redactor, configure_logging

pytestmark = pytest.mark.usefixtures("logging_restored")  # (tests/conftest.py)


@pytest.mark.parametrize(("url", "shown"), [
    # keys of every length after a version: short ones too
    ("https://eth.example.invalid/v2/abc", "https://eth.example.invalid/v2/***"),
    ("https://eth.example.invalid/v2/k", "https://eth.example.invalid/v2/***"),
    ("https://eth.example.invalid/v2/abcdefgh", "https://eth.example.invalid/v2/***"),
    ("https://eth.example.invalid/v2/" + "a1B2" * 8, "https://eth.example.invalid/v2/***"),
    ("https://eth.example.invalid/v2/" + "0f" * 32, "https://eth.example.invalid/v2/***"),
    # Alchemy, Infura, QuickNode (the token is the first segment), Ankr, Pocket, Chainstack
    ("https://eth-mainnet.g.alchemy.com/v2/Xq3_kE-9aZ", "https://eth-mainnet.g.alchemy.com/v2/***"),
    ("wss://eth-mainnet.g.alchemy.com/v2/demo", "wss://eth-mainnet.g.alchemy.com/v2/***"),
    ("https://mainnet.infura.io/v3/84842078b09946638c03157f83405213",
     "https://mainnet.infura.io/v3/***"),
    ("https://arbitrum-mainnet.infura.io/ws/v3/abc123", "https://arbitrum-mainnet.infura.io/ws/v3/***"),
    ("https://falling-frosty-dust.quiknode.pro/9f2c1e/", "https://falling-frosty-dust.quiknode.pro/***/"),
    ("https://falling-frosty-dust.quiknode.pro/9f2c1e", "https://falling-frosty-dust.quiknode.pro/***"),
    ("https://rpc.ankr.com/eth/short", "https://rpc.ankr.com/eth/***"),
    ("https://eth-mainnet.gateway.pokt.network/v1/lb/62b3", "https://eth-mainnet.gateway.pokt.network/v1/lb/***"),
    ("https://nd-123-456-789.p2pify.com/abc", "https://nd-123-456-789.p2pify.com/***"),
    # credentials elsewhere: the userinfo, the query, the fragment
    ("https://user:pw@eth.example.com/v2/abcdef0123456789abcd?key=1#frag",
     "https://eth.example.com/v2/***"),
    ("https://lb.drpc.org/ogrpc?network=ethereum&dkey=abc", "https://lb.drpc.org/ogrpc"),
    # Telegram's bot token; public route words and versions stay
    ("https://api.telegram.org/bot123456:ABCdefGhIJKlmnoPQR/sendMessage",
     "https://api.telegram.org/***/sendMessage"),
    ("https://api.hyperliquid.xyz/info", "https://api.hyperliquid.xyz/info"),
    ("http://127.0.0.1:9093/api/v2/alerts", "http://127.0.0.1:9093/api/v2/alerts"),
    ("https://api.avax.network/ext/bc/C/rpc", "https://api.avax.network/ext/bc/C/rpc"),
    # no path at all, an empty one, a port, an IPv6 literal
    ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
    ("https://eth.example.invalid", "https://eth.example.invalid"),
    ("https://eth.example.invalid/", "https://eth.example.invalid/"),
    ("http://[::1]:8545/abc", "http://[::1]:8545/***"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_an_unparseable_url_is_not_echoed() -> None:
    assert redact_url("http://[::1/v2/abc") == "[unparseable url]"


def test_a_short_key_is_not_in_the_log_line_that_names_the_endpoints() -> None:
    """What rpc.no_endpoint_answers logs: each endpoint's safe_url and what failed, through
    the process's redactor (which also redacts any URL in free text)."""
    out = io.StringIO()
    configure_logging("debug", "json", stream=out)
    key = "qz7"  # a 3-character key, as the trial's `/v2/abc`
    ep = Endpoint("primary", f"http://127.0.0.1:1/v2/{key}", None)
    structlog.get_logger("t").error(
        "rpc.no_endpoint_answers", endpoints=[f"{ep.safe_url}: refused"],
        detail=f"cannot reach http://127.0.0.1:1/v2/{key} (nor https://rpc.ankr.com/eth/{key})")
    line = json.loads(out.getvalue())
    assert line["endpoints"] == ["http://127.0.0.1:1/v2/***: refused"]
    assert key not in out.getvalue()
    assert Redactor().scrub(f"at https://h.example/v2/{key}, then") == \
        "at https://h.example/v2/***, then"


async def test_the_endpoint_checks_name_endpoints_without_their_keys() -> None:
    """check_chain_ids feeds rpc.no_endpoint_answers: its URLs and its details."""
    key = "abc"
    pool = RpcPool("devnet", [Endpoint("e0", f"http://127.0.0.1:1/v2/{key}", None)],
                   settings=RpcPoolSettings(timeout=2.0, max_attempts=1))
    async with pool:
        [check] = await check_chain_ids(pool, 31337)
    assert check.status == "unreachable" and check.safe_url == "http://127.0.0.1:1/v2/***"
    assert f"/{key}" not in check.detail, check.detail


def test_punctuation_after_a_url_stays() -> None:
    assert redact_url("https://h.example/v2/abc:") == "https://h.example/v2/***:"
    assert redact_url("https://api.hyperliquid.xyz/info.") == "https://api.hyperliquid.xyz/info."
    assert Redactor().scrub("gone: https://h.example/v2/abc. Retrying") == \
        "gone: https://h.example/v2/***. Retrying"


def test_url_secrets_are_what_redact_url_hides() -> None:
    """(An audit: a venue's 404 page echoed the path asked, the key in it with it.) The parts
    a text that echoes the URL must be scrubbed of: not the host, versions or public words."""
    assert url_secrets("https://x.quiknode.pro/tok3n/info") == ["tok3n"]
    assert url_secrets("https://u:pw@eth-mainnet.g.alchemy.com/v2/KEY?apikey=Q1#f") == [
        "u", "pw", "KEY", "apikey=Q1", "f", "Q1"]
    assert url_secrets("https://api.hyperliquid.xyz") == []
