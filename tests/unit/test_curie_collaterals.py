"""Perp Curie's collaterals rest on no single endpoint: a collateral token's decimals, its
price feed's and its CollateralManager config (the ratio) value every trader's margin in it,
and were read once from the first endpoint and kept for the process's life (an audit). They
are kept only once every voter that answers agrees; a disagreement fails the read (at start a
refused start; later the block's read, asked again at the next), nothing kept."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from eth_abi import encode

from keeperd.chain.multicall import Call, CallResult
from keeperd.protocols.perp_curie.adapter import PerpCurieAdapter
from keeperd.protocols.sdk import approvals
from keeperd.protocols.sdk.contract import StartRefused

WETH = "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"
FEED = "0x5f4eC3Df9cbd43714FE2740f5E3616155c5b8419"
MANAGER = "0x" + "cc" * 20
HONEST = ("WETH", 18, 8, (FEED, 800_000, 500_000, 10**24))


class FirstEndpoint:
    def __init__(self, said: Sequence[Any]) -> None:
        self.said = said

    async def aggregate3(self, calls: Sequence[Call], block: Any = None) -> list[CallResult]:
        symbol, decimals, feed_decimals, config = self.said
        return [CallResult(True, encode(["string"], [symbol])),
                CallResult(True, encode(["uint8"], [decimals])),
                CallResult(True, encode(["uint8"], [feed_decimals])),
                CallResult(True, encode(["address", "uint24", "uint24", "uint256"],
                                        list(config)))]


def adapter(first: Sequence[Any], endpoints: int) -> PerpCurieAdapter:
    a = PerpCurieAdapter.__new__(PerpCurieAdapter)
    a.name = "curie"
    a.addresses = {"CollateralManager": MANAGER}
    a.collaterals = {}
    a.pool = SimpleNamespace(voters=[f"ep{i}" for i in range(endpoints)])  # type: ignore[assignment]
    a.multicall = FirstEndpoint(first)  # type: ignore[assignment]
    return a


def endpoints_say(monkeypatch: pytest.MonkeyPatch, *said: Sequence[Any]) -> None:
    async def by_endpoint_named(pool: Any, calls: Sequence[Any], block: Any = "latest"
                                ) -> list[tuple[str, list[Any]]]:
        # (as ContractCall.decode gives them: eth_abi's addresses in lower case)
        return [(str(i), [s[1], s[2], (s[3][0].lower(), *s[3][1:])])
                for i, s in enumerate(said)]

    monkeypatch.setattr(approvals, "by_endpoint_named", by_endpoint_named)


async def test_a_first_endpoint_lying_about_a_collateral_is_not_believed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    lying = ("WETH", 6, 8, HONEST[3])  # (6 decimals for an 18-decimals token)
    endpoints_say(monkeypatch, lying, HONEST)
    a = adapter(lying, endpoints=2)
    with pytest.raises(StartRefused, match=r"protocols\[curie\]: the RPC endpoints disagree"):
        await a._learn_collaterals([WETH])
    assert a.collaterals == {}  # (nothing kept: asked again at the next read)
    ratio_lie = ("WETH", 18, 8, (FEED, 100_000, 500_000, 10**24))
    endpoints_say(monkeypatch, ratio_lie, HONEST)
    with pytest.raises(StartRefused, match="collateral config"):
        await adapter(ratio_lie, endpoints=2)._learn_collaterals([WETH])


async def test_agreeing_endpoints_or_one_alone_keep_it(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoints_say(monkeypatch, HONEST, HONEST)
    a = adapter(HONEST, endpoints=2)
    await a._learn_collaterals([WETH])
    assert a.collaterals == {WETH: ("WETH", 18, 8, 800_000)}
    endpoints_say(monkeypatch, HONEST)
    a = adapter(HONEST, endpoints=1)
    await a._learn_collaterals([WETH])
    assert a.collaterals[WETH][1] == 18
