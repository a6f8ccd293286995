"""The demo's Curie line counts Curie's traders only: the journal is one for every protocol
(one database), and the line said 119 (46 Aave + 19 Morpho + 54 Curie) next to the journal
summary's "curie-devnet: ... of 54 accounts"."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from keeperd import demo
from keeperd.execution import journal as J


def entry(protocol: str, account: int, status: str = J.INCLUDED, debt: str = "USDC"
          ) -> J.JournalEntry:
    return J.JournalEntry(f"{protocol}:0x{account:040x}:{debt}", protocol, f"0x{account:040x}",
                          "WETH", debt, 10**6, 1.0, 10**15, 100, status, None, None, None)


# Every protocol's rows in the one journal: Aave and Morpho liquidations, Curie's traders
# (one liquidated twice, one only pending), an unwind of a position taken over (no debt).
ROWS = ([entry("aave-devnet", i) for i in range(46)]
        + [entry("morpho-devnet", 100 + i) for i in range(19)]
        + [entry("curie-devnet", 200 + i) for i in range(3)]
        + [entry("curie-devnet", 200, debt="vETH"), entry("curie-devnet", 300, J.PENDING),
           entry("curie-devnet", 400, debt="")])


def test_traders_liquidated_are_the_protocols_own() -> None:
    assert demo.traders_liquidated(ROWS, "curie-devnet") == {
        f"0x{200 + i:040x}" for i in range(3)}
    assert len(demo.traders_liquidated(ROWS, "aave-devnet")) == 46
    assert demo.of_protocol(ROWS, "morpho-devnet") == ROWS[46:65]


class FakeJournal:
    async def all(self) -> list[J.JournalEntry]:
        return ROWS

    async def by_status(self, *statuses: str) -> list[J.JournalEntry]:
        return []


class FakeExecutor:
    journal = FakeJournal()

    async def declined(self, accounts: set[str]) -> dict[str, float]:
        return {}


async def test_perps_follow_prints_curies_count(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    curie = types.ModuleType("keeperd.devnet.curie")
    curie.walk_mark = lambda *a: None  # type: ignore[attr-defined]
    curie.settle_collateral_twap = lambda *a: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keeperd.devnet.curie", curie)
    scanner = types.SimpleNamespace(completed_block=10**9, view=None)
    daemon: Any = types.SimpleNamespace(
        scanners={"curie-devnet": scanner},
        executors={name: FakeExecutor()
                   for name in ("aave-devnet", "morpho-devnet", "curie-devnet")},
        config=types.SimpleNamespace(keeper=types.SimpleNamespace(min_profit_usd=1.0)))
    devnet: Any = types.SimpleNamespace(client=None, manifest={}, mine=lambda n: 1)
    await demo.perps_follow(daemon, devnet, 2100.0)
    assert ("Curie mark 2,100; traders liquidated by keeperd: 3, still under water: 0"
            in capsys.readouterr().out)
