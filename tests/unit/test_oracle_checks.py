from __future__ import annotations

import sqlite3

from keeperd.oracles.breaker import Breaker
from keeperd.oracles.checks import FeedPolicy, FeedReading, check_feed

NOW = 1_700_000_000


def reading(answer: int = 3000_00000000, updated_at: int = NOW - 60, round_id: int = 5,
            source: str = "0xfeed", lo: int | None = 1, hi: int | None = 10**30) -> FeedReading:
    return FeedReading("WETH", source, round_id, answer, updated_at, 8, lo, hi)


def kinds(problems) -> set[str]:
    return {p.kind for p in problems}


def test_a_fresh_sane_feed_has_no_problem() -> None:
    assert check_feed(reading(), NOW, FeedPolicy()) == []


def test_stale_non_positive_incomplete_and_pinned_answers_trip() -> None:
    policy = FeedPolicy(heartbeat_s=3600)
    assert kinds(check_feed(reading(updated_at=NOW - 3601), NOW, policy)) == {"stale"}
    assert kinds(check_feed(reading(answer=0), NOW, policy)) == {"non_positive"}
    assert kinds(check_feed(reading(updated_at=0), NOW, policy)) == {"incomplete"}
    pinned = check_feed(reading(answer=100_000_000, lo=100_000_000), NOW, policy)
    assert kinds(pinned) == {"bound_pinned"} and all(p.trips for p in pinned)


def test_jumps_and_source_changes_are_reported_but_do_not_trip() -> None:
    before = reading(answer=3000_00000000, round_id=5)
    crash = check_feed(reading(answer=2000_00000000, round_id=6), NOW, FeedPolicy(), before)
    assert kinds(crash) == {"jump"} and not any(p.trips for p in crash)
    same_round = check_feed(reading(answer=2000_00000000, round_id=5), NOW, FeedPolicy(), before)
    assert same_round == []
    moved = check_feed(reading(source="0xother"), NOW, FeedPolicy(), before)
    assert kinds(moved) == {"source_changed"}


def test_breaker_trips_and_resets_only_after_staying_clear() -> None:
    breaker = Breaker(sqlite3.connect(":memory:"), clear_after_s=300)
    assert breaker.observe("WETH", ["stale"], now=0).tripped
    assert breaker.tripped() == {"WETH"}
    assert breaker.observe("WETH", [], now=10) is None  # clear since 10
    assert breaker.observe("WETH", ["stale"], now=100) is None  # bad again: the clock restarts
    assert breaker.observe("WETH", [], now=200) is None
    assert breaker.observe("WETH", [], now=400) is None  # 200 s clear, not 300
    reset = breaker.observe("WETH", [], now=500)
    assert reset is not None and not reset.tripped
    assert breaker.tripped() == set()


def test_a_manual_trip_holds_until_an_operator_resets_it(tmp_path) -> None:
    path = tmp_path / "s.sqlite3"
    breaker = Breaker(sqlite3.connect(path, isolation_level=None), clear_after_s=0)
    breaker.trip("WBTC", "manual: maintenance", manual=True, now=0)
    assert breaker.observe("WBTC", [], now=10) is None
    assert breaker.observe("WBTC", [], now=10_000) is None
    # Another process (a restarted daemon) sees the same state.
    again = Breaker(sqlite3.connect(path, isolation_level=None))
    assert again.tripped() == {"WBTC"} and again.states()["WBTC"].manual
    again.reset("WBTC")
    assert breaker.tripped() == set()


def test_sequencer_down_and_grace_period() -> None:
    from keeperd.oracles.checks import check_sequencer

    assert check_sequencer(0, NOW - 7200, NOW, 3600) is None
    down = check_sequencer(1, NOW - 10, NOW, 3600)
    assert down is not None and down.kind == "sequencer_down" and down.trips
    grace = check_sequencer(0, NOW - 60, NOW, 3600)
    assert grace is not None and grace.kind == "sequencer_grace" and grace.trips


def test_pyth_age_and_confidence() -> None:
    from keeperd.oracles.checks import PythPrice, check_pyth

    fresh = PythPrice("WETH", 3000_00000000, 3_00000000, -8, NOW - 5)
    assert check_pyth(fresh, NOW, 60, 0.01) == []
    wide = PythPrice("WETH", 3000_00000000, 60_00000000, -8, NOW - 5)  # 2 %
    assert [p.kind for p in check_pyth(wide, NOW, 60, 0.01)] == ["pyth_confidence"]
    old = PythPrice("WETH", 3000_00000000, 1, -8, NOW - 61)
    assert [p.kind for p in check_pyth(old, NOW, 60, 0.01)] == ["pyth_stale"]
    assert all(p.trips for p in check_pyth(wide, NOW, 60, 0.01) + check_pyth(old, NOW, 60, 0.01))
