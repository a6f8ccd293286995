"""A block's sales through one swap pool are simulated in turn (execution/sales.py and
`Executor._simulate`): each after the keeper's sales in flight there and the ones ahead of
it in the block, as they will be mined. Simulated each alone, a devnet crash's flash
liquidations all passed, and 39 reverted on chain (SwapBelowBound): the earlier sales had
moved the pool."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from keeperd.chain.rpc import RpcError
from keeperd.execution import sales
from keeperd.execution.executor import (
    SWAP_BELOW_BOUND,
    Executor,
    InTurnUnavailable,
    Simulated,
    swap_would_not_pay,
)
from keeperd.metrics import Metrics
from keeperd.protocols.sdk.contract import Call
from tests.unit.test_decision import plan

KEEPER = "0x" + "cd" * 20
SELLER = "0x" + "12" * 20
POOL_A = "0x" + "aA" * 20  # (mixed case, as a checksummed address is)
POOL_B = "0x" + "bb" * 20
BELOW = SWAP_BELOW_BOUND + "00" * 64  # SwapBelowBound(uint256,uint256)


def sale(i: int, pool: str | None) -> Call:
    return Call(plan(10_000, 10_500), SELLER, bytes([i]) * 4, flash=True, sells_through=pool)


def ok() -> dict[str, Any]:
    return {"status": "0x1", "returnData": "0x", "gasUsed": "0x1"}


def below() -> dict[str, Any]:
    return {"status": "0x0", "returnData": BELOW,
            "error": {"code": 3, "message": "execution reverted", "data": BELOW}}


def test_what_sells_ahead_of_each_wave() -> None:
    """In flight first (the nonces before), then the waves ahead, in order; pools by any
    case; a pool sold once, first in the block, needs no turn."""
    flying = sales.Sale(SELLER, b"old", 9)
    waves = [[sale(1, POOL_A), sale(2, POOL_B), sale(3, None)],
             [sale(4, POOL_A.lower()), sale(5, POOL_A)]]
    ahead = sales.sold_before(waves, {POOL_A.lower(): [flying]})
    assert ahead[0] == {POOL_A.lower(): (flying,)}
    assert ahead[1] == {POOL_A.lower(): (flying, sales.Sale.of(waves[0][0])),
                        POOL_B.lower(): (sales.Sale.of(waves[0][1]),)}
    [turn] = sales.in_turn(waves[0], ahead[0])  # (B: once, first: alone; 3 sells nothing)
    assert (turn.pool, turn.members, turn.alone) == (POOL_A.lower(), (0,), None)
    assert sales.in_turn(waves[0], {}) == []
    [turn] = sales.in_turn([sale(1, POOL_A), sale(2, POOL_B), sale(3, POOL_A)], {})
    assert (turn.members, turn.alone) == ((0, 2), 0)


def executor(batch: Any) -> Any:
    ex: Any = Executor.__new__(Executor)
    ex.config = SimpleNamespace(mode="liquidate", second_opinion=False)
    ex.keeper = KEEPER
    ex.op_stack_chain_id = None
    ex.metrics = Metrics()
    ex.labels = ("devnet", "aave")
    ex.pool = SimpleNamespace(batch=batch, second=lambda: None)
    return ex


async def test_the_second_sale_through_a_pool_is_judged_after_the_first() -> None:
    asked: list[list[Any]] = []
    answers: list[Any] = []

    async def batch(requests: list[Any]) -> list[Any]:
        asked.append(requests)
        return answers

    wave = [(sale(1, POOL_A), "k1"), (sale(2, POOL_B), "k2"), (sale(3, POOL_A), "k3")]
    answers = ["0x", "0x", [{"calls": [ok(), below()]}]]
    out = await executor(batch)._simulate(wave, 7)
    # The first through A and the one through B alone; A's two in one simulated block.
    [requests] = asked  # (a sale failing in turn is not measured alone: it would pass)
    assert [r[0] for r in requests] == ["eth_call", "eth_call", "eth_simulateV1"]
    assert [r[1][0]["data"] for r in requests[:2]] == ["0x01010101", "0x02020202"]
    [block] = requests[2][1][0]["blockStateCalls"]
    assert [(c["from"], c["data"]) for c in block["calls"]] == [
        (KEEPER, "0x01010101"), (KEEPER, "0x03030303")]
    assert isinstance(out[0], Simulated) and isinstance(out[1], Simulated)
    assert isinstance(out[2], RpcError) and swap_would_not_pay(out[2]) == "SwapBelowBound"
    assert (out[2].ahead, out[2].pool) == (1, POOL_A.lower())  # (what the log says)

    # Both pass in turn: both go.
    asked.clear()
    answers = ["0x", "0x", [{"calls": [ok(), ok()]}]]
    out = await executor(batch)._simulate(wave, 7)
    assert all(isinstance(o, Simulated) for o in out)

    # The endpoint refuses the simulated block (no eth_simulateV1): the first sale through
    # the pool still goes on its own answer, the second waits.
    answers = ["0x", "0x", RpcError("eth_simulateV1", -32601, "method not found")]
    out = await executor(batch)._simulate(wave, 7)
    assert isinstance(out[0], Simulated) and isinstance(out[1], Simulated)
    assert isinstance(out[2], InTurnUnavailable)


async def test_a_sale_after_ones_in_flight_is_simulated_after_them() -> None:
    """A sale of an earlier pass or block not mined yet goes first in the simulated block,
    the wave's first sale through that pool after it (not alone)."""
    asked: list[list[Any]] = []

    async def batch(requests: list[Any]) -> list[Any]:
        asked.append(requests)
        return ["0x", [{"calls": [ok(), below()]}]]

    flying = sales.Sale(SELLER, b"\x09" * 4, 400_000)
    wave = [(sale(1, POOL_A), "k1"), (sale(2, POOL_B), "k2")]
    out = await executor(batch)._simulate(wave, 7, {POOL_A.lower(): (flying,)})
    [requests] = asked
    assert [r[0] for r in requests] == ["eth_call", "eth_simulateV1"]
    assert requests[0][1][0]["data"] == "0x02020202"  # (B's alone)
    [block] = requests[1][1][0]["blockStateCalls"]
    # (each with SIMULATION_GAS_FACTOR its gas, on both endpoints alike)
    assert [(c["data"], c["gas"]) for c in block["calls"]] == [
        ("0x09090909", hex(3 * 400_000)),
        ("0x01010101", hex(3 * wave[0][0].opportunity.gas_limit))]
    assert swap_would_not_pay(out[0]) == "SwapBelowBound" and out[0].ahead == 1
    assert isinstance(out[1], Simulated)


async def test_a_second_opinion_judges_a_sale_in_turn_too() -> None:
    """The second endpoint gets the same simulated block at the planned block; a sale it
    sees revert in turn is asked again in turn at the latest block, and refused when it
    reverts there too."""
    from keeperd.execution.executor import SecondOpinionRefused

    seconds: list[list[Any]] = []

    async def batch(requests: list[Any]) -> list[Any]:
        return ["0x", [{"calls": [ok(), ok()]}]]

    async def second_opinion(ep: Any, requests: list[Any]) -> list[Any]:
        seconds.append(requests)
        if len(seconds) == 1:
            return ["0x", [{"calls": [ok(), below()]}]]
        return [[{"calls": [ok(), below()]}]]

    ex = executor(batch)
    ex.config = SimpleNamespace(mode="liquidate", second_opinion=True)
    first_ep = SimpleNamespace(name="a", safe_url="http://a")
    second_ep = SimpleNamespace(name="b", safe_url="http://b")
    ex.pool = SimpleNamespace(batch=batch, second=lambda: second_ep,
                              ranked=lambda: [first_ep, second_ep])
    ex._second_opinion = second_opinion
    wave = [(sale(1, POOL_A), "k1"), (sale(3, POOL_A), "k3")]
    out = await ex._simulate(wave, 7)
    assert isinstance(out[0], Simulated)
    assert isinstance(out[1], SecondOpinionRefused), out[1]
    planned, again = seconds
    assert [r[0] for r in planned] == ["eth_call", "eth_simulateV1"]
    assert planned[1][1][1] == hex(7)
    [(method, (simulated, at))] = again
    assert (method, at) == ("eth_simulateV1", "latest")
    assert [c["data"] for c in simulated["blockStateCalls"][0]["calls"]] == [
        "0x01010101", "0x03030303"]



async def test_a_turn_is_split_into_blocks_and_each_sale_measured() -> None:
    """A crash's turn of many sales through one pool goes in several simulated blocks (one
    past the chain's gas limit is refused whole: every sale held); a sale that passes only
    with more than its plan's gas is sent with what it used, with headroom."""
    from keeperd.execution.executor import TURN_BLOCK_GAS, TURN_GAS_HEADROOM

    asked: list[list[Any]] = []
    planned = sale(0, POOL_A).opportunity.gas_limit
    per_block = TURN_BLOCK_GAS // (3 * planned)
    n = 2 * per_block + 1

    async def batch(requests: list[Any]) -> list[Any]:
        asked.append(requests)
        blocks = requests[-1][1][0]["blockStateCalls"]
        used = [{**ok(), "gasUsed": hex(planned * 2 if i == n - 1 else planned // 2)}
                for i in range(n)]
        answer, k = [], 0
        for b in blocks:
            answer.append({"calls": used[k:k + len(b["calls"])]})
            k += len(b["calls"])
        return ["0x", answer]

    wave = [(sale(i, POOL_A), f"k{i}") for i in range(n)]
    out = await executor(batch)._simulate(wave, 7)
    blocks = asked[0][-1][1][0]["blockStateCalls"]
    assert len(blocks) == 3 and [len(b["calls"]) for b in blocks] == [
        per_block, per_block, 1]
    assert all(sum(int(c["gas"], 16) for c in b["calls"]) <= TURN_BLOCK_GAS for b in blocks)
    assert [o.gas_needed for o in out[:-1]] == [None] * (n - 1)  # type: ignore[attr-defined]
    assert out[-1].gas_needed == int(planned * 2 * TURN_GAS_HEADROOM) + 1  # type: ignore[attr-defined]


async def test_a_second_endpoint_that_cannot_simulate_a_turn_is_counted() -> None:
    from tests.conftest import metric_value

    async def batch(requests: list[Any]) -> list[Any]:
        return ["0x", [{"calls": [ok(), ok()]}]]

    async def second_opinion(ep: Any, requests: list[Any]) -> list[Any]:
        return ["0x", RpcError("eth_simulateV1", -32601, "method not found")]

    ex = executor(batch)
    ex.config = SimpleNamespace(mode="liquidate", second_opinion=True)
    second_ep = SimpleNamespace(name="b", safe_url="http://b")
    ex.pool = SimpleNamespace(batch=batch, second=lambda: second_ep,
                              ranked=lambda: [second_ep])
    ex._second_opinion = second_opinion
    out = await ex._simulate([(sale(1, POOL_A), "k1"), (sale(3, POOL_A), "k3")], 7)
    assert all(isinstance(o, Simulated) for o in out)  # (the first's verdict stands)
    assert metric_value(ex.metrics, "keeperd_liquidations_total", {
        "chain": "devnet", "protocol": "aave", "stage": "second_opinion_unavailable"}) == 1


def test_a_sale_behind_one_not_sent_is_asked_again() -> None:
    """Sales that failed in turn behind a sale that passed and was then not sent (refused by
    the second opinion, unprofitable after its fees) are simulated again behind what was
    sent: else the block's largest sale, refused every block, held every later one through
    its pool for good (a review)."""
    from types import SimpleNamespace as NS

    from keeperd.execution.executor import InTurnReverted, _TurnsOfTheBlock

    first, second, third = sale(1, POOL_A), sale(2, POOL_A), sale(3, POOL_B)
    below_bound = InTurnReverted(3, "execution reverted", BELOW, 1, POOL_A.lower())
    turns = _TurnsOfTheBlock()
    turns.note([(first, "k1"), (second, "k2"), (third, "k3")],
               [Simulated(None), below_bound, Simulated(None)],
               [NS(key="k3")])  # (k1 passed and was not sent: refused after)
    assert turns.again() == [(second, "k2")]
    sent_all = _TurnsOfTheBlock()
    sent_all.note([(first, "k1"), (second, "k2")], [Simulated(None), below_bound],
                  [NS(key="k1")])
    assert sent_all.again() == []  # (behind what was sent: its failure stands)
    # A sale that passed on the first endpoint and was refused after (the second opinion,
    # the judge, an unread fee) moved the pool for the next ones all the same.
    from keeperd.execution.executor import SecondOpinionRefused

    refused = _TurnsOfTheBlock()
    refused.note([(first, "k1"), (second, "k2")],
                 [SecondOpinionRefused("the second sees it revert"), below_bound], [])
    assert refused.again() == [(second, "k2")]
    # A sale behind it that failed for another reason (a race lost) is not asked again.
    raced = _TurnsOfTheBlock()
    raced.note([(first, "k1"), (second, "k2")],
               [Simulated(None), InTurnReverted(3, "execution reverted", "0x", 1, "p")], [])
    assert raced.again() == []


def test_a_sale_too_large_for_its_pool_is_planned_at_half_down_to_an_eighth() -> None:
    from keeperd.protocols.aave_v3.liquidator import AaveLiquidator
    from keeperd.protocols.sdk.sale_caps import SaleCaps

    liquidator: Any = AaveLiquidator.__new__(AaveLiquidator)
    liquidator.sale_caps = SaleCaps()

    def opp(debt_to_cover: int) -> Any:
        return SimpleNamespace(plan=SimpleNamespace(
            account="0xAA", collateral_asset="0xC0", debt_asset="0xD0",
            debt_to_cover=debt_to_cover))

    caps = [liquidator.sale_too_large(opp(d), 7) for d in (1_000, 500, 250, 125)]
    assert caps == [500, 250, 125, None]  # (62 would be under an eighth of the first 1,000)
    assert liquidator.sale_caps.at(8) == {("0xaa", "0xc0", "0xd0"): 125}


def test_a_smaller_size_holds_its_blocks_then_the_pair_is_forgotten() -> None:
    """The whole size is tried again after the hold (arbitrage may have brought the pool
    back), and a pair whose cap lapsed leaves nothing behind: a failure then halves from
    its new size (they were kept for the life of the process)."""
    from keeperd.protocols.sdk.sale_caps import SaleCaps

    caps: Any = SaleCaps(hold_blocks=50)
    assert caps.halve("a", 1_001, 100) == 500
    assert caps.halve("b", 64, 120) == 32
    assert caps.halve("a", 500, 101) == 250
    assert caps.halve("a", 250, 102) == 125  # (1,001 // 8 = 125: an eighth still goes)
    assert caps.halve("a", 125, 103) is None
    assert caps.at(152) == {"a": 125, "b": 32}  # (held 50 blocks from its last halving)
    assert caps.at(153) == {"b": 32}
    assert len(caps) == 1  # forgotten, not only hidden
    assert caps.halve("a", 800, 160) == 400  # from its new whole size
    assert caps.halve("a", 100, 161) is None  # (50 < 800 // 8)
    assert caps.at(10_000) == {} and len(caps) == 0


def test_a_resumed_sale_names_its_pool_from_its_calldata() -> None:
    """After a restart, the sales in flight are read back from their signed calldata, so new
    sales through their pools are simulated behind them until they are mined."""
    from keeperd.protocols.aave_v3.liquidator import AaveLiquidator, flash_calldata
    from keeperd.protocols.morpho_blue.liquidator import MorphoLiquidator, callback_calldata
    from keeperd.protocols.sdk.swap import uniswap_v3_pool

    factory, flash, morpho_seller = "0x" + "fa" * 20, "0x" + "f1" * 20, "0x" + "f2" * 20
    weth, usdc = "0x" + "11" * 20, "0x" + "22" * 20
    config = SimpleNamespace(flash_liquidator=flash, uniswap_v3_factory=factory)
    aave: Any = AaveLiquidator.__new__(AaveLiquidator)
    aave.config = config
    data = flash_calldata(weth, usdc, "0x" + "ab" * 20, 10**9, 500, 1, 2)
    assert aave.sale_pool(flash, data) == uniswap_v3_pool(factory, weth, usdc, 500)
    assert aave.sale_pool("0x" + "99" * 20, data) is None  # (not the FlashLiquidator)
    morpho: Any = MorphoLiquidator.__new__(MorphoLiquidator)
    morpho.config, morpho.contract = config, morpho_seller
    params = (usdc, weth, "0x" + "0c" * 20, "0x" + "0d" * 20, 86 * 10**16)
    data = callback_calldata(params, "0x" + "ab" * 20, 10**18, 0, 3000, 1, 2)
    assert morpho.sale_pool(morpho_seller, data) == uniswap_v3_pool(factory, weth, usdc, 3000)


async def test_turns_run_at_the_block_the_sales_in_flight_were_counted_at() -> None:
    """Simulated at "latest" with a mined count blocks old, a sale mined since ran again
    ahead of the block's sales (priced a third under what they realised), or one that then
    failed dropped out and let the sale behind it pass, then revert (a trial). The turn and
    its first sale, asked alone, run at the block the count was read at, through an
    endpoint that has it; a call alone through no turn stays at "latest"."""
    asked: list[tuple[int, list[Any]]] = []

    async def batch(requests: list[Any]) -> list[Any]:
        raise AssertionError("asked of any endpoint, not of one that has the block")

    async def batch_at(block: int, requests: list[Any]) -> tuple[dict[str, Any], list[Any]]:
        asked.append((block, requests))
        return {}, ["0x", "0x", [{"calls": [ok(), ok()]}]]

    ex = executor(batch)
    ex.pool = SimpleNamespace(batch=batch, batch_at=batch_at, second=lambda: None)
    wave = [(sale(1, POOL_A), "k1"), (sale(2, POOL_B), "k2"), (sale(3, POOL_A), "k3")]
    out = await ex._simulate(wave, 7, None, counted=9)
    [(block, requests)] = asked
    assert block == 9
    tags = {r[1][0]["data"][:10] if r[0] == "eth_call" else "turn": r[1][-1]
            for r in requests}
    assert tags == {"0x01010101": "0x9", "0x02020202": "latest", "turn": "0x9"}
    assert all(isinstance(o, Simulated) for o in out)


def test_sales_mined_after_the_counted_block_are_still_ahead_there() -> None:
    """Settled from the latest receipts, a sale mined after the block the count was read at
    left the list, and a turn at that block ran without it (a review)."""
    from keeperd.execution.txmanager import TxManager

    tx: Any = TxManager.__new__(TxManager)
    tx.pending, tx._sales, tx._mined_at, tx._mined_at_block = {}, {}, 5, 100
    mined = sales.Sale(SELLER, b"\x05" * 4, 1)
    tx._mined_sales = {"old": (100, 4, {POOL_A.lower()}, sales.Sale(SELLER, b"\x04" * 4, 1)),
                       "new": (101, 5, {POOL_A.lower()}, mined)}
    tx.pending["flying"] = SimpleNamespace(nonce=6, to=SELLER, data=b"\x06" * 4,
                                           gas_limit=1, cancelling=False)
    tx._sales["flying"] = {POOL_A.lower()}
    assert [s.data for s in tx.sales_in_flight(100)[POOL_A.lower()]] == [
        b"\x05" * 4, b"\x06" * 4]  # (mined at 101, then in flight: in nonce order)
    assert [s.data for s in tx.sales_in_flight(None)[POOL_A.lower()]] == [b"\x06" * 4]
    # One being cancelled is still ahead: its original may be mined first (gone, its
    # opportunity reverts in the simulation and moves nothing).
    tx.pending["flying"].cancelling = True
    assert [s.data for s in tx.sales_in_flight(None)[POOL_A.lower()]] == [b"\x06" * 4]
    tx.sales_in_flight(100 + 64 + 2)  # (kept 64 blocks, then forgotten)
    assert list(tx._mined_sales) == []
