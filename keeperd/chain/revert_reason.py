"""Why a mined transaction reverted, from a node's call trace (`debug_traceTransaction` with
geth's `callTracer`, which anvil, geth, reth and the larger providers serve): for the log and
the journal only. A receipt says only that a transaction failed; an operator whose
liquidations revert needs the reason ("transfer amount exceeds balance" is capital, "health
factor not below threshold" a race or a wrong price) and had to trace them by hand. One
endpoint's word: it decides nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eth_utils import keccak

ERROR_STRING = "08c379a0"  # Error(string)
# keeperd's own contracts' custom errors (contracts/*.sol: KeeperWave, FlashLiquidator,
# MorphoLiquidator; tests/unit/test_revert_reason.py checks them against the sources).
OWN_SIGNATURES = (
    "NotSelf()", "WaveSize(uint256)", "NotMorpho()", "NoLiquidationInFlight()", "NotOwner()",
    "NotPool()", "NoSwapInFlight()", "BadCallback(int256,int256)",
    "SwapBelowBound(uint256,uint256)", "NotEnoughProfit(uint256,uint256)",
    "ZeroBeneficiary()", "BadAmount(uint256)",
)
OWN_ERRORS = {keccak(text=s)[:4].hex(): s.split("(")[0] for s in OWN_SIGNATURES}
PANIC = "4e487b71"  # Panic(uint256)
MAX_CHARS = 200
MAX_DEPTH = 64


def reason_of(trace: Any, errors: Mapping[str, str] | None = None) -> str | None:
    """The deepest failed call's reason, and the contract it failed in; None when the trace
    does not say (not a call trace, nothing failed). `errors`: custom errors' names by
    selector (the protocol's; keeperd's own contracts' are known here)."""
    if not isinstance(trace, dict) or not trace.get("error"):
        return None
    call: dict[str, Any] = trace
    for _ in range(MAX_DEPTH):
        failed = [c for c in call.get("calls") or [] if isinstance(c, dict) and c.get("error")]
        if not failed:
            break
        # (the one whose revert the caller passed on, by its data; a failure the caller
        # caught and went on from is not why: else the last)
        passed_on = [c for c in failed if c.get("output") and c.get("output") == call.get("output")]
        call = (passed_on or failed)[-1]
    said = call.get("revertReason")
    reason = (said if isinstance(said, str) and said else _decoded(
        call.get("output"), {**OWN_ERRORS, **(errors or {})}) or str(call.get("error")))
    where = call.get("to")
    return _printable(reason + (f" in {where}" if isinstance(where, str) else ""))


def decoded_revert(output: str, errors: Mapping[str, str] | None = None) -> str | None:
    """A revert's return data (hex) as text (`_decoded`), printable and bounded: a wave's
    member's own call's failure, as KeeperWave's event carries it."""
    said = _decoded(output, {**OWN_ERRORS, **(errors or {})})
    return None if said is None else _printable(said)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)[:MAX_CHARS]


def _decoded(output: Any, errors: Mapping[str, str]) -> str | None:
    """A revert's return data as text: Error(string)'s message, Panic's code, a custom
    error's name (its selector when not known)."""
    if not isinstance(output, str) or not output.startswith("0x") or len(output) < 10:
        return None
    selector, body = output[2:10].lower(), output[10:]
    try:
        if selector == ERROR_STRING:
            length = int(body[64:128], 16)
            return bytes.fromhex(body[128:128 + 2 * length]).decode("utf-8", "replace")
        if selector == PANIC:
            return f"panic 0x{int(body[:64], 16):x}"
    except ValueError:
        return None
    return errors.get(selector) or f"custom error 0x{selector}"
