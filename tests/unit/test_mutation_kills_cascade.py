"""Cases for the survivors of `make mutate` in risk/cascade.py (docs/mutation.md): the fields of
a cascade's result the suite did not read (per-round record, static bonus, seized by asset,
their dtypes), a cascade that converges at once, an empty book, `critical_shock`'s
interpolation worked out on a hand-made grid, followers, depth coverage, and what
`Portfolio.build` keeps and converts."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest

from keeperd.risk.cascade import Columns, Portfolio, run_cascade, shock_grid, with_followers
from keeperd.risk.depth import ConstantProduct, NoImpact
from tests.unit.test_cascade import LT, weth_book


def test_every_field_of_a_two_round_cascade() -> None:
    # test_cascade.py's closed form: position 1 (100 WETH, 150k) at -10 % repays half, its
    # 41.67 WETH sold into a 1,000-WETH pool take the price to 1,800 m1, where position 2
    # (140k) goes; position 3 (100k) holds. Round 2 liquidates nothing.
    price, x0 = 2_000.0, 1_000.0
    book = weth_book([100.0, 100.0, 100.0], [150_000.0, 140_000.0, 100_000.0], price)
    grid = shock_grid(book.assets, [0.10], single=["WETH"])
    r = run_cascade(book, grid, [ConstantProduct(x0), NoImpact()])
    p1 = price * 0.9
    repaid1 = 75_000.0
    sold1 = repaid1 * 1.05 / p1
    m1 = (x0 / (x0 + sold1)) ** 2
    h2 = 100 * p1 * m1 * LT / 140_000.0
    repaid2 = 140_000.0 if h2 <= 0.95 else 70_000.0
    assert r.assets == ("WETH", "USDC") and r.total_debt == 390_000.0
    assert r.static_bonus[0] == pytest.approx(0.05 * repaid1)
    assert r.seized_by_asset[0].tolist() == pytest.approx([1.05 * (repaid1 + repaid2), 0.0])
    assert [x.dtype for x in (r.static_accounts, r.accounts, r.rounds)] == [np.int64] * 3
    assert len(r.per_round) == 3
    for rnd in r.per_round:
        assert set(rnd) == {"accounts", "repaid", "seized", "multiplier"}
    assert [float(x["accounts"][0]) for x in r.per_round] == [1.0, 1.0, 0.0]
    assert [float(x["repaid"][0]) for x in r.per_round] == pytest.approx([repaid1, repaid2, 0])
    assert [float(x["seized"][0]) for x in r.per_round] == pytest.approx(
        [1.05 * repaid1, 1.05 * repaid2, 0])
    assert r.per_round[0]["multiplier"][0].tolist() == [0.9, 1.0]
    assert r.per_round[1]["multiplier"][0].tolist() == pytest.approx([0.9 * m1, 1.0])


def test_a_cascade_without_price_impact_is_one_round() -> None:
    # No depth: the sales move no price, so the column has converged after round 0.
    book = weth_book([100.0], [150_000.0])
    r = run_cascade(book, shock_grid(book.assets, [0.1], single=["WETH"]))
    assert len(r.per_round) == 1 and r.rounds.tolist() == [1]


def test_an_empty_book() -> None:
    # Positions without debt are dropped; a book of none of them cascades to nothing.
    book = weth_book([100.0, 5.0], [0.0, 0.0])
    assert len(book) == 0
    r = run_cascade(book, shock_grid(book.assets, [0.1, 0.5]))
    assert r.accounts.tolist() == [0] * 4 and r.repaid.tolist() == [0.0] * 4


def test_portfolio_build_keeps_what_owes_and_converts_to_float() -> None:
    # From Python integers: float64 figures; a position owing $0.50 is kept, one owing
    # nothing is dropped; accounts must name every position.
    c = [[2_000, 0], [2_000, 0], [4_000, 0]]
    d = [[0, 1], [0, 0], [0, 3_000]]
    d_half = np.array(d, dtype=float)
    d_half[0, 1] = 0.5
    book = Portfolio.build(["WETH", "USDC"], [2_000, 1], np.array(c), np.array(c),
                           d_half, [5, 4], accounts=["a", "b", "c"])
    assert book.accounts == ("a", "c") and len(book) == 2
    for figures in (book.prices, book.collateral_usd, book.weighted_collateral_usd,
                    book.debt_usd, book.bonus):
        assert figures.dtype == np.float64
    assert book.partial_min_usd == 0.0  # no v3.3 $2,000 rule unless asked
    ints = Portfolio.build(["WETH", "USDC"], [2_000, 1], np.array(c), np.array(c),
                           np.array(d), [5, 4])
    assert ints.collateral_usd.dtype == ints.debt_usd.dtype == np.float64
    with pytest.raises(ValueError):
        Portfolio.build(["WETH", "USDC"], [2_000, 1], np.array(c), np.array(c), d_half,
                        [5, 4], accounts=["a", "b"])


def test_critical_shock_interpolates_between_grid_points() -> None:
    # Scenario A at shocks 0.1 .. 0.4 (given out of order) repaying 20, 100, 100, 300.
    book = weth_book([100.0], [150_000.0])
    r = run_cascade(book, shock_grid(book.assets, [0.1]))
    cols = Columns(("A", "A", "A", "A", "B"), np.array([0.3, 0.1, 0.4, 0.2, 0.1]),
                   np.ones((5, 2)), np.zeros((5, 2), bool))
    r = replace(r, columns=cols, repaid=np.array([100.0, 20.0, 300.0, 100.0, 5.0]))
    assert r.critical_shock("A", 10.0) == 0.1  # the first grid point already repays it
    # 60: between (0.1, 20) and (0.2, 100), (60 - 20) / 80 of the way: 0.15
    assert r.critical_shock("A", 60.0) == pytest.approx(0.15)
    # exactly 100: the first point that repays at least it, 0.2 (not the plateau's end)
    assert r.critical_shock("A", 100.0) == pytest.approx(0.2)
    # 200: between (0.3, 100) and (0.4, 300): 0.35
    assert r.critical_shock("A", 200.0) == pytest.approx(0.35)
    assert r.critical_shock("A", 301.0) is None
    # Beyond a baseline of 20 liquidatable today: 40 more is 60 in all, 0.15 as above; the
    # first point repays nothing more, so 10 more is no longer the grid's first point.
    assert r.critical_shock("A", 40.0, baseline_repaid=20.0) == pytest.approx(0.15)
    assert r.critical_shock("A", 10.0, baseline_repaid=20.0) == pytest.approx(0.1125)
    assert r.critical_shock("A", 281.0, baseline_repaid=20.0) is None


def test_depth_coverage_counts_what_the_shock_adds_to_the_baseline() -> None:
    book = weth_book([100.0], [150_000.0])
    r = run_cascade(book, shock_grid(book.assets, [0.1]))
    cp = ConstantProduct(1000.0)
    r = replace(r, tokens_sold=np.array([[30.0, 0.0], [10.0, 0.0]]))
    absorbable = cp.absorbable_tokens(0.05)
    full = r.depth_coverage([cp, NoImpact()], np.array([0.05, 0.04]))
    assert full[0, 0] == pytest.approx(absorbable / 30.0)
    beyond = r.depth_coverage([cp, NoImpact()], np.array([0.05, 0.04]), np.array([10.0, 0.0]))
    assert beyond[0, 0] == pytest.approx(absorbable / 20.0)
    assert np.isinf(beyond[1, 0]) and np.isinf(beyond[0, 1])  # (nothing more sold)


def test_followers_skip_what_the_book_lacks_and_keep_their_own_flags() -> None:
    assets = ["WETH", "wstETH", "USDC"]
    grid = shock_grid(assets, [0.1], joint=["WETH", "wstETH"])
    # rETH is not in the book (skipped, not the end of the mapping); wstETH follows WETH
    moved = with_followers(grid, assets, {"rETH": "WETH", "wstETH": "WETH"})
    by_name = dict(zip(moved.scenario, range(len(moved.scenario)), strict=True))
    assert moved.multiplier[by_name["WETH"], 1] == pytest.approx(0.9)
    assert moved.shocked[by_name["WETH"]].tolist() == [True, True, False]
    # the USDC column shocks neither: wstETH is not marked shocked there
    assert moved.shocked[by_name["USDC"]].tolist() == [False, False, True]
    # a follower whose leader is not in the book is left alone
    alone = with_followers(grid, assets, {"wstETH": "stETH"})
    assert (alone.multiplier == grid.multiplier).all()


def test_depth_coverage_of_small_sales_and_of_none() -> None:
    book = weth_book([100.0], [150_000.0])
    cp = ConstantProduct(1_000.0)
    r = run_cascade(book, shock_grid(book.assets, [0.1], single=["WETH"]), [cp, NoImpact()])
    # half a token sold: the pool absorbs 1,000 (1 / sqrt(0.95) - 1) = 25.98 before -5 %
    small = replace(r, tokens_sold=np.array([[0.5, 0.0]]))
    with warnings.catch_warnings():
        # an asset that sold nothing divides by nothing quietly: a pool's absorbable tokens
        # over 0 (divide), an empty pool's 0 over 0 (invalid)
        warnings.simplefilter("error")
        coverage = small.depth_coverage([cp, cp], np.array([0.05, 0.04]))
        empty_pool = small.depth_coverage([cp, ConstantProduct(0.0)], np.array([0.05, 0.04]))
    assert coverage[0, 0] == pytest.approx(1_000 * (1 / np.sqrt(0.95) - 1) / 0.5)
    assert np.isinf(coverage[0, 1]) and np.isinf(empty_pool[0, 1])
    with pytest.raises(ValueError):  # a depth model per asset, no fewer
        r.depth_coverage([cp], np.array([0.05, 0.04]))
