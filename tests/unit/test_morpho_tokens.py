"""A Morpho market's tokens' symbol and decimals rest on no single endpoint: the market's id
vouches for the tokens' addresses, not for what they say of themselves, and those drive the
profit counted (the loan token's unit, $1 for a stablecoin symbol), the MorphoLiquidator's
minProfit and the gas priced in the collateral. Every voter endpoint is asked at start; one
that disagrees refuses it."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from eth_abi import encode

from keeperd.chain.multicall import Call, CallResult
from keeperd.protocols.morpho_blue.adapter import MorphoBlueAdapter
from keeperd.protocols.sdk import approvals
from keeperd.protocols.sdk.contract import StartRefused

# Morpho Blue on Ethereum, the wstETH/USDC market (86 % LLTV) — its published id and params.
WSTETH_USDC = "0xb323495f7e4148be5643a4ea4a8221eef163e4bccfdedc2a6f4696baacbc86cc"
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
WSTETH = "0x7f39C581F595B53c5cb19bD0b3f8dA6c935E2Ca0"
PARAMS = encode(["address", "address", "address", "address", "uint256"], [
    USDC, WSTETH, "0x48F7E36EB6B826B2dF4B2E630B62Cd25e89E40e2",
    "0x870aC11D48B15DB9a138Cf899d20F13F79Ba00BC", 860000000000000000])
HONEST = ["USDC", 6, "wstETH", 18]  # (loan symbol, decimals; collateral symbol, decimals)


class FirstEndpoint:
    """The multicall of the first endpoint: the market's params, and its word on the tokens."""

    def __init__(self, tokens: Sequence[Any]) -> None:
        self.tokens = tokens

    async def aggregate3(self, calls: Sequence[Call], block: Any = None) -> list[CallResult]:
        if len(calls) == 1:
            return [CallResult(True, PARAMS)]
        kinds = ["string", "uint8", "string", "uint8"]
        return [CallResult(True, encode([k], [v])) for k, v in zip(kinds, self.tokens,
                                                                   strict=True)]


def adapter(first: Sequence[Any], endpoints: int) -> MorphoBlueAdapter:
    a = MorphoBlueAdapter.__new__(MorphoBlueAdapter)
    a.name = "morpho"
    a.config = SimpleNamespace(morpho="0xBBBBBbbBBb9cC5e90e3b3Af64bdAF62C37EEFFCb",  # type: ignore[assignment]
                               markets=[WSTETH_USDC])
    a.pool = SimpleNamespace(voters=[f"ep{i}" for i in range(endpoints)])  # type: ignore[assignment]
    a.multicall = FirstEndpoint(first)  # type: ignore[assignment]
    a.markets = {}
    a.indexer = SimpleNamespace(start=nothing)  # type: ignore[assignment]
    return a


async def nothing() -> None:
    return None


def endpoints_say(monkeypatch: pytest.MonkeyPatch, said: dict[str, list[Any] | None]
                  ) -> list[list[str]]:
    """Each voter endpoint's answers to the four token reads (None: it answers nothing, as
    `by_endpoint_named` leaves it out); the calls asked, by signature."""
    asked: list[list[str]] = []

    async def by_endpoint_named(pool: Any, calls: Sequence[Any], block: Any = "latest"
                                ) -> list[tuple[str, list[Any]]]:
        asked.append([f"{c.to}.{c.signature}" for c in calls])
        if len(pool.voters) < 2:
            return []
        return [(who, answers) for who, answers in said.items() if answers is not None]

    monkeypatch.setattr(approvals, "by_endpoint_named", by_endpoint_named)
    return asked


async def test_a_first_endpoint_lying_on_the_loan_tokens_decimals_refuses_the_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """(The audit's case: 18 for USDC's 6 — or 6 for an 18-decimals token, profit x 10^12.)"""
    lie = ["USDC", 18, "wstETH", 18]
    asked = endpoints_say(monkeypatch, {"ep0": lie, "ep1": HONEST})
    a = adapter(lie, endpoints=2)
    with pytest.raises(StartRefused) as refused:
        await a.start()
    said = str(refused.value)
    assert said.startswith("protocols[morpho].markets: the RPC endpoints disagree")
    assert f"loan token {USDC} decimals(): read 18" in said
    assert "rpc_urls[ep0] said 18, rpc_urls[ep1] said 6" in said
    assert "symbol()" not in said  # (only what differs)
    assert "rpc_urls" in said
    assert asked == [[f"{USDC}.symbol()", f"{USDC}.decimals()", f"{WSTETH}.symbol()",
                      f"{WSTETH}.decimals()"]]
    assert not a.markets


@pytest.mark.parametrize("first", [
    ["USDC", 6, "WETH", 18],  # the collateral named as the native token: gas priced by it
    ["USDC", 6, "wstETH", 6],
])
async def test_any_token_field_an_endpoint_disagrees_on_refuses_the_start(
        monkeypatch: pytest.MonkeyPatch, first: list[Any]) -> None:
    endpoints_say(monkeypatch, {"ep0": HONEST, "ep1": HONEST, "ep2": HONEST})
    with pytest.raises(StartRefused, match="collateral token"):
        await adapter(first, endpoints=3).start()


async def test_an_honest_second_endpoint_catches_a_first_that_lies_only_in_the_multicall(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first endpoint's multicall is the value used; its own plain answers may be
    honest: the others' still refuse it."""
    endpoints_say(monkeypatch, {"ep0": HONEST, "ep1": HONEST})
    with pytest.raises(StartRefused, match=r"rpc_urls\[ep1\] said 'USDC'"):
        await adapter(["DAI", 6, "wstETH", 18], endpoints=2).start()


async def test_endpoints_that_agree_or_say_nothing_start_the_market(
        monkeypatch: pytest.MonkeyPatch) -> None:
    endpoints_say(monkeypatch, {"ep0": HONEST, "ep1": [None, 6, None, None], "ep2": None})
    a = adapter(HONEST, endpoints=3)
    await a.start()
    m = a.markets[WSTETH_USDC]
    assert (m.loan_symbol, m.loan_decimals, m.collateral_symbol, m.collateral_decimals) == (
        "USDC", 6, "wstETH", 18)


async def test_one_endpoint_starts_on_its_word_as_before(
        monkeypatch: pytest.MonkeyPatch) -> None:
    endpoints_say(monkeypatch, {})
    a = adapter(HONEST, endpoints=1)
    await a.start()
    assert a.markets[WSTETH_USDC].loan_decimals == 6
