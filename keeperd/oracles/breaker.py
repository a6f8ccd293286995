"""The circuit breaker: per asset, liquidations that depend on it pause while its price cannot
be trusted, and resume only after the condition has stayed clear for `clear_after_s`.

State lives in the SQLite database, so a trip survives restarts and an operator's
`keeperd breaker trip|reset ASSET` (another process) takes effect at the daemon's next block:
the daemon re-reads the table every block. Health evaluation and alerts continue while tripped.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS breaker (
    asset        TEXT PRIMARY KEY,
    tripped      INTEGER NOT NULL,
    manual       INTEGER NOT NULL,
    reason       TEXT,
    since        REAL NOT NULL,
    clear_since  REAL
);
"""


@dataclass(frozen=True)
class BreakerState:
    asset: str
    tripped: bool
    manual: bool
    reason: str | None
    since: float
    clear_since: float | None


@dataclass(frozen=True)
class Transition:
    asset: str
    tripped: bool  # True: tripped now; False: reset now
    reason: str


class Breaker:
    def __init__(self, db: sqlite3.Connection, clear_after_s: float = 300.0) -> None:
        self._db = db
        self._db.executescript(SCHEMA)
        self.clear_after_s = clear_after_s

    def states(self) -> dict[str, BreakerState]:
        return {r[0]: BreakerState(r[0], bool(r[1]), bool(r[2]), r[3], r[4], r[5])
                for r in self._db.execute("SELECT asset, tripped, manual, reason, since, "
                                          "clear_since FROM breaker")}

    def tripped(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT asset FROM breaker WHERE tripped = 1")}

    def trip(self, asset: str, reason: str, *, manual: bool = False,
             now: float | None = None) -> None:
        now = time.time() if now is None else now
        self._db.execute(
            "INSERT INTO breaker VALUES (?, 1, ?, ?, ?, NULL) ON CONFLICT (asset) DO UPDATE "
            "SET tripped = 1, manual = MAX(manual, excluded.manual), reason = excluded.reason, "
            "since = CASE WHEN tripped = 1 THEN since ELSE excluded.since END, "
            "clear_since = NULL", (asset, int(manual), reason, now))

    def reset(self, asset: str, now: float | None = None) -> None:
        """An operator's reset: clears a manual trip and any automatic one."""
        now = time.time() if now is None else now
        self._db.execute("INSERT INTO breaker VALUES (?, 0, 0, 'reset by operator', ?, ?) "
                         "ON CONFLICT (asset) DO UPDATE SET tripped = 0, manual = 0, "
                         "reason = excluded.reason, since = excluded.since, clear_since = NULL",
                         (asset, now, now))

    def observe(self, asset: str, problems: list[str], now: float | None = None
                ) -> Transition | None:
        """Fold one evaluation of the asset's price in; return a trip or reset, if any."""
        now = time.time() if now is None else now
        state = self.states().get(asset)
        if problems:
            reason = "; ".join(problems)
            if state is None or not state.tripped:
                self.trip(asset, reason, now=now)
                return Transition(asset, True, reason)
            self._db.execute("UPDATE breaker SET clear_since = NULL, reason = ? "
                             "WHERE asset = ? AND manual = 0", (reason, asset))
            return None
        if state is None or not state.tripped or state.manual:
            return None  # a manual trip only ends by an operator's reset
        if state.clear_since is None:
            self._db.execute("UPDATE breaker SET clear_since = ? WHERE asset = ?", (now, asset))
            return None
        if now - state.clear_since >= self.clear_after_s:
            self._db.execute("UPDATE breaker SET tripped = 0, reason = ?, since = ?, "
                             "clear_since = NULL WHERE asset = ?",
                             (f"clear for {now - state.clear_since:.0f} s", now, asset))
            return Transition(asset, False, f"clear for {now - state.clear_since:.0f} s")
        return None
