"""What a reload read that only a restart applies, and whether that restart would start.

A SIGHUP applies the alerting sections alone; a change anywhere else in the file waits for a
restart. It was one info line (`daemon.reloaded ... needs_restart`) and nothing after it: a
Morpho market added by a reload was not watched, its holder's account alerted
`watched_without_position` ("check the address: a typo"), and a mistyped market id reloaded
without a word — the next restart, whenever it came, refused the whole keeper (every other
protocol down with it, in a loop under systemd's Restart=on-failure; a by-hand trial). Now
the reload says it at warning level, it stays said until the restart (`keeperd status`,
`keeperd_config_restart_pending{section}`, the KeeperdConfigRestartPending rule), and the
protocols the file changed are started as `check-config` starts them, off the loop's way,
the outcome logged (an error, `keeperd_config_restart_would_fail` and
KeeperdConfigRestartWouldFail when the restart would be refused).

Only names are said of what changed: a protocol's values may hold a key (a venue's URL).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from keeperd.config import Config

# How long the reload's check of the changed protocols may take (the chains asked, each
# protocol started twice at most as check-config starts it).
RESTART_CHECK_S = 120.0

RESTART_FIX = ("restart keeperd to apply them (`systemctl restart keeperd`), or put the file "
               "back as it was and reload")


@dataclass
class RestartPending:
    """The sections the file changed since this process started (top-level names), each
    protocol change said, and the last check of what the restart would start."""

    sections: list[str]
    changes: list[str]
    # (the protocols the file added or changed, by name -> what changed: a watched account
    # without a position may hold it there)
    protocols: dict[str, str]
    since: float = field(default_factory=time.time)
    check: str = "not checked: no protocol changed"
    problems: list[str] = field(default_factory=list)

    @property
    def would_fail(self) -> bool:
        return self.check == "would fail"

    def as_status(self) -> dict[str, Any]:
        """For status.json (`keeperd status`)."""
        return {"sections": self.sections, "changes": self.changes, "since": self.since,
                "check": self.check, "problems": self.problems, "fix": RESTART_FIX}


def restart_sections(old: Config, new: Config) -> list[str]:
    """The top-level sections but `alerts` that differ between the running config and the
    file read again."""
    old_rest = old.model_dump(exclude={"alerts"})
    new_rest = new.model_dump(exclude={"alerts"})
    return sorted(k for k in new_rest if new_rest[k] != old_rest.get(k))


def protocol_changes(old: Config, new: Config) -> dict[str, str]:
    """Each protocol the file adds, changes or removes, by name -> what ("added (kind on
    chain)", "removed", or its changed fields by name: "markets 1 added" — of a list, how
    many entries came and went)."""
    before = {p.name: p.model_dump() for p in old.protocols}
    out: dict[str, str] = {}
    for proto in new.protocols:
        now = proto.model_dump()
        was = before.pop(proto.name, None)
        if was is None:
            chain = getattr(proto, "chain", None)
            out[proto.name] = f"added ({proto.kind}" + (f" on {chain})" if chain else ")")
            continue
        fields = [_field_change(k, was.get(k), v) for k, v in now.items() if was.get(k) != v]
        if fields:
            out[proto.name] = ", ".join(fields)
    for name in before:
        out[name] = "removed"
    return out


def _field_change(name: str, was: Any, now: Any) -> str:
    if isinstance(was, list) and isinstance(now, list):
        came = sum(1 for x in now if x not in was)
        went = sum(1 for x in was if x not in now)
        said = [f"{came} added"] * bool(came) + [f"{went} removed"] * bool(went)
        return f"{name} {' and '.join(said) or 'reordered'}"
    return f"{name} changed"


def protocols_to_check(old: Config, new: Config) -> list[int]:
    """The indices in `new.protocols` of the on-chain protocols a restart would start
    differently: added or changed, or on a chain whose settings changed."""
    changes = protocol_changes(old, new)
    chains_before = {c.name: c.model_dump() for c in old.chains}
    moved = {c.name for c in new.chains if chains_before.get(c.name) != c.model_dump()}
    chain_names = {c.name for c in new.chains}
    return [i for i, p in enumerate(new.protocols)
            if getattr(p, "chain", None) in chain_names
            and (p.name in changes or getattr(p, "chain", None) in moved)]
