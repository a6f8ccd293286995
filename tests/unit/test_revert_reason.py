"""A reverted liquidation's reason, from the node's call trace (chain/revert_reason.py): the
deepest failed call's message, panic code or custom error by name, and where it failed.
(The tables of names against their sources: test_error_tables.py.)"""

from __future__ import annotations

from eth_utils import keccak

from keeperd.chain.revert_reason import decoded_revert, reason_of
from keeperd.protocols.aave_v3.errors import ERRORS

POOL, IMPL, TOKEN = "0x" + "aa" * 20, "0x" + "bb" * 20, "0x" + "cc" * 20


def error_string(message: str) -> str:
    data = message.encode()
    return ("0x08c379a0" + f"{32:064x}" + f"{len(data):064x}"
            + data.hex().ljust((len(data) + 31) // 32 * 64, "0"))


def call(to: str, output: str = "0x", error: str | None = "execution reverted",
         calls: list[dict[str, object]] | None = None, **extra: object) -> dict[str, object]:
    return {"type": "CALL", "to": to, "output": output, "error": error, "calls": calls or [],
            **extra}


def test_the_deepest_failure_speaks_by_its_message_its_panic_or_its_name() -> None:
    transfer = call(TOKEN, error_string("ERC20: transfer amount exceeds balance"))
    nested = call(POOL, calls=[call(TOKEN, error=None), call(IMPL, calls=[transfer])])
    assert reason_of(nested) == f"ERC20: transfer amount exceeds balance in {TOKEN}"
    named = call(POOL, calls=[call(IMPL, "0x930bb771")])
    assert reason_of(named, ERRORS) == f"HealthFactorNotBelowThreshold in {IMPL}"
    assert reason_of(named) == f"custom error 0x930bb771 in {IMPL}"  # (not known: its bytes)
    panic = call(POOL, "0x4e487b71" + f"{0x11:064x}")
    assert reason_of(panic) == f"panic 0x11 in {POOL}"
    said = call(POOL, "0x", revertReason="45")  # (the tracer's own decoding, when it has one)
    assert reason_of(said) == f"45 in {POOL}"
    ours = call(POOL, "0x" + keccak(text="NotEnoughProfit(uint256,uint256)")[:4].hex() + "00" * 64)
    assert reason_of(ours) == f"NotEnoughProfit in {POOL}"
    assert reason_of(call(POOL, "0x")) == f"execution reverted in {POOL}"
    assert reason_of(call(POOL, None)) == f"execution reverted in {POOL}"  # (no output)
    # The failed call, wherever it is among the calls; a tracer's empty reason is none.
    after = call(POOL, calls=[call(IMPL, error_string("no")), call(TOKEN, error=None)])
    assert reason_of(after) == f"no in {IMPL}"
    # A failure the caller caught and went on from is not why: the one it passed on is.
    caught = call(POOL, error_string("passed on"), calls=[
        call(IMPL, error_string("passed on")), call(TOKEN, error_string("caught"))])
    assert reason_of(caught) == f"passed on in {IMPL}"
    empty = call(POOL, error_string("from the output"), revertReason="")
    assert reason_of(empty) == f"from the output in {POOL}"
    assert reason_of({"error": "out of gas", "calls": []}) == "out of gas"  # (no address)
    bad_utf8 = call(POOL, "0x08c379a0" + f"{32:064x}" + f"{4:064x}" + "fffe6162".ljust(64, "0"))
    assert reason_of(bad_utf8) == f"\ufffd\ufffdab in {POOL}"


def test_a_trace_that_does_not_read_says_nothing_or_little() -> None:
    assert reason_of(None) is None and reason_of("junk") is None
    assert reason_of(call(POOL, error=None)) is None  # (nothing failed)
    loud = call(POOL, error_string("\x1b[2J" + "x" * 500))
    text = reason_of(loud)
    assert text is not None and len(text) == 200 and text.startswith("?[2Jxxx")
    deep: dict[str, object] = call(POOL)
    for _ in range(1000):  # (a trace nested deeper than any call stack: walked 64 deep)
        deep = call(POOL, calls=[deep])
    assert reason_of(deep) == f"execution reverted in {POOL}"


def test_a_waves_member_says_why_from_its_own_calls_failure() -> None:
    """KeeperWave's `CallFailed` carries the call's revert data (up to 256 bytes): a
    member's reason without a trace."""
    assert decoded_revert(error_string("health factor not below threshold")) == \
        "health factor not below threshold"
    assert decoded_revert("0x930bb771", ERRORS) == "HealthFactorNotBelowThreshold"
    assert decoded_revert("0x") is None and decoded_revert(error_string("\x00ok")) == "?ok"
