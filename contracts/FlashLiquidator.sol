// SPDX-License-Identifier: MIT
pragma solidity 0.8.19;

/// @title keeperd's capital-free liquidator for Aave V3.
/// @notice One transaction: flash-borrow the debt asset from the Aave pool, liquidate the
///         position, swap the seized collateral back to the debt asset on a Uniswap V3 pool,
///         repay the flash loan with its premium, and send the rest to the beneficiary. It
///         reverts — costing only gas — unless the swap pays at least the keeper's bound and
///         at least `minProfit` of the debt asset is left, so a liquidation that is no longer
///         worth it (a competitor was first, the swap moved) never completes.
///         Only the owner (the keeper's address) may call it. The swap pool is not taken from
///         the caller: it is the Uniswap factory's CREATE2 address for the two tokens and the
///         fee, and only that pool, once per swap, is paid — the token sold, at most the
///         amount seized.

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
    function swap(address recipient, bool zeroForOne, int256 amountSpecified,
                  uint160 sqrtPriceLimitX96, bytes calldata data)
        external returns (int256 amount0, int256 amount1);
}

contract FlashLiquidator {
    uint160 internal constant MIN_SQRT_RATIO_PLUS_ONE = 4295128740;
    uint160 internal constant MAX_SQRT_RATIO_MINUS_ONE =
        1461446703485210103287273052203988822378723970341;
    /// keccak256 of Uniswap V3's pool creation code (v3-core 1.0): every pool's address is
    /// the factory's CREATE2 of it, salted with (token0, token1, fee).
    bytes32 public constant POOL_INIT_CODE_HASH =
        0xe34f199b19b2b4f47f68442619d555527d244f78a3297ea89325f843f87b8b54;

    address public immutable owner;
    IAavePoolMin public immutable aavePool;
    address public immutable uniswapFactory;
    /// Where each liquidation's profit goes, in the same transaction.
    address public beneficiary;

    // The swap in flight: set just before the pool is called, spent by its one callback.
    struct ActiveSwap {
        address pool;
        bool zeroForOne;
        address token;   // the one the swap sells: the seized collateral
        uint256 maxIn;   // what was seized
    }
    ActiveSwap private active;

    struct Job {
        address collateral;
        address debt;
        address user;
        uint256 debtToCover;
        uint24 swapFee;
        uint256 minProfit;
        uint256 minOutPerIn;  // least debt-asset units per collateral unit sold, x 1e18
    }

    event Liquidated(address indexed user, address indexed collateral, address indexed debt,
                     uint256 debtRepaid, uint256 collateralSeized, uint256 profit);
    event BeneficiarySet(address indexed beneficiary);

    error NotOwner();
    error NotPool();
    error NoSwapInFlight();
    error BadCallback(int256 amount0Delta, int256 amount1Delta);
    error SwapBelowBound(uint256 received, uint256 bound);
    error NotEnoughProfit(uint256 left, uint256 wanted);
    error ZeroBeneficiary();

    constructor(address aavePool_, address owner_, address uniswapFactory_,
                address beneficiary_) {
        aavePool = IAavePoolMin(aavePool_);
        owner = owner_;
        uniswapFactory = uniswapFactory_;
        _setBeneficiary(beneficiary_);
    }

    /// Liquidate `user`, selling the seized collateral on the `swapFee` pool of the pair; the
    /// swap must return at least `minOutPerIn` (x 1e18) per unit sold, and `minProfit` of
    /// the debt asset must be left for the beneficiary.
    function liquidate(address collateral, address debt, address user, uint256 debtToCover,
                       uint24 swapFee, uint256 minProfit, uint256 minOutPerIn) external {
        if (msg.sender != owner) revert NotOwner();
        bytes memory params = abi.encode(Job(collateral, debt, user, debtToCover, swapFee,
                                             minProfit, minOutPerIn));
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
        (uint256 seized, uint256 repaid) = _liquidate(job, asset, amount, premium, debtBefore);
        _sell(job, seized);

        uint256 balance = IERC20Min(asset).balanceOf(address(this));
        uint256 owed = amount + premium;
        uint256 left = balance > debtBefore + owed ? balance - debtBefore - owed : 0;
        if (balance < debtBefore + owed || left < job.minProfit) {
            revert NotEnoughProfit(left, job.minProfit);
        }
        if (left > 0) _safeTransfer(asset, beneficiary, left);
        emit Liquidated(job.user, job.collateral, asset, repaid, seized, left);
        return true;
    }

    function _liquidate(Job memory job, address asset, uint256 amount, uint256 premium,
                        uint256 debtBefore) internal returns (uint256 seized, uint256 repaid) {
        // The pool pulls twice: up to `amount` for the liquidation, then the loan and premium.
        _forceApprove(asset, address(aavePool), 2 * amount + premium);
        uint256 collateralBefore = IERC20Min(job.collateral).balanceOf(address(this));
        aavePool.liquidationCall(job.collateral, asset, job.user, amount, false);
        seized = IERC20Min(job.collateral).balanceOf(address(this)) - collateralBefore;
        repaid = amount - (IERC20Min(asset).balanceOf(address(this)) - debtBefore);
    }

    /// Sell all the seized collateral for the debt asset on the pair's pool, at no worse
    /// than the job's bound.
    function _sell(Job memory job, uint256 seized) internal {
        address pool = poolFor(job.collateral, job.debt, job.swapFee);
        bool zeroForOne = job.collateral < job.debt;
        uint256 before = IERC20Min(job.debt).balanceOf(address(this));
        active = ActiveSwap(pool, zeroForOne, job.collateral, seized);
        IUniswapV3PoolMin(pool).swap(
            address(this), zeroForOne, int256(seized),
            zeroForOne ? MIN_SQRT_RATIO_PLUS_ONE : MAX_SQRT_RATIO_MINUS_ONE, "");
        delete active;
        uint256 received = IERC20Min(job.debt).balanceOf(address(this)) - before;
        uint256 bound = seized * job.minOutPerIn / 1e18;
        if (received < bound) revert SwapBelowBound(received, bound);
    }

    /// Uniswap V3's swap callback: pay the pool of the swap in flight, once, in the token
    /// it was sold and no more than was offered.
    function uniswapV3SwapCallback(int256 amount0Delta, int256 amount1Delta, bytes calldata)
        external
    {
        ActiveSwap memory inFlight = active;
        if (inFlight.pool == address(0)) revert NoSwapInFlight();
        if (msg.sender != inFlight.pool) revert NotPool();
        active.pool = address(0);  // a second callback finds no swap in flight
        (int256 owed, int256 other) = inFlight.zeroForOne ? (amount0Delta, amount1Delta)
                                                          : (amount1Delta, amount0Delta);
        if (owed <= 0 || uint256(owed) > inFlight.maxIn || other > 0) {
            revert BadCallback(amount0Delta, amount1Delta);
        }
        _safeTransfer(inFlight.token, msg.sender, uint256(owed));
    }

    /// The Uniswap V3 pool of two tokens and a fee tier: the factory's CREATE2 address.
    function poolFor(address tokenA, address tokenB, uint24 fee) public view returns (address) {
        (address token0, address token1) = tokenA < tokenB ? (tokenA, tokenB) : (tokenB, tokenA);
        return address(uint160(uint256(keccak256(abi.encodePacked(
            hex"ff", uniswapFactory, keccak256(abi.encode(token0, token1, fee)),
            POOL_INIT_CODE_HASH)))));
    }

    function setBeneficiary(address beneficiary_) external {
        if (msg.sender != owner) revert NotOwner();
        _setBeneficiary(beneficiary_);
    }

    /// Leftovers (tokens sent here by mistake, or left by an earlier version).
    function withdraw(address token, address to, uint256 amount) external {
        if (msg.sender != owner) revert NotOwner();
        _safeTransfer(token, to, amount);
    }

    function _setBeneficiary(address beneficiary_) internal {
        if (beneficiary_ == address(0)) revert ZeroBeneficiary();
        beneficiary = beneficiary_;
        emit BeneficiarySet(beneficiary_);
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
}
