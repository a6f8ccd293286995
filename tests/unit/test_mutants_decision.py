"""Cases that kill the survivors of `make mutate` in the executor's decision stage
(`keeperd.execution.executor.decide`, docs/mutation.md): the profit floor is inclusive, a
native token under $1 is a price, and the decision carries what it decided on."""

from __future__ import annotations

from keeperd.execution.executor import decide
from tests.unit.test_decision import plan


def test_exactly_the_minimum_profit_is_sent() -> None:
    # $500 bonus, no slippage, no gas: net exactly $500, the floor.
    d = decide(plan(10_000, 10_500), "k", gas_limit=300_000, fee_per_gas=0, native_usd=2_000,
               min_profit_usd=500, slippage_bps=0)
    assert d is not None and d.net_profit_usd == 500


def test_a_native_token_under_one_dollar_still_prices_gas() -> None:
    # A chain whose gas token is worth $0.50 (a sidechain): the budget is in its wei.
    d = decide(plan(10_000, 10_500), "k", gas_limit=300_000, fee_per_gas=0, native_usd=0.5,
               min_profit_usd=100, slippage_bps=0)
    assert d is not None and d.budget_wei == 800 * 10**18  # ($500 - $100) / $0.50


def test_the_decision_names_its_opportunity_key_and_gas_limit() -> None:
    opportunity = plan(10_000, 10_500)
    d = decide(opportunity, "aave:0xuser:7", gas_limit=300_000, fee_per_gas=0,
               native_usd=2_000, min_profit_usd=5, slippage_bps=0)
    assert d is not None
    assert (d.opportunity, d.key, d.gas_limit) == (opportunity, "aave:0xuser:7", 300_000)


def test_a_flash_sale_is_priced_by_what_its_simulation_kept() -> None:
    """The seller contract returns what the beneficiary was sent: that is the prize, instead
    of the bonus less `swap_slippage_bps` and the premium (realised 0.33-1.05 of that
    estimate on a devnet crash, a by-hand trial)."""
    from keeperd.execution.executor import Simulated, _sold_usd, seller_returned

    opportunity = plan(10_000, 10_500)  # ($500 of bonus on $10,000 repaid)
    estimated = decide(opportunity, "k", gas_limit=300_000, fee_per_gas=0, native_usd=2_000,
                       min_profit_usd=5, slippage_bps=50, flash_premium_bps=9)
    assert estimated is not None and round(estimated.net_profit_usd, 2) == 438.5
    sold = decide(opportunity, "k", gas_limit=300_000, fee_per_gas=0, native_usd=2_000,
                  min_profit_usd=5, slippage_bps=50, flash_premium_bps=9, sold_usd=160.0)
    assert sold is not None and sold.net_profit_usd == 160.0
    assert sold.budget_wei == int(155 / 2_000 * 1e18)  # (its fee budget from it too)
    assert decide(opportunity, "k", gas_limit=300_000, fee_per_gas=0, native_usd=2_000,
                  min_profit_usd=200, slippage_bps=50, sold_usd=160.0) is None
    # One endpoint's answer: never more than the plan allows with no slippage at all (the
    # fee budget follows it).
    lie = decide(opportunity, "k", gas_limit=300_000, fee_per_gas=0, native_usd=2_000,
                 min_profit_usd=5, slippage_bps=50, flash_premium_bps=9, sold_usd=10**9)
    assert lie is not None and lie.net_profit_usd == 500 - 9
    # The return read: one uint256, in the debt asset's units, priced at the plan's own
    # price of that asset (its repaid USD over the units it repays).
    assert seller_returned("0x" + hex(4 * 10**6)[2:].rjust(64, "0")) == 4 * 10**6
    assert seller_returned("0x") is None and seller_returned(None) is None
    assert seller_returned("0x" + "00" * 64) is None  # (two words: not a seller's return)
    from dataclasses import replace

    usdc = replace(plan(10_000, 10_500), amount=10_000 * 10**6)
    assert _sold_usd(usdc, Simulated(None, sold=4 * 10**6)) == 4.0
    assert _sold_usd(usdc, Simulated(None)) is None and _sold_usd(usdc, None) is None
