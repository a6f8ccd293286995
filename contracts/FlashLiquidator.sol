// SPDX-License-Identifier: MIT
pragma solidity 0.8.19;

import "./SeizedCollateralSeller.sol";

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
///         amount seized (SeizedCollateralSeller.sol).

interface IAavePoolMin {
    function flashLoanSimple(address receiver, address asset, uint256 amount,
                             bytes calldata params, uint16 referralCode) external;
    function liquidationCall(address collateralAsset, address debtAsset, address user,
                             uint256 debtToCover, bool receiveAToken) external;
}

contract FlashLiquidator is SeizedCollateralSeller {
    IAavePoolMin public immutable aavePool;

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

    // What the callback left the beneficiary, for `liquidate` to return (written and cleared
    // within one transaction): a simulation of `liquidate` then prices the sale as the chain
    // ran it, not as the keeper's slippage estimate expects.
    uint256 private settledProfit;

    constructor(address aavePool_, address owner_, address uniswapFactory_,
                address beneficiary_)
        SeizedCollateralSeller(owner_, uniswapFactory_, beneficiary_)
    {
        aavePool = IAavePoolMin(aavePool_);
    }

    /// Liquidate `user`, selling the seized collateral on the `swapFee` pool of the pair; the
    /// swap must return at least `minOutPerIn` (x 1e18) per unit sold, and `minProfit` of
    /// the debt asset must be left for the beneficiary. Returns what the beneficiary was sent.
    function liquidate(address collateral, address debt, address user, uint256 debtToCover,
                       uint24 swapFee, uint256 minProfit, uint256 minOutPerIn)
        external onlyOwner returns (uint256 profit)
    {
        bytes memory params = abi.encode(Job(collateral, debt, user, debtToCover, swapFee,
                                             minProfit, minOutPerIn));
        aavePool.flashLoanSimple(address(this), debt, debtToCover, params, 0);
        profit = settledProfit;
        delete settledProfit;
    }

    /// Aave's flash-loan callback.
    function executeOperation(address asset, uint256 amount, uint256 premium,
                              address initiator, bytes calldata params)
        external returns (bool)
    {
        if (msg.sender != address(aavePool) || initiator != address(this)) revert NotPool();
        Job memory job = abi.decode(params, (Job));
        uint256 debtBefore = _balance(asset) - amount;
        (uint256 seized, uint256 repaid) = _liquidate(job, asset, amount, debtBefore);
        _sell(job.collateral, job.debt, job.swapFee, seized, job.minOutPerIn);

        uint256 balance = _balance(asset);
        uint256 owed = amount + premium;
        uint256 left = balance > debtBefore + owed ? balance - debtBefore - owed : 0;
        if (balance < debtBefore + owed || left < job.minProfit) {
            revert NotEnoughProfit(left, job.minProfit);
        }
        if (left > 0) _safeTransfer(asset, beneficiary, left);
        // The pool pulls exactly this when the callback returns: nothing stays approved.
        _forceApprove(asset, address(aavePool), owed);
        settledProfit = left;
        emit Liquidated(job.user, job.collateral, asset, repaid, seized, left);
        return true;
    }

    function _liquidate(Job memory job, address asset, uint256 amount, uint256 debtBefore)
        internal returns (uint256 seized, uint256 repaid)
    {
        // The liquidation pulls at most `amount`; the loan and premium are approved once it
        // is known what the liquidation left (so no allowance outlives the transaction).
        _forceApprove(asset, address(aavePool), amount);
        uint256 collateralBefore = _balance(job.collateral);
        aavePool.liquidationCall(job.collateral, asset, job.user, amount, false);
        seized = _balance(job.collateral) - collateralBefore;
        repaid = amount - (_balance(asset) - debtBefore);
    }
}
