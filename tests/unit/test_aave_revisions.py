"""Aave's rules by revision, on hand-built books (no chain): the close factor and dust rule of
v3.3+, grace periods and paused reserves, zero-threshold collateral of v3.6, virtual balance,
and the gates that hold liquidations (unknown or changed revision, parity)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from keeperd.config import parse_config
from keeperd.protocols.aave_v3.adapter import AaveV3Adapter
from keeperd.protocols.aave_v3.book import EModeCategory, MarketState, Positions, Reserve
from keeperd.protocols.aave_v3.liquidation import plan_account
from keeperd.protocols.aave_v3.math import RAY, exact_account_data
from keeperd.protocols.aave_v3.revisions import rules_for

WAD = 10**18


def reserve(symbol: str, rid: int, decimals: int, ltv: int, lt: int, bonus: int,
            **kw: object) -> Reserve:
    return Reserve(f"0x{rid + 1:02x}", symbol, rid, decimals, ltv, lt, bonus, 0, f"a{rid}",
                   "0x0000000000000000000000000000000000000000", f"v{rid}", True, False,
                   False, True, **kw)  # type: ignore[arg-type]


RESERVES = (
    reserve("WETH", 0, 18, 8000, 8250, 10500),
    reserve("USDC", 1, 6, 7500, 7800, 10450),
    reserve("USDT", 2, 6, 7500, 7800, 10450),
    reserve("wstETH", 3, 18, 0, 0, 0),
)
PRICES = (2000 * 10**8, 10**8, 10**8, 2400 * 10**8)
# eMode 2: wstETH and WETH collateral (bitmap bits 3 and 0)
EMODE = {2: EModeCategory(2, 9300, 9500, 10100, None, "ETH correlated",
                          collateral_bitmap=0b1001)}


def market(revision: int = 10, **kw: object) -> MarketState:
    base = MarketState(100, RESERVES, (RAY,) * 4, (RAY,) * 4, PRICES, 10**8, EMODE, {},
                       rules_for(revision), 1_000_000)
    return replace(base, **kw)  # type: ignore[arg-type]


def positions(collateral: dict[int, int], debt: dict[int, int], emode: int = 0) -> Positions:
    r = len(RESERVES)
    cflag = np.zeros((1, r), bool)
    bflag = np.zeros((1, r), bool)
    a = np.zeros((1, r), dtype=object)
    v = np.zeros((1, r), dtype=object)
    for col, amount in collateral.items():
        cflag[0, col], a[0, col] = True, amount
    for col, amount in debt.items():
        bflag[0, col], v[0, col] = True, amount
    s = np.zeros((1, r), dtype=object)
    return Positions(("0xuser",), np.array([emode]), cflag, bflag, a, v, s)


def plan(m: MarketState, pos: Positions):  # type: ignore[no-untyped-def]
    return plan_account(m, pos, exact_account_data(m, pos), 0)


def usd(m: MarketState, col: int, amount: float) -> int:
    return int(amount * 10**m.reserves[col].decimals * m.base_unit // m.prices[col])


def test_v33_takes_all_of_a_reserve_debt_when_the_position_is_small() -> None:
    m = market(10)
    # $1,900 of WETH against $1,700 of USDC: HF 0.92 ... or above 0.95 — small either way.
    pos = positions({0: usd(m, 0, 1_900)}, {1: usd(m, 1, 1_600)})
    hf = exact_account_data(m, pos).health_factor[0]
    assert 0.95 * WAD < hf < WAD
    p = plan(m, pos)
    assert p is not None and p.debt_to_cover == p.user_debt  # all of it: under $2,000
    old = plan(market(1), pos)
    assert old is not None and old.debt_to_cover == p.user_debt // 2  # v3.0: half


def test_v33_caps_at_half_of_the_total_debt_for_large_positions_above_095() -> None:
    m = market(10)
    pos = positions({0: usd(m, 0, 100_000)}, {1: usd(m, 1, 50_000), 2: usd(m, 2, 35_000)})
    hf = exact_account_data(m, pos).health_factor[0]
    assert 0.95 * WAD < hf < WAD
    p = plan(m, pos)
    assert p is not None and p.debt == "USDC"
    # 50 % of the *total* debt ($85,000), not of the USDC debt: $42,500.
    assert p.debt_to_cover == pytest.approx(usd(m, 1, 42_500), rel=1e-9)
    # Below 0.95, all of the reserve's debt.
    crashed = market(10, prices=(1700 * 10**8, *PRICES[1:]))
    assert exact_account_data(crashed, pos).health_factor[0] <= 0.95 * WAD
    p = plan(crashed, pos)
    assert p is not None and p.debt_to_cover == p.user_debt


def test_v33_plans_the_smaller_amount_where_the_most_would_leave_dust() -> None:
    m = market(10)
    # $2,100 USDC debt of $2,300 in all: half the total ($1,150) would leave $950 of USDC debt,
    # under $1,000: MustNotLeaveDust, and the pair used to be skipped (the USDT pair, $9 of
    # bonus, was planned instead). Now the USDC pair is planned with the amount that leaves the
    # floor and its 1 % margin — $1,010 of USDC debt: 1,090 USDC, $54.50 of bonus — and sent
    # as that exact amount (type(uint256).max would take the dust-leaving most).
    pos = positions({0: usd(m, 0, 2_730)}, {1: usd(m, 1, 2_100), 2: usd(m, 2, 200)})
    hf = exact_account_data(m, pos).health_factor[0]
    assert 0.95 * WAD < hf < WAD
    p = plan(m, pos)
    assert p is not None and p.debt == "USDC"
    assert p.debt_to_cover == p.amount_to_send == 1_090 * 10**6
    assert p.user_debt - p.debt_to_cover == 1_010 * 10**6  # the floor, with its margin
    assert p.capital_needed == p.debt_to_cover  # sent exact: no worse case at inclusion
    # A position too small to leave the floor of anything keeps the pair unplanned.
    small = positions({0: usd(m, 0, 1_300)}, {1: usd(m, 1, 1_050), 2: usd(m, 2, 100)})
    q = plan(m, small)
    assert q is None or q.amount_to_send is None


def test_grace_period_and_paused_reserves_are_not_planned_frozen_ones_are() -> None:
    m = market(10)
    pos = positions({0: usd(m, 0, 10_000)}, {1: usd(m, 1, 9_000)})
    assert plan(m, pos) is not None
    grace = replace(RESERVES[0], grace_until=m.timestamp + 60)
    assert plan(replace(m, reserves=(grace, *RESERVES[1:])), pos) is None
    ended = replace(RESERVES[0], grace_until=m.timestamp - 1)
    assert plan(replace(m, reserves=(ended, *RESERVES[1:])), pos) is not None
    paused = replace(RESERVES[1], paused=True)
    assert plan(replace(m, reserves=(RESERVES[0], paused, *RESERVES[2:])), pos) is None
    frozen = replace(RESERVES[1], frozen=True)
    assert plan(replace(m, reserves=(RESERVES[0], frozen, *RESERVES[2:])), pos) is not None


def test_v36_counts_and_seizes_zero_threshold_collateral_in_emode() -> None:
    m = market(10)
    pos = positions({3: usd(m, 3, 10_000)}, {0: usd(m, 0, 9_600)}, emode=2)
    exact = exact_account_data(m, pos)
    assert exact.total_collateral_base[0] > 0 and exact.liquidation_threshold[0] == 9500
    p = plan(m, pos)
    assert p is not None and p.collateral == "wstETH"
    # The v3.0 reading (eMode by the reserve's bits, zero threshold skipped) sees no collateral.
    old = exact_account_data(market(1), pos)
    assert old.total_collateral_base[0] == 0


def test_collateral_the_reserve_cannot_pay_out_is_taken_as_atokens() -> None:
    m = market(10)
    pos = positions({0: usd(m, 0, 10_000)}, {1: usd(m, 1, 9_000)})
    short = replace(RESERVES[0], virtual_balance=10)
    p = plan(replace(m, reserves=(short, *RESERVES[1:])), pos)
    assert p is not None and p.receive_a_token
    assert not plan(m, pos).receive_a_token  # type: ignore[union-attr]


def test_bad_debt_clean_up_is_counted_when_the_last_collateral_goes() -> None:
    m = market(10, prices=(800 * 10**8, *PRICES[1:]))
    pos = positions({0: usd(market(10), 0, 3_000)}, {1: usd(m, 1, 1_400), 2: usd(m, 2, 1_400)})
    p = plan(m, pos)
    assert p is not None and p.collateral_seized + p.protocol_fee > 0
    assert p.bad_debt_assets == 1  # the other stablecoin debt is burned in the same call


def adapter(**protocol: object) -> AaveV3Adapter:
    config = parse_config({
        "state_dir": "/unused",
        "chains": [{"name": "devnet", "chain_id": 1, "rpc_urls": ["http://127.0.0.1:1"]}],
        "protocols": [{"kind": "aave_v3", "name": "aave", "chain": "devnet",
                       "addresses_provider": "0x" + "11" * 20, **protocol}]}, env={})
    return AaveV3Adapter(config.protocols[0], config.chains[0], None, None, None)  # type: ignore[arg-type]


def test_an_unknown_revision_is_verified_by_default_and_held_on_request() -> None:
    unknown = market(10, rules=rules_for(99))
    assert not unknown.rules.known
    a = adapter()  # unknown_revision: verify (the default)
    assert a.hold_for(market(10)) is None and a.verification_for(market(10)) is None
    assert a.hold_for(unknown) is None
    assert "POOL_REVISION 99" in (a.verification_for(unknown) or "")
    held = adapter(unknown_revision="hold")
    assert "unknown_revision: hold" in (held.hold_for(unknown) or "")
    assert held.verification_for(unknown) is None  # (nothing is sent to verify)
    accepting = adapter(accept_revisions=[99])
    accepted = market(10, rules=rules_for(99, {99}))
    assert accepting.hold_for(accepted) is None and accepting.verification_for(accepted) is None
    with pytest.raises(Exception, match="unknown_revision"):
        adapter(unknown_revision="trust")


def test_a_parity_mismatch_holds_until_the_accounts_that_disagreed_agree() -> None:
    a = adapter(cross_check_every=3)
    accounts = [f"0x{k:040x}" for k in range(30)]
    a.record_parity(100, checked=accounts, mismatched=accounts[:2])
    assert "differed from the pool's getUserAccountData" in (a.hold_for(market()) or "")
    # Clean checks of other accounts do not release it: the two were not checked again.
    a.record_parity(101, checked=accounts[2:], mismatched=())
    a.record_parity(102, checked=accounts[5:], mismatched=())
    assert a.hold_for(market()) is not None
    a.record_parity(103, checked=accounts[:1], mismatched=())  # one of the two agrees
    assert a.hold_for(market()) is not None
    a.record_parity(104, checked=accounts[1:3], mismatched=accounts[2:3])  # a new one differs
    assert "at block 104" in (a.hold_for(market()) or "")
    a.record_parity(105, checked=accounts[1:3], mismatched=())  # each suspect agrees now
    assert a.hold_for(market()) is None
    off = adapter(parity_gate=False)
    off.record_parity(100, checked=accounts, mismatched=accounts)
    assert off.hold_for(market()) is None


def test_liquidations_of_one_block_share_the_reserve_virtual_balance() -> None:
    from keeperd.execution.capital import Need
    from keeperd.protocols.aave_v3.liquidator import within_virtual_balances
    from keeperd.protocols.sdk.contract import Opportunity, OpportunityKey

    m = market(10)
    weth = replace(RESERVES[0], virtual_balance=usd(m, 0, 15_000))
    m = replace(m, reserves=(weth, *RESERVES[1:]))
    plans = []
    for k in range(3):  # three accounts, each seizing ~$9,500 of WETH
        pos = positions({0: usd(m, 0, 10_000)}, {1: usd(m, 1, 9_000)})
        p = plan(m, replace(pos, accounts=(f"0xuser{k}",)))
        assert p is not None and not p.receive_a_token
        plans.append(Opportunity(OpportunityKey("aave", p.account, ("pair",), str(k)), "WETH",
                                 "USDC", p.debt_to_cover, frozenset(),
                                 Need("0x", "USDC", 6, 1, 0.0), 0.0, 0.0, 0.0, 1, p))
    out = [o.plan.receive_a_token for o in within_virtual_balances(plans, m)]
    assert out == [False, True, True]  # the first is paid out; the reserve cannot pay more
