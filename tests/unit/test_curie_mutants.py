"""Cases that kill the mutations of Perp Curie's rules that survived the unit suite (#30 item
1): the bad debt a shock leaves, and the boundary at half the requirement."""

from __future__ import annotations

import pytest

from keeperd.protocols.perp_curie import margin as cm
from tests.unit.test_curie_margin import MM, position, trader


def test_a_shock_that_takes_an_account_below_zero_counts_its_bad_debt() -> None:
    # $1,000 of margin under 5 ETH long at $2,000: a 30 % drop loses $3,000 -> -$2,000.
    eth = position("ETH", 5, 2_000)
    notional, bad_debt = cm.at_risk([trader(1_000, eth)], "ETH", -0.30, MM)
    assert notional == pytest.approx(7_000, rel=1e-9)  # $10,000 x 0.7, marked at the shock
    assert bad_debt == pytest.approx(2_000, rel=1e-6)
    # Liquidatable but still above zero: no bad debt.
    assert cm.at_risk([trader(1_000, eth)], "ETH", -0.06, MM)[1] == 0.0


def test_exactly_half_the_requirement_is_still_the_partial_rule() -> None:
    # AccountBalance: `accountValue >= marginRequirement / 2` takes the close-factor share.
    eth = position("ETH", 5, 2_000)
    requirement = cm.mul_ratio(eth.notional, MM)  # $625
    at_half = cm.CurieTrader("0xt", requirement // 2, requirement, 0, (eth,))
    assert cm.is_liquidatable(at_half)
    assert cm.liquidatable_size(at_half, eth) == eth.size // 2
    below = cm.CurieTrader("0xt", requirement // 2 - 1, requirement, 0, (eth,))
    assert cm.liquidatable_size(below, eth) == eth.size
    # And the liquidation test itself: value equal to the requirement is not liquidatable.
    assert not cm.is_liquidatable(cm.CurieTrader("0xt", requirement, requirement, 0, (eth,)))
