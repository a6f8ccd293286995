"""A market added to the config after the first run is indexed from its own start (#27 item
2): the index cursor had moved past that market's past, so it was watched only from the day it
was added (24 accounts across restarts where a fresh state directory found 48)."""

from __future__ import annotations

from pathlib import Path

from keeperd.devnet.handle import Devnet
from keeperd.metrics import Metrics
from keeperd.protocols.morpho_blue.adapter import MorphoBlueAdapter
from keeperd.protocols.sdk.contract import PluginContext
from keeperd.storage.account_index import IndexStore
from tests.integration.test_morpho import morpho_config


async def indexed(devnet: Devnet, pool, state: Path, markets: list[str]) -> set[str]:  # type: ignore[no-untyped-def]
    config = morpho_config(devnet, state)
    proto = config.protocols[0].model_copy(update={"markets": markets})
    store = await IndexStore.open(state)
    try:
        adapter = MorphoBlueAdapter(proto, PluginContext(config.chains[0], pool, store, Metrics()))  # type: ignore[arg-type]
        await adapter.start()
        await adapter.discover(devnet.client.block_number())
        return set(adapter.accounts)
    finally:
        await store.close()


async def test_a_market_added_later_is_indexed_from_its_start(devnet: Devnet, pool,  # type: ignore[no-untyped-def]
                                                             tmp_path: Path) -> None:
    markets = [m["id"] for m in devnet.manifest["morpho_blue"]["markets"].values()]
    assert len(markets) >= 2
    first = await indexed(devnet, pool, tmp_path / "grown", markets[:1])
    devnet.mine(5)  # the cursor moves on past every market's borrowers
    await indexed(devnet, pool, tmp_path / "grown", markets[:1])
    grown = await indexed(devnet, pool, tmp_path / "grown", markets)  # one market added
    fresh = await indexed(devnet, pool, tmp_path / "fresh", markets)
    assert first < fresh  # the second market has borrowers of its own
    assert grown == fresh
    # And once more across a restart: what the backfill found was persisted.
    assert await indexed(devnet, pool, tmp_path / "grown", markets) == fresh
