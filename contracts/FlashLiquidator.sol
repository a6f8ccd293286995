// SPDX-License-Identifier: MIT
pragma solidity 0.8.19;

/// @title keeperd's capital-free liquidator for Aave V3.
/// @notice One transaction: flash-borrow the debt asset from the Aave pool, liquidate the
///         position, swap the seized collateral back to the debt asset on a Uniswap V3 pool,
///         repay the flash loan with its premium, and keep the rest. It reverts — costing only
///         gas — unless at least `minProfit` of the debt asset is left, so a liquidation that
///         is no longer worth it (a competitor was first, the swap moved) never completes.
///         Only the owner (the keeper's address) may call it; profits are withdrawn by it.

interface IERC20Min {
    function approve(address spender, uint256 amount) external returns (bool);
    function transfer(address to, uint256 amount) external returns (bool);
    function balanceOf(address account) external view returns (uint256);
}

interface IAavePoolMin {
    function flashLoanSimple(address receiver, address asset, uint256 amount,
                             bytes calldata params, uint16 referralCode) external;
    function liquidationCall(address collateralAsset, address debtAsset, address user,
                             uint256 debtToCover, bool receiveAToken) external;
}

interface IUniswapV3PoolMin {
    function token0() external view returns (address);
    function swap(address recipient, bool zeroForOne, int256 amountSpecified,
                  uint160 sqrtPriceLimitX96, bytes calldata data)
        external returns (int256 amount0, int256 amount1);
}

contract FlashLiquidator {
    uint160 internal constant MIN_SQRT_RATIO_PLUS_ONE = 4295128740;
    uint160 internal constant MAX_SQRT_RATIO_MINUS_ONE =
        1461446703485210103287273052203988822378723970341;

    address public immutable owner;
    IAavePoolMin public immutable aavePool;

    // Set for the length of one liquidation, so callbacks can check who calls them.
    address private activeSwapPool;

    struct Job {
        address collateral;
        address debt;
        address user;
        uint256 debtToCover;
        address swapPool;
        uint256 minProfit;
    }

    event Liquidated(address indexed user, address indexed collateral, address indexed debt,
                     uint256 debtRepaid, uint256 collateralSeized, uint256 profit);

    error NotOwner();
    error NotPool();
    error NotEnoughProfit(uint256 left, uint256 wanted);

    constructor(address aavePool_, address owner_) {
        aavePool = IAavePoolMin(aavePool_);
        owner = owner_;
    }

    function liquidate(address collateral, address debt, address user, uint256 debtToCover,
                       address swapPool, uint256 minProfit) external {
        if (msg.sender != owner) revert NotOwner();
        bytes memory params = abi.encode(Job(collateral, debt, user, debtToCover, swapPool,
                                             minProfit));
        aavePool.flashLoanSimple(address(this), debt, debtToCover, params, 0);
    }

    /// Aave's flash-loan callback.
    function executeOperation(address asset, uint256 amount, uint256 premium,
                              address initiator, bytes calldata params)
        external returns (bool)
    {
        if (msg.sender != address(aavePool) || initiator != address(this)) revert NotPool();
        Job memory job = abi.decode(params, (Job));
        uint256 debtBefore = IERC20Min(asset).balanceOf(address(this)) - amount;

        // The pool pulls twice: up to `amount` for the liquidation, then the loan and premium.
        _forceApprove(asset, address(aavePool), 2 * amount + premium);
        uint256 collateralBefore = IERC20Min(job.collateral).balanceOf(address(this));
        aavePool.liquidationCall(job.collateral, asset, job.user, amount, false);
        uint256 seized = IERC20Min(job.collateral).balanceOf(address(this)) - collateralBefore;
        uint256 repaid = amount - (IERC20Min(asset).balanceOf(address(this)) - debtBefore);

        // Sell all the seized collateral for the debt asset.
        activeSwapPool = job.swapPool;
        bool zeroForOne = IUniswapV3PoolMin(job.swapPool).token0() == job.collateral;
        IUniswapV3PoolMin(job.swapPool).swap(
            address(this), zeroForOne, int256(seized),
            zeroForOne ? MIN_SQRT_RATIO_PLUS_ONE : MAX_SQRT_RATIO_MINUS_ONE, "");
        activeSwapPool = address(0);

        uint256 balance = IERC20Min(asset).balanceOf(address(this));
        uint256 owed = amount + premium;
        uint256 left = balance > debtBefore + owed ? balance - debtBefore - owed : 0;
        if (balance < debtBefore + owed || left < job.minProfit) {
            revert NotEnoughProfit(left, job.minProfit);
        }
        emit Liquidated(job.user, job.collateral, asset, repaid, seized, left);
        return true;
    }

    /// Uniswap V3's swap callback: pay what the pool is owed.
    function uniswapV3SwapCallback(int256 amount0Delta, int256 amount1Delta, bytes calldata)
        external
    {
        if (msg.sender != activeSwapPool || activeSwapPool == address(0)) revert NotPool();
        IUniswapV3PoolMin pool = IUniswapV3PoolMin(msg.sender);
        if (amount0Delta > 0) {
            _safeTransfer(pool.token0(), msg.sender, uint256(amount0Delta));
        }
        if (amount1Delta > 0) {
            _safeTransfer(tokenOne(pool), msg.sender, uint256(amount1Delta));
        }
    }

    function withdraw(address token, address to, uint256 amount) external {
        if (msg.sender != owner) revert NotOwner();
        _safeTransfer(token, to, amount);
    }

    /// USDT and its kind return nothing from transfer/approve: a call succeeds when it does
    /// not revert and returns either nothing or `true`.
    function _callToken(address token, bytes memory data) internal {
        (bool ok, bytes memory ret) = token.call(data);
        require(ok && (ret.length == 0 || abi.decode(ret, (bool))), "token call failed");
    }

    function _safeTransfer(address token, address to, uint256 amount) internal {
        _callToken(token, abi.encodeWithSelector(IERC20Min.transfer.selector, to, amount));
    }

    /// USDT refuses an approval from a non-zero allowance to a non-zero one: reset first.
    function _forceApprove(address token, address spender, uint256 amount) internal {
        _callToken(token, abi.encodeWithSelector(IERC20Min.approve.selector, spender, 0));
        _callToken(token, abi.encodeWithSelector(IERC20Min.approve.selector, spender, amount));
    }

    function tokenOne(IUniswapV3PoolMin pool) internal view returns (address) {
        (bool ok, bytes memory ret) = address(pool).staticcall(abi.encodeWithSignature("token1()"));
        require(ok);
        return abi.decode(ret, (address));
    }
}
