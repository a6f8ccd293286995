"""Liquidations under verification (rules keeperd does not know for sure): the chain's own
answers decide, in one `eth_simulateV1` block — the pool's health, the liquidation succeeding,
and its outcome priced from the simulated LiquidationCall, never from keeperd's plan."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

from eth_abi import encode

from keeperd.chain.rpc import RpcError
from keeperd.execution.executor import Executor, Simulated, VerificationRefused
from keeperd.protocols.aave_v3 import abi
from keeperd.protocols.aave_v3.liquidator import AaveLiquidator
from keeperd.protocols.sdk.contract import Call
from tests.unit.test_aave_revisions import market, plan, positions, usd

POOL = "0x00000000000000000000000000000000000000aa"
USER = "0x00000000000000000000000000000000000000cc"
WAD = 10**18


def liquidator() -> AaveLiquidator:
    adapter = SimpleNamespace(
        reader=SimpleNamespace(addresses=SimpleNamespace(pool=POOL)), pool=None,
        verification_for=lambda m: "POOL_REVISION 10 on code not recognised")
    return AaveLiquidator(adapter, SimpleNamespace(flash_liquidator=None), None, None)  # type: ignore[arg-type]


def account_data(health: int) -> str:
    return "0x" + encode(["uint256"] * 6, [1, 1, 0, 8000, 7500, health]).hex()


def liquidation_log(user: str, collateral: str, debt: str, repaid: int, seized: int,
                    address: str = POOL) -> dict:  # type: ignore[type-arg]
    def topic(a: str) -> str:
        return "0x" + a[2:].lower().rjust(64, "0")
    data = encode(["uint256", "uint256", "address", "bool"],
                  [repaid, seized, "0x" + "99" * 20, False])
    return {"address": address, "topics": [abi.LIQUIDATION_CALL, topic(collateral),
                                           topic(debt), topic(user)],
            "data": "0x" + data.hex()}


def case():  # type: ignore[no-untyped-def]
    m = market(10)
    m = replace(m, reserves=tuple(replace(r, asset=f"0x{r.id + 1:040x}") for r in m.reserves))
    pos = positions({0: usd(m, 0, 10_000)}, {1: usd(m, 1, 9_000)})
    p = plan(m, pos)
    assert p is not None
    p = replace(p, account=USER)
    opp = SimpleNamespace(plan=p, gas_limit=600_000)
    verification = liquidator()._verification(opp, m, "why")  # type: ignore[arg-type]
    call = Call(opp, POOL, b"", verification=verification)  # type: ignore[arg-type]
    return m, p, call


def answer(health: int, status: str = "0x1", logs: list | None = None) -> list:  # type: ignore[type-arg]
    return [{"calls": [{"status": "0x1", "returnData": account_data(health), "logs": []},
                       {"status": status, "returnData": "0x", "logs": logs or []}]}]


def test_a_send_needs_the_pools_own_health_below_one_and_an_outcome_priced_from_its_event(
        ) -> None:
    _, p, call = case()
    event = liquidation_log(USER, p.collateral_asset, p.debt_asset, 4_000 * 10**6,
                            2 * 10**18)  # $4,000 repaid, 2 WETH ($4,000) seized: no profit
    sim = Executor._verdict(call, answer(WAD - 1, logs=[event]))
    assert isinstance(sim, Simulated) and sim.verdict is not None
    # The outcome is what the simulation did, not the plan's amounts.
    assert sim.verdict.repaid_usd == 4_000 and sim.verdict.seized_usd == 4_000
    assert sim.verdict.gross_profit_usd == 0 != p.gross_profit_usd


def test_the_chain_saying_no_refuses_the_send() -> None:
    _, p, call = case()
    event = liquidation_log(USER, p.collateral_asset, p.debt_asset, 1, 1)
    healthy = Executor._verdict(call, answer(WAD, logs=[event]))
    assert isinstance(healthy, VerificationRefused) and "health factor is 1.0" in str(healthy)
    silent = Executor._verdict(call, answer(WAD - 1, logs=[]))
    assert isinstance(silent, VerificationRefused) and "0 LiquidationCall" in str(silent)
    elsewhere = liquidation_log(USER, p.collateral_asset, p.debt_asset, 1, 1,
                                address="0x" + "bb" * 20)  # not the pool's event
    assert isinstance(Executor._verdict(call, answer(WAD - 1, logs=[elsewhere])),
                      VerificationRefused)
    reverted = Executor._verdict(call, answer(WAD - 1, status="0x0"))
    assert isinstance(reverted, RpcError)
    assert isinstance(Executor._verdict(call, {"unexpected": True}), RpcError)
