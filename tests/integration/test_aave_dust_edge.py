"""A pair the dust rule blocks at the most the rules allow is liquidated with the smaller
amount that leaves the floor (#26 item 6), on the v3.6 devnet: the pool takes it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from keeperd.chain.multicall import Multicall
from keeperd.chain.rpc import RpcPool
from keeperd.devnet import contracts
from keeperd.devnet.handle import Devnet
from keeperd.protocols.aave_v3.liquidation import plan_liquidations
from keeperd.protocols.aave_v3.liquidator import liquidation_calldata
from keeperd.protocols.aave_v3.math import exact_account_data
from keeperd.protocols.aave_v3.reader import AaveV3Reader
from tests.keeper_harness import (
    KEEPER,
    LIQUIDATION_CALL_TOPIC,
    fund_keeper,
)


def open_position(devnet: Devnet, who: str) -> None:
    """1.5 WETH of collateral, 2,100 USDC and 200 USDT of debt (two debts: the pool would burn
    the other as bad debt if the collateral went)."""
    m = devnet.manifest
    token, pool_art = contracts.aave("MintableERC20"), contracts.aave("Pool")
    pool, weth = m["aave_v3"]["pool"], m["tokens"]["WETH"]
    devnet.client.call("anvil_setBalance", who, hex(10**20))
    devnet.client.send(who, weth, token.encode_call("mint", 15 * 10**17))
    devnet.client.send(who, weth, token.encode_call("approve", pool, 2**256 - 1))
    devnet.client.send(who, pool, pool_art.encode_call("supply", weth, 15 * 10**17, who, 0))
    for symbol, amount in (("USDC", 2_100), ("USDT", 200)):
        devnet.client.send(who, pool, pool_art.encode_call(
            "borrow", m["tokens"][symbol], amount * 10**6, 2, 0, who))


async def test_a_dust_blocked_pair_is_liquidated_with_the_smaller_amount(
        devnet: Devnet, pool: RpcPool) -> None:
    fund_keeper(devnet, approve=True)
    m = devnet.manifest
    who = devnet.client.accounts()[9]
    open_position(devnet, who)
    # WETH to 1,820: $2,730 of collateral, health 2,730 x 0.825 / 2,300 = 0.979 — above 0.95,
    # both reserves over $2,000: the pool would take half the total debt ($1,150) of USDC and
    # leave $950 of it: MustNotLeaveDust. Today's keeperd skipped the pair.
    devnet.set_price("WETH", 1_820.0)
    assert 0.95 < devnet.account_data(who)[5] / 1e18 < 1.0
    reader = await AaveV3Reader.resolve(Multicall(pool, address=m["multicall3"]),
                                        m["aave_v3"]["addresses_provider"], chain_id=31337)
    head = devnet.client.block_number()
    market = await reader.read_market(head)
    positions = await reader.read_positions([who], market, head, cross_check_every=0)
    [found] = plan_liquidations(market, positions, exact_account_data(market, positions))
    assert found.debt == "USDC" and found.amount_to_send is not None
    debt_before = devnet.account_data(found.account)[1]
    # Sent as type(uint256).max, the pool takes the most its rules allow — and refuses it.
    most = replace(found, amount_to_send=None)
    with pytest.raises(Exception, match="revert"):
        devnet.client.call("eth_estimateGas", {
            "from": KEEPER, "to": m["aave_v3"]["pool"],
            "data": "0x" + liquidation_calldata(most).hex()})
    # (estimated first: a MustNotLeaveDust would fail here, with its reason)
    receipt = devnet.client.send(KEEPER, m["aave_v3"]["pool"], liquidation_calldata(found))
    assert int(receipt["status"], 16) == 1  # the pool took it: no MustNotLeaveDust
    [event] = [e for e in receipt["logs"] if e["topics"][0] == LIQUIDATION_CALL_TOPIC]
    repaid, seized = int(event["data"][2:66], 16), int(event["data"][66:130], 16)
    assert repaid == found.amount_to_send == found.debt_to_cover
    assert abs(seized - found.collateral_seized) <= 1  # (one wei: interest of the block)
    # What is left of that debt is worth at least the floor.
    assert devnet.account_data(found.account)[1] < debt_before
