"""Selling seized collateral on Uniswap V3, keeperd's half: every capital-free path (Aave's
FlashLiquidator, Morpho Blue's MorphoLiquidator, both on contracts/SeizedCollateralSeller.sol)
sells what it seized in the same transaction, and keeperd tells the contract how: which fee
tier, the least the sale may pay, the least profit it must keep. The pool itself is derived
here and in the contract alike, never asked for; the contract's factory is checked at start.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from keeperd.chain.calls import ContractCall
from keeperd.chain.rpc import RpcPool
from keeperd.protocols.sdk.contract import StartRefused

# keccak256 of Uniswap V3's pool creation code (v3-core 1.0): every pool is its factory's
# CREATE2 of it, salted with (token0, token1, fee). The same on Ethereum, Arbitrum, Base and
# in the devnet's pinned @uniswap/v3-core artifacts; contracts/SeizedCollateralSeller.sol has
# it too.
POOL_INIT_CODE_HASH = bytes.fromhex(
    "e34f199b19b2b4f47f68442619d555527d244f78a3297ea89325f843f87b8b54")
WAD = 10**18


def uniswap_v3_pool(factory: str, token_a: str, token_b: str, fee: int) -> str:
    """The Uniswap V3 pool of two tokens and a fee tier, derived as the factory's CREATE2
    places it: no RPC answer can point a swap at another contract."""
    token0, token1 = sorted((token_a, token_b), key=lambda a: int(a, 16))
    salt = keccak(abi_encode(["address", "address", "uint24"], [token0, token1, fee]))
    raw = keccak(b"\xff" + bytes.fromhex(factory.removeprefix("0x")) + salt
                 + POOL_INIT_CODE_HASH)
    return to_checksum_address(raw[12:])


def min_out_per_in(rate_numerator: int, rate_denominator: int, slippage_bps: int) -> int:
    """The least a sale may pay, in units bought per unit sold (x 1e18): the oracle's rate
    (`rate_numerator / rate_denominator` units bought per unit sold, exact) less the
    operator's `max_swap_slippage_bps` (the pool's fee, the sale's own price impact and what a
    sandwich would take). A rate, not an amount, so a seizure that differs from the plan at
    inclusion is bounded alike; rounded down."""
    return (rate_numerator * (10_000 - slippage_bps) * WAD
            // (rate_denominator * 10_000))


class SwapPools:
    """The pool of each pair, derived (CREATE2), never asked for; the chain is asked only
    whether it is deployed yet. Found ones are kept (a pool never moves); missing ones are
    asked again the next time a sale of the pair is wanted."""

    def __init__(self, pool: RpcPool, factory: str | None, fee: int) -> None:
        self.pool = pool
        self.factory = factory
        self.fee = fee
        self._found: dict[tuple[str, str], str] = {}

    async def find(self, pairs: Iterable[tuple[str, str]]) -> None:
        missing = [p for p in set(pairs) if not self._found.get(p)]
        if not missing or self.factory is None:
            return
        derived = [uniswap_v3_pool(self.factory, a, b, self.fee) for a, b in missing]
        codes = await self.pool.batch([("eth_getCode", [pool, "latest"]) for pool in derived])
        for pair, pool, code in zip(missing, derived, codes, strict=True):
            # (an error is no pool this time; a lie either way costs a failed simulation)
            deployed = isinstance(code, str) and len(code) > 2
            self._found[pair] = pool if deployed else ""

    def get(self, sold: str, bought: str) -> str | None:
        """The deployed pool of the pair, as of the last `find`; None when there is none."""
        return self._found.get((sold, bought)) or None


async def confirm_seller(pool: RpcPool, contract: str, factory: str | None, *, field: str,
                         name: str, owner: str | None = None) -> None:
    """A seller contract sells on its own factory's pools, and keeperd checks that a pool
    exists on the configured one: they must be the same. A contract without
    `uniswapFactory()` predates the derived pools and takes other calldata. It takes orders
    from its owner only: that must be the keeper (`owner`), or every send reverts."""
    ours = await answer(pool, contract, "uniswapFactory()", "address", field=field, name=name)
    if factory is None or to_checksum_address(ours) != to_checksum_address(factory):
        raise StartRefused(
            f"keeper.uniswap_v3_factory: {factory}, but the {name} {contract} "
            f"sells on the pools of {to_checksum_address(ours)}; set it to that factory "
            "or deploy the contract with this one")
    if owner is None:
        return
    theirs = to_checksum_address(await answer(pool, contract, "owner()", "address",
                                              field=field, name=name))
    if theirs != to_checksum_address(owner):
        raise StartRefused(
            f"{field}: {contract} is owned by {theirs}, not by the keeper {owner}, and "
            "refuses anyone else (NotOwner); deploy one with the keeper as owner")


async def answer(pool: RpcPool, contract: str, signature: str, returns: str, *, field: str,
                 name: str) -> Any:
    """One view of a seller contract, or StartRefused naming the config field: an address
    that does not answer it is not the contract keeperd expects."""
    try:
        return await ContractCall(contract, signature, returns=[returns]).call(pool)
    except Exception as exc:
        raise StartRefused(
            f"{field}: {contract} answers no {signature} ({exc}); it is not the current "
            f"contracts/{name}.sol. Deploy that (README, quick start) and point {field} at "
            "it") from exc


# The seller contracts' `Liquidated` events (contracts/FlashLiquidator.sol,
# contracts/MorphoLiquidator.sol): their data is (repaid, seized, profit), repaid and profit in
# the debt asset, the profit being what the beneficiary was sent in the same transaction.
SELLER_LIQUIDATED_TOPICS = frozenset(
    "0x" + keccak(text=signature).hex() for signature in (
        "Liquidated(address,address,address,uint256,uint256,uint256)",
        "Liquidated(address,bytes32,uint256,uint256,uint256)"))


def seller_outcome(receipt: dict[str, Any], contract: str) -> tuple[int, int] | None:
    """(repaid, profit) in debt-asset units from `contract`'s Liquidated event in the
    receipt; None when it has none (a liquidation not made through a seller contract)."""
    for entry in receipt.get("logs", []):
        topics = entry.get("topics") or []
        if (str(entry.get("address", "")).lower() == contract.lower() and topics
                and topics[0] in SELLER_LIQUIDATED_TOPICS):
            data = bytes.fromhex(str(entry.get("data", "0x"))[2:])
            if len(data) == 96:
                return int.from_bytes(data[:32], "big"), int.from_bytes(data[64:], "big")
    return None
