"""A wave's settlement split into its liquidations' (execution/waves.py): each from its own
call's marker, with its own logs and an even share of the gas and the L1 data fee; nothing
of a wave trusted when its receipt does not show the wave keeperd journaled."""

from __future__ import annotations

from eth_abi import encode

from keeperd.execution import wave_code as W
from keeperd.execution.txmanager import Outcome
from keeperd.execution.waves import split_wave
from keeperd.protocols.sdk.keys import OpportunityKey, WaveKey

KEEPER = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"
POOL = "0x" + "11" * 20
MEMBERS = tuple(OpportunityKey("aave", f"0x{i:040x}", ("WETH", "DAI"), "1") for i in range(3))
WAVE = WaveKey("aave", MEMBERS)


def _log(address: str, topics: list[str], data: bytes = b"") -> dict[str, object]:
    return {"address": address, "topics": topics, "data": "0x" + data.hex()}


def _marker(topic: str, i: int, data: bytes = b"") -> dict[str, object]:
    return _log(KEEPER, [topic, "0x" + i.to_bytes(32, "big").hex()], data)


def _event(n: int) -> dict[str, object]:
    return _log(POOL, ["0x" + f"{n:064x}"], b"liquidation")


def receipt(bits: int, calls: int = 3, **extra: object) -> dict[str, object]:
    logs = [_event(0), _marker(W.CALL_SUCCEEDED, 0, encode(["uint256"], [210_000])),
            _marker(W.CALL_FAILED, 1, encode(["bytes"], [b"raced"])),
            _event(2), _marker(W.CALL_SUCCEEDED, 2, encode(["uint256"], [190_000])),
            _log(KEEPER, [W.WAVE_EXECUTED], encode(["uint256", "uint256"], [bits, calls]))]
    return {"status": "0x1", "blockNumber": "0x10", "transactionIndex": "0x2", "logs": logs,
            **extra}


def test_each_member_settles_from_its_own_call() -> None:
    outcome = Outcome(WAVE, "included", "0xabc", 300_001, 7, receipt(0b101, l1Fee="0x65"))
    members, read = split_wave(outcome, KEEPER)
    assert read is not None
    assert [m.key for m in members] == list(MEMBERS)
    assert [m.status for m in members] == ["included", "reverted", "included"]
    assert [m.gas_used for m in members] == [100_001, 100_000, 100_000]  # (adds up)
    assert [int(str(m.receipt["l1Fee"]), 16) for m in members if m.receipt] == [35, 33, 33]
    assert all(m.wave_size == 3 and m.tx_hash == "0xabc" and m.effective_gas_price == 7
               for m in members)
    # What each call used, to learn limits from (none for one that failed); why it failed.
    assert [m.call_gas for m in members] == [210_000, None, 190_000]
    assert [m.revert_data for m in members] == [None, b"raced", None]
    # Each member's receipt holds its call's logs only: its own protocol event.
    assert [m.receipt["logs"] for m in members if m.receipt] == [[_event(0)], [], [_event(2)]]
    assert all(m.receipt and m.receipt["blockNumber"] == "0x10" for m in members)


def test_a_receipt_that_is_not_the_journaled_wave_is_not_trusted() -> None:
    # No KeeperWave ran (mined as a call to an ordinary address): no call was made — each is
    # dropped (planned again), not a revert the breaker would count.
    plain = {"status": "0x1", "blockNumber": "0x10", "logs": []}
    members, read = split_wave(Outcome(WAVE, "included", "0xabc", 30_000, 7, plain), KEEPER)
    assert read is None and [m.status for m in members] == ["dropped"] * 3
    # Its own count of calls is not the wave's: nothing of it read.
    members, read = split_wave(Outcome(WAVE, "included", "0xabc", 30_000, 7,
                                       receipt(0b111, calls=4)), KEEPER)
    assert read is None and [m.status for m in members] == ["dropped"] * 3


def test_a_wave_that_did_not_run_settles_every_member_alike() -> None:
    for status in ("reverted", "cancelled", "dropped"):
        members, read = split_wave(Outcome(WAVE, status, "0xabc", 60_000, 7,
                                           receipt(0b111) if status == "reverted" else None),
                                   KEEPER)
        assert read is None
        assert [m.status for m in members] == [status] * 3
        assert sum(m.gas_used for m in members) == 60_000
        # A wave that reverted whole is one revert for the breaker, not three.
        assert [m.counts_revert for m in members] == (
            [True, False, False] if status == "reverted" else [True] * 3)


def test_limit_keeps_eip_7623s_floor_and_refuses_a_call_to_the_keeper() -> None:
    # Calls with much data and little gas: the calldata floor (40 gas a non-zero byte) is
    # above what the calls' own limits add up to.
    heavy = [W.WaveCall(POOL, 30_000, b"\x01" * 8_000)] * 16
    encoded = W.encode_execute(heavy)
    nonzero = len(encoded) - encoded.count(0)
    assert W.wave_gas_limit(heavy) >= 21_000 + 40 * nonzero + 10 * encoded.count(0)
    assert W.wave_gas_limit(heavy) > 16 * 30_000 + 16 * 25_000 + 21_000 + 16 * 16 * 8_100
    try:
        W.encode_execute([W.WaveCall(KEEPER.lower(), 1, b"")], KEEPER)
    except ValueError as exc:
        assert "keeper's own address" in str(exc)
    else:
        raise AssertionError("a wave calling the keeper itself was encoded")


def test_a_member_without_a_receipt_or_a_marker() -> None:
    # Cancelled: no receipt for anyone.
    members, _ = split_wave(Outcome(WAVE, "cancelled", "0xabc", 21_000, 7, None), KEEPER)
    assert [m.receipt for m in members] == [None] * 3
    # Mined, call 1's marker missing (its bit unset): its receipt holds no logs.
    logs = [_event(0), _marker(W.CALL_SUCCEEDED, 0, encode(["uint256"], [1])),
            _log(KEEPER, [W.WAVE_EXECUTED], encode(["uint256", "uint256"], [0b001, 3]))]
    members, read = split_wave(Outcome(WAVE, "included", "0xabc", 90_000, 7,
                                       {"status": "0x1", "logs": logs}), KEEPER)
    assert read is not None
    assert [m.receipt["logs"] for m in members if m.receipt] == [[_event(0)], [], []]
    assert [m.status for m in members] == ["included", "reverted", "reverted"]
