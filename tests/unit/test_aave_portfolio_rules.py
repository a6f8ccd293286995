"""The cascade's Aave figures follow the pool's revision (#26 item 5): on an eMode-heavy book,
the liquidated and seized figures of every column equal a plain reference that applies, account
by account, the revision's close factor (v3.0: half, all at health <= 0.95; v3.3+: all unless
the main collateral and the main debt are each worth >= $2,000 and health > 0.95) and the
eMode category's bonus for collateral the category covers; the reference agrees with the exact
planner (liquidation.py) on every account it liquidates."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest

from keeperd.protocols.aave_v3.book import AaveBook, EModeCategory, MarketState, Positions, Reserve
from keeperd.protocols.aave_v3.liquidation import plan_account
from keeperd.protocols.aave_v3.math import RAY, exact_account_data
from keeperd.protocols.aave_v3.portfolio import aave_portfolio
from keeperd.protocols.aave_v3.revisions import rules_for
from keeperd.risk.cascade import run_cascade, shock_grid, with_followers
from keeperd.risk.depth import ConstantProduct, NoImpact
from keeperd.risk.kernels import VARIANTS
from tests.unit.cascade_reference import assert_engine_agrees


def reserve(symbol: str, rid: int, decimals: int, ltv: int, lt: int, bonus: int,
            emode: int) -> Reserve:
    return Reserve(f"0x{rid + 1:040x}", symbol, rid, decimals, ltv, lt, bonus, emode, f"a{rid}",
                   "0x" + "0" * 40, f"v{rid}", True, False, False, True)


RESERVES = (
    reserve("WETH", 0, 18, 8000, 8250, 10500, 2),
    reserve("wstETH", 1, 18, 7800, 8100, 10600, 2),
    reserve("USDC", 2, 6, 7500, 7800, 10500, 1),
    reserve("USDT", 3, 6, 7500, 7800, 10500, 1),
    reserve("WBTC", 4, 8, 7300, 7800, 10700, 0),
)
PRICES = {"WETH": 2_000, "wstETH": 2_400, "USDC": 1, "USDT": 1, "WBTC": 60_000}
# Membership the same by reserve bits (v3.0) and by bitmaps (v3.2+); bonuses 1 % and 2 %.
EMODE = {1: EModeCategory(1, 9300, 9500, 10100, None, "Stablecoins", collateral_bitmap=0b1100),
         2: EModeCategory(2, 9300, 9400, 10200, None, "ETH correlated",
                          collateral_bitmap=0b0011)}
# (eMode, collateral USD, debt USD): loops in eMode, big and small (under $2,000), an eMode
# user whose main collateral the category does not cover, plain positions.
BOOK = (
    (2, {"wstETH": 100_000}, {"WETH": 91_000}),
    (2, {"wstETH": 1_900}, {"WETH": 1_730}),
    (1, {"USDC": 50_000}, {"USDT": 47_000}),
    (1, {"USDC": 1_500}, {"USDT": 1_400}),
    (0, {"WETH": 20_000}, {"USDC": 15_000}),
    (2, {"WETH": 30_000, "USDC": 5_000}, {"USDC": 29_000}),
    (1, {"WETH": 10_000, "USDC": 3_000}, {"USDT": 9_500}),
    (0, {"WBTC": 1_800}, {"USDC": 1_300}),
    (0, {"WBTC": 100_000}, {"USDC": 20_000}),
)
REVISIONS = {"v3.0": 1, "v3.3": 7, "v3.6": 10}


def book(revision: int) -> AaveBook:
    market = MarketState(100, RESERVES, (RAY,) * 5, (RAY,) * 5,
                         tuple(PRICES[r.symbol] * 10**8 for r in RESERVES), 10**8, EMODE, {},
                         rules_for(revision), 1_000_000)
    n, r = len(BOOK), len(RESERVES)
    cflag, bflag = np.zeros((n, r), bool), np.zeros((n, r), bool)
    a, v = np.zeros((n, r), dtype=object), np.zeros((n, r), dtype=object)
    for i, (_, collateral, debt) in enumerate(BOOK):
        for flags, amounts, side in ((cflag, a, collateral), (bflag, v, debt)):
            for symbol, usd in side.items():
                c = market.column(symbol)
                flags[i, c] = True
                amounts[i, c] = usd * 10**RESERVES[c].decimals // PRICES[symbol]
    positions = Positions(tuple(f"0x{i + 1:040x}" for i in range(n)),
                          np.array([e for e, _, _ in BOOK], dtype=np.int64), cflag, bflag, a, v,
                          np.zeros((n, r), dtype=object))
    return AaveBook(market, positions)


@dataclass(frozen=True)
class Outcome:
    repaid: float
    seized: float
    collateral: str
    emode_bonus: bool  # the eMode category's bonus, not the reserve's
    closed_small: bool  # all the debt at health > 0.95: v3.3+'s rule for small positions


def _usd_price(m: MarketState, c: int, user_emode: int) -> float:
    """The oracle price, or (v3.0-v3.1) the eMode category's price source where it has one."""
    r = m.reserves[c]
    emode_price = m.emode_prices.get(user_emode, 0) if user_emode else 0
    if emode_price and r.emode_category == user_emode and not m.rules.emode_bitmaps:
        return emode_price / m.base_unit
    return m.prices[c] / m.base_unit


def reference_account(b: AaveBook, row: int, mult: list[float]
                      ) -> tuple[Outcome | None, float]:
    """One account at prices x `mult` (by column), plainly: its liquidation (or None), and its
    debt if it is toxic (its debt plus the bonus above its collateral), else 0."""
    m, pos = b.market, b.positions
    rules = m.rules
    cat = int(pos.emode[row])
    coll, weighted, debt = {}, 0.0, {}
    coll_today, debt_today = {}, {}
    for c, r in enumerate(m.reserves):
        price = _usd_price(m, c, cat)
        if pos.collateral_flag[row, c] and (r.liquidation_threshold or rules.zero_lt_collateral):
            tokens = int(pos.a_scaled[row, c]) * m.income_index[c] / RAY / 10**r.decimals
            lt = (m.emode[cat].liquidation_threshold if m.emode_covers(cat, c)
                  else r.liquidation_threshold)
            coll_today[c] = tokens * price
            coll[c] = tokens * price * mult[c]
            weighted += tokens * price * mult[c] * lt / 10_000
        if pos.borrowing_flag[row, c]:
            tokens = int(pos.variable_scaled[row, c]) * m.debt_index[c] / RAY / 10**r.decimals
            debt_today[c] = tokens * price
            debt[c] = tokens * price * mult[c]
    total_debt = sum(debt.values())
    if not coll or total_debt <= 0:
        return None, 0.0
    main = max(coll_today, key=lambda c: coll_today[c])  # the largest at today's prices
    main_debt = max(debt_today, key=lambda c: debt_today[c])
    emode_bonus = m.emode_covers(cat, main)
    bonus_bps = (m.emode[cat].liquidation_bonus if emode_bonus
                 else m.reserves[main].liquidation_bonus)
    bonus = (bonus_bps - 10_000) / 10_000 if bonus_bps else 0.0
    toxic = total_debt if total_debt * (1 + bonus) > sum(coll.values()) else 0.0
    health = weighted / total_debt
    if health >= 1:
        return None, toxic
    small = (health > 0.95 and rules.close_factor_v33
             and min(coll[main], debt[main_debt]) < 2_000)
    repaid = total_debt if health <= 0.95 or small else 0.5 * total_debt
    repaid = min(repaid, coll[main] / (1 + bonus))
    return Outcome(repaid, repaid * (1 + bonus), m.reserves[main].symbol, emode_bonus,
                   small), toxic


def reference_column(b: AaveBook, mult: list[float]) -> dict[str, float]:
    """A column's figures, and how many liquidations took the eMode bonus or closed a small
    position whole."""
    figures: dict[str, Any] = dict.fromkeys(("accounts", "repaid", "seized", "toxic",
                                             "emode_bonus", "closed_small"), 0.0)
    figures["liquidated"] = set()  # the accounts
    for row in range(len(b.positions)):
        out, toxic_debt = reference_account(b, row, mult)
        figures["toxic"] += toxic_debt
        if out is not None:
            figures["accounts"] += 1
            figures["liquidated"].add(b.positions.accounts[row])
            figures["repaid"] += out.repaid
            figures["seized"] += out.seized
            figures["emode_bonus"] += out.emode_bonus
            figures["closed_small"] += out.closed_small
    return figures


def assert_cascade_matches_reference(b: AaveBook, symbols: list[str], shocks: list[float],
                                     implementation: str = "auto") -> dict[str, float]:
    """Every column's static (and, with no price impact, cascade) figures and liquidated
    accounts against the plain reference's; returns how many liquidations, over all columns,
    took the eMode bonus or closed a small position whole."""
    portfolio = aave_portfolio(b)
    grid = with_followers(shock_grid(portfolio.assets, shocks, single=symbols),
                          portfolio.assets, b.market.price_links)
    result = run_cascade(portfolio, grid, [NoImpact()] * len(portfolio.assets),
                         implementation=implementation)
    assert portfolio.accounts is not None
    rules_used = {"emode_bonus": 0.0, "closed_small": 0.0}
    for k in range(len(grid.shock)):
        want = reference_column(b, [float(x) for x in grid.multiplier[k]])
        for key in rules_used:
            rules_used[key] += want.pop(key)
        assert {portfolio.accounts[i] for i in np.flatnonzero(result.liquidated[:, k])
                } == want.pop("liquidated"), (grid.scenario[k], grid.shock[k])
        got = {"accounts": result.static_accounts[k], "repaid": result.static_repaid[k],
               "seized": result.static_seized[k], "toxic": result.toxic_debt[k]}
        assert got == pytest.approx(want, rel=1e-9, abs=1e-6), (grid.scenario[k],
                                                                grid.shock[k])
        assert result.accounts[k] == result.static_accounts[k]
        assert result.seized[k] == pytest.approx(result.static_seized[k], rel=1e-12)
    return rules_used


SHOCKS = [0.03, 0.05, 0.1, 0.2, 0.4]
SCENARIOS = ["WETH", "wstETH", "USDC", "WBTC"]


@pytest.mark.parametrize("implementation", VARIANTS)
@pytest.mark.parametrize("release", list(REVISIONS))
def test_cascade_follows_the_revisions_close_factor_and_emode_bonus(
        release: str, implementation: str) -> None:
    used = assert_cascade_matches_reference(book(REVISIONS[release]), SCENARIOS, SHOCKS,
                                            implementation)
    assert used["emode_bonus"] > 10
    assert (used["closed_small"] > 0) == (release != "v3.0")


def test_v30_and_v33_figures_differ_where_the_rules_do() -> None:
    """wstETH -5 %: the big LST loop (health 0.98) repays half of its $91,000 under both rules,
    the small one ($1,805 of wstETH) half under v3.0 and all of it under v3.3; both seize
    repaid x 1.02, the eMode bonus, not wstETH's 6 %."""
    figures = {}
    for release in ("v3.0", "v3.3"):
        portfolio = aave_portfolio(book(REVISIONS[release]))
        grid = shock_grid(portfolio.assets, [0.05], single=["wstETH"])
        r = run_cascade(portfolio, grid)
        figures[release] = (int(r.static_accounts[0]), float(r.static_repaid[0]),
                            float(r.static_seized[0]))
    assert figures["v3.0"] == pytest.approx((2, 45_500 + 865, (45_500 + 865) * 1.02), rel=1e-9)
    assert figures["v3.3"] == pytest.approx((2, 45_500 + 1_730, (45_500 + 1_730) * 1.02),
                                            rel=1e-9)


@pytest.mark.parametrize("release", list(REVISIONS))
def test_the_reference_is_what_the_exact_planner_does(release: str) -> None:
    """The plain reference, account by account, against liquidation.py on the shocked market
    (every account it liquidates is planned, with the same debt covered and collateral
    seized; the book leaves no dust and has no protocol fee)."""
    b = book(REVISIONS[release])
    planned = 0
    for symbol in SCENARIOS:
        for shock in SHOCKS:
            mult = [1 - shock if r.symbol == symbol else 1.0 for r in RESERVES]
            shocked = replace(b.market, prices=tuple(round(p * x)
                                                     for p, x in zip(b.market.prices, mult,
                                                                     strict=True)))
            exact = exact_account_data(shocked, b.positions)
            for row in range(len(b.positions)):
                want, _ = reference_account(b, row, mult)
                plan = plan_account(shocked, b.positions, exact, row)
                assert (plan is None) == (want is None), (symbol, shock, row)
                if plan is None or want is None:
                    continue
                planned += 1
                assert plan.collateral == want.collateral
                assert plan.repaid_usd == pytest.approx(want.repaid, rel=1e-6)
                assert plan.seized_usd == pytest.approx(want.seized, rel=1e-6)
    assert planned >= 28


@pytest.mark.parametrize("implementation", VARIANTS)
@pytest.mark.parametrize("release", ["v3.0", "v3.3"])
def test_engine_variants_agree_with_the_cascade_reference_on_the_emode_book(
        release: str, implementation: str) -> None:
    portfolio = aave_portfolio(book(REVISIONS[release]))
    grid = shock_grid(portfolio.assets, SHOCKS, single=SCENARIOS,
                      joint=["WETH", "wstETH", "WBTC"])
    depth = [ConstantProduct(x) for x in (60.0, 40.0, 50_000.0, 1e9, 2.0)]
    assert_engine_agrees(portfolio, grid, depth, implementation)
