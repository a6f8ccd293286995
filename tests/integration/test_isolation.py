"""One protocol's work never ahead of another's liquidation on the event loop (issue #31 item
4): a plug-in whose evaluation holds the loop for a second (the toy, `evaluate_hold_s`) is
configured beside Morpho Blue; a crash in the same block makes Morpho positions liquidatable
and wakes both. Morpho's liquidation is broadcast before the slow evaluation of that block
even starts — an order of events, not a timing threshold (bench/isolation.py measures the
figure with Aave, Morpho and Curie)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from keeperd.config import parse_config
from keeperd.devnet.handle import Devnet
from keeperd.protocols.sdk.messages import ExecutionEvent
from tests.integration.test_morpho import drop_oracle, fund, morpho_config
from tests.keeper_harness import KEEPER, KEEPER_KEY

HOLD_S = 1.0  # how long each of the toy's evaluations holds the loop


@pytest.fixture(autouse=True)
def toy_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPERD_PLUGINS", "tests.toy_protocol")
    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)


async def test_a_slow_evaluation_waits_for_another_protocols_liquidation(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:  # type: ignore[no-untyped-def]
    fund(devnet, KEEPER)
    config = morpho_config(devnet, tmp_path, "liquidate").model_dump(mode="json")
    # The toy first: its scanner is woken first by every block, as the heavier protocol
    # would be if it were listed first.
    config["protocols"].insert(0, {
        "kind": "toy_vault", "name": "toy", "chain": "devnet",
        "token": devnet.manifest["tokens"]["WETH"],
        "price_feed": devnet.manifest["price_feeds"]["WETH"],
        "debt_usd": 1_500.0, "evaluate_hold_s": HOLD_S})
    keeper = await run_daemon(parse_config(config, env={"KEEPER_KEY": KEEPER_KEY}))
    head = devnet.client.block_number()
    for protocol in ("toy", "morpho"):  # (the toy's first evaluation shows it is slow)
        await keeper.evaluated_at(head, limit_s=30, protocol=protocol)
    toy = keeper.daemon.scanners["toy"].adapter
    executor = keeper.daemon.executors["morpho"]
    sent: list[tuple[float, ExecutionEvent]] = []
    told = executor.events

    def record(event: ExecutionEvent) -> None:
        if event.kind == "sent":
            sent.append((time.perf_counter(), event))
        if told is not None:
            told(event)

    executor.events = record
    devnet.client.call("evm_setAutomine", False)
    try:
        drop_oracle(devnet, "WETH/USDC", 0.8, wait=False)
        crash = devnet.mine(1)
        for protocol in ("morpho", "toy"):
            await keeper.evaluated_at(crash, limit_s=30, protocol=protocol)
    finally:
        devnet.client.call("evm_setAutomine", True)
    at_crash = [e for e in sent if e[1].block == crash]
    assert at_crash, "keeperd sent no Morpho liquidation at the crash"
    [(_, started, ended)] = [e for e in toy.evaluations if e[0] == crash]
    first_sent = min(t for t, _ in at_crash)
    assert first_sent < started, (
        f"Morpho's first liquidation was broadcast {first_sent - started:+.3f} s after the "
        f"toy's evaluation of the same block started (it ended {ended - started:.3f} s after "
        "its start): the slow evaluation ran ahead of the liquidation path")
