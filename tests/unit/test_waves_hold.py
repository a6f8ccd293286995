"""A wave mined with no KeeperWave run (a delegation revoked, or an endpoint's lying read of
the address's code) makes none of its liquidations, and waves wait WAVES_OFF_BLOCKS: one
liquidation a block meanwhile. That was an error log only (a by-hand trial); it is told as
`sending_paused` while it lasts (`Executor.waves_hold`)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from keeperd.execution.executor import WAVES_OFF_BLOCKS, Executor
from keeperd.execution.txmanager import Outcome
from keeperd.protocols.sdk.keys import OpportunityKey, WaveKey

KEEPER = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"


class Journal:
    async def get_many(self, keys: list[str]) -> dict[str, Any]:
        return {}  # (nothing pending: the members' settlement is not what this tests)


async def test_a_wave_no_keeperwave_ran_is_told_while_waves_wait() -> None:
    ex: Any = Executor.__new__(Executor)
    ex.tx = SimpleNamespace(address=KEEPER)
    ex.adapter = SimpleNamespace(name="aave")
    ex.journal = Journal()
    ex._waves_off_until, ex._waves_off_why = 0, ""
    ex._unwanted_in_waves = set()
    assert ex.waves_hold(100) is None
    members = tuple(OpportunityKey("aave", f"0x{i:040x}", ("WETH", "USDC"), "1")
                    for i in range(3))
    mined = {"status": "0x1", "blockNumber": hex(100), "logs": []}  # (no KeeperWave event)
    await ex._settle_wave(Outcome(WaveKey("aave", members), "included", "0xabc", 0,
                                  receipt=mined), WaveKey("aave", members))
    said = ex.waves_hold(101)
    assert said is not None and "a wave of 3 liquidations (tx 0xabc)" in said
    assert f"no wave until block {100 + WAVES_OFF_BLOCKS}" in said
    assert ex.waves_hold(100 + WAVES_OFF_BLOCKS) is None  # (waves again: resolved)
