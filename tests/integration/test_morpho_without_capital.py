"""Issue #27 item 12: a keeper that holds nothing but gas liquidates Morpho Blue through
Morpho's own liquidate callback (the devnet's MorphoLiquidator sells the seized collateral on
Uniswap V3 and repays from the sale), with `capital: flash-loan` and with `auto`; nothing
reverts, and the profit lands at the contract's beneficiary. On the old code the Morpho flash
path did not exist: the same crash was a capital shortfall, nothing sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog
from eth_utils import keccak, to_checksum_address

from keeperd.config import parse_config
from keeperd.devnet import contracts
from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from tests.conftest import metric_value
from tests.integration.test_morpho import adapter_for
from tests.keeper_harness import (
    KEEPER,
    KEEPER_KEY,
    devnet_chain,
    morpho_protocol,
)

pytestmark = pytest.mark.devnet

LIQUIDATED_TOPIC = "0x" + keccak(
    text="Liquidated(address,bytes32,uint256,uint256,uint256)").hex()


def config(devnet: Devnet, tmp_path: Path, capital: str) -> Any:
    blue = devnet.manifest["morpho_blue"]
    return parse_config({
        "state_dir": str(tmp_path / "state"),
        "chains": [devnet_chain(devnet)],
        "protocols": [morpho_protocol(devnet,
                                      liquidator_contract=blue["liquidator"]["address"])],
        "keeper": {"mode": "liquidate", "min_profit_usd": 1.0, "capital": capital,
                   "key": {"source": "env", "env": "KEEPER_KEY"},
                   # (keeper.capital flash-loan/auto wants the Aave contract too, today)
                   "flash_liquidator": devnet.manifest["flash_liquidator"]["address"],
                   "uniswap_v3_factory": devnet.manifest["uniswap_v3"]["factory"]},
        "metrics": {"enabled": False}, "risk": {"cascade": {"enabled": False}}},
        env={"KEEPER_KEY": KEEPER_KEY})


def balances(devnet: Devnet, holder: str) -> dict[str, int]:
    erc20 = contracts.aave("MintableERC20")
    return {s: int(erc20.decode_result("balanceOf", devnet.client.eth_call(
        t, erc20.encode_call("balanceOf", holder)))[0])
        for s, t in devnet.manifest["tokens"].items()}


@pytest.mark.parametrize("capital", ["flash-loan", "auto"])
async def test_a_keeper_without_capital_liquidates_morpho_through_the_callback(
        devnet: Devnet, pool: Any, tmp_path: Path, run_daemon: Any,
        monkeypatch: pytest.MonkeyPatch, capital: str) -> None:
    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)
    blue = devnet.manifest["morpho_blue"]
    contract, beneficiary = blue["liquidator"]["address"], blue["liquidator"]["beneficiary"]
    devnet.client.call("anvil_setBalance", KEEPER, hex(100 * 10**18))  # gas, no tokens
    keeper_before = balances(devnet, KEEPER)
    assert keeper_before["USDC"] == keeper_before["DAI"] == 0
    beneficiary_before = balances(devnet, beneficiary)
    keeper = await run_daemon(config(devnet, tmp_path, capital))
    await keeper.evaluated_at(devnet.client.block_number(), protocol="morpho")
    # The crash: both markets' collateral falls, on every oracle (Aave's feeds and Morpho's).
    devnet.set_price("WETH", devnet.price("WETH") * 0.88)
    devnet.set_price("WBTC", devnet.price("WBTC") * 0.85)
    crash = devnet.client.block_number()
    await keeper.evaluated_at(crash, protocol="morpho")
    reader = await adapter_for(devnet, pool, tmp_path / "reader")
    await reader.discover(crash)
    book = await reader.snapshot(sorted(reader.accounts), crash)
    underwater = {(p.account, p.market.name) for p in book.positions if book.health(p) < 1}
    assert {m for _, m in underwater} == {"WETH/USDC", "WBTC/DAI"}, underwater
    journal = keeper.daemon.executors["morpho"].journal
    for _ in range(20):
        included = await journal.by_status(J.INCLUDED)
        if len(included) >= len(underwater):
            break
        # (the devnet's pools follow each price move, and a few of the crash's sales through
        # one leave it below the bound: the arbitrage a chain does between blocks brings it
        # back for the next ones)
        devnet.align_pools()
        await keeper.evaluated_at(devnet.mine(1), protocol="morpho")
    assert {e.account for e in included} == {a for a, _ in underwater}
    assert await journal.by_status(J.REVERTED) == []
    # Every one through the contract, each paying its beneficiary in the same transaction.
    logs = devnet.client.call("eth_getLogs", {"fromBlock": hex(crash), "toBlock": "latest",
                                              "address": contract,
                                              "topics": [LIQUIDATED_TOPIC]})
    assert {to_checksum_address("0x" + e["topics"][1][-40:]) for e in logs} == \
        {a for a, _ in underwater}
    loan_of = {m["id"]: m["loan"] for m in blue["markets"].values()}
    profit = dict.fromkeys(("USDC", "DAI"), 0)
    for e in logs:
        earned = int(e["data"][2 + 128:2 + 192], 16)
        assert earned > 0
        profit[loan_of[e["topics"][2]]] += earned
    after = balances(devnet, beneficiary)
    assert {s: after[s] - beneficiary_before[s] for s in profit} == profit
    assert profit["USDC"] > 0 and profit["DAI"] > 0
    # Each sale priced by its simulation (the seller's return), behind the keeper's sales in
    # flight as the chain ran them: never priced over what it realised, and as a rule what
    # it realised. (Its turn simulated at "latest" with a mined count blocks old, sales mined
    # since ran again ahead of it, and one that then failed dropped out: a sale was priced
    # over what it realised, 3 runs in 10 here, and one reverted by hand — a trial. Priced
    # under is the pools the test moves between the plan's block and the sale's.)
    ratios = sorted(e.realised_profit_usd / e.expected_profit_usd for e in included)
    assert ratios[0] >= 0.95 and ratios[len(ratios) // 2] <= 1.1, ratios
    # The keeper spent gas only, and let Morpho pull none of its tokens.
    assert balances(devnet, KEEPER) == keeper_before
    assert metric_value(keeper.daemon.metrics, "keeperd_liquidations_total", {
        "chain": "devnet", "protocol": "morpho", "stage": "no_capital"}) == 0


@pytest.mark.parametrize("capital", ["flash-loan", "auto"])
async def test_a_sale_too_large_for_its_pool_is_seized_in_smaller_parts(
        devnet: Devnet, pool: Any, tmp_path: Path, run_daemon: Any,
        monkeypatch: pytest.MonkeyPatch, capital: str) -> None:
    """A position whose seized collateral is too large for its pool's depth (the sale alone
    pays under the bound, SwapBelowBound) is seized at half, then a quarter, ... from the
    next block, as Aave's are: sent again at its whole size every block, it was never
    liquidated (Aave's two largest, in a by-hand trial; Morpho's had no way down)."""
    from keeperd.devnet.morpho import compiled

    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)
    blue = devnet.manifest["morpho_blue"]
    market = blue["markets"]["WETH/USDC"]
    morpho_art, token = compiled()["Morpho"], contracts.aave("MintableERC20")
    params = (devnet.manifest["tokens"]["USDC"], devnet.manifest["tokens"]["WETH"],
              market["oracle"], market["irm"], market["lltv"])
    # $4.5M of WETH borrowing $2.98M (health 1.3): after WETH's 30 % fall, seizing for all
    # its debt sells ~$3.1M of WETH into a pool of ~$42M a side (-7 %, under the 3 % bound);
    # a quarter of it passes.
    whale = "0x00000000000000000000000000000000000A1e5E"
    weth = devnet.manifest["tokens"]["WETH"]
    collateral = int(4_500_000 / devnet.price("WETH") * 10**18)
    devnet.client.call("anvil_setBalance", whale, hex(10**19))
    devnet.client.send(whale, weth, token.encode_call("mint", whale, collateral))
    devnet.client.send(whale, weth, token.encode_call("approve", blue["morpho"], 2**256 - 1))
    devnet.client.send(whale, blue["morpho"], morpho_art.encode_call(
        "supplyCollateral", params, collateral, whale, b""), gas=500_000)
    devnet.client.send(whale, blue["morpho"], morpho_art.encode_call(
        "borrow", params, int(4_500_000 * 0.86 / 1.3 * 10**6), 0, whale, whale),
        gas=500_000)
    devnet.client.call("anvil_setBalance", KEEPER, hex(100 * 10**18))  # gas, no tokens

    def whale_collateral() -> int:
        position = morpho_art.decode_result("position", devnet.client.eth_call(
            blue["morpho"], morpho_art.encode_call("position", bytes.fromhex(market["id"][2:]),
                                                   whale)))
        return int(position[2])

    keeper = await run_daemon(config(devnet, tmp_path, capital))
    await keeper.evaluated_at(devnet.client.block_number(), protocol="morpho")
    with structlog.testing.capture_logs() as logs:
        devnet.set_price("WETH", devnet.price("WETH") * 0.7)
        await keeper.evaluated_at(devnet.client.block_number(), protocol="morpho")
        for _ in range(12):
            devnet.align_pools()  # (the arbitrage a chain does between blocks)
            await keeper.evaluated_at(devnet.mine(1), protocol="morpho")
            if whale_collateral() < collateral // 2:
                break
    journal = keeper.daemon.executors["morpho"].journal
    # Seized in parts smaller than its whole, each through the pool, none reverted.
    whale_included = [e for e in await journal.by_status(J.INCLUDED)
                      if e.account.lower() == whale.lower()]
    assert whale_included, "the largest position was not liquidated"
    assert len(whale_included) >= 2  # (a quarter each time: more than one was needed)
    ratios = sorted(e.realised_profit_usd / e.expected_profit_usd
                    for e in await journal.by_status(J.INCLUDED))
    assert ratios[0] >= 0.95 and ratios[len(ratios) // 2] <= 1.1, ratios
    assert 0 < whale_collateral() < collateral // 2
    assert any("planned at half this size" in str(e.get("meaning")) for e in logs
               if e["event"] == "liquidation.swap_would_not_pay")
    assert await journal.by_status(J.REVERTED) == []
