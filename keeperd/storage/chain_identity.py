"""Which chain a state database's journal was kept on: each chain's genesis block hash,
recorded at the first start and compared at every start after.

A chain id does not tell two chains apart where it matters most: every anvil devnet is 31337.
A journal (or a replicas' database) kept on one devnet and opened on a devnet started again
held that chain's liquidations and nonces: a crash on the new chain went unliquidated behind
"inclusions ahead of the chain", and the old chain's signed transactions were rebroadcast into
the new one's pool (a by-hand trial: a devnet started again from its saved state has the
same genesis too, and a shorter history than the journal saw). keeperd refuses to start
instead, naming the fix.

One endpoint's answer alone never refuses a start: a hash that differs is asked of every
endpoint, and one that still names the recorded genesis lets the start go on (logged). A
genesis no endpoint answers is not checked (logged): the start goes on.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from keeperd.chain.rpc import RpcError, RpcUnavailable
from keeperd.storage.db import Database

log = structlog.get_logger(__name__)


class OtherChain(Exception):
    """The state database's journal was kept on another chain of the same id."""


async def genesis_of(pool: Any) -> str | None:
    """The hash of block 0 as the pool answers it; None when unanswered."""
    try:
        header = await pool.request("eth_getBlockByNumber", ["0x0", False])
    except (RpcError, RpcUnavailable):
        return None
    got = header.get("hash") if isinstance(header, dict) else None
    return got.lower() if isinstance(got, str) else None


async def _said_by_each(pool: Any) -> list[str]:
    out = []
    for endpoint in getattr(pool, "voters", []):
        try:
            header = await pool.call_endpoint(endpoint, "eth_getBlockByNumber",
                                              ["0x0", False], judged=False)
        except (RpcError, RpcUnavailable, TimeoutError):
            continue
        got = header.get("hash") if isinstance(header, dict) else None
        if isinstance(got, str):
            out.append(got.lower())
    return out


# How far behind the journal's last block every endpoint's head may be before the chain is
# called another (an endpoint a few blocks behind is a lagging one, not another chain).
BEHIND_BLOCKS = 16


async def check_chain(db: Database, name: str, chain_id: int, pool: Any, where: str,
                      journal_block: int | None = None, journal_row: str | None = None,
                      *, record: bool = True) -> None:
    """Record the chain's genesis at the first start; at a later one raise `OtherChain` if
    this chain's genesis is not the recorded one, or if no endpoint's head has reached the
    last block the journal saw on it (`journal_block`, said by the row `journal_row`) — a
    devnet started again from its saved state has the same genesis and a shorter history
    (`where`: the state, for the message). `record=False` (check-config, on a database it
    only reads) judges the same and writes nothing: a genesis not recorded yet is `run`'s
    to record."""
    if journal_block is not None and await _head(pool) + BEHIND_BLOCKS < journal_block:
        heads = await _heads(pool)  # (every endpoint asked only when the pool's is behind)
        if heads and max(heads) + BEHIND_BLOCKS < journal_block:
            row = (f" (its row `{journal_row}`, the latest with a transaction this keeper "
                   "signed: if that one row's block is wrong, written by hand, correct or "
                   "delete it instead)") if journal_row is not None else ""
            raise OtherChain(
                f"{where}: its journal saw block {journal_block} of {name} (chain id "
                f"{chain_id}){row}, and no endpoint's chain has reached it (the highest head "
                f"{max(heads)}) — a devnet started again from its saved state, or an "
                "endpoint of another network with the same id; its liquidations and nonces "
                f"are that chain's (if instead every endpoint lags that far, wait for one "
                f"that does not). {FIX}")
    genesis = await genesis_of(pool)
    if genesis is None:
        log.warning("state.chain_unchecked", chain=name,
                    meaning="no endpoint answered block 0: the journal is not checked "
                            "against this chain at this start")
        return
    recorded = await db.fetchval("SELECT genesis FROM chain_genesis WHERE chain = $1", name)
    if recorded is None:
        if not record:
            return
        await db.execute("INSERT INTO chain_genesis (chain, chain_id, genesis, seen_at) "
                         "VALUES ($1, $2, $3, $4) ON CONFLICT (chain) DO NOTHING",
                         name, chain_id, genesis, time.time())
        return
    if str(recorded).lower() == genesis:
        return
    said = await _said_by_each(pool)
    if str(recorded).lower() in said:
        log.warning("state.chain_disagreement", chain=name, recorded=recorded, answered=genesis,
                    meaning="an endpoint names another genesis block: one endpoint's word "
                            "does not refuse the start")
        return
    raise OtherChain(
        f"{where}: its journal was kept on another chain with chain id {chain_id} "
        f"({name}: genesis {recorded}, this chain's {genesis}) — another devnet, or an "
        "endpoint of another network with the same id; its liquidations and nonces are that "
        f"chain's. {FIX}")


FIX = ("Use a new state directory (KEEPERD_STATE_DIR or state_dir; `keeperd devnet down` "
       "moves the devnet's aside) or, with replicas, a new database (storage.url)")


async def _head(pool: Any) -> int:
    """The pool's head; an unanswered one counts as far behind (every endpoint is asked)."""
    try:
        return int(str(await pool.request("eth_blockNumber")), 16)
    except (RpcError, RpcUnavailable, ValueError):
        return -BEHIND_BLOCKS - 1


async def _heads(pool: Any) -> list[int]:
    """Each endpoint's head (those that answer); the pool's alone with one endpoint."""
    voters = list(getattr(pool, "voters", []))
    out = []
    for endpoint in voters:
        try:
            out.append(int(str(await pool.call_endpoint(endpoint, "eth_blockNumber", [],
                                                         judged=False)), 16))
        except (RpcError, RpcUnavailable, TimeoutError, ValueError):
            continue
    if not voters and (head := await _head(pool)) >= 0:
        out.append(head)
    return out
