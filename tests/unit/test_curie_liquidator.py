"""Perp Curie's liquidator, its rules beside the devnet's (tests/integration/test_curie*.py).

The hold on takeovers while the keeper's position cannot be unwound
(`CurieLiquidator.housekeeping_settled`, `hold`): set by an unwind that failed in three
blocks without an inclusion between (one block's failure is routine in a crash), or whose
retries are spent; not by one simulated after the last one went (`CH_PSZ`: nothing held);
released by an included unwind, or once the keeper holds nothing in that market. WETH margin
bought only with its latest price read, and booked at it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog

from keeperd.chain.rpc import RpcUnavailable
from keeperd.protocols.perp_curie import margin as cm
from keeperd.protocols.perp_curie.adapter import CurieBook, Market
from keeperd.protocols.perp_curie.liquidator import UNWIND, CurieLiquidator
from keeperd.protocols.sdk.contract import PriceTrust, trust_everything
from keeperd.protocols.sdk.keys import OpportunityKey

KEEPER = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"
VETH = "0x" + "e1" * 20
VBTC = "0x" + "b1" * 20


def liquidator() -> Any:
    out: Any = CurieLiquidator.__new__(CurieLiquidator)
    out.keeper = KEEPER
    out.adapter = SimpleNamespace(name="curie")
    out._unwind_failing, out._held_sizes, out._symbols = {}, {}, {}
    out._unwind_failures, out._unverified = {}, set()
    out.config = SimpleNamespace(mode="liquidate", gas_limit_margin=1.2)
    out._told_held, out._mine_of = frozenset(), None
    out._unwinds_waiting = set()
    return out


def book(held: dict[str, int]) -> CurieBook:
    markets = {VETH: Market(VETH, "vETH", "WETH", 0, 0), VBTC: Market(VBTC, "vBTC", "WBTC", 0, 0)}
    mine = cm.CurieTrader(KEEPER, 0, 0, 0, tuple(
        cm.CuriePosition(b, markets[b].symbol, markets[b].asset, size, 0, 0, 0)
        for b, size in held.items()))
    return CurieBook(1, 0, markets, (mine,), 62_500, 25_000, 100_000, None)


def unwind(base: str) -> OpportunityKey:
    return OpportunityKey("curie", KEEPER, (UNWIND, base), "5")


def test_a_failed_unwind_holds_its_market_until_one_goes_or_nothing_is_held() -> None:
    liq = liquidator()
    liq.housekeeping_settled(unwind(VETH), 10, "its simulation failed: ... CH_PSZ")
    assert liq.hold() is None  # (nothing left to unwind: not a failure)
    liq.housekeeping_settled(unwind(VETH), 11, "its simulation reverted: ... CH_F0S")
    liq.housekeeping_settled(unwind(VETH), 11, "its simulation reverted: ... CH_F0S")
    liq.housekeeping_settled(unwind(VETH), 12, "reverted on chain (0xabc)")
    assert liq.hold() is None  # (two blocks: a crash's price limit passes by itself)
    liq.housekeeping_settled(unwind(VETH), 13, "its simulation reverted: ... CH_F0S")
    with structlog.testing.capture_logs() as logs:
        assert liq._unwinds_failing(book({VETH: 5 * 10**18, VBTC: 10**18})) == {VETH}
    hold = liq.hold()
    assert hold is not None and "5 vETH cannot be unwound since block 11" in hold
    assert "CH_F0S" in hold and "vBTC" not in hold
    assert [e["event"] for e in logs] == ["curie.takeovers_held"]
    liq.housekeeping_settled(unwind(VETH), 14, None)  # (one went)
    assert liq.hold() is None
    liq.housekeeping_settled(unwind(VETH), 15, "reverted on chain (0x1)")  # (counted afresh)
    assert liq.hold() is None
    # Every retry reverted (said every block, after a restart too): held at once.
    liq.housekeeping_settled(unwind(VBTC), 16,
                             "its 3 tries failed: reverted, reverted, reverted", lasting=True)
    assert liq._unwinds_failing(book({VBTC: 10**18})) == {VBTC}
    assert liq._unwinds_failing(book({})) == frozenset()  # (closed by hand)
    assert liq.hold() is None
    # A start (its first book) with the keeper holding vETH: held until an unwind of it
    # passes its simulation (a restart forgot the hold and took one more over, a trial).
    liq._unverified = None
    assert liq._unwinds_failing(book({VETH: 2 * 10**18})) == {VETH}
    hold = liq.hold()
    assert hold is not None and "from before this start" in hold
    liq.housekeeping_settled(unwind(VETH), 20, None, simulated=True)
    assert liq._unwinds_failing(book({VETH: 2 * 10**18})) == frozenset()
    # (a dry run unwinds nothing: nothing of the keeper's is held there)
    liq._unverified, liq.config.mode = None, "dry-run"
    assert liq._unwinds_failing(book({VETH: 2 * 10**18})) == frozenset()
    liq.config.mode = "liquidate"
    # A takeover's own settlement says nothing of unwinds.
    liq.housekeeping_settled(OpportunityKey("curie", KEEPER, (VETH,), "1"), 15, "x")
    assert liq.hold() is None


def test_weth_margin_with_its_latest_price_unread_is_not_bought() -> None:
    """Valued at the TWAP alone, a crash's lag would be bought as a profit (the loss the
    spot valuation is for): no collateral liquidation while the latest price is unread."""
    liq = liquidator()
    liq.adapter = SimpleNamespace(name="curie", addresses={"SettlementToken": "0x" + "aa" * 20})
    liq._gas_used = {}
    weth = cm.CurieCollateral("0x" + "cc" * 20, "WETH", 10**18, 18, 2_000 * 10**8, 8, 800_000,
                              max_repaid=1_800 * 10**6, max_liquidatable=10**18, spot_price=0)
    trader = cm.CurieTrader("0x" + "dd" * 20, 0, 0, 0, (), (weth,), collateral_liquidatable=True)
    assert liq._plan_collateral(trader) == []
    read = replace(trader, collateral=(replace(weth, spot_price=2_000 * 10**8),))
    [bought] = liq._plan_collateral(read)
    assert bought.gross_profit_usd == pytest.approx(200.0)  # ($2,000 of WETH for $1,800)
    # Held by a pause of any asset the account rests on (its vBTC position's too).
    vbtc = cm.CuriePosition(VBTC, "vBTC", "WBTC", 10**18, 60_000 * 10**18, 0, 60_000 * 10**18)
    [bought] = liq._plan_collateral(replace(read, positions=(vbtc,)))
    assert bought.assets == {"WETH", "WBTC"}


def test_a_takeover_rests_on_every_asset_of_its_account() -> None:
    """A trial's WETH pause (a breaker trip) let 11 takeovers in vBTC go whose traders were
    under water by WETH's fall (their vETH positions, their WETH margin): the opportunity
    named only its market's asset, and the breaker holds by those."""
    liq = liquidator()
    liq.adapter = SimpleNamespace(name="curie", fee_ratios={}, addresses={})
    liq._gas_used = {}
    liq.config = SimpleNamespace(mode="liquidate", gas_limit_margin=1.2)
    eth = cm.CuriePosition(VETH, "vETH", "WETH", 50 * 10**18, 50 * 2_000 * 10**18, 0,
                           2_000 * 10**18)
    btc = cm.CuriePosition(VBTC, "vBTC", "WBTC", 10**18, 60_000 * 10**18, 0, 60_000 * 10**18)
    trader = cm.CurieTrader("0x" + "dd" * 20, 5_000 * 10**18, 10_000 * 10**18, 0, (eth, btc))
    result = SimpleNamespace(book=replace(book({}), traders=(trader,)))
    [plan] = liq.plan(result, {trader.account})  # (its largest position first)
    assert plan.collateral == "vETH" and plan.assets == {"WETH", "WBTC"}
    small = replace(trader, positions=(replace(eth, size=10**17, value=200 * 10**18), btc))
    [plan] = liq.plan(SimpleNamespace(book=replace(book({}), traders=(small,))),
                      {trader.account})
    assert plan.collateral == "vBTC" and plan.assets == {"WETH", "WBTC"}  # (the trial's case)


def test_weth_margin_bought_is_booked_at_its_latest_price() -> None:
    """The realised profit of a collateral liquidation: the WETH taken at the feed's latest
    price (the book's `collateral_spot`), less the USDC paid, insurance fund share
    included — not at the vault's TWAP, and not nothing (its gas alone hid a trial's loss)."""
    from eth_abi import encode

    from keeperd.protocols.perp_curie.adapter import COLLATERAL_LIQUIDATED, PerpCurieAdapter

    token, trader, keeper = "0x" + "cc" * 20, "0x" + "dd" * 20, KEEPER
    adapter: Any = PerpCurieAdapter.__new__(PerpCurieAdapter)
    adapter.collaterals = {to_checksum(token): ("WETH", 18, 8, 800_000)}
    entry = {"topics": [COLLATERAL_LIQUIDATED, "0x" + trader[2:].rjust(64, "0"),
                        "0x" + token[2:].rjust(64, "0"), "0x" + keeper[2:].lower().rjust(64, "0")],
             "data": "0x" + encode(["uint256", "uint256", "uint256", "uint24"],
                                   [2 * 10**18, 4_000 * 10**6, 120 * 10**6, 100_000]).hex(),
             "blockNumber": "0x10", "transactionHash": "0xab", "logIndex": "0x0"}
    # The TWAP said $2,400 (a crash's lag); the feed says $1,900 now: 2 WETH worth $3,800
    # for $4,120 paid.
    book = SimpleNamespace(collateral_spot={to_checksum(token): 1_900 * 10**8})
    seen = adapter.decode_liquidation(entry, book)
    assert seen.seized_usd == pytest.approx(3_800.0)
    assert seen.profit_usd == pytest.approx(3_800.0 - 4_120.0)
    assert adapter.decode_liquidation(entry, None).profit_usd is None  # (no price: unknown)


def to_checksum(address: str) -> str:
    from eth_utils import to_checksum_address

    return to_checksum_address(address)


HOUSE = "0x" + "c4" * 20  # the ClearingHouse


def event(signature: str, trader: str, types: list[str], values: list[int],
          address: str = HOUSE) -> dict[str, Any]:
    from eth_abi import encode

    from keeperd.chain.multicall import event_topic
    return {"address": address,
            "topics": [event_topic(signature), "0x" + trader.lower()[2:].rjust(64, "0"),
                       "0x" + VETH[2:].rjust(64, "0")],
            "data": "0x" + encode(types, values).hex()}


POSITION_CHANGED = "PositionChanged(address,address,int256,int256,uint256,int256,int256,uint256)"
CHANGED = ["int256", "int256", "uint256", "int256", "int256", "uint256"]


def test_what_the_keepers_own_trades_realised_is_read_from_its_receipt() -> None:
    """An unwind's gain or loss (PositionChanged's realizedPnl, net of the exchange fee), a
    closed market's settlement (PositionClosed), the funding it paid — the keeper's only, from
    the ClearingHouse only: the takeover's share of the penalty is a discount in the price
    the position opened at, realised by the unwind; booking half the penalty at the takeover
    counted it whatever the unwind cost."""
    liq = liquidator()
    liq.adapter = SimpleNamespace(name="curie", config=SimpleNamespace(clearing_house=HOUSE))
    other = "0x" + "77" * 20
    receipt = {"logs": [
        # the unwind: 3 vETH sold, $1,234.50 realised below what it was taken over at
        event(POSITION_CHANGED, KEEPER, CHANGED,
              [-3 * 10**18, 7_000 * 10**18, 7 * 10**18, 0, -1_234_500_000_000_000_000_000, 1]),
        event("FundingPaymentSettled(address,address,int256)", KEEPER, ["int256"],
              [10 * 10**18]),  # (paid)
        event("PositionClosed(address,address,int256,int256,int256,int256,uint256)", KEEPER,
              ["int256", "int256", "int256", "int256", "uint256"],
              [10**18, 2_000 * 10**18, -1_900 * 10**18, 100 * 10**18, 2_000 * 10**18]),
        # another trader's, and a look-alike from another contract: not the keeper's
        event(POSITION_CHANGED, other, CHANGED, [1, 1, 0, 0, 5_000 * 10**18, 1]),
        event(POSITION_CHANGED, KEEPER, CHANGED, [1, 1, 0, 0, 5_000 * 10**18, 1],
              address=other),
        {"address": HOUSE, "topics": [], "data": "0x"}]}
    assert liq.realised(receipt) == pytest.approx(-1_234.5 - 10 + 100)
    assert liq.realised({"logs": []}) == 0.0
    liq.keeper = None
    assert liq.realised(receipt) == 0.0


class Sender:
    """The transaction manager as the margin deposit uses it: what it sent."""

    def __init__(self) -> None:
        self.pending: dict[Any, Any] = {}
        self.sent: list[int] = []

    def signing_held(self) -> None:
        return None

    def key_conflict(self, head: int) -> None:
        return None

    def upkeep_hold(self, head: int) -> None:
        return None

    def in_flight_pulls(self) -> dict[str, int]:
        return {}

    async def send(self, key: Any, to: str, data: bytes, gas: int, **kw: Any) -> None:
        self.sent.append(kw["pulls"][USDC])


USDC = "0x" + "0c" * 20


def margin_keeper() -> Any:
    """A Curie keeper in liquidate mode, $10M of margin wanted, its deposits recorded."""
    liq = liquidator()
    liq.tx = Sender()
    liq._margin_due = False
    liq._margin_short_told = False
    liq._refills, liq._refills_spent_told = [], False
    liq._deposit_records, liq._deposited_before = None, False
    liq.adapter = SimpleNamespace(
        name="curie", pool=None, config=SimpleNamespace(keeper_margin_usd=10_000_000),
        addresses={"Vault": "0x" + "0a" * 20, "AccountBalance": "0x" + "0b" * 20,
                   "SettlementToken": USDC})
    return liq


@pytest.mark.parametrize(("ours", "others", "deposited"), [
    # deposit 6M, owed -1M (an unwind's loss): 5M of 10M, refilled to 10M
    ((6_000_000, -1_000_000, 20_000_000), [], 5_000_000),
    # 9.5M: over 90 % of it, no deposit per dollar lost
    ((9_500_000, 0, 20_000_000), [], 0),
    # one endpoint says the margin is gone: another says it is whole — no deposit
    ((0, 0, 20_000_000), [(10_000_000, 0, 20_000_000)], 0),
    # one endpoint says the wallet holds more than the others: the least is deposited from
    ((0, 0, 20_000_000), [(0, 0, 3_000_000)], 3_000_000),
    # our own endpoint does not answer the margin: another's word alone moves nothing
    ((0, None, 20_000_000), [(0, 0, 20_000_000)], 0),
    # one lying answer of a huge loss owed: never more than the margin (it asked for the
    # whole wallet)
    ((10_000_000, -1_000_000_000, 20_000_000), [], 10_000_000),
])
async def test_the_margin_refill_trusts_no_single_answer_to_move_the_wallet(
        monkeypatch: pytest.MonkeyPatch, ours: tuple[int, int | None, int],
        others: list[tuple[int, int, int]], deposited: int) -> None:
    """The margin is refilled up to `keeper_margin_usd` once under 90 % of it, counted as the
    Vault settles it (deposit plus what the keeper's trades realised and still owe: an unwind's
    loss is owed, the deposit alone never showed it); the most any endpoint says is there,
    the wallet the least (one lying answer must not move the wallet's USDC into the Vault)."""
    from keeperd.chain.calls import ContractCall
    from keeperd.protocols.perp_curie import liquidator as module

    liq = margin_keeper()

    def answers(deposit: int, owed: int | None, wallet: int) -> list[Any]:
        pnl = (RuntimeError("execution reverted") if owed is None  # (a call's failure)
               else (owed * 10**18, 0, 0))
        return [deposit * 10**6, pnl, 10**30, wallet * 10**6]

    async def call_many(pool: Any, calls: list[ContractCall], block: Any = "latest"
                        ) -> list[Any]:
        return answers(*ours)

    async def by_endpoint(pool: Any, calls: list[ContractCall], block: Any = "latest"
                          ) -> list[list[Any]]:
        return [[a for i, a in enumerate(answers(*o)) if i != 2] for o in others]

    monkeypatch.setattr(module, "call_many", call_many)
    monkeypatch.setattr(module.approvals, "by_endpoint", by_endpoint)
    await liq.keep_allowances(100)
    assert liq.tx.sent == ([deposited * 10**6] if deposited else [])


async def test_refills_add_up_to_one_margin_a_day(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refills follow the unwinds' losses: a margin's worth a day at most, then the takeovers
    wait for the operator (said once, as an error) — losses must not drain the wallet a
    refill at a time."""
    from keeperd.protocols.perp_curie import liquidator as module

    liq = margin_keeper()
    margins = iter([6_000_000, 6_000_000, 6_000_000, 9_500_000])

    async def call_many(pool: Any, calls: list[Any], block: Any = "latest") -> list[Any]:
        return [next(margins) * 10**6, (0, 0, 0), 10**30, 50_000_000 * 10**6]

    async def by_endpoint(pool: Any, calls: list[Any], block: Any = "latest") -> list[list[Any]]:
        return []

    monkeypatch.setattr(module, "call_many", call_many)
    monkeypatch.setattr(module.approvals, "by_endpoint", by_endpoint)
    with structlog.testing.capture_logs() as logs:
        for head in (100, 110, 120):
            await liq.keep_allowances(head)
    assert liq.tx.sent == [4_000_000 * 10**6, 4_000_000 * 10**6, 2_000_000 * 10**6]
    monkeypatch.setattr(module.time, "time", lambda: 10**10)  # (a day later)
    await liq.keep_allowances(130)  # (over 90 % of it: nothing)
    assert len(liq.tx.sent) == 3
    refilled = [e for e in logs if e["event"] == "curie.keeper_margin_refilled"]
    assert [e["log_level"] for e in refilled] == ["warning"] * 3
    assert not [e for e in logs if e["event"] == "curie.keeper_margin_refills_spent"]
    liq._refills = [(10**10 - 60, 10_000_000 * 10**6)]  # (a whole margin refilled just now)
    margins = iter([1_000_000])
    with structlog.testing.capture_logs() as logs:
        await liq.keep_allowances(140)
    assert len(liq.tx.sent) == 3
    assert [e["event"] for e in logs] == ["curie.keeper_margin_refills_spent"]


async def test_the_days_refills_survive_a_restart(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The refills are recorded in the state database before each deposit is signed, and a
    start reads them back: a start's top-up after a first deposit is a refill within the
    day's budget. In memory, a daemon restarted after each losing unwind topped its margin up
    at every start, without bound."""
    from keeperd.execution.journal import Journal
    from keeperd.protocols.perp_curie import liquidator as module
    from keeperd.storage.db import SqliteDatabase
    from keeperd.storage.migrations import migrate

    margins: list[int] = []

    async def call_many(pool: Any, calls: list[Any], block: Any = "latest") -> list[Any]:
        return [margins.pop(0) * 10**6, (0, 0, 0), 10**30, 50_000_000 * 10**6]

    async def by_endpoint(pool: Any, calls: list[Any], block: Any = "latest") -> list[list[Any]]:
        return []

    async def confirm(head: int) -> None:
        return None

    monkeypatch.setattr(module, "call_many", call_many)
    monkeypatch.setattr(module.approvals, "by_endpoint", by_endpoint)
    now = [10**10]
    monkeypatch.setattr(module.time, "time", lambda: now[0])
    db = SqliteDatabase.open(tmp_path / "state.sqlite3")
    await migrate(db)
    journal = await Journal.open(db)

    def start() -> Any:  # (a new process on the same state database)
        liq = margin_keeper()
        liq.confirm = confirm
        liq.keep_deposits_in(journal)
        return liq

    try:
        first = start()
        margins[:] = [0, 4_000_000]  # (a first start: the whole margin, not a refill)
        await first.prepare(100)
        await first.keep_allowances(110)  # (6M of it lost: refilled)
        assert first.tx.sent == [10_000_000 * 10**6, 6_000_000 * 10**6]
        assert [(amount // 10**6, refill) for _, amount, refill in
                await journal.deposits("curie")] == [(10_000_000, False), (6_000_000, True)]

        now[0] += 3_600  # an hour later, a restart with 5M lost again: 4M left of the day's
        again = start()
        margins[:] = [5_000_000]
        with structlog.testing.capture_logs() as logs:
            await again.prepare(200)
        assert again.tx.sent == [4_000_000 * 10**6]
        assert [e["event"] for e in logs] == ["curie.keeper_margin_refilled"]

        now[0] += 3_600  # and again: the day's margin is spent, said once, nothing sent
        third = start()
        margins[:] = [5_000_000, 5_000_000]
        with structlog.testing.capture_logs() as logs:
            await third.prepare(300)
            await third.keep_allowances(310)
        assert third.tx.sent == []
        assert [e["event"] for e in logs] == ["curie.keeper_margin_refills_spent"]

        now[0] += module.REFILL_WINDOW_S  # a day after those refills: a restart refills
        fourth = start()
        margins[:] = [5_000_000]
        await fourth.prepare(400)
        assert fourth.tx.sent == [5_000_000 * 10**6]
    finally:
        await db.close()


async def test_a_deposit_refused_before_the_chain_is_not_counted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deposit is recorded before it is signed; one the transaction manager refuses (a fee
    over budget, the node's refusal) never reached the chain and leaves the record."""
    from keeperd.execution.journal import Journal
    from keeperd.execution.txmanager import SendRefused
    from keeperd.protocols.perp_curie import liquidator as module
    from keeperd.storage.db import SqliteDatabase
    from keeperd.storage.migrations import migrate

    async def call_many(pool: Any, calls: list[Any], block: Any = "latest") -> list[Any]:
        return [0, (0, 0, 0), 10**30, 50_000_000 * 10**6]

    async def by_endpoint(pool: Any, calls: list[Any], block: Any = "latest") -> list[list[Any]]:
        return []

    async def refuse(*args: Any, **kw: Any) -> None:
        raise SendRefused("max fee over the budget")

    monkeypatch.setattr(module, "call_many", call_many)
    monkeypatch.setattr(module.approvals, "by_endpoint", by_endpoint)
    db = SqliteDatabase.open(tmp_path / "state.sqlite3")
    await migrate(db)
    journal = await Journal.open(db)
    try:
        liq = margin_keeper()
        liq.keep_deposits_in(journal)
        liq.tx.send = refuse
        liq._margin_due = True
        with pytest.raises(SendRefused):
            await liq.keep_allowances(100)
        assert await journal.deposits("curie") == []
        assert not liq._deposited_before
    finally:
        await db.close()


def sqrt_price(price: float) -> int:
    import math

    return math.isqrt(int(price * 10**6) * 2**192 // 10**6)


def test_an_unwind_is_limited_by_the_kinder_of_the_index_and_the_mark() -> None:
    """closePosition's price limit (0 is none at all): closing a long sells down to the lower
    of index and mark less the slippage; closing a short buys up to the higher, plus it;
    unread prices, no limit and no unwind."""
    from keeperd.protocols.perp_curie.unwind_bound import unwind_price_limit

    market = Market(VETH, "vETH", "WETH", 2_000 * cm.WAD, 1_980 * cm.WAD)  # (mark, index)
    assert unwind_price_limit(5 * cm.WAD, market, 300) == sqrt_price(1_980 * 0.97)
    assert unwind_price_limit(-5 * cm.WAD, market, 300) == sqrt_price(2_000 * 1.03)
    # (as a price: 1,920.6 and 2,060 vUSD a vETH)
    assert (unwind_price_limit(5 * cm.WAD, market, 300) / 2**96) ** 2 == \
        pytest.approx(1_920.6, rel=1e-12)
    assert unwind_price_limit(5 * cm.WAD, replace(market, mark=0), 300) == \
        sqrt_price(1_980 * 0.97)  # (the one price read)
    assert unwind_price_limit(5 * cm.WAD, replace(market, mark=0, index=0), 300) is None
    assert unwind_price_limit(0, market, 300) is None
    # (a floor rounds up, a ceiling down: never looser than asked)
    floor = unwind_price_limit(1, replace(market, mark=3, index=3), 1)
    assert floor is not None and floor > 0


async def test_an_unwind_held_by_its_bound_says_so_and_none_goes_without_a_price() -> None:
    liq = liquidator()
    liq.adapter = SimpleNamespace(name="curie", config=SimpleNamespace(
        unwind_max_slippage_bps=300, clearing_house="0x" + "c1" * 20), fee_ratios={},
        pool=SimpleNamespace(voters=["one"]), addresses={"AccountBalance": "0x" + "ab" * 20})
    for block in (10, 11, 12):
        liq.housekeeping_settled(unwind(VETH), block,
                                 "its simulation reverted: execution reverted: SPL")
    liq._unwinds_failing(book({VETH: 5 * 10**18}))
    hold = liq.hold()
    assert hold is not None and "SPL: the pool's price is beyond " \
        "unwind_max_slippage_bps (300 bps)" in hold, hold
    # The keeper's long, its market's prices unread (0): nothing to unwind with, said.
    liq2 = liquidator()
    liq2.adapter = liq.adapter
    unread = book({VETH: 5 * 10**18})
    for block in (20, 21, 22):
        assert await liq2.housekeeping(SimpleNamespace(book=replace(unread, block=block))) == []
    hold = liq2.hold()
    assert hold is not None and "no price to bound its unwind by" in hold, hold
    # Priced, it goes with its bound in the calldata.
    priced = replace(unread, markets={**unread.markets, VETH: replace(
        unread.markets[VETH], mark=2_000 * cm.WAD, index=2_000 * cm.WAD)})
    ((key, _target, data, _gas),) = await liq2.housekeeping(SimpleNamespace(book=priced))
    assert key.position == (UNWIND, VETH)
    assert int.from_bytes(data[4 + 32:4 + 64], "big") == sqrt_price(2_000 * 0.97)
    assert int.from_bytes(data[4 + 64:4 + 96], "big") == 0  # (no amount bound)
    # Unset: Curie's own limit only (0), and an unread price does not hold the unwind.
    liq2.adapter.config.unwind_max_slippage_bps = None
    ((_key, _target, data, _gas),) = await liq2.housekeeping(SimpleNamespace(book=unread))
    assert int.from_bytes(data[4 + 32:4 + 64], "big") == 0


def unwinder(endpoints: int) -> Any:
    """A keeper liquidator that unwinds within 300 bps, `endpoints` voters configured (named
    first, second, third)."""
    liq = liquidator()
    liq.adapter = SimpleNamespace(name="curie", config=SimpleNamespace(
        unwind_max_slippage_bps=300, clearing_house="0x" + "c1" * 20), fee_ratios={},
        pool=SimpleNamespace(voters=[SimpleNamespace(name=n) for n in
                                     ("first", "second", "third")[:endpoints]]),
        addresses={"AccountBalance": "0x" + "ab" * 20})
    return liq


def held_at(size: int, usd: float, block: int = 1) -> CurieBook:
    """The keeper's `size` of vETH in a book read at mark = index = `usd` (the first
    endpoint's word)."""
    held = book({VETH: size})
    price = int(usd * 10**6) * 10**12
    return replace(held, block=block, markets={**held.markets, VETH: replace(
        held.markets[VETH], mark=price, index=price)})


def endpoints_say(monkeypatch: pytest.MonkeyPatch, said: dict[str, float | None],
                  hanging: Collection[str] = ()) -> list[Any]:
    """Each voter endpoint's mark = index of vETH (None: it says nothing; `hanging`: it takes
    the request and never answers); who was asked at which block."""
    from keeperd.protocols.perp_curie import unwind_bound

    asked: list[Any] = []

    async def answers_on(pool: Any, ep: Any, calls: list[Any], block: Any = "latest"
                         ) -> list[Any]:
        asked.append((ep.name, block))
        assert [c.signature for c in calls] == ["getMarkPrice(address)",
                                                "getIndexPrice(uint256)"]
        if ep.name in hanging:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:  # (given up on: its request goes with it)
                asked.append((ep.name, "cancelled"))
                raise
        usd = said[ep.name]
        if usd is None and block != "latest":  # (it does not answer at the block at all)
            raise RpcUnavailable(f"endpoint {ep.name}: no answer")
        return [None, None] if usd is None else [int(usd * 10**6) * 10**12] * 2

    monkeypatch.setattr(unwind_bound.approvals, "answers_on", answers_on)
    return asked


async def unwind_limit(liq: Any, held: CurieBook, trust: Any = None,
                       due: Any = None) -> float | None:
    """The price (vUSD a vETH) the one unwind sent is limited at; None: none goes."""
    out = await liq.housekeeping(SimpleNamespace(book=held), *[
        a for a in (trust or trust_everything, due) if a is not None])
    if not out:
        return None
    ((_key, _target, data, _gas),) = out
    return float((int.from_bytes(data[4 + 32:4 + 64], "big") / 2**96) ** 2)


@pytest.mark.parametrize("size, lie", [(5 * cm.WAD, 1.0), (-5 * cm.WAD, 1_000_000.0)])
async def test_a_lying_first_endpoint_no_longer_loosens_an_unwinds_limit(
        monkeypatch: pytest.MonkeyPatch, size: int, lie: float) -> None:
    """The first endpoint says mark = index = $1 of a $2,500 market (a long's floor $0.97:
    the keeper's sale ran the pool to Curie's own ~10 % a block), or a million (a short's
    ceiling): the other endpoint, asked the same at the block, says $2,500. Prices that far
    apart: no unwind that block, said with who said what; three such blocks hold the
    market's takeovers, alerted (`hold`), as any unwind that cannot go."""
    liq = unwinder(2)
    asked = endpoints_say(monkeypatch, {"first": lie, "second": 2_500.0})
    with structlog.testing.capture_logs() as logs:
        for block in (20, 21, 22):
            assert await unwind_limit(liq, held_at(size, lie, block)) is None
    # (at the book's block: every endpoint answered there)
    assert asked == [(who, b) for b in (20, 21, 22) for who in ("first", "second")]
    (told,) = [e for e in logs if e["event"] == "curie.unwind_waits"]  # (once, not a block)
    assert "first" in told["reason"] and "second 2,500" in told["reason"], told
    hold = liq.hold()
    assert hold is not None and "prices disagree" in hold and "second 2,500" in hold, hold
    # Agreed again: it goes, bounded by the honest price, and says so.
    endpoints_say(monkeypatch, {"first": 2_500.0, "second": 2_500.0})
    with structlog.testing.capture_logs() as logs:
        limit = await unwind_limit(liq, held_at(size, 2_500.0, 23))
    assert limit == pytest.approx(2_500 * (0.97 if size > 0 else 1.03), rel=1e-9)
    assert "curie.unwind_goes_again" in [e["event"] for e in logs]


@pytest.mark.parametrize("size", [5 * cm.WAD, -5 * cm.WAD])
async def test_a_liar_can_only_tighten_an_unwinds_limit(monkeypatch: pytest.MonkeyPatch,
                                                        size: int) -> None:
    """Within the slippage of each other, the limit is the tightest any endpoint's prices
    give — a long's highest floor, a short's lowest ceiling: a lie the kinder way changes
    nothing, the stricter way makes the unwind stricter (at worst it fails its simulation,
    `SPL`: held and alerted), never looser. Whichever endpoint lies, the first or another."""
    for liar in ("first", "second"):
        for lie in (2_450.0, 2_550.0):
            liq = unwinder(3)
            said = {"first": 2_500.0, "second": 2_500.0, "third": 2_500.0, liar: lie}
            endpoints_say(monkeypatch, said)
            limit = await unwind_limit(liq, held_at(size, said["first"]))
            honest = 2_500 * (0.97 if size > 0 else 1.03)
            lied = lie * (0.97 if size > 0 else 1.03)
            tightest = max(honest, lied) if size > 0 else min(honest, lied)
            assert limit == pytest.approx(tightest, rel=1e-9), (liar, lie)


async def test_an_unwind_rests_on_two_endpoints_when_several_are_configured(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With two endpoints configured and only the first answering (the other silent at the
    block and at "latest"), the limit would be the first's word alone: it waits, counted as
    an unwind that cannot go. With one endpoint configured, the book's prices alone bound
    it, as before, and nothing more is asked."""
    liq = unwinder(2)
    asked = endpoints_say(monkeypatch, {"first": 2_500.0, "second": None})
    assert await unwind_limit(liq, held_at(5 * cm.WAD, 2_500.0, 30)) is None
    assert asked == [("first", 30), ("second", 30), ("second", "latest")]
    assert liq._unwind_failures[VETH] == {30}
    alone = unwinder(1)
    asked = endpoints_say(monkeypatch, {})
    assert await unwind_limit(alone, held_at(5 * cm.WAD, 1.0)) == pytest.approx(0.97)
    assert asked == []


async def test_no_endpoint_is_asked_for_an_unwind_in_flight(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An unwind journaled and on its way (the executor's `due` says so) has its limit signed
    already: its position is not bounded again — no voter endpoint asked, no price trust
    read, nothing counted against it. Every block of a cascade's liquidations waited behind
    those asks while the keeper held its takeovers. The position's next unwind (its new size
    once part of it went) is asked as before."""
    liq = unwinder(2)
    asked = endpoints_say(monkeypatch, {"first": 2_500.0, "second": 2_500.0})
    questions: list[OpportunityKey] = []
    trusted: list[int] = []

    async def trust() -> PriceTrust:
        trusted.append(1)
        return PriceTrust()

    async def due(key: OpportunityKey) -> bool:
        questions.append(key)
        return key.version != str(5 * cm.WAD)  # (the unwind of all 5 is in flight)

    with structlog.testing.capture_logs() as logs:
        for block in (50, 51, 52):
            assert await unwind_limit(liq, held_at(5 * cm.WAD, 2_500.0, block), trust,
                                      due) is None
    assert asked == [] and trusted == []
    assert questions == [OpportunityKey("curie", KEEPER, (UNWIND, VETH), str(5 * cm.WAD))] * 3
    assert VETH not in liq._unwind_failures and liq.hold() is None
    assert "curie.unwind_waits" not in [e["event"] for e in logs]
    # 3 of it unwound: the other 2 are a new unwind, bounded by every endpoint's word.
    assert await unwind_limit(liq, held_at(2 * cm.WAD, 2_500.0, 53), trust, due) == \
        pytest.approx(2_500 * 0.97)
    assert asked == [("first", 53), ("second", 53)] and trusted == [1]


@pytest.mark.parametrize("endpoints", [2, 3])
async def test_a_hung_voter_is_given_up_on_within_the_bound(monkeypatch: pytest.MonkeyPatch,
                                                            endpoints: int) -> None:
    """A voter endpoint that takes the request and never answers is no vote after
    VOTE_WAIT_S, its request cancelled and not asked again at "latest": it held every
    block's liquidations, which wait behind the unwinds, the RPC timeout (10 s) twice. Of
    three, the two that answered bound the unwind; of two, the first's word alone does not:
    the unwind waits, counted as one that cannot go."""
    from keeperd.protocols.perp_curie.unwind_bound import VOTE_WAIT_S

    liq = unwinder(endpoints)
    asked = endpoints_say(monkeypatch, {"first": 2_500.0, "second": 2_500.0, "third": 2_500.0},
                          hanging={"second"})
    started = time.monotonic()
    limit = await unwind_limit(liq, held_at(5 * cm.WAD, 2_500.0, 60))
    waited = time.monotonic() - started
    assert VOTE_WAIT_S - 0.05 < waited < VOTE_WAIT_S + 0.25, waited
    assert [a for a in asked if a[0] == "second"] == [("second", 60), ("second", "cancelled")]
    if endpoints == 3:
        assert limit == pytest.approx(2_500 * 0.97)
    else:
        assert limit is None and liq._unwind_failures[VETH] == {60}


async def test_an_unwind_waits_while_its_assets_price_breaker_is_tripped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its limit rests on the index the price watch distrusts (a feed pinned at its
    minAnswer, stale, off its references; an operator's trip): the unwind waits, uncounted
    (the takeovers there are held by the breaker already), and goes once it resets. The
    watch holding every price (a block unjudged, the sequencer down) holds it too."""
    liq = unwinder(1)
    endpoints_say(monkeypatch, {})

    async def tripped() -> PriceTrust:
        return PriceTrust(frozenset({"WETH"}))

    async def unjudged() -> PriceTrust:
        return PriceTrust(hold="the price watch has not judged block 40")

    async def clear() -> PriceTrust:
        return PriceTrust(frozenset({"WBTC"}))

    with structlog.testing.capture_logs() as logs:
        for block in (40, 41, 42):
            assert await unwind_limit(liq, held_at(5 * cm.WAD, 2_500.0, block), tripped) \
                is None
        assert await unwind_limit(liq, held_at(5 * cm.WAD, 2_500.0, 43), unjudged) is None
    assert [e["reason"] for e in logs if e["event"] == "curie.unwind_waits"] == [
        "its asset's price breaker is tripped"]
    assert liq.hold() is None and VETH not in liq._unwind_failures
    assert await unwind_limit(liq, held_at(5 * cm.WAD, 2_500.0, 44), clear) == \
        pytest.approx(2_425.0)


def test_the_keepers_holdings_as_the_book_shows_them() -> None:
    """What the journal keeps of the keeper's own positions: each market's, signed; nothing
    once it holds none; and None — nothing known, what was journaled stays — while the book
    does not have the keeper at all (an index that has not reached its first trade: a
    review; a start without Curie passed while it held one)."""
    from dataclasses import replace

    liq = liquidator()
    assert liq.keeper_holdings(book({VETH: 5 * 10**18, VBTC: -(10**17)})) == {
        VETH: "5 vETH (long)", VBTC: "0.1 vBTC (short)"}
    assert liq.keeper_holdings(book({})) == {}
    assert liq.keeper_holdings(replace(book({}), traders=())) is None


def test_the_bad_debt_curie_carries_is_its_accounts_left_below_zero() -> None:
    """An account whose positions are gone and whose value is below zero owes that much to
    the insurance fund: the cascade models positions and left a crash's 12 such accounts
    (-$131k) out of every figure (a by-hand trial). One still holding a position is the
    cascade's; one above zero owes nothing."""
    from keeperd.protocols.perp_curie.adapter import PerpCurieAdapter

    adapter: Any = PerpCurieAdapter.__new__(PerpCurieAdapter)
    markets = {VETH: Market(VETH, "vETH", "WETH", 0, 0)}
    open_position = (cm.CuriePosition(VETH, "vETH", "WETH", 10**18, 0, 0, 0),)
    traders = (cm.CurieTrader("0x" + "01" * 20, -5_000 * 10**18, 0, 0, ()),
               cm.CurieTrader("0x" + "02" * 20, -1_500 * 10**18, 0, 0, ()),
               cm.CurieTrader("0x" + "03" * 20, -9_000 * 10**18, 0, 0, open_position),
               cm.CurieTrader("0x" + "04" * 20, 2_000 * 10**18, 0, 0, ()))
    book = CurieBook(1, 0, markets, traders, 62_500, 25_000, 100_000, 7_000 * 10**6)
    risk = adapter.book_risk(book)
    assert risk.outstanding_bad_debt_usd == pytest.approx(6_500.0)
    assert risk.insurance_fund_usd == pytest.approx(7_000.0)
