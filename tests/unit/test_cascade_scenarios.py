"""The cascade monitor's scenarios as they are named and built: a perp book's cash (USD, the
unit of account) is never in the joint move, and the alert says what each scenario moves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from keeperd.cascade_monitor import columns_for, scenario_text
from keeperd.config import CascadeConfig
from keeperd.risk.cascade import Asset


def test_a_perp_books_cash_is_not_in_the_joint_move() -> None:
    """(Curie's USD column fell with ETH and BTC in the joint scenario: everything, the unit
    of account with it, moving together moved nothing against it, and the scenario showed no
    liquidation at any shock.)"""
    assets = [Asset(s, "0x" + "00" * 20, 18, 1.0, 0.05, numeraire=s == "USD")
              for s in ("ETH", "BTC", "USD")]
    cols = columns_for(assets, CascadeConfig(shocks=[0.2]))
    joint = list(cols.scenario).index("joint")
    assert cols.multiplier[joint].tolist() == pytest.approx([0.8, 0.8, 1.0])
    usd = list(cols.scenario).index("USD")  # (its own scenario stays: the shorts' squeeze)
    assert cols.multiplier[usd].tolist() == pytest.approx([1.0, 1.0, 0.8])
    assert np.all(cols.shock == 0.2)


@pytest.mark.parametrize(("scenario", "says"), [
    ("WETH", "a 20% drop of WETH"),
    ("joint", "a 20% drop of every non-stable asset at once"),
    ("USD", "a 20% fall of USD against every other asset (each up 25%: shorts squeezed)"),
])
def test_the_alert_says_what_a_scenario_moves(scenario: str, says: str) -> None:
    assert scenario_text(scenario, 0.2, numeraire=scenario == "USD") == says


def test_bad_debt_realised_is_each_parts_increase_priced_when_it_happened() -> None:
    """A deficit already there re-priced by a rebound is no new bad debt (the gauge's
    difference over 30 minutes called a 6 % rebound of $820k "grew by $50k", a review); an
    increase of a part in its own unit is, at its price then. The first reading is a start's,
    not news; an unknown one is NaN and compared with the next known."""
    import math

    from keeperd.cascade_monitor import CascadeMonitor
    from keeperd.metrics import Metrics
    from keeperd.protocols.sdk.views import BookRisk
    from tests.conftest import metric_value

    monitor = CascadeMonitor.__new__(CascadeMonitor)
    monitor.metrics, monitor.chain, monitor.protocol = Metrics(), "devnet", "aave"
    monitor._bad_debt_seen, monitor._bad_debt_file = None, None
    monitor._bad_debt_saved_at = 0.0
    labels = {"chain": "devnet", "protocol": "aave"}

    def reading(weth: float, price: float, usdc: float = 0.0) -> BookRisk:
        parts = {"WETH": (weth, price), **({"USDC": (usdc, 1.0)} if usdc else {})}
        return BookRisk(None, [], outstanding_bad_debt_usd=weth * price + usdc,
                        bad_debt_parts=parts)

    monitor._publish_bad_debt(reading(100.0, 2_000.0))  # (at start: recorded, not news)
    assert metric_value(monitor.metrics, "keeperd_bad_debt_realised_usd_total", labels) == 0
    monitor._publish_bad_debt(reading(100.0, 2_200.0))  # (a rebound: re-priced only)
    assert metric_value(monitor.metrics, "keeperd_bad_debt_realised_usd_total", labels) == 0
    assert metric_value(monitor.metrics, "keeperd_bad_debt_outstanding_usd", labels) == 220_000
    monitor._publish_bad_debt(BookRisk(None, []))  # (nothing known: nothing published)
    monitor._publish_bad_debt(BookRisk(None, [], outstanding_bad_debt_usd=None,
                                       bad_debt_parts=None))
    monitor._publish_bad_debt(reading(130.0, 2_000.0, usdc=5_000.0))  # (a crash's)
    assert metric_value(monitor.metrics, "keeperd_bad_debt_realised_usd_total", labels) == \
        30 * 2_000.0 + 5_000.0
    monitor._publish_bad_debt(reading(90.0, 2_000.0))  # (covered in part: no news)
    assert metric_value(monitor.metrics, "keeperd_bad_debt_realised_usd_total", labels) == \
        65_000.0
    # A read that failed (Aave: getReserveDeficit on a fork without it): unknown, not $0.
    monitor._publish_bad_debt(BookRisk(None, ["unknown"], outstanding_bad_debt_usd=math.nan))
    assert math.isnan(metric_value(monitor.metrics, "keeperd_bad_debt_outstanding_usd",
                                   labels))
    monitor._publish_bad_debt(reading(95.0, 2_000.0))  # (known again: compared with 90)
    assert metric_value(monitor.metrics, "keeperd_bad_debt_realised_usd_total", labels) == \
        75_000.0


def test_bad_debt_realised_across_a_restart_is_counted(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A crash during which keeperd restarted realised $28k the counter never saw: the
    first evaluation after the start only recorded (a trial). The parts seen are kept in the
    state directory; a start within the hour compares with them, a later one records."""
    import time

    from keeperd import cascade_monitor as cm
    from keeperd.config import CascadeConfig
    from keeperd.metrics import Metrics
    from keeperd.protocols.sdk.views import BookRisk
    from tests.conftest import metric_value

    labels = {"chain": "devnet", "protocol": "aave"}

    def monitor() -> cm.CascadeMonitor:
        return cm.CascadeMonitor(CascadeConfig(), "devnet", "aave", None, Metrics(),  # type: ignore[arg-type]
                                 state_dir=tmp_path)

    def reading(weth: float) -> BookRisk:
        return BookRisk(None, [], outstanding_bad_debt_usd=weth * 2_000.0,
                        bad_debt_parts={"WETH": (weth, 2_000.0)})

    first = monitor()
    first._publish_bad_debt(reading(100.0))  # (a fresh start: recorded)
    restarted = monitor()  # (killed; the crash goes on meanwhile)
    restarted._publish_bad_debt(reading(114.0))
    assert metric_value(restarted.metrics, "keeperd_bad_debt_realised_usd_total",
                        labels) == 14 * 2_000.0
    later = time.time() + cm.BAD_DEBT_SEEN_FOR_S + 1
    monkeypatch.setattr(cm.time, "time", lambda: later)
    long_after = monitor()  # (a start an hour on: its growth since is not news)
    long_after._publish_bad_debt(reading(150.0))
    assert metric_value(long_after.metrics, "keeperd_bad_debt_realised_usd_total",
                        labels) == 0


def test_bad_debt_parts_that_stood_still_for_hours_are_compared_after_a_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parts kept across a restart carry the time of the last evaluation, not of their
    last change: parts unchanged for two hours were ignored at a start (older than the hour
    a restart's comparison allows), and a crash's bad debt realised during the kill went
    uncounted."""
    from keeperd import cascade_monitor
    from keeperd.cascade_monitor import CascadeMonitor
    from keeperd.metrics import Metrics
    from keeperd.protocols.sdk.views import BookRisk
    from tests.conftest import metric_value

    clock = [1_000_000.0]
    monkeypatch.setattr(cascade_monitor.time, "time", lambda: clock[0])

    def monitor() -> CascadeMonitor:
        m = CascadeMonitor.__new__(CascadeMonitor)
        m.metrics, m.chain, m.protocol = Metrics(), "devnet", "aave"
        m._bad_debt_file = tmp_path / "bad-debt-seen-devnet-aave.json"
        m._bad_debt_seen, m._bad_debt_saved_at = m._load_bad_debt_seen(), 0.0
        return m

    def reading(weth: float) -> BookRisk:
        return BookRisk(None, [], outstanding_bad_debt_usd=weth * 2_000.0,
                        bad_debt_parts={"WETH": (weth, 2_000.0)})

    first = monitor()
    first._publish_bad_debt(reading(100.0))
    for _ in range(24):  # two hours of evaluations, the parts unchanged
        clock[0] += 300
        first._publish_bad_debt(reading(100.0))
    clock[0] += 120  # killed; the crash realises 30 WETH more while it is down
    second = monitor()
    second._publish_bad_debt(reading(130.0))
    assert metric_value(second.metrics, "keeperd_bad_debt_realised_usd_total",
                        {"chain": "devnet", "protocol": "aave"}) == 30 * 2_000.0
