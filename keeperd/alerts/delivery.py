"""Delivery: one loop per sink takes due entries from the outbox, sends them, and records the
outcome (delivered; retry with exponential backoff and jitter; wait for the platform's
`retry_after`; dead-letter after `max_attempts`, a malformed request (400/413/422), or a refusal
(401/403/404...) that lasted `refused_retry_s`).

A sink that fails pauses as a whole (its next entries would fail the same way), and each sink
has its own token bucket (the route's rate limit): entries over the limit wait, none are lost.
Routes can be swapped at run time (SIGHUP): the loops restart with the new sinks. Entries are
keyed by (route, sink id), so a sink moved within its route keeps its own; entries for a sink
that no longer exists stay on disk and are reported (a warning at each start and reload, and
`keeperd_outbox_orphaned`) until the sink comes back or `keeperd alerts outbox` re-routes or
drops them.

With replicas sharing the outbox (PostgreSQL), only the one that acts (the leader) delivers,
and it claims each row under its lease's fence just before sending it: a replica that lost the
lease sends nothing more, and the next leader delivers what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from keeperd.alerts.outbox import Entry, Outbox
from keeperd.alerts.sinks import AlertmanagerSink, Delivery, Sink, make_sink
from keeperd.config import OutboxConfig, RouteConfig, sink_id_issues
from keeperd.crashpoints import crash_point
from keeperd.iokit import MAX_RETRY_AFTER_S, TokenBucket, backoff_delay
from keeperd.logs import Redactor
from keeperd.metrics import Metrics

log = structlog.get_logger(__name__)


@dataclass
class SinkRuntime:
    route: str
    sink_id: str  # what its outbox rows and metrics name it by
    index: int  # its place in the route now (only to adopt rows queued before sink ids)
    sink: Sink
    bucket: TokenBucket
    paused_until: float = 0.0  # time.monotonic(): a wall-clock step moves no pause
    wake: asyncio.Event = field(default_factory=asyncio.Event)


# Messages per minute per sink when the route sets none: the platforms' own limits for one
# chat or channel, and a generous ceiling for machines.
DEFAULT_RATE = {"telegram": 20, "discord": 30, "slack": 60, "webhook": 600, "alertmanager": 600}

FiringProvider = Callable[[str], list[dict[str, Any]]]

STANDBY_POLL_S = 0.5  # how soon a replica that becomes the leader starts delivering


class Dispatcher:
    def __init__(self, outbox: Outbox, settings: OutboxConfig, metrics: Metrics,
                 redactor: Redactor | None = None, *,
                 rng: Callable[[], float] = random.random,
                 acting: Callable[[], bool] = lambda: True) -> None:
        self.outbox = outbox
        self.acting = acting
        self.settings = settings
        self.metrics = metrics
        self.redactor = redactor
        self.rng = rng
        self.sinks: dict[tuple[str, str], SinkRuntime] = {}  # by (route, sink id)
        self.firing_provider: FiringProvider | None = None
        # The silence muting a queued alert now (its id), or None (the alert engine's): a
        # silence added while notifications wait in the outbox — a sink down, the moment an
        # operator silences the noise — applies to them too, as Alertmanager's does at
        # notification time (they were all delivered when the sink came back: a trial).
        self.silenced: Callable[[dict[str, Any]], str | None] | None = None
        self._reconfigured = asyncio.Event()
        # Rows a sink accepted whose "delivered" could not be written (a full disk): never
        # sent again, marked once the database takes writes.
        self._unrecorded: set[int] = set()
        self._session: aiohttp.ClientSession | None = None
        self._adopted = False  # rows queued before sink ids: given ids at the start only
        # Sends under way. A reload or a stop lets them finish and be recorded: cancelled
        # mid-request, the receiver may have the notification while its row stays pending,
        # and it would go out twice.
        self._delivering: set[asyncio.Task[bool]] = set()

    def configure(self, routes: list[RouteConfig]) -> None:
        """Build the sinks of these routes (reading secret files now: an error names the
        route and sink). The running loops switch to them."""
        duplicates = sink_id_issues(routes)
        if duplicates:  # (`load_config` refuses them: this is a config built another way)
            raise ValueError(str(duplicates[0]))
        sinks: dict[tuple[str, str], SinkRuntime] = {}
        for route in routes:
            for i, sink_config in enumerate(route.sinks):
                try:
                    sink = make_sink(sink_config)
                except Exception as exc:
                    raise ValueError(f"alerts.routes[{route.name}].sinks[{i}]: {exc}") from None
                if self.redactor is not None:
                    for secret in sink.secrets:
                        self.redactor.add(secret)
                per_minute = route.rate_limit_per_minute or DEFAULT_RATE[sink.kind]
                bucket = TokenBucket(per_minute / 60, burst=per_minute)
                sink_id = sink_config.sink_id
                sinks[(route.name, sink_id)] = SinkRuntime(route.name, sink_id, i, sink, bucket)
        self.sinks = sinks
        self._reconfigured.set()

    def route_sinks(self, route: str) -> list[SinkRuntime]:
        """The route's sinks, in the config's order."""
        return [rt for rt in self.sinks.values() if rt.route == route]

    def wake(self) -> None:
        for rt in self.sinks.values():
            rt.wake.set()

    # --- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            self._session = session
            try:
                while True:
                    self._reconfigured.clear()
                    if not self._adopted:
                        try:  # (a database error here ended the daemon: tried at the next)
                            await self._adopt_legacy_rows()
                            self._adopted = True
                        except Exception as exc:
                            log.warning("alerts.legacy_rows_unadopted",
                                        error=f"{type(exc).__name__}: {exc}"[:300],
                                        meaning="rows queued before sinks had ids wait; "
                                                "tried again at the next reload")
                    await self._report_orphans_guarded()
                    tasks = [asyncio.create_task(self._sink_loop(rt),
                                                 name=f"alerts:{rt.route}:{rt.sink_id}")
                             for rt in self.sinks.values()]
                    tasks += [asyncio.create_task(self._resend_loop(rt),
                                                  name=f"alerts:{rt.route}:{rt.sink_id}:resend")
                              for rt in self.sinks.values()
                              if isinstance(rt.sink, AlertmanagerSink)]
                    tasks.append(asyncio.create_task(self._metrics_loop()))
                    stopping = False
                    try:
                        await self._reconfigured.wait()
                    except asyncio.CancelledError:
                        stopping = True
                        raise
                    finally:
                        for t in tasks:
                            t.cancel()
                        await asyncio.gather(*tasks, return_exceptions=True)
                        await self._let_deliveries_finish(
                            self.settings.flush_on_stop_s if stopping else None)
            finally:
                self._session = None

    async def _let_deliveries_finish(self, limit_s: float | None) -> None:
        """Wait for the sends under way: on a reload before the new sinks start (each is
        bounded by its sink's timeout); on a stop within `limit_s` (flush_on_stop_s: the
        unit's stop timeout leaves no more), after which one still out is cut short — its
        row stays pending, and the receiver may get it again after the restart."""
        if not self._delivering:
            return
        done, left = await asyncio.wait(set(self._delivering), timeout=limit_s)
        for task in left:
            task.cancel()
            log.warning("alerts.send_cut_short", limit_s=limit_s,
                        meaning="a send still out at stop: its notification stays in the "
                                "outbox and may reach the receiver twice")
        for task in done:
            error = None if task.cancelled() else task.exception()
            if isinstance(error, Exception):
                log.warning("alerts.outbox_unavailable", error=f"{type(error).__name__}: "
                            f"{error}", during="a send finished on reload or stop")
        if left:
            await asyncio.gather(*left, return_exceptions=True)

    async def flush(self, budget_s: float) -> int:
        """On stop: deliver what is due now, within `budget_s`; the rest stays on disk."""
        if not self.sinks or budget_s <= 0:
            return 0
        delivered = 0
        deadline = time.monotonic() + budget_s
        async with aiohttp.ClientSession() as session:
            for rt in self.sinks.values():
                # (a standby neither reads nor writes the outbox: `due` drops a row that
                # does not read, a write to the shared database — a review)
                while time.monotonic() < deadline and rt.paused_until <= time.monotonic() \
                        and self.acting():
                    entries = await self.outbox.due(rt.route, rt.sink_id,
                                                    horizon=self._horizon())
                    if not entries or not self.acting():
                        break
                    remaining = deadline - time.monotonic()
                    try:
                        ok = await asyncio.wait_for(self._deliver(rt, entries[0], session),
                                                    remaining)
                    except TimeoutError:
                        break
                    delivered += ok
        await self._refresh_metrics()
        left = sum(n for n, _ in (await self.outbox.stats()).values())
        log.info("alerts.flushed", delivered=delivered, left_in_outbox=left)
        return delivered

    async def _sink_loop(self, rt: SinkRuntime) -> None:
        while True:
            try:
                await self._sink_step(rt)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database (a PostgreSQL restart): rows wait there
                log.warning("alerts.outbox_unavailable", route=rt.route, sink=rt.sink_id,
                            error=f"{type(exc).__name__}: {exc}", retry_in_s=1.0)
                await asyncio.sleep(1.0)

    async def _sink_step(self, rt: SinkRuntime) -> None:
        """One turn of a sink's loop: wait, or deliver its most urgent due entry."""
        assert self._session is not None
        if rt.paused_until > time.monotonic():
            await asyncio.sleep(rt.paused_until - time.monotonic())
            return
        now = time.time()
        if not self.acting():  # a standby replica: the leader delivers
            rt.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rt.wake.wait(), STANDBY_POLL_S)
            return
        entries = await self.outbox.due(rt.route, rt.sink_id, now, horizon=self._horizon())
        if not entries:
            next_at = await self.outbox.next_eligible_at(rt.route, rt.sink_id,
                                                         horizon=self._horizon())
            timeout = 5.0 if next_at is None else min(5.0, max(0.01, next_at - now))
            rt.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rt.wake.wait(), timeout)
            return
        wait = rt.bucket.wait_time()
        if wait > 0:
            self.metrics.notifications.labels(rt.route, rt.sink_id, "rate_limited").inc()
            log.info("alerts.rate_limited", route=rt.route, sink=rt.sink_id,
                     wait_s=round(wait, 2), pending=len(entries))
            await asyncio.sleep(wait)
            return
        rt.bucket.take()
        delivery = asyncio.create_task(self._deliver(rt, entries[0], self._session))
        self._delivering.add(delivery)
        delivery.add_done_callback(self._delivering.discard)
        await asyncio.shield(delivery)
        await self._refresh_metrics()

    async def _deliver(self, rt: SinkRuntime, entry: Entry,
                       session: aiohttp.ClientSession) -> bool:
        if entry.id in self._unrecorded:  # accepted already: record it, do not send again
            await self.outbox.delivered(entry.id, time.time())
            self._unrecorded.discard(entry.id)
            return True
        if self.silenced is not None:
            # (a resolution goes through a silence, as the engine lets it: the receiver must
            # learn that what it was told has ended — dropped, its incident stayed open)
            muted = [None if a.get("status") == "resolved" else self.silenced(a)
                     for a in entry.alerts]
            if all(m is not None for m in muted):
                await self.outbox.drop_entry(entry.id, f"silenced after it was queued "
                                                       f"(silence {muted[0]})")
                self.metrics.notifications.labels(rt.route, rt.sink_id, "silenced").inc()
                log.info("alerts.dropped_silenced", route=rt.route, sink=rt.sink_id,
                         entry=entry.id, rule=entry.alerts[0]["rule"], silence=muted[0])
                return False
        if not await self.outbox.claim(entry.id):  # delivered by another replica meanwhile
            return False
        # (each alert with the time it was queued: the same at every attempt, so a message
        # split in parts renders the same parts again)
        try:
            result = await rt.sink.send(session, [{**a, "queued_at": entry.created_at}
                                                  for a in entry.alerts],
                                        entry.idempotency_key, entry.parts_done)
        except Exception as exc:
            # A sink's own fault (a receiver's answer it could not read): a failed attempt of
            # this row, counted, backed off and in time dead-lettered. Escaped, it went past
            # everything that records one — the row, claimed, was sent again every second for
            # good, and every row behind it waited (an audit).
            log.error("alerts.sink_raised", route=rt.route, sink=rt.sink_id, entry=entry.id,
                      exc_info=exc)
            result = Delivery(False, entry.parts_done, error=f"{type(exc).__name__}: {exc}"[:300])
        now = time.time()
        labels = (rt.route, rt.sink_id)
        fields = {"route": rt.route, "sink": rt.sink_id, "entry": entry.id,
                  "rule": entry.alerts[0]["rule"], "alerts": len(entry.alerts),
                  "attempt": entry.attempts + 1}
        if result.ok:
            crash_point("sink.accepted")
            try:
                await self.outbox.delivered(entry.id, now)
            except Exception:
                self._unrecorded.add(entry.id)
                self.metrics.state_write_errors.labels("outbox").inc()
                raise
            self.metrics.notifications.labels(*labels, "delivered").inc()
            log.info("alerts.delivered", status=entry.status, **fields)
            # (the sink answers again: what waits in backoff for it goes now — an older
            # message of an account in a 15-minute backoff held that account's newer
            # critical one while the sink delivered others, a review)
            await self.outbox.expedite(rt.route, rt.sink_id, now)
            return True
        error = self.redactor.scrub(result.error) if self.redactor else result.error
        if result.retry_after is not None:
            # The platform told us when; that is not a failed attempt.
            await self.outbox.retry(entry.id, now + result.retry_after, error, count=False,
                                    parts_done=result.parts_done)
            rt.paused_until = time.monotonic() + result.retry_after
            self.metrics.notifications.labels(*labels, "rate_limited").inc()
            log.warning("alerts.sink_rate_limited", retry_after_s=result.retry_after,
                        error=error, **fields)
            return False
        refused_too_long = result.refused and (
            now - entry.created_at >= self.settings.refused_retry_s)
        if (result.permanent or refused_too_long
                or entry.attempts + 1 >= self.settings.max_attempts):
            await self.outbox.dead(entry.id, error)
            self.metrics.notifications.labels(*labels, "dead").inc()
            log.error("alerts.dead_letter", error=error, permanent=result.permanent,
                      refused=result.refused,
                      action="fix the sink, then `keeperd alerts retry` requeues it", **fields)
            return False
        delay = backoff_delay(entry.attempts, self.settings.backoff_initial_s,
                              self.settings.backoff_max_s, self.rng)
        await self.outbox.retry(entry.id, now + delay, error, parts_done=result.parts_done)
        rt.paused_until = time.monotonic() + delay
        self.metrics.notifications.labels(*labels, "retry").inc()
        log.warning("alerts.delivery_failed", error=error, retry_in_s=round(delay, 2), **fields)
        return False

    def _horizon(self) -> float:
        """The longest keeperd ever schedules a retry ahead (its backoff with jitter, a
        bounded Retry-After): an entry due later than this was scheduled before the wall clock
        stepped back, and is due now. (Rows keep wall-clock times: they outlive the process.)"""
        return max(1.5 * self.settings.backoff_max_s, MAX_RETRY_AFTER_S) + 60.0

    async def _resend_loop(self, rt: SinkRuntime) -> None:
        """Alertmanager resolves an alert that is not re-sent within its resolve_timeout:
        re-post what is firing on this route, as Prometheus does."""
        assert isinstance(rt.sink, AlertmanagerSink) and self._session is not None
        while True:
            await asyncio.sleep(rt.sink.config.resend_s)
            if not self.acting():
                continue
            try:
                error = await self._resend_once(rt)
            except Exception as exc:  # this round's: the next one re-sends (an audit: it
                # ended the loop silently, and Alertmanager resolved what still fired)
                error = f"{type(exc).__name__}: {exc}"
            if error is not None:
                log.warning("alerts.alertmanager_resend_failed", route=rt.route,
                            error=self.redactor.scrub(error) if self.redactor else error)

    async def _resend_once(self, rt: SinkRuntime) -> str | None:
        """Re-post what fires on the route now; the error, if it was not taken."""
        assert self._session is not None
        firing = self.firing_provider(rt.route) if self.firing_provider else []
        if not firing:
            return None
        result = await rt.sink.send(self._session, firing, "resend")
        return None if result.ok else result.error

    async def _metrics_loop(self) -> None:
        while True:
            try:
                await self._refresh_metrics()
                if self.acting():
                    pruned = await self.outbox.prune(self.settings.keep_delivered_s)
                    if pruned:
                        log.info("alerts.outbox_pruned", entries=pruned)
            except Exception as exc:  # a database hiccup: the gauges wait for the next round
                log.warning("alerts.outbox_metrics_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(10)

    async def _refresh_metrics(self) -> None:
        stats = await self.outbox.stats()
        # (cleared first: a sink removed, restored, or its rows re-routed or dropped, leaves
        # no stale series)
        for gauge in (self.metrics.outbox_depth, self.metrics.outbox_oldest,
                      self.metrics.outbox_orphaned):
            gauge.clear()
        for rt in self.sinks.values():
            count, age = stats.get((rt.route, rt.sink_id), (0, 0.0))
            self.metrics.outbox_depth.labels(rt.route, rt.sink_id).set(count)
            self.metrics.outbox_oldest.labels(rt.route, rt.sink_id).set(age)
        for (route, sink_id), (count, _) in stats.items():
            if (route, sink_id) not in self.sinks:
                self.metrics.outbox_orphaned.labels(route, sink_id).set(count)
        self.metrics.outbox_dead.set(await self.outbox.dead_count())

    async def _adopt_legacy_rows(self) -> None:
        """Rows queued before sinks had ids name the sink's place in its route: each takes the
        id of the sink there at start, if of the kind it was queued for (the first start after
        the upgrade: the config the old version ran with). Never on a reload, whose order may
        differ: what is left is reported as waiting for a removed sink."""
        for rt in self.sinks.values():
            adopted = await self.outbox.adopt(rt.route, rt.index, rt.sink_id, rt.sink.kind)
            if adopted:
                log.info("alerts.outbox_rows_adopted", route=rt.route, index=rt.index,
                         sink=rt.sink_id, entries=adopted)

    async def _report_orphans_guarded(self) -> None:
        """`_report_orphans`, whose failure is logged, not raised: `run` is a child of the
        daemon's TaskGroup, and a database error here (at a SIGHUP, a promotion) ended the
        whole process (an audit). The report waits for the next reload, the gauges for
        `_metrics_loop`'s next round."""
        try:
            await self._report_orphans()
        except Exception as exc:
            log.warning("alerts.outbox_stats_failed", error=f"{type(exc).__name__}: {exc}",
                        during="the report of rows for sinks no longer configured")

    async def _report_orphans(self) -> None:
        for (route, sink_id), (count, age) in (await self.outbox.stats()).items():
            if (route, sink_id) not in self.sinks:
                log.warning("alerts.orphaned_entries", route=route, sink=sink_id,
                            pending=count, oldest_age_s=round(age),
                            action="these wait for a sink that is no longer configured: "
                                   "restore it in alerts.routes (with this id), or `keeperd "
                                   f"alerts outbox reroute {route}/{sink_id} --to ROUTE/SINK` "
                                   f"or `keeperd alerts outbox drop {route}/{sink_id}`")
        await self._refresh_metrics()
