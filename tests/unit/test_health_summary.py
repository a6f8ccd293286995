import numpy as np

from keeperd.risk.health import drop_to_liquidation, summarize


def test_buckets_and_exposure_below_levels() -> None:
    health = np.array([0.9, 1.02, 1.07, 1.2, 3.0, np.inf])
    coll = np.array([100.0, 200, 300, 400, 500, 600])
    debt = np.array([10.0, 20, 30, 40, 50, 0])
    s = summarize(health, coll, debt)
    assert s.buckets == {"1": 1, "1.05": 1, "1.1": 1, "1.25": 1, "1.5": 0, "2": 0, "5": 1,
                         "inf": 0}
    assert s.debt_below == {"1": 10.0, "1.05": 30.0, "1.1": 60.0}
    assert s.collateral_below["1.1"] == 600.0
    assert s.with_debt == 5 and s.total_debt == 150.0


def test_drop_to_liquidation_edge_cases() -> None:
    # Already liquidatable → 0; collateral that does not back debt → NaN; plain case.
    d = drop_to_liquidation(np.array([80.0, 0.0, 82.5]), np.array([0.0, 100, 0]),
                            np.array([0.0, 0, 0]), np.array([90.0, 50, 50]))
    assert d[0] == 0.0
    assert np.isnan(d[1])
    assert abs(d[2] - (1 - 50 / 82.5)) < 1e-12
