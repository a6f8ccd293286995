"""What code the keeper's address runs (EIP-7702), and whether keeperd sends from it.

Since Pectra (mainnet, May 2025) an account with a private key can delegate its address to a
contract's code by signing an authorization: the address's code becomes the designator
`0xef0100 || delegate`, and from then on a call to the address runs the delegate's code with
the address's balance, tokens and approvals. Phishing for such signatures is how "7702
drainers" empty accounts: the delegate lets its author move whatever the address holds, at
any time. A keeper sending liquidations from a delegated address pays in repayments and
receives the seized collateral into an address someone else may be sweeping.

So the transaction manager reads its address's code at start and with every block's mined
nonce (one batch): while the address is delegated to a contract the operator did not allow
(`keeper.allowed_delegates`) and that is not keeperd's own wave executor (KeeperWave, at the
address keeperd derives from its code: execution/wave_code.py), the key signs nothing — no
liquidation, no replacement of one in flight, no approval, no housekeeping — nor are bytes
it signed before broadcast again, and `key_in_use_elsewhere` fires with the reason. While
the code cannot be read (at start, or an answer that is not code, asked of every endpoint in
turn), new liquidations wait for it, and past FOREIGN_QUIET_BLOCKS that is alerted too. A
lying endpoint can claim a delegation (sending held and alerted: visible) or hide one from a
start (what keeperd knew before this check), but not lift a refusal: with two endpoints or
more configured, the key signs again only once two of them say, at the block judged, that
the refused code is gone and none says it is still there (one behind that block, or of
another network, has no say; `tx.keeper_code_disputed` while they disagree).
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_utils import to_checksum_address

from keeperd.execution.wave_code import KNOWN_WAVE_ADDRESSES

DESIGNATOR = "ef0100"  # EIP-7702's delegation designator: 0xef0100 followed by the address

# What the operator does about each hold on the keeper's key (`KeyHold.action`).
OTHER_SENDER_ACTION = ("Stop the other keeper or tool using this key (two keepers need one "
                       "state database: storage.url and replicas), or give keeperd a key of "
                       "its own.")
DELEGATED_ACTION = ("If you did not sign this delegation, the key is compromised: move the "
                    "funds to a new key and configure keeperd with it. If you did, revoke it "
                    "(`keeperd wave revoke`: an EIP-7702 authorization to the zero address) or "
                    "list the delegate in keeper.allowed_delegates.")
CODE_ACTION = ("An address with a private key has no contract code: check keeper.address / "
               "the key, and the RPC endpoints (one may lie).")
UNREAD_ACTION = ("keeperd reads the code again every block; check the RPC endpoints "
                 "(keeperd_rpc_* metrics) if this lasts.")


@dataclass(frozen=True)
class KeyHold:
    """Why the keeper's key waits, and what the operator does about it."""

    reason: str
    action: str


@dataclass(frozen=True)
class KeeperCode:
    """The keeper's address's code: none (an ordinary account), a delegation (to `delegate`),
    or other code (a contract: no key could sign for it; a lying answer or a wrong address)."""

    delegate: str | None = None
    other_code: bool = False

    @property
    def plain(self) -> bool:
        return self.delegate is None and not self.other_code


def read_code(code: str) -> KeeperCode:
    """An `eth_getCode` answer read (pure). Raises ValueError for an answer that is not hex."""
    if not isinstance(code, str) or not code.startswith("0x"):
        raise ValueError(f"eth_getCode answered {code!r}, not hex")
    body = code[2:].lower()
    bytes.fromhex(body)  # (ValueError for anything but hex)
    if not body:
        return KeeperCode()
    if body.startswith(DESIGNATOR) and len(body) == len(DESIGNATOR) + 40:
        return KeeperCode(delegate=to_checksum_address("0x" + body[len(DESIGNATOR):]))
    return KeeperCode(other_code=True)


def refusal(address: str, code: KeeperCode, allowed: frozenset[str], block: int | None
            ) -> KeyHold | None:
    """Why nothing may be signed for `address` with this code (pure), or None: an ordinary
    account, or one delegated to a contract in `allowed` (checksummed addresses) or to
    keeperd's own KeeperWave, today's or an earlier one (whatever code is at a derived
    address is that code)."""
    if code.plain or (code.delegate is not None
                      and (code.delegate in allowed or code.delegate in KNOWN_WAVE_ADDRESSES)):
        return None
    seen = "at start" if block is None else f"at block {block}"
    if code.delegate is not None:
        return KeyHold(
            f"the keeper's address {address} is delegated (EIP-7702) to {code.delegate} "
            f"(read {seen}), code keeperd did not put there: whoever that code lets in can "
            "move the keeper's funds. The key signs nothing until the delegation is revoked "
            "(an authorization to the zero address) or the operator allows it in "
            "keeper.allowed_delegates", DELEGATED_ACTION)
    return KeyHold(f"the keeper's address {address} has contract code (read {seen}): an "
                   "address with a key has none, so the node lies or the address is wrong. "
                   "The key signs nothing for it", CODE_ACTION)
