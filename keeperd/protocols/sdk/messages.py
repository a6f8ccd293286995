"""The messages between the pipeline's stages, in one place: a scanner's result (to its
listeners: the price watch, the executor, the alerts, the cascade monitor, and a plug-in's
liquidator, which plans from it) and what the executor did with an opportunity (to the alert
engine)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keeperd.protocols.sdk.views import HealthView


@dataclass(frozen=True)
class ScanResult:
    protocol: str
    block: int
    kind: str  # "full" | "incremental"
    book: Any  # the plug-in's book
    view: HealthView
    priority_rows: np.ndarray  # rows evaluated first because a price they depend on moved
    seconds: float
    seen_at: float  # time.perf_counter() when the block reached keeperd
    partial: bool = False  # only the accounts exposed to a moved price, ahead of the rest
    # Where the path spent its time up to this result, in ms (path_wait_ms: from the header
    # to the path's start, behind other protocols' paths; discover_ms; order_wait_ms: before
    # the read, behind them; read_ms; first_pass_ms or evaluate_ms; result_ms: from the
    # header to this result, handed to the listeners): the executor's `execution.timing`
    # carries it, beside its own evaluated_ms (from the header to the executor's turn).
    stages: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecutionEvent:
    """What the executor did with an opportunity (sent, included, reverted, lost_race,
    not_sent, ...): the alert engine's input."""

    kind: str
    chain: str
    protocol: str
    account: str
    opportunity: str
    block: int | None
    details: Mapping[str, Any]
