"""A state directory (or a replicas' database) is one chain's: its journal opened on another
chain of the same id — a devnet started again from its saved state (the same genesis, a
shorter history), another devnet (another genesis) — refuses the start, naming the fix. A
by-hand trial reused a replicas' database on a devnet started again: a crash went
unliquidated behind "inclusions ahead of the chain", and the old chain's signed transactions
were rebroadcast into the new one's pool, to be mined later as liquidations never booked."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from eth_account import Account
from eth_utils import keccak

from keeperd.checks import check_config
from keeperd.config import ConfigError
from keeperd.daemon import StartupError
from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from keeperd.keys import KeeperKey
from keeperd.storage.chain_identity import FIX, OtherChain, check_chain
from keeperd.storage.db import SqliteDatabase
from keeperd.storage.migrations import migrate
from tests.keeper_harness import KEEPER_KEY, config_for, devnet_chain


async def journal_at(tmp_path: Path) -> SqliteDatabase:
    db = SqliteDatabase.open(tmp_path / "state" / "keeperd.sqlite3")
    await migrate(db)
    return db


async def test_a_journal_of_a_longer_history_or_another_genesis_refuses_the_start(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    keeper_key = KeeperKey(Account.from_key(KEEPER_KEY))
    # (the keeper's address: how far the journal saw is said only by rows it signed)
    config = config_for(devnet, tmp_path, "alert-only", address=keeper_key.address)
    keeper = await run_daemon(config)  # (the first start records the chain)
    keeper.stop.set()
    await asyncio.wait_for(keeper.task, 10)
    checked: list[str] = []
    await asyncio.to_thread(check_config, config_file(devnet, tmp_path, keeper_key.address),
                            checked=checked)
    assert any("its journal is devnet's" in line for line in checked), checked
    head = devnet.client.block_number()
    db = await journal_at(tmp_path)
    try:
        # One row of a block far ahead, nothing signed for it (a hand's INSERT): it refused
        # every start for good, saying to throw the state away (a review). It says nothing.
        journal = await J.Journal.open(db)
        await journal.record(J.JournalEntry("aave:0xb:c:d:1", "aave", "0xb", "c", "d", 1, 1.0,
                                            0, 10**12, J.PLANNED, None, None, None))
    finally:
        await db.close()
    keeper = await run_daemon(config)
    keeper.stop.set()
    await asyncio.wait_for(keeper.task, 10)
    db = await journal_at(tmp_path)
    try:
        # The journal saw blocks this chain has not reached, a transaction the keeper signed
        # there: a devnet started again.
        journal = await J.Journal.open(db)
        await journal.record(J.JournalEntry("aave:0xa:c:d:1", "aave", "0xa", "c", "d", 1, 1.0,
                                            0, head + 500, J.PLANNED, None, None, None))
        raw = keeper_key.sign_eip1559(chain_id=31337, nonce=0, to="0x" + "22" * 20, value=0,
                                      data=b"", gas=21_000, max_fee=10**9, tip=10**9)
        await journal.record_tx(J.TxRecord("0x" + keccak(raw).hex(), "aave:0xa:c:d:1", 0,
                                           10**9, 10**9, 21_000, "0x" + raw.hex(),
                                           "liquidation", 0.0))
    finally:
        await db.close()
    # check-config says what run says, from the same check, and writes nothing (it said OK
    # of this state directory, and run then refused it: a by-hand trial)
    path = config_file(devnet, tmp_path, keeper_key.address)
    before = state_files(tmp_path)
    with pytest.raises(ConfigError) as refused:
        await asyncio.to_thread(check_config, path)
    [issue] = refused.value.issues
    assert issue.path == "state_dir" and issue.fix == FIX
    assert re.search(rf"saw block {head + 500} of devnet .*row `aave:0xa:c:d:1`.* no "
                     r"endpoint's chain has reached it.*`keeperd run` refuses", issue.message)
    assert state_files(tmp_path) == before
    with pytest.raises(StartupError, match=rf"saw block {head + 500} of devnet .*row "
                                           r"`aave:0xa:c:d:1`.* no endpoint's chain has "
                                           r"reached it"):
        await run_daemon(config)
    db = await journal_at(tmp_path)
    try:
        await db.execute("DELETE FROM liquidation_txs")
        await db.execute("DELETE FROM liquidations")
        await db.execute("UPDATE chain_genesis SET genesis = $1", "0x" + "ab" * 32)
    finally:
        await db.close()
    before = state_files(tmp_path)
    with pytest.raises(ConfigError, match="kept on another chain with chain id 31337"):
        await asyncio.to_thread(check_config, path)
    assert state_files(tmp_path) == before
    with pytest.raises(StartupError, match="kept on another chain with chain id 31337"):
        await run_daemon(config)


def config_file(devnet: Devnet, tmp_path: Path, address: str) -> Path:
    """`config_for`'s alert-only keeper, as the file check-config reads."""
    path = tmp_path / "keeperd.yaml"
    path.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"),
        "chains": [devnet_chain(devnet)],
        "protocols": [{"kind": "aave_v3", "name": "aave", "chain": "devnet",
                       "addresses_provider": devnet.manifest["aave_v3"]["addresses_provider"]}],
        "keeper": {"mode": "alert-only", "address": address},
        "metrics": {"enabled": False}}))
    return path


def state_files(tmp_path: Path) -> dict[str, bytes]:
    """Every file of the state directory, by name, with its content."""
    return {p.name: p.read_bytes() for p in (tmp_path / "state").iterdir() if p.is_file()}


class Pool:
    """The pool's answer for block 0, and each endpoint's."""

    def __init__(self, answer: str, each: list[str]) -> None:
        self.answer = answer
        self.voters = list(range(len(each)))
        self.each = each

    async def request(self, method: str, params: Any = ()) -> Any:
        return {"hash": self.answer}

    async def call_endpoint(self, endpoint: int, method: str, params: Any, *,
                            judged: bool = True) -> Any:
        if method == "eth_blockNumber":
            return hex(100)
        return {"hash": self.each[endpoint]}


async def test_one_endpoints_word_does_not_refuse_the_start(tmp_path: Path) -> None:
    recorded, other = "0x" + "11" * 32, "0x" + "22" * 32
    db = SqliteDatabase.open(tmp_path / "state.sqlite3")
    await migrate(db)
    try:
        # (check-config's: judged, nothing recorded — the first start records it)
        await check_chain(db, "devnet", 1, Pool(recorded, [recorded]), "here", record=False)
        assert await db.fetchval("SELECT count(*) FROM chain_genesis") == 0
        await check_chain(db, "devnet", 1, Pool(recorded, [recorded]), "here")
        with structlog.testing.capture_logs() as logs:
            await check_chain(db, "devnet", 1, Pool(other, [other, recorded]), "here")
        assert [e["event"] for e in logs] == ["state.chain_disagreement"]
        with pytest.raises(OtherChain, match="genesis 0x1111"):
            await check_chain(db, "devnet", 1, Pool(other, [other, other]), "here")
        # (an endpoint a few blocks behind the journal is a lagging one)
        await check_chain(db, "devnet", 1, Pool(recorded, [recorded]), "here", 110)
        with pytest.raises(OtherChain, match="saw block 117"):
            await check_chain(db, "devnet", 1, Pool(recorded, [recorded]), "here", 117)
        # (the refusal names the row that saw it: one row written by hand is not a journal
        # to throw away)
        with pytest.raises(OtherChain, match=r"saw block 117 .*row `aave:0xa:c:d:1`"):
            await check_chain(db, "devnet", 1, Pool(recorded, [recorded]), "here", 117,
                              journal_row="aave:0xa:c:d:1")
    finally:
        await db.close()


async def test_check_config_judges_the_replicas_database_without_writing(
        devnet: Devnet, tmp_path: Path, postgres_dsn: str, pool: Any) -> None:
    """With storage.url the journal is PostgreSQL's: check-config judges it there as run
    does, in a session that refuses writes, and records no genesis (run's first start
    does)."""
    import contextlib

    import asyncpg

    from keeperd.checks import chain_identity_issues, journal_reader
    from keeperd.config import parse_config
    from keeperd.storage.db import PostgresDatabase

    config = parse_config({
        "state_dir": str(tmp_path / "state"), "storage": {"url": postgres_dsn},
        "chains": [{"name": "devnet", "chain_id": 31337,
                    "rpc_urls": [devnet.manifest["rpc_url"]]}],
        "keeper": {"mode": "alert-only"}}, env={})
    admin = await PostgresDatabase.connect(postgres_dsn)
    try:
        await migrate(admin)
        async with contextlib.AsyncExitStack() as stack:
            reader = await journal_reader(config, stack)
            assert reader is not None and reader[1] == "storage.url"
            checked: list[str] = []
            assert await chain_identity_issues(config, reader, config.chains[0], pool,
                                               checked) == []
            assert checked == ["storage.url: its journal is devnet's (its genesis and the "
                               "blocks it saw, as run checks them at start)"]
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await reader[0].execute("DELETE FROM chain_genesis")
        assert await admin.fetchval("SELECT count(*) FROM chain_genesis") == 0
        await admin.execute("INSERT INTO chain_genesis (chain, chain_id, genesis, seen_at) "
                            "VALUES ('devnet', 31337, $1, 0)", "0x" + "ab" * 32)
        async with contextlib.AsyncExitStack() as stack:
            reader = await journal_reader(config, stack)
            assert reader is not None
            [issue] = await chain_identity_issues(config, reader, config.chains[0], pool)
        assert issue.path == "storage.url" and issue.fix == FIX
        assert issue.message.startswith("storage.url: its journal was kept on another chain "
                                        "with chain id 31337")
    finally:
        await admin.close()
