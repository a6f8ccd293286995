"""The alert engine's rules over a real state database (SQLite): watchlists with hysteresis
and escalation, grouping per sink, silences, inhibition by the oracle breaker, reorg
retraction, restarts.

Scan results are built from plain arrays here (the engine reads health, balances and the
assets each account uses); the devnet tests drive the same engine from real scans."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from keeperd.alerts.delivery import Dispatcher
from keeperd.alerts.engine import AlertEngine
from keeperd.alerts.outbox import DELIVERED, PENDING, RETRACTED, Outbox
from keeperd.chain.blocks import BlockHeader, Reorg
from keeperd.config import AlertsConfig, OutboxConfig
from keeperd.metrics import Metrics
from keeperd.protocols.sdk.views import HealthView
from keeperd.storage.db import SqliteDatabase
from keeperd.storage.migrations import migrate
from tests.conftest import metric_value

ACCOUNTS = [f"0x{i:040X}".replace("0X", "0x") for i in range(1, 5)]
SYMBOLS = ("WETH", "USDC")


def checksum(a: str) -> str:
    from eth_utils import to_checksum_address
    return to_checksum_address(a)


ACCOUNTS = [checksum(a) for a in ACCOUNTS]


def scan(block: int, health: list[float], partial: bool = False) -> Any:
    n = len(health)
    view = HealthView(
        accounts=ACCOUNTS[:n], health=np.array(health, dtype=float),
        collateral_usd=np.full(n, 10_000.0), debt_usd=np.full(n, 8_000.0),
        liquidation_threshold=np.full(n, 0.8), main_collateral=["WETH"] * n,
        drop_to_liquidation=np.full(n, 0.1), assets=[frozenset(SYMBOLS)] * n)
    return SimpleNamespace(protocol="aave", block=block, partial=partial, view=view,
                           book=None)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def alerts_config(**extra: Any) -> AlertsConfig:
    data: dict[str, Any] = {
        "routes": [{"name": "people", "sinks": [
            {"kind": "telegram", "bot_token": "1:abcdefghij", "chat_id": 1},
            {"kind": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "s" * 32}]}],
        "watchlists": [{"name": "alice", "accounts": ACCOUNTS, "warn": 1.2, "critical": 1.05,
                        "route": "people"}],
    }
    data.update(extra)
    return AlertsConfig.model_validate(data)


class Setup:
    """An engine over a real state database (SQLite, migrated as the daemon does)."""

    @classmethod
    async def open(cls, path: Path, config: AlertsConfig | None = None,
                   sources: list[str] | None = None) -> Setup:
        self = cls()
        self.db = SqliteDatabase.open(path)
        await migrate(self.db)
        self.outbox = Outbox(self.db)
        self.metrics = Metrics()
        self.clock = Clock()
        config = config or alerts_config()
        self.dispatcher = Dispatcher(self.outbox, OutboxConfig(), self.metrics)
        self.dispatcher.configure(config.routes)
        self.engine = await AlertEngine.open(self.db, config, self.dispatcher, self.metrics,
                                             clock=self.clock, sources=sources)
        return self

    async def scan(self, block: int, health: list[float],
                   tripped: dict[str, str] | None = None) -> None:
        await self.engine.on_scan(scan(block, health), chain="devnet", tripped=tripped or {})

    async def entries(self, sink: int | None = None) -> list[Any]:
        """The outbox's entries (of route people's `sink`-th sink)."""
        out = list(reversed(await self.outbox.entries(limit=1000)))
        ids = [rt.sink_id for rt in self.dispatcher.route_sinks("people")]
        return [e for e in out if sink is None or e.sink == ids[sink]]


@pytest.fixture
async def setup(tmp_path: Path) -> Setup:
    return await Setup.open(tmp_path / "state.db")


async def test_a_block_crossing_groups_for_people_and_not_for_machines(setup: Setup) -> None:
    await setup.scan(1, [1.5, 1.5, 1.5, 1.5])
    assert (await setup.entries()) == []
    await setup.scan(2, [1.15, 1.1, 1.19, 1.5])  # three cross warn in one block
    [telegram] = await setup.entries(sink=0)
    assert len(telegram.alerts) == 3 and telegram.status == "firing"
    assert [a["details"]["health_factor"] for a in telegram.alerts] == [1.1, 1.15, 1.19]
    webhooks = await setup.entries(sink=1)
    assert len(webhooks) == 3 and all(len(e.alerts) == 1 for e in webhooks)
    assert webhooks[0].block == 2 and webhooks[0].chain == "devnet"
    # Next blocks at similar health: nothing new (not every block).
    for block in range(3, 10):
        await setup.scan(block, [1.16, 1.11, 1.2, 1.5])
    assert len(await setup.entries()) == 4


async def test_escalation_repeat_and_resolution(setup: Setup) -> None:
    await setup.scan(1, [1.15])
    await setup.scan(2, [1.04])  # critical
    await setup.scan(3, [1.03])
    await setup.scan(4, [0.98])  # worse by a step (0.05 from 1.04)
    setup.clock.now += 4 * 3600 + 1
    await setup.scan(5, [0.98])  # still firing after the repeat interval
    await setup.scan(6, [1.3])
    kinds = [(e.alerts[0]["kind"], e.alerts[0]["severity"]) for e in await setup.entries(sink=1)]
    assert kinds == [("firing", "warning"), ("escalated", "critical"),
                     ("escalated", "critical"), ("repeat", "critical"),
                     ("resolved", "critical")]
    resolved = (await setup.entries(sink=1))[-1].alerts[0]
    assert resolved["status"] == "resolved" and "recovered" in resolved["summary"]
    assert resolved["action"] == ""  # (the firing advice is not the resolution's)
    # Under 1.0 the message says it can be liquidated now; above, it does not.
    summaries = [e.alerts[0]["summary"] for e in await setup.entries(sink=1)]
    assert [s.endswith("under 1.0: it can be liquidated now") for s in summaries] == [
        False, False, True, True, False]
    assert metric_value(setup.metrics, "keeperd_alerts_firing",
                        {"rule": "position_health", "severity": "critical"}) == 0


async def test_falling_under_one_is_told_within_a_step(setup: Setup) -> None:
    """1.02 to 0.99 is less than the escalation step (0.05), and it can be liquidated now:
    told (it said nothing: a by-hand trial)."""
    await setup.scan(1, [1.02])
    await setup.scan(2, [0.99])
    await setup.scan(3, [0.985])
    kinds = [(e.alerts[0]["kind"], e.alerts[0]["summary"].endswith("liquidated now"))
             for e in await setup.entries(sink=1)]
    assert kinds == [("firing", False), ("escalated", True)]


async def test_a_resend_carries_what_the_alert_says_now(setup: Setup) -> None:
    """Alertmanager is sent what fires again and again (`firing`): it carried the first
    message's text while the value moved (a trial's "$5.6M of bad debt" at $7.8M). The
    latest reading, not news to the holder (no new message), under the severity told."""
    await setup.scan(1, [1.15])
    await setup.scan(2, [1.13])  # (less than a step: no message)
    assert len(await setup.entries(sink=1)) == 1
    [now] = setup.engine.firing("people")
    assert "1.1300" in now["summary"] and now["severity"] == "warning"
    assert now["details"]["health_factor"] == 1.13 and now["block"] == 2
    first = (await setup.entries(sink=1))[0].alerts[0]
    assert now["starts_at"] == first["starts_at"]
    await setup.scan(3, [1.03])  # critical: told, and that is what fires
    [now] = setup.engine.firing("people")
    assert "1.0300" in now["summary"] and now["kind"] == "escalated"
    await setup.scan(4, [1.02])
    # A replica promoted again reads what the leader told, not its own old readings.
    await setup.engine.state.load()
    [now] = setup.engine.firing("people")
    assert "1.0300" in now["summary"]


def cascade_condition(bad_usd: float, inhibited_by: tuple[str, ...]) -> Any:
    """An operator's threshold condition as the cascade engine raises it."""
    from keeperd.alerts.engine import Condition
    from keeperd.alerts.lifecycle import Levels

    return Condition("cascade_risk", "people", {"chain": "devnet", "protocol": "aave"},
                     "warning", bad_usd, Levels(100.0, 1e9, "above"), 3600.0,
                     summary=f"${bad_usd:,.0f} of bad debt", resolved_summary="back",
                     inhibited_by=inhibited_by)


async def test_a_reading_on_an_untrusted_price_is_not_resent_under_hold(
        tmp_path: Path) -> None:
    """An operator's alert resting on an untrusted price is held under `hold`, its reading
    too; a holder's is not (below)."""
    hold = await Setup.open(tmp_path / "h.db", alerts_config(inhibition="hold"))
    await hold.engine.observe([cascade_condition(150.0, ())], "devnet", 1)
    await hold.engine.observe([cascade_condition(140.0, ("do not act: WETH untrusted",))],
                              "devnet", 2)
    [now] = [a for a in hold.engine.firing("people") if a["rule"] == "cascade_risk"]
    assert "$150 of" in now["summary"]  # (held back, as its message would be)


async def test_state_survives_a_restart(setup: Setup, tmp_path: Path) -> None:
    await setup.scan(1, [1.15])
    again = await Setup.open(tmp_path / "state.db")
    await again.scan(2, [1.14])  # same condition after a restart: no second firing
    await again.scan(3, [1.3])
    kinds = [e.alerts[0]["kind"] for e in await again.entries(sink=1)]
    assert kinds == ["firing", "resolved"]


async def test_silence_mutes_then_lets_a_still_firing_alert_through(setup: Setup) -> None:
    silence = (await setup.engine.silences.add([f"account={ACCOUNTS[0]}"], 600, "known, on it",
                                        now=setup.clock.now))
    await setup.scan(1, [1.1, 1.5])
    assert (await setup.entries()) == []
    assert metric_value(setup.metrics, "keeperd_alerts_suppressed_total",
                        {"rule": "position_health", "reason": "silenced"}) == 1
    (await setup.engine.silences.expire(silence, now=setup.clock.now))
    setup.clock.now += 1
    await setup.scan(2, [1.1, 1.5])
    assert [e.alerts[0]["kind"] for e in await setup.entries(sink=1)] == ["firing"]


async def test_a_silence_added_later_mutes_what_already_waits_in_the_outbox(
        setup: Setup) -> None:
    """The dispatcher asks the engine, at delivery, which silence mutes a queued alert."""
    await setup.scan(1, [1.1, 1.5])
    [queued] = await setup.entries(sink=1)
    silenced = setup.engine.dispatcher.silenced
    assert silenced is not None and silenced(queued.alerts[0]) is None
    silence = await setup.engine.silences.add([f"account={ACCOUNTS[0]}"], 600, "on it",
                                              now=setup.clock.now)
    assert silenced(queued.alerts[0]) == str(silence)


async def test_a_silence_stops_an_alertmanager_sinks_resends(setup: Setup) -> None:
    """An Alertmanager sink re-posts what is firing; a `keeperd silence` added since kept
    Alertmanager's copy active for good (a trial). Muted, it is not re-posted (and ends at
    Alertmanager's resolve_timeout)."""
    await setup.scan(1, [1.1, 1.5])
    assert setup.engine.dispatcher.firing_provider is not None
    assert len(setup.engine.dispatcher.firing_provider("people")) == 1
    await setup.engine.silences.add([f"account={ACCOUNTS[0]}"], 600, "on it",
                                    now=setup.clock.now)
    assert setup.engine.dispatcher.firing_provider("people") == []
    assert len(setup.engine.firing("people")) == 1  # (still firing: muted, not resolved)


async def test_config_silence_by_regex(tmp_path: Path) -> None:
    s = await Setup.open(tmp_path / "s.db", alerts_config(silences=[
        {"matchers": ["watchlist=~ali.*", "severity=warning"], "comment": "quiet warnings"}]))
    await s.scan(1, [1.1])
    assert (await s.entries()) == []
    await s.scan(2, [1.0])  # critical is not matched
    assert [e.alerts[0]["severity"] for e in await s.entries(sink=1)] == ["critical"]


async def test_inhibition_annotates_or_holds(tmp_path: Path) -> None:
    tripped = {"WETH": "stale: updated 7200 s ago"}
    annotate = await Setup.open(tmp_path / "a.db")
    await annotate.scan(1, [1.1], tripped)
    [entry] = [e for e in await annotate.entries(sink=1)
               if e.alerts[0]["rule"] == "position_health"]
    assert entry.alerts[0]["inhibited_by"] == [
        "note: keeperd distrusts the WETH price (stale: updated 7200 s ago); the protocol "
        "still liquidates at its own oracle's price, whatever keeperd thinks of it"]
    # Under hold, an operator's alert waits for the price; a holder's does not: the protocol
    # liquidates at its own oracle's price whatever keeperd thinks of it (held, a holder heard
    # nothing until it had).
    hold = await Setup.open(tmp_path / "h.db", alerts_config(inhibition="hold"))
    await hold.scan(1, [1.1], tripped)
    await hold.engine.observe([cascade_condition(150.0, ("do not act: WETH untrusted",))],
                              "devnet", 1)
    assert sorted(e.alerts[0]["rule"] for e in await hold.entries(sink=1)) == [
        "oracle", "position_health"]
    [held] = [e for e in await hold.entries(sink=1) if e.alerts[0]["rule"] == "position_health"]
    assert held.alerts[0]["inhibited_by"] == entry.alerts[0]["inhibited_by"]
    assert metric_value(hold.metrics, "keeperd_alerts_suppressed_total",
                        {"rule": "cascade_risk", "reason": "inhibited"}) == 1
    await hold.scan(2, [1.1], {})  # the price is trusted again: the operator's goes out
    await hold.engine.observe([cascade_condition(150.0, ())], "devnet", 2)
    assert [(e.alerts[0]["rule"], e.alerts[0]["kind"]) for e in await hold.entries(sink=1)
            ][-2:] == [("oracle", "resolved"), ("cascade_risk", "firing")]


@pytest.mark.parametrize("markup", ["html", "slack", "discord", "plain"])
async def test_a_holder_is_never_told_not_to_act_on_an_untrusted_price(
        setup: Setup, markup: str) -> None:
    """A holder's alert said "do not act on this price yet": health 0.9879, the oracle at
    2800 against references at 2500 (the real risk worse), liquidated 40 s later — the
    protocol liquidates at its own oracle's price whatever keeperd thinks (a by-hand trial).
    The holder is told what keeperd distrusts and that it changes nothing for the protocol;
    a market's oracle by its name beside its key."""
    from keeperd.alerts.render import render

    key = "morpho:0x" + "ab" * 32
    view = dataclasses.replace(scan(1, [0.9879]).view, assets=[frozenset({"WETH", key})])
    await setup.engine.on_scan(
        SimpleNamespace(protocol="aave", block=1, partial=False, view=view, book=None),
        chain="devnet", tripped={"WETH": "deviation: 12.0 % off references", key: "stale"},
        names={key: "morpho WETH/USDC (86%)"})
    [entry] = [e for e in await setup.entries(sink=0)
               if e.alerts[0]["rule"] == "position_health"]
    text = render(entry.alerts, markup)  # type: ignore[arg-type]
    assert "do not act" not in text.lower() and "do not act" not in str(entry.alerts)
    notes = [line for line in text.split("\n") if "⚠️" in line]
    assert len(notes) == 2 and all("the protocol still liquidates at its own oracle" in n
                                   for n in notes)
    assert "distrusts the WETH price" in notes[0]
    assert "morpho WETH/USDC (86%) (morpho:" in entry.alerts[0]["inhibited_by"][1]


async def test_reorg_withdraws_pending_and_retracts_delivered(setup: Setup) -> None:
    await setup.scan(10, [1.1, 1.5])
    first = (await setup.entries(sink=1))[0]
    (await setup.outbox.delivered(first.id))
    await setup.scan(12, [1.1, 1.0])  # account 2 fires at block 12, not delivered yet
    pending = [e for e in await setup.entries(sink=1) if e.state == PENDING]
    assert len(pending) == 1 and pending[0].block == 12
    ancestor = BlockHeader(9, "0x" + "9" * 64, "0x" + "8" * 64, 0)
    await setup.engine.on_block_event(Reorg(ancestor, ()),
                                      chain="devnet")
    states = {e.id: e.state for e in await setup.entries()}
    assert states[pending[0].id] == RETRACTED
    assert states[first.id] == DELIVERED
    retraction = [e for e in await setup.entries(sink=1) if e.alerts[0]["kind"] == "retracted"]
    assert len(retraction) == 1 and retraction[0].alerts[0]["retracted"] is True
    assert retraction[0].alerts[0]["labels"]["account"] == ACCOUNTS[0]
    # The surviving chain still has account 1 low: it fires afresh.
    await setup.scan(10, [1.1, 1.5])
    assert [e.alerts[0]["kind"] for e in await setup.entries(sink=1)][-1] == "firing"


async def test_operator_rules(setup: Setup) -> None:
    engine = setup.engine
    (await engine.tick(rpc_healthy={"devnet": 0}, index_lag={("devnet", "aave"): 5},
                keeper_balance={"devnet": 0.5}))
    assert (await setup.entries()) == []  # RPC down not yet for `after_s`
    setup.clock.now += 31
    (await engine.tick(rpc_healthy={"devnet": 0}, index_lag={("devnet", "aave"): 150},
                keeper_balance={"devnet": 0.01}))
    rules = sorted((e.alerts[0]["rule"], e.alerts[0]["severity"]) for e in await setup.entries(1))
    assert rules == [("index_lag", "critical"), ("keeper_balance", "critical"),
                     ("rpc_down", "critical")]
    setup.clock.now += 1
    (await engine.tick(rpc_healthy={"devnet": 2}, index_lag={("devnet", "aave"): 0},
                keeper_balance={"devnet": 1.0}))
    resolved = [e.alerts[0]["rule"] for e in await setup.entries(1) if e.status == "resolved"]
    assert sorted(resolved) == ["index_lag", "keeper_balance", "rpc_down"]


async def test_rpc_down_counts_from_the_first_failed_request_not_the_bench(
        setup: Setup) -> None:
    """A hung node is still counted healthy until its third timeout benches it: rpc_down,
    counted from the bench, came ~25 s after `after_s` (a by-hand trial). Every endpoint
    failing for `after_s` (`RpcPool.failing_for`) fires it, benched or not; a success (0)
    resolves it."""
    async def tick(healthy: int, failing_for: float) -> None:
        await setup.engine.tick(rpc_healthy={"devnet": healthy}, index_lag={},
                                keeper_balance={}, rpc_failing_for={"devnet": failing_for})

    await tick(1, 29.0)
    assert await setup.entries() == []
    setup.clock.now += 2
    await tick(1, 31.0)
    [fired] = [e.alerts[0] for e in await setup.entries(sink=1)]
    assert (fired["rule"], fired["kind"]) == ("rpc_down", "firing")
    assert "has failed for 31 s" in fired["summary"]
    setup.clock.now += 2
    await tick(1, 0.0)
    assert [e.alerts[0]["kind"] for e in await setup.entries(sink=1)] == ["firing", "resolved"]


async def test_a_perp_venue_whose_polls_all_fail_is_alerted_and_resolved(setup: Setup
                                                                         ) -> None:
    """(A by-hand trial: a Hyperliquid venue unreachable was a log line and a counter; the
    holder watching an account there got nothing while it could not be read.)"""
    engine, since = setup.engine, setup.clock.now
    failing = {"hl": (since, "ClientConnectorError: cannot connect"), "dydx": None}
    await engine.tick(rpc_healthy={}, index_lag={}, keeper_balance={},
                      venues_failing=failing)
    assert await setup.entries() == []  # not yet for after_s (120 s)
    setup.clock.now += 121
    await engine.tick(rpc_healthy={}, index_lag={}, keeper_balance={},
                      venues_failing=failing)
    [alert] = [e.alerts[0] for e in await setup.entries(1)]
    assert (alert["rule"], alert["severity"], alert["labels"]["venue"]) == (
        "venue_down", "critical", "hl")
    assert "cannot connect" in alert["summary"] and "121 s" in alert["summary"]
    setup.clock.now += 1
    await engine.tick(rpc_healthy={}, index_lag={}, keeper_balance={},
                      venues_failing={"hl": None, "dydx": None})
    assert [e.status for e in await setup.entries(1)] == ["firing", "resolved"]


async def test_a_perp_venue_with_accounts_unread_is_down_until_every_one_reads(
        setup: Setup) -> None:
    """(An audit: a NaN mark left every holder of the coin "recovered: margin health ∞" and
    the poll counted ok, so venue_down never fired.) Unread accounts are named, after
    `after_s`; a venue that answers again with an account still unread has not recovered —
    blind since the failed polls — and a new reason is told again."""
    engine, since = setup.engine, setup.clock.now

    async def tick(failing: Any, unread: dict[str, tuple[float, str]]) -> None:
        await engine.tick(rpc_healthy={}, index_lag={}, keeper_balance={},
                          venues_failing={"hl": failing}, venues_unread={"hl": unread})

    await tick((since, "ClientConnectorError"), {ACCOUNTS[0]: (since, "the poll failed")})
    setup.clock.now += 121
    await tick((since, "ClientConnectorError"), {ACCOUNTS[0]: (since, "the poll failed")})
    # The venue answers; the account still does not read: firing on, told why.
    await tick(None, {ACCOUNTS[0]: (since, "metaAndAssetCtxs BTC.markPx: not a finite "
                                            "number")})
    setup.clock.now += 5
    await tick(None, {ACCOUNTS[0]: (since, "metaAndAssetCtxs BTC.markPx: not a finite "
                                            "number")})  # (the same: not told again)
    await tick(None, {ACCOUNTS[0]: (since, "metaAndAssetCtxs BTC.markPx: must be above 0")})
    await tick(None, {})
    told = [(e.status, e.alerts[0]["summary"]) for e in await setup.entries(1)]
    assert [status for status, _ in told] == ["firing", "firing", "firing", "resolved"]
    assert "every poll has failed" in told[0][1]
    assert ACCOUNTS[0] in told[1][1] and "not a finite number" in told[1][1]
    assert "126 s" in told[2][1] and "must be above 0" in told[2][1]
    assert "every watched account reads" in told[3][1]


async def test_a_watched_position_gone_from_the_book_resolves(setup: Setup) -> None:
    """(A by-hand trial: a watched Morpho position closed by its liquidation left the book,
    and its critical alert fired on for good, its last health repeated.)"""
    await setup.scan(10, [0.9, 1.5])
    assert [(e.alerts[0]["severity"], e.status) for e in await setup.entries(1)] == [
        ("critical", "firing")]
    setup.clock.now += 12
    await setup.scan(11, [])  # (its row is gone: the position closed)
    resolved = (await setup.entries(1))[-1]
    assert resolved.status == "resolved"
    assert "holds no position there any more" in resolved.alerts[0]["summary"]
    setup.clock.now += 5 * 3600
    await setup.scan(12, [])
    assert len(await setup.entries(1)) == 2  # nothing repeats after it


async def test_a_watched_position_unread_is_unknown_not_gone(setup: Setup) -> None:
    """A market whose oracle did not answer is left out of Morpho's evaluation for the block:
    its watched positions are unknown, not closed (an endpoint failing that read resolved
    the critical alert: the review of the gone check)."""
    def morpho(block: int, rows: list[tuple[str, float]], unread: list[str]) -> Any:
        n = len(rows)
        view = HealthView(
            accounts=[a for a, _ in rows], health=np.array([h for _, h in rows]),
            collateral_usd=np.full(n, 10_000.0), debt_usd=np.full(n, 8_000.0),
            liquidation_threshold=np.full(n, 0.8), main_collateral=["WETH"] * n,
            drop_to_liquidation=np.full(n, 0.1), assets=[frozenset(SYMBOLS)] * n,
            labels=[{"market": "WETH/USDC"}] * n, unread=[{"market": m} for m in unread])
        return SimpleNamespace(protocol="morpho", block=block, partial=False, view=view,
                               book=None)

    engine = setup.engine
    await engine.on_scan(morpho(10, [(ACCOUNTS[0], 0.9)], []), chain="devnet", tripped={})
    assert [e.status for e in await setup.entries(1)] == ["firing"]
    setup.clock.now += 12
    await engine.on_scan(morpho(11, [], ["WETH/USDC"]), chain="devnet", tripped={})
    assert [e.status for e in await setup.entries(1)] == ["firing"]  # unknown: still firing
    await engine.on_scan(morpho(12, [], []), chain="devnet", tripped={})
    assert [e.status for e in await setup.entries(1)] == ["firing", "resolved"]


async def test_an_endpoint_of_another_network_is_alerted(setup: Setup) -> None:
    """(keeperd now starts beside a backup of another network instead of refusing: that must
    not go unnoticed by an operator who relies on keeperd's own alerts.)"""
    engine = setup.engine
    await engine.tick(rpc_healthy={"mainnet": 1}, index_lag={}, keeper_balance={},
                      rpc_wrong_chain={("mainnet", "0"): None,
                                       ("mainnet", "1"): "https://arb.example/v2/***"})
    [alert] = [e.alerts[0] for e in await setup.entries(1)]
    assert (alert["rule"], alert["severity"], alert["labels"]) == (
        "rpc_wrong_chain", "warning", {"chain": "mainnet", "endpoint": "1"})
    assert "arb.example" in alert["summary"] and "rpc_urls[1]" in alert["action"]
    setup.clock.now += 60
    await engine.tick(rpc_healthy={"mainnet": 2}, index_lag={}, keeper_balance={},
                      rpc_wrong_chain={("mainnet", "0"): None, ("mainnet", "1"): None})
    assert [e.status for e in await setup.entries(1)] == ["firing", "resolved"]


async def test_liquidation_events_and_oracle_alerts(setup: Setup) -> None:
    from keeperd.protocols.sdk.messages import ExecutionEvent

    setup.engine.on_liquidation(ExecutionEvent(
        "included", "devnet", "aave", ACCOUNTS[0], "aave:x:WETH:USDC:1", 7,
        {"tx_hash": "0xabc", "profit_usd": 12.5}))
    await setup.scan(8, [1.5], {"WETH": "deviation 20% from references"})
    await setup.scan(9, [1.5], {"WETH": "deviation 20% from references"})
    await setup.scan(10, [1.5], {})
    got = [(e.alerts[0]["rule"], e.alerts[0]["kind"]) for e in await setup.entries(sink=1)]
    assert got == [("liquidation", "event"), ("oracle", "firing"), ("oracle", "resolved")]
    assert "profit $12.50" in (await setup.entries(sink=1))[0].alerts[0]["summary"]
    # A Curie takeover realises its prize when its position is unwound: its inclusion says so
    # (it said "profit $-6.12", its gas, as if it had lost).
    setup.engine.on_liquidation(ExecutionEvent(
        "included", "devnet", "curie", ACCOUNTS[1], "curie:x:0xbase:5", 11,
        {"tx_hash": "0xdef", "profit_usd": -6.12,
         "realised_later": "its share of the penalty is realised when the position is "
                           "unwound"}))
    await setup.scan(12, [1.5], {})
    said = (await setup.entries(sink=1))[-1].alerts[0]["summary"]
    assert said.endswith("included (realised $-6.12 so far: its share of the penalty is "
                         "realised when the position is unwound)"), said
    # The pair: one account's liquidations of two debts read as one told twice (a trial).
    for debt in ("USDC", "DAI"):
        setup.engine.on_liquidation(ExecutionEvent(
            "sent", "devnet", "aave", ACCOUNTS[2], f"aave:x:WETH:{debt}:1", 13,
            {"tx_hash": "0x1", "collateral": "WETH", "debt": debt}))
    await setup.scan(14, [1.5], {})
    summaries = [e.alerts[0]["summary"] for e in (await setup.entries(sink=1))[-2:]]
    assert [s.split(" on ")[0].rsplit(" ", 1)[1] for s in summaries] == [
        "(WETH/USDC)", "(WETH/DAI)"], summaries


async def test_a_liquidation_included_at_a_loss_is_critical(setup: Setup) -> None:
    """24 liquidations that lost $254k on a pool with changed liquidation code were each an
    info event (a by-hand trial)."""
    from keeperd.protocols.sdk.messages import ExecutionEvent

    setup.engine.on_liquidation(ExecutionEvent(
        "included", "devnet", "aave", ACCOUNTS[0], "aave:x:WETH:USDT:1", 7,
        {"tx_hash": "0xabc", "profit_usd": -74_321.62, "expected_profit_usd": 59_118.59,
         "lost_money": "the protocol gave 9.1% less collateral per debt repaid than "
                       "keeperd's plan; $74,300.00 lost before gas"}))
    await setup.scan(8, [1.5], {})
    [alert] = [e.alerts[0] for e in await setup.entries(sink=1)]
    assert (alert["rule"], alert["severity"]) == ("liquidation", "critical")
    assert "included AT A LOSS (profit $-74,321.62)" in alert["summary"]
    assert "expected $59,118.59 profit" in alert["action"]


async def test_an_oracle_alert_is_per_chain(setup: Setup) -> None:
    """#29 item 2: WETH untrusted on arbitrum fires once, labelled with its chain; ethereum's
    scans (WETH fine there) neither resolve nor repeat it; arbitrum's clear resolves it."""
    async def on(chain: str, block: int, tripped: dict[str, str]) -> None:
        await setup.engine.on_scan(scan(block, [1.5]), chain=chain, tripped=tripped)

    await on("arbitrum", 1, {"WETH": "stale: 7200 s"})
    await on("ethereum", 1, {})
    await on("arbitrum", 2, {"WETH": "stale: 7200 s"})
    await on("ethereum", 2, {})
    got = [e.alerts[0] for e in await setup.entries(sink=1)]
    assert [(a["rule"], a["kind"], a["labels"]) for a in got] == [
        ("oracle", "firing", {"chain": "arbitrum", "asset": "WETH"})]
    assert "on arbitrum" in got[0]["summary"]
    await on("arbitrum", 3, {})
    got = [e.alerts[0] for e in await setup.entries(sink=1)]
    assert [(a["kind"], a["labels"]["chain"]) for a in got] == [
        ("firing", "arbitrum"), ("resolved", "arbitrum")]


async def test_a_market_oracle_alert_names_the_market_when_it_fires_and_resolves(
        setup: Setup) -> None:
    """A Morpho market's oracle is keyed `morpho:<id>`: its resolution said only "morpho:0x…
    price trusted again" (the trip's reason named the market, the resolution did not: a
    by-hand trial). Both now name it beside the key; a key with no name stays as it was."""
    key = "morpho:0x" + "ab" * 32
    names = {key: "morpho WETH/USDC (86%)"}

    async def on(block: int, tripped: dict[str, str]) -> None:
        await setup.engine.on_scan(scan(block, [1.5]), chain="devnet", tripped=tripped,
                                   protocol="morpho", names=names)

    await on(1, {key: "deviation: 12% from the references", "WETH": "stale: 7200 s"})
    await on(2, {})
    got = {(a["labels"]["asset"], a["kind"]): a["summary"]
           for e in await setup.entries(sink=1) for a in e.alerts}
    assert got[(key, "firing")].startswith(f"morpho WETH/USDC (86%) ({key}) price untrusted")
    assert got[(key, "resolved")].startswith(
        f"morpho WETH/USDC (86%) ({key}) price trusted again on devnet")
    assert got[("WETH", "firing")].startswith("WETH price untrusted on devnet")
    assert got[("WETH", "resolved")].startswith("WETH price trusted again on devnet")


async def test_an_oracle_alert_is_told_again_when_its_reason_changes_not_its_figures(
        setup: Setup) -> None:
    """A manual trip reset, then tripped again for a deviation before the next block: the
    alert kept saying "until an operator resets it" of a pause an operator had reset (a
    trial). A new reason is told again; the same reason with new figures (rewritten each
    block) is not."""
    async def on(block: int, why: str) -> None:
        await setup.engine.on_scan(scan(block, [1.5]), chain="devnet", tripped={"WETH": why})

    await on(1, "manual: trial hold — untrusted since 07 Dec 08:37:27 UTC, until an operator "
                "resets it")
    await on(2, "deviation: oracle 2600 vs reference median 2300 (13.0%) — untrusted since "
                "the block of 07 Dec 08:38:40 UTC")
    await on(3, "deviation: oracle 2610 vs reference median 2290 (14.0%) — untrusted since "
                "the block of 07 Dec 08:38:40 UTC")
    # (a feed flapping across its threshold: fine a block, the breaker waiting, then not —
    # not told each block)
    await on(4, "was deviation: oracle 2610 vs reference median 2290 (14.0%) until the block "
                "of 07 Dec 08:38:52 UTC, fine since — untrusted since the block of 07 Dec "
                "08:38:40 UTC, trusted again after 300 s fine")
    await on(5, "deviation: oracle 2620 vs reference median 2290 (14.4%) — untrusted since "
                "the block of 07 Dec 08:38:40 UTC")
    told = [a for e in await setup.entries(sink=1) for a in e.alerts if a["rule"] == "oracle"]
    assert [a["kind"] for a in told] == ["firing", "firing"], told
    assert "deviation: oracle 2600" in told[1]["summary"]
    [now] = [a for a in setup.engine.firing("people") if a["rule"] == "oracle"]
    assert "deviation" in now["summary"]


async def test_held_liquidations_fire_once_and_resolve(setup: Setup) -> None:
    reason = "POOL_REVISION 11 is not a revision keeperd knows"

    async def held(block: int, why: str | None) -> None:
        await setup.engine.on_scan(scan(block, [1.5]), chain="devnet", tripped={},
                                   protocol="aave", held=why)

    await held(1, None)
    assert (await setup.entries()) == []
    for block in (2, 3, 4):
        await held(block, reason)
    [fired] = [e for e in await setup.entries(sink=1)]
    alert = fired.alerts[0]
    assert (alert["rule"], alert["status"], alert["severity"]) == (
        "liquidations_held", "firing", "critical")
    assert alert["labels"] == {"chain": "devnet", "protocol": "aave"}
    assert reason in alert["summary"]
    await held(5, None)
    resolved = (await setup.entries(sink=1))[-1].alerts[0]
    assert resolved["status"] == "resolved" and "resume" in resolved["summary"]


async def test_alerts_of_a_protocol_no_longer_configured_are_resolved_at_start(
        setup: Setup, tmp_path: Path) -> None:
    """A protocol removed from the config (a by-hand trial removed Curie) left its
    liquidations_held firing for good, in `alerts list` and `status`: nothing evaluated it
    any more. A start without it resolves it, saying why."""
    await setup.engine.on_scan(scan(1, [1.5]), chain="devnet", tripped={}, protocol="aave",
                               held="held for a reason")
    assert [e.alerts[0]["status"] for e in await setup.entries(sink=1)] == ["firing"]
    again = await Setup.open(tmp_path / "state.db", sources=["morpho"])
    await again.engine.commit()
    told = [e.alerts[0] for e in await again.entries(sink=1)]
    assert [(a["rule"], a["status"]) for a in told] == [
        ("liquidations_held", "firing"), ("liquidations_held", "resolved")]
    assert "aave: no longer configured" in told[-1]["summary"]
    kept = await Setup.open(tmp_path / "kept.db", sources=["aave"])  # (configured: kept)
    await kept.engine.on_scan(scan(1, [1.5]), chain="devnet", tripped={}, protocol="aave",
                              held="held for a reason")
    again = await Setup.open(tmp_path / "kept.db", sources=["aave"])
    await again.engine.commit()
    assert [e.alerts[0]["status"] for e in await again.entries(sink=1)
            if e.alerts[0]["rule"] == "liquidations_held"] == ["firing"]


async def test_capital_shortfall_fires_per_asset_and_resolves(setup: Setup) -> None:
    from keeperd.execution.capital import Shortfall

    short = {"0xusdc": Shortfall("0xusdc", "USDC", 6, 2_500 * 10**6, 3, 420.5)}

    async def scan_with(block: int, shortfalls: dict[str, Shortfall]) -> None:
        await setup.engine.on_scan(scan(block, [1.5]), chain="devnet", tripped={},
                                   protocol="aave", shortfalls=shortfalls)

    await scan_with(1, short)
    await scan_with(2, short)
    [fired] = await setup.entries(sink=1)
    alert = fired.alerts[0]
    assert (alert["rule"], alert["status"], alert["severity"]) == (
        "capital_shortfall", "firing", "warning")
    assert alert["labels"]["asset"] == "USDC"
    assert "lacks 2,500 USDC" in alert["summary"] and "3 liquidation(s)" in alert["summary"]
    assert alert["action"] == "Fund the keeper with the debt asset."  # (no executor's words)
    # A crash's shortfall grows: told again once the profit forgone has doubled (it kept its
    # first figure until the repeat interval), not for every change.
    await scan_with(3, {"0xusdc": Shortfall("0xusdc", "USDC", 6, 3_000 * 10**6, 4, 800.0)})
    assert len(await setup.entries(sink=1)) == 1
    await scan_with(4, {"0xusdc": Shortfall("0xusdc", "USDC", 6, 90_000 * 10**6, 60,
                                            25_000.0)})
    grown = (await setup.entries(sink=1))[-1].alerts[0]
    assert grown["status"] == "firing" and "60 liquidation(s) worth $25,000.00" in \
        grown["summary"]
    await scan_with(5, {})
    resolved = (await setup.entries(sink=1))[-1].alerts[0]
    assert resolved["status"] == "resolved" and "covers" in resolved["summary"]


async def test_capital_shortfalls_advice_is_the_executors(setup: Setup) -> None:
    """`capital: auto` is advice only where it helps (the executor knows: a protocol with a
    capital-free path, not on auto already); Curie's shortfall was told to set it."""
    from keeperd.execution.capital import Shortfall

    short = {"0xusdc": Shortfall("0xusdc", "USDC", 6, 2_500 * 10**6, 3, 420.5)}
    for block in (1, 2):
        await setup.engine.on_scan(scan(block, [1.5]), chain="devnet", tripped={},
                                   protocol="curie", shortfalls=short,
                                   capital_fix="Fund the keeper's vault with USDC.")
    [fired] = await setup.entries(sink=1)
    assert fired.alerts[0]["action"] == "Fund the keeper's vault with USDC."


async def test_two_holders_liquidated_in_one_block_each_read_their_own_figures(
        setup: Setup) -> None:
    """Two watched accounts liquidated in one block are one Telegram message; it said the
    first's "What is left" once for both, and the second's holder read another position's
    debt and health as theirs (a by-hand trial). Each reads their own, under their line."""
    from keeperd.alerts.render import render
    from keeperd.protocols.sdk.contract import LiquidationSeen

    def seen(account: str, log_index: str) -> LiquidationSeen:
        return LiquidationSeen(account, "0xkeeper", 7, "0xtx", log_index, "repaid", 10.0, 11.0,
                               {}, {})

    await setup.engine.on_scan(scan(7, [1.01, 1.1]), chain="devnet", tripped={},
                               liquidations=[seen(ACCOUNTS[0], "0x1"), seen(ACCOUNTS[1], "0x2")])
    [telegram] = [e for e in await setup.entries(sink=0)
                  if e.alerts[0]["rule"] == "position_liquidated"]
    lines = render(telegram.alerts, "plain").split("\n")
    for account, health in ((ACCOUNTS[0], "1.0100"), (ACCOUNTS[1], "1.1000")):
        at = next(k for k, line in enumerate(lines) if account in line and "liquidated" in line)
        assert lines[at + 2] == (f"    ➜ What is left: debt $8,000.00, health {health} now "
                                 "(below 1.0 it may be liquidated again): add collateral or "
                                 "repay.")
    assert sum("What is left" in line for line in lines) == 2


def test_grouping_is_per_rule_status_and_severity_for_people_and_none_for_machines() -> None:
    from keeperd.alerts.engine import group_alerts
    from keeperd.alerts.model import Alert

    def alert(rule: str, severity: str, value: float) -> Alert:
        return Alert(rule, severity, "firing", {"account": str(value)}, "s", "", value)

    alerts = [alert("position_health", "warning", 1.15), alert("oracle", "critical", 0.0),
              alert("position_health", "warning", 1.1),
              alert("position_health", "critical", 1.01)]
    people = group_alerts(alerts, group=True)
    assert [[a.value for a in g] for g in people] == [[1.1, 1.15], [0.0], [1.01]]
    machines = group_alerts(alerts, group=False)
    assert [[a.value for a in g] for g in machines] == [[1.15], [0.0], [1.1], [1.01]]


async def test_a_watched_holder_is_alerted_for_its_sub_accounts(setup: Setup) -> None:
    """Hyperliquid builder-dex accounts (`user@dex`) and dYdX child subaccounts
    (`address/128`) belong to the holder the watchlist names."""
    from keeperd.protocols.perps.margin import PerpAccount, PerpPosition

    position = PerpPosition("xyz:GOLD", 10.0, 2_400.0, 2_400.0, 0.0, "cross",
                            maintenance_fraction=0.05)
    builder = PerpAccount("hyperliquid", f"{ACCOUNTS[0]}@xyz", 1_260.0, (position,))  # 1.05
    (await setup.engine.on_perp_accounts("hyperliquid", [builder]))
    [entry] = await setup.entries(sink=1)
    alert = entry.alerts[0]
    assert alert["rule"] == "position_health" and alert["labels"]["watchlist"] == "alice"
    assert alert["labels"]["account"] == f"{ACCOUNTS[0]}@xyz"


async def test_alerts_of_a_removed_watchlist_entry_are_resolved(setup: Setup,
                                                                tmp_path: Path) -> None:
    """#27 item 7: an entry removed from a watchlist left its alerts firing for good, across
    restarts and reloads (nothing evaluated them any more). A restart, or a reload, resolves
    them."""
    await setup.scan(1, [1.1, 1.1])
    assert len(await setup.entries(sink=1)) == 2
    fewer = alerts_config(watchlists=[{"name": "alice", "accounts": ACCOUNTS[:1], "warn": 1.2,
                                       "critical": 1.05, "route": "people"}])
    again = await Setup.open(tmp_path / "state.db", fewer)  # a restart with the new config
    await again.engine.commit()
    told = [e.alerts[0] for e in await again.entries(sink=1)]
    assert [(a["kind"], a["labels"]["account"]) for a in told[2:]] == [
        ("resolved", ACCOUNTS[1])]
    assert "no longer watched" in told[-1]["summary"]
    # A reload (SIGHUP) that drops the whole list resolves the rest.
    again.engine.configure(alerts_config(watchlists=[]))
    await again.engine.commit()
    told = [e.alerts[0] for e in await again.entries(sink=1)]
    assert [(a["kind"], a["labels"]["account"]) for a in told[3:]] == [
        ("resolved", ACCOUNTS[0])]
    assert metric_value(again.metrics, "keeperd_alerts_firing",
                        {"rule": "position_health", "severity": "warning"}) == 0


def test_a_liquidated_holder_hears_what_is_left() -> None:
    """The liquidation event said "may still be at risk: check its health" whatever was
    left: of a position with no debt left, and without the health a partial liquidation
    left (the health alert then de-escalates without a message)."""
    from keeperd.alerts.engine import AlertEngine, WatchedRow
    from keeperd.protocols.sdk.contract import LiquidationSeen

    def seen(labels: dict[str, str]) -> LiquidationSeen:
        return LiquidationSeen("0xAbC", "0xkeeper", 7, "0xtx", "0x1", "repaid", 10.0, 11.0,
                               {}, labels)

    def row(market: str, debt: float, collateral: float, health: float) -> WatchedRow:
        return WatchedRow("morpho", "devnet", "0xabc", {"market": market}, health,
                          frozenset(), {"debt_usd": debt, "collateral_usd": collateral},
                          "0xabc in morpho", "act")

    rows = [row("WETH/USDC", 1_500.0, 2_000.0, 1.1056), row("WBTC/DAI", 0.0, 50.0, np.inf)]
    assert AlertEngine._left_after(seen({"market": "WETH/USDC"}), rows) == (
        "What is left: debt $1,500.00, health 1.1056 now (below 1.0 it may be liquidated "
        "again): add collateral or repay.")
    assert AlertEngine._left_after(seen({"market": "WBTC/DAI"}), rows) == (
        "Its whole debt was repaid: nothing is left at risk there (collateral $50.00 left, "
        "yours to withdraw).")
    assert AlertEngine._left_after(seen({"market": "wstETH/WETH"}), rows) == (
        "Nothing is left of the position there.")
    # Every collateral seized, no debt left: the rest was written off, not repaid.
    gone = [row("WETH/USDC", 0.0, 0.0, np.inf)]
    assert AlertEngine._left_after(seen({"market": "WETH/USDC"}), gone).startswith(
        "All its collateral was seized and no debt is left there: any debt the collateral "
        "did not cover was written off by the protocol, not repaid.")
    # A market the evaluation could not read is unknown, not gone.
    assert AlertEngine._left_after(seen({"market": "wstETH/WETH"}), rows,
                                   [{"market": "wstETH/WETH"}]).startswith(
        "It could not be read at this block")
    # Curie: its rows are whole accounts (no labels), its events name a market; a perp's
    # figures are its open notional, what is left a position to reduce.
    curie = [WatchedRow("curie", "devnet", "0xabc", {}, 1.05, frozenset(),
                        {"debt_usd": 9_000.0, "collateral_usd": 700.0,
                         "main_is_position": True}, "0xabc on curie", "act")]
    assert AlertEngine._left_after(seen({"market": "vETH"}), curie) == (
        "What is left: open notional $9,000.00, health 1.0500 now (below 1.0 it may be "
        "liquidated again): add margin or reduce the position.")
    # No position left: nothing at risk — unless its WETH margin still owes USDC against it
    # (health finite: the vault's rule), which can be liquidated on its own.
    closed = [WatchedRow("curie", "devnet", "0xabc", {}, np.inf, frozenset(),
                         {"debt_usd": 0.0, "collateral_usd": 700.0,
                          "main_is_position": True}, "0xabc on curie", "act")]
    assert AlertEngine._left_after(seen({"market": "vETH"}), closed) == (
        "No open position is left there.")
    owing = [WatchedRow("curie", "devnet", "0xabc", {}, 0.97, frozenset(),
                        {"debt_usd": 0.0, "collateral_usd": -120.0,
                         "main_is_position": True}, "0xabc on curie", "act")]
    assert AlertEngine._left_after(seen({"market": "vETH"}), owing) == (
        "No open position is left there, but its margin is still at risk: health 0.9700 now "
        "(below 1.0 its collateral may be liquidated): add USDC margin or repay what it owes.")


async def test_the_firing_list_says_when_a_position_recovered_without_a_message(
        setup: Setup) -> None:
    """Back from critical to warning is not told (a new fall to critical is), and `keeperd
    alerts list` showed the last message, "critical ... 0.98", for a position at 1.11."""
    from keeperd.alerts.state import AlertState

    await setup.scan(1, [1.04])  # critical
    await setup.scan(2, [1.11])  # warning again: no message
    assert len(await setup.entries(sink=1)) == 1
    [(alert, now)] = (await AlertState(setup.db).load()).firing_now()
    assert alert["severity"] == "critical" and now == "warning"
    # `keeperd status` counts it as the list and keeperd_alerts_firing do: at its severity now
    # (it said critical beside their warning, a by-hand trial).
    from keeperd.storage.summary import summarize

    assert [(a["rule"], a["severity"]) for a in (await summarize(setup.db))["alerts_firing"]] \
        == [("position_health", "warning")]


async def test_a_failing_alert_tick_is_logged_once_a_minute(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A PostgreSQL outage made every 5 s tick log a traceback (a by-hand trial): the first
    failure with it, then a line a minute, and its recovery once."""
    import structlog

    from keeperd import daemon as daemon_module
    from keeperd.config import parse_config
    from keeperd.daemon import Daemon

    config = parse_config({"state_dir": "/tmp/keeperd-tick-test", "chains": [
        {"name": "devnet", "chain_id": 31337, "rpc_urls": ["http://127.0.0.1:9"]}]}, env={})
    daemon = Daemon(config, metrics=Metrics())
    failing = [True]

    class Engine:
        async def tick(self, **_: Any) -> None:
            if failing[0]:
                raise ConnectionError("Connect call failed")

    daemon.alerts = Engine()  # type: ignore[assignment]
    now = [100.0]
    monkeypatch.setattr(daemon_module.time, "monotonic", lambda: now[0])
    with structlog.testing.capture_logs() as logs:
        for _ in range(20):  # 100 s of ticks, 5 s apart
            await daemon._alert_tick()
            now[0] += 5
        failing[0] = False
        await daemon._alert_tick()
    events = [(e["event"], e["log_level"]) for e in logs]
    assert events == [("alerts.tick_failed", "error"), ("alerts.tick_failed", "error"),
                      ("alerts.tick_recovered", "info")], events
    assert "exc_info" in logs[0] and "exc_info" not in logs[1]


async def test_a_watched_account_without_a_position_is_told_once_its_index_is_complete(
        setup: Setup) -> None:
    """A watched account no protocol holds a position for, and never did, is told to the
    watchlist's route — once, not again at every scan (it repeated every block, a review) —
    only once the protocol's index has caught up (a half-built index made real holders look
    like typos), and resolved when it holds one."""
    await setup.scan(1, [1.5, 1.5, 1.5])  # (no tick yet: the index's state unknown)
    await setup.engine.tick(rpc_healthy={}, index_lag={("devnet", "aave"): 500},
                            keeper_balance={})
    await setup.scan(2, [1.5, 1.5, 1.5])  # (500 blocks behind: not complete)
    assert not [e for e in await setup.entries(sink=1)
                if e.alerts[0]["rule"] == "watched_without_position"]
    await setup.engine.tick(rpc_healthy={}, index_lag={("devnet", "aave"): 0},
                            keeper_balance={})
    for block in range(3, 8):
        setup.clock.now += 12
        await setup.scan(block, [1.5, 1.5, 1.5])
    told = [e.alerts[0] for e in await setup.entries(sink=1)
            if e.alerts[0]["rule"] == "watched_without_position"]
    assert [(a["status"], a["account"]) for a in told] == [("firing", ACCOUNTS[3])]
    assert "Check the address" in told[0]["action"]
    assert metric_value(setup.metrics, "keeperd_watched_never_held", {"watchlist": "alice"}) == 1
    await setup.scan(8, [1.5, 1.5, 1.5, 1.5])  # (it holds one now)
    told = [e.alerts[0] for e in await setup.entries(sink=1)
            if e.alerts[0]["rule"] == "watched_without_position"]
    assert [(a["status"], a["account"]) for a in told] == [
        ("firing", ACCOUNTS[3]), ("resolved", ACCOUNTS[3])]


async def test_an_unverified_revision_is_told_again_when_it_changes(
        setup: Setup, tmp_path: Path) -> None:
    """Each new unknown upgrade is told (an open alert named revision 11 while the pool ran
    13: the later upgrades were log lines only); a switch to unknown_revision: hold resolves
    it in words that say so (it said "keeperd knows the rules again" of a revision it still
    did not know); alert-only mode is not told that liquidations go on (a by-hand trial)."""
    async def scan_with(block: int, verifying: str | None, held: str | None = None) -> None:
        await setup.engine.on_scan(scan(block, [1.5]), chain="devnet", tripped={},
                                   verifying=verifying, held=held)

    async def told(of: Setup = setup) -> list[dict[str, Any]]:
        return [a for e in await of.entries(sink=1) for a in e.alerts
                if a["rule"] == "revision_unverified"]

    await scan_with(1, "POOL_REVISION 11 is not one keeperd knows")
    await scan_with(2, "POOL_REVISION 11 is not one keeperd knows")
    assert [(a["kind"], "11" in a["summary"]) for a in await told()] == [("firing", True)]
    assert (await told())[0]["action"].startswith("Liquidations go on")
    await scan_with(3, "POOL_REVISION 12 is not one keeperd knows")
    await scan_with(4, "POOL_REVISION 12 is not one keeperd knows")
    assert [(a["kind"], a["summary"][-35:]) for a in await told()] == [
        ("firing", "EVISION 11 is not one keeperd knows"),
        ("firing", "EVISION 12 is not one keeperd knows")]
    await scan_with(5, None, held="POOL_REVISION 12 is not one keeperd knows "
                                  "(unknown_revision: hold)")
    resolved = (await told())[-1]
    assert resolved["kind"] == "resolved"
    assert "its liquidations are held now, not verified" in resolved["summary"]

    quiet = await Setup.open(tmp_path / "alert-only.db")
    quiet.engine.sends = False
    await quiet.engine.on_scan(scan(1, [1.5]), chain="devnet", tripped={},
                               verifying="POOL_REVISION 11 is not one keeperd knows")
    assert (await told(quiet))[0]["action"].startswith("keeperd sends nothing in this mode")


async def test_no_alert_carries_a_secret_the_process_holds(tmp_path: Path) -> None:
    """The backstop behind every rule's wording: a venue whose error page gives back the key
    in its URL's path (a QuickNode-style URL), and the keeper's key in a text, reach neither
    the outbox, nor the alert state, nor a re-told message; the alert is not told again for
    it at every tick (its summary as remembered is the scrubbed one)."""
    from keeperd.logs import REDACTED, Redactor

    venue_key = "0f3c9a7be21d4e8a9c55aa01"
    redactor = Redactor()
    redactor.add_url(f"https://venue.example/{venue_key}/info")
    redactor.add(KEY := "0x" + "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
    db = SqliteDatabase.open(tmp_path / "state.db")
    await migrate(db)
    clock, metrics = Clock(), Metrics()
    dispatcher = Dispatcher(Outbox(db), OutboxConfig(), metrics, redactor)
    config = alerts_config()
    dispatcher.configure(config.routes)
    engine = await AlertEngine.open(db, config, dispatcher, metrics, clock=clock)
    since = clock.now
    said = f"404 Not Found: no route /{venue_key}/info (signer {KEY[2:]})"
    for _ in range(3):
        clock.now += 121
        await engine.tick(rpc_healthy={}, index_lag={}, keeper_balance={},
                          venues_failing={"hl": (since, said)})
    entries = list(reversed(await Outbox(db).entries(limit=100)))
    assert len(entries) == 2  # fired once, to each of the route's two sinks
    stored = str(engine.firing())
    for text in (str([e.alerts for e in entries]), stored):
        assert venue_key not in text and KEY[2:] not in text
        assert REDACTED in text
    await engine.tick(rpc_healthy={}, index_lag={}, keeper_balance={},
                      venues_failing={"hl": None})
    resolved = [e.alerts[0] for e in reversed(await Outbox(db).entries(limit=100))
                if e.status == "resolved"]
    assert len(resolved) == 2 and all(venue_key not in str(a) for a in resolved)
