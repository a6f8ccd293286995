"""Cases for the survivors of `make mutate` in perps/margin.py (docs/mutation.md), each worked
out by hand: the liquidation price's edges (a price of exactly 0, under $1, a zero
denominator, isolated margin with unrealised PnL or none reported), the defaults the callers
rely on, the open interest a move liquidates at its edges (exactly the liquidation price,
exactly the partial-liquidation notional, an account exactly at maintenance or already under
it), tiers and their deductions over three tiers, and funding's edges."""

from __future__ import annotations

import pytest

from keeperd.protocols.perps.margin import (
    MarginTier,
    PerpAccount,
    PerpPosition,
    liquidated_notional_by_move,
    maintenance_deduction,
    maintenance_fraction,
)


def long_btc(size: float = 1.0, mark: float = 30_000.0, **kw: object) -> PerpPosition:
    return PerpPosition("BTC", size, mark, mark, 0.0, "cross",  # type: ignore[arg-type]
                        maintenance_fraction=0.01, **kw)


# -- liquidation price --------

def test_liquidation_price_edges() -> None:
    # Held maintenance (k = 0): 1 BTC at $100, maintenance $1. Account value $101: room $100,
    # the price falls $100 to exactly 0 -- no positive price; $100.50: $0.50.
    p = long_btc(mark=100.0)
    assert PerpAccount("v", "a", 101.0, (p,)).liquidation_price(p, maintenance_moves=False) \
        is None
    assert PerpAccount("v", "a", 100.5, (p,)).liquidation_price(
        p, maintenance_moves=False) == pytest.approx(0.5)
    # A long whose maintenance is all its notional (fraction 1, k = 1): |size| (1 - 1) = 0
    whole = PerpPosition("BTC", 1.0, 100.0, 100.0, 0.0, "cross", maintenance_fraction=1.0)
    assert PerpAccount("v", "a", 500.0, (whole,)).liquidation_price(whole) is None


def test_isolated_equity_is_its_margin_plus_its_pnl() -> None:
    # 1 BTC isolated at $30,000 with $2,000 of margin and $500 of unrealised PnL: equity
    # $2,500, maintenance $300, room $2,200 over 0.99: 30,000 - 2,222.22
    iso = PerpPosition("BTC", 1.0, 29_500.0, 30_000.0, 500.0, "isolated",
                       maintenance_fraction=0.01, isolated_margin=2_000.0)
    a = PerpAccount("v", "a", 0.0, (iso,))
    assert a.liquidation_price(iso) == pytest.approx(30_000 - 2_200 / 0.99)
    # No margin reported: the PnL alone ($500 - $300 = $200 of room)
    bare = PerpPosition("BTC", 1.0, 29_500.0, 30_000.0, 500.0, "isolated",
                        maintenance_fraction=0.01)
    assert PerpAccount("v", "a", 0.0, (bare,)).liquidation_price(bare) == pytest.approx(
        30_000 - 200 / 0.99)


def test_the_default_is_the_maintenance_that_moves_with_the_price() -> None:
    # 1 BTC at $30,000, account $3,000: room 3,000 - 300 = 2,700; with the maintenance
    # moving (k = 1) over 0.99: 30,000 - 2,727.27, a 9.09 % fall.
    p = long_btc()
    a = PerpAccount("v", "a", 3_000.0, (p,))
    assert a.distance_to_liquidation(p) == pytest.approx(2_700 / 0.99 / 30_000)
    # so a 9.0 % fall takes nothing, 9.1 % all of it (held maintenance would say 9.0 %)
    got = liquidated_notional_by_move([a], "BTC", [-0.09, -0.091])
    assert got == {-0.09: 0.0, -0.091: pytest.approx(30_000)}
    held = liquidated_notional_by_move([a], "BTC", [-0.09], maintenance_moves=False)
    assert held == {-0.09: pytest.approx(30_000)}


# -- the open interest a move liquidates --------

def test_moves_that_reach_the_liquidation_price_exactly() -> None:
    # Held maintenance: 1 BTC at $2,000, maintenance $20, account $520: room $500, the
    # liquidation price $1,500: exactly -25 %. A short of 1 at $2,000 with $520: +25 %.
    long = long_btc(mark=2_000.0)
    short = PerpPosition("BTC", -1.0, 2_000.0, 2_000.0, 0.0, "cross",
                         maintenance_fraction=0.01)
    a, b = PerpAccount("v", "a", 520.0, (long,)), PerpAccount("v", "b", 520.0, (short,))
    got = liquidated_notional_by_move([a, b], "BTC", [-0.25, 0.25], maintenance_moves=False)
    assert got == {-0.25: 2_000.0, 0.25: 2_000.0}


def test_an_account_at_or_under_maintenance_is_liquidated_by_any_move_against_it() -> None:
    # 1 BTC long at $2,000 (maintenance $20), account exactly $20: the liquidation price is
    # the mark; any fall liquidates it, any rise saves it. Account $10: under maintenance
    # already, its liquidation price $2,010: liquidated unless BTC rises past +0.5 %.
    long = long_btc(mark=2_000.0)
    at = PerpAccount("v", "a", 20.0, (long,))
    under = PerpAccount("v", "u", 10.0, (long,))
    moves = [-0.1, 0.0, 0.004, 0.1]
    got = liquidated_notional_by_move([at], "BTC", moves, maintenance_moves=False)
    assert got == {-0.1: 2_000.0, 0.0: 2_000.0, 0.004: 0.0, 0.1: 0.0}
    got = liquidated_notional_by_move([under], "BTC", moves, maintenance_moves=False)
    assert got == {-0.1: 2_000.0, 0.0: 2_000.0, 0.004: 2_000.0, 0.1: 0.0}


def test_other_coins_and_positions_without_a_price_do_not_stop_the_rest() -> None:
    # An ETH position before the BTC one; an isolated BTC long with more margin than its
    # notional (no positive liquidation price) before a cross BTC short (2 BTC, account
    # $10,000: room 10,000 - 600 over 2 x 1.01: +15.5 %), which takes the account: $90,000.
    eth = PerpPosition("ETH", 1.0, 2_000.0, 2_000.0, 0.0, "cross", maintenance_fraction=0.01)
    iso = PerpPosition("BTC", 1.0, 30_000.0, 30_000.0, 0.0, "isolated",
                       maintenance_fraction=0.01, isolated_margin=40_000.0)
    short = PerpPosition("BTC", -2.0, 30_000.0, 30_000.0, 0.0, "cross",
                         maintenance_fraction=0.01)
    a = PerpAccount("v", "a", 10_000.0, (eth, iso, short))
    assert a.liquidation_price(iso) is None
    got = liquidated_notional_by_move([a], "BTC", [0.2])
    assert got == {0.2: pytest.approx(2_000 + 30_000 + 60_000)}


def test_exactly_the_partial_notional_goes_whole() -> None:
    # Positions *above* $100k go 20 % at a time; exactly $100k goes whole.
    p = long_btc(size=1.0, mark=100_000.0)
    a = PerpAccount("v", "a", 5_000.0, (p,))
    got = liquidated_notional_by_move([a], "BTC", [-0.5], partial=(100_000.0, 0.2))
    assert got == {-0.5: pytest.approx(100_000)}


# -- tiers --------

def test_tiers_and_deductions_over_three_tiers() -> None:
    # 1 % from 0, 2.5 % from $1M, 5 % from $10M. $20M: 1 % of the first $1M ($10k), 2.5 % of
    # the next $9M ($225k), 5 % of the last $10M ($500k) = $735k = 5 % of all less $265k.
    tiers = [MarginTier(0.0, 50.0), MarginTier(1_000_000.0, 20.0), MarginTier(10_000_000.0, 10.0)]
    assert maintenance_fraction(tiers, 20e6) == pytest.approx(0.05)
    assert maintenance_deduction(tiers, 20e6) == pytest.approx(265_000)
    # A notional under the first tier's bound takes the first tier
    assert maintenance_fraction([MarginTier(10.0, 50.0)], 5.0) == pytest.approx(0.01)


# -- funding --------

def test_funding_edges() -> None:
    # 1 BTC at $30,000, maintenance $300. Paying 0.001 %/h = $0.30 an hour.
    def account(value: float, rate: float) -> PerpAccount:
        return PerpAccount("v", "a", value, (long_btc(funding_rate_hourly=rate),))
    assert account(303.0, 0.00001).hours_until_funding_liquidates() == pytest.approx(10.0)
    # Under maintenance already: 0 hours (not a negative number, not 1 / cost)
    assert account(200.0, 0.00001).hours_until_funding_liquidates() == 0.0
    # A rate of exactly 0: funding never liquidates it
    assert account(303.0, 0.0).hours_until_funding_liquidates() is None
