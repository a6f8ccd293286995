"""Missing series never read as zero (#30 item 3): the tests' metric helpers refuse a series
that does not exist unless absence is what the test claims, and then only for a registered
metric asked with exactly its labels."""

from __future__ import annotations

import pytest

from keeperd.metrics import Metrics
from tests.conftest import metric_absent, metric_value

RETRIES = "keeperd_rpc_retries_total"
LABELS = {"chain": "devnet", "method": "eth_call"}


def test_a_series_never_exported_is_not_a_zero() -> None:
    with pytest.raises(AssertionError, match="no series"):
        metric_value(Metrics(), RETRIES, LABELS)


def test_absence_is_claimed_only_of_a_registered_metric_with_its_own_labels() -> None:
    metrics = Metrics()
    assert metric_absent(metrics, RETRIES, LABELS)
    with pytest.raises(AssertionError, match="no metric keeperd_rpc_retry_total"):
        metric_absent(metrics, "keeperd_rpc_retry_total", LABELS)  # a renamed metric
    with pytest.raises(AssertionError, match="has the labels"):
        metric_absent(metrics, RETRIES, {"chain": "devnet", "method_": "eth_call"})


def test_a_series_at_zero_is_not_absent() -> None:
    metrics = Metrics()
    metrics.rpc_retries.labels(**LABELS)  # created, never incremented
    assert not metric_absent(metrics, RETRIES, LABELS)
    assert metric_value(metrics, RETRIES, LABELS) == 0
