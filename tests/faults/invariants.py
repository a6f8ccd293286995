"""The invariants the fault suite checks after a scenario (#17): whatever the fault, these hold.

- the account index holds every account a fresh index of the same chain from `start_block`
  finds;
- the liquidation journal: no opportunity signed under two nonces, no nonce shared by two
  opportunities, nothing left planned or pending once the keeper has settled.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from keeperd.chain.rpc import RpcPool
from keeperd.devnet.handle import Devnet
from keeperd.metrics import Metrics
from keeperd.storage.account_index import IndexStore


async def assert_index_complete(devnet: Devnet, state_dir: Path, protocol: str,
                                to_block: int) -> None:
    """The persisted index of `state_dir` (read as a restarted keeperd would) holds every
    account a fresh index straight from the node finds up to `to_block`."""
    from tests.integration.test_aave_adapter import make_adapter

    persisted = await IndexStore.open(state_dir)
    try:
        cursor = await persisted.cursor(protocol)
        kept = set(await persisted.accounts(protocol))
    finally:
        await persisted.close()
    assert cursor is not None and cursor.block >= to_block, (cursor, to_block)
    with tempfile.TemporaryDirectory() as fresh_dir:
        fresh = await IndexStore.open(Path(fresh_dir))
        metrics = Metrics()
        async with RpcPool.from_urls("devnet", [devnet.manifest["rpc_url"]],
                                     metrics=metrics) as pool:
            adapter = make_adapter(devnet, pool, fresh, metrics)
            await adapter.start()
            await adapter.discover(to_block)
            expected = adapter.accounts
        await fresh.close()
    missing = expected - kept
    assert not missing, f"accounts never indexed: {sorted(missing)[:5]} ({len(missing)})"


def read_state(db: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]],
                                  list[tuple[Any, ...]]]:
    """From a (stopped or running) keeperd's SQLite state file: (key, status) of every journal
    entry, (key, nonce, tx_hash) of every signed transaction, (idempotency_key, state) of every
    outbox row."""
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
        rows = (c.execute("SELECT key, status FROM liquidations").fetchall()
                if "liquidations" in tables else [])
        txs = (c.execute("SELECT key, nonce, tx_hash FROM liquidation_txs").fetchall()
               if "liquidation_txs" in tables else [])
        outbox = (c.execute("SELECT idempotency_key, state FROM outbox").fetchall()
                  if "outbox" in tables else [])
    finally:
        c.close()
    return rows, txs, outbox


def journal_problems(rows: list[tuple[Any, ...]], txs: list[tuple[Any, ...]], *,
                     waves: bool = False) -> list[str]:
    """What breaks the journal's invariants (empty: none): an opportunity signed under two
    nonces, a nonce two opportunities share, an entry left planned or pending. With `waves`,
    the members of one wave share its nonce (each holds the same transactions under it), and
    nothing else does."""
    problems = []
    keys_of_nonce: dict[int, set[str]] = {}
    nonces_of_key: dict[str, set[int]] = {}
    hashes: dict[tuple[str, int], set[str]] = {}
    for key, nonce, tx_hash in txs:
        keys_of_nonce.setdefault(int(nonce), set()).add(key)
        nonces_of_key.setdefault(key, set()).add(int(nonce))
        hashes.setdefault((key, int(nonce)), set()).add(tx_hash)
    for n, keys in keys_of_nonce.items():
        if len(keys) > 1 and not (waves and len({frozenset(hashes[(k, n)])
                                                  for k in keys}) == 1):
            problems.append(f"nonce {n} shared by {sorted(keys)}")
    problems += [f"{key} signed under nonces {sorted(n)}" for key, n in nonces_of_key.items()
                 if len(n) > 1]
    problems += [f"{key} left {status}" for key, status in rows
                 if status in ("planned", "pending")]
    return problems


LIQUIDATION_CALL = "0xe413a321e8681d831f4dbccbca790d2952b56f977908e45be37335533e005286"


def keeper_liquidations(devnet: Devnet, from_block: int) -> list[dict[str, Any]]:
    """The Aave pool's LiquidationCall logs since `from_block` whose liquidator is the tests'
    keeper: what the chain says it did (the data: debtToCover, liquidatedCollateralAmount,
    liquidator, receiveAToken)."""
    from tests.keeper_harness import KEEPER as keeper

    found: list[dict[str, Any]] = devnet.client.call("eth_getLogs", {
        "fromBlock": hex(from_block), "toBlock": "latest",
        "address": devnet.manifest["aave_v3"]["pool"], "topics": [LIQUIDATION_CALL]})
    return [e for e in found if e["data"][2 + 128 + 24: 2 + 192].lower() == keeper[2:].lower()]
