"""A crash liquidated in waves: the keeper's address delegated to KeeperWave (by the operator's
`keeperd wave` commands), a block's liquidations go out as one transaction — a delegated
address has one in flight at a time — each settles from its own call (included with its own
profit, or a race lost inside the wave without undoing the rest), what the gas cap leaves
out goes in the next block's wave, and a reorg sends a wave again once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import structlog

from keeperd.cli import main
from keeperd.devnet import contracts
from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from keeperd.execution import wave_code as W
from tests.chain_amounts import assert_amounts_as_planned, frozen_clock, sent_from_journal
from tests.conftest import metric_value
from tests.keeper_harness import KEEPER, KEEPER_KEY, chain_health, config_for, fund_keeper
from tests.sigkill_harness import keeper_in_mempool


def delegate_keeper(devnet: Devnet, tmp_path: Path) -> None:
    """`keeperd wave deploy` and `keeperd wave delegate`, as an operator runs them."""
    path = tmp_path / "wave.yaml"
    path.write_text(json.dumps({
        "state_dir": str(tmp_path / "wave-state"),
        "chains": [{"name": "devnet", "chain_id": 31337,
                    "rpc_urls": [devnet.manifest["rpc_url"]]}],
        "keeper": {"mode": "liquidate", "key": {"source": "env", "env": "KEEPER_KEY"}},
        "metrics": {"enabled": False}}))
    saved = structlog.get_config()  # (a command sets the process's log level to its own)
    try:
        for action in ("deploy", "delegate"):
            assert main(["wave", action, "--config", str(path), "--wait", "30"]) == 0, action
    finally:
        structlog.reset_defaults()
        structlog.configure(**saved)
    assert devnet.client.call("eth_getCode", KEEPER, "latest").lower() \
        == "0xef0100" + W.WAVE_ADDRESS[2:].lower()


def wave_config(devnet: Devnet, tmp_path: Path) -> Any:
    """Aave in liquidate mode on the tests' keeper (its key from the environment)."""
    return config_for(devnet, tmp_path, "liquidate", key={"source": "env", "env": "KEEPER_KEY"})


async def test_a_crash_goes_out_in_waves_each_settled_from_its_own_call(
        devnet: Devnet, tmp_path: Path, run_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)
    fund_keeper(devnet)
    await asyncio.to_thread(delegate_keeper, devnet, tmp_path)
    borrowers = [b["address"] for b in devnet.manifest["borrowers"]]
    keeper = await run_daemon(wave_config(devnet, tmp_path))
    await keeper.evaluated_at(devnet.client.block_number())
    competitor = "0x00000000000000000000000000000000C0FfeE00"
    fund_keeper(devnet, competitor, approve=True)
    victim = next(b["address"] for b in devnet.manifest["borrowers"]
                  if b["collateral"] == ["WETH"] and b["debt"] == "DAI"
                  and 1.02 < chain_health(devnet, b["address"]) < 1.3)
    devnet.client.call("evm_setAutomine", False)
    try:
        with frozen_clock(devnet):
            devnet.set_price_async("WETH", 2100.0)
            crash = devnet.mine(1)
            underwater = {a for a in borrowers if chain_health(devnet, a) < 1.0}
            assert len(underwater) > 20 and victim in underwater
            # Another keeper takes one account first (a higher tip): ours fails inside its
            # wave, and the rest of the wave stands.
            devnet.client.call("eth_sendTransaction", {
                "from": competitor, "to": devnet.manifest["aave_v3"]["pool"],
                "gas": hex(1_500_000), "maxPriorityFeePerGas": hex(500 * 10**9),
                "maxFeePerGas": hex(1000 * 10**9),
                "data": "0x" + contracts.aave("Pool").encode_call(
                    "liquidationCall", devnet.manifest["tokens"]["WETH"],
                    devnet.manifest["tokens"]["DAI"], victim, 2**256 - 1, False).hex()})
            with structlog.testing.capture_logs() as logs:
                await keeper.evaluated_at(crash)
                journal = keeper.daemon.executors["aave"].journal
                pending = await journal.by_status(J.PENDING)
                assert len(pending) >= 15  # (as many as the gas cap lets into one wave)
                # One transaction of the key's in flight (nodes take no second one from a
                # delegated address); what the wave's gas cap left out waits for it.
                assert keeper_in_mempool(devnet) == 1
                for _ in range(3):
                    await keeper.evaluated_at(devnet.mine(1))
                    assert keeper_in_mempool(devnet) <= 1
    finally:
        devnet.client.call("evm_setAutomine", True)

    # Few transactions for many liquidations: a wave's members share its transaction.
    hashes = {t.tx_hash for e in pending for t in await journal.txs(e.key)}
    assert len(hashes) == 1, (len(hashes), len(pending))
    # Every transaction of the key's since the crash is a wave to itself (none of one
    # liquidation beside it: a node would have refused it).
    ours = [t for b in range(crash + 1, devnet.client.block_number() + 1)
            for t in devnet.client.call("eth_getBlockByNumber", hex(b), True)["transactions"]
            if t["from"] == KEEPER.lower()]
    assert ours and all(t["to"] == KEEPER.lower() for t in ours), ours
    assert hashes <= {t["hash"] for t in ours}
    # Each wave within EIP-7825's cap (anvil enforces none), and what waited for the slot
    # was never journaled (a drop would have spent one of its retries).
    from keeperd.execution.executor import WAVE_GAS_CAP

    assert all(int(t["gas"], 16) <= WAVE_GAS_CAP for t in ours)
    assert await journal.by_status(J.DROPPED) == []
    settled = [e for e in logs if e["event"] == "liquidation.wave_settled"]
    assert settled and sum(e["liquidations"] for e in settled) >= len(pending)
    # The crash's liquidations did not fit one wave under its gas cap: the rest went in the
    # next block's.
    held = [e for e in logs if e["event"] == "liquidation.held_one_in_flight"]
    assert held and len(settled) >= 2
    assert not [e for e in logs if e["event"] in ("liquidation.wave_not_executed",
                                                  "liquidation.wave_starved")]
    included = await journal.by_status(J.INCLUDED)
    mine = [e for e in await journal.all() if e.account == victim]
    assert [e.status for e in mine] == [J.LOST_RACE], mine
    assert mine[0].winner == competitor
    assert {e.account for e in pending} - {victim} <= {e.account for e in included}
    assert await journal.by_status(J.REVERTED) == []
    # Each liquidation's profit from its own call's event, not the wave's first: they differ.
    profits = [e.realised_profit_usd for e in included]
    assert all(p is not None and p > 0 for p in profits)
    assert len({round(p, 6) for p in profits if p is not None}) > len(included) / 2
    # Each did on chain exactly what keeperd planned (amounts to the unit).
    assert_amounts_as_planned(devnet, await sent_from_journal(journal), len(included))
    # A race lost inside a wave is no revert nobody explains: the breaker did not count it.
    executor = keeper.daemon.executors["aave"]
    assert executor._reverts == []
    labels = {"chain": "devnet", "protocol": "aave"}
    assert metric_value(keeper.daemon.metrics, "keeperd_liquidations_total",
                        {**labels, "stage": "included"}) == len(included)
    assert metric_value(keeper.daemon.metrics, "keeperd_liquidation_gas_cost_usd_total",
                        labels) > 0
    # A wave settled again (a restart after a settlement a crash cut short): what was settled
    # is not booked twice.
    from keeperd.execution.txmanager import Outcome
    from keeperd.protocols.sdk.keys import OpportunityKey, WaveKey

    tx_hash = next(iter(hashes))
    placed = await journal.wave_members(tx_hash)
    wave = WaveKey("aave", tuple(OpportunityKey.parse(k) for k, _ in
                                 sorted(placed.items(), key=lambda kv: kv[1])))
    receipt = devnet.client.call("eth_getTransactionReceipt", tx_hash)
    counted = metric_value(keeper.daemon.metrics, "keeperd_liquidations_total",
                           {**labels, "stage": "included"})
    await executor._settle(Outcome(wave, "included", tx_hash, int(receipt["gasUsed"], 16),
                                   int(receipt["effectiveGasPrice"], 16), receipt))
    assert metric_value(keeper.daemon.metrics, "keeperd_liquidations_total",
                        {**labels, "stage": "included"}) == counted


async def test_an_ordinary_address_sends_one_transaction_each(
        devnet: Devnet, tmp_path: Path, run_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the delegation: each liquidation its own transaction, as before, many in
    flight (nothing is sent to an address that does not run KeeperWave)."""
    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)
    fund_keeper(devnet)
    keeper = await run_daemon(wave_config(devnet, tmp_path))
    await keeper.evaluated_at(devnet.client.block_number())
    devnet.set_price("WETH", 2100.0)
    await keeper.evaluated_at(devnet.client.block_number())
    journal = keeper.daemon.executors["aave"].journal
    sent = [e for e in await journal.all() if e.status in (J.PENDING, J.INCLUDED)]
    assert len(sent) > 20
    records = [t for e in sent for t in await journal.txs(e.key)]
    assert len({t.tx_hash for t in records}) >= len(sent)
    assert all(t.wave_index is None for t in records)
    assert all(t["to"] != KEEPER.lower() for t in (
        devnet.client.call("eth_getTransactionByHash", r.tx_hash) for r in records))


async def test_a_wave_whose_block_is_reorganised_away_is_sent_again_once(
        devnet: Devnet, tmp_path: Path, run_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a transaction of one liquidation (tests/integration/test_liquidation_reorg.py): its
    members pending again, the wave tracked once and its same bytes sent again, each member
    settled on the new branch, each liquidation on chain once."""
    from tests.faults.invariants import keeper_liquidations
    from tests.integration.test_liquidation_reorg import wait_for

    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)
    fund_keeper(devnet)
    await asyncio.to_thread(delegate_keeper, devnet, tmp_path)
    keeper = await run_daemon(wave_config(devnet, tmp_path))
    await keeper.evaluated_at(devnet.client.block_number())
    devnet.client.call("evm_setAutomine", False)
    try:
        devnet.set_price_async("WETH", 2100.0)
        crash = devnet.mine(1)
        await keeper.evaluated_at(crash)
        journal = keeper.daemon.executors["aave"].journal
        keys = {e.key for e in await journal.by_status(J.PENDING)}
        assert len(keys) >= 15  # (as many as the gas cap lets into one wave)
        before = devnet.snapshot()  # the crash block, the waves in the mempool
        await keeper.evaluated_at(devnet.mine(1))

        async def all_included() -> bool:
            return keys <= {e.key for e in await journal.by_status(J.INCLUDED)}

        await wait_for(all_included, "the waves included")
        devnet.revert(before)
        devnet.mine(2)

        async def pending_again() -> bool:
            return keys <= {e.key for e in await journal.by_status(J.PENDING)}

        await wait_for(pending_again, "the reorged-out waves pending again")
        await keeper.evaluated_at(devnet.mine(1))  # the waves sent again
        await wait_for(all_included, "the waves included on the new branch")
    finally:
        devnet.client.call("evm_setAutomine", True)
    assert len(keeper_liquidations(devnet, crash)) == len(keys)  # each once, on this branch
    hashes = {k: [t.tx_hash for t in await journal.txs(k)] for k in keys}
    assert all(len(h) == 1 for h in hashes.values())  # the same signed wave, not a new one
    assert len({h[0] for h in hashes.values()}) < len(keys) / 4


async def test_a_stuck_wave_is_replaced_whole_then_cancelled_once_none_of_it_stands(
        devnet: Devnet, tmp_path: Path, run_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """A base-fee spike holds the wave out of the next block: it is replaced whole (one nonce,
    fees up) while its liquidations stand. WETH then recovers: none stands any more, and
    the wave's nonce is cancelled — its liquidations cancelled, no revert counted."""
    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)
    fund_keeper(devnet)
    await asyncio.to_thread(delegate_keeper, devnet, tmp_path)
    config = wave_config(devnet, tmp_path)
    config = config.model_copy(update={"keeper": config.keeper.model_copy(update={
        "replace_after_blocks": 1, "base_fee_headroom": 1.0, "priority_fee_gwei": 1.0})})
    keeper = await run_daemon(config)
    await keeper.evaluated_at(devnet.client.block_number())
    journal = keeper.daemon.executors["aave"].journal
    price = devnet.price("WETH")
    devnet.client.call("evm_setAutomine", False)
    try:
        devnet.set_price_async("WETH", 2100.0)
        await keeper.evaluated_at(devnet.mine(1))
        sent = await journal.by_status(J.PENDING)
        assert len(sent) >= 10
        first_fee = (await journal.txs(sent[0].key))[0].max_fee_per_gas
        devnet.client.call("anvil_setNextBlockBaseFeePerGas", hex(first_fee * 3))
        await keeper.evaluated_at(devnet.mine(1))  # (the wave left out; then replaced)
        assert keeper_in_mempool(devnet) == 1
        records = {e.key: await journal.txs(e.key) for e in sent}
        assert all(len(r) == 2 for r in records.values()), "the wave was not replaced"
        assert len({r[-1].tx_hash for r in records.values()}) == 1  # (replaced whole)
        assert all(r[-1].max_fee_per_gas > r[0].max_fee_per_gas for r in records.values())
        # The recovery, mined before the replaced wave (its fee under the spike again).
        devnet.client.call("anvil_dropTransaction", records[sent[0].key][-1].tx_hash)
        devnet.set_price_async("WETH", price)
        await keeper.evaluated_at(devnet.mine(1))
        assert all(chain_health(devnet, e.account) >= 1.0 for e in sent)
        for _ in range(10):
            await keeper.evaluated_at(devnet.mine(1))
            if not await journal.by_status(J.PENDING):
                break
    finally:
        devnet.client.call("evm_setAutomine", True)
    statuses = {e.key: e.status for e in await journal.all() if e.key in records}
    assert set(statuses.values()) == {J.CANCELLED}, statuses
    assert keeper.daemon.executors["aave"]._reverts == []


async def test_protocols_on_one_delegated_key_take_its_slot_in_turn(
        devnet: Devnet, tmp_path: Path, run_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """Aave and Morpho on one delegated key: one transaction a block between them. The one
    whose path ran first took the slot every block until its backlog was gone; now, each
    having liquidations left, they take it in turn — whichever signs first in the crash's
    block (its full pass, held behind its own wave, claims no earlier turn than the one it
    kept out: a loaded run's turns were aave, aave, morpho). (A wave's gas capped at 4M
    here: this devnet's crash is a wave or two of each protocol at the real cap.)"""
    from keeperd.execution import executor
    from tests.keeper_harness import aave_and_morpho_config

    monkeypatch.setattr(executor, "WAVE_GAS_CAP", 4_000_000)
    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)
    fund_keeper(devnet)
    await asyncio.to_thread(delegate_keeper, devnet, tmp_path)
    keeper = await run_daemon(aave_and_morpho_config(devnet, tmp_path, {
        "mode": "liquidate", "min_profit_usd": 1.0,
        "key": {"source": "env", "env": "KEEPER_KEY"}}))
    # Both paths done with the head before the crash is mined: anvil serves a read at the
    # head's number made while it mines the next block that block's state now and then, and
    # Morpho's path of the head, still running under load, had its rate (3,000) judged
    # against the crash's price read "at the head" (2,100) — its market tripped for the run.
    head = devnet.client.block_number()
    for protocol in ("aave", "morpho"):
        await keeper.evaluated_at(head, protocol=protocol)
    journal = keeper.daemon.executors["aave"].journal
    taker: dict[int, set[str]] = {}
    approvals: set[str] = set()  # (their transactions)
    devnet.client.call("evm_setAutomine", False)
    try:
        devnet.set_price_async("WETH", 2100.0)
        block = devnet.mine(1)
        with structlog.testing.capture_logs() as logs:
            for _ in range(12):  # (the balances, and approvals of what was seized, due at 10)
                await keeper.evaluated_at(block, protocol="aave")
                await keeper.evaluated_at(block, protocol="morpho")
                sent = {e.protocol for e in await journal.all()
                        if e.status in (J.PENDING, J.INCLUDED) and e.detected_block == block}
                taker[block] = sent
                block = devnet.mine(1)
        approvals = {e["tx_hash"] for e in logs if e["event"] == "keeper.approval_sent"}
    finally:
        devnet.client.call("evm_setAutomine", True)
    # (the block an approval wave was sent at: mined in the next, each block mined by hand)
    approved_at = {int(devnet.client.call("eth_getTransactionReceipt", h)["blockNumber"], 16)
                   - 1 for h in approvals}
    assert all(len(protocols) <= 1 for protocols in taker.values())  # (one wave a block)
    turns = [p for b in sorted(taker) for p in taker[b]]
    assert turns[:4] in (["aave", "morpho"] * 2, ["morpho", "aave"] * 2), taker
    # Every block a wave of liquidations while they wait (the approvals due with the
    # balances go after them, when the slot is free: one took a crash's block and turn) —
    # but for a block the approvals took once they had waited APPROVALS_WAIT_BLOCKS behind
    # them (a full run's load put the balances' turn inside the crash: one such block).
    assert len(approved_at & set(taker)) <= 2, (approved_at, taker)
    waiting = sorted(set(taker) - approved_at)[:turns.count("aave") + turns.count("morpho")]
    assert all(taker[b] for b in waiting), (taker, approved_at)
