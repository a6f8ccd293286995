"""Liquidation execution on the devnet with a real keeper key (anvil's public test account 5),
its own balance as capital, and the real Aave V3 pool."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import structlog

from keeperd.daemon import Daemon
from keeperd.devnet import contracts
from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from keeperd.execution.executor import WAVE
from keeperd.metrics import Metrics
from tests.chain_amounts import (
    assert_amounts_as_planned,
    frozen_clock,
    sent_from_journal,
)
from tests.conftest import metric_absent, metric_value

# anvil's default mnemonic, account 5: a published test key, never used for anything real.
from tests.keeper_harness import (  # noqa: F401 - fixtures, and names others import here
    KEEPER,
    KEEPER_KEY,
    LIQUIDATION_CALL_TOPIC,
    Running,
    assert_declined,
    chain_health,
    config_for,
    crash_and_collect,
    crash_through_flash_sales,
    fund_keeper,
    keeper_key_env,
)


async def test_a_30pct_weth_crash_is_liquidated_within_two_blocks(
        aave_devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """On today's Aave and on v3.0 alike: every account the crash puts under water is
    liquidated within two blocks (small and multi-debt ones included, the pool's close factor
    and dust rules respected) — each one left is shown unprofitable by keeperd's own pricing —
    nothing reverts, and no oracle breaker trips."""
    devnet = aave_devnet
    fund_keeper(devnet)
    borrowers = [b["address"] for b in devnet.manifest["borrowers"]]
    # No borrower on the edge before the crash (interest accrues with the devnet's clock: a
    # seeded account it pushed under 1 would be liquidated before the crash, and the test
    # would be about something else).
    before = {a: chain_health(devnet, a) for a in borrowers}
    assert min(before.values()) > 1.0, min(before.items(), key=lambda kv: kv[1])
    config = config_for(devnet, tmp_path, "liquidate",
                        key={"source": "env", "env": "KEEPER_KEY"})
    keeper = await run_daemon(config)
    await keeper.evaluated_at(devnet.client.block_number())

    devnet.client.call("evm_setAutomine", False)
    # The clock frozen from the crash on: the blocks that include the waves carry the time of
    # the block each wave was planned on, so the pool must do what keeperd planned, exactly.
    try:
        with frozen_clock(devnet):
            devnet.set_price_async("WETH", 2100.0)
            crash_block = devnet.mine(1)
            underwater = {a for a in borrowers if chain_health(devnet, a) < 1.0}
            debts = {a: devnet.account_data(a)[1] for a in underwater}
            assert len(underwater) > 20
            with structlog.testing.capture_logs() as logs:
                await keeper.evaluated_at(crash_block)
            # Where the crash's path spent its time, step by step (bench/latency.py keeps it).
            [first] = [e for e in logs if e["event"] == "execution.timing" and e["partial"]]
            assert {"discover_ms", "read_ms", "first_pass_ms", "evaluated_ms", "plan_ms",
                    "encode_ms"} <= set(first["stages"]), first
            assert (first["stages"]["first_pass_ms"] < first["stages"]["result_ms"]
                    <= first["stages"]["evaluated_ms"])
            journal = keeper.daemon.executors["aave"].journal
            pending = await journal.by_status(J.PENDING)
            assert pending, "nothing was sent"
            # Blocks come only when mined (with automine, each later transaction would get a
            # block of its own): what is sent on evaluating block B lands in B + 1.
            await keeper.evaluated_at(devnet.mine(1))  # the first wave lands; a second is sent
            await keeper.evaluated_at(devnet.mine(1))  # (multi-debt accounts' other debt)
    finally:
        devnet.client.call("evm_setAutomine", True)

    included = await journal.by_status(J.INCLUDED)
    assert all(e.detected_block >= crash_block for e in included)  # nothing before the crash
    # Everything sent at the crash block is included; nothing reverted.
    assert {e.account for e in pending} <= {e.account for e in included}
    assert await journal.by_status(J.REVERTED) == []
    sent_at_crash = {e.key for e in pending}
    # Anything else was journaled after we looked (at the crash block or the next: a
    # multi-debt account's second debt, say): it must have landed within two blocks too.
    assert all(e.detected_block <= crash_block + 1 for e in included
               if e.key not in sent_at_crash)
    for entry in included:
        txs = await journal.txs(entry.key)
        receipt = devnet.client.call("eth_getTransactionReceipt", txs[-1].tx_hash)
        assert int(receipt["blockNumber"], 16) <= crash_block + 2
        assert devnet.account_data(entry.account)[1] < debts[entry.account]
    # The pool repaid, seized and took as its fee what keeperd's plan said, to the unit
    # (keeperd sends type(uint256).max: the pool caps it at what its rules allow).
    assert_amounts_as_planned(devnet, await sent_from_journal(journal), len(included))
    liquidated = {e.account for e in included}
    assert liquidated <= underwater
    # Every account left is one keeperd's own pricing finds unprofitable (gas at the block's
    # fees, slippage, the bonus) for every pair it could liquidate — not one that was missed.
    left = underwater - liquidated
    await assert_declined(keeper.daemon.executors["aave"], left)
    assert len(left) < 0.05 * len(underwater)  # (dust: a handful, not a class of accounts)
    if devnet.manifest["aave_v3"]["revision"] >= 10:
        by_address = {b["address"]: b for b in devnet.manifest["borrowers"]}
        assert any(debts[a] < 2_000 * 10**8 for a in liquidated), "no small borrower"
        assert any(len(by_address[a]["debts"]) == 2 for a in liquidated), "no multi-debt one"
    metrics = keeper.daemon.metrics
    labels = {"chain": "devnet", "protocol": "aave"}
    assert metric_value(metrics, "keeperd_liquidations_total",
                        {**labels, "stage": "included"}) == len(await journal.by_status(J.INCLUDED))
    assert metric_value(metrics, "keeperd_liquidation_profit_usd_total", labels) > 0
    # The oracle monitor read every source (adapters included) and trusted them all.
    for symbol in devnet.manifest["aave_v3"]["reserves"]:
        assert metric_value(metrics, "keeperd_breaker_tripped",
                            {"chain": "devnet", "asset": symbol}) == 0, symbol
    assert metric_value(metrics, "keeperd_liquidations_held", labels) == 0
    # The state file's commits during the crash only appended to its log; a thread copied
    # it back (storage/wal_checkpoint.py), never a commit on the loop.
    assert await keeper.daemon.index_store.db.fetchval("PRAGMA wal_autocheckpoint") == 0
    assert metric_value(metrics, "keeperd_sqlite_checkpoints_total", {"outcome": "ok"}) > 0
    assert metric_value(metrics, "keeperd_sqlite_checkpoints_total",
                        {"outcome": "failed"}) == 0


async def test_dry_run_sends_nothing_and_records_what_it_would_send(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    fund_keeper(devnet, approve=True)
    keeper = await run_daemon(config_for(devnet, tmp_path, "dry-run", address=KEEPER))
    await keeper.evaluated_at(devnet.client.block_number())
    nonce_before = devnet.client.call("eth_getTransactionCount", KEEPER, "latest")
    devnet.set_price("WETH", 2100.0)
    await keeper.evaluated_at(devnet.client.block_number())
    journal = keeper.daemon.executors["aave"].journal
    recorded = await journal.by_status(J.DRY_RUN)
    assert len(recorded) > 20
    assert all(e.expected_profit_usd >= 1.0 for e in recorded)
    assert devnet.client.call("eth_getTransactionCount", KEEPER, "latest") == nonce_before
    assert all([await journal.txs(e.key) == [] for e in recorded])
    # The next block sees the same positions: nothing is recorded twice.
    await keeper.evaluated_at(devnet.mine(1))
    assert len(await journal.by_status(J.DRY_RUN)) == len(recorded)


COMPETITOR = "0x00000000000000000000000000000000C0FfeE00"  # checksummed


async def lose_a_race(devnet: Devnet, keeper: Running, *, stopped: bool = False) -> str:
    """A crash whose liquidation of one account a competitor's higher tip gets mined before
    the keeper's (which reverts behind it); that account. `stopped`: the keeper stopped with
    its liquidation in the pool, before the block that mines both."""
    await keeper.evaluated_at(devnet.client.block_number())
    fund_keeper(devnet, COMPETITOR, approve=True)
    # Healthy now (interest may have pushed some seeded accounts under 1 already: the keeper
    # liquidates those at once, before any competitor), liquidatable after the crash.
    victim = next(b["address"] for b in devnet.manifest["borrowers"]
                  if b["collateral"] == ["WETH"] and b["debt"] == "DAI"
                  and 1.02 < chain_health(devnet, b["address"]) < 1.3)
    pool_art = contracts.aave("Pool")
    devnet.client.call("evm_setAutomine", False)
    try:
        devnet.set_price_async("WETH", 2100.0)
        crash = devnet.mine(1)
        # The competitor pays a higher tip, so its liquidation is mined first.
        devnet.client.call("eth_sendTransaction", {
            "from": COMPETITOR, "to": devnet.manifest["aave_v3"]["pool"], "gas": hex(1_500_000),
            "maxPriorityFeePerGas": hex(500 * 10**9), "maxFeePerGas": hex(1000 * 10**9),
            "data": "0x" + pool_art.encode_call(
                "liquidationCall", devnet.manifest["tokens"]["WETH"],
                devnet.manifest["tokens"]["DAI"], victim, 2**256 - 1, False).hex()})
        await keeper.evaluated_at(crash)
        if stopped:
            keeper.stop.set()
            await keeper.task
        devnet.mine(1)
    finally:
        devnet.client.call("evm_setAutomine", True)
    if not stopped:
        await keeper.evaluated_at(devnet.mine(1))
    return victim


async def test_a_competitor_first_is_recorded_as_lost_not_retried(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    fund_keeper(devnet)
    keeper = await run_daemon(config_for(devnet, tmp_path, "liquidate",
                                         key={"source": "env", "env": "KEEPER_KEY"}))
    victim = await lose_a_race(devnet, keeper)
    journal = keeper.daemon.executors["aave"].journal
    entries = [e for e in await journal.all() if e.account == victim]
    assert len(entries) == 1, entries
    assert entries[0].status == J.LOST_RACE, (entries, chain_health(devnet, victim))
    assert entries[0].winner == COMPETITOR
    # Ours reverted behind the competitor's: a lost race, not a revert nobody explains, so
    # it does not count toward the revert breaker (three in a cascade paused sending).
    executor = keeper.daemon.executors["aave"]
    assert metric_value(keeper.daemon.metrics, "keeperd_liquidations_total",
                        {"chain": "devnet", "protocol": "aave", "stage": "reverted"}) == 1
    assert executor._reverts == []
    # Its gas is a realised loss: the P&L is what the wallet shows (it left reverts out).
    assert entries[0].realised_profit_usd is not None and entries[0].realised_profit_usd < 0
    gas = metric_value(keeper.daemon.metrics, "keeperd_liquidation_gas_cost_usd_total",
                       {"chain": "devnet", "protocol": "aave"})
    assert metric_value(keeper.daemon.metrics, "keeperd_liquidation_loss_usd_total", {
        "chain": "devnet", "protocol": "aave"}) >= -entries[0].realised_profit_usd > 0
    assert -entries[0].realised_profit_usd < gas
    # `keeperd status`'s P&L (every entry's realised figure) is what the counters add up to.
    from keeperd.storage.summary import protocol_summary
    rows = [(e.protocol, e.status, e.account, e.collateral, e.debt, e.realised_profit_usd)
            for e in await journal.all()]
    gained = (metric_value(keeper.daemon.metrics, "keeperd_liquidation_profit_usd_total",
                           {"chain": "devnet", "protocol": "aave"})
              - metric_value(keeper.daemon.metrics, "keeperd_liquidation_loss_usd_total",
                             {"chain": "devnet", "protocol": "aave"}))
    assert protocol_summary(rows)["aave"]["realised_pnl_usd"] == pytest.approx(gained, abs=0.01)
    # Not retried: the next blocks send nothing more for that account.
    await keeper.evaluated_at(devnet.mine(1))
    assert len([e for e in await journal.all() if e.account == victim]) == 1


async def test_a_revert_nobody_explains_is_logged_with_its_reason(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """The price back up in the block that mines the crash's liquidations (its move paid a
    higher tip): they revert, and no other keeper took them. The receipt says only that
    they failed; the node's trace says why, in the journal, the log and the revert
    breaker's reason (an operator traced them by hand)."""
    fund_keeper(devnet)
    keeper = await run_daemon(config_for(devnet, tmp_path, "liquidate",
                                         key={"source": "env", "env": "KEEPER_KEY"}))
    await keeper.evaluated_at(devnet.client.block_number())
    start = devnet.price("WETH")
    devnet.client.call("evm_setAutomine", False)
    try:
        devnet.set_price_async("WETH", 2100.0)
        crash = devnet.mine(1)
        await keeper.evaluated_at(crash)
        for to, data, gas in devnet._price_moves("WETH", start):
            devnet.client.call("eth_sendTransaction", {
                "from": devnet.manifest["aave_v3"]["admin"], "to": to,
                "data": "0x" + data.hex(), "gas": hex(gas or 200_000),
                "maxPriorityFeePerGas": hex(500 * 10**9), "maxFeePerGas": hex(1000 * 10**9)})
        await keeper.evaluated_at(devnet.mine(1))
    finally:
        devnet.client.call("evm_setAutomine", True)
    await keeper.evaluated_at(devnet.mine(1))
    journal = keeper.daemon.executors["aave"].journal
    reverted = await journal.by_status(J.REVERTED)
    assert len(reverted) > 3
    # (traced after each block's liquidations are sent, two a block: off their path; under
    # a full run's load a block's scan may find its head moved on: blocks until done)
    wanted = min(len(reverted), 2 + 32)  # (two a block, 32 more kept, the rest not traced)
    executor = keeper.daemon.executors["aave"]
    pause = None
    # (blocks until done, and time: the traces are asked in the background, two a block, and
    # under a full run's load 54 blocks mined as fast as evaluated (4 s) left 32 of 34
    # unanswered — a CI run)
    deadline = asyncio.get_running_loop().time() + 60
    for block in itertools.count():
        if block >= 3 * (wanted // 2 + 1) and asyncio.get_running_loop().time() > deadline:
            break
        await keeper.evaluated_at(devnet.mine(1))
        await asyncio.sleep(0.05)
        reverted = await journal.by_status(J.REVERTED)
        reasoned = [e for e in reverted if e.detail and " reverted: " in e.detail]
        # (the pause as it read while it lasted: a loaded run's traces take more blocks than
        # the pause's revert_breaker_blocks, and it had ended by the loop's end)
        pause = executor.send_pause(devnet.client.block_number()) or pause
        if len(reasoned) >= wanted:
            break
    # Aave's own error, by name (v3.6's custom error, 0x930bb771 in the trace), in the pool's
    # logic. (A trace the node does not answer within REVERT_TRACE_S is asked again at later
    # blocks, REVERT_TRACE_TRIES in all: at one asking a full run's load left 16 and 30 of 34
    # traced; never more than the 34 kept.)
    assert wanted // 2 <= len(reasoned) <= wanted, (len(reasoned), wanted)
    assert all(" reverted: HealthFactorNotBelowThreshold in 0x" in (e.detail or "")
               for e in reasoned), [e.detail for e in reasoned]
    assert pause is not None and "the last one: HealthFactorNotBelowThreshold in" in pause


async def test_a_liquidation_short_of_gas_at_the_plan_is_measured_and_sent_with_what_it_needs(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """A wave is simulated with one eth_call each at the gas limit the plan sends; a call
    that runs out of gas there (the plan short of experience) is measured with
    eth_estimateGas and sent with what it needs — never with the plan's limit, which would
    run out of gas on chain too."""
    fund_keeper(devnet)
    keeper = await run_daemon(config_for(devnet, tmp_path, "liquidate",
                                         key={"source": "env", "env": "KEEPER_KEY"}))
    await keeper.evaluated_at(devnet.client.block_number())
    liquidator = keeper.daemon.executors["aave"].liquidator
    short = 120_000  # a liquidation needs several times this
    liquidator._gas_limit = lambda plan: short  # type: ignore[method-assign]
    devnet.client.call("evm_setAutomine", False)
    try:
        with frozen_clock(devnet):
            _, journal, sent = await crash_and_collect(devnet, keeper)
            assert len(sent) > 5
            await keeper.evaluated_at(devnet.mine(1))
    finally:
        devnet.client.call("evm_setAutomine", True)
    for entry in sent:
        [tx] = await journal.txs(entry.key)
        assert tx.gas_limit > 2 * short, (entry.key, tx.gas_limit)
        receipt = devnet.client.call("eth_getTransactionReceipt", tx.tx_hash)
        assert receipt["status"] == "0x1", entry.key
        assert int(receipt["gasUsed"], 16) > short  # it did need more than the plan said
    assert await journal.by_status(J.REVERTED) == []
    assert_amounts_as_planned(devnet, await sent_from_journal(journal), len(sent))


async def test_held_back_transaction_is_replaced_within_the_profit_cap(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    fund_keeper(devnet)
    keeper = await run_daemon(config_for(devnet, tmp_path, "liquidate",
                                         key={"source": "env", "env": "KEEPER_KEY"},
                                         replace_after_blocks=1, base_fee_headroom=1.0,
                                         priority_fee_gwei=1.0))
    await keeper.evaluated_at(devnet.client.block_number())
    devnet.client.call("evm_setAutomine", False)
    with frozen_clock(devnet):  # (to the end: what lands late lands on the planned state)
        try:
            _, journal, sent = await crash_and_collect(devnet, keeper)
            assert sent
            first_fee = (await journal.txs(sent[0].key))[0].max_fee_per_gas
            # A base-fee spike prices the keeper's transactions out of the next blocks: to
            # where the gas of the smaller liquidations costs more than they earn (~$50 a
            # transaction), so their replacements would have to pay more than their prize.
            spike = max(first_fee * 3, 100 * 10**9)
            for _ in range(4):
                devnet.client.call("anvil_setNextBlockBaseFeePerGas", hex(spike))
                await keeper.evaluated_at(devnet.mine(1))
            # Blocks passed while they waited: still one opportunity per account, never a
            # second. (A second entry for an account is legitimate only after its first was
            # included: a half-liquidated position can be liquidatable again.)
            waiting = [e.account for e in await journal.by_status(J.PENDING)]
            assert len(waiting) == len(set(waiting))
            by_account: dict[str, list[J.JournalEntry]] = {}
            for e in await journal.all():
                by_account.setdefault(e.account, []).append(e)
            for entries in by_account.values():
                assert all(e.status == J.INCLUDED for e in entries[:-1])
        finally:
            devnet.client.call("evm_setAutomine", True)
        # The spike over, the base fee falls back 12.5 % a block: blocks until nothing waits
        # (one block left those whose cap was still under it pending, and the count below
        # compared replacements with inclusions that had not come yet).
        for _ in range(30):
            await keeper.evaluated_at(devnet.mine(1))
            if not await journal.by_status(J.PENDING):
                break
    assert not await journal.by_status(J.PENDING)
    replaced = 0
    for entry in sent:
        txs = await journal.txs(entry.key)
        replaced += len(txs) > 1
        fees = [t.max_fee_per_gas for t in txs]
        assert fees == sorted(fees)
        for t in txs:  # never more than the opportunity is worth
            assert t.max_fee_per_gas * t.gas_limit <= entry.max_fee_wei
        assert len({t.nonce for t in txs}) == 1
    assert replaced >= 1
    metrics = keeper.daemon.metrics
    assert metric_value(metrics, "keeperd_tx_sent_total",
                        {"chain": "devnet", "kind": "replacement"}) >= 1
    # In dollars, on chain: what each included liquidation earned (the collateral seized
    # less the debt repaid, from its LiquidationCall, at the crash's prices) covers the fee
    # it really paid (gas used x effective price) and still leaves min_profit_usd.
    paid_checked = 0
    for entry in await journal.by_status(J.INCLUDED):
        receipts = [devnet.client.call("eth_getTransactionReceipt", t.tx_hash)
                    for t in await journal.txs(entry.key)]
        [receipt] = [r for r in receipts if r is not None]
        fee_usd = (int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16) / 1e18
                   * usd_price(devnet, "WETH"))
        assert fee_usd + 1.0 <= earned_usd(devnet, receipt), (entry.key, fee_usd)
        paid_checked += 1
    assert paid_checked >= replaced
    assert_amounts_as_planned(devnet, await sent_from_journal(journal), paid_checked)


def usd_price(devnet: Devnet, symbol: str) -> float:
    """What the Aave oracle says (through v3.6's adapters where a token has one)."""
    oracle = contracts.aave("AaveOracle")
    (price,) = oracle.decode_result("getAssetPrice", devnet.client.eth_call(
        devnet.manifest["aave_v3"]["oracle"],
        oracle.encode_call("getAssetPrice", devnet.manifest["tokens"][symbol])))
    return float(price) / 1e8


def earned_usd(devnet: Devnet, receipt: dict) -> float:  # type: ignore[type-arg]
    """Collateral seized less debt repaid, in USD at the oracle's prices, from a receipt's
    LiquidationCall."""
    symbols = {a.lower(): s for s, a in devnet.manifest["tokens"].items()}
    reserves = devnet.manifest["aave_v3"]["reserves"]
    [log] = [e for e in receipt["logs"] if e["topics"][0] == LIQUIDATION_CALL_TOPIC]
    collateral = symbols["0x" + log["topics"][1][-40:]]
    debt = symbols["0x" + log["topics"][2][-40:]]
    repaid = int(log["data"][2:66], 16) / 10 ** reserves[debt]["decimals"]
    seized = int(log["data"][66:130], 16) / 10 ** reserves[collateral]["decimals"]
    return seized * usd_price(devnet, collateral) - repaid * usd_price(devnet, debt)


@pytest.mark.slow
def test_sigkill_after_sending_then_restart_sends_nothing_twice(devnet: Devnet,
                                                                tmp_path: Path) -> None:
    """Killed the moment its first wave is in the mempool (tests/sigkill_harness.py): the
    restart resumes those liquidations instead of signing them again, liquidates the rest,
    and the pool does what each plan said; the index is as complete as a fresh one."""
    from tests.faults.invariants import assert_index_complete
    from tests.sigkill_harness import sigkill_after_broadcast_then_resume

    fund_keeper(devnet)
    killed = sigkill_after_broadcast_then_resume(devnet, tmp_path, {
        "chains": [{"name": "devnet", "chain_id": 31337, "rpc_urls": [devnet.manifest["rpc_url"]],
                    "confirmations": 0, "poll_interval": 0.1}],
        "protocols": [{"kind": "aave_v3", "name": "aave", "chain": "devnet",
                       "addresses_provider": devnet.manifest["aave_v3"]["addresses_provider"]}],
        "keeper": {"mode": "liquidate", "min_profit_usd": 1.0,
                   "key": {"source": "env", "env": "KEEPER_KEY"}},
        "metrics": {"enabled": False},
    }, lambda: devnet.set_price("WETH", 2100.0), at_least=WAVE)  # (the first wave, whole)
    # The crash's whole wave, not only the part killed: over 20 accounts liquidated.
    assert len([s for s in killed.journaled if s.status == J.INCLUDED]) > 20
    asyncio.run(assert_index_complete(devnet, tmp_path / "state", "aave",
                                      killed.first_block - 1))


async def test_the_key_never_reaches_logs_or_metrics(devnet: Devnet, tmp_path: Path,
                                                     run_daemon) -> None:
    import io
    import os

    import structlog
    from prometheus_client import generate_latest

    from keeperd.logs import configure_logging

    key_file = tmp_path / "keeper.key"
    key_file.write_text(KEEPER_KEY)
    os.chmod(key_file, 0o600)
    fund_keeper(devnet)
    out = io.StringIO()
    redactor = configure_logging("debug", "json", stream=out)
    config = config_for(devnet, tmp_path, "liquidate",
                        key={"source": "file", "path": str(key_file)})
    stop = asyncio.Event()
    daemon = Daemon(config, metrics=Metrics(), redactor=redactor)
    task = asyncio.create_task(daemon.run(stop))
    try:
        await asyncio.wait_for(daemon.ready.wait(), 30)
        # Try hard to make it print the key: log it by name and inside text.
        log = structlog.get_logger("test")
        log.info("probe", private_key=KEEPER_KEY, text=f"key is {KEEPER_KEY.upper()}")
        devnet.set_price("WETH", 2100.0)
        await asyncio.sleep(1.0)
        devnet.mine(1)
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        structlog.reset_defaults()
    logs = out.getvalue()
    assert "liquidation.sent" in logs  # it did real work while we listened
    metrics_text = generate_latest(daemon.metrics.registry).decode()
    secret = KEEPER_KEY[2:].lower()
    assert secret not in logs.lower()
    assert secret not in metrics_text.lower()
    assert secret not in repr(daemon.__dict__).lower()


async def test_flash_loan_executor_liquidates_without_capital(aave_devnet: Devnet,
                                                              tmp_path: Path,
                                                              run_daemon) -> None:
    devnet = aave_devnet
    token = contracts.aave("MintableERC20")
    flash = devnet.manifest["flash_liquidator"]["address"]
    assert devnet.manifest["flash_liquidator"]["owner"] == KEEPER

    def balance(symbol: str, holder: str) -> int:
        return token.decode_result("balanceOf", devnet.client.eth_call(
            devnet.manifest["tokens"][symbol], token.encode_call("balanceOf", holder)))[0]

    keeper_before = {s: balance(s, KEEPER) for s in devnet.manifest["tokens"]}
    assert keeper_before["USDC"] == keeper_before["DAI"] == 0  # no capital at all
    config = config_for(devnet, tmp_path, "liquidate",
                        key={"source": "env", "env": "KEEPER_KEY"}, capital="flash-loan",
                        flash_liquidator=flash,
                        uniswap_v3_factory=devnet.manifest["uniswap_v3"]["factory"])
    keeper = await run_daemon(config)
    await keeper.evaluated_at(devnet.client.block_number())
    borrowers = [b["address"] for b in devnet.manifest["borrowers"]]
    debt_before = {a: devnet.account_data(a)[1] for a in borrowers}
    devnet.client.call("evm_setAutomine", False)
    try:
        with frozen_clock(devnet), structlog.testing.capture_logs() as logs:
            # The pools follow the crash in its block, as arbitrage moves them on a chain.
            _, journal, first = await crash_and_collect(devnet, keeper)
            # The crash's sales through one pool are simulated in turn: those the earlier
            # ones leave below the bound wait (each sent alone reverted: 39 of them, gas
            # for nothing, and the revert breaker held the rest for 50 blocks).
            assert len(first) >= 5
            assert any(e["event"] == "liquidation.swap_would_not_pay"
                       and e.get("guard") == "SwapBelowBound" for e in logs)
            # Arbitrage brings the pools back to the oracle's price between blocks: the
            # next sales go, until the crash is cleared.
            for _ in range(6):
                devnet.align_pools()
                await keeper.evaluated_at(devnet.mine(1))
            for _ in range(4):  # (the last sends land; no more arbitrage, so no more go)
                await keeper.evaluated_at(devnet.mine(1))
                if not await journal.by_status(J.PENDING):
                    break
    finally:
        devnet.client.call("evm_setAutomine", True)
    sent = [e for e in await journal.all() if e.status != J.DRY_RUN]
    assert len(sent) > 20
    # The largest positions' sales alone are too large for their pools' depth: planned
    # smaller, they go (they failed their bound every block, never liquidated: a trial).
    largest = sorted(debt_before, key=lambda a: debt_before[a], reverse=True)[:2]
    assert largest[0] in {e.account for e in sent}, "the largest position was not liquidated"
    assert any("planned at half this size" in str(e.get("meaning")) for e in logs
               if e["event"] == "liquidation.swap_would_not_pay")
    # A sale that only waits for its pool is said once in REFUSAL_RETELL_BLOCKS (it was a
    # third of a crash's log lines, one sale 30 times in 50 blocks: a trial).
    waits = Counter(e["opportunity"] for e in logs
                    if e["event"] == "liquidation.swap_would_not_pay"
                    and "planned_size" not in e)
    assert waits and max(waits.values()) == 1, waits.most_common(3)
    # Nothing reverted: every sale sent had been simulated after the keeper's others
    # through its pool, in flight or ahead of it in the block.
    assert [(e.status, e.detail) for e in sent if e.status != J.INCLUDED] == []
    # Each sale priced by its simulation (the seller returns what it kept, after the sales
    # ahead of it): what was realised is what was expected, not the 0.33-1.05 of it that a
    # fixed slippage estimate expected (a by-hand trial; the decision's worst-case gas makes
    # the realised a little more).
    ratios = sorted(e.realised_profit_usd / e.expected_profit_usd for e in sent)
    assert ratios[0] >= 0.95 and ratios[len(ratios) // 2] <= 1.1, ratios
    # Through the FlashLiquidator too (it offers the pool a bound above the plan; the pool
    # takes what its rules allow): each liquidation as planned, to the unit.
    assert_amounts_as_planned(devnet, await sent_from_journal(journal), len(sent))
    included = {e.key for e in await journal.by_status(J.INCLUDED)}
    assert {e.key for e in sent} <= included
    for entry in sent:  # each liquidated account owes less than before its liquidation
        assert devnet.account_data(entry.account)[1] < debt_before[entry.account]
    if "USDT" in devnet.manifest["tokens"]:
        # A token with no return values, approved only from zero, through the flash path.
        assert any(e.debt == "USDT" for e in await journal.by_status(J.INCLUDED))
        assert balance("USDT", devnet.manifest["flash_liquidator"]["beneficiary"]) > 0
    assert await journal.by_status(J.REVERTED) == []
    # The profit went to the beneficiary, in the debt assets; the keeper spent only gas.
    beneficiary = devnet.manifest["flash_liquidator"]["beneficiary"]
    assert balance("DAI", beneficiary) + balance("USDC", beneficiary) > 0
    assert {s: balance(s, KEEPER) for s in devnet.manifest["tokens"]} == keeper_before


async def test_a_keeper_without_capital_is_told_and_auto_takes_the_flash_path(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """The new user's first run: a keeper holding none of the debt assets. With own capital
    nothing is simulated in vain: the shortfall is counted per asset, with the liquidations
    and profit forgone; with `capital: auto` the same crash goes through flash loans."""
    devnet.client.call("anvil_setBalance", KEEPER, hex(100 * 10**18))  # gas, no tokens
    keeper = await run_daemon(config_for(devnet, tmp_path / "own", "liquidate",
                                         key={"source": "env", "env": "KEEPER_KEY"}))
    await keeper.evaluated_at(devnet.client.block_number())
    snap = devnet.snapshot()
    devnet.set_price("WETH", 2100.0)
    await keeper.evaluated_at(devnet.mine(1))
    executor = keeper.daemon.executors["aave"]
    assert await executor.journal.all() == []
    short = {s.symbol: s for s in executor.capital_shortfall.values()}
    assert {"USDC", "DAI"} <= set(short)
    assert sum(s.opportunities for s in short.values()) > 20
    # (no FlashLiquidator configured: `capital: auto` would not help, so it is not advised)
    assert executor.capital_fix == "Fund the keeper with the debt asset."
    # `keeperd status` says it too (its doing line said only "N liquidatable").
    status = keeper.daemon._status_line()
    assert f"aave: {sum(s.opportunities for s in short.values())} liquidation(s) short of " \
        f"capital ({', '.join(sorted(short))}): Fund the keeper with the debt asset." in status
    labels = {"chain": "devnet", "protocol": "aave"}
    metrics = keeper.daemon.metrics
    assert metric_value(metrics, "keeperd_liquidations_total",
                        {**labels, "stage": "no_capital"}) > 20
    assert metric_absent(metrics, "keeperd_liquidations_total",
                         {**labels, "stage": "simulation_failed"})
    assert metric_value(metrics, "keeperd_capital_shortfall_tokens",
                        {**labels, "asset": "USDC"}) == short["USDC"].missing_tokens
    assert metric_value(metrics, "keeperd_capital_forgone_usd_total", labels) > 0
    # Each forgone liquidation is counted once while it stays forgone: the crash's block was
    # evaluated twice (the price-exposed pass, then the full one) and counted twice, and
    # each later block again.
    forgone = sum(s.opportunities for s in short.values())
    profit = sum(s.profit_forgone_usd for s in short.values())
    for _ in range(2):
        await keeper.evaluated_at(devnet.mine(1))
    assert metric_value(metrics, "keeperd_liquidations_total",
                        {**labels, "stage": "no_capital"}) == forgone
    assert metric_value(metrics, "keeperd_capital_forgone_usd_total", labels) \
        == pytest.approx(profit, rel=1e-3)
    # A breaker's pause keeps the positions from the capital stage, not the keeper funded:
    # the shortfall stands (it resolved "no liquidation is short of DAI now", then fired
    # again once the breaker cleared: a by-hand trial), and nothing is counted twice.
    breaker = keeper.daemon.chains["devnet"].prices.breaker
    await breaker.trip("WETH", "operator: testing", manual=True)
    await keeper.evaluated_at(devnet.mine(1))
    assert set(short) <= {s.symbol for s in executor.capital_shortfall.values()}, \
        executor.capital_shortfall
    await breaker.reset("WETH")
    for _ in range(2):
        await keeper.evaluated_at(devnet.mine(1))
    assert set(short) <= {s.symbol for s in executor.capital_shortfall.values()}
    assert metric_value(metrics, "keeperd_liquidations_total",
                        {**labels, "stage": "no_capital"}) == forgone
    keeper.stop.set()
    await keeper.task
    devnet.revert(snap)

    auto = await run_daemon(config_for(
        devnet, tmp_path / "auto", "liquidate", key={"source": "env", "env": "KEEPER_KEY"},
        capital="auto", flash_liquidator=devnet.manifest["flash_liquidator"]["address"],
        uniswap_v3_factory=devnet.manifest["uniswap_v3"]["factory"]))
    await crash_through_flash_sales(devnet, auto)
    journal = auto.daemon.executors["aave"].journal
    assert len(await journal.by_status(J.INCLUDED)) > 20
    assert_amounts_as_planned(devnet, await sent_from_journal(journal), 20)
    assert await journal.by_status(J.REVERTED) == []
    # Nothing was forgone, so nothing is alerted as short (it said "not sent" of liquidations
    # the flash path had sent, seen by hand); the gauge still shows what the balance lacked.
    assert auto.daemon.executors["aave"].capital_shortfall == {}
    assert "capital: auto" not in str(auto.daemon.executors["aave"].capital_fix)  # (set)
    assert metric_value(auto.daemon.metrics, "keeperd_liquidations_total",
                        {**labels, "stage": "no_capital"}) == 0


def test_the_flash_liquidator_reverts_when_the_swap_leaves_too_little(aave_devnet: Devnet
                                                                      ) -> None:
    """The contract's own guard, on the real bytecode: a liquidation whose sold collateral
    would leave less than `minProfit` of the debt asset reverts with NotEnoughProfit (the
    selector keeperd's executor reads as "unprofitable"); with a bound it clears, the same
    call goes through."""
    from keeperd.devnet.client import DevnetRpcError
    from keeperd.execution.executor import NOT_ENOUGH_PROFIT
    from keeperd.protocols.aave_v3.liquidator import flash_calldata

    devnet = aave_devnet
    flash = devnet.manifest["flash_liquidator"]["address"]
    devnet.set_price("WETH", 2100.0)
    account = next(b["address"] for b in devnet.manifest["borrowers"]
                   if b["collateral"] == ["WETH"] and b["debts"] == ["USDC"]
                   and chain_health(devnet, b["address"]) < 1.0)
    debt = devnet.account_data(account)[1]  # base currency, 8 decimals
    to_cover = int(debt / 1e8 * 0.25 * 1e6)  # a quarter of the debt, in USDC's 6 decimals

    def estimate(min_profit: int) -> object:
        data = flash_calldata(devnet.manifest["tokens"]["WETH"],
                              devnet.manifest["tokens"]["USDC"], account, to_cover,
                              devnet.manifest["uniswap_v3"]["fee"], min_profit, 0)
        try:
            return devnet.client.call("eth_estimateGas", {"from": KEEPER, "to": flash,
                                                          "data": "0x" + data.hex()})
        except DevnetRpcError as exc:  # the node's revert, with its data
            return exc

    refused = estimate(10**30)
    assert isinstance(refused, Exception) and NOT_ENOUGH_PROFIT[2:] in str(refused), refused
    assert isinstance(estimate(1), str)  # the same liquidation clears a small bound


async def test_an_inclusion_a_start_did_not_book_is_booked_at_the_next_start(
        devnet: Devnet, tmp_path: Path, run_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settled at a start before any block gave its prices, an inclusion is booked at the
    first evaluated block (its row says `profit_usd=pending` until then); a start that ended
    before that block left it out of the P&L for good. The next start reads its receipt
    again and books it — and tells it then, with its profit (it was told at once, its profit
    null, and never again: a by-hand trial)."""
    from keeperd.execution.executor import Executor

    told: list[tuple[str, str, Any]] = []
    tell = Executor._event

    def recording(self: Executor, kind: str, key: Any, account: str, block: int | None,
                  details: dict[str, Any]) -> None:
        told.append((kind, str(key), details.get("profit_usd")))
        tell(self, kind, key, account, block, details)

    monkeypatch.setattr(Executor, "_event", recording)
    fund_keeper(devnet)
    config = config_for(devnet, tmp_path, "liquidate",
                        key={"source": "env", "env": "KEEPER_KEY"})
    first = await run_daemon(config)
    await first.evaluated_at(devnet.client.block_number())
    devnet.set_price("WETH", 2100.0)
    await first.evaluated_at(devnet.mine(1))
    journal = first.daemon.executors["aave"].journal
    included = (await journal.by_status(J.INCLUDED))[:3]
    assert included and all(e.realised_profit_usd is not None for e in included)
    hashes = {e.key: (await journal.txs(e.key))[-1].tx_hash for e in included}
    first.stop.set()
    await first.task
    # The rows as a start cut short leaves them: settled, not booked.
    from keeperd.storage.db import STATE_FILE, SqliteDatabase

    db = SqliteDatabase.open(config.state_dir / STATE_FILE)
    try:
        for key, tx_hash in hashes.items():
            await db.execute("UPDATE liquidations SET realised_profit_usd = NULL, detail = $1 "
                             "WHERE key = $2", f"tx={tx_hash} profit_usd=pending (settled at "
                             "start)", key)
    finally:
        await db.close()
    told.clear()
    second = await run_daemon(config)
    await second.evaluated_at(devnet.mine(1))
    for e in included:
        again = await second.daemon.executors["aave"].journal.get(e.key)
        assert again is not None and again.realised_profit_usd == pytest.approx(
            e.realised_profit_usd, abs=0.05), (again, e)
        assert "pending" not in (again.detail or "")
        assert [p for kind, key, p in told if kind == "included" and key == e.key] == [
            round(again.realised_profit_usd, 2)], told


async def test_a_lost_races_gas_a_start_did_not_book_is_booked_at_the_next_start(
        devnet: Devnet, tmp_path: Path, run_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """As an inclusion (above), a revert's or a mined cancel's gas settled at a start before
    any block gave the native price is booked at the first evaluated block; a start that ended
    before it left that loss out of the P&L for good (a race lost: its row's reason replaced
    the mark that said so). The next start reads the receipt again and books it."""
    from keeperd.execution.executor import Executor

    fund_keeper(devnet)
    config = config_for(devnet, tmp_path, "liquidate",
                        key={"source": "env", "env": "KEEPER_KEY"})
    victim = await lose_a_race(devnet, await run_daemon(config), stopped=True)
    # Mined while it was down: settled by the next start, which ends before booking it.
    with monkeypatch.context() as patch:
        async def ended_first(self: Executor, result: object) -> None:
            return None

        patch.setattr(Executor, "_book_settled_at_start", ended_first)
        second = await run_daemon(config)
        await second.evaluated_at(devnet.client.block_number())
        journal = second.daemon.executors["aave"].journal
        [lost] = [e for e in await journal.all() if e.account == victim]
        second.stop.set()
        await second.task
    assert lost.status == J.LOST_RACE and lost.winner == COMPETITOR, lost
    assert lost.realised_profit_usd is None and "profit_usd=pending" in (lost.detail or "")
    third = await run_daemon(config)
    await third.evaluated_at(devnet.mine(1))
    again = await third.daemon.executors["aave"].journal.get(lost.key)
    assert again is not None and again.realised_profit_usd is not None
    assert again.realised_profit_usd < 0  # (its gas)
    assert metric_value(third.daemon.metrics, "keeperd_liquidation_loss_usd_total", {
        "chain": "devnet", "protocol": "aave"}) == pytest.approx(-again.realised_profit_usd)
