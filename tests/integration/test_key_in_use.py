"""Two keepers on one key (two state directories, or a wallet of the operator's): keeperd sees
a transaction from its address that it did not sign, alerts `key_in_use_elsewhere`, and holds
new liquidations until the other sender has been quiet for a while — instead of fighting it for
nonces ("nonce too low", dropped and replanned liquidations)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from keeperd.config import parse_config
from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from keeperd.execution.txmanager import FOREIGN_QUIET_BLOCKS
from tests.alert_fakes import Webhook
from tests.conftest import metric_value
from tests.keeper_harness import (  # noqa: F401 - fixtures
    KEEPER,
    KEEPER_KEY,
    chain_health,
    fund_keeper,
    keeper_key_env,
)
from tests.sigkill_harness import keeper_in_mempool


async def told(webhook: Webhook, rule: str, status: str, limit_s: float = 10) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if any(b.get("rule") == rule and b.get("status") == status
               for _, b in webhook.received):
            return True
        await asyncio.sleep(0.1)
    return False


def key_config(devnet: Devnet, tmp_path: Path, webhook: Webhook,
               allowed: list[str] | None = None) -> Any:
    """Aave in liquidate mode on the tests' keeper, its alerts to `webhook`."""
    return parse_config({
        "state_dir": str(tmp_path / "state"),
        "chains": [{"name": "devnet", "chain_id": 31337,
                    "rpc_urls": [devnet.manifest["rpc_url"]],
                    "confirmations": 0, "poll_interval": 0.1}],
        "protocols": [{"kind": "aave_v3", "name": "aave", "chain": "devnet",
                       "addresses_provider": devnet.manifest["aave_v3"]["addresses_provider"]}],
        "keeper": {"mode": "liquidate", "min_profit_usd": 1.0,
                   "key": {"source": "env", "env": "KEEPER_KEY"},
                   "allowed_delegates": allowed or []},
        "alerts": {"routes": [{"name": "ops", "sinks": [
            {"kind": "webhook", "url": webhook.url, "secret": "${WEBHOOK_SECRET}"}]}]},
        "metrics": {"enabled": False},
    }, env={"KEEPER_KEY": KEEPER_KEY, "WEBHOOK_SECRET": "w" * 32})


async def test_another_sender_on_the_key_is_told_and_waited_out(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    fund_keeper(devnet)
    webhook = Webhook()
    config = key_config(devnet, tmp_path, webhook)
    try:
        keeper = await run_daemon(config)
        await keeper.evaluated_at(devnet.client.block_number())
        # The other sender: a transfer from the keeper's address keeperd did not sign.
        devnet.client.call("eth_sendTransaction", {"from": KEEPER, "to": KEEPER, "value": "0x1"})
        seen = devnet.client.block_number()
        await keeper.evaluated_at(devnet.mine(1))
        metrics = keeper.daemon.metrics
        assert metric_value(metrics, "keeperd_keeper_foreign_transactions_total",
                            {"chain": "devnet"}) == 1
        await keeper.daemon._alert_tick()
        assert await told(webhook, "key_in_use_elsewhere", "firing")
        # A crash meanwhile: found, evaluated, not sent.
        devnet.set_price("WETH", 2100.0)
        underwater = {b["address"] for b in devnet.manifest["borrowers"]
                      if chain_health(devnet, b["address"]) < 1.0}
        assert len(underwater) > 20
        await keeper.evaluated_at(devnet.mine(1))
        journal = keeper.daemon.executors["aave"].journal
        assert await journal.all() == []
        labels = {"chain": "devnet", "protocol": "aave"}
        assert metric_value(metrics, "keeperd_liquidations_total",
                            {**labels, "stage": "held"}) > 0
        # Quiet for long enough: liquidations go, and nothing more is counted as foreign.
        while devnet.client.block_number() < seen + FOREIGN_QUIET_BLOCKS + 1:
            await keeper.evaluated_at(devnet.mine(1))
        for _ in range(3):
            await keeper.evaluated_at(devnet.mine(1))
        included = {e.account for e in await journal.by_status(J.INCLUDED)}
        assert len(included) >= 0.9 * len(underwater)
        assert metric_value(metrics, "keeperd_keeper_foreign_transactions_total",
                            {"chain": "devnet"}) == 1
        await keeper.daemon._alert_tick()
        assert await told(webhook, "key_in_use_elsewhere", "resolved")
    finally:
        webhook.close()


# anvil's default mnemonic, account 0 (a published test key): a sponsor, as a drainer's
# relayer would be: the keeper's key signs only the authorization.
SPONSOR_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ZERO = "0x0000000000000000000000000000000000000000"


def delegate(devnet: Devnet, to: str, tip_gwei: int = 1) -> None:
    """The keeper's address delegated (EIP-7702) to `to` (the zero address: revoked), by an
    authorization the keeper's key signs (for its next nonce) and another account sends."""
    from eth_account import Account

    keeper, sponsor = Account.from_key(KEEPER_KEY), Account.from_key(SPONSOR_KEY)
    client = devnet.client
    nonce = int(client.call("eth_getTransactionCount", KEEPER, "latest"), 16)
    authorization = keeper.sign_authorization({"chainId": 31337, "address": to, "nonce": nonce})
    base = int(client.call("eth_getBlockByNumber", "latest", False)["baseFeePerGas"], 16)
    tx = {"type": 4, "chainId": 31337, "to": sponsor.address, "value": 0, "data": "0x",
          "nonce": int(client.call("eth_getTransactionCount", sponsor.address, "pending"), 16),
          "gas": 100_000, "maxFeePerGas": 2 * base + tip_gwei * 10**9,
          "maxPriorityFeePerGas": tip_gwei * 10**9,
          "authorizationList": [authorization]}
    client.call("eth_sendRawTransaction",
                "0x" + sponsor.sign_transaction(tx).raw_transaction.hex())
    client.mine(1)
    code = client.call("eth_getCode", KEEPER, "latest")
    assert code == ("0x" if to == ZERO else "0xef0100" + to[2:].lower()), code


async def test_a_delegated_keeper_address_sends_nothing_until_revoked(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """A 7702 drainer's pattern: the key signed an authorization, someone else sent it. Unlike
    another sender, waiting 10 quiet blocks does not end the hold: the delegate's code stays
    until revoked."""
    fund_keeper(devnet)
    webhook = Webhook()
    try:
        keeper = await run_daemon(key_config(devnet, tmp_path, webhook))
        await keeper.evaluated_at(devnet.client.block_number())
        metrics = keeper.daemon.metrics
        assert metric_value(metrics, "keeperd_keeper_address_runs_code",
                            {"chain": "devnet"}) == 0
        drainer = devnet.manifest["aave_v3"]["pool"]  # (any contract: its code is the point)
        delegate(devnet, drainer)
        await keeper.evaluated_at(devnet.mine(1))
        assert metric_value(metrics, "keeperd_keeper_address_runs_code",
                            {"chain": "devnet"}) == 1
        await keeper.daemon._alert_tick()
        assert await told(webhook, "key_in_use_elsewhere", "firing")
        firing = [b for _, b in webhook.received if b.get("rule") == "key_in_use_elsewhere"]
        assert "delegated (EIP-7702)" in json.dumps(firing)
        devnet.set_price("WETH", 2100.0)
        underwater = {b["address"] for b in devnet.manifest["borrowers"]
                      if chain_health(devnet, b["address"]) < 1.0}
        assert len(underwater) > 20
        # Held past the quiet blocks that end another sender's hold.
        for _ in range(FOREIGN_QUIET_BLOCKS + 2):
            await keeper.evaluated_at(devnet.mine(1))
        journal = keeper.daemon.executors["aave"].journal
        assert await journal.all() == []
        assert metric_value(metrics, "keeperd_liquidations_total",
                            {"chain": "devnet", "protocol": "aave", "stage": "held"}) > 0
        # Revoked: the address is plain again, and after the revocation's own quiet blocks
        # (it moved the nonce too) the liquidations go.
        delegate(devnet, ZERO)
        revoked = devnet.client.block_number()
        await keeper.evaluated_at(devnet.mine(1))
        assert metric_value(metrics, "keeperd_keeper_address_runs_code",
                            {"chain": "devnet"}) == 0
        while devnet.client.block_number() < revoked + FOREIGN_QUIET_BLOCKS + 1:
            await keeper.evaluated_at(devnet.mine(1))
        for _ in range(10):  # (sent, each mined at once, then settled at a next block)
            await keeper.evaluated_at(devnet.mine(1))
            included = {e.account for e in await journal.by_status(J.INCLUDED)}
            if len(included) >= 0.9 * len(underwater):
                break
        assert len(included) >= 0.9 * len(underwater)
        await keeper.daemon._alert_tick()
        assert await told(webhook, "key_in_use_elsewhere", "resolved")
    finally:
        webhook.close()


async def test_a_delegation_found_at_start_holds_unless_the_operator_allowed_it(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    fund_keeper(devnet)
    delegate_to = devnet.manifest["aave_v3"]["pool"]
    delegate(devnet, delegate_to)
    webhook = Webhook()
    try:
        keeper = await run_daemon(key_config(devnet, tmp_path, webhook))
        tx = keeper.daemon.executors["aave"].tx
        assert tx is not None and tx.key_conflict(devnet.client.block_number()) is not None
        assert "at start" in str(tx.key_conflict(devnet.client.block_number()))
        keeper.stop.set()
        await asyncio.wait_for(keeper.task, 10)
        # The operator's own delegate, listed: it signs again — one transaction in flight at
        # a time, as nodes take from a delegated address (geth's and reth's pools refuse a
        # second one: anvil does not, so the test counts what keeperd put in its pool).
        keeper = await run_daemon(key_config(devnet, tmp_path, webhook,
                                                    allowed=[delegate_to]))
        tx = keeper.daemon.executors["aave"].tx
        assert tx is not None and tx.key_conflict(devnet.client.block_number()) is None
        assert tx.delegated and not tx.runs_wave_executor
        assert metric_value(keeper.daemon.metrics, "keeperd_keeper_address_runs_code",
                            {"chain": "devnet"}) == 1
        journal = keeper.daemon.executors["aave"].journal
        devnet.client.call("evm_setAutomine", False)
        try:
            devnet.set_price_async("WETH", 2100.0)
            for _ in range(16):  # (the approvals first, one a block, then a liquidation)
                await keeper.evaluated_at(devnet.mine(1))
                assert keeper_in_mempool(devnet) <= 1
        finally:
            devnet.client.call("evm_setAutomine", True)
        assert len(await journal.by_status(J.INCLUDED)) >= 3
    finally:
        webhook.close()


async def test_a_delegation_taking_a_nonce_keeperd_has_in_flight_is_seen_a_block_later(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """The authorization is signed for the keeper's next nonce — one keeperd signed and has in
    flight — and outbids it: no nonce of another's is mined, so reading the code only then
    never found it (liquidations went on from the drained address). The code is read with
    every block's nonce: the next block holds every signature and alerts."""
    fund_keeper(devnet)
    webhook = Webhook()
    try:
        keeper = await run_daemon(key_config(devnet, tmp_path, webhook))
        await keeper.evaluated_at(devnet.client.block_number())
        executor = keeper.daemon.executors["aave"]
        tx, metrics = executor.tx, keeper.daemon.metrics
        assert tx is not None
        devnet.client.call("evm_setAutomine", False)
        try:
            devnet.set_price_async("WETH", 2100.0)
            await keeper.evaluated_at(devnet.mine(1))
            in_flight = {p.nonce: p for p in tx.pending.values()}
            assert in_flight, "nothing was sent"
            first = min(in_flight)
            assert int(devnet.client.call("eth_getTransactionCount", KEEPER, "latest"),
                       16) == first
            delegate(devnet, devnet.manifest["aave_v3"]["pool"], tip_gwei=500)
            taken = in_flight[first].attempts[-1].tx_hash
            assert devnet.client.call("eth_getTransactionReceipt", taken) is None  # (the
            # authorization took its nonce)
            # (the block's own first wave goes before its read: a block's price-exposed
            # accounts are acted on first; the code is read with the block's full evaluation)
            await keeper.evaluated_at(devnet.client.block_number())
            signed = len(await executor.journal.all())
            # A further drop: more accounts under, none of them sent for.
            devnet.set_price_async("WETH", 1900.0)
            await keeper.evaluated_at(devnet.mine(1))
        finally:
            devnet.client.call("evm_setAutomine", True)
        assert metric_value(metrics, "keeperd_keeper_address_runs_code",
                            {"chain": "devnet"}) == 1
        held = tx.signing_held()
        assert held is not None and "delegated (EIP-7702)" in held.reason
        for _ in range(3):
            await keeper.evaluated_at(devnet.mine(1))
        assert len(await executor.journal.all()) == signed
        assert metric_value(metrics, "keeperd_liquidations_total",
                            {"chain": "devnet", "protocol": "aave", "stage": "held"}) > 0
        await keeper.daemon._alert_tick()
        assert await told(webhook, "key_in_use_elsewhere", "firing")
        firing = [b for _, b in webhook.received if b.get("rule") == "key_in_use_elsewhere"]
        assert "delegated (EIP-7702)" in json.dumps(firing)
        assert "new key" in json.dumps(firing)  # (the delegation's action, not another sender's)
    finally:
        webhook.close()


async def test_curies_margin_deposit_held_by_a_delegation_goes_once_it_is_revoked(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """The key signs nothing while delegated, the margin deposit of Curie's start included;
    it ran at start only, so a revocation left takeovers without margin until a restart.
    Now it is tried again with the allowances (every BALANCE_EVERY_BLOCKS blocks)."""
    from keeperd.execution.executor import BALANCE_EVERY_BLOCKS
    from tests.integration.test_curie import chain_view, curie_config

    fund_keeper(devnet)
    delegate(devnet, devnet.manifest["aave_v3"]["pool"])
    data = curie_config(devnet, tmp_path)
    data["protocols"][0]["keeper_margin_usd"] = 100_000
    data["keeper"] = {"mode": "liquidate", "min_profit_usd": 1.0,
                      "key": {"source": "env", "env": "KEEPER_KEY"}}
    keeper = await run_daemon(parse_config(data, env={"KEEPER_KEY": KEEPER_KEY}))
    vault = devnet.manifest["perp_curie"]["vault"]

    def margin() -> int:
        return int(chain_view(devnet, vault, "Vault", "getBalance", KEEPER))

    await keeper.evaluated_at(devnet.mine(1), protocol="curie")
    assert margin() == 0  # held: nothing signed
    delegate(devnet, ZERO)
    for _ in range(3 * BALANCE_EVERY_BLOCKS):
        await keeper.evaluated_at(devnet.mine(1), protocol="curie")
        if margin() > 0:
            break
    assert margin() == 100_000 * 10**6


async def stopped_mid_crash(devnet: Devnet, tmp_path: Path, run_daemon: Any, webhook: Webhook
                            ) -> tuple[Any, int, list[J.JournalEntry], int]:
    """A funded keeper's crash evaluated with automine off (turned back on by the caller)
    and its liquidations left in the node's pool, the keeper stopped. (A config on a
    mistyped state directory, the crash block, what it left pending, the highest fee cap
    it signed them with.)"""
    fund_keeper(devnet)
    config = key_config(devnet, tmp_path, webhook)
    first = await run_daemon(config)
    await first.evaluated_at(devnet.client.block_number())
    devnet.client.call("evm_setAutomine", False)
    devnet.set_price_async("WETH", 2100.0)
    crash = devnet.mine(1)
    await first.evaluated_at(crash)
    journal = first.daemon.executors["aave"].journal
    pending = await journal.by_status(J.PENDING)
    assert len(pending) > 20
    most = max([t.max_fee_per_gas for e in pending for t in await journal.txs(e.key)])
    first.stop.set()
    await first.task
    return config.model_copy(update={"state_dir": tmp_path / "stat"}), crash, pending, most


async def test_a_start_on_another_state_directory_waits_for_what_is_in_flight(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """Killed in a crash and started again with a typo in its state directory, keeperd's
    journal knows nothing of the liquidations in the node's pool: it sent every one again
    under new nonces, behind the first ones, and each reverted once mined (a by-hand trial:
    27 of 27). It now waits for what it found in the pool at start to be mined."""
    webhook = Webhook()
    try:
        try:
            typo, crash, _, _ = await stopped_mid_crash(devnet, tmp_path, run_daemon, webhook)
            second = await run_daemon(typo)
            await second.evaluated_at(devnet.client.block_number())
            journal = second.daemon.executors["aave"].journal
            assert await journal.all() == []  # (held: nothing planned on the pool's nonces)
            for _ in range(3):
                await second.evaluated_at(devnet.mine(1))
        finally:
            devnet.client.call("evm_setAutomine", True)
        await second.evaluated_at(devnet.mine(1))
        assert await journal.by_status(J.REVERTED) == []
        # What it sent, it sent once the first ones were mined: the positions' rest (a
        # liquidation takes half of a position's debt), included.
        assert {e.status for e in await journal.all()} <= {J.INCLUDED}
        assert all(e.detected_block > crash for e in await journal.all())
        assert metric_value(second.daemon.metrics, "keeperd_liquidations_total", {
            "chain": "devnet", "protocol": "aave", "stage": "held"}) > 0
    finally:
        webhook.close()


async def test_what_the_pool_evicts_holds_a_start_no_longer(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """The same start, the first one's transactions evicted from the pool (a fee spike's
    eviction: nobody bumps them, their keeperd is gone):
    they can never be mined, yet new liquidations waited for them 50 blocks, unalerted, and
    were then signed above a nonce gap. Now the pool's own count, read each block while the
    hold lasts, ends it once they are gone, and signing starts from the first free nonce. The
    empty journal on a key with history is said at start."""
    import structlog

    webhook = Webhook()
    try:
        try:
            typo, _, pending, _ = await stopped_mid_crash(devnet, tmp_path, run_daemon,
                                                          webhook)
            with structlog.testing.capture_logs() as logs:
                second = await run_daemon(typo)
                await second.evaluated_at(devnet.client.block_number())
                journal = second.daemon.executors["aave"].journal
                assert await journal.all() == []  # (held: they are in the pool)
                assert "aave: new liquidations held" in second.daemon._status_line()
                # Evicted (as a fee spike evicts what cannot pay the base fee), never to be
                # mined: dropped from the node's pool. (A spike set with the node's base fee
                # override is global to the session's devnet: not here.)
                content = devnet.client.call("txpool_content")
                evicted = [tx["hash"] for part in ("pending", "queued")
                           for who, txs in (content.get(part) or {}).items()
                           if who.lower() == KEEPER.lower() for tx in txs.values()]
                assert len(evicted) >= len(pending) // 2, (len(evicted), len(pending))
                for tx_hash in evicted:
                    devnet.client.call("anvil_dropTransaction", tx_hash)
                for _ in range(4):
                    await second.evaluated_at(devnet.mine(1))
            events = [e["event"] for e in logs]
            assert "journal.empty_on_a_used_key" in events
            assert "tx.unknown_in_flight_gone" in events, [
                e for e in events if e.startswith("tx.")]
        finally:
            devnet.client.call("evm_setAutomine", True)
        for _ in range(2):
            await second.evaluated_at(devnet.mine(1))
        # Liquidated by the second keeperd from the first free nonce (no gap: all mined).
        entries = await journal.all()
        assert len(entries) >= 0.9 * len(pending), (len(entries), len(pending))
        assert {e.status for e in entries} == {J.INCLUDED}, [
            (e.status, e.detail) for e in entries if e.status != J.INCLUDED]
        assert "held" not in second.daemon._status_line()
    finally:
        webhook.close()


async def test_a_journal_behind_the_keys_history_is_said_at_start(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """A state database restored from a backup knows the key's transactions up to a nonce
    far below the chain's: said at start (a trial's status fell from 167 liquidations to 41,
    with no word). The journal's own liquidations, and a few approvals beside them, are not."""
    import structlog

    from tests.keeper_harness import liquidating

    config, first = await liquidating(devnet, tmp_path, run_daemon)
    devnet.set_price("WETH", 2100.0)
    for _ in range(3):
        await first.evaluated_at(devnet.mine(1))
    journal = first.daemon.executors["aave"].journal
    highest = await journal.highest_nonce({"aave"})
    assert highest is not None and (await journal.by_status(J.INCLUDED))
    first.stop.set()
    await asyncio.wait_for(first.task, 10)
    with structlog.testing.capture_logs() as logs:  # (the same journal: nothing to say)
        again = await run_daemon(config)
        await again.evaluated_at(devnet.client.block_number())
        again.stop.set()
        await asyncio.wait_for(again.task, 10)
    assert "journal.behind_the_key" not in [e["event"] for e in logs]
    # The key goes on elsewhere (another state database): 25 transactions past this journal.
    for _ in range(25):
        devnet.client.send(KEEPER, KEEPER, b"")
    with structlog.testing.capture_logs() as logs:
        behind = await run_daemon(config)
        await behind.evaluated_at(devnet.client.block_number())
    [said] = [e for e in logs if e["event"] == "journal.behind_the_key"]
    assert said["journal_highest_nonce"] == highest
    assert said["transactions"] >= highest + 1 + 25
