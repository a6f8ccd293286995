"""Bounded approvals: the keeper's allowance to a spender (Aave's pool, Curie's Vault, Morpho)
is its balance of the token, not `type(uint256).max`.

An allowance of the whole balance is what own-capital liquidation needs: each liquidation
lowers both by what the spender pulls, so the allowance stays at least the balance and no
liquidation waits on an approval. What it bounds is a top-up: USDC sent to the keeper later is
not exposed to the spender (a proxy upgraded to something hostile, a pool bug) until keeperd
looks again and approves the new balance — at start and every few blocks
(`Executor.publish_balances`), never in the middle of a wave. Tokens that refuse an approval
from a non-zero allowance (USDT) are set to zero first: which ones, the approval simulated
from the keeper says (every token went through zero, two transactions a top-up each: a
by-hand trial counted 17 approvals at one start).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from typing import Any

import structlog

from keeperd.chain.calls import ContractCall, call_many_at_latest
from keeperd.chain.multicall import encode_call
from keeperd.chain.rpc import Endpoint, RpcError, RpcPool, RpcUnavailable
from keeperd.execution.wave_code import WaveCall, encode_execute, wave_gas_limit
from keeperd.protocols.sdk.keys import UpkeepKey

log = structlog.get_logger(__name__)

APPROVE_GAS = 120_000
APPROVE_BUDGET_WEI = 10**18
WAVE_SUBJECT = "wave"  # an approval key's subject for a wave of them (a KeeperWave address)


async def keep_allowances(tx: Any, pool: RpcPool, *, protocol: str, keeper: str, spender: str,
                          tokens: Sequence[tuple[str, str]], head: int) -> list[str]:
    """Approve `spender` the keeper's balance of each (token, symbol) whose allowance is below
    it and has no approval of it in flight; the symbols approved. None while the key signs
    nothing (its address delegated to code not allowed: `TxManager.signing_held`), nor while
    another sender uses it (`key_conflict`: the liquidations' hold; the other would take the
    approval's nonce, or it the other's — a trial saw approvals sent through that hold)."""
    conflict = getattr(tx, "upkeep_hold", None) or getattr(tx, "key_conflict", None)
    held = tx.signing_held() or (conflict(head) if conflict is not None else None)
    if held is not None:
        log.warning("keeper.approvals_held", protocol=protocol, reason=held.reason)
        return []
    calls = [c for token, _ in tokens for c in (
        ContractCall(token, "allowance(address,address)", ["address", "address"],
                     [keeper, spender]),
        ContractCall(token, "balanceOf(address)", ["address"], [keeper]))]
    # (the others at the block the first answered at, asked in its batch: at the scan's
    # head, an approval mined since read as missing and went again)
    block, answers = await call_many_at_latest(pool, calls)
    others = await by_endpoint(pool, calls[1::2], block)
    if len(others) < len(pool.voters) or any(b is None for said in others for b in said):
        # (the block is the first endpoint's word: one it made up left the others without an
        # answer, and its own balance, however inflated, was approved — the endpoints that
        # said nothing there are asked at "latest", as before)
        others = await by_endpoint(pool, calls[1::2])
    approved = []
    wanted: list[tuple[str, str, list[int]]] = []  # (token, symbol, the amounts in turn)
    over: list[int] = []  # (those of `wanted` with an allowance already)
    for i, (token, symbol) in enumerate(tokens):
        allowance, balance = answers[2 * i], answers[2 * i + 1]
        for answer in (allowance, balance):
            if isinstance(answer, Exception):
                raise answer
        said = [b[i] for b in others if isinstance(b[i], int)]
        if said and min(said) < balance:
            log.warning("keeper.balance_disagreement", protocol=protocol, asset=symbol,
                        balance=str(balance), least=str(min(said)),
                        meaning="endpoints disagree on the keeper's balance: the least is "
                                "approved")
            balance = min(said)
        if allowance >= balance:
            continue
        if any(isinstance(key, UpkeepKey) and (key.protocol, key.action) == (protocol, "approve")
               and key.subject.lower() in (token.lower(), WAVE_SUBJECT) for key in tx.pending):
            # (by address, whatever its case: Curie's USDC read from the vault, lowercase, and
            # the same token checksummed from its addresses went as two approvals)
            continue  # one in flight already: its inclusion is what this waits for
        wanted.append((token, symbol, [balance]))
        if allowance:
            over.append(len(wanted) - 1)  # (from a non-zero allowance: USDT-like refuse it)
    await _zero_first_where_refused(pool, keeper, spender, [wanted[i] for i in over],
                                    reverted=getattr(tx, "approval_reverted", set()))
    if wanted and getattr(tx, "runs_wave_executor", False):
        # A delegated address has one transaction in flight at a time: every approval (a
        # USDT-like token's zero first) in one KeeperWave wave, not one a block.
        wave = [WaveCall(token, APPROVE_GAS, _approve(spender, amount))
                for token, _, amounts in wanted for amount in amounts]
        key = UpkeepKey(protocol, "approve", WAVE_SUBJECT, f"{len(wave)}@{head}")
        record = await tx.send(key, tx.address, encode_execute(wave, tx.address),
                               wave_gas_limit(wave), budget_wei=APPROVE_BUDGET_WEI * len(wave),
                               block=head)
        waves = getattr(tx, "approval_waves", None)
        if waves is not None:  # (each call's fate is read at the wave's settlement)
            waves[key] = [(token, amount) for token, _, amounts in wanted
                          for amount in amounts]
        for _, symbol, amounts in wanted:
            log.info("keeper.approval_sent", protocol=protocol, asset=symbol, spender=spender,
                     amount=str(amounts[-1]), tx_hash=record.tx_hash, wave=len(wave),
                     bounded="the keeper's balance, not unlimited")
        return [symbol for _, symbol, _ in wanted]
    for token, symbol, amounts in wanted:
        for amount in amounts:
            record = await tx.send(
                UpkeepKey(protocol, "approve", token, f"{amount}@{head}"), token,
                _approve(spender, amount), APPROVE_GAS, budget_wei=APPROVE_BUDGET_WEI,
                block=head)
            log.info("keeper.approval_sent", protocol=protocol, asset=symbol,
                     spender=spender, amount=str(amount), tx_hash=record.tx_hash,
                     bounded="the keeper's balance, not unlimited")
        approved.append(symbol)
    return approved


async def _zero_first_where_refused(pool: RpcPool, keeper: str, spender: str,
                                    over: list[tuple[str, str, list[int]]], *,
                                    reverted: Collection[str] = ()) -> None:
    """Put a zero approval first for each token (of those with an allowance already) that
    refuses the new amount over it, as USDT does: the approval simulated from the keeper (one
    batch). Unknown — an endpoint's failure — is a zero first, as before; so is a token an
    approval of which reverted on chain (`reverted`, lowercase: the simulation was wrong once,
    a single endpoint's lie or a token's change, and is not asked again)."""
    for token, _, amounts in over:
        if token.lower() in reverted:
            amounts.insert(0, 0)
    over = [w for w in over if w[0].lower() not in reverted]
    if not over:
        return
    calls = [("eth_call", [{"from": keeper, "to": token,
                            "data": "0x" + _approve(spender, amounts[-1]).hex()}, "latest"])
             for token, _, amounts in over]
    try:
        answers: list[Any] = await pool.batch(calls)
    except (RpcError, RpcUnavailable):
        answers = [RpcError("eth_call", 0, "not asked")] * len(over)
    # (and every other endpoint that answers must agree: one saying "accepted" of a token
    # that refuses would make its every top-up fail on chain)
    elsewhere = await asyncio.gather(*(pool.batch_on(ep, calls) for ep in pool.voters),
                                     return_exceptions=True) if len(pool.voters) > 1 else []
    for i, ((_, _, amounts), answer) in enumerate(zip(over, answers, strict=True)):
        said = [a[i] for a in elsewhere if isinstance(a, list) and len(a) == len(over)]
        if not _approve_accepted(answer) or not all(map(_approve_accepted, said)):
            amounts.insert(0, 0)


def _approve_accepted(answer: Any) -> bool:
    """An approve's simulated answer that says it was taken: nothing returned (USDT-style
    tokens without a return value), or a true word. A revert, `false` (a token that refuses
    by returning it), or an answer that does not read: a zero first."""
    if not isinstance(answer, str) or not answer.startswith("0x"):
        return False
    data = answer[2:]
    if data == "":
        return True
    try:
        return len(data) == 64 and int(data, 16) != 0
    except ValueError:
        return False


def _approve(spender: str, amount: int) -> bytes:
    return encode_call("approve(address,uint256)", ["address", "uint256"], [spender, amount])


async def by_endpoint(pool: RpcPool, calls: Sequence[ContractCall],
                      block: int | str = "latest") -> list[list[Any]]:
    """Each call as each configured endpoint answers it at `block` (one batch each, side by
    side; a slot it did not answer, None): the keeper's balances, its margin. An endpoint
    that does not answer at all (or has no such block yet) says nothing. Empty with a single
    endpoint. At the block the first reading was taken at: each at "latest", a moment apart,
    disagreed during every crash (liquidations move the balances) — false
    `keeper.balance_disagreement` warnings in a by-hand trial."""
    return [said for _, said in await by_endpoint_named(pool, calls, block)]


async def by_endpoint_named(pool: RpcPool, calls: Sequence[ContractCall],
                            block: int | str = "latest") -> list[tuple[str, list[Any]]]:
    """`by_endpoint`, each answer with the endpoint's name: a disagreement logged says who
    said what (Curie's unwind prices)."""
    if len(pool.voters) < 2:
        return []

    async def ask(ep: Any) -> tuple[str, list[Any]]:
        return ep.name, await answers_on(pool, ep, calls, block)

    said = await asyncio.gather(*(ask(ep) for ep in pool.voters), return_exceptions=True)
    return [s for s in said if isinstance(s, tuple)]


async def answers_on(pool: RpcPool, ep: Endpoint, calls: Sequence[ContractCall],
                     block: int | str = "latest") -> list[Any]:
    """Each call as endpoint `ep` answers it at `block`, in one batch (a slot it did not
    answer, or not readably, None); `RpcUnavailable` when it does not answer at all."""
    answers = await pool.batch_on(ep, [("eth_call", c.params(block)) for c in calls])
    out: list[Any] = []
    for c, answer in zip(calls, answers, strict=True):
        try:
            out.append(c.decode(answer) if isinstance(answer, str) else None)
        except Exception:  # (a malformed answer says nothing)
            out.append(None)
    return out
