"""`keeperd check-config`: validate the file, then check it against the live chains."""

from __future__ import annotations

import asyncio
from pathlib import Path

from keeperd.chain.connect import check_chain_ids, make_pool
from keeperd.chain.rpc import RpcError, RpcPool, RpcUnavailable
from keeperd.config import AaveV3Config, Config, ConfigError, ConfigIssue, load_config
from keeperd.metrics import Metrics


async def online_issues(config: Config) -> list[ConfigIssue]:
    """Problems only the chains can reveal: wrong chain ids, dead RPCs, addresses with no code."""
    issues: list[ConfigIssue] = []
    metrics = Metrics()
    for ci, chain in enumerate(config.chains):
        async with make_pool(chain, metrics) as pool:
            checks = await check_chain_ids(pool, chain.chain_id)
            for check in checks:
                path = f"chains[{ci}].rpc_urls[{check.index}]"
                if check.status == "wrong_chain":
                    issues.append(ConfigIssue(path, f"{check.safe_url} {check.detail}",
                                              "point this URL at the right network or fix "
                                              f"chains[{ci}].chain_id"))
                elif check.status == "unreachable":
                    issues.append(ConfigIssue(path, f"{check.safe_url} does not answer: "
                                              f"{check.detail}",
                                              "check the URL, the node and the firewall"))
            if not any(c.status == "ok" for c in checks):
                continue  # nothing to ask about contracts
            for pi, proto in enumerate(config.protocols):
                if getattr(proto, "chain", None) != chain.name:
                    continue
                for field in ("addresses_provider", "pool", "oracle", "data_provider", "morpho"):
                    address = getattr(proto, field, None)
                    if address is None:
                        continue
                    try:
                        code = await pool.request("eth_getCode", [address, "latest"])
                    except (RpcError, RpcUnavailable) as exc:
                        issues.append(ConfigIssue(f"protocols[{pi}].{field}",
                                                  f"could not read code: {exc}", ""))
                        continue
                    if code in (None, "0x", "0x0"):
                        issues.append(ConfigIssue(
                            f"protocols[{pi}].{field}",
                            f"{address} holds no contract on chain {chain.name!r}",
                            "check the address and that it belongs to this chain"))
            for lending in config.lending:
                if lending.chain == chain.name:
                    issues += await aave_revision_issues(pool, lending,
                                                         config.protocols.index(lending))
            multicall = await pool.request("eth_getCode", [chain.multicall3, "latest"])
            if multicall in (None, "0x"):
                issues.append(ConfigIssue(f"chains[{ci}].multicall3",
                                          f"no Multicall3 at {chain.multicall3}",
                                          "deploy one or set the address of this chain's"))
    issues += await venue_issues(config)
    return issues


async def aave_revision_issues(pool: RpcPool, proto: AaveV3Config, pi: int
                               ) -> list[ConfigIssue]:
    """An Aave pool whose POOL_REVISION keeperd does not know would have its liquidations held
    at start: say so now, with the fix."""
    from keeperd.chain.multicall import selector
    from keeperd.protocols.aave_v3.revisions import rules_for

    try:
        pool_address = proto.pool or "0x" + (await pool.request("eth_call", [{
            "to": proto.addresses_provider, "data": "0x" + selector("getPool()").hex()},
            "latest"]))[-40:]
        raw = await pool.request("eth_call", [{
            "to": pool_address, "data": "0x" + selector("POOL_REVISION()").hex()}, "latest"])
    except (RpcError, RpcUnavailable):
        return []  # a missing contract is reported above; a v3.0 fork may lack the getter
    revision = int(raw, 16) if raw and raw != "0x" else 1
    rules = rules_for(revision, set(proto.accept_revisions))
    if rules.known:
        return []
    return [ConfigIssue(
        f"protocols[{pi}].accept_revisions",
        f"the pool reports POOL_REVISION {revision}, which keeperd does not know "
        f"({rules.release}): liquidations on {proto.name!r} would be held",
        f"check the upgrade's release notes, then add {revision} to accept_revisions")]


async def venue_issues(config: Config) -> list[ConfigIssue]:
    """Perp venues answer, and every watched account reads (an empty account is a warning
    sign of a typo, so it is reported too)."""
    import aiohttp

    from keeperd.protocols.perps.http import VenueError
    from keeperd.protocols.perps.venues import fetch_accounts

    issues: list[ConfigIssue] = []
    async with aiohttp.ClientSession() as session:
        for venue in config.perp_venues:
            pi = config.protocols.index(venue)
            url_field = "api_url" if hasattr(venue, "api_url") else "indexer_url"
            try:
                accounts = await fetch_accounts(venue, session)
            except (VenueError, KeyError, ValueError, TypeError) as exc:
                issues.append(ConfigIssue(f"protocols[{pi}].{url_field}",
                                          f"{venue.name} did not answer usefully: {exc}",
                                          "check the URL (the public endpoint is the default) "
                                          "and that this machine may reach it"))
                continue
            for account in accounts:
                if not account.positions and account.account_value == 0:
                    index = venue.accounts.index(account.account)
                    issues.append(ConfigIssue(
                        f"protocols[{pi}].accounts[{index}]",
                        f"{account.account} has no positions and no equity on {venue.name}",
                        "check the address (a typo reads as an empty account)"))
    return issues


def check_config(path: Path, online: bool = True) -> Config:
    """Raise ConfigError with every problem found; return the config when it is sound."""
    config = load_config(path)
    if online:
        issues = asyncio.run(online_issues(config))
        if issues:
            raise ConfigError(str(path), issues)
    return config
