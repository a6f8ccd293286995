"""Two keepers on one key (two state directories, or a wallet of the operator's): keeperd sees
a transaction from its address that it did not sign, alerts `key_in_use_elsewhere`, and holds
new liquidations until the other sender has been quiet for a while — instead of fighting it for
nonces ("nonce too low", dropped and replanned liquidations)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from keeperd.config import parse_config
from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from keeperd.execution.txmanager import FOREIGN_QUIET_BLOCKS
from tests.alert_fakes import Webhook
from tests.conftest import metric_value
from tests.keeper_harness import (  # noqa: F401 - fixtures
    KEEPER,
    KEEPER_KEY,
    chain_health,
    fund_keeper,
    keeper_key_env,
)


async def told(webhook: Webhook, rule: str, status: str, limit_s: float = 10) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if any(b.get("rule") == rule and b.get("status") == status
               for _, b in webhook.received):
            return True
        await asyncio.sleep(0.1)
    return False


async def test_another_sender_on_the_key_is_told_and_waited_out(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    fund_keeper(devnet)
    webhook = Webhook()
    config = parse_config({
        "state_dir": str(tmp_path / "state"),
        "chains": [{"name": "devnet", "chain_id": 31337,
                    "rpc_urls": [devnet.manifest["rpc_url"]],
                    "confirmations": 0, "poll_interval": 0.1}],
        "protocols": [{"kind": "aave_v3", "name": "aave", "chain": "devnet",
                       "addresses_provider": devnet.manifest["aave_v3"]["addresses_provider"]}],
        "keeper": {"mode": "liquidate", "min_profit_usd": 1.0,
                   "key": {"source": "env", "env": "KEEPER_KEY"}},
        "alerts": {"routes": [{"name": "ops", "sinks": [
            {"kind": "webhook", "url": webhook.url, "secret": "${WEBHOOK_SECRET}"}]}]},
        "metrics": {"enabled": False},
    }, env={"KEEPER_KEY": KEEPER_KEY, "WEBHOOK_SECRET": "w" * 32})
    try:
        keeper = await run_daemon(config)
        await keeper.evaluated_at(devnet.client.block_number())
        # The other sender: a transfer from the keeper's address keeperd did not sign.
        devnet.client.call("eth_sendTransaction", {"from": KEEPER, "to": KEEPER, "value": "0x1"})
        seen = devnet.client.block_number()
        await keeper.evaluated_at(devnet.mine(1))
        metrics = keeper.daemon.metrics
        assert metric_value(metrics, "keeperd_keeper_foreign_transactions_total",
                            {"chain": "devnet"}) == 1
        await keeper.daemon._alert_tick()
        assert await told(webhook, "key_in_use_elsewhere", "firing")
        # A crash meanwhile: found, evaluated, not sent.
        devnet.set_price("WETH", 2100.0)
        underwater = {b["address"] for b in devnet.manifest["borrowers"]
                      if chain_health(devnet, b["address"]) < 1.0}
        assert len(underwater) > 20
        await keeper.evaluated_at(devnet.mine(1))
        journal = keeper.daemon.executors["aave"].journal
        assert await journal.all() == []
        labels = {"chain": "devnet", "protocol": "aave"}
        assert metric_value(metrics, "keeperd_liquidations_total",
                            {**labels, "stage": "held"}) > 0
        # Quiet for long enough: liquidations go, and nothing more is counted as foreign.
        while devnet.client.block_number() < seen + FOREIGN_QUIET_BLOCKS + 1:
            await keeper.evaluated_at(devnet.mine(1))
        for _ in range(3):
            await keeper.evaluated_at(devnet.mine(1))
        included = {e.account for e in await journal.by_status(J.INCLUDED)}
        assert len(included) >= 0.9 * len(underwater)
        assert metric_value(metrics, "keeperd_keeper_foreign_transactions_total",
                            {"chain": "devnet"}) == 1
        await keeper.daemon._alert_tick()
        assert await told(webhook, "key_in_use_elsewhere", "resolved")
    finally:
        webhook.close()
