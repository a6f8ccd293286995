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
import math
from collections.abc import Sequence
from typing import Any

import structlog

from keeperd.protocols.perps.answers import (
    VenueAnswerError,
    VenueRead,
    finite,
    optional,
    positive,
    unread_of,
)
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
    """One coin's margin rules and context; `unread`: a number of it the venue answered
    that does not read (every account holding the coin is then unread, not valued)."""

    def __init__(self, name: str, max_leverage: float, tiers: list[MarginTier],
                 mark: float | None = None, oracle: float | None = None,
                 funding_hourly: float | None = None, open_interest: float | None = None,
                 unread: VenueAnswerError | None = None) -> None:
        self.name, self.max_leverage, self.tiers = name, max_leverage, tiers
        self.mark, self.oracle = mark, oracle
        self.funding_hourly, self.open_interest = funding_hourly, open_interest
        self.unread = unread


def parse_meta(meta: dict[str, Any], contexts: Sequence[dict[str, Any]] | None = None
               ) -> dict[str, Market]:
    """The markets of `meta` (and their contexts); one whose numbers do not read is kept,
    marked `unread`: the others go on."""
    tables: dict[int, list[MarginTier] | VenueAnswerError] = {}
    for entry in meta.get("marginTables", []) or []:
        table_id, table = int(entry[0]), entry[1]
        where = f"meta marginTables[{table_id}]"
        try:
            tables[table_id] = [
                MarginTier(finite(t.get("lowerBound"), f"{where}.lowerBound"),
                           positive(t.get("maxLeverage"), f"{where}.maxLeverage"))
                for t in table.get("marginTiers", [])]
        except VenueAnswerError as exc:
            tables[table_id] = exc
    markets: dict[str, Market] = {}
    for i, coin in enumerate(meta.get("universe", [])):
        name = coin["name"]
        try:
            markets[name] = _market(name, coin, tables,
                                    contexts[i] if contexts is not None and i < len(contexts)
                                    else None)
        except VenueAnswerError as exc:
            markets[name] = Market(name, math.nan, [], unread=exc)
    return markets


def _market(name: str, coin: dict[str, Any],
            tables: dict[int, list[MarginTier] | VenueAnswerError],
            ctx: dict[str, Any] | None) -> Market:
    max_lev = positive(coin.get("maxLeverage"), f"meta {name}.maxLeverage")
    table = tables.get(int(coin.get("marginTableId", -1)), [])
    if isinstance(table, VenueAnswerError):
        raise VenueAnswerError(table.field, table.value, table.why)
    market = Market(name, max_lev, table or [MarginTier(0.0, max_lev)])
    if ctx is not None:
        where = f"metaAndAssetCtxs {name}"
        market.mark = optional(positive, ctx.get("markPx"), f"{where}.markPx")
        market.oracle = optional(positive, ctx.get("oraclePx"), f"{where}.oraclePx")
        market.funding_hourly = optional(finite, ctx.get("funding"), f"{where}.funding")
        market.open_interest = optional(finite, ctx.get("openInterest"),
                                        f"{where}.openInterest")
    return market


def _float(value: Any) -> float | None:
    """A figure the venue states for information (its own liquidation price, withdrawable):
    None where it is absent or does not read as a finite number."""
    try:
        number = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and math.isfinite(number) else None


def parse_account(user: str, state: dict[str, Any], markets: dict[str, Market],
                  venue: str = "hyperliquid") -> PerpAccount:
    """One user's clearinghouseState (VenueAnswerError: a number that does not read, or a
    position in a market that does not)."""
    entries = state.get("assetPositions", [])
    if not isinstance(entries, list):
        raise VenueAnswerError("clearinghouseState.assetPositions", entries, "not a list")
    positions = [p for entry in entries if (p := _position(entry["position"], markets))]
    summary = state.get("crossMarginSummary") or state.get("marginSummary") or {}
    equity = finite(summary.get("accountValue", 0.0), "clearinghouseState.accountValue")
    return PerpAccount(venue, user, equity, tuple(positions),
                       extra={"withdrawable_usd": _float(state.get("withdrawable")),
                              # today's API states its own figure; the 2023 one did not
                              "venue_maintenance_margin_usd": _float(
                                  state.get("crossMaintenanceMarginUsed"))})


def _position(p: dict[str, Any], markets: dict[str, Market]) -> PerpPosition | None:
    coin = p["coin"]
    where = f"clearinghouseState {coin}"
    size = finite(p["szi"], f"{where}.szi")
    if size == 0:
        return None
    leverage = optional(finite, p["leverage"].get("value"), f"{where}.leverage.value") or None
    market = markets.get(coin)
    if market is None:  # (a coin the meta does not list: the position's own leverage)
        most = positive(leverage or 20.0, f"{where}.leverage.value")
        market = Market(coin, most, [MarginTier(0.0, most)])
    if market.unread is not None:
        raise VenueAnswerError(market.unread.field, market.unread.value, market.unread.why)
    # (without the coin's context: the venue's own valuation of the position)
    mark = market.mark if market.mark is not None else positive(
        p["positionValue"], f"{where}.positionValue") / abs(size)
    mode = p["leverage"]["type"]
    pnl = finite(p["unrealizedPnl"], f"{where}.unrealizedPnl")
    return PerpPosition(
        coin=coin, size=size, entry_price=finite(p["entryPx"], f"{where}.entryPx"),
        mark_price=mark, unrealized_pnl=pnl, margin_mode=mode, leverage=leverage,
        maintenance_fraction=maintenance_fraction(market.tiers, abs(size) * mark),
        maintenance_deduction=maintenance_deduction(market.tiers, abs(size) * mark),
        isolated_margin=finite(p["marginUsed"], f"{where}.marginUsed") - pnl
        if mode == "isolated" else None,
        funding_rate_hourly=market.funding_hourly,
        venue_liquidation_price=_float(p.get("liquidationPx")))


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
        markets = None
        if self._contexts_available:
            try:
                meta, contexts = await self.client.request(
                    "POST", "/info", self._body("metaAndAssetCtxs", dex))
                markets = parse_meta(meta, contexts)
            except (VenueError, ValueError, TypeError) as exc:
                # Marks then come from the positions' own valuation; funding is unknown.
                self._contexts_available = False
                log.warning("perps.asset_contexts_unavailable", venue=self.venue,
                            error=str(exc))
        if markets is None:
            markets = parse_meta(await self.client.request("POST", "/info",
                                                           self._body("meta", dex)))
        for market in markets.values():
            if market.unread is not None:
                log.warning("perps.market_unread", venue=self.venue, dex=dex or None,
                            market=market.name, field=market.unread.field,
                            value=repr(market.unread.value), why=market.unread.why,
                            meaning="the watched accounts holding it are unread this poll")
        return markets

    async def read(self, users: Sequence[str]) -> VenueRead:
        """Each user's account, parsed on its own: one that does not read is `unread` (and
        logged), the others go on."""
        out = VenueRead()
        for dex in ["", *self.dexes]:
            markets = await self.markets(dex)
            states = await asyncio.gather(*(self.client.request(
                "POST", "/info", self._body("clearinghouseState", dex, user=u.lower()))
                for u in users))
            for u, state in zip(users, states, strict=True):
                name = f"{u}@{dex}" if dex else u
                try:
                    if dex and isinstance(state, dict) and not state.get("assetPositions"):
                        continue  # (no account on that dex)
                    out.accounts.append(parse_account(name, state, markets, self.venue))
                except (VenueAnswerError, KeyError, TypeError, ValueError,
                        AttributeError) as exc:
                    out.unread.append(unread_of(self.venue, name, exc))
        return out
