"""keeperd's wave executor on the devnet, from the operator's commands to a wave's receipt:
`keeperd wave deploy` puts KeeperWave at the address keeperd derives, `delegate` makes the
keeper's address run it, a wave from the keeper to itself makes its calls (a failing one not
undoing the others, a starved one skipped, a huge revert cut short), nobody else can make it
call anything, and `revoke` leaves an ordinary address. A lying endpoint stops `delegate`;
a running keeperd, or transactions of the key still pending, stop the commands that sign."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_abi import encode

from keeperd.cli import main
from keeperd.devnet import contracts
from keeperd.devnet.client import DevnetRpcError
from keeperd.devnet.handle import Devnet
from keeperd.devnet.solc import compile_sources
from keeperd.execution import wave_code as W
from keeperd.statelock import StateDirLock
from tests.faults.chaos_proxy import ChaosProxy, Fault
from tests.keeper_harness import KEEPER, KEEPER_KEY, fund_keeper

OTHER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # anvil's account 1
NOT_SELF = "0x29c3b7ee"  # KeeperWave's NotSelf()
# Reverts with 4,000 bytes of data: a wave must not pay to copy them all.
LOUD_REVERT_SOL = """
// SPDX-License-Identifier: MIT
pragma solidity 0.8.19;
contract LoudRevert {
    fallback() external {
        assembly { revert(0, 4000) }
    }
}
"""


def _config(devnet: Devnet, tmp_path: Path, rpc_urls: list[str] | None = None) -> Path:
    path = tmp_path / "keeperd.yaml"
    path.write_text(json.dumps({
        "state_dir": str(tmp_path / "state"),
        "chains": [{"name": "devnet", "chain_id": 31337,
                    "rpc_urls": rpc_urls or [devnet.manifest["rpc_url"]]}],
        "keeper": {"mode": "liquidate", "key": {"source": "env", "env": "KEEPER_KEY"}},
        "metrics": {"enabled": False},
    }))
    return path


def _wave(config: Path, action: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["wave", action, "--config", str(config), "--wait", "30"])
    out, err = capsys.readouterr()
    return code, out + err


def _code(devnet: Devnet, address: str) -> str:
    return str(devnet.client.call("eth_getCode", address, "latest")).lower()


def test_wave_status_only_reads_so_the_address_is_enough(
        devnet: Devnet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A read-only command asked for the private key (a by-hand trial): without it, the
    keeper's address in keeper.address does, and its absence is said with that fix."""
    monkeypatch.delenv("KEEPER_KEY", raising=False)
    config = _config(devnet, tmp_path)
    code, out = _wave(config, "status", capsys)
    assert code != 0 and "only reads: set keeper.address" in out, out
    raw = json.loads(config.read_text())
    raw["keeper"]["address"] = KEEPER
    config.write_text(json.dumps(raw))
    code, out = _wave(config, "status", capsys)
    assert code == 0 and f"keeper {KEEPER}" in out and "executor" in out, out


def test_deploy_delegate_wave_and_revoke(devnet: Devnet, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)
    fund_keeper(devnet)
    config = _config(devnet, tmp_path)
    assert _code(devnet, W.DEPLOYER) != "0x", "the devnet lacks the deployment proxy"
    code, out = _wave(config, "status", capsys)
    assert code == 0 and "executor none" in out and "`keeperd wave deploy`" in out

    # Delegating before the code is there is refused: the address would run nothing.
    code, out = _wave(config, "delegate", capsys)
    assert code == 1 and "`keeperd wave deploy` first" in out
    assert _code(devnet, KEEPER) == "0x"

    code, out = _wave(config, "deploy", capsys)
    assert code == 0, out
    assert W.is_wave_code(_code(devnet, W.WAVE_ADDRESS))
    assert "executor KeeperWave; keeper's address ordinary" in out
    code, out = _wave(config, "deploy", capsys)
    assert code == 0 and "already at" in out

    code, out = _wave(config, "delegate", capsys)
    assert code == 0, out
    assert _code(devnet, KEEPER) == "0xef0100" + W.WAVE_ADDRESS[2:].lower()
    assert "ready: the keeper's address runs KeeperWave" in out
    # check-config says how it will send, as run judges the address's code.
    assert main(["check-config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"keeper {KEEPER} on chains[0]: delegated to KeeperWave" in out, out

    # A wave: each call from the keeper's address, a failure not undoing the others.
    usdc = devnet.manifest["tokens"]["USDC"]
    token = contracts.aave("MintableERC20")
    loud = devnet.client.deploy(OTHER, bytes.fromhex(compile_sources(
        {"LoudRevert.sol": LOUD_REVERT_SOL})["LoudRevert"].bytecode[2:]))

    def balance(of: str) -> int:
        return int(devnet.client.call("eth_call", {"to": usdc, "data": "0x" + token.encode_call(
            "balanceOf", of).hex()}, "latest"), 16)

    before = balance(OTHER)
    calls = [
        W.WaveCall(usdc, 100_000, token.encode_call("transfer", OTHER, 1)),
        W.WaveCall(usdc, 100_000, token.encode_call("transfer", OTHER, 2**200)),  # reverts
        W.WaveCall(OTHER, 100_000, b"\x12\x34"),  # no code: not a success
        W.WaveCall(loud, 100_000, b""),
        W.WaveCall(usdc, 30_000_000, token.encode_call("transfer", OTHER, 2)),  # starved
        W.WaveCall(usdc, 100_000, token.encode_call("transfer", OTHER, 3)),
    ]
    receipt = devnet.client.send(KEEPER, KEEPER, W.encode_execute(calls), gas=2_000_000)
    assert int(receipt["status"], 16) == 1
    outcome = W.read_wave_logs(receipt["logs"], KEEPER)
    assert outcome is not None and outcome.calls == 6
    assert outcome.succeeded == frozenset({0, 5})
    assert set(outcome.failed) == {1, 2, 3}
    assert outcome.failed[2] == b"no code at target"
    assert len(outcome.failed[3]) == 256  # (of 4,000)
    assert outcome.starved == frozenset({4})
    assert balance(OTHER) - before == 1 + 3

    # Nobody else can make the keeper's address call anything.
    steal = W.encode_execute([W.WaveCall(usdc, 100_000, token.encode_call(
        "transfer", OTHER, balance(KEEPER)))])
    with pytest.raises(DevnetRpcError, match="reverted"):
        devnet.client.send(OTHER, KEEPER, steal, gas=500_000)
    with pytest.raises(DevnetRpcError, match=NOT_SELF):
        devnet.client.call("eth_call", {"from": OTHER, "to": KEEPER,
                                        "data": "0x" + steal.hex()}, "latest")
    assert balance(OTHER) - before == 4
    # Plain ETH still reaches the delegated address.
    paid = int(devnet.client.call("eth_getBalance", KEEPER, "latest"), 16)
    devnet.client.send(OTHER, KEEPER, b"", value=10**15)
    assert int(devnet.client.call("eth_getBalance", KEEPER, "latest"), 16) == paid + 10**15

    code, out = _wave(config, "revoke", capsys)
    assert code == 0, out
    assert _code(devnet, KEEPER) == "0x"
    code, out = _wave(config, "revoke", capsys)
    assert code == 0 and "nothing to revoke" in out
    # Delegated to code keeperd did not put there: check-config fails as run would hold.
    from tests.integration.test_key_in_use import delegate

    delegate(devnet, devnet.manifest["aave_v3"]["pool"])
    assert main(["check-config", str(config)]) == 2
    out = "".join(capsys.readouterr())
    assert "keeper.allowed_delegates" in out and "code keeperd did not put there" in out, out


async def test_a_lying_endpoint_stops_the_delegation(devnet: Devnet, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)
    fund_keeper(devnet)
    honest = _config(devnet, tmp_path)
    code, out = await asyncio.to_thread(_wave, honest, "deploy", capsys)
    assert code == 0, out
    assert W.is_wave_code(_code(devnet, W.WAVE_ADDRESS))
    async with ChaosProxy(devnet.manifest["rpc_url"]) as liar:
        liar.faults["eth_getCode"] = Fault.answer("0x")
        config = _config(devnet, tmp_path, [devnet.manifest["rpc_url"], liar.url])
        code, out = await asyncio.to_thread(_wave, config, "delegate", capsys)
    assert code == 1 and "disagree on the code at " + W.WAVE_ADDRESS in out
    assert ": none" in out and ": KeeperWave" in out
    assert _code(devnet, KEEPER) == "0x"


def test_commands_that_sign_wait_for_the_daemon_and_the_pool(
        devnet: Devnet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)
    fund_keeper(devnet)
    config = _config(devnet, tmp_path)
    with StateDirLock(tmp_path / "state"):  # (as a running keeperd holds it)
        code, out = _wave(config, "deploy", capsys)
    assert code == 1 and "keeperd is running on" in out and "stop it first" in out
    assert _code(devnet, W.WAVE_ADDRESS) in ("0x", "0x0")
    # A transaction of the key's still in the pool: nothing signed beside it.
    devnet.client.call("evm_setAutomine", False)
    try:
        devnet.client.call("eth_sendTransaction", {"from": KEEPER, "to": OTHER, "value": "0x1"})
        code, out = _wave(config, "deploy", capsys)
        assert code == 1 and "still waiting in the node's pool" in out
    finally:
        devnet.client.call("evm_setAutomine", True)
        devnet.mine(1)
    # A remote signer: the command says how instead.
    remote = json.loads(config.read_text())
    remote["keeper"]["key"] = {"source": "remote", "url": "http://127.0.0.1:9/",
                               "address": KEEPER}
    config.write_text(json.dumps(remote))
    code, out = _wave(config, "delegate", capsys)
    assert code == 2 and "local key" in out and KEEPER_KEY[2:] not in out


# Calls back into the keeper's `execute` (as a liquidation's callback could), asking it to
# send everything to the caller; bubbles the answer up.
REENTER_SOL = """
// SPDX-License-Identifier: MIT
pragma solidity 0.8.19;
contract Reenter {
    bytes public steal;
    function set(bytes calldata data) external { steal = data; }
    fallback() external {
        (bool ok, bytes memory reason) = msg.sender.call(steal);
        if (!ok) assembly { revert(add(reason, 32), mload(reason)) }
    }
}
"""
# Fails unless it was given at least the gas its calldata names (less what its first opcodes
# take): a call made with less than its own limit shows as a failure, not a success.
GAS_PROBE_SOL = """
// SPDX-License-Identifier: MIT
pragma solidity 0.8.19;
contract GasProbe {
    fallback() external {
        assembly { if lt(add(gas(), 200), calldataload(0)) { revert(0, 0) } }
    }
}
"""


def _delegated(devnet: Devnet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(devnet, tmp_path)
    for action in ("deploy", "delegate"):
        code, out = _wave(config, action, capsys)
        assert code == 0, out


def _deploy(devnet: Devnet, source: str, name: str) -> str:
    return devnet.client.deploy(OTHER, bytes.fromhex(compile_sources(
        {f"{name}.sol": source})[name].bytecode[2:]))


def test_a_callback_cannot_make_the_keeper_call_anything(
        devnet: Devnet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)
    fund_keeper(devnet)
    _delegated(devnet, tmp_path, capsys)
    usdc = devnet.manifest["tokens"]["USDC"]
    token = contracts.aave("MintableERC20")
    reenter = _deploy(devnet, REENTER_SOL, "Reenter")
    held = int(devnet.client.call("eth_call", {"to": usdc, "data": "0x" + token.encode_call(
        "balanceOf", KEEPER).hex()}, "latest"), 16)
    steal = W.encode_execute([W.WaveCall(usdc, 100_000, token.encode_call(
        "transfer", reenter, held))])
    set_steal = bytes.fromhex("0399321e") + encode(["bytes"], [steal])  # set(bytes)
    devnet.client.send(OTHER, reenter, set_steal)
    receipt = devnet.client.send(KEEPER, KEEPER, W.encode_execute(
        [W.WaveCall(reenter, 300_000, b"\x01")]), gas=1_000_000)
    outcome = W.read_wave_logs(receipt["logs"], KEEPER)
    assert outcome is not None and outcome.succeeded == frozenset()
    assert outcome.failed[0][:4] == bytes.fromhex(NOT_SELF[2:])
    assert int(devnet.client.call("eth_call", {"to": usdc, "data": "0x" + token.encode_call(
        "balanceOf", KEEPER).hex()}, "latest"), 16) == held


def test_a_call_gets_its_own_limit_or_is_skipped_never_less(
        devnet: Devnet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Swept over the wave's gas around the edge where the call no longer fits: at every
    limit, the call either ran with all of its own gas or was skipped as starved (a call
    made with less would fail, and read as a race lost)."""
    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)
    _delegated(devnet, tmp_path, capsys)
    probe = _deploy(devnet, GAS_PROBE_SOL, "GasProbe")
    call_gas = 200_000
    data = W.encode_execute([W.WaveCall(probe, call_gas, call_gas.to_bytes(32, "big"))])
    seen: dict[str, int] = {}
    for wave_gas in range(call_gas + 3_000, call_gas + 60_000, 500):
        [block] = devnet.client.call("eth_simulateV1", {"blockStateCalls": [{"calls": [{
            "from": KEEPER, "to": KEEPER, "data": "0x" + data.hex(),
            "gas": hex(wave_gas)}]}]}, "latest")
        [result] = block["calls"]
        if int(result["status"], 16) != 1:
            seen["wave out of gas"] = seen.get("wave out of gas", 0) + 1
            continue
        outcome = W.read_wave_logs(result["logs"], KEEPER)
        assert outcome is not None, result
        assert not outcome.failed, (wave_gas, outcome)
        kind = "made" if outcome.ok(0) else "starved"
        assert kind == "made" or outcome.starved == frozenset({0})
        seen[kind] = seen.get(kind, 0) + 1
    assert seen.get("made") and seen.get("starved"), seen  # (the sweep crossed the edge)
    # The limit keeperd gives such a wave is past the edge.
    limit = W.wave_gas_limit([W.WaveCall(probe, call_gas, call_gas.to_bytes(32, "big"))])
    [block] = devnet.client.call("eth_simulateV1", {"blockStateCalls": [{"calls": [{
        "from": KEEPER, "to": KEEPER, "data": "0x" + data.hex(), "gas": hex(limit)}]}]},
        "latest")
    outcome = W.read_wave_logs(block["calls"][0]["logs"], KEEPER)
    assert outcome is not None and outcome.ok(0)


async def test_a_cancel_from_the_delegated_keeper_is_mined_not_reverted(
        devnet: Devnet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A cancel is a transfer of nothing to the keeper's own address; delegated, that address
    runs KeeperWave's `receive`, which 21,000 gas does not cover (the nonce taken, the
    transaction reverted). The transaction manager gives it room once it reads the code."""
    import asyncio

    from eth_account import Account

    from keeperd.chain.rpc import RpcPool
    from keeperd.execution.txmanager import TxManager
    from keeperd.keys import KeeperKey
    from keeperd.metrics import Metrics

    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)
    await asyncio.to_thread(_delegated, devnet, tmp_path, capsys)
    async with RpcPool.from_urls("devnet", [devnet.manifest["rpc_url"]]) as pool:
        tx = TxManager(pool, KeeperKey(Account.from_key(KEEPER_KEY)), 31337,
                       metrics=Metrics())
        await tx.check_code(None)
        gas = tx._cancel_gas()
    assert tx.runs_wave_executor
    short = devnet.client.call("eth_sendTransaction", {"from": KEEPER, "to": KEEPER,
                                                        "gas": hex(21_000)})
    assert devnet.client.wait_receipt(short)["status"] == "0x0"
    cancel = devnet.client.call("eth_sendTransaction", {"from": KEEPER, "to": KEEPER,
                                                         "gas": hex(gas)})
    assert devnet.client.wait_receipt(cancel)["status"] == "0x1"


async def test_the_wave_commands_refuse_while_a_replica_holds_the_keys_lease(
        devnet: Devnet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], postgres_dsn: str) -> None:
    """With replicas the state directory's lock knows only this machine's keeperd: a revoke
    run beside a live leader elsewhere was read by it as another sender on the key, and held
    its liquidations for 10 blocks (a by-hand trial). The shared database's lease says one
    runs."""
    import asyncio

    from keeperd.storage.lease import Lease, identity_of

    monkeypatch.setenv("KEEPER_KEY", KEEPER_KEY)
    fund_keeper(devnet)
    path = _config(devnet, tmp_path)
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "storage": {"url": postgres_dsn}}))
    leader = Lease(postgres_dsn, identity_of(KEEPER, [31337]), holder="replica-a",
                   address=KEEPER, chain_ids=[31337])
    await leader.connect()
    try:
        assert await leader.try_acquire() is not None
        for action in ("deploy", "delegate", "revoke"):
            code, out = await asyncio.to_thread(_wave, path, action, capsys)
            assert code == 1 and "replica replica-a holds the lease of this key" in out, out
        assert _code(devnet, W.WAVE_ADDRESS) == "0x"  # (nothing sent)
        await leader.release()
        code, out = await asyncio.to_thread(_wave, path, "deploy", capsys)
        assert code == 0, out  # (no replica running: as without replicas)
    finally:
        await leader.close()
