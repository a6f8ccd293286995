"""Periodic full rescans (#18: the README's claim, backed): between them only accounts that
events touched are re-read; every `full_rescan_interval` seconds every account is."""

from __future__ import annotations

import asyncio
from pathlib import Path

from keeperd.devnet.handle import Devnet
from tests.conftest import metric_value
from tests.keeper_harness import config_for


async def test_every_account_is_read_again_each_full_rescan_interval(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    config = config_for(devnet, tmp_path, "alert-only")
    aave = config.protocols[0].model_copy(update={"full_rescan_interval": 1.0})
    keeper = await run_daemon(config.model_copy(update={"protocols": [aave]}))
    labels = {"chain": "devnet", "protocol": "aave", "outcome": "ok"}

    def scans(kind: str) -> float:
        return metric_value(keeper.daemon.metrics, "keeperd_scans_total",
                            {**labels, "kind": kind})

    await keeper.evaluated_at(devnet.client.block_number())
    full_at_start = scans("full")
    assert full_at_start >= 1  # the first scan reads everything
    for _ in range(8):  # 4 s of blocks, a new one every half second
        await keeper.evaluated_at(devnet.mine(1))
        await asyncio.sleep(0.5)
    assert scans("incremental") >= 4  # blocks in between read only what events touched
    assert 2 <= scans("full") - full_at_start <= 6  # and about one full read a second
    assert metric_value(keeper.daemon.metrics, "keeperd_scans_total",
                        {**labels, "kind": "full"}) == scans("full")
