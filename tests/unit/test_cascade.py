"""The cascade engine: a closed-form case on constant-product depth, the vectorised engine
against the plain reference on random portfolios (every kernel variant: the same figures and
the same positions liquidated), and the derived figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeperd.risk.cascade import Portfolio, run_cascade, shock_grid
from keeperd.risk.depth import ConstantProduct, DepthCurve, NoImpact
from keeperd.risk.kernels import VARIANTS
from tests.unit.cascade_reference import assert_engine_agrees

LT = 0.8


def weth_book(collateral_weth: list[float], debt_usd: list[float], price: float = 2000.0
              ) -> Portfolio:
    """Positions with WETH collateral and USDC debt (assets: WETH, USDC)."""
    c = np.array([[w * price, 0.0] for w in collateral_weth])
    d = np.array([[0.0, x] for x in debt_usd])
    return Portfolio.build(["WETH", "USDC"], [price, 1.0], c, c * LT, d, [0.05, 0.04])


def test_closed_form_two_round_cascade_on_constant_product() -> None:
    # Position 1 (health 0.9/0.8 = ... ) liquidates at a 10 % drop; its seized WETH sold into a
    # 1,000-WETH pool pushes the price further, which liquidates position 2 in round 2;
    # position 3 survives even the deeper drop.
    price, x0 = 2000.0, 1000.0
    book = weth_book([100.0, 100.0, 100.0], [150_000.0, 140_000.0, 100_000.0], price)
    grid = shock_grid(book.assets, [0.10], single=["WETH"])
    r = run_cascade(book, grid, [ConstantProduct(x0), NoImpact()])

    p1 = price * 0.9
    # round 0: position 1's health = 100*1800*0.8/150000 = 0.96 -> half its debt (0.96 > 0.95)
    repaid1 = 0.5 * 150_000.0
    seized1_tokens = repaid1 * 1.05 / p1
    m1 = (x0 / (x0 + seized1_tokens)) ** 2
    p2 = p1 * m1
    # round 1: position 2 at p2
    h2 = 100 * p2 * LT / 140_000.0
    assert h2 < 1.0 < 100 * p2 * LT / 100_000.0
    repaid2 = (140_000.0 if h2 <= 0.95 else 0.5 * 140_000.0)
    seized2_tokens = repaid2 * 1.05 / p2
    m2 = (x0 / (x0 + seized1_tokens + seized2_tokens)) ** 2
    p3 = p1 * m2
    assert 100 * p3 * LT / 100_000.0 >= 1.0  # position 3 survives: the cascade stops

    assert r.static_accounts[0] == 1 and r.static_repaid[0] == pytest.approx(repaid1)
    assert r.accounts[0] == 2 and r.rounds[0] == 2
    assert r.repaid[0] == pytest.approx(repaid1 + repaid2)
    assert r.final_multiplier[0, 0] == pytest.approx(0.9 * m2)
    assert r.amplification[0] == pytest.approx((1 - 0.9 * m2) / 0.10)
    assert r.bonus[0] == pytest.approx(0.05 * (repaid1 + repaid2))
    assert r.tokens_sold[0, 0] == pytest.approx(seized1_tokens + seized2_tokens)


def test_bad_debt_and_toxic_debt() -> None:
    # 100 WETH at 2000 against 180k USDC: at -20 % collateral is 160k < 180k debt.
    book = weth_book([100.0], [180_000.0])
    r = run_cascade(book, shock_grid(book.assets, [0.05, 0.20], single=["WETH"]))
    assert r.static_bad_debt.tolist() == pytest.approx([0.0, 20_000.0])
    # LTV 180/190 = 0.947 > 1/1.05 = 0.952? no; at -20 %: 180/160 > 1: toxic
    assert r.toxic_debt[0] == 0.0 and r.toxic_debt[1] == pytest.approx(180_000.0)
    # not enough collateral for the bonus: all of it is seized, repaid = collateral / 1.05
    assert r.seized[1] == pytest.approx(160_000.0)
    assert r.repaid[1] == pytest.approx(160_000.0 / 1.05)


def test_joint_scenario_and_critical_shock() -> None:
    c = np.array([[2000.0 * 10, 30_000.0 * 1, 0.0]])
    d = np.array([[0.0, 0.0, 35_000.0]])
    book = Portfolio.build(["WETH", "WBTC", "USDC"], [2000.0, 30_000.0, 1.0], c, c * 0.8, d,
                           [0.05, 0.06, 0.04])
    grid = shock_grid(book.assets, [0.1, 0.2, 0.3, 0.4], single=["WETH", "WBTC"],
                      joint=["WETH", "WBTC"])
    r = run_cascade(book, grid)
    joint = [i for i, s in enumerate(grid.scenario) if s == "joint"]
    # health 40000/35000 = 1.143 today; liquidatable beyond a joint drop of 12.5 %, a WETH
    # drop of 31.25 %, a WBTC drop of 20.8 %.
    assert [int(r.accounts[i]) for i in joint] == [0, 1, 1, 1]
    assert r.accounts.tolist()[:8] == [0, 0, 0, 1, 0, 0, 1, 1]
    assert 0.1 < r.critical_shock("joint", 1.0) <= 0.2  # type: ignore[operator]
    assert 0.3 < r.critical_shock("WETH", 1.0) <= 0.4  # type: ignore[operator]
    assert 0.2 < r.critical_shock("WBTC", 1.0) <= 0.3  # type: ignore[operator]
    assert r.critical_shock("WETH", 1e9) is None


def test_depth_curve_and_coverage() -> None:
    curve = DepthCurve((1_000_000.0, 5_000_000.0), (0.02, 0.10), price_usd=2000.0)
    assert curve.multiplier(np.array([0.0, 500.0, 2500.0]))[1] == pytest.approx(1 - 0.02)
    assert curve.multiplier(np.array([2500.0]))[0] == pytest.approx(1 - 0.10)
    assert curve.absorbable_tokens(0.05) == pytest.approx(2_500_000.0 / 2000.0)
    cp = ConstantProduct(1000.0)
    assert cp.multiplier(np.array([cp.absorbable_tokens(0.05)]))[0] == pytest.approx(0.95)
    book = weth_book([100.0], [150_000.0])
    r = run_cascade(book, shock_grid(book.assets, [0.1], single=["WETH"]), [cp, NoImpact()])
    coverage = r.depth_coverage([cp, NoImpact()], np.array([0.05, 0.04]))
    assert coverage[0, 0] == pytest.approx(cp.absorbable_tokens(0.05) / r.tokens_sold[0, 0])
    assert math.isinf(coverage[0, 1])
    # A pool with no liquidity at its price (a devnet's after a crash): nothing sold keeps
    # the price, anything sold takes it to nothing (0/0 was NaN, warned on every what-if).
    empty = ConstantProduct(0.0)
    assert list(empty.multiplier(np.array([0.0, 1.0]))) == [1.0, 0.0]


def test_uniswap_v3_virtual_reserves() -> None:
    """Virtual reserves must price the asset as the pool does: y / x = P (in whole units),
    and x·y = L² (in raw units), whichever side of the pool the asset is."""
    price = 2000.0  # USDC per WETH; WETH 18 decimals, USDC 6
    liquidity = 3 * 10**18
    # WETH as token0: sqrt(token1 raw per token0 raw)
    sqrt0 = math.sqrt(price * 10**6 / 10**18)
    weth = ConstantProduct.from_uniswap_v3(liquidity, int(sqrt0 * 2**96), True, 18)
    usdc_raw = liquidity**2 / (weth.reserve_tokens * 10**18)  # the other side, from x·y = L²
    assert (usdc_raw / 10**6) / weth.reserve_tokens == pytest.approx(price, rel=1e-9)
    # WETH as token1 (a pool whose token0 is USDC): sqrt(WETH raw per USDC raw)
    sqrt1 = math.sqrt(10**18 / (price * 10**6))
    weth1 = ConstantProduct.from_uniswap_v3(liquidity, int(sqrt1 * 2**96), False, 18)
    usdc1_raw = liquidity**2 / (weth1.reserve_tokens * 10**18)
    assert (usdc1_raw / 10**6) / weth1.reserve_tokens == pytest.approx(price, rel=1e-9)


portfolios = st.integers(1, 3).flatmap(lambda A: st.tuples(
    st.just(A),
    st.lists(st.tuples(
        st.lists(st.integers(0, 40), min_size=A, max_size=A),  # collateral (x 250 USD)
        st.lists(st.integers(0, 40), min_size=A, max_size=A),  # debt (x 250 USD)
        st.lists(st.sampled_from([0.5, 0.625, 0.75, 0.875]), min_size=A, max_size=A),
        st.sampled_from([None, 0.01, 0.02]),  # the position's own bonus (Aave eMode), if any
    ), min_size=1, max_size=25),
    st.lists(st.integers(1, 7), min_size=1, max_size=4),  # shocks in eighths... /16
    st.lists(st.integers(50, 4000), min_size=A, max_size=A),  # pool reserves
    # (full_close_below, partial_min_usd): Aave v3.0, v3.3+ ($2,000), wider partial bands
    st.sampled_from([(0.95, 0.0), (0.95, 2000.0), (0.5, 2000.0), (0.5, 5000.0)]),
))


@pytest.mark.parametrize("implementation", VARIANTS)
@settings(max_examples=150, deadline=None, derandomize=True)
@given(case=portfolios)
def test_every_kernel_variant_agrees_with_the_reference(case: tuple, implementation: str
                                                        ) -> None:
    A, rows, shocks, reserves, (full_close_below, partial_min_usd) = case
    assets = [f"A{i}" for i in range(A)]
    prices = [1000.0, 20.0, 1.0][:A]
    c = np.array([[x * 250.0 for x in r[0]] for r in rows])
    d = np.array([[x * 250.0 for x in r[1]] for r in rows])
    lt = np.array([r[2] for r in rows])
    if (d.sum(axis=1) == 0).all():
        d[0, 0] = 250.0
    bonus = np.array([[0.05, 0.075, 0.1][:A] if r[3] is None else [r[3]] * A for r in rows])
    book = Portfolio.build(assets, prices, c, c * lt, d, bonus,
                           full_close_below=full_close_below, partial_min_usd=partial_min_usd)
    grid = shock_grid(assets, [s / 16 for s in shocks], joint=assets)
    depth = [ConstantProduct(float(x)) for x in reserves]
    assert_engine_agrees(book, grid, depth, implementation, threads=2, tolerance=1e-4,
                         max_rounds=10)


@pytest.mark.parametrize("implementation", VARIANTS)
def test_every_kernel_variant_on_a_large_book_with_few_columns_active(implementation: str
                                                                      ) -> None:
    """More rows than blocks and threads, columns converging at different rounds (the
    compiled kernels read `ever` in runs of consecutive active columns), positions holding
    one to four assets (the kernels skip the assets a position does not hold)."""
    rng = np.random.default_rng(5)
    n, assets = 3_000, ["A", "B", "C", "D"]
    c = rng.lognormal(8, 1, (n, 4)) * (rng.random((n, 4)) < 0.5)
    c[np.arange(n), rng.integers(0, 4, n)] += 1_000.0
    d = np.zeros((n, 4))
    d[np.arange(n), rng.integers(0, 4, n)] = (c * 0.8).sum(axis=1) / rng.uniform(1.0, 2.5, n)
    book = Portfolio.build(assets, [3000.0, 60_000.0, 1.0, 1.0], c, c * 0.8, d,
                           [0.05, 0.07, 0.04, 0.04], partial_min_usd=2_000.0)
    grid = shock_grid(assets, [0.02, 0.05, 0.1, 0.2, 0.3, 0.45], single=["A", "B"],
                      joint=["A", "B"])
    depth = [ConstantProduct(float(c[:, 0].sum() / 3000.0 * 0.3)),
             ConstantProduct(float(c[:, 1].sum() / 60_000.0)), NoImpact(), NoImpact()]
    got = assert_engine_agrees(book, grid, depth, implementation, threads=2)
    assert len(set(got.rounds.tolist())) > 2 and got.accounts.sum() > n  # a real cascade


def test_followers_fall_with_their_leader_unless_shocked_themselves() -> None:
    from keeperd.risk.cascade import with_followers

    assets = ["WETH", "wstETH", "USDC"]
    grid = shock_grid(assets, [0.1, 0.3], joint=["WETH", "wstETH"])
    moved = with_followers(grid, assets, {"wstETH": "WETH"})
    for k, name in enumerate(moved.scenario):
        if name == "WETH":  # the leader's scenario takes the follower along
            assert moved.multiplier[k, 1] == moved.multiplier[k, 0] == 1 - moved.shock[k]
            assert moved.shocked[k, 1]
        else:  # its own depeg, the joint drop and USDC are left as they were
            assert (moved.multiplier[k] == grid.multiplier[k]).all()
    assert (moved.multiplier[:, 2][[n == "WETH" for n in moved.scenario]] == 1.0).all()
