"""What a state database says of the keeper, read the same way on either back-end: the one
summary `keeperd status` prints, from the embedded SQLite file or from the PostgreSQL the
replicas share (`storage/admin.shared_status`), and whose per-protocol part the demo prints.

Each part is read only when its table exists (a state file from before a migration, a
PostgreSQL that never held the account index), so a summary never fails on an older state.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from keeperd.storage.db import Database

# What each protocol's liquidations came to: the keeper's own follow-ups (housekeeping:
# Curie's unwinds, journaled with no collateral and no debt) apart.
_PROTOCOL_ROWS = ("SELECT protocol, status, account, collateral, debt, realised_profit_usd "
                  "FROM liquidations")
# A liquidation names its pair; the keeper's own follow-ups (housekeeping: Curie's unwinds of
# what it took over) name none, and are counted apart (`keeperd status` counted them among the
# liquidations: 161 where the protocols' lines added up to 153, and showed the keeper's own
# address, pair "/", among the latest).
_A_LIQUIDATION = "(COALESCE(collateral, '') <> '' OR COALESCE(debt, '') <> '')"
_LAST_LIQUIDATIONS = ("SELECT protocol, account, status, collateral, debt, "
                      "expected_profit_usd, winner, detected_block, realised_profit_usd "
                      "FROM liquidations "
                      f"WHERE {_A_LIQUIDATION} "
                      "ORDER BY updated_at DESC, detected_block DESC LIMIT 5")
_INDEX = ("SELECT c.protocol, c.block, (SELECT COUNT(*) FROM accounts a "
          "WHERE a.protocol = c.protocol) FROM index_cursor c")


async def tables(db: Database) -> set[str]:
    if db.dialect == "sqlite":
        rows = await db.fetch("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = await db.fetch("SELECT table_name FROM information_schema.tables "
                              "WHERE table_schema = current_schema()")
    return {str(r[0]) for r in rows}


async def summarize(db: Database, *, index: bool = True) -> dict[str, Any]:
    """The account index (with `index`: it lives in each replica's own file), the journal
    (by status, by protocol, the last five), the alerts firing and the outbox."""
    present = await tables(db)
    out: dict[str, Any] = {}
    if index and {"index_cursor", "accounts"} <= present:
        out["index"] = {p: {"indexed_block": b, "accounts": n}
                        for p, b, n in await db.fetch(_INDEX)}
    if "liquidations" in present:
        out["liquidations"] = {str(s): int(n) for s, n in await db.fetch(
            f"SELECT status, COUNT(*) FROM liquidations WHERE {_A_LIQUIDATION} "
            "GROUP BY status")}
        out["by_protocol"] = protocol_summary(await db.fetch(_PROTOCOL_ROWS))
        out["last_liquidations"] = [last_liquidation(r)
                                    for r in await db.fetch(_LAST_LIQUIDATIONS)]
    if "keeper_holdings" in present:
        out["holdings"] = [
            {"protocol": str(protocol), "market": str(market), "holding": str(holding),
             "block": int(block)}
            for protocol, market, holding, block in await db.fetch(
                "SELECT protocol, market, holding, block FROM keeper_holdings "
                "ORDER BY protocol, market")]
    if "alert_state" in present:
        # (each at its severity now, as `keeperd alerts list` and keeperd_alerts_firing say:
        # one back from critical to warning is not told, and its message says critical)
        out["alerts_firing"] = firing_summary(
            {**json.loads(r[0]), "severity": str(r[1])} for r in await db.fetch(
                "SELECT alert, severity FROM alert_state ORDER BY since"))
    if "breaker" in present:
        # (a tripped breaker holds every liquidation on its asset: `status` said "16
        # liquidatable" of positions all held, a by-hand trial)
        out["breakers"] = [
            {"chain": str(chain), "asset": str(asset), "manual": bool(manual),
             "reason": str(reason or "tripped")}
            for chain, asset, manual, reason in await db.fetch(
                "SELECT chain, asset, manual, reason FROM breaker WHERE tripped <> 0 "
                "ORDER BY chain, asset")]
    if "outbox" in present:
        out["outbox"] = outbox_summary(
            await db.fetch("SELECT state, COUNT(*) FROM outbox GROUP BY state"),
            await db.fetchval("SELECT MIN(created_at) FROM outbox WHERE state = $1",
                              "pending"))
    return out


def protocol_summary(rows: Iterable[Iterable[Any]]) -> dict[str, dict[str, Any]]:
    """Per protocol: liquidations by status, the accounts liquidated (included), the realised
    P&L (the journal's, entry by entry — inclusions' profit net of gas, and the gas of those
    that gained nothing, and the housekeeping's gains, losses and gas: what the profit and
    loss counters add up to), and the housekeeping transactions."""
    out: dict[str, dict[str, Any]] = {}
    for protocol, status, account, collateral, debt, realised in rows:
        p = out.setdefault(protocol, {"liquidations": {}, "accounts_liquidated": set(),
                                      "realised_pnl_usd": 0.0, "housekeeping": 0})
        if not collateral and not debt:
            p["housekeeping"] += 1
            # (what closing a takeover's position gained or lost, and its gas, is the
            # protocol's too: a takeover's P&L alone said half its penalty)
            p["realised_pnl_usd"] += realised or 0.0
            continue
        p["liquidations"][status] = p["liquidations"].get(status, 0) + 1
        if status == "included":
            p["accounts_liquidated"].add(account)
        # (every entry's: a revert's, a lost race's, a cancel's gas is a realised loss)
        p["realised_pnl_usd"] += realised or 0.0
    for p in out.values():
        p["accounts_liquidated"] = len(p["accounts_liquidated"])
        p["realised_pnl_usd"] = round(p["realised_pnl_usd"], 2)
    return out


def last_liquidation(row: Iterable[Any]) -> dict[str, Any]:
    protocol, account, status, collateral, debt, profit, winner, block, realised = row
    return {"protocol": protocol, "account": account, "status": status,
            "collateral": collateral, "debt": debt, "expected_profit_usd": round(profit, 2),
            "realised_profit_usd": None if realised is None else round(realised, 2),
            "winner": winner, "block": block}


def firing_summary(alerts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"rule": a["rule"], "severity": a["severity"],
             "since": round(time.time() - a["starts_at"])} for a in alerts]


def outbox_summary(by_state: Iterable[tuple[Any, ...]], oldest: float | None
                   ) -> dict[str, Any]:
    counts = {str(r[0]): int(r[1]) for r in by_state}
    return {"pending": counts.get("pending", 0), "dead": counts.get("dead", 0),
            "delivered": counts.get("delivered", 0),
            "oldest_pending_s": None if oldest is None else round(time.time() - oldest)}
