"""Aave v3's custom errors (`Errors.sol` of aave-v3-origin, the published v3.6 sources),
by selector: a reverted liquidation's trace names them (`chain/revert_reason.py`) where it
only gave their 4 bytes. tests/unit/test_revert_reason.py checks the table against the
package's source. v3.7 (POOL_REVISION 11, mainnet since June 2026, not on npm) removed nine
of them and added one (`LATER_SIGNATURES`, read from aave-v3-origin's `main` at the v3.7.0
merge, 4fbd7442); a removed one's selector is never answered by v3.7, so one table serves both.
A selector in neither is shown as its 4 bytes.
"""

from __future__ import annotations

from eth_utils import keccak

# Their signatures; the selectors are derived (`ERRORS`).
SIGNATURES = (
    "CallerNotPoolAdmin()",
    "CallerNotPoolOrEmergencyAdmin()",
    "CallerNotRiskOrPoolAdmin()",
    "CallerNotAssetListingOrPoolAdmin()",
    "AddressesProviderNotRegistered()",
    "InvalidAddressesProviderId()",
    "NotContract()",
    "CallerNotPoolConfigurator()",
    "CallerNotAToken()",
    "InvalidAddressesProvider()",
    "InvalidFlashloanExecutorReturn()",
    "ReserveAlreadyAdded()",
    "NoMoreReservesAllowed()",
    "EModeCategoryReserved()",
    "ReserveLiquidityNotZero()",
    "FlashloanPremiumInvalid()",
    "InvalidReserveParams()",
    "InvalidEmodeCategoryParams()",
    "CallerMustBePool()",
    "InvalidMintAmount()",
    "InvalidBurnAmount()",
    "InvalidAmount()",
    "ReserveInactive()",
    "ReserveFrozen()",
    "ReservePaused()",
    "BorrowingNotEnabled()",
    "NotEnoughAvailableUserBalance()",
    "InvalidInterestRateModeSelected()",
    "HealthFactorLowerThanLiquidationThreshold()",
    "CollateralCannotCoverNewBorrow()",
    "NoDebtOfSelectedType()",
    "NoExplicitAmountToRepayOnBehalf()",
    "UnderlyingBalanceZero()",
    "HealthFactorNotBelowThreshold()",
    "CollateralCannotBeLiquidated()",
    "SpecifiedCurrencyNotBorrowedByUser()",
    "InconsistentFlashloanParams()",
    "BorrowCapExceeded()",
    "SupplyCapExceeded()",
    "DebtCeilingExceeded()",
    "UnderlyingClaimableRightsNotZero()",
    "VariableDebtSupplyNotZero()",
    "LtvValidationFailed()",
    "InconsistentEModeCategory()",
    "PriceOracleSentinelCheckFailed()",
    "AssetNotBorrowableInIsolation()",
    "ReserveAlreadyInitialized()",
    "UserInIsolationModeOrLtvZero()",
    "InvalidLtv()",
    "InvalidLiquidationThreshold()",
    "InvalidLiquidationBonus()",
    "InvalidDecimals()",
    "InvalidReserveFactor()",
    "InvalidBorrowCap()",
    "InvalidSupplyCap()",
    "InvalidLiquidationProtocolFee()",
    "InvalidDebtCeiling()",
    "InvalidReserveIndex()",
    "AclAdminCannotBeZero()",
    "InconsistentParamsLength()",
    "ZeroAddressNotValid()",
    "InvalidExpiration()",
    "InvalidSignature()",
    "OperationNotSupported()",
    "DebtCeilingNotZero()",
    "AssetNotListed()",
    "InvalidOptimalUsageRatio()",
    "UnderlyingCannotBeRescued()",
    "AddressesProviderAlreadyAdded()",
    "PoolAddressesDoNotMatch()",
    "SiloedBorrowingViolation()",
    "ReserveDebtNotZero()",
    "FlashloanDisabled()",
    "InvalidMaxRate()",
    "WithdrawToAToken()",
    "SupplyToAToken()",
    "Slope2MustBeGteSlope1()",
    "CallerNotRiskOrPoolOrEmergencyAdmin()",
    "LiquidationGraceSentinelCheckFailed()",
    "InvalidGracePeriod()",
    "InvalidFreezeState()",
    "InvalidLtvzeroState()",
    "NotBorrowableInEMode()",
    "CallerNotUmbrella()",
    "ReserveNotInDeficit()",
    "MustNotLeaveDust()",
    "UserCannotHaveDebt()",
    "SelfLiquidation()",
    "CallerNotPositionManager()",
    "InvalidCollateralInEmode(address,uint256)",
    "InvalidDebtInEmode(address,uint256)",
    "MustBeEmodeCollateral(address,uint256)",
)

# Errors of later revisions than the npm package's, with the revision that added them.
LATER_SIGNATURES = (
    "UserHasAssetWithZeroLtv()",  # v3.7: a borrow or LTV check on a zero-LTV collateral
)

ERRORS = {keccak(text=s)[:4].hex(): s.split("(")[0]
          for s in (*SIGNATURES, *LATER_SIGNATURES)}
