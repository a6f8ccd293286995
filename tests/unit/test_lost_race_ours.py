"""A liquidation of ours through our own contract (the FlashLiquidator, the MorphoLiquidator)
is not a race lost: the protocols' events name the contract as the liquidator, and it was
counted as a competitor's win against the keeper itself."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from keeperd.execution.executor import Executor
from keeperd.execution.signer_policy import Allowed
from keeperd.metrics import Metrics

KEEPER = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"
OUR_CONTRACT = "0x" + "ab" * 20
STRANGER = "0x" + "cd" * 20


class Journal:
    def __init__(self) -> None:
        self.lost: list[tuple[str, str | None]] = []

    async def get(self, key: str) -> object:
        return object()

    async def set_status(self, key: str, status: str, *, winner: str | None = None,
                         detail: str | None = None) -> None:
        self.lost.append((key, winner))


def executor(liquidator_of_event: str) -> tuple[Executor, Journal]:
    ex: Any = Executor.__new__(Executor)
    ex.keeper, ex._last = KEEPER, None
    ex.liquidator = SimpleNamespace(signing_rules=lambda: [
        Allowed(OUR_CONTRACT, "liquidate(address)", "ours"), Allowed.approval(STRANGER, "x")])
    ex.adapter = SimpleNamespace(
        liquidation_logs=lambda book, accounts: {},
        decode_liquidation=lambda event, book: SimpleNamespace(liquidator=event["by"]))

    async def request(method: str, params: list[Any]) -> list[dict[str, str]]:
        return [{"by": liquidator_of_event}]

    ex.pool = SimpleNamespace(request=request)
    ex.journal = Journal()
    ex._event = lambda *args, **kwargs: None
    ex.metrics, ex.labels = Metrics(), ("devnet", "aave")
    return ex, ex.journal


async def test_our_contract_is_not_a_competitor() -> None:
    for ours in (OUR_CONTRACT, OUR_CONTRACT.upper().replace("0X", "0x"), KEEPER):
        ex, journal = executor(ours)
        await ex._maybe_lost_race(None, "k", 10, "reverted", account="0x01")
        assert journal.lost == []


async def test_a_stranger_is() -> None:
    ex, journal = executor(STRANGER)
    await ex._maybe_lost_race(None, "k", 10, "reverted", account="0x01")
    assert journal.lost == [("k", STRANGER)]
