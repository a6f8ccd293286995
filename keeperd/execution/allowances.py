"""Dry-run simulates as liquidate would: with the keeper's allowances in place.

In `liquidate` mode a liquidator approves what the protocol pulls (Aave's pool, Morpho) before
its first send. `dry-run` sends nothing, approvals included, so the same simulation would fail
with `transferFrom reverted` and a dry-run through a crash would show nothing. Instead, each
dry-run simulation carries an `eth_call` state override that sets the keeper's allowance of the
repaid token to the call's target to the maximum, as the approval would.

Where that allowance lives in the token's storage is found, not assumed (tokens lay their
storage out differently, and proxies put it behind the implementation): `eth_createAccessList`
of `allowance(keeper, spender)` names the slots the token reads, and the one that, overridden,
makes `allowance` answer the maximum is it. Found once per (token, owner, spender).
"""

from __future__ import annotations

from typing import Any

import structlog

from keeperd.chain.multicall import encode_call
from keeperd.chain.rpc import RpcError, RpcPool, RpcUnavailable

log = structlog.get_logger(__name__)

MAX_UINT = 2**256 - 1
MAX_WORD = "0x" + "f" * 64


def allowance_call(owner: str, spender: str) -> bytes:
    return encode_call("allowance(address,address)", ["address", "address"], [owner, spender])


class AllowanceOverrides:
    """State overrides that approve the keeper's tokens to the call targets, for dry-run."""

    def __init__(self, pool: RpcPool) -> None:
        self.pool = pool
        self._slots: dict[tuple[str, str, str], str | None] = {}

    async def override(self, token: str, owner: str, spender: str) -> dict[str, Any] | None:
        """The override giving `spender` the maximum allowance of `owner`'s `token` (an
        `eth_call` state-override entry), or None when it cannot be found."""
        key = (token.lower(), owner.lower(), spender.lower())
        if key not in self._slots:
            self._slots[key] = await self._find_slot(token, owner, spender)
        slot = self._slots[key]
        return None if slot is None else {token: {"stateDiff": {slot: MAX_WORD}}}

    async def _find_slot(self, token: str, owner: str, spender: str) -> str | None:
        call = {"from": owner, "to": token, "data": "0x" + allowance_call(owner, spender).hex()}
        try:
            listed = await self.pool.request("eth_createAccessList", [call, "latest"])
            candidates = [slot for entry in listed.get("accessList") or []
                          if str(entry.get("address", "")).lower() == token.lower()
                          for slot in entry.get("storageKeys") or []]
            for slot in candidates:
                answer = await self.pool.request("eth_call", [
                    call, "latest", {token: {"stateDiff": {slot: MAX_WORD}}}])
                if isinstance(answer, str) and int(answer, 16) == MAX_UINT:
                    return str(slot)
        except (RpcError, RpcUnavailable, AttributeError, TypeError, ValueError) as exc:
            log.warning("dry_run.allowance_unknown", token=token, spender=spender,
                        error=str(exc)[:200],
                        meaning="dry-run simulations that repay with this token may fail "
                                "for want of an approval that liquidate mode would send")
            return None
        log.warning("dry_run.allowance_unknown", token=token, spender=spender,
                    error="no storage slot of the token holds this allowance",
                    meaning="dry-run simulations that repay with this token may fail for want "
                            "of an approval that liquidate mode would send")
        return None
