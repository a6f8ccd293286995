"""An `accounts` row of the account index that is not an address (a hand's `INSERT`, a bad
restore) failed its protocol's whole batch of position reads at every block — Aave's
`address_bytes`, Morpho's `position(bytes32,address)` encoding raise on it: every block
`positions.evaluation_failed`, no liquidation nor watchlist alert of that protocol (a review).
The index keeps only addresses when it loads, checksummed as its extractors write them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog
from eth_utils import to_checksum_address

from keeperd.metrics import Metrics
from keeperd.protocols.sdk.indexer import AccountIndexer, LogFilter
from keeperd.storage.account_index import IndexStore
from keeperd.storage.db import SqliteDatabase
from tests.conftest import migrated

GOOD = to_checksum_address("0x" + "ab" * 20)
LOWER = "0x" + "cd" * 20


class NoChain:
    chain = "devnet"
    metrics = Metrics()

    async def request(self, method: str, params: Any = ()) -> Any:
        raise AssertionError(f"not asked: {method}")


async def test_index_rows_that_are_not_addresses_are_left_out_when_it_loads(
        tmp_path: Path) -> None:
    db = SqliteDatabase.open(tmp_path / "state.sqlite")
    try:
        store = IndexStore(await migrated(db))
        bad = ["0x1234", GOOD + "\n", "0x" + "ZZ" * 20, "ab" * 20, "0x" + "ab" * 21, " " + GOOD]
        await store.record_indexed("aave", 100, None, [(a, 90) for a in [GOOD, LOWER, *bad]])
        indexer = AccountIndexer("aave", "devnet", NoChain(),  # type: ignore[arg-type]
                                 store, LogFilter(("0x" + "11" * 20,), ()),
                                 lambda log, cache: [], start_block=1)
        with structlog.testing.capture_logs() as logs:
            await indexer.start()
        assert indexer.accounts == {GOOD, to_checksum_address(LOWER)}
        [told] = [e for e in logs if e["event"] == "index.accounts_unreadable"]
        assert sorted(told["accounts"]) == sorted(bad)
        # (a rewind's answer is the same addresses: what it drops leaves the watch)
        assert sorted(await indexer._rewind(50, reason="test")) == sorted(
            [GOOD, to_checksum_address(LOWER)])
        assert indexer.accounts == set()
    finally:
        await db.close()
