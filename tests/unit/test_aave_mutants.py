"""Cases that kill mutations of Aave's liquidation rules that survived the unit suite (#30 item
1), each worked out by hand: the protocol fee taken out of the seized collateral, and the
50 % cap that needs *both* reserves worth $2,000 (the collateral one too)."""

from __future__ import annotations

from dataclasses import replace

from tests.unit.test_aave_revisions import RESERVES, market, plan, positions, usd

E18 = 10**18


def test_the_protocol_fee_comes_out_of_the_seized_collateral() -> None:
    # WETH ($2,000) with a 10 % protocol fee; 5 WETH against 9,500 USDC: HF 0.868 <= 0.95, so
    # all of the debt. Base collateral 9,500 / 2,000 = 4.75 WETH; with the 5 % bonus 4.9875;
    # the bonus part 0.2375 WETH, of which 10 % (0.02375) goes to the treasury.
    reserves = (replace(RESERVES[0], liquidation_protocol_fee=1_000), *RESERVES[1:])
    m = market(10, reserves=reserves)
    p = plan(m, positions({0: 5 * E18}, {1: 9_500 * 10**6}))
    assert p is not None and p.debt_to_cover == 9_500 * 10**6
    assert p.protocol_fee == 2_375 * 10**13
    assert p.collateral_seized == 4_9875 * 10**14 - 2_375 * 10**13  # to the liquidator


def test_the_fifty_percent_cap_needs_the_collateral_reserve_worth_2000_too() -> None:
    # v3.3+: $1,900 of WETH and $1,100 of USDT against 2,500 USDC: HF (1,567.5 + 858) / 2,500
    # = 0.970, above 0.95. The debt is worth >= $2,000 but the WETH is not: no 50 % cap, so
    # the pool takes all the WETH for 1,900 / 1.05 = 1,809.52 USDC. (With the cap on the
    # debt alone, 1,250 USDC for 1,312.5 of WETH.)
    m = market(10)
    p = plan(m, positions({0: usd(m, 0, 1_900), 2: usd(m, 2, 1_100)}, {1: usd(m, 1, 2_500)}))
    assert p is not None and p.collateral == "WETH"
    assert p.collateral_seized == usd(m, 0, 1_900)
    assert abs(p.debt_to_cover - 1_809_523_810) <= 1


def test_the_dust_rule_counts_the_collateral_left_too() -> None:
    # v3.3+: $2,100 of WETH and $1,500 of USDT against 3,000 USDC: HF (1,732.5 + 1,170) / 3,000
    # = 0.9675. The WETH pair may take half the debt (both reserves over $2,000): 1,500 USDC
    # for 1,575 of WETH, which leaves $1,500 of debt but only $525 of WETH: MustNotLeaveDust.
    # Its largest amount that leaves the collateral floor pays less ($52) than the USDT pair,
    # which takes all $1,500 of USDT (under $2,000: no cap) for 1,435.4 USDC ($64.6). (With
    # the collateral left over not counted, the WETH pair at 1,500 USDC — $75, reverting —
    # was planned.)
    m = market(10)
    p = plan(m, positions({0: usd(m, 0, 2_100), 2: usd(m, 2, 1_500)}, {1: usd(m, 1, 3_000)}))
    assert p is not None and p.collateral == "USDT"
    assert p.collateral_seized + p.protocol_fee == usd(m, 2, 1_500)
