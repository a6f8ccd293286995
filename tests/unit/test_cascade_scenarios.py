"""The cascade monitor's scenarios as they are named and built: a perp book's cash (USD, the
unit of account) is never in the joint move, and the alert says what each scenario moves."""

from __future__ import annotations

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
