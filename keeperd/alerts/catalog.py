"""What keeperd's alerts are called and which labels they carry, for the commands that name
them: a silence or `keeperd alerts route` that names a label no alert carries (or a rule that
does not exist) would match nothing and say nothing, so they refuse it and list the choices.

The rules are raised in `alerts/engine.py` and `cascade_monitor.py`; a unit test checks this list
against their source. Silences see an alert's labels plus `rule` and `severity` (the engine's
`_silenced`), and `alertname` (`keeperd_<rule>`, the name Alertmanager shows).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from eth_utils import to_checksum_address

from keeperd.text import KEY_SHAPED, KEY_SHAPED_NOT_AN_ADDRESS


@dataclass(frozen=True)
class RuleInfo:
    name: str
    labels: tuple[str, ...]  # the labels its alerts carry (some only on some alerts)
    severities: tuple[str, ...]
    toggle: str | None  # its switch and route under alerts.rules; None: a watchlist's route
    what: str


RULES: dict[str, RuleInfo] = {r.name: r for r in (
    RuleInfo("position_health", ("chain", "protocol", "account", "market", "watchlist"),
             ("warning", "critical"), None,
             "a watched position's health below its watchlist's warn or critical level"),
    RuleInfo("position_liquidated", ("chain", "protocol", "account", "watchlist"),
             ("critical",), None, "a watched position was liquidated (by anyone)"),
    RuleInfo("watched_without_position", ("account", "watchlist"), ("warning",), None,
             "a watched account holds no position on its watchlist's protocols and never "
             "did since it was listed (a typo, most often): nothing about it can be told"),
    RuleInfo("liquidation", ("chain", "protocol", "account", "event"), ("info", "warning"),
             "liquidation", "keeperd's own liquidations: sent, included, reverted, lost, "
             "not sent (label event)"),
    RuleInfo("oracle", ("chain", "asset", "event"), ("warning", "critical"), "oracle",
             "a price untrusted: its breaker is tripped; or a price source replaced (label "
             "event=source_changed: critical when its price jumps from the old one's)"),
    RuleInfo("liquidations_held", ("chain", "protocol"), ("critical",), "liquidations_held",
             "liquidations on a market are held"),
    RuleInfo("revision_unverified", ("chain", "protocol"), ("warning",),
             "revision_unverified", "a market runs rules keeperd does not know for sure"),
    RuleInfo("capital_shortfall", ("chain", "protocol", "asset"), ("warning",),
             "capital_shortfall", "the keeper's balance of a debt asset falls short"),
    RuleInfo("key_in_use_elsewhere", ("chain",), ("critical",), "key_in_use_elsewhere",
             "another sender uses the keeper's key, or its address is delegated (EIP-7702)"),
    RuleInfo("sending_paused", ("chain", "protocol"), ("critical",), "sending_paused",
             "keeperd paused a protocol's sending: reverts, the gas cap, or an L1 data fee "
             "it cannot read"),
    RuleInfo("rpc_down", ("chain",), ("critical",), "rpc_down", "every RPC of a chain fails"),
    RuleInfo("rpc_wrong_chain", ("chain", "endpoint"), ("warning",), "rpc_wrong_chain",
             "an RPC endpoint answers for another network: never used"),
    RuleInfo("venue_down", ("venue",), ("critical",), "venue_down",
             "a perp venue's API fails: its watched accounts are not read"),
    RuleInfo("index_lag", ("chain", "protocol"), ("warning", "critical"), "index_lag",
             "the account index lags the chain's head"),
    RuleInfo("keeper_balance", ("chain",), ("warning", "critical"), "keeper_balance",
             "the keeper's gas balance is low"),
    RuleInfo("cascade_risk", ("chain", "protocol"), ("warning", "critical"), "cascade",
             "the bad debt a cascade would leave at the rule's shock"),
)}

SEVERITIES = ("info", "warning", "critical")
# The labels a silence can match: every rule's, and the three every alert has for silences.
LABELS: tuple[str, ...] = tuple(sorted(
    {label for r in RULES.values() for label in r.labels} | {"rule", "severity", "alertname"}))
# Values keeperd knows in advance: a silence on `rule=position_helth` would mute nothing.
KNOWN_VALUES: dict[str, tuple[str, ...]] = {
    "rule": tuple(RULES),
    "alertname": tuple(f"keeperd_{r}" for r in RULES),
    "severity": SEVERITIES,
    "event": ("sent", "included", "reverted", "lost_race", "not_sent", "source_changed"),
}


def suggest(name: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for a near miss, else ''."""
    choices = list(choices)
    folded = [c for c in choices if c.lower() == name.lower()]
    close = folded or difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def check_rule(rule: str) -> RuleInfo:
    info = RULES.get(rule)
    if info is None:
        raise ValueError(f"no alert rule {rule!r}{suggest(rule, RULES)}; keeperd's rules: "
                         f"{', '.join(RULES)}")
    return info


def check_label(label: str, value: str | None = None, *, exact: bool = True) -> None:
    """Refuse a label no keeperd alert carries, or (for an exact comparison) a value of a
    label whose values are known that none of them has."""
    if label not in LABELS:
        raise ValueError(f"no keeperd alert carries the label {label!r}"
                         f"{suggest(label, LABELS)}; labels: {', '.join(LABELS)}")
    if label == "account" and value is not None and exact and not (
            re.fullmatch(r"0x[0-9a-fA-F]{40}", value) or value.startswith("dydx1")):
        if KEY_SHAPED.fullmatch(value):  # (never echoed: it may be the key)
            raise ValueError(f"account=: {KEY_SHAPED_NOT_AN_ADDRESS}")
        # (a silence on `account=0xabc` muted nothing, and said nothing)
        raise ValueError(f"account={value}: not an account any alert carries; an account is "
                         "an address, 0x and 40 hex digits (or a dYdX address, dydx1...); "
                         "for part of one, use a regex: account=~0xabc.*")
    if label == "account" and value is not None and exact and value.startswith("0x"):
        digits = value[2:]
        if digits not in (digits.lower(), digits.upper()) and \
                value != to_checksum_address(value):
            # (a watchlist refuses it: a silence took it and, a digit mistyped, muted
            # nothing, and said nothing — a by-hand trial)
            raise ValueError(f"account={value} fails its EIP-55 checksum: a character is "
                             "likely mistyped; check it against where it came from, and if "
                             f"the hex digits are right write {to_checksum_address(value)}")
    known = KNOWN_VALUES.get(label)
    if value is not None and exact and known and value.lower() not in known:
        raise ValueError(f"{label}={value}: no keeperd alert has it"
                         f"{suggest(value, known)}; {label} is one of {', '.join(known)}")
