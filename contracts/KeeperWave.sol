// SPDX-License-Identifier: MIT
pragma solidity 0.8.19;

/// @title keeperd's wave executor: many liquidations in one transaction.
/// @notice The keeper's address delegates to this code (EIP-7702), by an operator's command
///         (`keeperd wave delegate`), never by itself. Then one transaction from the keeper
///         to its own address carries a wave of liquidations: `execute` makes each call in
///         turn, from the keeper's address (its balances, its approvals, the owner of its
///         liquidator contracts), and a call that fails (a race lost to another keeper) does
///         not undo the others. The node then takes one transaction for many, and the wave's
///         calls find the pool's state warm after the first.
///
///         Deployed once per chain through the deterministic deployment proxy
///         (0x4e59b44847b379578588920ca78fbf26c0b4956c) with a salt keeperd fixes, so keeperd
///         derives this code's address from its own bytes: no RPC answer ever names the
///         address the key is delegated to.
///
///         What the delegation must not open: only the address itself may call `execute`
///         (a call from anyone else reverts), and the contract has no storage, no owner, no
///         upgrade and no way to move funds but the keeper's own calls. ETH, safe transfers
///         of NFTs and calls it does not know still arrive and do nothing, as they did at
///         the undelegated address.
contract KeeperWave {
    struct Call {
        address target;
        uint256 gas; // the call's own gas limit, as simulated alone: a failing call cannot
                     // starve the ones after it
        bytes data;
    }

    /// One per wave, its last log: bit i of `succeeded` is set when call i succeeded. keeperd
    /// settles each liquidation from the events of the keeper's own address (no other code
    /// can emit them) and from the protocol's own liquidation event.
    event WaveExecuted(uint256 succeeded, uint256 calls);
    /// Call `index` succeeded, using `gasUsed` (before the transaction's refund). Each call's
    /// own marker (this, CallFailed or CallStarved) comes right after the logs the call
    /// emitted: the receipt's logs between two markers are one call's (its protocol's
    /// liquidation event, and so its profit). The gas is what keeperd learns limits from: the
    /// receipt's is the wave's.
    event CallSucceeded(uint256 indexed index, uint256 gasUsed);
    /// Why call `index` failed: the first RETURN_CAP bytes of its revert data.
    event CallFailed(uint256 indexed index, bytes reason);
    /// Call `index` was not made: the gas left could not give it its own limit (the wave's
    /// limit was set too low; keeperd sets it to its calls' limits and more).
    event CallStarved(uint256 indexed index);

    error NotSelf();
    error WaveSize(uint256 calls);

    uint256 private constant MAX_CALLS = 256; // a bit each in `succeeded`
    uint256 private constant RETURN_CAP = 256; // a revert's data kept (a huge one costs gas)
    uint256 private constant CALL_RESERVE = 20_000; // copying the call, the call, the event

    function execute(Call[] calldata calls) external returns (uint256 succeeded) {
        if (msg.sender != address(this)) revert NotSelf();
        uint256 n = calls.length;
        if (n == 0 || n > MAX_CALLS) revert WaveSize(n);
        for (uint256 i; i < n; ++i) {
            Call calldata c = calls[i];
            // EIP-150 passes a call at most 63/64 of the gas left: without this check a call
            // given less than its limit could fail for want of gas and look like a lost race.
            if (gasleft() < c.gas + c.gas / 63 + CALL_RESERVE) {
                emit CallStarved(i);
                continue;
            }
            uint256 before = gasleft();
            (bool ok, bytes memory reason) = _call(c.target, c.gas, c.data);
            if (ok) {
                succeeded |= 1 << i;
                emit CallSucceeded(i, before - gasleft());
            } else {
                emit CallFailed(i, reason);
            }
        }
        emit WaveExecuted(succeeded, n);
    }

    /// A call to an address without code "succeeds" doing nothing: counted as failed here.
    /// At most RETURN_CAP bytes of what it returns are copied.
    function _call(address target, uint256 callGas, bytes calldata data)
        private returns (bool ok, bytes memory reason)
    {
        if (target.code.length == 0) return (false, bytes("no code at target"));
        assembly {
            let input := mload(0x40)
            calldatacopy(input, data.offset, data.length)
            ok := call(callGas, target, 0, input, data.length, 0, 0)
            let size := returndatasize()
            if gt(size, RETURN_CAP) { size := RETURN_CAP }
            reason := input
            mstore(reason, size)
            returndatacopy(add(reason, 0x20), 0, size)
            mstore(0x40, add(add(reason, 0x20), and(add(size, 31), not(31))))
        }
        if (ok) reason = "";
    }

    /// As an ordinary address: ETH and calls it does not know (a token's hook, a transfer
    /// with data) are taken and do nothing, as they did before the delegation.
    receive() external payable {}

    fallback() external payable {}

    function onERC721Received(address, address, uint256, bytes calldata)
        external pure returns (bytes4)
    {
        return this.onERC721Received.selector;
    }

    function onERC1155Received(address, address, uint256, uint256, bytes calldata)
        external pure returns (bytes4)
    {
        return this.onERC1155Received.selector;
    }

    function onERC1155BatchReceived(address, address, uint256[] calldata, uint256[] calldata,
                                    bytes calldata)
        external pure returns (bytes4)
    {
        return this.onERC1155BatchReceived.selector;
    }

    function supportsInterface(bytes4 id) external pure returns (bool) {
        return id == 0x01ffc9a7 /* ERC-165 */ || id == 0x150b7a02 /* ERC-721 receiver */
            || id == 0x4e2312e0 /* ERC-1155 receiver */;
    }
}
