"""Rules keeperd does not know for sure, on the devnet: a pool whose implementation keeperd
does not recognise (a fork, or an upgrade not yet published) is liquidated on the chain's word
(`unknown_revision: verify`, the default), or not at all (`hold`); identity is by code, and an
upgrade under a running daemon is seen in the block it happens."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from keeperd.chain.multicall import Multicall
from keeperd.chain.rpc import RpcPool
from keeperd.config import parse_config
from keeperd.devnet.handle import Devnet
from keeperd.devnet.implementations import built_implementation
from keeperd.execution import journal as J
from keeperd.protocols.aave_v3.identity import IMPLEMENTATION_SLOT, built_fingerprints
from keeperd.protocols.aave_v3.reader import AaveV3Reader
from tests.alert_fakes import Webhook
from tests.conftest import metric_value
from tests.keeper_harness import (  # noqa: F401 - fixtures
    KEEPER_KEY,
    chain_health,
    config_for,
    fund_keeper,
    keeper_key_env,
)

FORK_IMPLEMENTATION = "0x00000000000000000000000000000000000f0e4b"


def run_unrecognised_code(devnet: Devnet) -> str:
    """Point the pool proxy at a copy of its implementation keeperd cannot recognise: the same
    logic (the pool works exactly as before) with one byte after its metadata, so its
    fingerprint is no devnet build's and its address no published one — a fork's code that
    answers POOL_REVISION 10 as far as keeperd can tell."""
    pool = devnet.manifest["aave_v3"]["pool"]
    slot = devnet.client.call("eth_getStorageAt", pool, IMPLEMENTATION_SLOT, "latest")
    code = devnet.client.call("eth_getCode", "0x" + str(slot)[-40:], "latest")
    devnet.client.call("anvil_setCode", FORK_IMPLEMENTATION, str(code) + "00")
    devnet.client.call("anvil_setStorageAt", pool, IMPLEMENTATION_SLOT,
                       "0x" + FORK_IMPLEMENTATION[2:].rjust(64, "0"))
    return FORK_IMPLEMENTATION


def config(devnet: Devnet, tmp_path: Path, webhook: Webhook, **aave: object):
    """Liquidate mode with the pool pinned, as an operator must for code keeperd does not
    recognise (config/mainnet/sparklend-ethereum.yaml does)."""
    aave = {"pool": devnet.manifest["aave_v3"]["pool"], **aave}
    return parse_config({
        "state_dir": str(tmp_path / "state"),
        "chains": [{"name": "devnet", "chain_id": 31337,
                    "rpc_urls": [devnet.manifest["rpc_url"]],
                    "confirmations": 0, "poll_interval": 0.1}],
        "protocols": [{"kind": "aave_v3", "name": "aave", "chain": "devnet",
                       "addresses_provider": devnet.manifest["aave_v3"]["addresses_provider"],
                       "cross_check_every": 1, **aave}],
        "keeper": {"mode": "liquidate", "min_profit_usd": 1.0,
                   "key": {"source": "env", "env": "KEEPER_KEY"}},
        "alerts": {"routes": [{"name": "ops", "sinks": [
            {"kind": "webhook", "url": webhook.url, "secret": "${WEBHOOK_SECRET}"}]}]},
        "metrics": {"enabled": False},
    }, env={"KEEPER_KEY": KEEPER_KEY, "WEBHOOK_SECRET": "w" * 32})


async def told(webhook: Webhook, rule: str, limit_s: float = 15) -> list[dict]:  # type: ignore[type-arg]
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        found = [b for _, b in webhook.received if b.get("rule") == rule]
        if found:
            await asyncio.sleep(0.5)  # (a second one, if any, would come with the next scans)
            return [b for _, b in webhook.received if b.get("rule") == rule]
        await asyncio.sleep(0.1)
    return []


async def test_the_devnet_pools_are_recognised_by_their_code(aave_devnet: Devnet) -> None:
    """Each devnet's pool is a build keeperd knows (the table is what the devnets build) and
    its rules are known; on code keeperd does not recognise the same revision is not."""
    built = built_implementation(aave_devnet)
    assert built_fingerprints()[built["fingerprint"]] == (built["revision"], built["release"])
    m = aave_devnet.manifest
    async with RpcPool.from_urls("devnet", [m["rpc_url"]]) as pool:
        reader = await AaveV3Reader.resolve(Multicall(pool, address=m["multicall3"]),
                                            m["aave_v3"]["addresses_provider"], chain_id=31337)
        market = await reader.read_market(aave_devnet.client.block_number())
        assert market.rules.known and market.rules.revision == built["revision"]
        assert market.implementation is not None
        assert market.implementation.recognised_as == f"built: {built['release']}"
        # An upgrade under the running reader: seen in the block it happens.
        run_unrecognised_code(aave_devnet)
        upgraded = await reader.read_market(aave_devnet.mine(1))
        assert upgraded.implementation is not None
        assert upgraded.implementation.address.lower() == FORK_IMPLEMENTATION
        assert not upgraded.implementation.recognised
        assert upgraded.rules.revision == built["revision"] and not upgraded.rules.known
        assert "code not recognised" in upgraded.rules.release


def relink(devnet: Devnet, change: str | None = None) -> list[str]:
    """Point the pool proxy at a copy of its implementation linked to copies of its libraries,
    each at a new address (their addresses in every copy rewritten): another deployment of the
    same code — unless `change` names a library address whose copy gets one more byte
    before its metadata (a changed LiquidationLogic, as far as a fingerprint can tell).
    Returns the libraries' addresses."""
    from keeperd.chain.code import library_addresses, strip_metadata

    pool = devnet.manifest["aave_v3"]["pool"]
    slot = devnet.client.call("eth_getStorageAt", pool, IMPLEMENTATION_SLOT, "latest")
    implementation = "0x" + str(slot)[-40:]

    def code_of(address: str) -> bytes:
        return bytes.fromhex(str(devnet.client.call("eth_getCode", address, "latest"))[2:])

    code = code_of(implementation)
    libraries = [a for a in library_addresses(code) if code_of(a)]
    assert len(libraries) >= 4, libraries  # (Supply, Borrow, Liquidation, Pool logic, ...)
    moved = {old: "0x" + f"{0xf1b0000 + i:040x}" for i, old in enumerate(libraries)}

    def rewritten(raw: bytes) -> str:
        text = raw.hex()
        for old, new in moved.items():
            text = text.replace(old[2:].lower(), new[2:])
        return "0x" + text

    for old, new in moved.items():
        raw = code_of(old)
        if old == change:
            body = strip_metadata(raw)
            raw = body + b"\x00" + raw[len(body):]
        devnet.client.call("anvil_setCode", new, rewritten(raw))
    devnet.client.call("anvil_setCode", FORK_IMPLEMENTATION, rewritten(code))
    devnet.client.call("anvil_setStorageAt", pool, IMPLEMENTATION_SLOT,
                       "0x" + FORK_IMPLEMENTATION[2:].rjust(64, "0"))
    return libraries


async def test_a_pool_linked_to_changed_libraries_is_not_recognised(aave_devnet: Devnet) -> None:
    """Aave's Pool keeps its rules in libraries it delegatecalls (LiquidationLogic, ...),
    linked by address — the addresses a fingerprint zeroes to be the same for every
    deployment. A pool linked to a changed LiquidationLogic passed as the v3.6 keeperd tested,
    sent unverified liquidations, and lost $254k on a devnet (a by-hand trial). The libraries'
    code is fingerprinted with the pool's: another deployment of the same libraries is
    recognised, one changed library is not."""
    m = aave_devnet.manifest
    built = built_implementation(aave_devnet)
    async with RpcPool.from_urls("devnet", [m["rpc_url"]]) as pool:
        reader = await AaveV3Reader.resolve(Multicall(pool, address=m["multicall3"]),
                                            m["aave_v3"]["addresses_provider"], chain_id=31337)
        snap = aave_devnet.snapshot()
        libraries = relink(aave_devnet)  # (the same libraries, deployed elsewhere)
        market = await reader.read_market(aave_devnet.mine(1))
        assert market.implementation is not None
        assert market.implementation.address.lower() == FORK_IMPLEMENTATION
        assert market.implementation.recognised_as == f"built: {built['release']}"
        assert market.rules.known
        aave_devnet.revert(snap)
        for library in libraries:  # (each one changed in turn: LiquidationLogic among them)
            snap = aave_devnet.snapshot()
            relink(aave_devnet, change=library)
            fresh = await AaveV3Reader.resolve(Multicall(pool, address=m["multicall3"]),
                                               m["aave_v3"]["addresses_provider"],
                                               chain_id=31337)
            market = await fresh.read_market(aave_devnet.mine(1))
            assert market.implementation is not None
            assert not market.implementation.recognised, library
            assert not market.rules.known and "code not recognised" in market.rules.release
            aave_devnet.revert(snap)


async def test_unrecognised_rules_are_liquidated_on_the_chains_word(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """A 30 % WETH crash on a pool whose code keeperd does not recognise: at least 95 % of the
    accounts under water are liquidated, none reverts, every send was confirmed by the pool's
    own health and a simulated outcome that pays, and `revision_unverified` is told once."""
    run_unrecognised_code(devnet)
    devnet.mine(1)
    fund_keeper(devnet)
    borrowers = [b["address"] for b in devnet.manifest["borrowers"]]
    webhook = Webhook()
    try:
        keeper = await run_daemon(config(devnet, tmp_path, webhook))
        await keeper.evaluated_at(devnet.client.block_number())
        executor = keeper.daemon.executors["aave"]
        assert executor.adapter.liquidation_hold(executor._last.book) is None
        devnet.client.call("evm_setAutomine", False)
        try:
            devnet.set_price_async("WETH", 2100.0)
            crash = devnet.mine(1)
            underwater = {a for a in borrowers if chain_health(devnet, a) < 1.0}
            assert len(underwater) > 20
            await keeper.evaluated_at(crash)
            for _ in range(3):  # the first wave lands; what follows it (multi-debt) too
                await keeper.evaluated_at(devnet.mine(1))
        finally:
            devnet.client.call("evm_setAutomine", True)
        journal = executor.journal
        included = await journal.by_status(J.INCLUDED)
        assert await journal.by_status(J.REVERTED) == []
        liquidated = {e.account for e in included}
        assert liquidated <= underwater
        assert len(liquidated) >= 0.95 * len(underwater), (len(liquidated), len(underwater))
        # Every send was confirmed by the chain (the pool's health below 1, the simulated
        # outcome paying): each one sent is counted as sent under verification.
        sent = [e for e in await journal.all() if e.status != J.DRY_RUN]
        labels = {"chain": "devnet", "protocol": "aave"}
        metrics = keeper.daemon.metrics
        assert sent and metric_value(metrics, "keeperd_liquidations_total",
                                     {**labels, "stage": "sent"}) == len(sent)
        assert metric_value(metrics, "keeperd_liquidations_verified_total",
                            {**labels, "outcome": "sent"}) == len(sent)
        assert metric_value(metrics, "keeperd_liquidations_under_verification", labels) == 1
        assert metric_value(metrics, "keeperd_liquidations_held", labels) == 0
        firing = [b for b in await told(webhook, "revision_unverified")
                  if b["status"] == "firing"]
        assert len(firing) == 1 and firing[0]["severity"] == "warning"
        assert "POOL_REVISION 10" in str(firing[0])
    finally:
        webhook.close()


async def test_known_rules_never_run_against_a_real_pool_are_verified_too(
        devnet: Devnet, tmp_path: Path, run_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ethereum Core runs v3.7, recognised by Aave's published POOL_IMPL: keeperd's rules for
    it come from the sources by hand (its package is not published), and they went out
    unverified (a by-hand trial). A revision known but not tested is verified like an
    unknown one. The devnet's v3.6 stands in for it here, taken out of the tested ones."""
    from keeperd.protocols.aave_v3 import revisions

    monkeypatch.setattr(revisions, "TESTED_REVISIONS", frozenset({1}))
    fund_keeper(devnet)
    webhook = Webhook()
    try:
        keeper = await run_daemon(config(devnet, tmp_path, webhook))
        await keeper.evaluated_at(devnet.client.block_number())
        executor = keeper.daemon.executors["aave"]
        book = executor._last.book
        assert book.market.implementation is not None
        assert book.market.implementation.recognised_as == "built: v3.6"  # (known code)
        assert "has not run them against a real pool" in str(
            executor.adapter.liquidation_verification(book))
        assert "aave: each liquidation sent only on the chain's word" in \
            keeper.daemon._status_line()
        devnet.set_price("WETH", 2100.0)
        await keeper.evaluated_at(devnet.client.block_number())
        for _ in range(2):
            await keeper.evaluated_at(devnet.mine(1))
        journal = executor.journal
        sent = [e for e in await journal.all() if e.status != J.DRY_RUN]
        assert len(sent) > 20 and await journal.by_status(J.REVERTED) == []
        labels = {"chain": "devnet", "protocol": "aave"}
        assert metric_value(keeper.daemon.metrics, "keeperd_liquidations_verified_total",
                            {**labels, "outcome": "sent"}) == len(sent)
        firing = [b for b in await told(webhook, "revision_unverified")
                  if b["status"] == "firing"]
        assert len(firing) == 1 and "not run them against a real pool" in str(firing[0])
    finally:
        webhook.close()


async def test_a_verified_outcome_that_pays_less_than_planned_is_a_refusal_told(
        devnet: Devnet, tmp_path: Path, run_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under verification, a liquidation whose simulated outcome pays far less than its plan
    is refused and said so (counted `verification_refused`, logged with both figures): on a
    pool whose changed code paid 9 % less, 192 of them were counted unprofitable, nothing
    logged (a by-hand trial). Here the plans are priced far above what the pool pays."""
    import structlog

    from keeperd.protocols.aave_v3 import revisions
    from keeperd.protocols.aave_v3.liquidator import AaveLiquidator

    monkeypatch.setattr(revisions, "TESTED_REVISIONS", frozenset({1}))
    planned = AaveLiquidator.plan

    def overpriced(self: Any, result: Any, accounts: set[str]) -> Any:
        return [replace(o, gross_profit_usd=o.gross_profit_usd * 10**7)
                for o in planned(self, result, accounts)]

    monkeypatch.setattr(AaveLiquidator, "plan", overpriced)
    fund_keeper(devnet)
    webhook = Webhook()
    try:
        base = config(devnet, tmp_path, webhook)
        keeper = await run_daemon(base.model_copy(update={"keeper": base.keeper.model_copy(
            update={"min_profit_usd": 10.0**9})}))
        await keeper.evaluated_at(devnet.client.block_number())
        with structlog.testing.capture_logs() as logs:
            devnet.set_price("WETH", 2100.0)
            await keeper.evaluated_at(devnet.client.block_number())
        refused = [e for e in logs if e["event"] == "liquidation.verification_refused"]
        assert len(refused) > 20, len(refused)
        assert refused[0]["reason"].startswith("the simulated outcome does not pay")
        assert refused[0]["planned_profit_usd"] > 1000 * refused[0]["simulated_profit_usd"]
        labels = {"chain": "devnet", "protocol": "aave"}
        assert metric_value(keeper.daemon.metrics, "keeperd_liquidations_verified_total",
                            {**labels, "outcome": "refused"}) == len(refused)
        assert await keeper.daemon.executors["aave"].journal.all() == []
    finally:
        webhook.close()


async def test_a_dry_run_counts_what_the_chain_confirmed(
        devnet: Devnet, tmp_path: Path, run_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """dry-run under verification: what the chain confirmed (and keeperd only recorded) is
    counted, outcome `dry_run` (the counter stayed at 0 in a by-hand trial's dry run, where
    an operator checks verification before trusting it with money)."""
    from keeperd.protocols.aave_v3 import revisions

    monkeypatch.setattr(revisions, "TESTED_REVISIONS", frozenset({1}))
    fund_keeper(devnet)
    webhook = Webhook()
    try:
        base = config(devnet, tmp_path, webhook)
        dry = base.model_copy(update={"keeper": base.keeper.model_copy(
            update={"mode": "dry-run"})})
        keeper = await run_daemon(dry)
        await keeper.evaluated_at(devnet.client.block_number())
        devnet.set_price("WETH", 2100.0)
        await keeper.evaluated_at(devnet.client.block_number())
        await keeper.evaluated_at(devnet.mine(1))
        journal = keeper.daemon.executors["aave"].journal
        recorded = await journal.all()
        assert len(recorded) > 20 and all(e.status == J.DRY_RUN for e in recorded)
        labels = {"chain": "devnet", "protocol": "aave"}
        metrics = keeper.daemon.metrics
        assert metric_value(metrics, "keeperd_liquidations_verified_total",
                            {**labels, "outcome": "dry_run"}) == len(recorded)
        with pytest.raises(AssertionError, match="no series"):  # (nothing sent)
            metric_value(metrics, "keeperd_liquidations_verified_total",
                         {**labels, "outcome": "sent"})
    finally:
        webhook.close()


def test_an_operator_accepting_an_untested_revision_trusts_it() -> None:
    from keeperd.protocols.aave_v3.revisions import TESTED_REVISIONS, rules_for

    assert 11 not in TESTED_REVISIONS
    assert rules_for(11).known and not rules_for(11).tested
    assert rules_for(11, {11}).tested and rules_for(10).tested and rules_for(1).tested
    assert not rules_for(99).known and not rules_for(99).tested


async def test_unrecognised_rules_under_hold_send_nothing(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    run_unrecognised_code(devnet)
    devnet.mine(1)
    fund_keeper(devnet)
    webhook = Webhook()
    try:
        keeper = await run_daemon(config(devnet, tmp_path, webhook, unknown_revision="hold"))
        await keeper.evaluated_at(devnet.client.block_number())
        devnet.set_price("WETH", 2100.0)
        crash = devnet.client.block_number()
        assert any(chain_health(devnet, b["address"]) < 1.0
                   for b in devnet.manifest["borrowers"])
        await keeper.evaluated_at(devnet.mine(1))
        assert crash > 0
        executor = keeper.daemon.executors["aave"]
        assert await executor.journal.all() == []
        labels = {"chain": "devnet", "protocol": "aave"}
        assert metric_value(keeper.daemon.metrics, "keeperd_liquidations_held", labels) == 1
        assert "aave: liquidations held (POOL_REVISION 10" in keeper.daemon._status_line()
        assert metric_value(keeper.daemon.metrics, "keeperd_liquidations_total",
                            {**labels, "stage": "held"}) > 0
        held = [b for b in await told(webhook, "liquidations_held") if b["status"] == "firing"]
        assert held and "unknown_revision: hold" in str(held[0])
    finally:
        webhook.close()


async def test_an_unrecognised_pool_found_by_asking_is_not_approved(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """#28 item 1: a pool keeperd found through the provider (not pinned) gets the keeper's
    approvals only if its code is a deployment keeperd knows; unrecognised code must be pinned
    by the operator, who has checked it. Nothing is approved — and the daemon runs, saying so
    (it refused to start, while a running daemon seeing the same upgrade went on approving:
    the first restart after an upgrade left the keeper down, a by-hand trial)."""
    from tests.faults.test_lying_pool_address import allowance

    run_unrecognised_code(devnet)
    devnet.mine(1)
    fund_keeper(devnet)
    webhook = Webhook()
    try:
        keeper = await run_daemon(config(devnet, tmp_path, webhook, pool=None))
        await keeper.evaluated_at(devnet.mine(1))
        executor = keeper.daemon.executors["aave"]
        await executor.liquidator.keep_allowances(devnet.client.block_number(),
                                                  executor._last.book)
        # Told in the revision's alert (not as liquidations held: verified ones and flash
        # ones go on — "keeperd sends nothing" was said while 58 went out, a by-hand trial).
        assert executor.liquidator.approvals_held() is not None
        assert executor.liquidator.hold() is None
        unverified = [b for b in await told(webhook, "revision_unverified")
                      if b["status"] == "firing"]
        assert unverified and "until `protocols[aave].pool` is set" in str(unverified[0])
        assert not [b for b in await told(webhook, "liquidations_held")]
    finally:
        webhook.close()
    pool = devnet.manifest["aave_v3"]["pool"]
    assert all(allowance(devnet, token, pool) == 0
               for token in devnet.manifest["tokens"].values())

    # A pool upgraded under a running daemon to code it does not recognise: no approval
    # more from then on, the same rule.
    from keeperd.protocols.aave_v3.liquidator import AaveLiquidator

    liquidator: Any = AaveLiquidator.__new__(AaveLiquidator)
    liquidator.adapter = SimpleNamespace(config=SimpleNamespace(
        pool=None, addresses_provider="0xprovider"), name="aave",
        reader=SimpleNamespace(addresses=SimpleNamespace(pool="0xpool")))
    liquidator._approvals_held = None
    liquidator.config = SimpleNamespace(capital="own-balance")
    known = SimpleNamespace(rules=SimpleNamespace(known=True))
    unknown = SimpleNamespace(rules=SimpleNamespace(known=False))
    liquidator._note_approval_hold(known)
    assert liquidator.approvals_held() is None
    liquidator.config = SimpleNamespace(capital="flash-loan")  # (nothing to approve)
    liquidator._note_approval_hold(unknown)
    assert liquidator.approvals_held() is None
    liquidator.config = SimpleNamespace(capital="auto")
    liquidator._note_approval_hold(unknown)
    assert "approvals of it are held" in str(liquidator.approvals_held())
    liquidator._note_approval_hold(known)
    assert liquidator.approvals_held() is None


async def test_check_config_asks_whether_the_endpoints_serve_eth_simulate_v1(
        devnet: Devnet) -> None:
    """Verified liquidations are simulated with eth_simulateV1: an endpoint without it fails
    every one (nothing sent). check-config asks each endpoint when a protocol will verify: a
    warning for some, an error when none serves it."""
    from aiohttp import web

    from keeperd.checks import simulate_support_issues
    from tests.conftest import serve

    async def without(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "error": {
            "code": -32601, "message": "the method eth_simulateV1 does not exist/is not "
            "available"}})

    app = web.Application()
    app.router.add_post("/", without)
    async with serve(app) as old_node:
        async with RpcPool.from_urls("devnet", [devnet.manifest["rpc_url"], old_node]) as pool:
            errors, warnings = await simulate_support_issues(pool, 0, ["aave"])
        assert errors == [] and [w.path for w in warnings] == ["chains[0].rpc_urls[1]"]
        assert "does not serve eth_simulateV1" in warnings[0].message
        async with RpcPool.from_urls("devnet", [old_node]) as pool:
            errors, warnings = await simulate_support_issues(pool, 0, ["aave"])
        assert [e.path for e in errors] == ["chains[0].rpc_urls[0]"] and warnings == []
        async with RpcPool.from_urls("devnet", [devnet.manifest["rpc_url"]]) as pool:
            assert await simulate_support_issues(pool, 0, ["aave"]) == ([], [])
        # A flash seller without verification: a warning even when no endpoint serves it
        # (only a block's first sale through a pool goes; the rest wait).
        async with RpcPool.from_urls("devnet", [old_node]) as pool:
            errors, warnings = await simulate_support_issues(pool, 0, [], ["aave"])
        assert errors == [] and [w.path for w in warnings] == ["chains[0].rpc_urls[0]"]
        assert "only the first sale through a pool goes each block" in warnings[0].message
        from keeperd.checks import flash_sellers

        config = config_for(devnet, Path("/tmp/unused"), "liquidate", capital="flash-loan",
                            key={"source": "env", "env": "KEEPER_KEY"},
                            flash_liquidator=devnet.manifest["flash_liquidator"]["address"],
                            uniswap_v3_factory=devnet.manifest["uniswap_v3"]["factory"])
        assert flash_sellers(config, "devnet") == ["aave"]
        assert flash_sellers(config.model_copy(update={"keeper": config.keeper.model_copy(
            update={"capital": "own-balance"})}), "devnet") == []
        assert flash_sellers(config, "elsewhere") == []
