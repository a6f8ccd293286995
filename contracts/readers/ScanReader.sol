// SPDX-License-Identifier: MIT
pragma solidity 0.8.19;

/// keeperd's scan reader (keeperd/chain/scan_reader.py). Never deployed: an eth_call places its
/// runtime code at an unused address with a state override, for the length of the call.
///
/// The calldata is a run of 45-byte records — target (20 bytes), selector (4), one address
/// argument (20), words wanted (1) — each one staticcall `target.selector(argument)`. The
/// answer is one status byte per call (1: it succeeded and returned at least the words
/// wanted), padded to a multiple of 32 bytes, then each call's first words, back to back.
///
/// Multicall3's aggregate3 does the same reads, but its ABI coding costs the node ~3 us per
/// call — more than the reads themselves — and its request and answer are five times larger:
/// a full scan makes ~50,000 calls per 10,000 accounts (#31). Kept out of contracts/'s top
/// level, whose files shape the devnet's state (keeperd/devnet/state.py).
contract ScanReader {
    fallback() external {
        assembly {
            let count := div(calldatasize(), 45)
            let status := 0x80
            let out := add(status, and(add(count, 31), not(31)))
            for { let i := 0 } lt(i, count) { i := add(i, 1) } {
                let at := mul(i, 45)
                let head := calldataload(at)
                // selector, then the argument as a word: 36 bytes of calldata at 0
                mstore(0, and(shl(160, head), shl(224, 0xffffffff)))
                mstore(4, shr(96, calldataload(add(at, 24))))
                let size := shl(5, byte(0, calldataload(add(at, 44))))
                let ok := staticcall(gas(), shr(96, head), 0, 36, out, size)
                mstore8(add(status, i), and(ok, iszero(lt(returndatasize(), size))))
                out := add(out, size)
            }
            return(status, sub(out, status))
        }
    }
}
