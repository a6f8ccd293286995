"""`keeperd scan`: index, read and evaluate every configured protocol once, then print the
accounts sorted by health (a table, or JSON with --json)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from keeperd.chain.connect import make_pool
from keeperd.config import Config, DydxV4Config, HyperliquidConfig
from keeperd.metrics import Metrics
from keeperd.protocols import registry
from keeperd.protocols.perps.margin import PerpAccount
from keeperd.protocols.sdk.contract import PluginContext
from keeperd.protocols.sdk.views import AccountRow
from keeperd.storage.account_index import IndexStore


async def scan_once(config: Config, *, protocols: Sequence[str] | None = None) -> list[AccountRow]:
    metrics = Metrics()
    store = await IndexStore.open(config.state_dir)
    rows: list[AccountRow] = []
    try:
        for chain in config.chains:
            selected = [p for p in config.chain_protocols if p.chain == chain.name
                        and (not protocols or p.name in protocols)]
            if not selected:
                continue
            async with make_pool(chain, metrics) as pool:
                head = int(await pool.request("eth_blockNumber"), 16)
                for proto in selected:
                    plugin = registry.create(proto, PluginContext(chain, pool, store, metrics))
                    await plugin.start()
                    await plugin.discover(head)
                    book = await plugin.read(head, None, set(), set())
                    rows += plugin.rows(book, plugin.evaluate(book))
        venues = [v for v in config.perp_venues if not protocols or v.name in protocols]
        if venues:
            rows += await perp_rows(venues)
    finally:
        await store.close()
    return sort_rows(rows)


async def perp_rows(venues: Sequence[HyperliquidConfig | DydxV4Config]) -> list[AccountRow]:
    """Perp accounts as scan rows: health is equity / maintenance margin (below 1: the venue
    liquidates), the JSON adds margin_ratio and the positions with liquidation prices."""
    import aiohttp

    from keeperd.protocols.perps.venues import fetch_accounts, maintenance_moves

    rows: list[AccountRow] = []
    async with aiohttp.ClientSession() as session:
        for venue in venues:
            for account in await fetch_accounts(venue, session):
                rows.append(perp_row(account, maintenance_moves(venue)))
    return rows


def perp_row(account: PerpAccount, moves: bool) -> AccountRow:
    """A venue account's row: its main asset is the position nearest its liquidation price,
    with the move that gets there (a short's is a rise: `rise_to_liquidation`)."""
    data = account.to_json(maintenance_moves=moves)
    positions: list[dict[str, Any]] = data["positions"]  # type: ignore[assignment]
    nearest = min((p for p in positions if p["distance_to_liquidation"] is not None),
                  key=lambda p: p["distance_to_liquidation"], default=None)
    largest = max(account.positions, key=lambda p: p.notional, default=None)
    distance = None if nearest is None else nearest["distance_to_liquidation"]
    if nearest is not None and account.health < 1.0:
        distance = 0.0  # under maintenance: now (a long's price is then above its mark)
    rises = bool(distance) and nearest is not None \
        and nearest["liquidation_price"] > nearest["mark_price"]
    return AccountRow(
        protocol=account.venue, account=account.account,
        health_factor=None if math.isinf(account.health) else account.health,
        collateral_usd=account.account_value, debt_usd=account.notional,
        liquidation_threshold=None,
        main_collateral=(nearest["coin"] if nearest is not None
                         else largest.coin if largest else None),
        drop_to_liquidation=None if rises else distance,
        rise_to_liquidation=distance if rises else None,
        extra=data)


def sort_rows(rows: list[AccountRow]) -> list[AccountRow]:
    """Riskiest first; accounts without debt last."""
    return sorted(rows, key=lambda r: (r.health_factor is None,
                                       r.health_factor if r.health_factor is not None else 0.0,
                                       -r.debt_usd))


def to_json(rows: list[AccountRow]) -> str:
    return json.dumps([r.to_json() for r in rows], indent=1)


def _fmt_usd(v: float) -> str:
    return f"{v:,.2f}"


def to_table(rows: list[AccountRow], limit: int | None = None) -> str:
    header = ("protocol", "account", "health", "collateral USD", "debt USD", "liq. threshold",
              "main asset", "to liq.")
    body: list[tuple[str, ...]] = []
    for r in rows[:limit] if limit else rows:
        body.append((
            r.protocol, r.account,
            f"{r.health_factor:.4f}" if r.health_factor is not None else "no debt",
            _fmt_usd(r.collateral_usd), _fmt_usd(r.debt_usd),
            f"{r.liquidation_threshold:.2%}" if r.liquidation_threshold else "-",
            r.main_collateral or "-",
            "now" if r.drop_to_liquidation == 0 or r.rise_to_liquidation == 0
            else f"{r.drop_to_liquidation:.2%} drop" if r.drop_to_liquidation is not None
            else f"{r.rise_to_liquidation:.2%} rise" if r.rise_to_liquidation is not None
            else "-",
        ))
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(header)]
    right = {2, 3, 4, 5, 7}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    out = [line(header), line(["-" * w for w in widths])] + [line(b) for b in body]
    if limit and len(rows) > limit:
        out.append(f"... {len(rows) - limit} more (use --limit 0 for all)")
    return "\n".join(out)


def summary_line(rows: list[AccountRow]) -> dict[str, Any]:
    healths = [r.health_factor for r in rows if r.health_factor is not None]
    return {"accounts": len(rows), "with_debt": len(healths),
            "liquidatable": sum(1 for h in healths if h < 1.0)}
