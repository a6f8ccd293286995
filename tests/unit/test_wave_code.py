"""keeperd's wave executor, its bytes and its address: the constants keeperd ships are what the
pinned solc makes of contracts/KeeperWave.sol, and the address is their CREATE2 address; a
wave's calldata and its receipt's events read as the contract writes them."""

from __future__ import annotations

from eth_abi import decode, encode
from eth_utils import keccak

from keeperd.devnet.solc import compile_project_contracts
from keeperd.execution import wave_code as W
from keeperd.execution.delegation import KeeperCode, read_code, refusal

KEEPER = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"
OTHER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_shipped_code_is_the_compiled_source() -> None:
    compiled = compile_project_contracts(["KeeperWave.sol"], metadata_hash=False)["KeeperWave"]
    assert compiled.bytecode == "0x" + W.CREATION_CODE.hex()
    assert "0x" + keccak(bytes.fromhex(compiled.deployed_bytecode[2:])).hex() \
        == W.RUNTIME_CODE_HASH
    assert W.is_wave_code(compiled.deployed_bytecode)
    assert not W.is_wave_code(compiled.deployed_bytecode + "00")
    assert not W.is_wave_code("0x")
    assert not W.is_wave_code("0xzz")
    # The selector and the events the contract's ABI declares.
    abi = {item["name"]: item for item in compiled.abi if "name" in item}
    assert [i["type"] for i in abi["execute"]["inputs"][0]["components"]] \
        == ["address", "uint256", "bytes"]
    assert {"WaveExecuted", "CallSucceeded", "CallFailed", "CallStarved"} <= set(abi)


# Pinned: once a KeeperWave has shipped, keys are delegated to its address. A change of the
# contract moves it: add the old address to PAST_WAVE_ADDRESSES (keys delegated to it keep
# signing) and pin the new one here.
SHIPPED = "0x3Fb0A80de1bc64B2F032F9C0Ae85A1CD53a08e6C"


def test_address_is_the_create2_address_of_the_code() -> None:
    assert W.WAVE_ADDRESS == SHIPPED, "KeeperWave moved: keep its old address allowed"
    assert SHIPPED not in W.PAST_WAVE_ADDRESSES
    assert W.wave_address() == W.WAVE_ADDRESS
    # (another salt or other code: another address)
    assert W.wave_address(salt=b"\x00" * 32) != W.WAVE_ADDRESS
    assert W.wave_address(creation_code=W.CREATION_CODE + b"\x00") != W.WAVE_ADDRESS
    assert W.deployment_input()[:32] == W.SALT == keccak(b"keeperd KeeperWave")


def test_execute_calldata() -> None:
    calls = [W.WaveCall(OTHER, 300_000, b"\x01\x02"), W.WaveCall(KEEPER, 5, b"")]
    data = W.encode_execute(calls)
    assert data[:4] == keccak(b"execute((address,uint256,bytes)[])")[:4]
    (decoded,) = decode(["(address,uint256,bytes)[]"], data[4:])
    assert [(a.lower(), g, d) for a, g, d in decoded] \
        == [(OTHER.lower(), 300_000, b"\x01\x02"), (KEEPER.lower(), 5, b"")]
    for wrong in ([], [calls[0]] * 257):
        try:
            W.encode_execute(wrong)
        except ValueError as exc:
            assert "1 to 256" in str(exc)
        else:
            raise AssertionError("a wave of 0 or 257 calls was encoded")


def test_gas_limit_covers_every_call_and_the_largest_share_kept_back() -> None:
    calls = [W.WaveCall(OTHER, 400_000, b"\x00" * 300)] * 16
    limit = W.wave_gas_limit(calls)
    own = 16 * 400_000
    assert limit > own + 400_000 // 63 + 16 * 20_000 + 21_000
    # ...and not wildly more (a limit is what the fee budget holds back)
    assert limit < own * 1.15


def _log(address: str, topics: list[str], data: bytes) -> dict[str, object]:
    return {"address": address, "topics": topics, "data": "0x" + data.hex()}


def _index(i: int) -> str:
    return "0x" + i.to_bytes(32, "big").hex()


def test_receipt_read_from_the_keepers_own_events_only() -> None:
    liquidation0 = _log(OTHER, ["0x" + "aa" * 32], b"first call's event")
    ok0 = _log(KEEPER.lower(), [W.CALL_SUCCEEDED, _index(0)], encode(["uint256"], [123_456]))
    # Another address's events of the same shape (any contract can emit them) are only that
    # call's logs: not a marker, not a second WaveExecuted.
    forged_fail = _log(OTHER, [W.CALL_FAILED, _index(2)], encode(["bytes"], [b"x"]))
    failed1 = _log(KEEPER, [W.CALL_FAILED, _index(1)], encode(["bytes"], [b"\x08\xc3\x79\xa0"]))
    liquidation2 = _log(OTHER, ["0x" + "bb" * 32], b"third call's event")
    ok2 = _log(KEEPER, [W.CALL_SUCCEEDED, _index(2)], encode(["uint256"], [99_000]))
    starved = _log(KEEPER, [W.CALL_STARVED, _index(3)], b"")
    forged = _log(OTHER, [W.WAVE_EXECUTED], encode(["uint256", "uint256"], [0b1111, 4]))
    executed = _log(KEEPER, [W.WAVE_EXECUTED], encode(["uint256", "uint256"], [0b101, 4]))
    outcome = W.read_wave_logs([liquidation0, ok0, forged_fail, failed1, liquidation2, ok2,
                                starved, forged, executed], KEEPER)
    assert outcome is not None
    assert outcome.calls == 4
    assert outcome.succeeded == frozenset({0, 2})
    assert dict(outcome.failed) == {1: b"\x08\xc3\x79\xa0"}
    assert outcome.starved == frozenset({3})
    assert outcome.ok(0) and not outcome.ok(1) and not outcome.ok(3)
    assert dict(outcome.gas) == {0: 123_456, 2: 99_000}
    # Each call's logs: those after the marker before it, up to its own.
    assert outcome.logs[0] == [liquidation0]
    assert outcome.logs[1] == [forged_fail]
    assert outcome.logs[2] == [liquidation2]
    assert outcome.logs[3] == []
    # A success bit without its marker is no success (the two must agree).
    unmarked = W.read_wave_logs([liquidation0, failed1, liquidation2, ok2, executed], KEEPER)
    assert unmarked is not None and unmarked.succeeded == frozenset({2})
    # No WaveExecuted of the keeper's (no KeeperWave ran: a reverted wave, a delegation gone),
    # two of them (no single wave), or one that does not decode: no outcome, so nothing is
    # called included.
    assert W.read_wave_logs([forged, ok0, failed1], KEEPER) is None
    assert W.read_wave_logs([executed, executed], KEEPER) is None
    assert W.read_wave_logs([ok0, _log(KEEPER, [W.WAVE_EXECUTED], b"\x01")], KEEPER) is None


def test_keepers_own_executor_is_never_refused() -> None:
    designator = "0xef0100" + W.WAVE_ADDRESS[2:].lower()
    code = read_code(designator)
    assert code == KeeperCode(delegate=W.WAVE_ADDRESS)
    assert refusal(KEEPER, code, frozenset(), 7) is None
    # ...while any other delegate is, unless listed
    other = read_code("0xef0100" + OTHER[2:].lower())
    hold = refusal(KEEPER, other, frozenset(), 7)
    assert hold is not None and "keeperd wave revoke" in hold.action
    assert refusal(KEEPER, other, frozenset({OTHER}), 7) is None


def test_receipt_edges() -> None:
    """What `make mutate` found unexercised: a removed log, another address's log and the
    keeper's own non-marker log in the middle, a marker without its success bit, a log
    without data, the exact bounds."""
    ok0 = _log(KEEPER, [W.CALL_SUCCEEDED, _index(0)], encode(["uint256"], [1]))
    removed = {**_log(KEEPER, [W.CALL_SUCCEEDED, _index(1)], encode(["uint256"], [1])),
               "removed": True}
    other = _log(OTHER, ["0x" + "cc" * 32], b"")
    own = _log(KEEPER, ["0x" + "dd" * 32], b"")  # (no marker: one of the call's logs)
    starved = {"address": KEEPER, "topics": [W.CALL_STARVED, _index(1)]}  # (no data at all)
    ok2 = _log(KEEPER, [W.CALL_SUCCEEDED, _index(2)], encode(["uint256"], [2]))
    executed = _log(KEEPER, [W.WAVE_EXECUTED], encode(["uint256", "uint256"], [0b001, 3]))
    outcome = W.read_wave_logs([ok0, removed, other, own, starved, ok2, executed], KEEPER)
    assert outcome is not None
    # The removed log is no marker; the others before call 1's are its logs, in order.
    assert outcome.logs[1] == [other, own]
    assert outcome.starved == frozenset({1})
    # Call 2's marker without its bit: no success (the bit and the marker must agree).
    assert outcome.succeeded == frozenset({0})
    assert dict(outcome.gas) == {0: 1, 2: 2}


def test_code_and_size_bounds() -> None:
    assert not W.is_wave_code("0x") and not W.is_wave_code("0") and not W.is_wave_code(None)
    assert not W.is_wave_code("0x0")
    assert not W.is_wave_code("1x" + "00" * 40)
    W.encode_execute([W.WaveCall(OTHER, 1, b"")] * W.MAX_CALLS)  # (256: the most)
    try:
        W.encode_execute([W.WaveCall(KEEPER, 1, b"")], KEEPER.lower())
    except ValueError as exc:
        assert str(exc) == "a wave's call to the keeper's own address"
    else:
        raise AssertionError("a call to the keeper was encoded")


def test_gas_limit_is_its_documented_budget() -> None:
    """The limit, term by term (wave_gas_limit's docstring): the calls' own limits, the
    largest's 1/63 kept back, 25,000 a call, 10,000, 21,000 and 16 gas a byte of calldata;
    or EIP-7623's floor, whichever is more."""
    calls = [W.WaveCall(OTHER, 300_000, b"\x01" * 200), W.WaveCall(OTHER, 630_000, b"")]
    data = (200 + 96) + (0 + 96) + 68
    budget = 21_000 + 16 * data + 930_000 + 630_000 // 63 + 25_000 * 2 + 10_000
    assert W.wave_gas_limit(calls) == budget
    heavy = [W.WaveCall(OTHER, 1, b"\x01" * 5_000), W.WaveCall(OTHER, 1, b"\x00" * 5_000)]
    encoded = W.encode_execute(heavy)
    zeros = encoded.count(0)
    assert W.wave_gas_limit(heavy) == 21_000 + 10 * zeros + 40 * (len(encoded) - zeros)
    assert W.wave_gas_limit([]) == 21_000 + 16 * 68 + 10_000
