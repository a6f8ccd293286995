"""dYdX v4 through its indexer API.

- `GET /v4/perpetualMarkets`: each market's oracle price, initial and maintenance margin
  fractions, next (hourly) funding rate, open interest;
- `GET /v4/addresses/{address}/subaccountNumber/{n}`: the subaccount's equity, free
  collateral and open perpetual positions (size, side, entry, unrealised PnL).
Subaccounts 0-127 are cross-margined; 128 and up hold one isolated market each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from keeperd.protocols.perps.http import VenueClient
from keeperd.protocols.perps.margin import PerpAccount, PerpPosition


def parse_markets(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(data.get("markets", {}))


def parse_subaccount(account: str, data: dict[str, Any], markets: dict[str, dict[str, Any]],
                     venue: str = "dydx") -> PerpAccount:
    sub = data["subaccount"]
    number = int(sub.get("subaccountNumber", 0))
    mode = "isolated" if number >= 128 else "cross"
    equity = float(sub["equity"])
    positions = []
    for ticker, p in (sub.get("openPerpetualPositions") or {}).items():
        market = markets.get(ticker, {})
        size = abs(float(p["size"])) * (1 if p["side"] == "LONG" else -1)
        mark = float(market.get("oraclePrice") or p["entryPrice"])
        funding = market.get("nextFundingRate")
        positions.append(PerpPosition(
            coin=ticker, size=size, entry_price=float(p["entryPrice"]), mark_price=mark,
            unrealized_pnl=float(p.get("unrealizedPnl", 0.0)), margin_mode="cross",
            maintenance_fraction=float(market.get("maintenanceMarginFraction", 0.03)),
            funding_rate_hourly=float(funding) if funding is not None else None))
    extra = {"free_collateral_usd": float(sub.get("freeCollateral", 0.0)),
             "subaccount": number, "margin_mode": mode}
    return PerpAccount(venue, account, equity, tuple(positions), extra=extra)


class DydxClient:
    def __init__(self, client: VenueClient, venue: str = "dydx") -> None:
        self.client = client
        self.venue = venue

    async def accounts(self, accounts: Sequence[str]) -> list[PerpAccount]:
        markets = parse_markets(await self.client.request("GET", "/v4/perpetualMarkets"))

        async def one(entry: str) -> PerpAccount:
            address, _, number = entry.partition("/")
            data = await self.client.request(
                "GET", f"/v4/addresses/{address}/subaccountNumber/{int(number or 0)}")
            return parse_subaccount(entry, data, markets, self.venue)

        return list(await asyncio.gather(*(one(a) for a in accounts)))
