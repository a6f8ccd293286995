"""With replicas (the documented PostgreSQL setup), every keeperd process exports the same
gauges of the shared state and of the chain (the outbox, the alerts firing, the book): a
panel that sums a gauge over processes counts it once per replica (a by-hand trial's panel
said 2 notifications pending of 1, 6 alerts firing of 3). Every gauge a panel sums goes
through `max by (...)` over the processes first; counters (`_total`, histograms) are each
process's own and sum as they are."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "config/grafana/keeperd-dashboard.json"
COUNTERS = ("_total", "_bucket", "_count", "_sum")


def summed_gauges_counted_per_replica(expr: str) -> list[str]:
    """The gauges `expr` sums without taking one process's value first."""
    if not re.search(r"\bsum\b", expr):
        return []
    out = []
    for m in re.finditer(r"\b(keeperd_[a-z_]+)", expr):
        name = m.group(1)
        if name.endswith(COUNTERS):
            continue
        before = expr[:m.start()]
        if not re.search(r"max by \([^()]*\) \($", before):
            out.append(name)
    return out


def test_no_panel_sums_a_gauge_once_per_replica() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    problems = [f"{panel['title']!r}: {target['expr']}"
                for panel in dashboard["panels"] for target in panel.get("targets", [])
                if summed_gauges_counted_per_replica(target["expr"])]
    assert not problems, "\n".join(problems)


def test_the_check_finds_a_sum_per_replica() -> None:
    assert summed_gauges_counted_per_replica("sum(keeperd_outbox_pending)") == [
        "keeperd_outbox_pending"]
    assert summed_gauges_counted_per_replica(
        "sum(max by (route, sink) (keeperd_outbox_pending))") == []
    assert summed_gauges_counted_per_replica(
        "sum(increase(keeperd_liquidations_total[5m]))") == []
