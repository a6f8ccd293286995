"""From configuration to a connected chain: the pool, and the start-up chain-id check."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from keeperd.chain.rpc import Endpoint, RpcError, RpcPool, RpcPoolSettings, RpcUnavailable
from keeperd.config import ChainConfig
from keeperd.metrics import Metrics


def make_pool(chain: ChainConfig, metrics: Metrics) -> RpcPool:
    endpoints = [Endpoint(str(i), url, chain.rate_limit) for i, url in enumerate(chain.rpc_urls)]
    settings = RpcPoolSettings(timeout=chain.request_timeout, max_attempts=chain.max_attempts,
                               max_head_lag=chain.max_head_lag)
    return RpcPool(chain.name, endpoints, settings=settings, metrics=metrics,
                   expected_chain_id=chain.chain_id)


@dataclass(frozen=True)
class EndpointCheck:
    index: int
    safe_url: str
    status: str  # "ok", "wrong_chain", "unreachable"
    detail: str


async def check_chain_ids(pool: RpcPool, expected: int) -> list[EndpointCheck]:
    """Ask every endpoint for its chain id; report each one's status."""

    async def one(i: int, ep: Endpoint) -> EndpointCheck:
        try:
            got = int(await pool.call_endpoint(ep, "eth_chainId"), 16)
        except (RpcUnavailable, RpcError, ValueError, TypeError) as exc:
            return EndpointCheck(i, ep.safe_url, "unreachable", str(exc))
        ep.health.chain_ok = got == expected
        if got != expected:
            return EndpointCheck(i, ep.safe_url, "wrong_chain",
                                 f"answers with chain id {got}, the config says {expected}")
        return EndpointCheck(i, ep.safe_url, "ok", "")

    return list(await asyncio.gather(*(one(i, ep) for i, ep in enumerate(pool.endpoints))))
