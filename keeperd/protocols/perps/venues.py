"""From a venue's config to its accounts: one entry point for scan, the daemon and tests."""

from __future__ import annotations

import aiohttp

from keeperd.config import DydxV4Config, HyperliquidConfig
from keeperd.protocols.perps.dydx import DydxClient
from keeperd.protocols.perps.http import VenueClient
from keeperd.protocols.perps.hyperliquid import HyperliquidClient
from keeperd.protocols.perps.margin import PerpAccount


async def fetch_accounts(config: HyperliquidConfig | DydxV4Config,
                         session: aiohttp.ClientSession) -> list[PerpAccount]:
    if isinstance(config, HyperliquidConfig):
        client = VenueClient(session, config.api_url, rate_limit=config.rate_limit,
                             max_attempts=config.max_attempts, timeout_s=config.timeout_s)
        return await HyperliquidClient(client, config.name).accounts(config.accounts)
    client = VenueClient(session, config.indexer_url, rate_limit=config.rate_limit,
                         max_attempts=config.max_attempts, timeout_s=config.timeout_s)
    return await DydxClient(client, config.name).accounts(config.accounts)


def maintenance_moves(config: HyperliquidConfig | DydxV4Config) -> bool:
    return not (isinstance(config, HyperliquidConfig)
                and config.liquidation_rule == "fixed-maintenance")
