"""#29 item 4: the keys of what the keeper signs are types. An opportunity key's text is the
journal's primary key and must not change for a given opportunity (a restart that spelled it
otherwise would send it twice); it parses back to the same key, retries included; no part may
hold the separators; an approval or deposit is never taken for a liquidation."""

from __future__ import annotations

import pytest

from keeperd.execution.journal import JournalEntry
from keeperd.protocols.sdk.keys import OpportunityKey, UpkeepKey

AAVE = OpportunityKey("aave", "0xAcc", ("0xWETH", "0xUSDC"), "10291/4073")


def test_the_text_is_what_journals_hold_and_parses_back() -> None:
    # The text every earlier release journaled for these opportunities.
    assert str(AAVE) == "aave:0xAcc:0xWETH:0xUSDC:10291/4073"
    assert str(AAVE.retry(2)) == "aave:0xAcc:0xWETH:0xUSDC:10291/4073#retry2"
    morpho = OpportunityKey("morpho", "0xAcc", ("0x8a1f3e2b9c4d5e6f",), "123456")
    unwind = OpportunityKey("curie", "0xKeeper", ("unwind", "0xBase"), "-5000")
    assert str(unwind) == "curie:0xKeeper:unwind:0xBase:-5000"
    for key in (AAVE, AAVE.retry(2), morpho, unwind, unwind.retry(1)):
        assert OpportunityKey.parse(str(key)) == key
    entry = JournalEntry(str(AAVE.retry(1)), "aave", "0xAcc", "WETH", "USDC", 1, 0.0, 0, 1,
                         "pending", None, None, None)
    assert entry.opportunity == AAVE.retry(1) and entry.opportunity.protocol == "aave"


@pytest.mark.parametrize("bad", [
    dict(protocol="aa:ve"), dict(account=""), dict(position=()), dict(position=("a:b",)),
    dict(version="1#retry2"), dict(attempt=-1)])
def test_a_part_with_a_separator_is_refused(bad: dict[str, object]) -> None:
    fields: dict[str, object] = {"protocol": "aave", "account": "0xAcc",
                                 "position": ("c", "d"), "version": "v", **bad}
    with pytest.raises(ValueError):
        OpportunityKey(**fields)  # type: ignore[arg-type]


def test_an_upkeep_key_is_not_an_opportunity_and_names_its_protocol() -> None:
    approval = UpkeepKey("aave", "approve", "0xToken", "5@100")
    assert approval.protocol == "aave" and not isinstance(approval, OpportunityKey)
    with pytest.raises(ValueError):
        OpportunityKey.parse("morpho")  # not a key at all
