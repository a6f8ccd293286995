"""`keeperd check-config`: validate the file, then check it against the live chains."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keeperd.chain.connect import check_chain_ids, make_pool
from keeperd.chain.rpc import RpcError, RpcPool, RpcUnavailable
from keeperd.config import Config, ConfigError, ConfigIssue, load_config
from keeperd.metrics import Metrics
from keeperd.protocols import registry


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
                plugin = registry.plugin_class(proto.kind)
                check_config = getattr(plugin, "check_config", None)
                if check_config is not None:
                    issues += await check_config(pool, proto, pi)
            multicall = await pool.request("eth_getCode", [chain.multicall3, "latest"])
            if multicall in (None, "0x"):
                issues.append(ConfigIssue(f"chains[{ci}].multicall3",
                                          f"no Multicall3 at {chain.multicall3}",
                                          "deploy one or set the address of this chain's"))
    issues += await venue_issues(config)
    issues += await storage_issues(config)
    return issues


async def storage_issues(config: Config) -> list[ConfigIssue]:
    """With storage.url: PostgreSQL answers with these credentials and may hold the lease
    table (the connection keeperd's replicas will make, opened and closed)."""
    storage = config.storage
    if storage.url is None:
        return []
    from keeperd.config import ConfigError
    from keeperd.storage.lease import Lease, redact_url, with_password

    try:
        password = storage.password()
    except (ConfigError, OSError) as exc:
        field = "storage.password_env" if storage.password_env else "storage.password_file"
        return [ConfigIssue(field, str(exc).splitlines()[-1].strip(),
                            "set the variable or point at a readable file")]
    lease = Lease(with_password(storage.url, password), "check-config",
                  length_s=storage.lease.length_s,
                  statement_timeout_s=storage.lease.statement_timeout_s)
    try:
        await lease.connect()
        await lease.rows()
    except Exception as exc:
        return [ConfigIssue("storage.url", f"PostgreSQL at {redact_url(storage.url)} refused: "
                            f"{type(exc).__name__}: {exc}",
                            "check the host, the database, the user and its password (and "
                            "that the user may create tables)")]
    finally:
        await lease.close()
    return []


async def contract_issues(pool: RpcPool, proto: Any, pi: int, fields: Sequence[str]
                          ) -> list[ConfigIssue]:
    """Each address field of a protocol entry holds a contract on its chain (a plug-in's
    `check_config` names its fields)."""
    issues: list[ConfigIssue] = []
    for field in fields:
        address = getattr(proto, field, None)
        if address is None:
            continue
        try:
            code = await pool.request("eth_getCode", [address, "latest"])
        except (RpcError, RpcUnavailable) as exc:
            issues.append(ConfigIssue(f"protocols[{pi}].{field}", f"could not read code: {exc}",
                                      ""))
            continue
        if code in (None, "0x", "0x0"):
            issues.append(ConfigIssue(
                f"protocols[{pi}].{field}", f"{address} holds no contract on chain "
                f"{proto.chain!r}", "check the address and that it belongs to this chain"))
    return issues


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
