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

from eth_abi import decode

from keeperd.chain.multicall import encode_call
from keeperd.chain.rpc import RpcError, RpcPool


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
            raise RpcError("eth_call", -32000, f"{self.signature} on {self.to} returned "
                           f"{len(data)} bytes, not {32 * len(self.returns)}")
        values = decode(list(self.returns), data)
        return values[0] if len(values) == 1 else tuple(values)

    async def call(self, pool: RpcPool, block: int | str = "latest") -> Any:
        return self.decode(await pool.request("eth_call", self.params(block)))


async def call_many(pool: RpcPool, calls: Sequence[ContractCall],
                    block: int | str = "latest") -> list[Any]:
    """Every call in one JSON-RPC batch; a failed one's slot holds its exception."""
    if not calls:
        return []
    return _decoded(calls, await pool.batch([("eth_call", c.params(block)) for c in calls]))


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
    return block, _decoded(calls, raw[1:])


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
