// SPDX-License-Identifier: MIT
pragma solidity 0.8.19;

/// @title Chainlink-style price feed for the keeperd devnet.
/// @notice Speaks the AggregatorV3Interface (latestRoundData, getRoundData, decimals,
///         description, version) and the legacy AggregatorInterface that AaveOracle
///         reads (latestAnswer, latestTimestamp, latestRound). Unlike Aave's
///         MockAggregator it can be updated, and it keeps round history and
///         min/max answer bounds like an OCR aggregator, so staleness, round jumps
///         and clamped answers can be reproduced on the devnet.
contract TestAggregator {
    struct Round {
        int256 answer;
        uint256 startedAt;
        uint256 updatedAt;
    }

    address public owner;
    uint8 public immutable decimals;
    string public description;
    uint256 public constant version = 4;
    int192 public minAnswer;
    int192 public maxAnswer;

    uint80 public latestRound;
    mapping(uint80 => Round) internal rounds;

    event AnswerUpdated(int256 indexed current, uint256 indexed roundId, uint256 updatedAt);
    event NewRound(uint256 indexed roundId, address indexed startedBy, uint256 startedAt);

    modifier onlyOwner() {
        require(msg.sender == owner, "TestAggregator: not owner");
        _;
    }

    constructor(uint8 decimals_, string memory description_, int256 initialAnswer) {
        owner = msg.sender;
        decimals = decimals_;
        description = description_;
        minAnswer = 1;
        maxAnswer = type(int192).max;
        _push(initialAnswer, block.timestamp);
    }

    /// @notice Publishes a new round. Answers outside [minAnswer, maxAnswer] are clamped,
    ///         as an OCR aggregator does.
    function setAnswer(int256 answer) external onlyOwner {
        _push(answer, block.timestamp);
    }

    /// @notice Publishes a round with an explicit timestamp (to simulate a stale feed).
    function setAnswerAt(int256 answer, uint256 updatedAt) external onlyOwner {
        _push(answer, updatedAt);
    }

    function setBounds(int192 minAnswer_, int192 maxAnswer_) external onlyOwner {
        minAnswer = minAnswer_;
        maxAnswer = maxAnswer_;
    }

    function latestRoundData()
        external
        view
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound)
    {
        return getRoundData(latestRound);
    }

    function getRoundData(uint80 roundId)
        public
        view
        returns (uint80, int256, uint256, uint256, uint80)
    {
        Round memory r = rounds[roundId];
        require(r.updatedAt != 0, "No data present");
        return (roundId, r.answer, r.startedAt, r.updatedAt, roundId);
    }

    function latestAnswer() external view returns (int256) {
        return rounds[latestRound].answer;
    }

    function latestTimestamp() external view returns (uint256) {
        return rounds[latestRound].updatedAt;
    }

    function getAnswer(uint256 roundId) external view returns (int256) {
        return rounds[uint80(roundId)].answer;
    }

    function getTimestamp(uint256 roundId) external view returns (uint256) {
        return rounds[uint80(roundId)].updatedAt;
    }

    function _push(int256 answer, uint256 updatedAt) internal {
        if (answer < int256(minAnswer)) answer = minAnswer;
        if (answer > int256(maxAnswer)) answer = maxAnswer;
        latestRound += 1;
        rounds[latestRound] = Round(answer, updatedAt, updatedAt);
        emit NewRound(latestRound, msg.sender, updatedAt);
        emit AnswerUpdated(answer, latestRound, updatedAt);
    }
}
