"""Aave's second reading of watched accounts (`health_elsewhere`) on the devnet's real pool:
the health it asks of an endpoint is the pool's own getUserAccountData at the book's block,
and keeperd's own equals it (so a dispute is a lie or a lag, not rounding)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from keeperd.devnet.handle import Devnet
from tests.integration.test_cascade_devnet import snapshot


async def test_the_second_reading_is_the_pools_own_health(devnet: Devnet, pool,  # type: ignore[no-untyped-def]
                                                          tmp_path: Path) -> None:
    from keeperd.config import parse_config
    from keeperd.metrics import Metrics
    from keeperd.protocols.aave_v3.adapter import AaveV3Adapter
    from keeperd.protocols.sdk.contract import PluginContext
    from keeperd.storage.account_index import IndexStore

    book, _ = await snapshot(devnet, pool, tmp_path / "first")
    config = parse_config({
        "state_dir": str(tmp_path), "chains": [{"name": "devnet", "chain_id": 31337,
                                                "rpc_urls": [devnet.manifest["rpc_url"]]}],
        "protocols": [{"kind": "aave_v3", "name": "aave", "chain": "devnet",
                       "addresses_provider": devnet.manifest["aave_v3"]["addresses_provider"]}],
    }, env={})
    adapter = AaveV3Adapter(config.protocols[0], PluginContext(
        config.chains[0], pool, await IndexStore.open(tmp_path / "second"), Metrics()))
    await adapter.start()
    accounts = list(book.accounts[:8])
    found = await adapter.health_elsewhere(book, accounts, pool.endpoints[0])
    assert found is not None and set(found) == set(accounts)
    view = adapter.evaluate(book)
    for i, account in enumerate(accounts):
        data = devnet.account_data(account)
        pools = math.inf if data[1] == 0 else data[5] / 1e18
        assert found[account] == pytest.approx(pools, rel=1e-12), account
        assert float(view.health[i]) == pytest.approx(found[account], rel=1e-9), account


async def test_morphos_second_reading_is_its_positions_health_per_market(
        devnet: Devnet, pool, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Morpho Blue's second reading: each watched position's health, read on the endpoint
    given the way the book is read (a first endpoint lying about one account's collateral
    could hide its fall from its holder on Morpho too: only Aave had a second reading),
    keyed per market — an account's two markets are two rows."""
    from keeperd.protocols.sdk.views import row_key
    from tests.integration.test_morpho import adapter_for

    adapter = await adapter_for(devnet, pool, tmp_path)
    head = devnet.client.block_number()
    await adapter.discover(head)
    book = await adapter.read(head, None, set(), set())
    view = adapter.evaluate(book)
    accounts = sorted({p.account for p in book.positions})[:6]
    found = await adapter.health_elsewhere(book, accounts, pool.endpoints[0])
    assert found is not None
    rows = [i for i, a in enumerate(view.accounts) if a in accounts]
    assert set(found) == {row_key(view.accounts[i], view.labels[i]) for i in rows}
    for i in rows:
        assert found[row_key(view.accounts[i], view.labels[i])] == pytest.approx(
            float(view.health[i]), rel=1e-12)
