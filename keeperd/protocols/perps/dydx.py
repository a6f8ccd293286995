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

from keeperd.protocols.perps.http import VenueClient
from keeperd.protocols.perps.margin import PerpAccount, PerpPosition


def parse_markets(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(data.get("markets", {}))


def parse_subaccount(account: str, data: dict[str, Any], markets: dict[str, dict[str, Any]],
                     venue: str = "dydx") -> PerpAccount:
    sub = data.get("subaccount", data)  # one subaccount, or a child of a parent answer
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
            unrealized_pnl=float(p.get("unrealizedPnl", 0.0)), margin_mode=mode,
            isolated_margin=equity - float(p.get("unrealizedPnl", 0.0))
            if mode == "isolated" else None,
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

        async def one(entry: str) -> list[PerpAccount]:
            address, _, number = entry.partition("/")
            n = int(number or 0)
            if n >= 128:
                data = await self.client.request(
                    "GET", f"/v4/addresses/{address}/subaccountNumber/{n}")
                return [parse_subaccount(entry, data, markets, self.venue)]
            data = await self.client.request(
                "GET", f"/v4/addresses/{address}/parentSubaccountNumber/{n}")
            children = data["subaccount"].get("childSubaccounts") or []
            out = []
            for child in children:
                k = int(child.get("subaccountNumber", n))
                if k != n and not child.get("openPerpetualPositions"):
                    continue  # an empty isolated slot
                out.append(parse_subaccount(entry if k == n else f"{address}/{k}", child,
                                            markets, self.venue))
            return out

        found = await asyncio.gather(*(one(a) for a in accounts))
        return [account for accounts_of in found for account in accounts_of]
