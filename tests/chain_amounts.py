"""Liquidation amounts against the chain (#30 item 1): what keeperd planned for each liquidation
it sent — the journal's `planned`, the protocol's own event fields in token units — against
what that event in the receipt says, to the unit.

The plan is made on the state of the block keeperd evaluated; the pool runs it on the state of
the block that includes it. The two are the same state only when no time passes between them
(interest, funding and TWAPs all move with the clock): the crash tests freeze the devnet's
clock (`frozen_clock`) from before the crash to the end, so every figure must agree exactly.
Morpho's plan accrues interest `AHEAD_S` seconds ahead of the snapshot (the transaction lands
later on a real chain): its tests include the wave at the snapshot's time plus `AHEAD_S`
(`mine_at`).

Each protocol's figures are integers computed by the same formulas in the same order as the
contracts (`aave_v3/liquidation.py`, `morpho_blue/math.py`, `perp_curie/margin.py`); a
difference of one is a rounding keeperd does differently, and fails — but for one case:

- Aave v3.6, a liquidation that takes all of the user's collateral: the pool moves the fee
  to the treasury as `rayDivCeil(fee, index)` scaled units, which can exceed the one scaled
  unit the seizure left the user; LiquidationLogic then caps it at that balance and pays the
  treasury its value rounded down (`scaledDownBorrowerBalance.getATokenBalance(index)`): one
  wei under the fee it computed (and keeperd planned). The liquidator's seizure, computed
  before the cap, is unchanged. Allowed only when the user's aToken balance is 0 after it.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils import keccak

from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J

LIQUIDATION_CALL = "0x" + keccak(
    text="LiquidationCall(address,address,address,uint256,uint256,address,bool)").hex()
TRANSFER = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
MORPHO_LIQUIDATE = "0x" + keccak(
    text="Liquidate(bytes32,address,address,uint256,uint256,uint256,uint256,uint256)").hex()
POSITION_LIQUIDATED = "0x" + keccak(
    text="PositionLiquidated(address,address,uint256,uint256,uint256,address)").hex()
COLLATERAL_LIQUIDATED = "0x" + keccak(
    text="CollateralLiquidated(address,address,address,uint256,uint256,uint256,uint24)").hex()


@dataclass(frozen=True)
class Sent:
    """One journaled liquidation: its key, account, plan and signed transactions."""

    key: str
    account: str
    status: str
    planned: dict[str, int] | None
    tx_hashes: tuple[str, ...]


@contextlib.contextmanager
def frozen_clock(devnet: Devnet) -> Iterator[None]:
    """Every block mined inside carries the timestamp of the last one before (anvil's block
    timestamp interval of 0): no interest, funding or TWAP moves between keeperd's snapshot
    and the block that includes its liquidation. (Not part of evm_snapshot: always undone.)"""
    devnet.client.call("anvil_setBlockTimestampInterval", 0)
    try:
        yield
    finally:
        devnet.client.call("anvil_removeBlockTimestampInterval")


def block_time(devnet: Devnet, block: int | str = "latest") -> int:
    tag = hex(block) if isinstance(block, int) else block
    return int(devnet.client.call("eth_getBlockByNumber", tag, False)["timestamp"], 16)


def mine_at(devnet: Devnet, timestamp: int) -> int:
    """Mine one block at `timestamp` (automine off); its number."""
    devnet.client.call("evm_setNextBlockTimestamp", hex(timestamp))
    return devnet.mine(1)


def sent_from_db(db: Path) -> list[Sent]:
    """Every journaled liquidation of a (stopped or running) keeperd's SQLite state."""
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = c.execute("SELECT key, account, status, planned FROM liquidations").fetchall()
        txs: dict[str, list[str]] = {}
        for key, tx_hash in c.execute("SELECT key, tx_hash FROM liquidation_txs"):
            txs.setdefault(key, []).append(tx_hash)
    finally:
        c.close()
    return [Sent(k, a, s, None if p is None else {f: int(v) for f, v in json.loads(p).items()},
                 tuple(txs.get(k, ()))) for k, a, s, p in rows]


async def sent_from_journal(journal: J.Journal) -> list[Sent]:
    """The same, from a journal in this process."""
    return [Sent(e.key, e.account, e.status, None if e.planned is None else dict(e.planned),
                 tuple(t.tx_hash for t in await journal.txs(e.key)))
            for e in await journal.all()]


def _words(data: str) -> list[int]:
    raw = data[2:]
    return [int(raw[i:i + 64], 16) for i in range(0, len(raw), 64)]


def _address(topic: str) -> str:
    return "0x" + topic[-40:].lower()


def _aave_fee(devnet: Devnet, receipt: dict[str, Any], collateral: str, user: str) -> int:
    """The protocol fee: what the collateral's aToken moved from the user to the treasury in
    this receipt (LiquidationCall does not carry it; 0 when the reserve charges none)."""
    token_of = {a.lower(): r["a_token"].lower() for s, r in
                devnet.manifest["aave_v3"]["reserves"].items()
                for a in [devnet.manifest["tokens"][s]]}
    a_token = token_of[collateral]
    treasury = _address(devnet.client.eth_call(
        a_token, keccak(text="RESERVE_TREASURY_ADDRESS()")[:4]).hex())
    return sum(_words(e["data"])[0] for e in receipt["logs"]
               if e["address"].lower() == a_token and e["topics"][0] == TRANSFER
               and _address(e["topics"][1]) == user and _address(e["topics"][2]) == treasury)


def chain_outcome(devnet: Devnet, receipt: dict[str, Any], account: str,
                  fields: set[str]) -> dict[str, int] | None:
    """What the protocol's own event in `receipt` says of `account`'s liquidation, under the
    names the plan uses (`fields` says which protocol's); None: no such event."""
    user = account.lower()
    for e in receipt["logs"]:
        topics = e["topics"]
        if "debtToCover" in fields and topics[0] == LIQUIDATION_CALL \
                and _address(topics[3]) == user:
            debt, seized = _words(e["data"])[:2]
            return {"debtToCover": debt, "liquidatedCollateralAmount": seized,
                    "protocolFee": _aave_fee(devnet, receipt, _address(topics[1]), user)}
        if "repaidAssets" in fields and topics[0] == MORPHO_LIQUIDATE \
                and _address(topics[3]) == user:
            repaid, shares, seized, bad, _ = _words(e["data"])
            return {"repaidAssets": repaid, "repaidShares": shares, "seizedAssets": seized,
                    "badDebtAssets": bad}
        if "positionSize" in fields and topics[0] == POSITION_LIQUIDATED \
                and _address(topics[1]) == user:
            notional, size, penalty, _ = _words(e["data"])
            return {"positionNotional": notional, "positionSize": size,
                    "liquidationPenalty": penalty}
        if "settlement" in fields and topics[0] == COLLATERAL_LIQUIDATED \
                and _address(topics[1]) == user:
            collateral, repaid, insurance_fee, _ = _words(e["data"])
            out = {"settlement": repaid + insurance_fee}
            if "collateral" in fields:
                out["collateral"] = collateral
            return out
    return None


def amount_mismatches(devnet: Devnet, sent: list[Sent]) -> list[str]:
    """For every included liquidation in `sent`: what differs between its plan and its event
    (empty: every figure equal to the unit)."""
    problems = []
    for s in sent:
        if s.status != J.INCLUDED:
            continue
        if not s.planned:
            problems.append(f"{s.key}: included with no plan journaled")
            continue
        receipts = [r for h in s.tx_hashes
                    if (r := devnet.client.call("eth_getTransactionReceipt", h)) is not None
                    and r["status"] == "0x1"]
        if len(receipts) != 1:
            problems.append(f"{s.key}: {len(receipts)} successful receipts")
            continue
        seen = chain_outcome(devnet, receipts[0], s.account, set(s.planned))
        if seen != s.planned and not _fee_capped_at_the_last_collateral(
                devnet, receipts[0], s, seen):
            problems.append(f"{s.key}: planned {s.planned}, the chain {seen}")
    return problems


def _fee_capped_at_the_last_collateral(devnet: Devnet, receipt: dict[str, Any], s: Sent,
                                       seen: dict[str, int] | None) -> bool:
    """The documented one-wei case (module docstring): Aave's fee one wei under the plan,
    everything else equal, and the user left with no aToken of the collateral."""
    if seen is None or s.planned is None or "protocolFee" not in s.planned:
        return False
    if {**seen, "protocolFee": seen["protocolFee"] + 1} != s.planned:
        return False
    [event] = [e for e in receipt["logs"] if e["topics"][0] == LIQUIDATION_CALL
               and _address(e["topics"][3]) == s.account.lower()]
    collateral = _address(event["topics"][1])
    [a_token] = [r["a_token"] for sym, r in devnet.manifest["aave_v3"]["reserves"].items()
                 if devnet.manifest["tokens"][sym].lower() == collateral]
    left = devnet.client.eth_call(a_token, keccak(text="scaledBalanceOf(address)")[:4]
                                  + bytes.fromhex(s.account[2:].rjust(64, "0")),
                                  receipt["blockNumber"])
    return int.from_bytes(left, "big") == 0


def assert_amounts_as_planned(devnet: Devnet, sent: list[Sent], at_least: int = 1) -> None:
    """Every included liquidation did on chain exactly what keeperd planned, and there were
    at least `at_least` of them (a test whose wave never landed checks nothing)."""
    included = [s for s in sent if s.status == J.INCLUDED]
    assert len(included) >= at_least, (len(included), at_least)
    problems = amount_mismatches(devnet, sent)
    assert not problems, "\n".join(problems[:10]) + f"\n({len(problems)} of {len(included)})"
