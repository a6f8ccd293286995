"""A wave's settlement, split into its liquidations' (pure).

A wave (many liquidations in one transaction: execution/wave_code.py) settles as one
transaction — included, reverted, cancelled or dropped — and each of its liquidations settles
from that: a mined wave's call is included if KeeperWave's own events say it succeeded, and
reverted otherwise (the executor then asks whether a race was lost, as for any revert); a
wave that reverted as a whole reverts every call (one revert for the breaker); one whose
receipt shows no KeeperWave ran (the delegation gone when it was mined) made no call: each is
dropped, free to be planned again; a cancelled or dropped wave cancels or drops them all.

Each liquidation's settlement carries its share of what the wave paid (gas and an OP Stack
chain's L1 data fee, split evenly: the chain does not say what each call cost) and a receipt
of its own whose logs are its call's (between KeeperWave's markers), so that its profit is
read from its own protocol event, not the first of the wave's.
"""

from __future__ import annotations

from typing import Any

from keeperd.execution.txmanager import Outcome
from keeperd.execution.wave_code import WaveOutcome, read_wave_logs
from keeperd.protocols.sdk.keys import WaveKey


def split_wave(outcome: Outcome, keeper: str) -> tuple[list[Outcome], WaveOutcome | None]:
    """Each member's settlement, in the wave's order, and what KeeperWave's events said (None:
    no receipt, or no KeeperWave ran)."""
    key = outcome.key
    assert isinstance(key, WaveKey)
    n = len(key.members)
    receipt = outcome.receipt
    read = (read_wave_logs(receipt.get("logs") or [], keeper)
            if receipt is not None and outcome.status == "included" else None)
    if read is not None and read.calls != n:  # (not the wave journaled: nothing of it trusted)
        read = None
    gas = _shares(outcome.gas_used, n)
    l1 = _shares(int(str(receipt["l1Fee"]), 16), n) if receipt and receipt.get("l1Fee") else None
    out: list[Outcome] = []
    for i, member in enumerate(key.members):
        status = outcome.status
        if status == "included":
            # (no KeeperWave ran, or its receipt is not this wave's: no call was made that
            # keeperd can tell of; dropped, so each may be planned again, and not counted as
            # a revert: the breaker is for calls that ran and failed)
            status = ("dropped" if read is None else "included" if read.ok(i) else "reverted")
        own: dict[str, Any] | None = None
        if receipt is not None:
            own = {**receipt, "logs": list(read.logs.get(i, [])) if read is not None else []}
            if l1 is not None:
                own["l1Fee"] = hex(l1[i])
        out.append(Outcome(member, status, outcome.tx_hash, gas[i],
                           outcome.effective_gas_price, own, wave_size=n,
                           counts_revert=outcome.status != "reverted" or i == 0,
                           call_gas=read.gas.get(i) if read is not None else None,
                           revert_data=read.failed.get(i) if read is not None else None))
    return out, read


def _shares(total: int, n: int) -> list[int]:
    """`total` in n shares that add up to it (the first takes the remainder)."""
    share, rest = divmod(total, n)
    return [share + rest] + [share] * (n - 1)
