"""Hyperliquid through its public info API (POST /info).

- `meta`: the universe (coin, szDecimals, maxLeverage) and, where the venue publishes them,
  margin tables (tiers of max leverage by notional);
- `metaAndAssetCtxs`: the same plus each coin's mark and oracle price, hourly funding rate and
  open interest (optional: without it, marks come from the positions' own valuation and
  funding is unknown);
- `clearinghouseState` per watched user: positions (signed size `szi`, entry, value,
  unrealised PnL, leverage type, margin used, the venue's own liquidation price) and the
  account's margin summary.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog

from keeperd.protocols.perps.http import VenueClient, VenueError
from keeperd.protocols.perps.margin import (
    MarginTier,
    PerpAccount,
    PerpPosition,
    maintenance_deduction,
    maintenance_fraction,
)

log = structlog.get_logger(__name__)


class Market:
    def __init__(self, name: str, max_leverage: float, tiers: list[MarginTier],
                 mark: float | None = None, oracle: float | None = None,
                 funding_hourly: float | None = None, open_interest: float | None = None
                 ) -> None:
        self.name, self.max_leverage, self.tiers = name, max_leverage, tiers
        self.mark, self.oracle = mark, oracle
        self.funding_hourly, self.open_interest = funding_hourly, open_interest


def parse_meta(meta: dict[str, Any], contexts: Sequence[dict[str, Any]] | None = None
               ) -> dict[str, Market]:
    tables: dict[int, list[MarginTier]] = {}
    for entry in meta.get("marginTables", []) or []:
        table_id, table = entry[0], entry[1]
        tables[int(table_id)] = [MarginTier(float(t["lowerBound"]), float(t["maxLeverage"]))
                                 for t in table.get("marginTiers", [])]
    markets: dict[str, Market] = {}
    for i, coin in enumerate(meta.get("universe", [])):
        max_lev = float(coin["maxLeverage"])
        tiers = tables.get(int(coin.get("marginTableId", -1)), []) or [MarginTier(0.0, max_lev)]
        market = Market(coin["name"], max_lev, tiers)
        if contexts is not None and i < len(contexts):
            ctx = contexts[i]
            market.mark = _float(ctx.get("markPx"))
            market.oracle = _float(ctx.get("oraclePx"))
            market.funding_hourly = _float(ctx.get("funding"))
            market.open_interest = _float(ctx.get("openInterest"))
        markets[coin["name"]] = market
    return markets


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def parse_account(user: str, state: dict[str, Any], markets: dict[str, Market],
                  venue: str = "hyperliquid") -> PerpAccount:
    positions = []
    for entry in state.get("assetPositions", []):
        p = entry["position"]
        size = float(p["szi"])
        if size == 0:
            continue
        coin = p["coin"]
        market = markets.get(coin) or Market(coin, float(p["leverage"].get("value", 20)),
                                             [MarginTier(0.0, float(p["leverage"].get("value",
                                                                                    20)))])
        value = float(p["positionValue"])
        mark = market.mark or value / abs(size)  # the venue's own valuation of the position
        mode = p["leverage"]["type"]
        positions.append(PerpPosition(
            coin=coin, size=size, entry_price=float(p["entryPx"]), mark_price=mark,
            unrealized_pnl=float(p["unrealizedPnl"]), margin_mode=mode,
            leverage=float(p["leverage"].get("value", 0)) or None,
            maintenance_fraction=maintenance_fraction(market.tiers, abs(size) * mark),
            maintenance_deduction=maintenance_deduction(market.tiers, abs(size) * mark),
            isolated_margin=float(p["marginUsed"]) - float(p["unrealizedPnl"])
            if mode == "isolated" else None,
            funding_rate_hourly=market.funding_hourly,
            venue_liquidation_price=_float(p.get("liquidationPx"))))
    summary = state.get("crossMarginSummary") or state.get("marginSummary") or {}
    return PerpAccount(venue, user, float(summary.get("accountValue", 0.0)), tuple(positions),
                       extra={"withdrawable_usd": _float(state.get("withdrawable")),
                              # today's API states its own figure; the 2023 one did not
                              "venue_maintenance_margin_usd": _float(
                                  state.get("crossMaintenanceMarginUsed"))})


class HyperliquidClient:
    """The main dex, and builder-deployed (HIP-3) dexes named in `dexes`: each has its own
    markets and clearinghouse state, asked for with its `dex` name; an account on one is
    reported as `user@dex`."""

    def __init__(self, client: VenueClient, venue: str = "hyperliquid",
                 dexes: Sequence[str] = ()) -> None:
        self.client = client
        self.venue = venue
        self.dexes = list(dexes)
        self._contexts_available = True

    @staticmethod
    def _body(kind: str, dex: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, **fields, **({"dex": dex} if dex else {})}

    async def markets(self, dex: str = "") -> dict[str, Market]:
        if self._contexts_available:
            try:
                meta, contexts = await self.client.request(
                    "POST", "/info", self._body("metaAndAssetCtxs", dex))
                return parse_meta(meta, contexts)
            except (VenueError, ValueError, TypeError) as exc:
                # Marks then come from the positions' own valuation; funding is unknown.
                self._contexts_available = False
                log.warning("perps.asset_contexts_unavailable", venue=self.venue,
                            error=str(exc))
        return parse_meta(await self.client.request("POST", "/info", self._body("meta", dex)))

    async def accounts(self, users: Sequence[str]) -> list[PerpAccount]:
        out: list[PerpAccount] = []
        for dex in ["", *self.dexes]:
            markets = await self.markets(dex)
            states = await asyncio.gather(*(self.client.request(
                "POST", "/info", self._body("clearinghouseState", dex, user=u.lower()))
                for u in users))
            out += [parse_account(f"{u}@{dex}" if dex else u, s, markets, self.venue)
                    for u, s in zip(users, states, strict=True)
                    if not dex or s.get("assetPositions")]
        return out
