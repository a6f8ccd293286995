"""Round trips from a new head to the broadcast of the first liquidation it reveals (#31 item
3): against a remote provider each sequential request is a round trip of tens of ms, so the
path may hold at most three — one batched read, one simulation, the send (the head itself is
pushed over the websocket). Counted by the delay proxy from the requests it saw, not timed."""

from __future__ import annotations

from pathlib import Path

from keeperd.config import parse_config
from keeperd.devnet.delay_proxy import DelayProxy
from keeperd.devnet.handle import Devnet
from tests.keeper_harness import (  # noqa: F401 - keeper_key_env is a fixture
    KEEPER_KEY,
    fund_keeper,
    keeper_key_env,
)

MOST_ROUND_TRIPS = 3


async def test_a_crash_block_is_liquidated_within_three_round_trips(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    fund_keeper(devnet)
    async with DelayProxy(devnet.manifest["rpc_url"], devnet.manifest["ws_url"],
                          delay_s=0.05) as proxy:
        config = parse_config({
            "state_dir": str(tmp_path / "state"),
            "chains": [{"name": "devnet", "chain_id": 31337, "rpc_urls": [proxy.http_url],
                        "ws_url": proxy.ws_url, "confirmations": 0, "poll_interval": 0.1}],
            "protocols": [{"kind": "aave_v3", "name": "aave", "chain": "devnet",
                           "addresses_provider":
                               devnet.manifest["aave_v3"]["addresses_provider"]}],
            "keeper": {"mode": "liquidate", "min_profit_usd": 1.0,
                       "key": {"source": "env", "env": "KEEPER_KEY"}},
            "metrics": {"enabled": False},
        }, env={"KEEPER_KEY": KEEPER_KEY})
        keeper = await run_daemon(config)
        # Two quiet blocks first: what the first blocks after start do once (balances,
        # approvals) is not the path measured.
        await keeper.evaluated_at(devnet.client.block_number())
        devnet.client.call("evm_setAutomine", False)
        for _ in range(2):
            await keeper.evaluated_at(devnet.mine(1), limit_s=30)
        devnet.set_price_async("WETH", devnet.price("WETH") * 0.7)
        holds = keeper.daemon.collector.held
        crash = devnet.mine(1)
        await keeper.evaluated_at(crash, limit_s=30)
        # (the crash block's path ran with the cyclic GC held: keeperd/collector_hold.py)
        assert keeper.daemon.collector.held > holds and keeper.daemon.collector.holding == 0
        trips = proxy.round_trips_to_send(crash)
        path = "\n".join(map(str, proxy.path_to_send(crash)))
        assert trips is not None, f"no broadcast after block {crash}'s head:\n{path}"
        assert trips <= MOST_ROUND_TRIPS, (
            f"{trips} sequential round trips from block {crash}'s head to the first "
            f"broadcast (ms after the head, ms taken, methods):\n{path}")
