"""#17: another process spends the keeper's nonces (the same key used by a second tool, or an
operator's wallet). A liquidation keeperd sent under a nonce the other process took can never
be mined: keeperd sees the nonce passed without its receipt, marks it dropped, tells that its
key is in use elsewhere, holds new liquidations until the other sender has been quiet for
FOREIGN_QUIET_BLOCKS, and then plans the opportunity again under a fresh nonce; nothing is sent
twice, no nonce is shared, nothing is left pending."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from tests.conftest import metric_value
from tests.faults.invariants import journal_problems, keeper_liquidations
from tests.keeper_harness import (  # noqa: F401 - fixtures
    KEEPER,
    config_for,
    crash_and_collect,
    fund_keeper,
    keeper_key_env,
)


async def test_a_nonce_taken_by_another_process_is_dropped_and_planned_again_once(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    fund_keeper(devnet)
    keeper = await run_daemon(config_for(devnet, tmp_path, "liquidate",
                                         key={"source": "env", "env": "KEEPER_KEY"}))
    await keeper.evaluated_at(devnet.client.block_number())
    devnet.client.call("evm_setAutomine", False)
    try:
        crash, journal, sent = await crash_and_collect(devnet, keeper)
        assert len(sent) > 20
        taken = min(e.nonce for e in sent if e.nonce is not None)
        victim = next(e.key for e in sent if e.nonce == taken)
        # The other process: a transfer under keeperd's lowest pending nonce, paying more,
        # so the node keeps it instead of keeperd's transaction.
        devnet.client.call("eth_sendTransaction", {
            "from": KEEPER, "to": KEEPER, "value": "0x1", "nonce": hex(taken),
            "gas": hex(21_000), "maxFeePerGas": hex(1000 * 10**9),
            "maxPriorityFeePerGas": hex(100 * 10**9)})
        for _ in range(4):  # the wave (less the victim), then the victim planned again
            await keeper.evaluated_at(devnet.mine(1))
            await asyncio.sleep(0.5)
        deadline = time.monotonic() + 20
        while True:
            entries = {e.key: e for e in await journal.all()}
            settled = all(e.status in (J.INCLUDED, J.DROPPED, J.LOST_RACE)
                          for e in entries.values())
            if settled and any(k.startswith(victim) and k != victim and
                               e.status == J.INCLUDED for k, e in entries.items()):
                break
            assert time.monotonic() < deadline, {k: e.status for k, e in entries.items()}
            await keeper.evaluated_at(devnet.mine(1))
    finally:
        devnet.client.call("evm_setAutomine", True)
    assert entries[victim].status == J.DROPPED
    assert metric_value(keeper.daemon.metrics, "keeperd_keeper_foreign_transactions_total",
                        {"chain": "devnet"}) == 1
    txs = [(t.key, t.nonce, t.tx_hash) for k in entries for t in await journal.txs(k)]
    assert not journal_problems([(k, e.status) for k, e in entries.items()], txs)
    assert taken not in {n for k, n, _ in txs if k != victim}  # never reused by keeperd
    # On chain: one liquidation by the keeper per included opportunity, the victim's account
    # among them (under its retry).
    ours = keeper_liquidations(devnet, crash)
    included = [k for k, e in entries.items() if e.status == J.INCLUDED]
    assert len(ours) == len(included)
    victim_account = entries[victim].account.lower()
    assert sum(1 for k in included if entries[k].account.lower() == victim_account) >= 1
