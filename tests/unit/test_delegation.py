"""The keeper's address's code read (EIP-7702): an ordinary account, a delegation, other code;
and when that holds keeperd's sends (execution/delegation.py)."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from eth_account import Account
from eth_utils import to_checksum_address

from keeperd.chain.rpc import RpcError, RpcUnavailable
from keeperd.execution.delegation import KeeperCode, read_code, refusal
from keeperd.execution.journal import TxRecord
from keeperd.execution.txmanager import FOREIGN_QUIET_BLOCKS, Pending, SendRefused, TxManager
from keeperd.keys import KeeperKey
from keeperd.metrics import Metrics
from keeperd.protocols.sdk import approvals
from keeperd.protocols.sdk.keys import UpkeepKey

KEEPER = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"
DELEGATE = to_checksum_address("0x" + "ab" * 20)


def test_an_ordinary_account_has_no_code() -> None:
    assert read_code("0x") == KeeperCode()
    assert read_code("0x").plain


def test_the_designator_names_the_delegate_checksummed() -> None:
    code = read_code("0xef0100" + "AB" * 20)
    assert code.delegate == DELEGATE and not code.other_code and not code.plain


@pytest.mark.parametrize("code", [
    "0x6080604052",  # a contract's runtime
    "0xef0100" + "ab" * 19,  # a designator one byte short
    "0xef0100" + "ab" * 21,  # ...or one byte long
    "0xef0200" + "ab" * 20,  # not the 7702 designator
])
def test_anything_else_is_other_code(code: str) -> None:
    read = read_code(code)
    assert read.other_code and read.delegate is None and not read.plain


@pytest.mark.parametrize("answer", ["", "ef0100", "0xzz", None, 7])
def test_an_answer_that_is_not_hex_is_refused(answer: object) -> None:
    with pytest.raises(ValueError):
        read_code(answer)  # type: ignore[arg-type]


def test_sends_are_refused_from_a_delegated_address_unless_the_delegate_is_allowed() -> None:
    delegated = read_code("0xef0100" + "ab" * 20)
    hold = refusal(KEEPER, delegated, frozenset(), 123)
    assert hold is not None and DELEGATE in hold.reason and "block 123" in hold.reason
    assert "allowed_delegates" in hold.reason and "revoked" in hold.reason
    assert "new key" in hold.action and "allowed_delegates" in hold.action
    assert refusal(KEEPER, delegated, frozenset({DELEGATE}), 123) is None
    other = to_checksum_address("0x" + "cd" * 20)
    assert refusal(KEEPER, delegated, frozenset({other}), 123) is not None
    assert "at start" in str(refusal(KEEPER, delegated, frozenset(), None))


def test_an_ordinary_address_sends_and_other_code_never_does() -> None:
    assert refusal(KEEPER, read_code("0x"), frozenset(), 1) is None
    # (allowing delegates does not allow a contract's own code)
    hold = refusal(KEEPER, read_code("0x6080"), frozenset({DELEGATE}), 1)
    assert hold is not None and "contract code" in hold.reason


# --- the transaction manager's use of it ------------------------------------------------------

SIGNER = KeeperKey(Account.create())
PLAIN, DELEGATED = "0x", "0xef0100" + "ab" * 20


class Node:
    """The keeper's node, as far as these checks ask it: the code answer is scripted (a
    string, or an exception raised in its place), everything asked is recorded."""

    chain = "devnet"

    def __init__(self, code: object, mined: int = 0) -> None:
        self.code, self.mined = code, mined
        self.asked: list[str] = []
        self.endpoints: list[str] = []  # (none to ask one by one, unless a test gives some)
        self._voters: list[Any] | None = None

    @property
    def voters(self) -> list[Any]:
        """RpcPool.voters: every endpoint unless a test says one is of another network."""
        return self.endpoints if self._voters is None else self._voters

    @voters.setter
    def voters(self, voters: list[Any]) -> None:
        self._voters = voters

    def answer(self, method: str) -> Any:
        self.asked.append(method)
        if method == "eth_getCode":
            if isinstance(self.code, Exception):
                raise self.code
            return self.code
        if method == "eth_getTransactionCount":
            return hex(self.mined)
        if method == "eth_getTransactionReceipt":
            return None  # (not mined)
        if method == "eth_getBlockByNumber":
            return {"baseFeePerGas": hex(10**9), "number": "0x64"}
        raise AssertionError(f"not expected: {method}")

    async def request(self, method: str, params: Any = ()) -> Any:
        return self.answer(method)

    async def batch(self, calls: list[tuple[str, Any]]) -> list[Any]:
        out = []
        for method, _ in calls:
            try:
                out.append(self.answer(method))
            except Exception as exc:  # (in place, as RpcPool.batch returns them)
                out.append(exc)
        return out

    async def batch_at(self, block: int, calls: list[tuple[str, Any]]
                       ) -> tuple[dict[str, Any], list[Any]]:
        """RpcPool.batch_at: the block's header, then each call's answer (or its error)."""
        return {"number": hex(block)}, await self.batch(calls)


async def started(node: Node) -> TxManager:
    tx = TxManager(node, SIGNER, 31337, metrics=Metrics())  # type: ignore[arg-type]
    await tx.sync_nonce_afresh()
    return tx


@pytest.mark.parametrize("answer", [RpcUnavailable("every endpoint failed"), "not code"])
async def test_a_code_read_that_fails_at_start_holds_new_liquidations_until_one_answers(
        answer: object) -> None:
    """(It let them through: a read failing at start held nothing.) Not alerted by itself —
    an RPC's failure is rpc_down's — and nothing but new liquidations waits on it."""
    node = Node(answer)
    tx = await started(node)
    hold = tx.send_hold(5)
    assert hold is not None and "could not be read at start" in hold.reason
    assert tx.key_conflict(5) is None and tx.signing_held() is None
    node.code = PLAIN
    await tx.check_foreign(6)  # (every block: the code rides with the mined nonce)
    assert tx.send_hold(6) is None
    node.code = RpcUnavailable("down again")
    await tx.check_foreign(7)
    hold = tx.send_hold(7)
    assert hold is not None and "since block 7" in hold.reason
    # Held that long, it is alerted (a lying endpoint's junk held every liquidation, silently).
    assert tx.key_conflict(7 + FOREIGN_QUIET_BLOCKS - 1) is None
    alerted = tx.key_conflict(7 + FOREIGN_QUIET_BLOCKS)
    assert alerted is not None and "since block 7" in alerted.reason
    assert "RPC endpoints" in alerted.action


async def test_a_code_answer_that_is_not_code_is_asked_of_every_endpoint() -> None:
    """An error inside a batch is not failed over: the code is asked of each endpoint in
    turn, and the first that answers code counts."""
    node = Node("junk")
    node.endpoints = ["bad", "good"]
    asked: list[str] = []

    async def call_endpoint(ep: str, method: str, params: Any = ()) -> Any:
        asked.append(ep)
        if ep == "bad":
            raise RpcUnavailable("bad is down")
        return DELEGATED

    node.call_endpoint = call_endpoint  # type: ignore[attr-defined]
    tx = await started(node)
    assert asked == ["bad", "good"]
    held = tx.signing_held()
    assert held is not None and "delegated (EIP-7702)" in held.reason
    assert tx.send_hold(5) == held


def answering(node: Node, codes: dict[str, object], name: Callable[[Any], str]) -> None:
    """Each endpoint asked by name answers the code scripted for it (or raises it)."""
    async def call_endpoint(ep: Any, method: str, params: Any = ()) -> Any:
        answer = codes[name(ep)]
        if isinstance(answer, Exception):
            raise answer
        return answer

    node.call_endpoint = call_endpoint  # type: ignore[attr-defined]


async def test_one_endpoint_saying_plain_does_not_lift_a_refusal() -> None:
    """(The first endpoint to answer `0x` lifted it: a lying or stale endpoint could let a
    compromised key sign again.) With two endpoints or more, the key signs again only once two
    say the refused code is gone and none says it is still there."""
    node = Node(DELEGATED)
    node.endpoints = ["a", "b", "c"]
    codes: dict[str, object] = {"a": DELEGATED, "b": DELEGATED, "c": DELEGATED}
    answering(node, codes, str)
    tx = await started(node)
    assert tx.signing_held() is not None
    # One endpoint (the pool's answer, and "a" asked alone) says the delegation is gone...
    node.code, codes["a"] = PLAIN, PLAIN
    await tx.check_foreign(1)
    assert tx.signing_held() is not None  # ...two others still see it
    # Two say plain, one still delegated: disputed, held.
    codes["b"] = PLAIN
    await tx.check_foreign(2)
    assert tx.signing_held() is not None and tx.send_hold(2) is not None
    # One says plain, the others cannot be read: not two, held.
    codes["b"] = codes["c"] = RpcUnavailable("down")
    await tx.check_foreign(3)
    assert tx.signing_held() is not None
    # Two agree and none disagrees (the third down): lifted.
    codes["b"] = PLAIN
    await tx.check_foreign(4)
    assert tx.signing_held() is None and tx.send_hold(4) is None
    # A refusal is still set by one endpoint's answer: holding is the safe side.
    node.code = DELEGATED
    await tx.check_foreign(5)
    assert tx.signing_held() is not None


async def test_an_endpoint_of_another_network_has_no_say() -> None:
    """keeperd runs beside a backup endpoint of another network (never used): its answers about
    the keeper's address are another chain's account. Its `0x` is not the second vote a
    refusal needs lifted."""
    ours, down, other = (SimpleNamespace(name=n) for n in ("ours", "down", "other"))
    node = Node(DELEGATED)
    node.endpoints = [ours, down, other]  # type: ignore[list-item]
    node.voters = [ours, down]  # (RpcPool.voters: not `other`)
    codes: dict[str, object] = {"ours": DELEGATED, "down": RpcUnavailable("down"),
                                "other": PLAIN}
    answering(node, codes, lambda ep: ep.name)
    tx = await started(node)
    assert tx.signing_held() is not None
    node.code = codes["ours"] = PLAIN
    await tx.check_foreign(1)
    assert tx.signing_held() is not None  # one vote of our chain's two: held
    codes["down"] = PLAIN
    await tx.check_foreign(2)
    assert tx.signing_held() is None


async def test_a_backup_of_another_network_keeps_the_refusal_until_the_config_is_mended(
        ) -> None:
    """Two endpoints configured, one of another network: one vote is all there can be, and
    two are needed. (With it left out of the count, the one endpoint left decided alone.)"""
    ours, other = SimpleNamespace(name="ours"), SimpleNamespace(name="other")
    node = Node(DELEGATED)
    node.endpoints = [ours, other]  # type: ignore[list-item]
    node.voters = [ours]
    answering(node, {"ours": PLAIN, "other": PLAIN}, lambda ep: ep.name)
    tx = await started(node)
    node.code = PLAIN
    for block in range(1, 4):
        await tx.check_foreign(block)
        assert tx.signing_held() is not None


async def test_an_endpoint_behind_the_block_has_no_say() -> None:
    """Asked at the block being judged: an endpoint that has not reached it answers nothing
    (at `latest` it says `0x` truthfully, its latest being from before the delegation)."""
    node = Node(DELEGATED)
    node.endpoints = ["fresh", "behind", "liar"]
    heads = {"fresh": 10, "behind": 4, "liar": 10}
    codes = {"fresh": DELEGATED, "behind": PLAIN, "liar": PLAIN}

    async def call_endpoint(ep: str, method: str, params: Any = ()) -> Any:
        at = params[1]
        if at != "latest" and int(at, 16) > heads[ep]:
            raise RpcError(method, -32000, "header not found")
        return codes[ep]

    node.call_endpoint = call_endpoint  # type: ignore[attr-defined]
    tx = await started(node)
    node.code = PLAIN  # (the pool's answer: the liar's)
    codes["fresh"] = RpcUnavailable("a moment down")
    await tx.check_foreign(5)  # the liar, and the one behind at block 5: not two
    assert tx.signing_held() is not None
    codes["fresh"] = PLAIN  # revoked, and seen so by an endpoint at the block
    await tx.check_foreign(6)
    assert tx.signing_held() is None


async def test_with_one_endpoint_its_answer_lifts_a_refusal() -> None:
    node = Node(DELEGATED)
    node.endpoints = ["only"]

    async def call_endpoint(ep: str, method: str, params: Any = ()) -> Any:
        return node.code

    node.call_endpoint = call_endpoint  # type: ignore[attr-defined]
    tx = await started(node)
    assert tx.signing_held() is not None
    node.code = PLAIN
    await tx.check_foreign(1)
    assert tx.signing_held() is None


async def test_the_code_is_read_every_block_even_when_no_nonce_of_anothers_is_mined() -> None:
    """A delegation can take a nonce keeperd signed and has in flight: then no foreign nonce
    shows it (it read the code only on a foreign nonce). Every block's read finds it."""
    node = Node(PLAIN)
    tx = await started(node)
    tx._ours.add(0)  # keeperd signed nonce 0; the authorization took it
    node.code, node.mined = DELEGATED, 1
    assert await tx.check_foreign(1) == []  # no other sender seen...
    assert tx.signing_held() is not None  # ...the delegation is
    assert tx.key_conflict(1) == tx.signing_held() == tx.send_hold(1)


async def test_a_delegated_address_signs_nothing_whoever_asks() -> None:
    """Not only new liquidations: approvals, follow-ups and replacements of what is in flight
    are signatures too (they went on)."""
    node = Node(DELEGATED)
    tx = await started(node)
    held = tx.signing_held()
    assert held is not None and "delegated (EIP-7702)" in held.reason
    with pytest.raises(SendRefused, match=r"not signed: .*delegated"):
        await tx.prepare(UpkeepKey("aave", "deposit", "0x" + "11" * 20, "1"), "0x" + "11" * 20,
                         b"", 50_000, 10**18, block=1, base_fee=10**9)
    node.asked.clear()
    assert await approvals.keep_allowances(tx, node, protocol="aave",  # type: ignore[arg-type]
                                           keeper=SIGNER.address, spender="0x" + "22" * 20,
                                           tokens=[("0x" + "33" * 20, "USDC")], head=1) == []
    assert node.asked == []  # (not even read: nothing would be signed)
    # One in flight, due for replacement: left as it was signed — not even priced for a
    # replacement (the base fee never asked), not cancelled.
    key = UpkeepKey("aave", "deposit", "0x" + "11" * 20, "0")
    sent = TxRecord("0x" + "ab" * 32, key, 0, 10**9, 10**9, 50_000, "0x02", "liquidation", 0.0)
    tx.pending[key] = Pending(key, 0, "0x" + "11" * 20, b"", 50_000, 10**18, [sent],
                              sent_block=1)
    node.asked.clear()
    node.code, node.mined = DELEGATED, 0
    assert await tx.watch(100, lambda k: True) == []
    assert set(node.asked) == {"eth_getTransactionCount", "eth_getTransactionReceipt"}
    assert tx.pending[key].attempts == [sent] and not tx.pending[key].cancelling


async def test_approvals_wait_while_another_sender_uses_the_key() -> None:
    """The liquidations' hold on another sender holds approvals too: nothing is read or
    signed (a trial saw approvals go through it, their nonces the other's to take)."""
    from keeperd.execution.delegation import KeyHold
    from keeperd.protocols.sdk.approvals import keep_allowances

    class Held:
        def signing_held(self) -> None:
            return None

        def key_conflict(self, block: int) -> KeyHold:
            return KeyHold(f"another sender at block {block}", "stop it")

    class NoPool:
        async def batch(self, calls: object) -> object:
            raise AssertionError("read while held")

    assert await keep_allowances(Held(), NoPool(), protocol="aave",  # type: ignore[arg-type]
                                 keeper="0x" + "11" * 20, spender="0x" + "22" * 20,
                                 tokens=[("0x" + "33" * 20, "USDC")], head=7) == []


def test_an_approval_is_taken_only_when_its_simulation_says_so() -> None:
    """Nothing returned (USDT-style) or true: one approval; a revert, false (a token that
    refuses by returning it), junk: a zero approval first."""
    from keeperd.chain.rpc import RpcError
    from keeperd.protocols.sdk.approvals import _approve_accepted

    assert _approve_accepted("0x") and _approve_accepted("0x" + "0" * 63 + "1")
    for refused in ("0x" + "0" * 64, RpcError("eth_call", 3, "reverted"), None, "0x12",
                    "0x" + "zz" * 32, 1):
        assert not _approve_accepted(refused), refused


async def test_an_approval_is_taken_as_accepted_only_if_every_endpoint_says_so() -> None:
    """One endpoint saying a USDT-like token accepts an approval over its allowance made its
    every top-up fail on chain: each endpoint that answers is asked, and one refusal (or
    false) is a zero first."""
    from keeperd.chain.rpc import RpcError
    from keeperd.protocols.sdk.approvals import _zero_first_where_refused

    class Pool:
        voters = ["liar", "honest"]

        async def batch(self, calls: list[object]) -> list[object]:
            return ["0x"] * len(calls)  # (the liar answers first)

        async def batch_on(self, ep: str, calls: list[object]) -> list[object]:
            if ep == "honest":
                return [RpcError("eth_call", 3, "revert"), "0x" + "0" * 63 + "1"]
            return ["0x"] * len(calls)

    over = [("0x" + "aa" * 20, "USDT", [500]), ("0x" + "bb" * 20, "DAI", [700])]
    await _zero_first_where_refused(Pool(), "0x" + "11" * 20,  # type: ignore[arg-type]
                                    "0x" + "22" * 20, over)
    assert [amounts for _, _, amounts in over] == [[0, 500], [700]]


async def test_a_delegation_one_endpoint_hides_is_found_by_asking_every_endpoint() -> None:
    """The block's own read is the first endpoint's, and its `0x` was believed at every block:
    a delegation made while keeperd ran could be hidden by one endpoint, its alert with it (a
    review). Every CODE_EVERYWHERE_BLOCKS each voter is asked; a delegation any says is judged
    as one, and lifted only when they agree it is gone."""
    from keeperd.execution.txmanager import CODE_EVERYWHERE_BLOCKS

    node = Node(PLAIN)
    node.endpoints = ["liar", "honest"]
    codes: dict[str, object] = {"liar": PLAIN, "honest": PLAIN}
    answering(node, codes, str)
    tx = await started(node)
    await tx.check_code_everywhere(100)
    assert tx.signing_held() is None
    codes["honest"] = DELEGATED  # (the key signed an authorization; the first hides it)
    await tx.check_foreign(101)
    assert tx.signing_held() is None  # (the block's read: the liar's)
    await tx.check_code_everywhere(100 + CODE_EVERYWHERE_BLOCKS - 1)
    assert tx.signing_held() is None  # (not due yet)
    await tx.check_code_everywhere(100 + CODE_EVERYWHERE_BLOCKS)
    held = tx.signing_held()
    assert held is not None and "delegated (EIP-7702)" in held.reason
    await tx.check_foreign(120)  # (the liar's 0x at the next block lifts nothing)
    assert tx.signing_held() is not None
    codes["honest"] = PLAIN  # (revoked: both agree)
    await tx.check_foreign(121)
    assert tx.signing_held() is None
