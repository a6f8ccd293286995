"""From configuration to a connected chain: the pool, and the start-up chain-id check."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from keeperd.chain.rpc import Endpoint, RpcError, RpcPool, RpcPoolSettings, RpcUnavailable
from keeperd.config import ChainConfig
from keeperd.metrics import Metrics

# Block times of the chains keeperd's profiles cover, seconds (`ChainConfig.block_time_s`).
KNOWN_BLOCK_SECONDS = {1: 12.0, 10: 2.0, 8453: 2.0, 42161: 0.25, 137: 2.0}
# A head may move on at most this share of the block time apart (a slot missed is slower,
# never faster; an L2's timestamps jitter a little).
BLOCK_TIME_SLACK = 0.9


def min_block_seconds(chain: ChainConfig) -> float:
    """How fast the reference head may move on (`RpcPoolSettings.min_block_seconds`): the
    configured or known block time, less a little; 0.25 s for an unknown chain."""
    block = chain.block_time_s or KNOWN_BLOCK_SECONDS.get(chain.chain_id)
    return 0.25 if block is None else block * BLOCK_TIME_SLACK


def make_pool(chain: ChainConfig, metrics: Metrics) -> RpcPool:
    endpoints = [Endpoint(str(i), url, chain.rate_limit) for i, url in enumerate(chain.rpc_urls)]
    settings = RpcPoolSettings(timeout=chain.request_timeout, max_attempts=chain.max_attempts,
                               max_head_lag=chain.max_head_lag,
                               min_block_seconds=min_block_seconds(chain))
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
