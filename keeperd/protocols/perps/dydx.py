"""dYdX v4 through its indexer API.

- `GET /v4/perpetualMarkets`: each market's oracle price, initial and maintenance margin
  fractions, next (hourly) funding rate, open interest;
- `GET /v4/addresses/{address}/parentSubaccountNumber/{n}` (n < 128): the parent subaccount
  and all its children (`childSubaccounts`: n itself, cross-margined, and n + 128k, each
  holding one isolated position, as the dYdX front end opens them), each with its equity,
  free collateral and open perpetual positions;
- `GET /v4/addresses/{address}/subaccountNumber/{n}`: one subaccount (n >= 128 named alone).
Asking for subaccount n < 128 alone would miss every isolated position of the account.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from keeperd.protocols.perps.answers import (
    VenueAnswerError,
    VenueRead,
    finite,
    fraction,
    optional,
    positive,
    unread_of,
)
from keeperd.protocols.perps.http import VenueClient
from keeperd.protocols.perps.margin import PerpAccount, PerpPosition


def parse_markets(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(data.get("markets", {}))


def parse_subaccount(account: str, data: dict[str, Any], markets: dict[str, dict[str, Any]],
                     venue: str = "dydx") -> PerpAccount:
    """One subaccount (VenueAnswerError: a number of it, or of a market it holds a position
    in, that does not read)."""
    sub = data.get("subaccount", data)  # one subaccount, or a child of a parent answer
    number = int(sub.get("subaccountNumber", 0))
    mode = "isolated" if number >= 128 else "cross"
    equity = finite(sub["equity"], "subaccount.equity")
    positions = []
    for ticker, p in (sub.get("openPerpetualPositions") or {}).items():
        market = markets.get(ticker, {})
        where, held = f"perpetualMarkets {ticker}", f"openPerpetualPositions {ticker}"
        size = abs(finite(p["size"], f"{held}.size")) * (1 if p["side"] == "LONG" else -1)
        entry = positive(p["entryPrice"], f"{held}.entryPrice")
        oracle = market.get("oraclePrice")
        mark = entry if oracle is None else positive(oracle, f"{where}.oraclePrice")
        pnl = finite(p.get("unrealizedPnl", 0.0), f"{held}.unrealizedPnl")
        positions.append(PerpPosition(
            coin=ticker, size=size, entry_price=entry, mark_price=mark,
            unrealized_pnl=pnl, margin_mode=mode,
            isolated_margin=equity - pnl if mode == "isolated" else None,
            maintenance_fraction=fraction(market.get("maintenanceMarginFraction", 0.03),
                                          f"{where}.maintenanceMarginFraction"),
            funding_rate_hourly=optional(finite, market.get("nextFundingRate"),
                                         f"{where}.nextFundingRate")))
    extra = {"free_collateral_usd": finite(sub.get("freeCollateral", 0.0),
                                           "subaccount.freeCollateral"),
             "subaccount": number, "margin_mode": mode}
    return PerpAccount(venue, account, equity, tuple(positions), extra=extra)


# What a malformed answer raises while it is parsed (a field missing, null, a string).
UNREADABLE = (VenueAnswerError, KeyError, TypeError, ValueError, AttributeError)


class DydxClient:
    def __init__(self, client: VenueClient, venue: str = "dydx") -> None:
        self.client = client
        self.venue = venue

    async def read(self, accounts: Sequence[str]) -> VenueRead:
        """Each watched entry and its child subaccounts, each parsed on its own: one that
        does not read is `unread` (and logged), the others go on."""
        markets = parse_markets(await self.client.request("GET", "/v4/perpetualMarkets"))

        async def one(entry: str) -> VenueRead:
            out = VenueRead()
            address, _, number = entry.partition("/")
            n = int(number or 0)
            if n >= 128:
                data = await self.client.request(
                    "GET", f"/v4/addresses/{address}/subaccountNumber/{n}")
                self._parse(out, entry, data, markets)
                return out
            data = await self.client.request(
                "GET", f"/v4/addresses/{address}/parentSubaccountNumber/{n}")
            try:
                children = list(data["subaccount"].get("childSubaccounts") or [])
            except UNREADABLE as exc:
                out.unread.append(unread_of(self.venue, entry, exc))
                return out
            for child in children:
                try:
                    k = int(child.get("subaccountNumber", n))
                except UNREADABLE as exc:
                    out.unread.append(unread_of(self.venue, entry, exc))
                    continue
                if k != n and not child.get("openPerpetualPositions"):
                    continue  # an empty isolated slot
                self._parse(out, entry if k == n else f"{address}/{k}", child, markets)
            return out

        found = await asyncio.gather(*(one(a) for a in accounts))
        return VenueRead([a for f in found for a in f.accounts],
                         [u for f in found for u in f.unread])

    def _parse(self, out: VenueRead, account: str, data: Any,
               markets: dict[str, dict[str, Any]]) -> None:
        try:
            out.accounts.append(parse_subaccount(account, data, markets, self.venue))
        except UNREADABLE as exc:
            out.unread.append(unread_of(self.venue, account, exc))
