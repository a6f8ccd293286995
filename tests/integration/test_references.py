"""Reference prices from local servers that speak each source's documented format — and its
failures: HTTP errors, timeouts, garbage — then the breaker tripping on a 20 % deviation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from keeperd.config import ReferenceSourceConfig
from keeperd.devnet.handle import Devnet
from keeperd.metrics import Metrics
from keeperd.oracles.references import BadAnswer, Quote, References, median_price, parse
from tests.conftest import metric_value, serve
from tests.keeper_harness import (  # noqa: F401 - fixtures
    config_for,
    fund_keeper,
    keeper_key_env,
)

PYTH_ETH = "0xff61491a931112ddf1bd8147cd1b641375f79f5825126d665480874634fd0ace"


class Venue:
    """One fake venue; `mode` switches it between answering and failing."""

    def __init__(self, kind: str, price: float) -> None:
        self.kind, self.price, self.mode = kind, price, "ok"

    def body(self) -> object:
        p = f"{self.price:.2f}"
        if self.kind == "binance":
            return {"symbol": "ETHUSDT", "price": p}
        if self.kind == "coinbase":
            return {"data": {"amount": p, "base": "ETH", "currency": "USD"}}
        if self.kind == "kraken":
            return {"error": [], "result": {"XETHZUSD": {"a": [p, "1", "1.0"], "c": [p, "0.1"]}}}
        return {"binary": {"encoding": "hex", "data": []},
                "parsed": [{"id": PYTH_ETH[2:], "price": {
                    "price": str(int(self.price * 1e8)), "conf": "150000", "expo": -8,
                    "publish_time": 1700000000}}]}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.mode == "error":
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        if self.mode == "timeout":
            await asyncio.sleep(5)
        if self.mode == "garbage":
            return web.Response(text="<html>cloudflare</html>", content_type="text/html")
        return web.json_response(self.body())


PATHS = {"binance": "/api/v3/ticker/price", "coinbase": "/v2/prices/{market}/spot",
         "kraken": "/0/public/Ticker", "pyth_hermes": "/v2/updates/price/latest"}
MARKETS = {"binance": "ETHUSDT", "coinbase": "ETH-USD", "kraken": "XETHZUSD",
           "pyth_hermes": PYTH_ETH}


@pytest.fixture
async def venues() -> AsyncIterator[tuple[dict[str, Venue], list[ReferenceSourceConfig]]]:
    found: dict[str, Venue] = {}
    configs: list[ReferenceSourceConfig] = []
    async with contextlib_stack() as stack:
        for kind in PATHS:
            venue = Venue(kind, 3000.0)
            app = web.Application()
            app.router.add_get(PATHS[kind], venue.handle)
            url = await stack.enter_async_context(serve(app))
            found[kind] = venue
            configs.append(ReferenceSourceConfig(kind=kind, name=kind, url=url,
                                                 markets={"WETH": MARKETS[kind]}))
        yield found, configs


def contextlib_stack():
    import contextlib

    return contextlib.AsyncExitStack()


def test_parsers_read_the_documented_formats_and_refuse_others() -> None:
    for kind in PATHS:
        assert parse(kind, Venue(kind, 3012.5).body(), MARKETS[kind]) == pytest.approx(3012.5)
    for kind in PATHS:
        for bad in ({}, {"price": "abc"}, [], {"data": None}, {"error": ["EQuery:Unknown"]}):
            with pytest.raises(BadAnswer):
                parse(kind, bad, MARKETS[kind])
    with pytest.raises(BadAnswer):
        parse("binance", {"price": "-1"}, "ETHUSDT")


def test_median_needs_enough_sources() -> None:
    quotes = [Quote(s, "WETH", p) for s, p in (("a", 1.0), ("b", 3.0), ("c", 2.5))]
    assert median_price(quotes, 2) == 2.5
    assert median_price(quotes[:1], 2) is None


async def test_failing_sources_are_counted_and_left_out(venues) -> None:
    found, configs = venues
    metrics = Metrics()
    refs = References(configs, metrics, timeout_s=0.5)
    try:
        found["binance"].mode = "error"
        found["coinbase"].mode = "timeout"
        found["kraken"].mode = "garbage"
        found["pyth_hermes"].price = 3100.0
        quotes = await refs.quotes("WETH")
    finally:
        await refs.close()
    assert [(q.source, q.price) for q in quotes] == [("pyth_hermes", pytest.approx(3100.0))]
    for source, outcome in (("binance", "error"), ("coinbase", "timeout"), ("kraken", "error"),
                            ("pyth_hermes", "ok")):
        assert metric_value(metrics, "keeperd_reference_requests_total",
                            {"source": source, "outcome": outcome}) == 1


async def test_oracle_20pct_off_the_reference_median_trips_the_breaker(
        devnet: Devnet, tmp_path: Path, venues, run_daemon) -> None:
    found, configs = venues
    fund_keeper(devnet)
    config = config_for(devnet, tmp_path, "liquidate", key={"source": "env", "env": "KEEPER_KEY"})
    config = config.model_copy(update={"oracles": config.oracles.model_copy(update={
        "references": configs, "min_sources": 3, "max_deviation": 0.05,
        "reference_interval_s": 0.01, "reference_timeout_s": 1.0})})
    keeper = await run_daemon(config)
    await keeper.evaluated_at(devnet.client.block_number())
    metrics = keeper.daemon.metrics
    assert metric_value(metrics, "keeperd_breaker_tripped",
                        {"chain": "devnet", "asset": "WETH"}) == 0
    # The protocol's oracle says 2,400 while the market (three of four venues) says 3,000.
    found["binance"].mode = "garbage"
    devnet.set_price("WETH", 2400.0)
    await keeper.evaluated_at(devnet.mine(1))
    assert metric_value(metrics, "keeperd_breaker_tripped",
                        {"chain": "devnet", "asset": "WETH"}) == 1
    assert metric_value(metrics, "keeperd_oracle_deviation_ratio",
                        {"chain": "devnet", "asset": "WETH"}) == pytest.approx(0.2, rel=1e-3)
    scanner = keeper.daemon.scanners["aave"]
    assert scanner.view is not None and (scanner.view.health < 1).sum() > 0
    assert await keeper.daemon.executors["aave"].journal.all() == []


async def test_references_that_stop_answering_are_told(
        devnet: Devnet, tmp_path: Path, venues, run_daemon) -> None:
    """The deviation check goes off for an asset while fewer than min_sources answer: it was
    six info lines and nothing else when the shipped exchanges could not be reached (a
    by-hand trial). Now a gauge (KeeperdReferencesUnavailable) and one warning, and back."""
    import structlog

    found, configs = venues
    config = config_for(devnet, tmp_path, "alert-only")
    config = config.model_copy(update={"oracles": config.oracles.model_copy(update={
        "references": configs, "min_sources": 3, "reference_interval_s": 0.01,
        "reference_timeout_s": 0.5})})
    keeper = await run_daemon(config)
    await keeper.evaluated_at(devnet.client.block_number())
    metrics = keeper.daemon.metrics
    labels = {"chain": "devnet", "asset": "WETH"}
    assert metric_value(metrics, "keeperd_reference_median_missing", labels) == 0
    with structlog.testing.capture_logs() as logs:
        for venue in ("binance", "coinbase"):
            found[venue].mode = "error"
        for _ in range(3):
            await keeper.evaluated_at(devnet.mine(1))
        assert metric_value(metrics, "keeperd_reference_median_missing", labels) == 1
        for venue in ("binance", "coinbase"):
            found[venue].mode = "ok"
        await keeper.evaluated_at(devnet.mine(1))
        await keeper.evaluated_at(devnet.mine(1))
    assert metric_value(metrics, "keeperd_reference_median_missing", labels) == 0
    said = [e["event"] for e in logs if e["event"].startswith("reference.median_")
            and e.get("asset") == "WETH"]
    assert said == ["reference.median_unavailable", "reference.median_back"]


async def test_check_config_says_why_each_source_gave_no_price(venues) -> None:
    """check-config's warning names the cause (an HTTP status, a timeout, an answer that does
    not read, a refused connection) and every asset the source prices: "gave no price for
    WETH, its first market" left a by-hand trial guessing between a firewall and a typo."""
    import socket
    from types import SimpleNamespace

    from keeperd.checks import reference_warnings
    from keeperd.config import OraclesConfig

    found, configs = venues
    found["binance"].mode = "error"
    found["coinbase"].mode = "timeout"
    found["kraken"].mode = "garbage"
    with socket.socket() as s:  # (a port nothing listens on: the connection is refused)
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    refused = ReferenceSourceConfig(kind="binance", name="closed", url=closed,
                                    markets={"WETH": "ETHUSDT", "WBTC": "BTCUSDT"})
    oracles = OraclesConfig(references=[*configs, refused], min_sources=2,
                            reference_timeout_s=0.5)
    warnings = await reference_warnings(SimpleNamespace(oracles=oracles))  # type: ignore[arg-type]
    by_field = {w.path: w.message for w in warnings}
    assert set(by_field) == {"oracles.references[0]", "oracles.references[1]",
                             "oracles.references[2]", "oracles.references[4]"}  # (pyth answers)
    assert "HTTP 400" in by_field["oracles.references[0]"]
    assert "no answer within 0.5 s" in by_field["oracles.references[1]"]
    assert "unexpected answer" in by_field["oracles.references[2]"] or \
        "Expecting value" in by_field["oracles.references[2]"]
    assert "Cannot connect" in by_field["oracles.references[4]"]
    assert "WETH (and WBTC)" in by_field["oracles.references[4]"]
    assert "fewer than 2 sources (oracles.min_sources)" in by_field["oracles.references[4]"]
