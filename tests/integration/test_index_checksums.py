"""The index checksums an address once, not once per range: a block's logs name the borrowers
already watched (a crash's liquidations), and each checksum is a keccak on the path from a
new head to the first liquidation (#31: ~10 % of the Aave index's time per block went there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from keeperd.devnet.handle import Devnet
from keeperd.metrics import Metrics
from keeperd.protocols.morpho_blue import adapter as morpho
from keeperd.protocols.sdk.contract import PluginContext
from keeperd.storage.account_index import IndexStore
from tests.integration.test_morpho import morpho_config


async def test_logs_read_again_checksum_no_address_again(  # type: ignore[no-untyped-def]
        devnet: Devnet, pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checksummed: list[str] = []
    real = morpho.to_checksum_address

    def counting(address: str) -> str:
        checksummed.append(address)
        return real(address)

    monkeypatch.setattr(morpho, "to_checksum_address", counting)
    config = morpho_config(devnet, tmp_path)
    store = await IndexStore.open(tmp_path)
    try:
        adapter = morpho.MorphoBlueAdapter(config.protocols[0], PluginContext(
            config.chains[0], pool, store, Metrics()))  # type: ignore[arg-type]
        await adapter.start()
        head = devnet.client.block_number()
        checksummed.clear()  # (the start's own addresses: the config's)
        await adapter.discover(head)
        found = set(adapter.accounts)
        assert found and len(checksummed) == len(found)  # each once, however many logs
        # A reorg rewinds the index: the same logs are read again, their accounts known.
        await adapter.indexer.on_reorg(config.protocols[0].start_block)
        await adapter.discover(head)
        assert set(adapter.accounts) == found
        assert len(checksummed) == len(found)
    finally:
        await store.close()
