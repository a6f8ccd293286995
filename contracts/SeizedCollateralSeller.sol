// SPDX-License-Identifier: MIT
pragma solidity 0.8.19;

/// @title What keeperd's capital-free liquidators share: selling seized collateral.
/// @notice The owner (the keeper's address) alone may act; each liquidation's profit goes to
///         a beneficiary in the same transaction. The collateral is sold on the Uniswap V3
///         pool of the pair and fee that this contract derives itself (the factory's CREATE2
///         address: never an address given by a caller or read from a node), and only that
///         pool, once per swap, is paid: in the token sold, at most the amount seized. A sale
///         below the keeper's bound (debt units per collateral unit, x 1e18) reverts.
///         FlashLiquidator (Aave) and MorphoLiquidator (Morpho Blue) are built on it.

interface IERC20Min {
    function approve(address spender, uint256 amount) external returns (bool);
    function transfer(address to, uint256 amount) external returns (bool);
    function balanceOf(address account) external view returns (uint256);
}

interface IUniswapV3PoolMin {
    function swap(address recipient, bool zeroForOne, int256 amountSpecified,
                  uint160 sqrtPriceLimitX96, bytes calldata data)
        external returns (int256 amount0, int256 amount1);
}

abstract contract SeizedCollateralSeller {
    uint160 internal constant MIN_SQRT_RATIO_PLUS_ONE = 4295128740;
    uint160 internal constant MAX_SQRT_RATIO_MINUS_ONE =
        1461446703485210103287273052203988822378723970341;
    /// keccak256 of Uniswap V3's pool creation code (v3-core 1.0): every pool's address is
    /// the factory's CREATE2 of it, salted with (token0, token1, fee).
    bytes32 public constant POOL_INIT_CODE_HASH =
        0xe34f199b19b2b4f47f68442619d555527d244f78a3297ea89325f843f87b8b54;

    address public immutable owner;
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

    event BeneficiarySet(address indexed beneficiary);

    error NotOwner();
    error NotPool();
    error NoSwapInFlight();
    error BadCallback(int256 amount0Delta, int256 amount1Delta);
    error SwapBelowBound(uint256 received, uint256 bound);
    error NotEnoughProfit(uint256 left, uint256 wanted);
    error ZeroBeneficiary();
    error BadAmount(uint256 amount);

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    constructor(address owner_, address uniswapFactory_, address beneficiary_) {
        owner = owner_;
        uniswapFactory = uniswapFactory_;
        _setBeneficiary(beneficiary_);
    }

    /// Sell `amount` of `sold` for `bought` on the pair's `fee` pool, at no worse than
    /// `minOutPerIn` (units of `bought` per unit of `sold`, x 1e18).
    function _sell(address sold, address bought, uint24 fee, uint256 amount,
                   uint256 minOutPerIn) internal {
        // (a token that reports more than 2^255 would wrap into an exact-output swap)
        if (amount > uint256(type(int256).max)) revert BadAmount(amount);
        address pool = poolFor(sold, bought, fee);
        bool zeroForOne = sold < bought;
        uint256 before = IERC20Min(bought).balanceOf(address(this));
        active = ActiveSwap(pool, zeroForOne, sold, amount);
        IUniswapV3PoolMin(pool).swap(
            address(this), zeroForOne, int256(amount),
            zeroForOne ? MIN_SQRT_RATIO_PLUS_ONE : MAX_SQRT_RATIO_MINUS_ONE, "");
        delete active;
        uint256 received = IERC20Min(bought).balanceOf(address(this)) - before;
        uint256 bound = amount * minOutPerIn / 1e18;
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

    function setBeneficiary(address beneficiary_) external onlyOwner {
        _setBeneficiary(beneficiary_);
    }

    /// Leftovers (tokens sent here by mistake, or left by an earlier version).
    function withdraw(address token, address to, uint256 amount) external onlyOwner {
        _safeTransfer(token, to, amount);
    }

    function _setBeneficiary(address beneficiary_) internal {
        if (beneficiary_ == address(0)) revert ZeroBeneficiary();
        beneficiary = beneficiary_;
        emit BeneficiarySet(beneficiary_);
    }

    function _balance(address token) internal view returns (uint256) {
        return IERC20Min(token).balanceOf(address(this));
    }

    /// USDT and its kind return nothing from transfer/approve: a call succeeds when it does
    /// not revert and returns either nothing or `true`.
    function _callToken(address token, bytes memory data) internal {
        // A call to an address without code "succeeds": a mistyped token would pass silently.
        require(token.code.length > 0, "not a token");
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
