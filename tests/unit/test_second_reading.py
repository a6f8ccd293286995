"""The watched rows' second reading (`alerts/sources.py::second_reading`): a first endpoint
lying about one account's collateral hid its fall under water from its holder, and the pool's
cross-check, asked of the same endpoint, agreed (a by-hand trial). Another endpoint's health
at the same block, when lower, is what is alerted on."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import structlog

from keeperd.alerts.sources import second_reading
from keeperd.metrics import Metrics
from keeperd.protocols.sdk.messages import ScanResult
from keeperd.protocols.sdk.views import HealthView
from tests.conftest import metric_value

ALICE, BOB, CAROL = ("0x" + c * 40 for c in "abc")


def result(health: list[float]) -> Any:
    n = len(health)
    view = HealthView(accounts=[ALICE, BOB, CAROL][:n], health=np.array(health),
                      collateral_usd=np.full(n, 1.0), debt_usd=np.full(n, 1.0),
                      liquidation_threshold=np.full(n, 0.8), main_collateral=["WETH"] * n,
                      drop_to_liquidation=np.full(n, 0.1))
    return ScanResult("aave", 7, "full", "book", view, np.array([], dtype=int), 0.0, 0.0)


class Plugin:
    name, chain = "aave", "devnet"

    def __init__(self, answer: dict[str, float] | Exception | None) -> None:
        self.answer, self.asked = answer, []

    async def health_elsewhere(self, book: Any, accounts: list[str], endpoint: Any
                               ) -> dict[str, float] | None:
        self.asked.append(list(accounts))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def engine(*watched: str) -> Any:
    return SimpleNamespace(watched_accounts=lambda: list(watched))


SECOND = SimpleNamespace(safe_url="https://second.example")


async def test_a_lower_health_elsewhere_is_alerted_on_and_counted() -> None:
    metrics = Metrics()
    pool = SimpleNamespace(second=lambda: SECOND)
    plugin = Plugin({ALICE: 0.97, BOB: 1.5000000001})  # (BOB: rounding, not a dispute)
    with structlog.testing.capture_logs() as logs:
        seen = await second_reading(engine(ALICE, BOB), plugin, pool,
                                    result([1.20, 1.5, 0.9]), metrics)
    assert plugin.asked == [[ALICE, BOB]]  # (only the watched rows; CAROL is not)
    assert list(seen.view.health) == [0.97, 1.5, 0.9]
    [told] = [e for e in logs if e["event"] == "positions.health_disputed"]
    assert told["accounts"] == [{"account": ALICE, "first": 1.2, "second": 0.97}]
    assert metric_value(metrics, "keeperd_health_mismatch_total",
                        {"chain": "devnet", "protocol": "aave"}) == 1


async def test_a_higher_health_elsewhere_or_no_answer_leaves_the_first_reading() -> None:
    """The lower one is alerted on: a second endpoint saying "healthier" silences nothing,
    and one that fails or is not there leaves the first endpoint's reading as it was."""
    metrics = Metrics()
    first = result([0.95, 1.5])
    for pool, plugin in ((SimpleNamespace(second=lambda: SECOND), Plugin({ALICE: 3.0})),
                         (SimpleNamespace(second=lambda: SECOND), Plugin(TimeoutError())),
                         (SimpleNamespace(second=lambda: SECOND), Plugin(None)),
                         (SimpleNamespace(second=lambda: None), Plugin({ALICE: 0.1}))):
        assert await second_reading(engine(ALICE), plugin, pool, first, metrics) is first
    # An account with no debt at the first (inf) and some elsewhere: the lower stands.
    seen = await second_reading(engine(ALICE), Plugin({ALICE: 0.8}),
                                SimpleNamespace(second=lambda: SECOND),
                                result([math.inf]), metrics)
    assert list(seen.view.health) == [0.8]


async def test_a_lasting_dispute_is_logged_once_and_counted_every_block() -> None:
    metrics, told = Metrics(), set()
    pool = SimpleNamespace(second=lambda: SECOND)
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            await second_reading(engine(ALICE), Plugin({ALICE: 0.9}), pool,
                                 result([1.2, 1.5]), metrics, told)
        await second_reading(engine(ALICE), Plugin({ALICE: 1.2}), pool,
                             result([1.2, 1.5]), metrics, told)
    assert [e["event"] for e in logs] == ["positions.health_disputed",
                                          "positions.health_dispute_ended"]
    assert metric_value(metrics, "keeperd_health_mismatch_total",
                        {"chain": "devnet", "protocol": "aave"}) == 3


async def test_a_position_read_again_is_matched_by_its_market() -> None:
    """Morpho's rows are (account, market): a lower health read for one market lowers that
    row only, not the account's other market."""
    from dataclasses import replace

    from keeperd.protocols.sdk.views import row_key

    first = result([1.2, 1.5])
    first = replace(first, view=replace(first.view, accounts=[ALICE, ALICE],
                                        labels=[{"market": "WETH/USDC"},
                                                {"market": "WBTC/DAI"}]))
    plugin = Plugin({row_key(ALICE, {"market": "WETH/USDC"}): 0.9,
                     row_key(ALICE, {"market": "WBTC/DAI"}): 1.5})
    seen = await second_reading(engine(ALICE), plugin, SimpleNamespace(second=lambda: SECOND),
                                first, Metrics())
    assert seen.view.health.tolist() == [0.9, 1.5]
