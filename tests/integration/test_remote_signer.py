"""A keeper whose key lives in a signer service: anvil's own `eth_signTransaction` for its
unlocked account 5 (the keeper), behind a JSON-RPC proxy that counts what it is asked (and,
for one test, answers something else)."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account

from keeperd.chain.multicall import encode_call
from keeperd.daemon import StartupError
from keeperd.devnet import contracts
from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from keeperd.execution.signer import RemoteSigner, SignerError, UnsignedTx
from keeperd.execution.txmanager import SendRefused
from keeperd.keys import KeeperKey
from tests.faults.chaos_proxy import ChaosProxy, Fault
from tests.keeper_harness import (
    KEEPER,
    KEEPER_KEY,
    config_for,
    fund_keeper,
)

ATTACKER = "0x" + "66" * 20
GWEI = 10**9


def nonce(devnet: Devnet) -> int:
    return int(devnet.client.call("eth_getTransactionCount", KEEPER, "latest"), 16)


def balance(devnet: Devnet, token: str) -> int:
    erc20 = contracts.aave("MintableERC20")
    return int(erc20.decode_result("balanceOf", devnet.client.eth_call(
        token, erc20.encode_call("balanceOf", KEEPER)))[0])


async def test_a_daemon_liquidates_through_a_remote_signer_and_signs_nothing_else(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """Every transaction the daemon sends (approvals, liquidations) is signed by the remote
    signer; a transfer of the keeper's tokens, or an approval to anyone but the pool, is
    refused before the signer is asked."""
    fund_keeper(devnet)
    before = nonce(devnet)
    async with ChaosProxy(devnet.manifest["rpc_url"]) as signer:
        keeper = await run_daemon(config_for(devnet, tmp_path, "liquidate", key={
            "source": "remote", "url": signer.url, "address": KEEPER}))
        await keeper.evaluated_at(devnet.client.block_number())
        devnet.client.call("evm_setAutomine", False)
        try:
            devnet.set_price_async("WETH", 2100.0)
            await keeper.evaluated_at(devnet.mine(1))
            await keeper.evaluated_at(devnet.mine(1))  # (the first wave lands)
        finally:
            devnet.client.call("evm_setAutomine", True)
        journal = keeper.daemon.executors["aave"].journal
        included = await journal.by_status(J.INCLUDED)
        assert len(included) > 10
        assert await journal.by_status(J.REVERTED) == []
        # The keeper's nonce moved once per signature the signer gave: nothing signed here.
        await keeper.evaluated_at(devnet.mine(1))
        assert signer.seen["eth_signTransaction"] == nonce(devnet) - before > len(included)

        tx = keeper.daemon.executors["aave"].tx
        usdc = devnet.manifest["tokens"]["USDC"]
        held, asked = balance(devnet, usdc), signer.seen["eth_signTransaction"]
        head = devnet.client.block_number()
        theft = encode_call("transfer(address,uint256)", ["address", "uint256"],
                            [ATTACKER, held])
        with pytest.raises(SendRefused, match="no call keeperd makes"):
            await tx.send("theft", usdc, theft, 100_000, 10**18, block=head)
        approval = encode_call("approve(address,uint256)", ["address", "uint256"],
                               [ATTACKER, 2**256 - 1])
        with pytest.raises(SendRefused, match="no spender keeperd approves"):
            await tx.send("theft:approve", usdc, approval, 100_000, 10**18, block=head)
        pool = devnet.manifest["aave_v3"]["pool"]
        with pytest.raises(SendRefused, match="no call keeperd makes"):  # the pool's withdraw
            await tx.send("theft:withdraw", pool, encode_call(
                "withdraw(address,uint256,address)", ["address", "uint256", "address"],
                [usdc, 2**256 - 1, ATTACKER]), 300_000, 10**18, block=head)
        assert signer.seen["eth_signTransaction"] == asked  # the signer was never asked
        assert balance(devnet, usdc) == held


async def test_local_and_remote_signers_sign_the_same_bytes(devnet: Devnet) -> None:
    tx = UnsignedTx(31337, 7, devnet.manifest["aave_v3"]["pool"], 0, b"\x00\xde\xad" * 30,
                    400_000, 80 * GWEI, 2 * GWEI)
    async with RemoteSigner(devnet.manifest["rpc_url"], KEEPER) as remote:
        await remote.check()
        assert await remote.sign(tx) == await KeeperKey(Account.from_key(KEEPER_KEY)).sign(tx)


async def test_a_signer_answering_another_transaction_is_caught(devnet: Devnet) -> None:
    """A signer (or whatever sits before it) that signs a different transaction than the
    one asked for — another recipient — or signs as another account: no bytes come out."""
    asked = UnsignedTx(31337, 7, devnet.manifest["aave_v3"]["pool"], 0, b"\x01\x02\x03\x04",
                       400_000, 80 * GWEI, 2 * GWEI)
    key = KeeperKey(Account.from_key(KEEPER_KEY))
    other = await key.sign(UnsignedTx(31337, 7, ATTACKER, 0, b"\x01\x02\x03\x04", 400_000,
                                      80 * GWEI, 2 * GWEI))
    stranger = await KeeperKey(Account.create()).sign(asked)
    async with (ChaosProxy(devnet.manifest["rpc_url"]) as proxy,
                RemoteSigner(proxy.url, KEEPER) as remote):
        proxy.faults["eth_signTransaction"] = Fault.answer("0x" + other.hex(), times=1)
        with pytest.raises(SignerError, match="different transaction"):
            await remote.sign(asked)
        proxy.faults["eth_signTransaction"] = Fault.answer("0x" + stranger.hex())
        with pytest.raises(SignerError, match="signed as 0x"):
            await remote.sign(asked)


async def test_a_signer_not_holding_the_keeper_account_stops_the_start(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    stranger = Account.create().address
    with pytest.raises(StartupError, match=rf"keeper.key: .*does not hold {stranger}"):
        await run_daemon(config_for(devnet, tmp_path, "liquidate", key={
            "source": "remote", "url": devnet.manifest["rpc_url"], "address": stranger}))
