// SPDX-License-Identifier: MIT
pragma solidity 0.8.19;

/// @title Adds full-range liquidity to Uniswap V3 pools on the keeperd devnet, and plays the
///        arbitrageur who keeps each pool at the oracle's price.
/// @notice Uniswap V3's core pools take liquidity through a callback; the periphery's position
///         manager is not needed for a devnet, so this small helper pays the callback from its
///         own token balance. On a real chain a crash moves the pools first (arbitrage against
///         the exchanges) and the oracles follow; a devnet whose pools kept the old price
///         sold every seized collateral above the crashed price, and a keeper's sales through
///         one pool never met their bound. `align` moves pools to the oracle's price in the
///         transaction after the feed's new round, in the same block, minting what it pays
///         (the devnet's tokens mint to anyone).

interface IERC20L {
    function transfer(address to, uint256 amount) external returns (bool);
    function decimals() external view returns (uint8);
    function mint(address to, uint256 amount) external returns (bool);
}

interface IUniswapV3PoolL {
    function token0() external view returns (address);
    function token1() external view returns (address);
    function slot0() external view returns (uint160 sqrtPriceX96, int24 tick, uint16, uint16,
                                            uint16, uint8, bool);
    function mint(address recipient, int24 tickLower, int24 tickUpper, uint128 amount,
                  bytes calldata data) external returns (uint256 amount0, uint256 amount1);
    function swap(address recipient, bool zeroForOne, int256 amountSpecified,
                  uint160 sqrtPriceLimitX96, bytes calldata data)
        external returns (int256 amount0, int256 amount1);
}

interface IPriceOracleL {
    function getAssetPrice(address asset) external view returns (uint256);
}

contract DevnetLiquidity {
    uint160 internal constant MIN_SQRT_RATIO = 4295128739;
    uint160 internal constant MAX_SQRT_RATIO = 1461446703485210103287273052203988822378723970342;

    /// Each pool swapped to the price `oracle` gives its two tokens now (within a hundredth of
    /// a basis point of the square root: pools already there are left alone).
    function align(address[] calldata pools, address oracle) external {
        for (uint256 i = 0; i < pools.length; i++) {
            _align(IUniswapV3PoolL(pools[i]), IPriceOracleL(oracle));
        }
    }

    function _align(IUniswapV3PoolL pool, IPriceOracleL oracle) internal {
        uint256 target = _target(pool, oracle);
        if (target <= MIN_SQRT_RATIO || target >= MAX_SQRT_RATIO) return;
        (uint160 current,,,,,,) = pool.slot0();
        uint256 gap = target > current ? target - current : current - target;
        if (gap * 1_000_000 <= uint256(current)) return;
        bool zeroForOne = target < current; // selling token0 lowers its price
        pool.swap(address(this), zeroForOne, type(int128).max, uint160(target),
                  abi.encode(address(pool)));
    }

    /// sqrt(token1 units per token0 unit) x 2^96 at the oracle's prices; 0 if one is unpriced.
    function _target(IUniswapV3PoolL pool, IPriceOracleL oracle) internal view
        returns (uint256)
    {
        address token0 = pool.token0();
        address token1 = pool.token1();
        uint256 price0 = oracle.getAssetPrice(token0);
        uint256 price1 = oracle.getAssetPrice(token1);
        if (price0 == 0 || price1 == 0) return 0;
        // (price0 * 10^d1 << 128) / (price1 * 10^d0) fits 256 bits for any devnet price
        // (8-decimal USD prices, at most 18 decimals).
        uint256 ratioX128 = ((price0 * 10 ** IERC20L(token1).decimals()) << 128)
            / (price1 * 10 ** IERC20L(token0).decimals());
        return _sqrt(ratioX128) << 32;
    }

    function uniswapV3SwapCallback(int256 amount0Delta, int256 amount1Delta,
                                   bytes calldata data) external {
        address pool = abi.decode(data, (address));
        require(msg.sender == pool, "not the pool");
        if (amount0Delta > 0) _mintTo(IUniswapV3PoolL(pool).token0(), pool, uint256(amount0Delta));
        if (amount1Delta > 0) _mintTo(IUniswapV3PoolL(pool).token1(), pool, uint256(amount1Delta));
    }

    function _mintTo(address token, address to, uint256 amount) internal {
        require(IERC20L(token).mint(to, amount), "mint failed");
    }

    function _sqrt(uint256 x) internal pure returns (uint256 y) {
        if (x == 0) return 0;
        y = x;
        uint256 z = x / 2 + 1;
        while (z < y) {
            y = z;
            z = (x / z + z) / 2;
        }
    }
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
