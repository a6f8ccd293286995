"""The keeper's address's code read (EIP-7702): an ordinary account, a delegation, other code;
and when that holds keeperd's sends (execution/delegation.py)."""

from __future__ import annotations

import pytest
from eth_utils import to_checksum_address

from keeperd.execution.delegation import KeeperCode, read_code, refusal

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
    why = refusal(KEEPER, delegated, frozenset(), 123)
    assert why is not None and DELEGATE in why and "block 123" in why
    assert "allowed_delegates" in why and "revokes" in why
    assert refusal(KEEPER, delegated, frozenset({DELEGATE}), 123) is None
    other = to_checksum_address("0x" + "cd" * 20)
    assert refusal(KEEPER, delegated, frozenset({other}), 123) is not None
    assert "at start" in str(refusal(KEEPER, delegated, frozenset(), None))


def test_an_ordinary_address_sends_and_other_code_never_does() -> None:
    assert refusal(KEEPER, read_code("0x"), frozenset(), 1) is None
    # (allowing delegates does not allow a contract's own code)
    why = refusal(KEEPER, read_code("0x6080"), frozenset({DELEGATE}), 1)
    assert why is not None and "contract code" in why
