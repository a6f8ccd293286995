// SPDX-License-Identifier: MIT
pragma solidity 0.8.19;

import "./SeizedCollateralSeller.sol";

/// @title keeperd's capital-free liquidator for Morpho Blue.
/// @notice Morpho's own `liquidate` needs no loan: it sends the seized collateral first, then
///         calls `onMorphoLiquidate(repaidAssets, data)` on its caller, and only then pulls
///         the loan token. So, in one transaction: liquidate with a non-empty `data`; in the
///         callback, sell the collateral received on the pair's Uniswap V3 pool and approve
///         Morpho for exactly what it pulls; then send what is left to the beneficiary. It
///         reverts — costing only gas — unless the swap pays at least the keeper's bound and
///         `minProfit` of the loan token is left. Only the owner (the keeper's address) may
///         call it; the callback is taken only from Morpho, only inside the liquidation this
///         contract started, and only with the job it started it with. The swap pool is
///         derived, paid once, in the token sold, at most what was seized
///         (SeizedCollateralSeller.sol). Tokens the contract holds are never spent: every
///         amount is a difference of balances.

struct MarketParams {
    address loanToken;
    address collateralToken;
    address oracle;
    address irm;
    uint256 lltv;
}

interface IMorphoMin {
    function liquidate(MarketParams memory marketParams, address borrower,
                       uint256 seizedAssets, uint256 repaidShares, bytes memory data)
        external returns (uint256 seized, uint256 repaid);
}

contract MorphoLiquidator is SeizedCollateralSeller {
    IMorphoMin public immutable morpho;

    struct Job {
        address loan;
        address collateral;
        uint24 swapFee;
        uint256 minProfit;    // loan-token units left after repaying, at least
        uint256 minOutPerIn;  // least loan-token units per collateral unit sold, x 1e18
    }

    // The liquidation in flight: set by `liquidate` just before it calls Morpho, spent by
    // the one callback. `job` is the hash of the callback data it was started with.
    struct Pending {
        bytes32 job;
        uint256 loanBefore;
        uint256 collateralBefore;
    }
    Pending private pending;

    event Liquidated(address indexed borrower, bytes32 indexed marketId, uint256 repaid,
                     uint256 seized, uint256 profit);

    error NotMorpho();
    error NoLiquidationInFlight();

    constructor(address morpho_, address owner_, address uniswapFactory_, address beneficiary_)
        SeizedCollateralSeller(owner_, uniswapFactory_, beneficiary_)
    {
        morpho = IMorphoMin(morpho_);
    }

    /// Liquidate `borrower` in `market` (exactly one of `seizedAssets` and `repaidShares`
    /// non-zero, as Morpho wants), selling the seized collateral on the `swapFee` pool of the
    /// pair at `minOutPerIn` (x 1e18) or better; `minProfit` of the loan token must be left.
    /// Returns what the beneficiary was sent (a simulation prices the sale by it).
    function liquidate(MarketParams calldata market, address borrower, uint256 seizedAssets,
                       uint256 repaidShares, uint24 swapFee, uint256 minProfit,
                       uint256 minOutPerIn) external onlyOwner returns (uint256 profit) {
        bytes memory data = abi.encode(Job(market.loanToken, market.collateralToken, swapFee,
                                           minProfit, minOutPerIn));
        uint256 loanBefore = _balance(market.loanToken);
        pending = Pending(keccak256(data), loanBefore, _balance(market.collateralToken));
        (uint256 seized, uint256 repaid) =
            morpho.liquidate(market, borrower, seizedAssets, repaidShares, data);
        if (pending.job != bytes32(0)) revert NoLiquidationInFlight();  // no callback: no sale
        profit = _balance(market.loanToken) - loanBefore;
        if (profit > 0) _safeTransfer(market.loanToken, beneficiary, profit);
        emit Liquidated(borrower, keccak256(abi.encode(market)), repaid, seized, profit);
    }

    /// Morpho's liquidation callback: the collateral has arrived, the loan token is pulled
    /// when this returns.
    function onMorphoLiquidate(uint256 repaidAssets, bytes calldata data) external {
        if (msg.sender != address(morpho)) revert NotMorpho();
        Pending memory inFlight = pending;
        if (inFlight.job == bytes32(0) || keccak256(data) != inFlight.job) {
            revert NoLiquidationInFlight();
        }
        delete pending;  // one callback per liquidation
        Job memory job = abi.decode(data, (Job));
        uint256 seized = _balance(job.collateral) - inFlight.collateralBefore;
        _sell(job.collateral, job.loan, job.swapFee, seized, job.minOutPerIn);
        uint256 balance = _balance(job.loan);
        uint256 owed = inFlight.loanBefore + repaidAssets;
        uint256 left = balance > owed ? balance - owed : 0;
        if (balance < owed || left < job.minProfit) revert NotEnoughProfit(left, job.minProfit);
        _forceApprove(job.loan, address(morpho), repaidAssets);  // exactly what it pulls
    }
}
