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
