"""What can be wrong with a Chainlink-style feed, decided from plain values (pure).

Checked: the answer's age against the feed's heartbeat, non-positive answers, incomplete
rounds (no timestamp), answers pinned at the aggregator's minAnswer/maxAnswer (the Venus/LUNA
failure: the feed keeps reporting its floor while the market trades far below), a jump between
consecutive rounds larger than `max_jump`, and a change of the source the protocol reads.
`answeredInRound` is deprecated and not relied on.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FeedReading:
    asset: str  # token symbol
    source: str  # the aggregator (or proxy) the protocol's oracle reads
    round_id: int
    answer: int
    updated_at: int  # unix seconds
    decimals: int
    min_answer: int | None = None
    max_answer: int | None = None
    # Where `updated_at` comes from: "round" (the source's own latestRoundData), "wrapped"
    # (an adapter answering latestAnswer only, timed by the oldest aggregator it wraps), or
    # "unknown" (no aggregator found behind it: the age cannot be judged).
    freshness: str = "round"
    # The aggregators `updated_at` comes from, each with its latest round and that round's
    # time (their heartbeats: oracles/heartbeats.py): the source itself, or the aggregators
    # an adapter wraps (each judged by its own heartbeat: FeedPolicy.ages).
    timed_by: tuple[tuple[str, int, int], ...] = ()

    @property
    def price(self) -> float:
        return self.answer / 10**self.decimals


@dataclass(frozen=True)
class FeedPolicy:
    heartbeat_s: int = 3_600
    max_jump: float = 0.25  # relative change between consecutive readings
    bound_margin: float = 0.005  # "pinned" within this fraction of min/max answer
    # The age each of the reading's `timed_by` may reach (its own heartbeat); empty: the
    # reading's `updated_at` against `heartbeat_s`
    ages: tuple[float, ...] = ()


# What pauses liquidations: a price that is old or nonsense. A large jump or a new source is
# reported (it may be a real crash, or a migration) but is no reason on its own to stop
# liquidating; a deviation from independent references is what confirms a bad price.
TRIPPING = frozenset({"stale", "non_positive", "incomplete", "bound_pinned", "deviation",
                      "sequencer_down", "sequencer_grace", "pyth_non_positive", "pyth_stale",
                      "pyth_confidence", "disagreement"})


@dataclass(frozen=True)
class Problem:
    kind: str  # stale | non_positive | incomplete | bound_pinned | deviation | jump |
    #            source_changed | freshness_unknown (reported, not tripping) | disagreement
    #            (two endpoints' readings of one block)
    detail: str

    @property
    def trips(self) -> bool:
        return self.kind in TRIPPING


@dataclass(frozen=True)
class PythPrice:
    asset: str
    price: int
    conf: int
    expo: int
    publish_time: int


def check_pyth(p: PythPrice, now: int, max_age_s: int, max_conf_ratio: float) -> list[Problem]:
    """Pyth answers a price with a confidence interval: too old, or too wide relative to the
    price (the publishers disagree), and it must not be acted on."""
    problems: list[Problem] = []
    if p.price <= 0:
        problems.append(Problem("pyth_non_positive", f"price {p.price}"))
        return problems
    if now - p.publish_time > max_age_s:
        problems.append(Problem("pyth_stale", f"published {now - p.publish_time} s ago, "
                                              f"max {max_age_s} s"))
    ratio = p.conf / p.price
    if ratio > max_conf_ratio:
        problems.append(Problem("pyth_confidence", f"confidence {ratio:.2%} of the price, "
                                                   f"max {max_conf_ratio:.2%}"))
    return problems


def check_sequencer(answer: int, started_at: int, now: int, grace_s: int) -> Problem | None:
    """Chainlink's L2 sequencer uptime feed: 1 means down; after it comes back (0), prices are
    not trusted until the grace period since the status change has passed."""
    if answer != 0:
        return Problem("sequencer_down", "the L2 sequencer is down")
    if now - started_at < grace_s:
        return Problem("sequencer_grace", f"sequencer back up {now - started_at} s ago, grace "
                                          f"period {grace_s} s")
    return None


def check_feed(reading: FeedReading, now: int, policy: FeedPolicy,
               previous: FeedReading | None = None) -> list[Problem]:
    problems: list[Problem] = []
    if reading.freshness == "unknown":
        problems.append(Problem("freshness_unknown", "the source answers latestAnswer() only "
                                "and no aggregator was found behind it: its age is unknown"))
    elif reading.updated_at == 0:
        problems.append(Problem("incomplete", "the latest round has no timestamp"))
    elif policy.ages and len(policy.ages) == len(reading.timed_by):
        # each aggregator against its own heartbeat (an adapter over a day-heartbeat feed
        # and an hour-heartbeat one is stale when either is)
        for (address, _, updated_at), allowed in zip(reading.timed_by, policy.ages,
                                                      strict=True):
            age = now - updated_at
            if age > allowed:
                problems.append(Problem("stale", f"last update {age} s ago, heartbeat "
                                                 f"{allowed:.0f} s ({address})"))
                break
    else:
        age = now - reading.updated_at
        if age > policy.heartbeat_s:
            problems.append(Problem("stale", f"last update {age} s ago, heartbeat "
                                             f"{policy.heartbeat_s} s"))
    if reading.answer <= 0:
        problems.append(Problem("non_positive", f"answer {reading.answer}"))
    for bound, name in ((reading.min_answer, "minAnswer"), (reading.max_answer, "maxAnswer")):
        if bound is None or bound <= 0 or reading.answer <= 0:
            continue
        if abs(reading.answer - bound) <= policy.bound_margin * bound:
            problems.append(Problem("bound_pinned", f"answer {reading.answer} sits at the "
                                                    f"aggregator's {name} {bound}"))
    if previous is not None:
        if previous.source != reading.source:  # (see also `source_replaced`)
            problems.append(Problem("source_changed", f"{previous.source} -> {reading.source}"))
        elif previous.answer > 0 and reading.round_id != previous.round_id:
            jump = abs(reading.answer - previous.answer) / previous.answer
            if jump > policy.max_jump:
                problems.append(Problem("jump", f"{jump:.1%} since the previous round"))
    return problems


def source_replaced(reading: FeedReading, before: FeedReading, policy: FeedPolicy
                    ) -> list[Problem]:
    """A protocol's source for an asset replaced (governance's `setAssetSources`): said, with
    how far the new source's price is from the old one's last (a jump past `max_jump` too).
    The watch keeps readings by (asset, source), so a new source had no previous reading and
    neither check could fire: WETH's source swapped to a feed 29 % away went untold, and 56
    liquidations followed at its price (a by-hand trial)."""
    problems = [Problem("source_changed", f"{before.source} -> {reading.source}")]
    if before.price > 0 and reading.price > 0:
        jump = abs(reading.price - before.price) / before.price
        if jump > policy.max_jump:
            problems.append(Problem("jump", f"{jump:.1%} from the replaced source's last "
                                            f"price ({before.price:g} -> {reading.price:g})"))
    return problems
