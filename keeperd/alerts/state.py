"""What the alert engine remembers, behind one store: per fingerprint what was last told
(severity, value, when, since when, the alert as sent), and the cursors of the log followers
that feed it. The engine, `keeperd alerts` and `keeperd status` read it through this class;
no SQL about alerts lives anywhere else (the outbox has its own, `outbox.py`).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from keeperd.alerts.lifecycle import Told

SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_state (
    fingerprint  TEXT PRIMARY KEY,
    rule         TEXT NOT NULL,
    route        TEXT NOT NULL,
    severity     TEXT NOT NULL,
    value        REAL,
    told_at      REAL NOT NULL,
    since        REAL NOT NULL,
    chain        TEXT,
    block        INTEGER,
    alert        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_cursor (
    name   TEXT PRIMARY KEY,
    block  INTEGER NOT NULL
);
"""


class AlertState:
    def __init__(self, db: sqlite3.Connection, *, create: bool = True) -> None:
        self._db = db
        if create:
            db.executescript(SCHEMA)

    @classmethod
    def exists(cls, db: sqlite3.Connection) -> bool:
        return db.execute("SELECT 1 FROM sqlite_master WHERE name = 'alert_state'"
                          ).fetchone() is not None

    # --- per fingerprint ------------------------------------------------------------------

    def told(self, fingerprint: str) -> Told | None:
        row = self._db.execute("SELECT severity, value, told_at, since FROM alert_state "
                               "WHERE fingerprint = ?", (fingerprint,)).fetchone()
        return Told(row[0], row[1], row[2], row[3]) if row else None

    def set_severity(self, fingerprint: str, severity: str) -> None:
        self._db.execute("UPDATE alert_state SET severity = ? WHERE fingerprint = ?",
                         (severity, fingerprint))

    def forget(self, fingerprint: str) -> None:
        self._db.execute("DELETE FROM alert_state WHERE fingerprint = ?", (fingerprint,))

    def record(self, fingerprint: str, rule: str, route: str, told: Told, chain: str | None,
               block: int | None, alert: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO alert_state VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT "
            "(fingerprint) DO UPDATE SET severity = excluded.severity, value = "
            "excluded.value, told_at = excluded.told_at, chain = excluded.chain, "
            "block = excluded.block, alert = excluded.alert, route = excluded.route",
            (fingerprint, rule, route, told.severity, told.value, told.at, told.since, chain,
             block, json.dumps(alert, default=str)))

    # --- views ----------------------------------------------------------------------------

    def firing(self, route: str | None = None) -> list[dict[str, Any]]:
        """The alerts as last told, oldest first."""
        if route is None:
            rows = self._db.execute("SELECT alert FROM alert_state ORDER BY since")
        else:
            rows = self._db.execute("SELECT alert FROM alert_state WHERE route = ? "
                                    "ORDER BY since", (route,))
        return [json.loads(r[0]) for r in rows]

    def counts(self) -> dict[tuple[str, str], int]:
        """(rule, severity) -> how many fire."""
        out: dict[tuple[str, str], int] = {}
        for rule, severity in self._db.execute("SELECT rule, severity FROM alert_state"):
            out[(rule, severity)] = out.get((rule, severity), 0) + 1
        return out

    def labels_of(self, rule: str) -> list[dict[str, str]]:
        """The labels of every alert of `rule` that fires (to resolve the ones no input
        mentions any more)."""
        return [json.loads(r[0])["labels"] for r in self._db.execute(
            "SELECT alert FROM alert_state WHERE rule = ?", (rule,))]

    # --- reorgs and cursors ---------------------------------------------------------------

    def forget_after(self, chain: str, ancestor: int) -> None:
        """States set on blocks that are gone; log followers rewound to the ancestor."""
        self._db.execute("DELETE FROM alert_state WHERE chain = ? AND block > ?",
                         (chain, ancestor))
        self._db.execute("UPDATE alert_cursor SET block = ? WHERE block > ? AND name LIKE "
                         "'liquidations:%'", (ancestor, ancestor))

    def cursor(self, name: str) -> int | None:
        row = self._db.execute("SELECT block FROM alert_cursor WHERE name = ?",
                               (name,)).fetchone()
        return None if row is None else int(row[0])

    def set_cursor(self, name: str, block: int) -> None:
        self._db.execute("INSERT INTO alert_cursor VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                         "SET block = excluded.block", (name, block))
