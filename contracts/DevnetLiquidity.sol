// SPDX-License-Identifier: MIT
pragma solidity 0.8.19;

/// @title Adds full-range liquidity to Uniswap V3 pools on the keeperd devnet.
/// @notice Uniswap V3's core pools take liquidity through a callback; the periphery's position
///         manager is not needed for a devnet, so this small helper pays the callback from its
///         own token balance.

interface IERC20L {
    function transfer(address to, uint256 amount) external returns (bool);
}

interface IUniswapV3PoolL {
    function token0() external view returns (address);
    function token1() external view returns (address);
    function mint(address recipient, int24 tickLower, int24 tickUpper, uint128 amount,
                  bytes calldata data) external returns (uint256 amount0, uint256 amount1);
}

contract DevnetLiquidity {
    function addFullRange(address pool, int24 tickSpacing, uint128 liquidity) external {
        int24 maxTick = (887272 / tickSpacing) * tickSpacing;
        IUniswapV3PoolL(pool).mint(address(this), -maxTick, maxTick, liquidity,
                                   abi.encode(pool));
    }

    function uniswapV3MintCallback(uint256 amount0, uint256 amount1, bytes calldata data)
        external
    {
        address pool = abi.decode(data, (address));
        require(msg.sender == pool, "not the pool");
        if (amount0 > 0) _safeTransfer(IUniswapV3PoolL(pool).token0(), pool, amount0);
        if (amount1 > 0) _safeTransfer(IUniswapV3PoolL(pool).token1(), pool, amount1);
    }

    /// Tokens like USDT return nothing from transfer: success is "did not revert, and returned
    /// nothing or true".
    function _safeTransfer(address token, address to, uint256 amount) internal {
        (bool ok, bytes memory ret) =
            token.call(abi.encodeWithSelector(IERC20L.transfer.selector, to, amount));
        require(ok && (ret.length == 0 || abi.decode(ret, (bool))), "transfer failed");
    }
}
