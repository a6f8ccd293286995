"""What a plug-in's `cascade_depth` may use: the depth of a Uniswap V3 pool, read at a block."""

from __future__ import annotations

from keeperd.chain.calls import ContractCall, call_many
from keeperd.chain.rpc import RpcPool
from keeperd.risk.depth import ConstantProduct


async def uniswap_v3_depth(pool: RpcPool, address: str, asset: str, decimals: int,
                           block: int) -> ConstantProduct:
    token0, liquidity, slot0 = await call_many(pool, [
        ContractCall(address, "token0()", returns=["address"]),
        ContractCall(address, "liquidity()", returns=["uint128"]),
        ContractCall(address, "slot0()", returns=["uint160"])], block)
    for answer in (token0, liquidity, slot0):
        if isinstance(answer, Exception):
            raise answer
    return ConstantProduct.from_uniswap_v3(liquidity, slot0, token0.lower() == asset.lower(),
                                           decimals)
