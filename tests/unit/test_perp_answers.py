"""The parse layer of the perp venues: a number a venue answers that cannot be what its field
says (NaN, infinite, a mark or margin fraction at or below zero) does not read — the market
or the account is unread, never valued — and an account's health never turns NaN into ∞."""

from __future__ import annotations

import math
from typing import Any

import pytest

from keeperd.protocols.perps.answers import VenueAnswerError, finite, fraction, positive
from keeperd.protocols.perps.dydx import parse_subaccount
from keeperd.protocols.perps.hyperliquid import parse_account, parse_meta
from keeperd.protocols.perps.margin import PerpAccount, PerpPosition
from tests.venue_fakes import HL_USER, asset_contexts, recorded

META = recorded("meta_2023-07-17.json")
STATE = recorded("clearinghouseState_2023-03-27.json")
COINS = [c["name"] for c in META["universe"]]


@pytest.mark.parametrize("value", ["NaN", "nan", "inf", "-Infinity", None, "", "abc", [1]])
def test_a_number_that_is_not_finite_does_not_read(value: Any) -> None:
    with pytest.raises(VenueAnswerError, match=r"x\.y"):
        finite(value, "x.y")


@pytest.mark.parametrize("value", ["0", "-3000", "-0.0", 0])
def test_a_price_at_or_below_zero_does_not_read(value: Any) -> None:
    with pytest.raises(VenueAnswerError, match="above 0"):
        positive(value, "markPx")
    assert finite("-3000", "pnl") == -3000.0  # (a PnL, an equity: any sign)


def test_a_margin_fraction_is_between_zero_and_one() -> None:
    assert fraction("0.03", "mmf") == 0.03
    for bad in ("1", "1.5", "0", "-0.03", "NaN"):
        with pytest.raises(VenueAnswerError):
            fraction(bad, "mmf")


@pytest.mark.parametrize(("field", "value"), [
    ("markPx", "NaN"), ("markPx", "-3000"), ("markPx", "0"), ("oraclePx", "NaN"),
    ("oraclePx", "-1"), ("funding", "NaN"), ("openInterest", "inf")])
def test_one_hyperliquid_context_that_does_not_read_leaves_its_market_unread(
        field: str, value: str) -> None:
    contexts = asset_contexts()
    btc = COINS.index("BTC")
    contexts[btc][field] = value
    markets = parse_meta(META, contexts)
    unread = markets["BTC"].unread
    assert unread is not None and unread.field == f"metaAndAssetCtxs BTC.{field}"
    assert all(m.unread is None for name, m in markets.items() if name != "BTC")
    # ... and every account holding BTC is unread, naming the field, not valued.
    with pytest.raises(VenueAnswerError, match=f"BTC.{field}"):
        parse_account(HL_USER, STATE, markets)


def test_a_hyperliquid_market_without_a_mark_is_valued_by_the_position_as_before() -> None:
    contexts = asset_contexts()
    del contexts[COINS.index("BTC")]["markPx"]
    account = parse_account(HL_USER, STATE, parse_meta(META, contexts))
    btc = next(p for p in account.positions if p.coin == "BTC")
    assert btc.mark_price == pytest.approx(211.64542 / 0.00785)


@pytest.mark.parametrize("value", [0, -50, "NaN", None])
def test_a_max_leverage_that_cannot_be_leaves_its_market_unread(value: Any) -> None:
    meta = {"universe": [{**META["universe"][0], "maxLeverage": value}, META["universe"][1]]}
    markets = parse_meta(meta)
    assert markets["BTC"].unread is not None and markets["ETH"].unread is None
    assert markets["BTC"].unread.field == "meta BTC.maxLeverage"


def test_a_margin_table_that_cannot_be_leaves_the_markets_using_it_unread() -> None:
    meta = {"universe": [{"name": "ETH", "szDecimals": 4, "maxLeverage": 25,
                          "marginTableId": 56}, {"name": "SOL", "szDecimals": 2,
                                                 "maxLeverage": 20}],
            "marginTables": [[56, {"marginTiers": [{"lowerBound": "0.0", "maxLeverage": 25},
                                                   {"lowerBound": "1e8", "maxLeverage": -15}]}]]}
    markets = parse_meta(meta)
    assert markets["ETH"].unread is not None and "marginTables[56]" in markets["ETH"].unread.field
    assert markets["SOL"].unread is None


@pytest.mark.parametrize(("where", "value", "field"), [
    ("szi", "NaN", "BTC.szi"), ("positionValue", "-211", "BTC.positionValue"),
    ("unrealizedPnl", "inf", "BTC.unrealizedPnl"), ("entryPx", None, "BTC.entryPx")])
def test_a_hyperliquid_position_number_that_cannot_be_leaves_the_account_unread(
        where: str, value: Any, field: str) -> None:
    state = recorded("clearinghouseState_2023-03-27.json")
    state["assetPositions"][0]["position"][where] = value  # BTC
    with pytest.raises(VenueAnswerError, match=field):
        parse_account(HL_USER, state, parse_meta(META))  # (no contexts: valued by position)


@pytest.mark.parametrize("value", ["NaN", "inf", None])
def test_a_hyperliquid_equity_that_cannot_be_leaves_the_account_unread(value: Any) -> None:
    state = recorded("clearinghouseState_2023-03-27.json")
    state["crossMarginSummary"]["accountValue"] = value
    with pytest.raises(VenueAnswerError, match="accountValue"):
        parse_account(HL_USER, state, parse_meta(META))


def test_hyperliquid_assetpositions_null_is_named() -> None:
    with pytest.raises(VenueAnswerError, match="assetPositions"):
        parse_account(HL_USER, {**STATE, "assetPositions": None}, parse_meta(META))


DYDX_MARKET = {"oraclePrice": "60000", "maintenanceMarginFraction": "0.03",
               "nextFundingRate": "0.00001"}
DYDX_SUB = {"subaccountNumber": 0, "equity": "5000", "freeCollateral": "2000",
            "openPerpetualPositions": {"BTC-USD": {"side": "LONG", "size": "1",
                                                   "entryPrice": "58000",
                                                   "unrealizedPnl": "2000"}}}


@pytest.mark.parametrize(("field", "value"), [
    ("oraclePrice", "NaN"), ("oraclePrice", "-60000"), ("oraclePrice", "0"),
    ("maintenanceMarginFraction", "-0.03"), ("maintenanceMarginFraction", "NaN"),
    ("maintenanceMarginFraction", "0"), ("maintenanceMarginFraction", "1.5"),
    ("nextFundingRate", "NaN")])
def test_a_dydx_market_number_that_cannot_be_leaves_its_holders_unread(
        field: str, value: str) -> None:
    markets = {"BTC-USD": {**DYDX_MARKET, field: value}}
    with pytest.raises(VenueAnswerError, match=f"perpetualMarkets BTC-USD.{field}"):
        parse_subaccount("dydx1x", DYDX_SUB, markets)


@pytest.mark.parametrize(("path", "value"), [
    (("equity",), "NaN"), (("freeCollateral",), "inf"),
    (("openPerpetualPositions", "BTC-USD", "size"), "NaN"),
    (("openPerpetualPositions", "BTC-USD", "entryPrice"), "-1")])
def test_a_dydx_subaccount_number_that_cannot_be_leaves_it_unread(
        path: tuple[str, ...], value: str) -> None:
    sub: dict[str, Any] = {**DYDX_SUB, "openPerpetualPositions": {
        "BTC-USD": dict(DYDX_SUB["openPerpetualPositions"]["BTC-USD"])}}  # type: ignore[index]
    target = sub
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(VenueAnswerError, match=path[-1]):
        parse_subaccount("dydx1x", sub, {"BTC-USD": DYDX_MARKET})
    # (the sound answer reads)
    assert parse_subaccount("dydx1x", DYDX_SUB, {"BTC-USD": DYDX_MARKET}).health == \
        pytest.approx(5000 / 1800)


def test_health_is_nan_not_infinite_where_maintenance_or_equity_does_not_read() -> None:
    def account(mark: float, equity: float = 1000.0, fraction: float = 0.02) -> PerpAccount:
        return PerpAccount("v", "a", equity, (PerpPosition(
            "BTC", 1.0, 100.0, mark, 0.0, "cross", maintenance_fraction=fraction),))

    assert math.isnan(account(math.nan).health)
    assert math.isnan(account(100.0, equity=math.nan).health)
    assert math.isnan(account(100.0, fraction=-0.02).health)  # maintenance below zero
    assert account(100.0).health == pytest.approx(1000 / 2)
    assert PerpAccount("v", "a", 1000.0, ()).health == math.inf  # no position: no risk
    assert account(math.nan).to_json()["health_factor"] is None
