"""Python's cyclic garbage collector held off while a liquidation path runs (issue #31 items 2
and 3).

A full collection walks every container the process holds: with a 10,000-account book, the
account index and the protocol clients in memory, one took up to 78 ms on the project's
machine (4 of them in a 30-round `bench/latency.py` run, 190 ms in all). Landing inside a
block's liquidation path, it delayed every liquidation behind it by that much; it was the
largest single cause of the run-to-run spread of the latency tail. Reference counting still
frees everything that is not a cycle while the collector is held; the collections owed run
when the last path in flight ends, in the after-work (metrics, alerts, the cascade), which
comes after the paths anyway (`liquidation_first.py`).

Several paths (one per protocol) may be in flight at once: the collector is held from the
first one's start to the last one's end. It is only ever re-enabled if it was enabled when
the hold began (a test or an embedding program that disabled it keeps it disabled).
"""

from __future__ import annotations

import gc
from types import TracebackType


class CollectorHold:
    def __init__(self) -> None:
        self.holding = 0  # paths in flight
        self._reenable = False
        self.held = 0  # holds that began (a metric for tests and logs)

    def __enter__(self) -> CollectorHold:
        if self.holding == 0:
            self._reenable = gc.isenabled()
            gc.disable()
            self.held += 1
        self.holding += 1
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.holding -= 1
        if self.holding == 0 and self._reenable:
            gc.enable()
