"""Capital as a stage: which liquidations the keeper's balances pay for (pure)."""

from __future__ import annotations

from keeperd.execution.capital import Need, allocate


def need(item: tuple[str, int, float]) -> Need:
    asset, amount, profit = item
    return Need(asset, asset.upper(), 6, amount, profit)


def test_most_profitable_first_then_what_still_fits() -> None:
    items = [("usdc", 700, 50.0), ("usdc", 500, 40.0), ("dai", 10, 1.0), ("usdc", 300, 5.0)]
    funded, unfunded, short = allocate(items, need, {"usdc": 1_000, "dai": 0})
    # 700 fits; 500 does not (300 left); the 300 after it still does.
    assert funded == [("usdc", 700, 50.0), ("usdc", 300, 5.0)]
    assert unfunded == [("usdc", 500, 40.0), ("dai", 10, 1.0)]
    # To fund everything: 1,500 USDC needed, 1,000 held; 10 DAI needed, none held.
    assert short["usdc"].missing == 500 and short["usdc"].opportunities == 1
    assert short["usdc"].profit_forgone_usd == 40.0 and short["usdc"].symbol == "USDC"
    assert short["dai"].missing == 10 and short["dai"].missing_tokens == 10 / 1e6


def test_enough_balance_means_no_shortfall() -> None:
    funded, unfunded, short = allocate([("usdc", 5, 1.0)], need, {"usdc": 5})
    assert funded == [("usdc", 5, 1.0)] and unfunded == [] and short == {}
