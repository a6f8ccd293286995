"""The counters Prometheus rules take an increase() of are exported at 0 from the start: a
series born at 1 is no increase to Prometheus, and KeeperdLiquidationsReverting and
KeeperdStateNotWritable missed a process's first revert and first failed write (a trial,
with promtool: only the series that was there at 0 fired)."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import generate_latest

from keeperd.execution.executor import FUNNEL_STAGES
from keeperd.metrics import Metrics

RULES = Path(__file__).resolve().parents[2] / "config" / "prometheus" / "keeperd-rules.yml"


def test_state_write_errors_are_there_at_zero() -> None:
    text = generate_latest(Metrics().registry).decode()
    for what in ("status", "checkpoint", "index", "outbox"):
        assert f'keeperd_state_write_errors_total{{what="{what}"}} 0.0' in text, what


def test_every_funnel_stage_a_rule_watches_is_exported_from_the_start() -> None:
    watched = set(re.findall(r'keeperd_liquidations_total\{stage="([a-z_]+)"\}',
                             RULES.read_text()))
    assert watched and watched <= set(FUNNEL_STAGES), watched - set(FUNNEL_STAGES)
