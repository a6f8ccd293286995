"""Typed contract calls for the reads that are not worth a multicall (start-up, once a block).

    balance = ContractCall(token, "balanceOf(address)", ["address"], [owner], ["uint256"])
    value = await balance.call(pool)                        # one eth_call -> 12345
    values = await call_many(pool, [balance, allowance])    # one JSON-RPC batch

A call that reverts raises `RpcError` from `call`; in `call_many` its slot holds the error, so
one bad contract does not hide the others' answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from eth_abi import decode

from keeperd.chain.multicall import encode_call
from keeperd.chain.rpc import RpcError, RpcPool

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ContractCall:
    to: str
    signature: str  # "balanceOf(address)"
    arg_types: Sequence[str] = ()
    args: Sequence[Any] = ()
    returns: Sequence[str] = field(default=("uint256",))
    sender: str | None = None
    gas: int | None = None

    @property
    def data(self) -> bytes:
        return encode_call(self.signature, list(self.arg_types), list(self.args))

    def params(self, block: int | str = "latest") -> list[Any]:
        tx: dict[str, Any] = {"to": self.to, "data": "0x" + self.data.hex()}
        if self.sender is not None:
            tx["from"] = self.sender
        if self.gas is not None:
            tx["gas"] = hex(self.gas)
        return [tx, hex(block) if isinstance(block, int) else block]

    def decode(self, raw: str) -> Any:
        """One return value as itself, several as a tuple."""
        data = bytes.fromhex(raw[2:] if raw.startswith("0x") else raw)
        if len(data) < 32 * len(self.returns):
            raise ShortAnswer("eth_call", -32000, f"{self.signature} on {self.to} returned "
                              f"{len(data)} bytes, not {32 * len(self.returns)}")
        values = decode(list(self.returns), data)
        return values[0] if len(values) == 1 else tuple(values)

    async def call(self, pool: RpcPool, block: int | str = "latest") -> Any:
        try:
            return self.decode(await pool.request("eth_call", self.params(block)))
        except ShortAnswer:
            [again] = await _short_elsewhere(pool, [self], block)
            if isinstance(again, Exception):
                raise again from None
            return again


class ShortAnswer(RpcError):
    """An eth_call answer shorter than its return types: a contract with no code there, or
    an endpoint that lies ("0x" for every call: the cascade's depth reads and the keeper's
    allowances failed every block while it stayed first, a by-hand trial)."""


async def _short_elsewhere(pool: RpcPool, calls: Sequence[ContractCall],
                           block: int | str) -> list[Any]:
    """`calls` whose answers were short, asked once of the second endpoint (`RpcPool.second`,
    one attempt): what it decodes stands; where it is short too, the call is — the address
    holds no such contract. Not a failover (a short answer may be right): a second
    opinion."""
    second = pool.second() if isinstance(pool, RpcPool) else None
    if second is None:
        return [ShortAnswer("eth_call", -32000, f"{c.signature} on {c.to}: a short answer")
                for c in calls]
    try:
        answers = await pool.batch_on(second, [("eth_call", c.params(block)) for c in calls])
    except Exception as exc:  # (the second's trouble: the first's short answer stands)
        return [ShortAnswer("eth_call", -32000, f"{c.signature} on {c.to}: a short answer "
                            f"(the second endpoint: {exc})") for c in calls]
    decoded = _decoded(calls, answers)
    if any(not isinstance(d, Exception) for d in decoded):
        log.warning("rpc.short_answer_elsewhere_long", chain=pool.chain,
                    endpoint=second.safe_url, calls=[c.signature for c in calls][:5],
                    meaning="the first endpoint answered these calls with less than they "
                            "return, the second in full: its answers were taken")
    return decoded


async def call_many(pool: RpcPool, calls: Sequence[ContractCall],
                    block: int | str = "latest") -> list[Any]:
    """Every call in one JSON-RPC batch; a failed one's slot holds its exception."""
    if not calls:
        return []
    out = _decoded(calls, await pool.batch([("eth_call", c.params(block)) for c in calls]))
    return await _with_short_asked_elsewhere(pool, calls, out, block)


async def _with_short_asked_elsewhere(pool: RpcPool, calls: Sequence[ContractCall],
                                      out: list[Any], block: int | str) -> list[Any]:
    short = [i for i, d in enumerate(out) if isinstance(d, ShortAnswer)]
    if short:
        again = await _short_elsewhere(pool, [calls[i] for i in short], block)
        for i, d in zip(short, again, strict=True):
            out[i] = d
    return out


async def call_many_at_latest(pool: RpcPool, calls: Sequence[ContractCall]
                              ) -> tuple[int | str, list[Any]]:
    """`call_many` at "latest", and the block that was: its number asked in the same batch
    ("latest" again when it does not read), for reading the same calls elsewhere at it."""
    raw = await pool.batch([("eth_blockNumber", []),
                            *(("eth_call", c.params("latest")) for c in calls)])
    try:
        block: int | str = int(str(raw[0]), 16)
    except ValueError:
        block = "latest"
    return block, await _with_short_asked_elsewhere(pool, calls, _decoded(calls, raw[1:]),
                                                    block)


def _decoded(calls: Sequence[ContractCall], answers: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for c, answer in zip(calls, answers, strict=True):
        if isinstance(answer, str):
            try:
                out.append(c.decode(answer))
            except (RpcError, ValueError) as exc:
                out.append(exc)
        else:
            out.append(answer)
    return out
