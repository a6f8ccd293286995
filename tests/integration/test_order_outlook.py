"""What each protocol's path tells the daemon's order before its read (keeperd/
liquidation_first.py rules 2a and 3), from the real daemon on the devnet with Aave and Morpho
Blue configured: on an empty block Morpho is quiet and Aave cannot tell; on a drop of
Morpho's oracle that puts positions under water, Morpho says so before its read."""

from __future__ import annotations

from pathlib import Path

from keeperd.devnet.handle import Devnet
from tests.integration.test_morpho import drop_oracle
from tests.keeper_harness import aave_and_morpho_config


async def test_each_path_tells_its_outlook_before_its_read(
        devnet: Devnet, run_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    keeper = await run_daemon(aave_and_morpho_config(devnet, tmp_path, {"mode": "alert-only"}))
    daemon = keeper.daemon
    names = {daemon.scanners[p].name: p for p in ("aave", "morpho")}
    told: list[tuple[str, str, int]] = []  # (protocol, outlook, block)
    tell = daemon.order.tell

    def spy(name: str, outlook: str) -> None:
        told.append((names[name], outlook, daemon.scanners[names[name]]._wanted or -1))
        tell(name, outlook)

    daemon.order.tell = spy  # type: ignore[method-assign]

    async def evaluated(block: int) -> None:
        for name in ("aave", "morpho"):
            await keeper.evaluated_at(block, protocol=name)

    await evaluated(devnet.client.block_number())
    told.clear()
    empty = devnet.mine(1)
    await evaluated(empty)
    assert sorted((p, o) for p, o, b in told if b == empty) == [("aave", "moved"),
                                                                ("morpho", "quiet")]
    drop_oracle(devnet, "WETH/USDC", 0.9)  # (a block of its own, Morpho's only)
    crash = devnet.client.block_number()
    await evaluated(crash)
    assert ("morpho", "under", crash) in told, told
    # The read that followed found them: its book has positions under water.
    assert float(daemon.scanners["morpho"].view.health.min()) < 1.0
