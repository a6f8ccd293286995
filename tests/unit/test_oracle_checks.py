from __future__ import annotations

from pathlib import Path

import pytest

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


def test_sequencer_down_and_grace_period() -> None:
    from keeperd.oracles.checks import check_sequencer

    assert check_sequencer(0, NOW - 7200, NOW, 3600) is None
    down = check_sequencer(1, NOW - 10, NOW, 3600)
    assert down is not None and down.kind == "sequencer_down" and down.trips
    grace = check_sequencer(0, NOW - 60, NOW, 3600)
    assert grace is not None and grace.kind == "sequencer_grace" and grace.trips


def test_the_sequencer_is_judged_by_the_least_favourable_endpoints_word() -> None:
    """A first endpoint saying "up, for a day" hid a sequencer down on the second, or back up
    within its grace period: "down" or no answer from either holds, and the grace period runs
    from the later `startedAt`."""
    from keeperd.chain.multicall import Multicall
    from keeperd.oracles.sequencer import SequencerCheck, SequencerWord

    check = SequencerCheck(Multicall(None, address="0x" + "11" * 20),  # type: ignore[arg-type]
                           "0x" + "22" * 20, 600)
    first = SequencerWord("", 0, NOW - 86_400)
    assert check.judge([first], NOW) is None
    down = check.judge([first, SequencerWord("second endpoint: ", 1, NOW - 10)], NOW)
    assert down is not None and down.kind == "sequencer_down"
    assert down.detail.startswith("second endpoint: ")
    mute = check.judge([first, SequencerWord("second endpoint: ", None, None)], NOW)
    assert mute is not None and mute.kind == "sequencer_down"
    back = check.judge([first, SequencerWord("second endpoint: ", 0, NOW - 60)], NOW)
    assert back is not None and back.kind == "sequencer_grace"
    assert check.judge([first, SequencerWord("second endpoint: ", 0, NOW - 700)], NOW) is None


def test_pyth_age_and_confidence() -> None:
    from keeperd.oracles.checks import PythPrice, check_pyth

    fresh = PythPrice("WETH", 3000_00000000, 3_00000000, -8, NOW - 5)
    assert check_pyth(fresh, NOW, 60, 0.01) == []
    wide = PythPrice("WETH", 3000_00000000, 60_00000000, -8, NOW - 5)  # 2 %
    assert [p.kind for p in check_pyth(wide, NOW, 60, 0.01)] == ["pyth_confidence"]
    old = PythPrice("WETH", 3000_00000000, 1, -8, NOW - 61)
    assert [p.kind for p in check_pyth(old, NOW, 60, 0.01)] == ["pyth_stale"]
    assert all(p.trips for p in check_pyth(wide, NOW, 60, 0.01) + check_pyth(old, NOW, 60, 0.01))


def test_a_heartbeat_is_the_second_longest_gap_of_the_rounds() -> None:
    """Quiet rounds are heartbeat rounds, moves add shorter ones: two quiet gaps among
    many moves teach the heartbeat, one outage among them does not; too few rounds teach
    nothing. A learnt heartbeat no longer than the default leaves the default."""
    from keeperd.oracles.heartbeats import MAX_LEARNED_S, allowed_age, heartbeat_of, rounds_back

    day = 86_400
    assert heartbeat_of([k * day for k in range(8)]) == day
    assert heartbeat_of([0, 600, 1200, 3600 * 30, 3600 * 30 + 600, 3600 * 30 + 1200]) == 600
    moving_day_feed = [0, day, 2 * day, *(2 * day + 300 * k for k in range(1, 13))]
    assert heartbeat_of(moving_day_feed) == day  # (the median was 300 s)
    assert heartbeat_of([0, 3600, 7200]) is None  # two gaps
    assert allowed_age(3600, None) == 3600
    assert allowed_age(3600, 600) == 3600 and allowed_age(3600, 3600) == 3600
    assert allowed_age(3600, day) == pytest.approx(day * 1.1 + 120)
    assert allowed_age(3600, 30 * day) == MAX_LEARNED_S  # a feed stopped for a month: capped
    # A proxy's rounds: back within its phase only (a new phase has few).
    phase = 1 << 64
    assert rounds_back(5 * phase + 3) == [5 * phase + 3, 5 * phase + 2, 5 * phase + 1]
    assert len(rounds_back(40)) == 16 and rounds_back(40)[-1] == 25


def test_an_adapters_aggregators_are_each_judged_by_their_own_heartbeat() -> None:
    """WBTC = WBTC/BTC (a day) x BTC/USD (an hour): judged by the longer, a BTC/USD stopped
    20 h read fresh. Each is judged by its own."""
    now = 1_000_000
    reading = FeedReading("WBTC", "0xadapter", 1, 60_000 * 10**8, now - 20 * 3600, 8,
                          freshness="wrapped",
                          timed_by=(("0xwbtcbtc", 7, now - 20 * 3600),
                                    ("0xbtcusd", 9, now - 20 * 3600)))
    ages = (86_400 * 1.1 + 120, 3600.0)
    [stale] = [p for p in check_feed(reading, now, FeedPolicy(ages=ages)) if p.kind == "stale"]
    assert "0xbtcusd" in stale.detail
    fresh = FeedReading("WBTC", "0xadapter", 1, 60_000 * 10**8, now - 20 * 3600, 8,
                        freshness="wrapped", timed_by=(("0xwbtcbtc", 7, now - 20 * 3600),
                                                       ("0xbtcusd", 9, now - 600)))
    assert not [p for p in check_feed(fresh, now, FeedPolicy(ages=ages)) if p.kind == "stale"]


def test_rounds_that_did_not_read_are_asked_again_in_a_minute(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Not at every block (a round trip each on a failing endpoint), not after six hours (a
    day-heartbeat feed judged against the default hour meanwhile)."""
    from keeperd.oracles import heartbeats as hb

    now = [1000.0]
    monkeypatch.setattr(hb.time, "monotonic", lambda: now[0])
    book = hb.Heartbeats(None)  # type: ignore[arg-type]
    sources = [("0xFeed", 5)]
    book.unread(sources)
    assert book.unknown(sources) == [] and book.due(sources) == []
    now[0] += hb.RETRY_S + 1
    assert book.due(sources) == sources and book.of("0xFeed") is None


async def test_two_endpoints_are_asked_and_the_shorter_heartbeat_kept() -> None:
    """A longer heartbeat relaxes the staleness check: one endpoint's answer alone must not
    set it (a lie could let a stopped feed be believed for two days). Two are asked, the
    shorter kept; one answering alone is believed only until both are asked again."""
    from eth_abi import encode

    from keeperd.oracles import heartbeats as hb

    def rounds(gap: int) -> str:
        # getRoundData(40 - i) for i in 0..15, newest first, `gap` apart
        results = [(True, encode(["uint80", "int256", "uint256", "uint256", "uint80"],
                                 [40 - i, 1, 0, 10**8 - i * gap, 40 - i])) for i in range(16)]
        return "0x" + encode(["(bool,bytes)[]"], [results]).hex()

    class Pool:
        voters = ["honest", "liar"]
        down: set[str] = set()

        async def call_endpoint(self, ep: str, method: str, params: list) -> str:
            if ep in self.down:
                raise ConnectionError(ep)
            return rounds(3600 if ep == "honest" else 2 * 86_400)

    class FakeMulticall:
        pool = Pool()
        address = "0x" + "ca" * 20

    FEED, OTHER = "0x" + "fe" * 20, "0x" + "0e" * 20
    book = hb.Heartbeats(FakeMulticall())  # type: ignore[arg-type]
    await book.learn([(FEED, 40)], 100)
    assert book.of(FEED) == 3600 and book.due([(FEED, 40)]) == []
    FakeMulticall.pool.down = {"honest"}
    await book.learn([(OTHER, 40)], 100)
    assert book.of(OTHER) == 2 * 86_400  # (the one answer, for now)
    assert book.due([(OTHER, 40)]) == []  # ...asked again within RETRY_S


def test_doubted_sources_kept_across_a_restart_are_read_only_when_sound(
        tmp_path: Path) -> None:
    """The doubted price sources a run kept (`oracle-doubted-<chain>.json`) are read back at
    start; a file that does not read, or that names a replaced price of zero (the trust test
    divides by it), is said and read as none — never a watch that fails every block."""
    import json

    import structlog

    from keeperd.oracles.watch import ChainPriceWatch

    def loaded(content: object) -> tuple[dict[tuple[str, str], tuple[str, float]], list[str]]:
        watch = ChainPriceWatch.__new__(ChainPriceWatch)
        watch.chain = "devnet"
        watch.doubted_file = tmp_path / "oracle-doubted-devnet.json"
        watch.doubted_file.write_text(content if isinstance(content, str)
                                      else json.dumps(content))
        with structlog.testing.capture_logs() as logs:
            doubted = watch._load_doubted()
        return doubted, [e["event"] for e in logs]

    entry = {"key": "WETH", "source": "0xNew", "said": "0xOld -> 0xNew at block 9, 30.0%",
             "replaced": 2500.0}
    assert loaded([entry]) == ({("WETH", "0xNew"): (entry["said"], 2500.0)},
                               ["oracle.source_doubted"])
    for bad in ([{**entry, "replaced": 0}], [{**entry, "replaced": "nan"}], "{not json",
                [{"key": "WETH"}], {"WETH": 1}):
        assert loaded(bad) == ({}, ["oracle.doubted_unread"]), bad


def test_a_doubt_is_dropped_once_every_protocol_declared_and_none_reads_its_source(
        tmp_path: Path) -> None:
    """A doubted source no protocol reads any more (replaced again while keeperd was down, a
    protocol removed from the config) is dropped — but only once every protocol of the chain
    has declared its feeds: one slow to scan at a start must not lose its doubts."""
    import json

    from keeperd.oracles.watch import ChainPriceWatch
    from keeperd.protocols.sdk.feeds import PriceFeed

    watch = ChainPriceWatch.__new__(ChainPriceWatch)
    watch.chain = "devnet"
    watch.doubted_file = tmp_path / "oracle-doubted-devnet.json"
    watch._unproven = {("WETH", "0xGone"): ("0xOld -> 0xGone", 2500.0),
                       ("WBTC", "0xRead"): ("0xOld -> 0xRead", 60000.0)}
    watch._expected = {"aave", "morpho"}
    watch._declared = {"aave": [PriceFeed("WETH", "0xNewer"), PriceFeed("WBTC", "0xRead")]}
    watch._forget_undeclared()  # (morpho has not declared yet)
    assert set(watch._unproven) == {("WETH", "0xGone"), ("WBTC", "0xRead")}
    watch._declared["morpho"] = []
    watch._forget_undeclared()
    assert set(watch._unproven) == {("WBTC", "0xRead")}
    assert [d["source"] for d in json.loads(watch.doubted_file.read_text())] == ["0xRead"]
