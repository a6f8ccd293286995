"""What an alert is: a rule's verdict about one thing (an account, an asset, a chain).

The fingerprint (rule + identifying labels) names the thing across blocks and restarts; the
notification kind says why a message goes out now (it fired, got worse, is still firing after
the repeat interval, resolved, was a one-off event, or was retracted by a reorg).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("info", "warning", "critical")


def severity_rank(severity: str | None) -> int:
    return -1 if severity is None else SEVERITIES.index(severity)


def fingerprint(rule: str, labels: dict[str, str]) -> str:
    text = json.dumps([rule, sorted(labels.items())], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Alert:
    rule: str
    severity: str
    kind: str
    labels: dict[str, str]  # identify the thing: chain, protocol, account, asset, watchlist
    summary: str  # one human line
    action: str = ""  # what to do about it
    value: float | None = None
    details: dict[str, Any] = field(default_factory=dict)  # health_factor, debt_usd, links...
    chain: str | None = None
    block: int | None = None
    starts_at: float = field(default_factory=time.time)
    inhibited_by: tuple[str, ...] = ()
    key: str | None = None  # fingerprint override for one-off events (e.g. per transaction)

    @property
    def status(self) -> str:
        return "resolved" if self.kind in ("resolved", "retracted") else "firing"

    @property
    def fingerprint(self) -> str:
        return self.key or fingerprint(self.rule, self.labels)

    def to_json(self) -> dict[str, Any]:
        """The receiver-facing shape (the webhook's body when not grouped)."""
        out: dict[str, Any] = {
            "status": self.status,
            "kind": self.kind,
            "rule": self.rule,
            "severity": self.severity,
            "summary": self.summary,
            "action": self.action,
            "fingerprint": self.fingerprint,
            "labels": dict(self.labels),
            "chain": self.chain,
            "block": self.block,
            "starts_at": self.starts_at,
            "inhibited_by": list(self.inhibited_by),
            "details": dict(self.details),
        }
        for name in ("account", "protocol", "asset", "watchlist"):
            if name in self.labels:
                out[name] = self.labels[name]
        if "health_factor" in self.details:
            out["health_factor"] = self.details["health_factor"]
        if self.kind == "retracted":
            out["retracted"] = True
        return out
