"""A case that kills the survivors of `make mutate` in PerpAccount.to_json
(keeperd/protocols/perps/margin.py, docs/mutation.md): no unit test read the element
`keeperd scan --json` prints, so its keys, values and the `maintenance_moves` default could
change unnoticed. Figures worked out by hand."""

from __future__ import annotations

import pytest

from keeperd.protocols.perps.margin import PerpAccount, PerpPosition

LONG = PerpPosition("ETH", 10.0, 1_900.0, 2_000.0, 1_000.0, "cross", maintenance_fraction=0.01,
                    funding_rate_hourly=0.0001, venue_liquidation_price=1_870.0)


def test_the_scan_json_of_a_perp_account() -> None:
    # $20,000 of ETH, 1 % maintenance ($200) on $1,400 of equity: health 7, ratio 1/7; funding
    # $2 an hour, so (1,400 - 200) / 2 = 600 hours; the mark falls 1,200 / (10 x 0.99) =
    # 121.21 to liquidation (the maintenance shrinks with the mark), 6.06 % of it.
    account = PerpAccount("hyperliquid", "0xabc", 1_400.0, (LONG,), {"chain": "arbitrum"})
    assert account.to_json() == {
        "protocol": "hyperliquid", "account": "0xabc",
        "health_factor": pytest.approx(7.0), "margin_ratio": pytest.approx(1 / 7),
        "account_value_usd": 1_400.0, "maintenance_margin_usd": pytest.approx(200.0),
        "notional_usd": 20_000.0, "collateral_usd": 1_400.0, "debt_usd": 20_000.0,
        "funding_per_hour_usd": pytest.approx(2.0),
        "hours_until_funding_liquidates": pytest.approx(600.0),
        "positions": [{
            "coin": "ETH", "size": 10.0, "side": "long", "entry_price": 1_900.0,
            "mark_price": 2_000.0, "notional_usd": 20_000.0, "unrealized_pnl": 1_000.0,
            "margin_mode": "cross", "maintenance_margin_usd": pytest.approx(200.0),
            "liquidation_price": pytest.approx(2_000.0 - 1_200.0 / 9.9),
            "venue_liquidation_price": 1_870.0,
            "distance_to_liquidation": pytest.approx(1_200.0 / 9.9 / 2_000.0),
            "funding_per_hour_usd": pytest.approx(2.0),
        }],
        "chain": "arbitrum",
    }
    # A fixed maintenance: the mark falls 1,200 / 10 = 120.
    fixed = account.to_json(maintenance_moves=False)["positions"][0]  # type: ignore[index]
    assert fixed["liquidation_price"] == pytest.approx(1_880.0)
    assert fixed["distance_to_liquidation"] == pytest.approx(0.06)


def test_no_equity_and_no_cross_positions_print_null() -> None:
    short = PerpPosition("BTC", -1.0, 30_000.0, 31_000.0, -1_000.0, "isolated",
                         isolated_margin=500.0)
    half = PerpPosition("ETH", 0.5, 2_000.0, 2_000.0, 0.0, "isolated", isolated_margin=100.0)
    doc = PerpAccount("v", "a", 0.0, (short, half)).to_json()
    assert doc["health_factor"] is None and doc["margin_ratio"] is None
    sides = [p["side"] for p in doc["positions"]]  # type: ignore[attr-defined]
    assert sides == ["short", "long"]  # (half a coin long is long)
