"""Cases that kill the survivors of `make mutate` in keeperd/execution/capital.py
(docs/mutation.md): a debt asset the balances do not list, and several unfunded needs of one
asset adding up."""

from __future__ import annotations

from keeperd.execution.capital import Need, Purse, Shortfall, allocate
from tests.unit.test_capital import need


def test_an_asset_the_balances_do_not_list_is_held_at_zero() -> None:
    funded, unfunded, short = allocate([("weth", 1, 2.0)], need, {})
    assert funded == [] and unfunded == [("weth", 1, 2.0)]
    assert short == {"weth": Shortfall("weth", "WETH", 6, 1, 1, 2.0)}


def test_unfunded_needs_of_one_asset_add_up_against_what_is_left() -> None:
    # 100 USDC held; 300 and 200 both unfunded: 500 needed, 400 missing, 2 forgone for 15.
    items = [("usdc", 300, 10.0), ("usdc", 200, 5.0)]
    funded, unfunded, short = allocate(items, need, {"usdc": 100})
    assert funded == [] and unfunded == items
    assert short == {"usdc": Shortfall("usdc", "USDC", 6, 400, 2, 15.0)}


def test_a_purse_learns_a_balance_it_did_not_know() -> None:
    purse = Purse()
    assert not purse.knows("dai")
    purse.hold("dai", 5)
    assert purse.knows("dai")
    assert purse.pay(Need("dai", "DAI", 18, 5, 1.0)) and purse.left == {"dai": 0}
