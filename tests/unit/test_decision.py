"""The executor's send-or-not decision, without a chain."""

from __future__ import annotations

import pytest

from keeperd.chain.rpc import RpcError, RpcUnavailable
from keeperd.execution.capital import Need
from keeperd.execution.executor import (
    NOT_ENOUGH_PROFIT,
    RECEIPT_TO_LIMIT,
    decide,
    swap_would_not_pay,
)
from keeperd.protocols.sdk.contract import Opportunity, OpportunityKey

GWEI = 10**9


def plan(repaid_usd: float, seized_usd: float) -> Opportunity:
    return Opportunity(OpportunityKey("aave", "0xuser", ("0x01", "0x02"), "v"), "WETH", "USDC", 1,
                       frozenset({"WETH", "USDC"}), Need("0x02", "USDC", 6, 1, 0.0),
                       seized_usd - repaid_usd, seized_usd, repaid_usd, 300_000, None)


def test_profit_is_the_bonus_less_slippage_and_gas() -> None:
    # $10,000 repaid, $10,500 seized: $500 bonus, 0.5 % slippage on the seized ($52.5),
    # a 393k gas limit, of which 300k is charged (the rest is the refund and the 1/64
    # reserve a limit carries), at 20 gwei with ETH at $2,000 ($12).
    d = decide(plan(10_000, 10_500), "k", gas_limit=393_000, fee_per_gas=20 * GWEI,
               native_usd=2_000, min_profit_usd=5, slippage_bps=50)
    assert RECEIPT_TO_LIMIT == 1.31
    assert d is not None
    assert d.net_profit_usd == pytest.approx(500 - 52.5 - 12)
    # The budget keeps min_profit_usd whatever the fees, worst case included (the whole
    # limit burnt): (447.5 - 5) USD in wei at $2,000; the tx manager holds fee cap x limit
    # under it.
    assert d.budget_wei == int((447.5 - 5) / 2_000 * 1e18)


def test_a_flash_loan_pays_its_premium_on_what_it_borrowed() -> None:
    own = decide(plan(10_000, 10_500), "k", gas_limit=300_000, fee_per_gas=GWEI,
                 native_usd=2_000, min_profit_usd=5, slippage_bps=0)
    flash = decide(plan(10_000, 10_500), "k", gas_limit=300_000, fee_per_gas=GWEI,
                   native_usd=2_000, min_profit_usd=5, slippage_bps=0, flash_premium_bps=5)
    assert own is not None and flash is not None
    assert own.net_profit_usd - flash.net_profit_usd == pytest.approx(5.0)  # 5 bps of $10k


def test_nothing_is_sent_below_the_minimum_or_without_a_gas_price() -> None:
    small = plan(100, 104)  # $4 bonus
    assert decide(small, "k", gas_limit=300_000, fee_per_gas=GWEI, native_usd=2_000,
                  min_profit_usd=5, slippage_bps=0) is None
    # Gas eats a $50 bonus at 100 gwei x 600k gas with ETH at $2,000 ($120).
    assert decide(plan(1_000, 1_050), "k", gas_limit=600_000, fee_per_gas=100 * GWEI,
                  native_usd=2_000, min_profit_usd=1, slippage_bps=0) is None
    assert decide(plan(10_000, 10_500), "k", gas_limit=300_000, fee_per_gas=GWEI,
                  native_usd=0.0, min_profit_usd=1, slippage_bps=0) is None


def test_an_unpriced_opportunity_is_never_sent() -> None:
    # A Morpho market lending a token with no USD scale: its values are NaN, and NaN compares
    # false with everything — "not below the minimum" must not let it through.
    nan = float("nan")
    assert decide(plan(nan, nan), "k", gas_limit=300_000, fee_per_gas=GWEI, native_usd=2_000,
                  min_profit_usd=0, slippage_bps=0) is None


@pytest.mark.parametrize(("error", "guard"), [
    # eth_call: the revert's data
    (RpcError("eth_call", 3, "execution reverted", NOT_ENOUGH_PROFIT + "00" * 64),
     "NotEnoughProfit"),
    # eth_estimateGas on anvil: the custom error named in the message only (as recorded)
    (RpcError("eth_estimateGas", 3, "execution reverted: custom error 0x092faa7a: "
              "0000000000000000000000000000000000000000000000000000012c33e8ad69"
              "0000000000000000000000000000000000000000000000000000012d5c8184c0"),
     "SwapBelowBound"),
    (RpcError("eth_call", 3, "execution reverted", "0xdeadbeef" + NOT_ENOUGH_PROFIT[2:]), None),
    (RpcError("eth_call", 3, "execution reverted: nonce too low"), None),
    (RpcUnavailable("down"), None),
])
def test_a_seller_contracts_guard_is_read_as_unprofitable(error: Exception,
                                                          guard: str | None) -> None:
    """(A measured sale's SwapBelowBound was counted as a failed simulation, then checked
    as a lost race.) Only at the start of the data, or named as the custom error."""
    assert swap_would_not_pay(error) == guard


def test_the_seller_contracts_bar_is_the_decisions_own() -> None:
    """A flash liquidation's contract reverts unless it keeps `least_profit` of the debt
    asset; the decision sends when the prize clears gas and min_profit_usd. Priced apart
    (the bar at the whole limit, the decision at the charged gas), a prize between the two
    passed the decision and reverted in every simulation, measured again by estimateGas."""
    from keeperd.protocols.sdk.contract import GasQuote

    quote = GasQuote(fee_per_gas=20 * GWEI, native_usd=2_000, min_profit_usd=5)
    gas_limit = 393_000
    bar_usd = quote.least_profit(gas_limit, 1.0, 6) / 1e6  # in a $1 token of 6 decimals
    for prize in (bar_usd - 0.01, bar_usd + 0.01):
        d = decide(plan(10_000, 10_000 + prize), "k", gas_limit=gas_limit,
                   fee_per_gas=quote.fee_per_gas, native_usd=quote.native_usd,
                   min_profit_usd=quote.min_profit_usd, slippage_bps=0)
        assert (d is not None) == (prize >= bar_usd), prize
