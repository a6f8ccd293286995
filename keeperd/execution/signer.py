"""Who signs the keeper's transactions: the key in this process (`keys.KeeperKey`), or a
signer service holding it (`RemoteSigner`: Web3Signer, or any node serving
`eth_signTransaction` for an account it holds).

Both take the same `UnsignedTx` and return the raw signed type-2 transaction. Neither is
used directly: the transaction manager signs through `signer_policy.PolicedSigner`, which
refuses whatever the keeper has no business signing before either is asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import coincurve
import rlp
from eth_utils import keccak, to_checksum_address

from keeperd.chain import rlp as fast_rlp
from keeperd.chain.rpc import redact_url


@dataclass(frozen=True)
class UnsignedTx:
    """An EIP-1559 transaction as keeperd builds it (no access list)."""

    chain_id: int
    nonce: int
    to: str
    value: int
    data: bytes
    gas: int
    max_fee: int
    tip: int

    def fields(self) -> list[Any]:
        """The unsigned RLP fields, in EIP-1559 order."""
        return [self.chain_id, self.nonce, self.tip, self.max_fee, self.gas,
                bytes.fromhex(self.to[2:]), self.value, self.data, []]

    def digest(self) -> bytes:
        """What the signature signs."""
        return keccak(b"\x02" + fast_rlp.encode(self.fields()))


class Signer(Protocol):
    """Signs for the keeper's address."""

    @property
    def address(self) -> str:
        """The keeper's address (checksummed)."""

    async def sign(self, tx: UnsignedTx) -> bytes:
        """The raw signed type-2 transaction. Raises SignerError when it cannot be had."""


class SignerError(Exception):
    """No signature: the signer is unreachable, refused, or returned something else than the
    transaction asked for. Nothing was signed that keeperd will send."""


def signed_by(raw: bytes, tx: UnsignedTx) -> str:
    """The address whose signature `raw` carries, after checking that `raw` is `tx` signed:
    the same fields, byte for byte. A remote signer (or whatever sits between) that signs a
    different transaction is caught here, before its bytes are journaled or sent."""
    if raw[:1] != b"\x02":
        raise SignerError("the signer returned a transaction that is not EIP-1559 (type 2)")
    try:
        items = rlp.decode(raw[1:])
    except Exception:
        raise SignerError("the signer returned bytes that are not an RLP transaction") from None
    if not isinstance(items, list) or len(items) != 12:
        raise SignerError("the signer returned a transaction with the wrong number of fields")
    if rlp.encode(items[:9]) != rlp.encode(tx.fields()):
        raise SignerError("the signer returned a different transaction than the one asked "
                          "for (another recipient, data, nonce, fee, gas or chain)")
    v, r, s = (int.from_bytes(x, "big") for x in items[9:])
    if v not in (0, 1) or not (0 < r < 2**256) or not (0 < s < 2**256):
        raise SignerError("the signer returned a malformed signature")
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v])
    try:
        public = coincurve.PublicKey.from_signature_and_message(signature, tx.digest(),
                                                                hasher=None)
    except Exception:
        raise SignerError("the signer returned a signature that recovers no key") from None
    return to_checksum_address(keccak(public.format(compressed=False)[1:])[-20:])


class RemoteSigner:
    """A signer service over JSON-RPC `eth_signTransaction`: the key never enters keeperd.
    Each answer is checked (`signed_by`): the transaction asked for, signed by the keeper."""

    def __init__(self, url: str, address: str, *, timeout_s: float = 5.0) -> None:
        self.url = url
        self._address = to_checksum_address(address)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._id = 0

    @property
    def address(self) -> str:
        return self._address

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)

    async def __aenter__(self) -> RemoteSigner:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def check(self) -> None:
        """At start: the signer answers and holds the keeper's account (`eth_accounts`)."""
        accounts = await self._call("eth_accounts", [])
        if not isinstance(accounts, list) or self._address.lower() not in {
                str(a).lower() for a in accounts}:
            raise SignerError(f"the signer at {self.safe_url} does not hold {self._address} "
                              f"(it holds {len(accounts) if isinstance(accounts, list) else 0}"
                              " other account(s))")

    async def sign(self, tx: UnsignedTx) -> bytes:
        answer = await self._call("eth_signTransaction", [{
            "from": self._address, "to": to_checksum_address(tx.to),
            "value": hex(tx.value), "data": "0x" + tx.data.hex(), "gas": hex(tx.gas),
            "maxFeePerGas": hex(tx.max_fee), "maxPriorityFeePerGas": hex(tx.tip),
            "nonce": hex(tx.nonce), "chainId": hex(tx.chain_id), "type": "0x2"}])
        # Web3Signer and anvil answer the raw hex; geth-style signers {"raw": ..., "tx": ...}.
        raw_hex = answer.get("raw") if isinstance(answer, dict) else answer
        if not isinstance(raw_hex, str) or not raw_hex.startswith("0x"):
            raise SignerError(f"the signer at {self.safe_url} answered no signed transaction")
        try:
            raw = bytes.fromhex(raw_hex[2:])
        except ValueError:
            raise SignerError(f"the signer at {self.safe_url} answered no hex") from None
        if (who := signed_by(raw, tx)) != self._address:
            raise SignerError(f"the signer at {self.safe_url} signed as {who}, not as the "
                              f"keeper {self._address}")
        return raw

    async def _call(self, method: str, params: list[Any]) -> Any:
        if self._session is None:
            raise SignerError("the remote signer is not open (use `async with`)")
        self._id += 1
        try:
            async with self._session.post(self.url, json={
                    "jsonrpc": "2.0", "id": self._id, "method": method, "params": params}
                    ) as response:
                if response.status != 200:
                    raise SignerError(f"the signer at {self.safe_url} answered HTTP "
                                      f"{response.status} to {method}")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SignerError(f"the signer at {self.safe_url} did not answer {method}: "
                              f"{type(exc).__name__}") from None
        if not isinstance(body, dict):
            raise SignerError(f"the signer at {self.safe_url} answered no JSON-RPC object")
        if body.get("error") is not None:
            error = body["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise SignerError(f"the signer at {self.safe_url} refused {method}: "
                              f"{str(message)[:200]}")
        return body.get("result")
