"""The promises every protocol keeps, not only Aave: a tripped breaker and a down L2 sequencer
hold Morpho Blue's liquidations as they hold Aave's; a Morpho liquidation journaled but never
signed is planned again (one pending when the daemon is killed: test_morpho.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from keeperd.config import parse_config
from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from keeperd.execution.reconcile import resume_journal
from keeperd.storage.db import SqliteDatabase
from tests.conftest import metric_absent, metric_value, migrated
from tests.integration.test_breaker import SequencerFeed, block_time
from tests.integration.test_morpho import fund
from tests.keeper_harness import (  # noqa: F401 - fixtures
    KEEPER,
    KEEPER_KEY,
    fund_keeper,
    keeper_key_env,
)

ROOT = Path(__file__).resolve().parents[2]


def both_protocols(devnet: Devnet, tmp_path: Path, aave: bool = True,
                   **chain: object):  # type: ignore[no-untyped-def]
    blue = devnet.manifest["morpho_blue"]
    protocols: list[dict[str, object]] = [
        {"kind": "morpho_blue", "name": "morpho", "chain": "devnet", "morpho": blue["morpho"],
         "markets": [m["id"] for m in blue["markets"].values()]}]
    if aave:
        provider = devnet.manifest["aave_v3"]["addresses_provider"]
        protocols.insert(0, {"kind": "aave_v3", "name": "aave", "chain": "devnet",
                             "addresses_provider": provider})
    return parse_config({
        "state_dir": str(tmp_path / "state"),
        "chains": [{"name": "devnet", "chain_id": 31337, "rpc_urls": [devnet.manifest["rpc_url"]],
                    "confirmations": 0, "poll_interval": 0.1, **chain}],
        "protocols": protocols,
        "keeper": {"mode": "liquidate", "min_profit_usd": 1.0,
                   "key": {"source": "env", "env": "KEEPER_KEY"}},
        "oracles": {"clear_after_s": 0},
        "metrics": {"enabled": False}, "risk": {"cascade": {"enabled": False}},
    }, env={"KEEPER_KEY": KEEPER_KEY})


async def evaluated_everywhere(keeper, block: int) -> None:  # type: ignore[no-untyped-def]
    """Every protocol has finished with `block` (evaluation, and liquidation if any)."""
    if "aave" in keeper.daemon.scanners:
        await keeper.evaluated_at(block)
    morpho = keeper.daemon.scanners["morpho"]
    deadline = time.monotonic() + 20
    while morpho.completed_block < block:
        assert time.monotonic() < deadline, f"Morpho did not finish block {block}"
        await asyncio.sleep(0.02)


async def journaled(keeper, protocol: str) -> list[J.JournalEntry]:  # type: ignore[no-untyped-def]
    return [e for e in await keeper.daemon.executors["morpho"].journal.all()
            if e.protocol == protocol]


async def test_a_tripped_breaker_holds_aave_and_morpho_until_reset(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    fund_keeper(devnet)
    fund(devnet, KEEPER)
    keeper = await run_daemon(both_protocols(devnet, tmp_path))
    await evaluated_everywhere(keeper, devnet.client.block_number())
    breaker = keeper.daemon.chains["devnet"].prices.breaker
    await breaker.trip("WETH", "operator: testing", manual=True)
    devnet.set_price("WETH", 2100.0)  # Aave's feed and Morpho's WETH/USDC oracle
    await evaluated_everywhere(keeper, devnet.mine(1))
    aave_book = keeper.daemon.scanners["aave"].view
    morpho_book = keeper.daemon.scanners["morpho"].book
    assert aave_book is not None and (aave_book.health < 1).sum() > 20
    assert morpho_book is not None and sum(morpho_book.health(p) < 1
                                           for p in morpho_book.positions) >= 3
    assert (await journaled(keeper, "aave")) == [] and (await journaled(keeper, "morpho")) == []
    await breaker.reset("WETH")
    await evaluated_everywhere(keeper, devnet.mine(1))
    await evaluated_everywhere(keeper, devnet.mine(1))
    assert len(await journaled(keeper, "aave")) > 20
    assert len(await journaled(keeper, "morpho")) >= 3


async def test_a_down_sequencer_holds_morpho_too(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    sequencer = SequencerFeed(devnet, 1, block_time(devnet) - 86_400)  # down for a day
    feed = sequencer.address
    fund(devnet, KEEPER)
    # Morpho alone on the chain: the chain's price watch holds it, as it holds Aave.
    config = both_protocols(devnet, tmp_path, aave=False, sequencer_uptime_feed=feed,
                            sequencer_grace_period_s=600)
    keeper = await run_daemon(config)
    devnet.set_price("WETH", 2100.0)
    await evaluated_everywhere(keeper, devnet.mine(1))
    await evaluated_everywhere(keeper, devnet.mine(1))
    assert (await journaled(keeper, "morpho")) == []
    sequencer.set(0, block_time(devnet) - 3_600)  # up for an hour
    # Up for longer than the grace period: clear at the next block, released at the one after
    # (clear_after_s = 0: the breaker's hysteresis is one observation).
    await evaluated_everywhere(keeper, devnet.mine(1))
    await evaluated_everywhere(keeper, devnet.mine(1))
    assert len(await journaled(keeper, "morpho")) >= 3


async def test_an_entry_journaled_but_never_signed_is_planned_again(tmp_path: Path) -> None:
    journal = await J.Journal.open(await migrated(SqliteDatabase.open(tmp_path / "j.sqlite3")))
    entry = J.JournalEntry("morpho:0xabc:0x01:7", "morpho", "0xabc", "WETH", "USDC", 1, 1.0,
                           0, 10, J.PLANNED, None, None, None)
    assert await journal.record(entry)
    other = J.JournalEntry("aave:0xdef:x:y:1", "aave", "0xdef", "WETH", "USDC", 1, 1.0, 0, 10,
                           J.PLANNED, None, None, None)
    assert await journal.record(other)
    assert await resume_journal(journal, None, "morpho", 11) == 0  # type: ignore[arg-type]
    assert await journal.get(entry.key) is None  # forgotten: may be planned again
    assert await journal.get(other.key) is not None  # another protocol's is left to it
    assert await journal.record(entry)


async def test_a_morpho_keeper_without_loan_tokens_is_told_not_simulated(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    devnet.client.call("anvil_setBalance", KEEPER, hex(100 * 10**18))  # gas, no tokens
    keeper = await run_daemon(both_protocols(devnet, tmp_path, aave=False))
    devnet.set_price("WETH", 2100.0)
    await evaluated_everywhere(keeper, devnet.mine(1))
    morpho = keeper.daemon.executors["morpho"]
    assert (await journaled(keeper, "morpho")) == []
    [short] = morpho.capital_shortfall.values()
    assert short.symbol == "USDC" and short.opportunities >= 3 and short.missing > 0
    assert morpho.capital_fix == "Fund the keeper with the debt asset."  # (no flash contract)
    labels = {"chain": "devnet", "protocol": "morpho"}
    metrics = keeper.daemon.metrics
    assert metric_absent(metrics, "keeperd_liquidations_total",
                         {**labels, "stage": "simulation_failed"})
    assert metric_value(metrics, "keeperd_liquidations_total",
                        {**labels, "stage": "no_capital"}) >= 3
    assert metric_value(metrics, "keeperd_capital_shortfall_tokens",
                        {**labels, "asset": "USDC"}) == short.missing_tokens
