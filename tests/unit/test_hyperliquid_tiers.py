"""Hyperliquid's maintenance margin by tier, from its docs (trading/margin-tiers): the
maintenance margin rate of a tier is half the initial margin at its max leverage, and each
tier subtracts a deduction that keeps the margin continuous where tiers meet. The docs' tables:
BTC 40x up to $150M of notional and 20x past it; ETH 25x up to $100M and 15x past it."""

from __future__ import annotations

import pytest

from keeperd.protocols.perps.margin import (
    MarginTier,
    PerpAccount,
    PerpPosition,
    maintenance_deduction,
    maintenance_fraction,
)

ETH = [MarginTier(0.0, 25), MarginTier(100_000_000.0, 15)]
BTC = [MarginTier(0.0, 40), MarginTier(150_000_000.0, 20)]


def maintenance(tiers: list[MarginTier], notional: float) -> float:
    return notional * maintenance_fraction(tiers, notional) - maintenance_deduction(tiers,
                                                                                     notional)


def test_a_position_above_the_first_tier_gets_the_deduction() -> None:
    # $150M of ETH: 3.33 % of it, less 100M x (3.33 % - 2 %) = $3.67M, not $5M (36 % more).
    assert maintenance_deduction(ETH, 150e6) == pytest.approx(100e6 * (1 / 30 - 1 / 50))
    assert maintenance(ETH, 150e6) == pytest.approx(150e6 / 30 - 100e6 * (1 / 30 - 1 / 50))
    assert maintenance(ETH, 150e6) == pytest.approx(3_666_666.67, abs=0.01)
    assert 150e6 / 30 / maintenance(ETH, 150e6) == pytest.approx(1.3636, abs=1e-4)
    # Below the second tier: no deduction.
    assert maintenance_deduction(BTC, 149e6) == 0.0
    assert maintenance(BTC, 149e6) == pytest.approx(149e6 / 80)


@pytest.mark.parametrize("tiers,bound", [(ETH, 100e6), (BTC, 150e6)])
def test_the_margin_is_continuous_where_tiers_meet(tiers: list[MarginTier], bound: float
                                                   ) -> None:
    below, at = maintenance(tiers, bound - 1e-3), maintenance(tiers, bound)
    assert at == pytest.approx(below, abs=1e-3)


def test_an_account_uses_the_deduction() -> None:
    position = PerpPosition("ETH", 50_000.0, 3_000.0, 3_000.0, 0.0, "cross",
                            maintenance_fraction=maintenance_fraction(ETH, 150e6),
                            maintenance_deduction=maintenance_deduction(ETH, 150e6))
    account = PerpAccount("hyperliquid", "0xabc", 10e6, (position,))
    assert account.maintenance_margin == pytest.approx(maintenance(ETH, 150e6))


def test_open_interest_at_risk_takes_a_fifth_of_a_large_position_at_first() -> None:
    from keeperd.protocols.perps.margin import liquidated_notional_by_move

    big = PerpPosition("ETH", 100.0, 3_000.0, 3_000.0, 0.0, "cross",
                       maintenance_fraction=0.02)  # $300k
    small = PerpPosition("ETH", 10.0, 3_000.0, 3_000.0, 0.0, "cross",
                         maintenance_fraction=0.02)  # $30k
    accounts = [PerpAccount("hyperliquid", "0xa", 30_000.0, (big,)),
                PerpAccount("hyperliquid", "0xb", 3_000.0, (small,))]
    whole = liquidated_notional_by_move(accounts, "ETH", [-0.5])
    clipped = liquidated_notional_by_move(accounts, "ETH", [-0.5], partial=(100_000.0, 0.2))
    assert whole[-0.5] == pytest.approx(330_000.0)
    assert clipped[-0.5] == pytest.approx(0.2 * 300_000.0 + 30_000.0)
