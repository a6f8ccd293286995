"""Silences: Alertmanager-style label matchers that mute notifications for a while.

From config (permanent, `alerts.silences`) or from the CLI (`keeperd silence add|list|expire`,
stored in the state database, so the running daemon sees them at its next evaluation). A
silenced alert still has its state tracked: when the silence ends and the alert is still
firing, it is sent then.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS silences (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    matchers    TEXT NOT NULL,
    comment     TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  REAL NOT NULL,
    ends_at     REAL NOT NULL
);
"""

_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual.lower() == self.value.lower()
        if self.op == "!=":
            return actual.lower() != self.value.lower()
        hit = re.fullmatch(self.value, actual, re.IGNORECASE) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.label}{self.op}{self.value}"


def parse_matcher(text: str) -> Matcher:
    m = _MATCHER.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a matcher; write label=value, label!=value, "
                         "label=~regex or label!~regex (e.g. account=0xabc..., rule=oracle)")
    label, op, value = m.group(1), m.group(2), m.group(3).strip("\"'")
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{text!r}: bad regular expression ({exc})") from None
    return Matcher(label, op, value)


@dataclass(frozen=True)
class Silence:
    id: int | None  # None: from config
    matchers: tuple[Matcher, ...]
    comment: str
    created_by: str
    ends_at: float  # inf for config silences

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


class Silences:
    def __init__(self, db: sqlite3.Connection,
                 configured: Iterable[tuple[list[str], str]] = ()) -> None:
        self._db = db
        self._db.executescript(SCHEMA)
        self.configured: list[Silence] = []
        self.set_configured(configured)

    def set_configured(self, configured: Iterable[tuple[list[str], str]]) -> None:
        self.configured = [Silence(None, tuple(parse_matcher(m) for m in matchers), comment,
                                   "config", float("inf")) for matchers, comment in configured]

    def add(self, matchers: list[str], duration_s: float, comment: str,
            created_by: str = "cli", now: float | None = None) -> int:
        parsed = [parse_matcher(m) for m in matchers]
        if not parsed:
            raise ValueError("a silence needs at least one matcher")
        now = time.time() if now is None else now
        cur = self._db.execute(
            "INSERT INTO silences (matchers, comment, created_by, created_at, ends_at) "
            "VALUES (?,?,?,?,?)", (json.dumps([str(m) for m in parsed]), comment, created_by,
                                   now, now + duration_s))
        return int(cur.lastrowid or 0)

    def expire(self, silence_id: int, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        cur = self._db.execute("UPDATE silences SET ends_at = ? WHERE id = ? AND ends_at > ?",
                               (now, silence_id, now))
        return cur.rowcount > 0

    def active(self, now: float | None = None) -> list[Silence]:
        now = time.time() if now is None else now
        rows = self._db.execute("SELECT id, matchers, comment, created_by, ends_at FROM silences "
                                "WHERE ends_at > ? ORDER BY id", (now,)).fetchall()
        stored = [Silence(r[0], tuple(parse_matcher(m) for m in json.loads(r[1])), r[2], r[3],
                          r[4]) for r in rows]
        return self.configured + stored

    def matching(self, labels: Mapping[str, str], now: float | None = None) -> Silence | None:
        for silence in self.active(now):
            if silence.matches(labels):
                return silence
        return None
