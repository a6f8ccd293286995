"""`keeperd alerts outbox list|drop|reroute`: what waits in the outbox for each sink, and what
to do with the notifications of a sink the config no longer has.

The outbox keys rows by (route, sink id), so a sink removed from the config (or whose derived
id changed with its destination) leaves its pending rows behind: the daemon reports them
(`alerts.orphaned_entries`, `keeperd_outbox_orphaned`) and never sends them. An operator drops
them, or re-routes them to a sink the config has; a sink still configured is the daemon's to
deliver, so neither command touches it.
"""

from __future__ import annotations

from dataclasses import dataclass

from keeperd.alerts.catalog import suggest
from keeperd.alerts.outbox import LEGACY_PREFIX, Outbox
from keeperd.config import AlertsConfig, SinkConfig


@dataclass(frozen=True, order=True)
class SinkRef:
    """A sink as the outbox names it: its route and its id (`ROUTE/SINK` on the command line,
    as `keeperd alerts outbox list` prints it)."""

    route: str
    sink: str

    def __str__(self) -> str:
        return f"{self.route}/{self.sink}"

    @classmethod
    def parse(cls, text: str, option: str) -> SinkRef:
        route, sep, sink = text.partition("/")
        if not sep or not route or not sink or "/" in sink:
            raise OutboxCommandError(f"{option} {text!r}: write ROUTE/SINK_ID (as `keeperd "
                                     "alerts outbox list` prints it, e.g. ops/telegram-123)")
        return cls(route, sink)


class OutboxCommandError(Exception):
    """What the command refused, the choices, and what to do instead (one line)."""


@dataclass(frozen=True)
class Waiting:
    ref: SinkRef
    pending: int
    oldest_age_s: float
    configured: bool

    @property
    def legacy(self) -> bool:
        """Queued before sinks had ids: the daemon gives them their sink's id at its next
        start."""
        return self.ref.sink.startswith(LEGACY_PREFIX)


def configured(config: AlertsConfig) -> dict[SinkRef, SinkConfig]:
    return {SinkRef(route.name, sink.sink_id): sink
            for route in config.routes for sink in route.sinks}


async def waiting(outbox: Outbox, config: AlertsConfig) -> list[Waiting]:
    """Every sink with pending notifications, configured or not."""
    sinks = configured(config)
    return [Waiting(ref, count, age, ref in sinks)
            for ref, (count, age) in sorted((SinkRef(route, sink), v)
                                            for (route, sink), v in
                                            (await outbox.stats()).items())]


async def _removed(outbox: Outbox, config: AlertsConfig, ref: SinkRef) -> Waiting:
    """`ref`'s pending rows, when its sink is not in the config; else why not."""
    found = {w.ref: w for w in await waiting(outbox, config)}
    if ref in configured(config):
        raise OutboxCommandError(
            f"{ref} is a configured sink: the daemon delivers what waits for it. This command "
            "is for a sink removed from alerts.routes; remove it there first (and reload)")
    if ref not in found:
        removed = [str(r) for r, w in found.items() if not w.configured]
        raise OutboxCommandError(
            f"nothing waits for {ref}{suggest(str(ref), removed)}; sinks no longer configured "
            f"with notifications waiting: {', '.join(removed) or 'none'} "
            "(`keeperd alerts outbox list`)")
    return found[ref]


async def drop(outbox: Outbox, config: AlertsConfig, ref: SinkRef) -> int:
    """Give up what waits for a removed sink; how many notifications."""
    await _removed(outbox, config, ref)
    return await outbox.drop(ref.route, ref.sink)


async def reroute(outbox: Outbox, config: AlertsConfig, ref: SinkRef, to: SinkRef) -> int:
    """Send what waits for a removed sink to a configured one; how many notifications."""
    sinks = configured(config)
    target = sinks.get(to)
    if target is None:
        names = [str(r) for r in sinks]
        raise OutboxCommandError(
            f"--to {to}: no such sink in the config{suggest(str(to), names)}; configured "
            f"sinks: {', '.join(names) or 'none'}")
    await _removed(outbox, config, ref)
    return await outbox.reroute(ref.route, ref.sink, to.route, to.sink, target.kind)


def render(rows: list[Waiting]) -> str:
    if not rows:
        return "outbox: nothing pending"
    width = max(len(str(w.ref)) for w in rows)
    lines = ["outbox: pending notifications by sink (ROUTE/SINK_ID)"]
    for w in rows:
        note = ""
        if w.legacy:
            note = ("  queued before sink ids: the daemon gives them the id of the sink at "
                    f"place {w.ref.sink[len(LEGACY_PREFIX):]} of the route at its next start")
        elif not w.configured:
            note = ("  NOT CONFIGURED: never sent; `keeperd alerts outbox reroute "
                    f"{w.ref} --to ROUTE/SINK_ID` or `keeperd alerts outbox drop {w.ref}`")
        lines.append(f"  {w.ref!s:{width}}  {w.pending} pending, oldest "
                     f"{w.oldest_age_s:,.0f} s{note}")
    return "\n".join(lines)
