"""The cyclic GC held off while liquidation paths run (keeperd/collector_hold.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from keeperd.collector_hold import CollectorHold


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generation of every collection that starts while the test runs."""
    seen: list[int] = []

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    was = gc.isenabled()
    gc.enable()
    gc.callbacks.append(note)
    try:
        yield seen
    finally:
        gc.callbacks.remove(note)
        (gc.enable if was else gc.disable)()


def make_cycles(n: int) -> None:
    """Garbage the collector is owed: n reference cycles (well past generation 0's
    threshold)."""
    for _ in range(n):
        a: list[Any] = []
        a.append(a)


def test_no_collection_runs_while_a_path_is_in_flight_and_they_resume_after(
        collections: list[int]) -> None:
    hold = CollectorHold()
    with hold:
        make_cycles(50_000)
        assert collections == []
        assert not gc.isenabled()
    assert gc.isenabled()
    make_cycles(50_000)
    assert collections  # (owed, and run once the hold ended)


def test_overlapping_paths_hold_it_from_the_first_start_to_the_last_end(
        collections: list[int]) -> None:
    hold = CollectorHold()
    first, second = hold.__enter__(), hold.__enter__()
    first.__exit__(None, None, None)
    make_cycles(50_000)
    assert collections == [] and not gc.isenabled()  # one path is still running
    second.__exit__(None, None, None)
    assert gc.isenabled() and hold.held == 1


def test_a_collector_disabled_by_its_embedder_stays_disabled(collections: list[int]) -> None:
    gc.disable()
    with CollectorHold():
        pass
    assert not gc.isenabled()


def test_the_hold_ends_when_the_path_fails() -> None:
    hold = CollectorHold()
    with pytest.raises(RuntimeError), hold:
        raise RuntimeError("a path that failed")
    assert hold.holding == 0 and gc.isenabled()
