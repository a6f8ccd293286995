// SPDX-License-Identifier: MIT
pragma solidity 0.8.19;

/// @title Price sources shaped like the ones Aave V3 Ethereum's oracle reads today.
/// @notice Aave prices LSTs, stablecoins and WBTC through adapters (bgd-labs/aave-capo's
///         price-cap adapters, and the Chainlink synchronicity adapters) that answer
///         `latestAnswer()`, `decimals()` and `description()` only: no `latestRoundData()`,
///         no timestamp. Their freshness is that of the aggregators they wrap, exposed under
///         the same getter names as upstream (BASE_TO_USD_AGGREGATOR, ASSET_TO_USD_AGGREGATOR,
///         ASSET_TO_PEG, PEG_TO_BASE). Written for keeperd's devnet, not copied.

interface IAggregatorLike {
    function latestAnswer() external view returns (int256);
}

/// An LST priced as (base asset / USD) x exchange ratio, the ratio capped as CAPO caps it.
contract RatioCapAdapter {
    IAggregatorLike public immutable BASE_TO_USD_AGGREGATOR;
    uint8 public constant decimals = 8;
    string public description;
    uint256 public ratio; // 1e18 = 1:1
    uint256 public maxRatio;
    address public immutable owner;

    constructor(address baseToUsd, uint256 ratio_, uint256 maxRatio_, string memory description_) {
        BASE_TO_USD_AGGREGATOR = IAggregatorLike(baseToUsd);
        ratio = ratio_;
        maxRatio = maxRatio_;
        description = description_;
        owner = msg.sender;
    }

    function setRatio(uint256 ratio_) external {
        require(msg.sender == owner, "not owner");
        ratio = ratio_;
    }

    function latestAnswer() external view returns (int256) {
        int256 base = BASE_TO_USD_AGGREGATOR.latestAnswer();
        if (base <= 0) return 0;
        uint256 r = ratio > maxRatio ? maxRatio : ratio;
        return int256((uint256(base) * r) / 1e18);
    }
}

/// A stablecoin priced by its own USD aggregator, capped at a price (CAPO's stable adapter).
contract StableCapAdapter {
    IAggregatorLike public immutable ASSET_TO_USD_AGGREGATOR;
    uint8 public constant decimals = 8;
    string public description;
    int256 public immutable priceCap;

    constructor(address assetToUsd, int256 priceCap_, string memory description_) {
        ASSET_TO_USD_AGGREGATOR = IAggregatorLike(assetToUsd);
        priceCap = priceCap_;
        description = description_;
    }

    function latestAnswer() external view returns (int256) {
        int256 answer = ASSET_TO_USD_AGGREGATOR.latestAnswer();
        return answer > priceCap ? priceCap : answer;
    }
}

/// WBTC priced as (WBTC / BTC) x (BTC / USD), both 8-decimal feeds (the synchronicity adapter).
contract PegToBaseAdapter {
    IAggregatorLike public immutable ASSET_TO_PEG;
    IAggregatorLike public immutable PEG_TO_BASE;
    uint8 public constant decimals = 8;
    string public description;

    constructor(address assetToPeg, address pegToBase, string memory description_) {
        ASSET_TO_PEG = IAggregatorLike(assetToPeg);
        PEG_TO_BASE = IAggregatorLike(pegToBase);
        description = description_;
    }

    function latestAnswer() external view returns (int256) {
        int256 a = ASSET_TO_PEG.latestAnswer();
        int256 b = PEG_TO_BASE.latestAnswer();
        if (a <= 0 || b <= 0) return 0;
        return (a * b) / 1e8;
    }
}
