"""An OP Stack chain's L1 data fee priced into every liquidation, from the chain's own
GasPriceOracle (the published predeploy code, keeperd/devnet/op_stack.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import rlp
import structlog
from eth_abi import decode, encode

from keeperd import cli
from keeperd.chain import l1_fee
from keeperd.config import load_config
from keeperd.devnet import op_stack
from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from keeperd.execution.executor import FEE_UNREAD_HOLD_BLOCKS
from tests.alert_fakes import Webhook
from tests.conftest import metric_value
from tests.integration import test_config_inputs as config_inputs
from tests.integration import test_key_in_use as key_in_use
from tests.integration.test_cli_inputs import devnet_dir  # noqa: F401 - a fixture
from tests.keeper_harness import config_for, fund_keeper, keeper_key_env  # noqa: F401

GWEI = 10**9


def _oracle_fee(devnet: Devnet, raw: str) -> int:
    """What the chain's oracle says a signed transaction pays in L1 data fee: asked about the
    transaction unsigned, as the oracle's callers do."""
    body = bytes.fromhex(raw.removeprefix("0x"))
    assert body[0] == 2
    unsigned = b"\x02" + rlp.encode(rlp.decode(body[1:])[:9])
    answer = devnet.client.eth_call(l1_fee.GAS_PRICE_ORACLE,
                                    l1_fee.GET_L1_FEE + encode(["bytes"], [unsigned]))
    return int(decode(["uint256"], answer)[0])


async def test_an_l1_data_fee_over_the_prize_holds_liquidations_and_a_small_one_is_priced(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """On a chain declared OP Stack, each liquidation's L1 data fee is asked of the chain's
    GasPriceOracle with its simulation and comes off its profit: while L1 fees make every
    liquidation cost more than it earns, nothing is sent (a keeper that priced the gas alone
    sent them all); at an ordinary fee they go, each journaled with what the oracle says its
    signed transaction pays, with the headroom."""
    fund_keeper(devnet)
    # An L1 fee spike: the L1 base fee at 10^13 gwei prices a liquidation's bytes in ETH by
    # the thousand.
    op_stack.install(devnet.client, l1_base_fee=10**13 * GWEI, blob_base_fee=GWEI)
    config = config_for(devnet, tmp_path, "liquidate", key={"source": "env", "env": "KEEPER_KEY"})
    config.chains[0] = config.chains[0].model_copy(update={"l1_data_fee": "op-stack"})
    keeper = await run_daemon(config)
    await keeper.evaluated_at(devnet.client.block_number())
    executor = keeper.daemon.executors["aave"]
    assert executor.op_stack_chain_id == 31337
    labels = {"chain": "devnet", "protocol": "aave"}
    with structlog.testing.capture_logs() as logs:
        devnet.set_price("WETH", 2100.0)
        await keeper.evaluated_at(devnet.client.block_number())
    assert await executor.journal.all() == []
    assert metric_value(keeper.daemon.metrics, "keeperd_liquidations_total",
                        {**labels, "stage": "simulated_ok"}) > 20
    assert metric_value(keeper.daemon.metrics, "keeperd_liquidations_total",
                        {**labels, "stage": "sent"}) == 0
    assert not [e for e in logs if e["event"] == "liquidation.fee_unread"]
    # What held them is said, with the fee (once a wave), and shown as a gauge.
    told = [e for e in logs if e["event"] == "liquidation.unprofitable_with_fee_beside_gas"]
    assert sum(e["opportunities"] for e in told) > 20
    assert all(e["fee_beside_gas"].endswith(" ETH") and e["fee_beside_gas_usd"] > 10_000
               for e in told), told[0]
    assert metric_value(keeper.daemon.metrics, "keeperd_liquidation_fee_beside_gas_usd",
                        labels) > 10_000

    # Back to an ordinary day on OP Mainnet: 20 gwei on L1, blobs at 1 gwei.
    op_stack.set_l1_fees(devnet.client, l1_base_fee=20 * GWEI, blob_base_fee=GWEI)
    await keeper.evaluated_at(devnet.mine(1))
    pending = await executor.journal.by_status(J.PENDING, J.INCLUDED)
    assert len(pending) > 20
    for entry in pending:
        [tx] = await executor.journal.txs(entry.key)
        charged = _oracle_fee(devnet, tx.raw)
        assert charged > 0
        priced = int(re.search(r"fee_beside_gas_wei=(\d+)", entry.detail or "")[1])
        # (asked about a transaction of the signed one's size or a few bytes more)
        assert charged * 5 // 4 <= priced <= charged * 1.5, (priced, charged)


async def test_an_oracle_that_does_not_answer_holds_liquidations_on_an_op_stack_chain(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """Declared OP Stack, with no GasPriceOracle to say what a transaction pays: what each
    liquidation costs is unknown, so none is sent (`fee_unread`, logged with the reason);
    five blocks of it are alerted as sending paused, resolved once the oracle answers."""
    fund_keeper(devnet)
    webhook = Webhook()
    config = key_in_use.key_config(devnet, tmp_path, webhook)
    config.chains[0] = config.chains[0].model_copy(update={"l1_data_fee": "op-stack"})
    try:
        await _unread_oracle_holds(devnet, config, run_daemon, webhook)
    finally:
        webhook.close()


async def _unread_oracle_holds(devnet: Devnet, config: Any, run_daemon: Any,
                               webhook: Webhook) -> None:
    keeper = await run_daemon(config)
    await keeper.evaluated_at(devnet.client.block_number())
    with structlog.testing.capture_logs() as logs:
        devnet.set_price("WETH", 2100.0)
        await keeper.evaluated_at(devnet.client.block_number())
    executor = keeper.daemon.executors["aave"]
    assert await executor.journal.all() == []
    # (told once a wave, with how many it held and why: not once a liquidation a block)
    unread = [e for e in logs if e["event"] == "liquidation.fee_unread"]
    assert sum(e["opportunities"] for e in unread) > 20
    assert all("no GasPriceOracle there" in e["reason"] for e in unread), unread[0]
    assert metric_value(keeper.daemon.metrics, "keeperd_liquidations_total",
                        {"chain": "devnet", "protocol": "aave", "stage": "fee_unread"}
                        ) == sum(e["opportunities"] for e in unread)
    # One block of it is an endpoint's moment; five are the keeper's trouble, told as a
    # pause of its sending (alert sending_paused).
    first = devnet.client.block_number()
    assert executor.fee_hold(first) is None
    for _ in range(FEE_UNREAD_HOLD_BLOCKS):
        await keeper.evaluated_at(devnet.mine(1))
    head = devnet.client.block_number()
    why = executor.fee_hold(head)
    assert why is not None and f"since block {first}" in why and "GasPriceOracle" in why
    assert await executor.journal.all() == []
    await keeper.daemon._alert_tick()
    assert await key_in_use.told(webhook, "sending_paused", "firing")
    [alert] = [b for _, b in webhook.received if b.get("rule") == "sending_paused"]
    assert f"since block {first}" in json.dumps(alert), alert
    # The oracle answers again: the next block's liquidations go, and the hold ends.
    op_stack.install(devnet.client, l1_base_fee=20 * GWEI, blob_base_fee=GWEI)
    await keeper.evaluated_at(devnet.mine(1))
    assert len(await executor.journal.by_status(J.PENDING, J.INCLUDED)) > 20
    assert executor.fee_hold(devnet.client.block_number()) is None
    await keeper.daemon._alert_tick()
    assert await key_in_use.told(webhook, "sending_paused", "resolved")


def test_check_config_says_whether_the_chains_l1_fee_is_priced(devnet: Devnet,
                                                               tmp_path: Path) -> None:
    """Declared OP Stack with no oracle answering: an error naming the field (run would send
    nothing there). With the predeploys: what a liquidation-sized call pays now. Undeclared
    on a chain whose oracle answers: a warning (its L1 data fee would go unpriced)."""
    config = config_inputs.config_for(devnet, tmp_path)
    del config["alerts"]["watchlists"]
    config["chains"][0]["l1_data_fee"] = "op-stack"
    bad = config_inputs.check_config(tmp_path, config)
    assert bad.returncode == 2, bad.stderr
    assert "chains[0].l1_data_fee" in bad.stderr and "no GasPriceOracle there" in bad.stderr
    assert "keeperd devnet l1-fee 20" in bad.stderr
    op_stack.install(devnet.client, l1_base_fee=20 * GWEI, blob_base_fee=GWEI)
    ok = config_inputs.check_config(tmp_path, config)
    assert ok.returncode == 0, ok.stderr
    [note] = [line for line in ok.stdout.splitlines() if "operator fees are priced" in line]
    assert re.search(r"\([\d.,]+ gwei now for a 228-byte call\)", note), note
    config["chains"][0]["l1_data_fee"] = "auto"  # (31337: not a chain keeperd knows)
    warned = config_inputs.check_config(tmp_path, config)
    assert warned.returncode == 0, warned.stderr
    [warning] = [line for line in warned.stderr.splitlines() if ": warning: " in line]
    assert "chains[0].l1_data_fee" in warning and "answers as an OP Stack chain" in warning


@pytest.mark.usefixtures("logging_restored")
def test_the_devnet_prices_like_base_by_hand(
        devnet: Devnet, devnet_dir: Path,  # noqa: F811 - the fixture imported above
        capsys: pytest.CaptureFixture[str]) -> None:
    """`keeperd devnet l1-fee` puts the fee oracle on a running devnet and says what a
    liquidation-sized call pays; config/devnet.yaml prices it with KEEPERD_L1_DATA_FEE."""
    devnet.write_manifest(devnet_dir / "manifest.json")
    assert cli.main(["devnet", "l1-fee", "20"]) == 0
    first = capsys.readouterr().out
    assert cli.main(["devnet", "l1-fee", "2000000", "--blob-base-fee-gwei", "5"]) == 0
    second = capsys.readouterr().out

    def paid(out: str) -> float:
        found = re.search(r"a 228-byte call pays ([\d.,]+) (gwei|ETH) of L1 data fee", out)
        assert found, out
        return float(found[1].replace(",", "")) * (1e9 if found[2] == "ETH" else 1)

    assert 0 < paid(first) < paid(second)
    assert "KEEPERD_L1_DATA_FEE=op-stack" in second
    root = Path(__file__).resolve().parents[2]
    assert load_config(root / "config/devnet.yaml", env={}).chains[0].l1_data_fee == "auto"
    assert load_config(root / "config/devnet.yaml", env={"KEEPERD_L1_DATA_FEE": "op-stack"}
                       ).chains[0].l1_data_fee == "op-stack"
