"""One lying answer at start must not get the keeper's balance approved to an attacker (#28
item 1): the Aave pool keeperd approves and calls is pinned in the config, or agreed by every
endpoint that answers (and, with one endpoint, only one on this machine is believed)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import structlog
from eth_utils import function_signature_to_4byte_selector

from keeperd.devnet.handle import Devnet
from keeperd.protocols.aave_v3.liquidator import AaveLiquidator
from keeperd.protocols.sdk.contract import StartRefused
from tests.faults.chaos_proxy import ChaosProxy
from tests.keeper_harness import (  # noqa: F401 - fixtures
    KEEPER,
    config_for,
    fund_keeper,
    keeper_key_env,
)

ATTACKER = "0x000000000000000000000000000000000000bad1"
GET_POOL = "0x" + function_signature_to_4byte_selector("getPool()").hex()


def allowance(devnet: Devnet, token: str, spender: str) -> int:
    data = "0xdd62ed3e" + KEEPER[2:].lower().rjust(64, "0") + spender[2:].lower().rjust(64, "0")
    return int(devnet.client.call("eth_call", {"to": token, "data": data}, "latest"), 16)


async def test_endpoints_that_disagree_on_the_pool_refuse_the_start(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    fund_keeper(devnet)
    async with ChaosProxy(devnet.manifest["rpc_url"]) as liar:
        liar.call_lies[GET_POOL] = "0x" + ATTACKER[2:].rjust(64, "0")
        config = config_for(devnet, tmp_path, "liquidate", rpc_urls=[
            liar.url, devnet.manifest["rpc_url"]], key={"source": "env", "env": "KEEPER_KEY"})
        with pytest.raises(StartRefused, match="disagree on the Aave pool"):
            await run_daemon(config)
    # The invariant: nothing of the keeper's went anywhere — not one approval to the liar's.
    for token in devnet.manifest["tokens"].values():
        assert allowance(devnet, token, ATTACKER) == 0


async def test_a_pinned_pool_is_used_whatever_an_endpoint_says(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    fund_keeper(devnet)
    async with ChaosProxy(devnet.manifest["rpc_url"]) as liar:
        liar.call_lies[GET_POOL] = "0x" + ATTACKER[2:].rjust(64, "0")
        config = config_for(devnet, tmp_path, "liquidate", rpc_urls=[liar.url],
                            key={"source": "env", "env": "KEEPER_KEY"})
        aave = config.protocols[0].model_copy(update={"pool": devnet.manifest["aave_v3"]["pool"]})
        keeper = await run_daemon(config.model_copy(update={"protocols": [aave]}))
        await keeper.evaluated_at(devnet.client.block_number())
    for token in devnet.manifest["tokens"].values():
        assert allowance(devnet, token, ATTACKER) == 0
    pool = devnet.manifest["aave_v3"]["pool"]
    assert all(allowance(devnet, t, pool) > 0 for t in devnet.manifest["tokens"].values())


@pytest.mark.slow  # (the start asks again, with backoff, before it fails: ~15 s)
async def test_a_pin_the_provider_disagrees_with_is_said(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """A pinned pool stands whatever an endpoint says of the provider's (above); one the
    provider does not name is said at start, with both addresses: a wrong pin (a token's
    address here) failed as "getReservesList() failed on 0x…", naming neither (a trial)."""
    config = config_for(devnet, tmp_path, "alert-only")
    wrong = devnet.manifest["tokens"]["USDC"]
    aave = config.protocols[0].model_copy(update={"pool": wrong})
    with structlog.testing.capture_logs() as logs, \
            pytest.raises(Exception) as refused:
        await run_daemon(config.model_copy(update={"protocols": [aave]}))
    # (the refusal itself names the provider's pool: check-config prints only it)
    assert devnet.manifest["aave_v3"]["pool"].lower() in str(refused.value).lower()
    said = [e for e in logs if e["event"] == "aave.pinned_pool_differs"]
    assert said and said[0]["pinned"] == wrong
    assert said[0]["provider_says"].lower() == devnet.manifest["aave_v3"]["pool"].lower()


async def test_one_remote_endpoint_alone_is_not_believed() -> None:
    class Pool:
        endpoints = voters = [SimpleNamespace(safe_url="https://eth.provider.example/v2/***")]

        async def call_endpoint(self, ep: object, method: str, params: object) -> str:
            return "0x" + "00" * 12 + "11" * 20

    adapter = SimpleNamespace(
        name="aave", config=SimpleNamespace(pool=None, addresses_provider="0x" + "22" * 20),
        reader=SimpleNamespace(addresses=SimpleNamespace(pool="0x" + "11" * 20)), pool=Pool())
    liquidator = AaveLiquidator(adapter, SimpleNamespace(flash_liquidator=None),  # type: ignore[arg-type]
                                None, None)
    with pytest.raises(StartRefused, match="one remote RPC endpoint"):
        await liquidator._confirm_pool()


GET_SWAP_POOL = "0x" + function_signature_to_4byte_selector(
    "getPool(address,address,uint24)").hex()


async def test_a_lying_factory_answer_cannot_name_the_flash_swap_pool(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """#28 item 3: the flash path's swap pool was the factory's `getPool` answer, so one lying
    endpoint sent every seized collateral to its own contract (or, here, to an address with no
    code: nothing liquidated). It is derived now (CREATE2), the answer never asked: the crash
    is liquidated through the real pools, and nothing reaches the liar's address."""
    from tests.keeper_harness import crash_and_collect

    flash = devnet.manifest["flash_liquidator"]["address"]
    async with ChaosProxy(devnet.manifest["rpc_url"]) as liar:
        liar.call_lies[GET_SWAP_POOL] = "0x" + ATTACKER[2:].rjust(64, "0")
        config = config_for(devnet, tmp_path, "liquidate", rpc_urls=[liar.url],
                            key={"source": "env", "env": "KEEPER_KEY"}, capital="flash-loan",
                            flash_liquidator=flash,
                            uniswap_v3_factory=devnet.manifest["uniswap_v3"]["factory"])
        aave = config.protocols[0].model_copy(update={"pool": devnet.manifest["aave_v3"]["pool"]})
        keeper = await run_daemon(config.model_copy(update={"protocols": [aave]}))
        await keeper.evaluated_at(devnet.client.block_number())
        devnet.client.call("evm_setAutomine", False)
        try:
            _, journal, sent = await crash_and_collect(devnet, keeper)
            # (the crash's sales through the real pools, as many as each pool pays for
            # within the bound: the rest wait for arbitrage to bring the pools back)
            assert len(sent) >= 4
            devnet.mine(1)
        finally:
            devnet.client.call("evm_setAutomine", True)
        await keeper.evaluated_at(devnet.mine(1))
    assert {e.key for e in sent} <= {e.key for e in await journal.by_status("included")}
    erc20 = "0x70a08231" + ATTACKER[2:].rjust(64, "0")
    for token in devnet.manifest["tokens"].values():
        assert int(devnet.client.call("eth_call", {"to": token, "data": erc20}, "latest"),
                   16) == 0


@pytest.mark.parametrize("wrong", ["factory", "contract", "pool", "owner"])
async def test_a_flash_contract_that_sells_elsewhere_refuses_the_start(
        devnet: Devnet, tmp_path: Path, run_daemon, wrong: str) -> None:
    """keeperd checks the pools exist on the configured factory; the contract sells on its
    own: they must be one. An older FlashLiquidator (no `uniswapFactory()`) takes other
    calldata: refused with what to deploy. One deployed for another Aave pool, or owned by
    another address, would revert every liquidation: refused too."""
    from keeperd.devnet.uniswap import ours

    flash = devnet.manifest["flash_liquidator"]["address"]
    factory = devnet.manifest["uniswap_v3"]["factory"]
    pool, beneficiary = devnet.manifest["aave_v3"]["pool"], "0x" + "be" * 20
    deploy = ours("FlashLiquidator").deploy_data
    if wrong == "factory":
        factory = "0x" + "ab" * 20
    elif wrong == "contract":
        flash = pool  # code, but no uniswapFactory()
    elif wrong == "pool":
        flash = devnet.client.deploy(devnet.client.accounts()[0], deploy(
            ATTACKER, KEEPER, factory, beneficiary))
    else:
        flash = devnet.client.deploy(devnet.client.accounts()[0], deploy(
            pool, ATTACKER, factory, beneficiary))
    config = config_for(devnet, tmp_path, "liquidate", key={"source": "env", "env": "KEEPER_KEY"},
                        capital="flash-loan", flash_liquidator=flash, uniswap_v3_factory=factory)
    match = {"factory": "sells on the pools of", "contract": "answers no uniswapFactory",
             "pool": "liquidates on the Aave pool at", "owner": "is owned by"}[wrong]
    with pytest.raises(StartRefused, match=match):
        await run_daemon(config)


GET_VAULT = "0x" + function_signature_to_4byte_selector("getVault()").hex()


def curie_liquidate(devnet: Devnet, tmp_path: Path, rpc_urls: list[str],
                    vault: str | None = None):  # type: ignore[no-untyped-def]
    from keeperd.config import parse_config
    from tests.integration.test_curie import curie_config
    from tests.keeper_harness import KEEPER_KEY

    data = curie_config(devnet, tmp_path)
    data["chains"][0]["rpc_urls"] = rpc_urls
    data["keeper"] = {"mode": "liquidate", "key": {"source": "env", "env": "KEEPER_KEY"}}
    if vault is not None:
        data["protocols"][0]["vault"] = vault
    return parse_config(data, env={"KEEPER_KEY": KEEPER_KEY})


@pytest.mark.parametrize("case", ["disagree", "pinned-elsewhere"])
async def test_curies_vault_is_not_approved_on_one_lying_answer(
        devnet: Devnet, tmp_path: Path, run_daemon, case: str) -> None:
    """#28 item 1 for Curie: the Vault (approved the keeper's USDC, paid its deposits) came
    from one `getVault()` answer. One endpoint naming another vault refuses the start; a pin
    the ClearingHouse contradicts refuses it too; nothing is approved to the liar's."""
    fund_keeper(devnet)
    async with ChaosProxy(devnet.manifest["rpc_url"]) as liar:
        if case == "disagree":
            liar.call_lies[GET_VAULT] = "0x" + ATTACKER[2:].rjust(64, "0")
            config = curie_liquidate(devnet, tmp_path, [devnet.manifest["rpc_url"], liar.url])
            match = "disagree on Curie's Vault"
        else:
            config = curie_liquidate(devnet, tmp_path, [devnet.manifest["rpc_url"]],
                                     vault=ATTACKER)
            match = "pinned .* but the ClearingHouse names"
        with pytest.raises(StartRefused, match=match):
            await run_daemon(config)
    for token in devnet.manifest["tokens"].values():
        assert allowance(devnet, token, ATTACKER) == 0


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "agreed"])
async def test_a_pinned_or_agreed_vault_is_approved(
        devnet: Devnet, tmp_path: Path, run_daemon, pinned: bool) -> None:
    vault = devnet.manifest["perp_curie"]["vault"] if pinned else None
    fund_keeper(devnet)
    keeper = await run_daemon(curie_liquidate(devnet, tmp_path, [devnet.manifest["rpc_url"]],
                                              vault=vault))
    await keeper.evaluated_at(devnet.client.block_number(), protocol="curie")
    usdc = devnet.manifest["tokens"]["USDC"]
    vault = keeper.daemon.executors["curie"].liquidator.adapter.addresses["Vault"]
    assert allowance(devnet, usdc, vault) > 0


async def test_approvals_are_the_balance_and_follow_a_top_up(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """#28 item 1: the pool is approved the keeper's balance of each reserve, not
    `type(uint256).max`; a top-up is approved in turn within a few blocks (and nothing more)."""
    from keeperd.devnet import contracts

    fund_keeper(devnet)
    pool = devnet.manifest["aave_v3"]["pool"]
    erc20 = contracts.aave("MintableERC20")

    def balance(token: str) -> int:
        return int(erc20.decode_result("balanceOf", devnet.client.eth_call(
            token, erc20.encode_call("balanceOf", KEEPER)))[0])

    keeper = await run_daemon(config_for(devnet, tmp_path, "liquidate",
                                         key={"source": "env", "env": "KEEPER_KEY"}))
    await keeper.evaluated_at(devnet.mine(1))
    tokens = devnet.manifest["tokens"]
    for symbol, token in tokens.items():
        assert allowance(devnet, token, pool) == balance(token) > 0, symbol
    usdc, usdt = tokens["USDC"], tokens.get("USDT")
    minter = devnet.client.accounts()[0]  # (not the keeper: its nonce is keeperd's)
    for token in filter(None, (usdc, usdt)):
        devnet.client.send(minter, token, erc20.encode_call("mint", KEEPER, 10**12))
    assert allowance(devnet, usdc, pool) < balance(usdc)
    topped = devnet.client.block_number()
    for _ in range(12):
        await keeper.evaluated_at(devnet.mine(1))
    devnet.mine(1)  # (the approvals sent at the last evaluation)
    for token in filter(None, (usdc, usdt)):  # USDT: through zero, as it must
        assert allowance(devnet, token, pool) == balance(token)
    # Only USDT through zero: every token went through it, two approvals a top-up each.
    approvals: dict[str, list[int]] = {}
    for number in range(topped + 1, devnet.client.block_number() + 1):
        block = devnet.client.call("eth_getBlockByNumber", hex(number), True)
        for t in block["transactions"]:
            if t["from"].lower() == KEEPER.lower() and t["input"].startswith("0x095ea7b3"):
                approvals.setdefault(t["to"].lower(), []).append(int(t["input"][-64:], 16))
    assert approvals[usdc.lower()] == [balance(usdc)]
    if usdt:
        assert approvals[usdt.lower()] == [0, balance(usdt)]


BALANCE_OF_KEEPER = "0x70a08231" + KEEPER[2:].lower().rjust(64, "0")


@pytest.mark.parametrize("block_lie", [False, True], ids=["balance", "balance-and-block"])
async def test_a_lying_balance_cannot_raise_what_is_approved(
        devnet: Devnet, tmp_path: Path, run_daemon, block_lie: bool) -> None:
    """The allowance keeperd gives the pool is the keeper's balance (bounded approvals). One
    endpoint answering a huge balance approved that much: the keeper's later top-ups were
    exposed to the spender. Now the least any endpoint answers is approved — also when the
    liar names a block no other has for the others to be read at (they answered nothing,
    and its balance went alone: reading the change once more)."""
    from tests.faults.chaos_proxy import Fault

    fund_keeper(devnet)
    balance_of = {t: int(devnet.client.call("eth_call", {"to": t, "data": BALANCE_OF_KEEPER},
                                            "latest"), 16)
                  for t in devnet.manifest["tokens"].values()}
    async with ChaosProxy(devnet.manifest["rpc_url"]) as liar:
        liar.call_lies[BALANCE_OF_KEEPER] = "0x" + hex(10**30)[2:].rjust(64, "0")
        if block_lie:  # (in batches only: its probes, single calls, tell the truth)
            liar.faults["eth_blockNumber"] = Fault("answer", hex(10**9), batches_only=True)
        config = config_for(devnet, tmp_path, "liquidate", rpc_urls=[
            liar.url, devnet.manifest["rpc_url"]], key={"source": "env", "env": "KEEPER_KEY"})
        keeper = await run_daemon(config)
        await keeper.evaluated_at(devnet.client.block_number())
        assert liar.faulted["eth_call"] > 0  # it was asked, and lied
    pool = devnet.manifest["aave_v3"]["pool"]
    assert {t: allowance(devnet, t, pool) for t in balance_of} == balance_of


class ForgetfulProxy(ChaosProxy):
    """An endpoint that says it has no block of any hash."""

    async def _answer(self, call, head):  # type: ignore[no-untyped-def]
        if call.get("method") == "eth_getBlockByHash":
            self.faulted["eth_getBlockByHash"] += 1
            return {"jsonrpc": "2.0", "id": call.get("id"), "result": None}
        return await super()._answer(call, head)


async def test_one_endpoint_cannot_make_the_breaker_forget_a_trip(devnet: Devnet) -> None:
    """An automatic trip is forgotten at start when its chain no longer has the block it was
    observed at. That was one endpoint's word: a liar answering null for every block wiped
    the trips (and the clear-for hysteresis). Now a block is gone only when every endpoint
    that answers says so."""
    from keeperd.chain.rpc import RpcPool
    from keeperd.metrics import Metrics
    from keeperd.oracles.breaker import block_known

    head = devnet.client.call("eth_getBlockByNumber", "latest", False)["hash"]
    unknown = "0x" + "ab" * 32
    async with ForgetfulProxy(devnet.manifest["rpc_url"]) as liar:
        urls = [liar.url, devnet.manifest["rpc_url"]]
        async with RpcPool.from_urls("devnet", urls, metrics=Metrics()) as pool:
            assert await block_known(pool, head) is True
            assert await block_known(pool, unknown) is False  # every endpoint: gone
        async with RpcPool.from_urls("devnet", urls[:1], metrics=Metrics()) as alone:
            assert await block_known(alone, head) is False  # (one endpoint alone is believed)
        assert liar.faulted["eth_getBlockByHash"] == 3


APPROVE = "0x095ea7b3"


async def test_a_lie_that_usdt_takes_an_approval_over_its_allowance_costs_one_revert(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    """Which tokens need a zero approval first, the approval simulated from the keeper says;
    a single endpoint that says USDT takes one over its allowance made every top-up's
    approval revert on chain, unseen (an upkeep's revert was not even logged). Now the revert
    is said, and that token's approvals go through zero from then on."""
    from keeperd.devnet import contracts

    usdt = devnet.manifest["tokens"].get("USDT")
    if usdt is None:
        pytest.skip("a devnet without its USDT")
    fund_keeper(devnet)
    pool = devnet.manifest["aave_v3"]["pool"]
    erc20 = contracts.aave("MintableERC20")

    def balance() -> int:
        return int(erc20.decode_result("balanceOf", devnet.client.eth_call(
            usdt, erc20.encode_call("balanceOf", KEEPER)))[0])

    async with ChaosProxy(devnet.manifest["rpc_url"]) as liar, contextlib.AsyncExitStack() as stack:
        logs = stack.enter_context(structlog.testing.capture_logs())
        liar.call_lies[APPROVE] = "0x" + "1".rjust(64, "0")  # "accepted", of every approve
        keeper = await run_daemon(config_for(devnet, tmp_path, "liquidate", rpc_urls=[
            liar.url], key={"source": "env", "env": "KEEPER_KEY"}))
        await keeper.evaluated_at(devnet.mine(1))
        devnet.mine(1)
        assert allowance(devnet, usdt, pool) == balance() > 0  # (from zero: no lie matters)
        minter = devnet.client.accounts()[0]
        devnet.client.send(minter, usdt, erc20.encode_call("mint", KEEPER, 10**12))
        topped = devnet.client.block_number()
        for _ in range(40):
            await keeper.evaluated_at(devnet.mine(1))
            if allowance(devnet, usdt, pool) == balance():
                break
        # (anvil answers a read that races the block it is mining with that block's state:
        # the loop's last read saw the last approval before the head held it, and the blocks
        # read below ended before it — a CI run, [0x0, 0x1] without the last 0x1)
        await keeper.evaluated_at(devnet.mine(1))
        assert liar.faulted["eth_call"] > 0  # it was asked, and lied
    assert allowance(devnet, usdt, pool) == balance()
    sent: list[tuple[int, str]] = []  # (the amount, the receipt's status) of each approval
    for number in range(topped + 1, devnet.client.block_number() + 1):
        block = devnet.client.call("eth_getBlockByNumber", hex(number), True)
        for t in block["transactions"]:
            if (t["from"].lower(), t["to"].lower()) == (KEEPER.lower(), usdt.lower()) \
                    and t["input"].startswith(APPROVE):
                status = devnet.client.call("eth_getTransactionReceipt", t["hash"])["status"]
                sent.append((int(t["input"][-64:], 16), status))
    # One revert (the lie believed once), then through zero.
    assert [s for _, s in sent] == ["0x0", "0x1", "0x1"] and sent[1][0] == 0, sent
    said = [e for e in logs if e["event"] == "keeper.upkeep_reverted"]
    assert [e["subject"].lower() for e in said] == [usdt.lower()], said
