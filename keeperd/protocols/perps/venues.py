"""From a venue's config to its accounts: one entry point for scan, the daemon and tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from keeperd.config import DydxV4Config, HyperliquidConfig
from keeperd.protocols.perps.answers import VenueRead
from keeperd.protocols.perps.dydx import DydxClient
from keeperd.protocols.perps.http import VenueClient
from keeperd.protocols.perps.hyperliquid import HyperliquidClient
from keeperd.protocols.perps.margin import PerpAccount

# A venue's config `kind` -> (the config field with its API's URL, its client for a config).
VENUES: dict[str, tuple[str, Callable[[VenueClient, Any], HyperliquidClient | DydxClient]]] = {
    "hyperliquid": ("api_url", lambda client, c: HyperliquidClient(client, c.name, c.dexes)),
    "dydx_v4": ("indexer_url", lambda client, c: DydxClient(client, c.name)),
}


# How a venue liquidates a large position: (above this notional, this fraction at a time).
PARTIAL_LIQUIDATION: dict[str, tuple[float, float]] = {"hyperliquid": (100_000.0, 0.2)}


def venue_reader(config: HyperliquidConfig | DydxV4Config, session: aiohttp.ClientSession
                 ) -> HyperliquidClient | DydxClient:
    """The venue's client, to keep for as long as the venue is polled: its rate limit spans
    the polls, and what it learnt of the venue (Hyperliquid without `metaAndAssetCtxs`) is
    not asked — and warned about — again at every poll."""
    url_field, venue = VENUES[config.kind]
    client = VenueClient(session, getattr(config, url_field), rate_limit=config.rate_limit,
                         max_attempts=config.max_attempts, timeout_s=config.timeout_s)
    return venue(client, config)


async def read_accounts(config: HyperliquidConfig | DydxV4Config,
                        session: aiohttp.ClientSession) -> VenueRead:
    """Once (the command-line tools): the watched accounts as the venue reports them, and
    those whose answer did not read."""
    return await venue_reader(config, session).read(config.accounts)


async def fetch_accounts(config: HyperliquidConfig | DydxV4Config,
                         session: aiohttp.ClientSession) -> list[PerpAccount]:
    """The accounts that read (those that did not are logged, `perps.account_unread`)."""
    return (await read_accounts(config, session)).accounts


def maintenance_moves(config: HyperliquidConfig | DydxV4Config) -> bool:
    """Whether the liquidation price lets the position's maintenance move with the price
    (`liquidation_rule`, Hyperliquid's; every other venue: yes)."""
    return getattr(config, "liquidation_rule", "current") != "fixed-maintenance"
