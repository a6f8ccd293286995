"""An OP Stack chain's fees beside the gas: asked of the chain, priced into each decision,
the higher of two endpoints' figures kept, and booked from the receipt (without a chain)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import rlp
from eth_abi import decode, encode

from keeperd.chain import l1_fee
from keeperd.chain.rpc import RpcError
from keeperd.config import parse_config
from keeperd.execution.executor import Executor, Simulated, decide
from keeperd.execution.txmanager import Outcome
from keeperd.protocols.sdk.contract import GasQuote
from tests.unit.test_decision import GWEI, plan


def word(value: int) -> str:
    return "0x" + encode(["uint256"], [value]).hex()


REVERT = RpcError("eth_call", 3, "execution reverted")


def test_the_chains_keeperd_knows_and_the_setting() -> None:
    assert l1_fee.charges_l1_fee(8453, "auto") and l1_fee.charges_l1_fee(10, "auto")
    assert not l1_fee.charges_l1_fee(1, "auto") and not l1_fee.charges_l1_fee(42161, "auto")
    assert l1_fee.charges_l1_fee(31337, "op-stack") and not l1_fee.charges_l1_fee(8453, "none")
    chain = {"name": "base", "chain_id": 8453, "rpc_urls": ["http://127.0.0.1:1"]}
    config = parse_config({"state_dir": "/tmp/x", "chains": [chain], "protocols": []})
    assert config.chains[0].l1_data_fee == "auto"
    with pytest.raises(Exception, match="l1_data_fee"):
        parse_config({"state_dir": "/tmp/x", "chains": [{**chain, "l1_data_fee": "optimism"}],
                      "protocols": []})


def test_the_oracle_is_asked_about_the_transaction_keeperd_signs_unsigned() -> None:
    data = bytes.fromhex("00ab") * 80
    method, (call, at) = l1_fee.l1_fee_request(8453, "0x" + "12" * 20, data, 700_000)
    assert (method, at, call["to"]) == ("eth_call", "latest", l1_fee.GAS_PRICE_ORACLE)
    payload = bytes.fromhex(call["data"][2:])
    assert payload[:4] == l1_fee.GET_L1_FEE
    (unsigned,) = decode(["bytes"], payload[4:])
    assert unsigned[0] == 2  # an EIP-1559 transaction, its fields in order, no signature
    fields = rlp.decode(unsigned[1:])
    assert len(fields) == 9
    assert int.from_bytes(fields[0], "big") == 8453
    assert int.from_bytes(fields[4], "big") == 700_000
    assert fields[5] == bytes.fromhex("12" * 20) and fields[7] == data and fields[8] == []
    # Its nonce and fees take as many bytes as any keeperd signs (the fee is priced on bytes).
    assert len(fields[1]) == 3 and len(fields[2]) == len(fields[3]) == 7


def test_the_operator_fee_is_two_points_of_a_line_and_none_before_isthmus() -> None:
    # An oracle without getOperatorFee (before Isthmus) reverts: no operator fee.
    assert l1_fee.OperatorFee.from_answers([REVERT, REVERT]).fee(500_000) == 0
    # Isthmus, scalar 2,000 (x gas / 1e6) and constant 10^9 wei: 10^9 + 2,000 x 1e6 / 1e6.
    fee = l1_fee.OperatorFee.from_answers([word(10**9), word(10**9 + 2_000)])
    assert fee.fee(500_000) == 10**9 + 1_000
    assert fee.fee(333_333) == 10**9 + 667  # (rounded up: never under what is charged)
    # Jovian, scalar 5 (x gas x 100): 500 wei a gas.
    assert l1_fee.OperatorFee.from_answers([word(0), word(500 * 10**6)]).fee(300_000) == (
        500 * 300_000)
    # Any other failure, or an answer that is not a number, leaves the cost unknown.
    with pytest.raises(l1_fee.FeeUnread):
        l1_fee.OperatorFee.from_answers([RpcError("eth_call", -32000, "rate limited"), REVERT])
    with pytest.raises(l1_fee.FeeUnread):
        l1_fee.OperatorFee.from_answers(["0x", "0x"])


def test_the_fee_beside_the_gas_comes_off_the_profit_and_the_budget() -> None:
    # $500 bonus, $12 of gas (tests/unit/test_decision.py); an L1 data fee of 0.01 ETH ($20).
    plain = decide(plan(10_000, 10_500), "k", gas_limit=393_000, fee_per_gas=20 * GWEI,
                   native_usd=2_000, min_profit_usd=5, slippage_bps=50)
    fee = 10**16
    priced = decide(plan(10_000, 10_500), "k", gas_limit=393_000, fee_per_gas=20 * GWEI,
                    native_usd=2_000, min_profit_usd=5, slippage_bps=50,
                    fee_beside_gas_wei=fee)
    assert plain is not None and priced is not None
    assert priced.net_profit_usd == pytest.approx(plain.net_profit_usd - 20)
    # What the gas may cost at most leaves the fee paid and min_profit_usd kept.
    assert priced.budget_wei == plain.budget_wei - fee
    assert priced.fee_beside_gas_wei == fee
    # A fee over the prize: not sent.
    assert decide(plan(10_000, 10_500), "k", gas_limit=393_000, fee_per_gas=20 * GWEI,
                  native_usd=2_000, min_profit_usd=5, slippage_bps=50,
                  fee_beside_gas_wei=25 * 10**16) is None


def test_a_simulation_is_priced_with_headroom_over_the_oracles_figure() -> None:
    # A quarter over the oracle's figure (more than one L1 block's largest base-fee rise),
    # exact on wei and rounded up.
    sim = Simulated(None, l1_fee_wei=10**12,
                    operator_fee=l1_fee.OperatorFee(10**9, 2_000))
    assert sim.fee_beside_gas(500_000) == (10**12 + 10**9 + 1_000) * 5 // 4
    assert l1_fee.with_headroom(3) == 4 and l1_fee.with_headroom(2**80 + 1) == (
        5 * 2**78 + 2)
    assert Simulated(None).fee_beside_gas(500_000) == 0


def test_the_seller_contracts_profit_bar_counts_the_fee_beside_the_gas() -> None:
    """The bar a flash liquidation's contract enforces on chain is the executor's decision's:
    with the L1 data fee left out, a sale that lost that fee passed it."""
    plain = GasQuote(20 * GWEI, 2_000, 5)
    with_fee = GasQuote(20 * GWEI, 2_000, 5, fee_beside_gas_wei=10**16)  # $20
    assert with_fee.least_profit(300_000, 1.0, 6) - plain.least_profit(300_000, 1.0, 6) == (
        pytest.approx(20 * 10**6, abs=1))


def test_the_higher_of_two_endpoints_fees_is_kept_and_an_unread_one_holds() -> None:
    def priced(answers: list[Any], second: list[Any] | None, n: int = 2) -> list[object]:
        out: list[object] = [Simulated(None) for _ in range(n)]
        Executor._price_fees(out, answers, second)
        return out

    operator = [REVERT, REVERT]
    first, second = priced([word(100), word(900), *operator],
                       [word(300), word(700), *operator])
    assert isinstance(first, Simulated) and first.l1_fee_wei == 300
    assert isinstance(second, Simulated) and second.l1_fee_wei == 900
    # The operator fee: each endpoint's line, the higher constant and the higher slope.
    [both] = priced([word(100), word(10**9), word(10**9 + 2_000)],
                    [word(100), word(5 * 10**8), word(5 * 10**8 + 9_000)], n=1)
    assert isinstance(both, Simulated)
    assert both.operator_fee == l1_fee.OperatorFee(10**9, 9_000)
    # The second endpoint down or lying with junk: the first's figures stand (and the
    # other way round); told as one endpoint's.
    out: list[object] = [Simulated(None)]
    reading = Executor._price_fees(out, [word(100), *operator],
                                   [RpcError("eth_call", -32000, "down"), "0x1", "0x2"])
    # (counted once a liquidation: the wave's operator reading is not one)
    assert isinstance(out[0], Simulated) and out[0].l1_fee_wei == 100 and reading.lone == 1
    [other] = priced([REVERT, *operator], [word(100), *operator], n=1)
    assert isinstance(other, Simulated) and other.l1_fee_wei == 100
    # Neither endpoint's figure: not sent.
    [held] = priced([REVERT, *operator], [REVERT, *operator], n=1)
    assert isinstance(held, l1_fee.FeeUnread)
    [alone_unread] = priced(["0x", *operator], None, n=1)
    assert isinstance(alone_unread, l1_fee.FeeUnread)
    # The operator fee unknown: nothing of the wave is priced.
    wave = priced([word(1), word(2), RpcError("eth_call", -32000, "x"), REVERT], None)
    assert all(isinstance(o, l1_fee.FeeUnread) for o in wave)
    # A failed simulation stays what it was.
    out: list[object] = [REVERT, Simulated(None)]
    Executor._price_fees(out, [word(5), word(6), *operator], None)
    assert out[0] is REVERT and isinstance(out[1], Simulated) and out[1].l1_fee_wei == 6


async def test_what_a_receipt_paid_is_its_gas_its_l1_fee_and_its_operator_fee() -> None:
    asked: list[Any] = []

    async def batch(requests: list[Any]) -> list[Any]:
        asked.append(requests)
        return [word(10**9), word(10**9 + 2_000)]

    ex: Any = Executor.__new__(Executor)
    ex.pool = SimpleNamespace(batch=batch)
    # An OP Stack receipt (op-geth's fields): gas at the L2's price, and the L1 data fee.
    receipt = {"blockNumber": "0x10", "gasUsed": hex(300_000),
               "effectiveGasPrice": hex(5 * 10**6), "l1Fee": hex(4 * 10**12),
               "l1GasPrice": hex(20 * GWEI), "l1GasUsed": hex(1_600)}
    outcome = Outcome("k", "included", "0x1", 300_000, 5 * 10**6, receipt)
    assert await ex._paid_wei(outcome) == 300_000 * 5 * 10**6 + 4 * 10**12
    assert asked == []  # no operator fee charged: nothing asked
    # Since Isthmus a receipt names the operator fee's parameters: its amount is the chain's
    # oracle's, at the receipt's block (its formula changed with Jovian).
    charged = {**receipt, "operatorFeeScalar": hex(2_000), "operatorFeeConstant": hex(10**9)}
    outcome = Outcome("k", "included", "0x1", 300_000, 5 * 10**6, charged)
    assert await ex._paid_wei(outcome) == (300_000 * 5 * 10**6 + 4 * 10**12 + 10**9 + 600)
    assert [r[1][1] for r in asked[0]] == ["0x10", "0x10"]
    # An Ethereum receipt: the gas alone.
    plain = Outcome("k", "included", "0x1", 300_000, 20 * GWEI, {"gasUsed": hex(300_000)})
    assert await ex._paid_wei(plain) == 300_000 * 20 * GWEI


async def test_a_wave_is_simulated_with_its_fees_asked_of_both_endpoints() -> None:
    """`_simulate` puts each call's fee reads in the batches that simulate it, on the first
    endpoint and on the second (at the planned block): each call is priced with the higher
    figure, the wave's next profit bar with the most a call paid; with the second endpoint
    silent, the first's figures, counted as one endpoint's."""
    from keeperd.metrics import Metrics
    from keeperd.protocols.sdk.contract import Call

    sent: dict[str, list[Any]] = {}
    second_answers: list[Any] | None = None

    async def batch(requests: list[Any]) -> list[Any]:
        sent["first"] = requests
        return ["0x", "0x", word(1_000), word(50), REVERT, REVERT]

    async def batch_on(ep: Any, requests: list[Any]) -> list[Any] | None:
        sent["second"] = requests
        return second_answers

    ex: Any = Executor.__new__(Executor)
    ex.config = SimpleNamespace(mode="liquidate", second_opinion=True)
    ex.keeper = "0x" + "cd" * 20
    ex.op_stack_chain_id = 8453
    ex.metrics = Metrics()
    ex.labels = ("base", "aave")
    ex._fee_estimate_wei = 0
    ex.pool = SimpleNamespace(batch=batch, ranked=lambda: ["ep0", "ep1"],
                              second=lambda: "ep1")
    ex._second_opinion = batch_on
    wave = [(Call(plan(10_000, 10_500), "0x" + "12" * 20, bytes(100 + i)), f"k{i}")
            for i in range(2)]

    second_answers = ["0x", "0x", word(400), word(900), REVERT, REVERT]
    out = await ex._simulate(wave, 77)
    assert [o.l1_fee_wei for o in out] == [1_000, 900]
    assert ex._fee_estimate_wei == 1_000 * 5 // 4
    # Two simulations, two L1 fee reads (each of its call's bytes), two operator fee reads.
    for name, at in (("first", "latest"), ("second", hex(77))):
        methods = [r[0] for r in sent[name]]
        assert methods == ["eth_call"] * 6, methods
        fee_reads = [r[1] for r in sent[name][2:4]]
        assert all(call["to"] == l1_fee.GAS_PRICE_ORACLE and block == at
                   for call, block in fee_reads)
        assert [len(call["data"]) for call, _ in fee_reads] == sorted(
            len(call["data"]) for call, _ in fee_reads)  # (call 1 is a byte longer)

    second_answers = None  # (the second endpoint gave nothing)
    out = await ex._simulate(wave, 78)
    assert [o.l1_fee_wei for o in out] == [1_000, 50]
    labels = {"chain": "base", "protocol": "aave", "stage": "fee_second_opinion_unavailable"}
    assert ex.metrics.registry.get_sample_value("keeperd_liquidations_total", labels) == 2


def test_check_config_warns_offline_of_a_known_op_stack_chain_set_to_none(
        tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from keeperd.checks import check_config

    path = tmp_path / "keeperd.yaml"
    path.write_text(
        "state_dir: /tmp/x\nchains:\n  - {name: base, chain_id: 8453, l1_data_fee: none,\n"
        "     rpc_urls: ['http://127.0.0.1:1']}\nprotocols: []\n")
    check_config(path, online=False)
    warning = capsys.readouterr().err
    assert "warning: chains[0].l1_data_fee" in warning and "Base is an OP Stack chain" in warning
    assert "remove l1_data_fee" in warning
    path.write_text(path.read_text().replace("8453", "1"))
    check_config(path, online=False)
    assert "l1_data_fee" not in capsys.readouterr().err


def test_what_counts_as_an_oracle_without_the_function() -> None:
    """An oracle before Isthmus has no getOperatorFee: each client words the revert its own
    way; a refusal of another kind (a rate limit, a timeout) is not one, and holds."""
    for refused in (RpcError("eth_call", 3, "x"),
                    RpcError("eth_call", -32000, "execution reverted"),
                    RpcError("eth_call", -32015, "VM execution error."),
                    RpcError("eth_call", -32000, "Execution Reverted: 0x")):
        assert l1_fee.OperatorFee.from_answers([refused, refused]) == l1_fee.NO_OPERATOR_FEE
    for other in (RpcError("eth_call", -32005, "rate limited"), RpcError("eth_call", 4, "x"),
                  "0x"):
        with pytest.raises(l1_fee.FeeUnread):
            l1_fee.OperatorFee.from_answers([other, other])
    # A line that would fall with the gas (a lying endpoint) charges its constant, never less.
    assert l1_fee.OperatorFee.from_answers([word(10**9), word(10**8)]) == (
        l1_fee.OperatorFee(10**9, 0))


def test_the_reads_are_the_oracles_and_say_why_they_failed() -> None:
    zero, probe = l1_fee.operator_fee_requests()
    for (method, (call, at)), gas in ((zero, 0), (probe, l1_fee.OPERATOR_FEE_PROBE_GAS)):
        assert (method, at, set(call)) == ("eth_call", "latest", {"to", "data"})
        assert call["to"] == l1_fee.GAS_PRICE_ORACLE and call["data"].startswith("0x")
        data = bytes.fromhex(call["data"][2:])
        assert data[:4] == l1_fee.GET_OPERATOR_FEE and decode(["uint256"], data[4:]) == (gas,)
    assert l1_fee.operator_fee_requests("0x10")[0][1][1] == "0x10"
    _, (call, _) = l1_fee.l1_fee_request(10, "0x" + "12" * 20, b"\x01", 1)
    assert call["data"].startswith("0x49948e0e")
    # No value rides on a liquidation: the unsigned transaction's value is 0.
    (unsigned,) = decode(["bytes"], bytes.fromhex(call["data"][10:]))
    assert rlp.decode(unsigned[1:])[6] == b""
    # What failed is said (the endpoint's error, or what it answered instead of a number).
    with pytest.raises(l1_fee.FeeUnread, match="rate limited"):
        l1_fee.decode_fee(RpcError("eth_call", -32005, "rate limited"))
    with pytest.raises(l1_fee.FeeUnread, match="answered '0x1234'"):
        l1_fee.decode_fee("0x1234")
    with pytest.raises(l1_fee.FeeUnread, match="no GasPriceOracle there"):
        l1_fee.decode_fee("0x")


def test_what_a_receipt_says_was_charged_beside_the_gas() -> None:
    assert l1_fee.receipt_fee_wei(None) == 0 and l1_fee.receipt_fee_wei({}) == 0
    assert l1_fee.receipt_fee_wei({"l1Fee": "0x0"}) == 0
    assert l1_fee.receipt_fee_wei({"l1Fee": "0x10"}) == 16
    assert l1_fee.receipt_fee_wei({"l1Fee": "junk"}) == 0  # (a broken field: not a fee)
    assert not l1_fee.receipt_has_operator_fee(None)
    assert not l1_fee.receipt_has_operator_fee({"gasUsed": "0x1"})
    assert not l1_fee.receipt_has_operator_fee(
        {"operatorFeeScalar": "0x0", "operatorFeeConstant": "0x0"})
    assert l1_fee.receipt_has_operator_fee({"operatorFeeScalar": "0x1"})
    assert l1_fee.receipt_has_operator_fee({"operatorFeeConstant": "0x1"})
    # (one field broken, the other charging: charged)
    assert l1_fee.receipt_has_operator_fee(
        {"operatorFeeScalar": "junk", "operatorFeeConstant": "0x5"})


def test_fees_are_said_in_gwei_or_from_a_thousandth_of_an_eth_in_eth() -> None:
    assert l1_fee.fee_text(352_106_000_000) == "352.106 gwei"
    assert l1_fee.fee_text(10**15 - 10**6) == "999,999.999 gwei"
    assert l1_fee.fee_text(10**15) == "0.001000 ETH"
    assert l1_fee.fee_text(617_190_000 * 10**9) == "0.617190 ETH"
    with pytest.raises(l1_fee.FeeUnread, match="no GasPriceOracle there"):
        l1_fee.decode_fee("")


def fee_executor() -> Any:
    ex: Any = Executor.__new__(Executor)
    ex._fee_estimate_wei, ex._fee_read_at, ex._fee_unread = 0, -1, None
    return ex


def test_the_profit_bar_learns_from_every_call_read_and_comes_down() -> None:
    """The seller contracts' bar is the median call's fee with its headroom, learnt from
    every call whose fee was read, whatever its simulation did: learnt from the calls that
    simulated alone, a bar set too high (an L1 spike that ended) made each of them revert on
    it, and never came down."""
    ex = fee_executor()
    ex._fee_estimate_wei = 10**17  # (a spike's)
    out: list[object] = [REVERT, REVERT, REVERT]  # (every call refused by that bar)
    reading = Executor._price_fees(out, [word(10**12), word(3 * 10**12), word(9 * 10**18),
                                         word(0), word(2_000)], None)
    assert reading.fees == [10**12, 3 * 10**12, 9 * 10**18]
    assert reading.operator == l1_fee.OperatorFee(0, 2_000)
    ex._learn_fees(reading, [500_000] * 3, 40)
    # (the median: the one huge call does not set everyone's bar)
    assert ex._fee_estimate_wei == (3 * 10**12 + 1_000) * 5 // 4 and ex._fee_read_at == 40
    # An operator fee unread teaches nothing.
    ex._learn_fees(reading._replace(operator=None), [500_000] * 3, 41)
    assert ex._fee_read_at == 40


def test_the_bar_is_encoded_with_what_was_learnt() -> None:
    ex = fee_executor()
    ex.fees = SimpleNamespace(fees_for=lambda base: (2 * base, 1))
    ex.config = SimpleNamespace(min_profit_usd=5.0)
    ex._fee_estimate_wei = 7 * 10**15
    quote = ex._gas_quote(10**9, 2_000.0)
    assert quote == GasQuote(2 * 10**9, 2_000.0, 5.0, 7 * 10**15)
    assert ex._bar_fee_wei == 7 * 10**15


def test_a_fee_hold_is_a_run_of_unread_blocks_not_two_failures_far_apart() -> None:
    from keeperd.execution.executor import FEE_UNREAD_HOLD_BLOCKS as HOLD

    ex = fee_executor()
    ex._fee_unread = (100, 100)  # one failed read at block 100, then nothing to liquidate
    assert ex.fee_hold(300) is None
    # Unread at every wave from block 100 to 100 + HOLD: held, and said since when.
    ex._fee_unread = (100, 100 + HOLD)
    assert "since block 100" in ex.fee_hold(100 + HOLD)
    # ...but not once a read answered since, nor long after the last failure.
    ex._fee_read_at = 102
    assert ex.fee_hold(100 + HOLD) is None
    ex._fee_read_at = -1
    assert ex.fee_hold(100 + 3 * HOLD) is None


def test_an_included_row_keeps_the_fee_as_priced_and_as_paid() -> None:
    from keeperd.execution import journal as J
    from keeperd.execution.executor import _fee_detail

    entry = J.JournalEntry("k", "aave", "0xa", "WETH", "USDC", 1, 10.0, 1, 5, J.PENDING, 3,
                           None, "gas_limit=500000 fee_beside_gas_wei=1250 eMode 1")
    receipt = {"l1Fee": hex(1_000)}
    outcome = Outcome("k", "included", "0x1", 1, 1, receipt)
    assert _fee_detail(entry, outcome) == " fee_beside_gas_wei=1250 l1_fee_paid_wei=1000"
    assert _fee_detail(None, Outcome("k", "included", "0x1", 1, 1, {})) == ""
