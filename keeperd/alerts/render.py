"""Alerts as text for people: Telegram HTML, Slack mrkdwn, Discord markdown, plain.

Every value that came from outside (labels, summaries, error strings) is escaped for the
target markup; a message longer than the platform's limit is split on line boundaries into
several, never inside an HTML entity or tag.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any, Literal

from keeperd.text import utc_text

Markup = Literal["html", "slack", "discord", "plain"]

_ICON = {"critical": "🔴", "warning": "🟠", "info": "🔵"}
_RULE_TITLE = {
    "position_health": "position health",
    "position_liquidated": "position liquidated",
    "liquidation": "keeper liquidation",
    "oracle": "oracle",
    "keeper_balance": "keeper gas balance",
    "rpc_down": "RPC down",
    "index_lag": "index lag",
    "cascade_risk": "cascade risk",
    "watched_without_position": "watched account without a position",
    "liquidations_held": "liquidations held",
    "revision_unverified": "unverified protocol revision",
    "capital_shortfall": "capital shortfall",
    "key_in_use_elsewhere": "keeper key in use elsewhere",
    "sending_paused": "sending paused",
    "rpc_wrong_chain": "RPC on another chain",
    "venue_down": "perp venue down",
}


def _escape(markup: Markup) -> Callable[[str], str]:
    if markup == "html":
        return lambda s: html.escape(s, quote=False)
    if markup == "slack":  # Slack asks for exactly these three
        return lambda s: s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if markup == "discord":
        return lambda s: "".join("\\" + c if c in "\\*_~`|>[]()" else c for c in s)
    return lambda s: s


def _bold(markup: Markup, s: str) -> str:
    return {"html": f"<b>{s}</b>", "slack": f"*{s}*", "discord": f"**{s}**"}.get(markup, s)


def _link(markup: Markup, url: str, text: str) -> str:
    if markup == "html":
        return f'<a href="{html.escape(url, quote=True)}">{text}</a>'
    if markup == "slack":
        return f"<{url}|{text}>"
    if markup == "discord":
        return f"[{text}](<{url}>)"
    return f"{text}: {url}"


def title(alerts: Sequence[dict[str, Any]]) -> str:
    first = alerts[0]
    rule = _RULE_TITLE.get(first["rule"], first["rule"])
    status = first["kind"] if first["kind"] in ("resolved", "retracted") else first["severity"]
    count = f" · {len(alerts)} alerts" if len(alerts) > 1 else ""
    return f"{status.upper()} · {rule}{count}"


def render(alerts: Sequence[dict[str, Any]], markup: Markup) -> str:
    """One message for a group of alerts (one or many) that share rule, status and severity."""
    header, blocks, action = _pieces(alerts, markup, "")
    return "\n".join([header, *blocks, *([action] if action else [])])


def render_parts(alerts: Sequence[dict[str, Any]], markup: Markup, limit: int) -> list[str]:
    """`render`, as messages of at most `limit` characters: split between alerts, never
    inside one (an alert's facts and its warnings stay under its summary), each part headed
    by the title and `part k/n`, a shared action under the last (an alert's own action is
    in its block, so it goes with it). A line split used to start a
    later part with an orphan: the facts of an alert whose summary ended the part before, and
    no title saying what they were (a by-hand trial). With one alert longer than a message,
    the whole is cut on its lines (`split_message`), unnumbered."""
    whole = render(alerts, markup)
    if len(whole) <= limit:
        return [whole]
    room = len(_pieces(alerts, markup, " · part 999/999")[0]) + 1
    _, blocks, action = _pieces(alerts, markup, "")
    groups: list[list[str]] = [[]]
    used = room
    for block in blocks:
        if groups[-1] and used + len(block) + 1 > limit:
            groups.append([])
            used = room
        groups[-1].append(block)
        used += len(block) + 1
    if action and used + len(action) + 1 > limit:
        groups.append([])
    n = len(groups)
    out = []
    for k, group in enumerate(groups, 1):
        header = _pieces(alerts, markup, f" · part {k}/{n}")[0]
        text = "\n".join([header, *group, *([action] if action and k == n else [])])
        if len(text) > limit:  # (one alert longer than a message: numbered parts would lie)
            return split_message(whole, limit)
        out.append(text)
    return out


def _pieces(alerts: Sequence[dict[str, Any]], markup: Markup, part: str
            ) -> tuple[str, list[str], str | None]:
    """(the title line, one block of lines per alert, the group's shared action line) of
    `render`."""
    esc = _escape(markup)
    first = alerts[0]
    icon = "✅" if first["status"] == "resolved" else _ICON.get(first["severity"], "")
    if first["kind"] == "retracted":
        icon = "↩️"
    header = f"{icon} {_bold(markup, esc(title(alerts) + part))}".strip()
    if first.get("queued_at"):
        # (when keeperd told it, not when it arrives: a message delivered after a sink's
        # outage said only its block, and read as news — a by-hand trial's came 33 s late,
        # and with the outbox's backoff it may come a quarter hour late)
        header += " · " + esc(utc_text(float(first["queued_at"])))
    firing = first["status"] == "firing"
    shared = _shared_action(alerts) if firing else None
    blocks = []
    for alert in alerts:
        line = esc(alert["summary"])
        link = alert.get("details", {}).get("explorer_url")
        if link:
            line += " · " + _link(markup, link, "explorer")
        lines = [line]
        facts = _facts(alert)
        if facts:
            lines.append("    " + esc(facts))
        # (worded for its reader by whoever raised it, `alerts/inhibition.py`: "do not act
        # on this price yet" was added here to every alert, a holder's too — told not to act
        # 40 s before the protocol liquidated them, a by-hand trial)
        for note in alert.get("inhibited_by", []):
            lines.append("    ⚠️ " + esc(note))
        own = alert.get("action") if firing and shared is None else None
        if own:
            lines.append("    ➜ " + esc(own))
        blocks.append("\n".join(lines))
    return header, blocks, ("➜ " + esc(shared) if shared else None)


def _shared_action(alerts: Sequence[dict[str, Any]]) -> str | None:
    """The action every alert of a group has, said once under them all; None when they
    differ, and each alert's goes under its own lines. The first alert's was said for the
    group: two watched accounts liquidated in one block, the second's holder read the
    first's "What is left: debt $368,111.48" as theirs (a by-hand trial)."""
    actions = {alert.get("action") or "" for alert in alerts}
    return actions.pop() or None if len(actions) == 1 else None


def _facts(alert: dict[str, Any]) -> str:
    d = alert.get("details", {})
    parts = []
    perp = bool(d.get("main_is_position"))  # (a perp account: its equity and open notional)
    if d.get("collateral_usd") is not None:
        parts.append(f"{'account value' if perp else 'collateral'} "
                     f"{usd_text(d['collateral_usd'])}")
    if d.get("debt_usd") is not None:
        parts.append(f"{'open notional' if perp else 'debt'} {usd_text(d['debt_usd'])}")
    if d.get("main_collateral"):
        drop, rise = d.get("drop_to_liquidation"), d.get("rise_to_liquidation")
        parts.append(f"main {'position' if perp else 'collateral'} "
                     f"{d['main_collateral']}"
                     + (f", liquidatable after a {drop:.1%} drop" if drop
                        else f", liquidatable after a {rise:.1%} rise" if rise else "")
                     + (f" ({d['main_collateral']} at {_price(d['liquidation_price'], unit)})"
                        if (drop or rise) and d.get("liquidation_price")
                        and (unit := d.get("price_unit")) else ""))
    if d.get("tx_hash"):
        parts.append(f"tx {d['tx_hash']}")
    if alert.get("block") is not None:
        parts.append(f"block {alert['block']}")
    return " · ".join(parts)


def usd_text(value: float) -> str:
    """$1,234.56, and -$2,277.40 below zero (a perp account's value: "$-2,277.40" read as a
    typo, a by-hand trial)."""
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


def _price(value: float, unit: str) -> str:
    """A price as a holder reads it: $2,380.15 in USD, 1.0512 WETH in another token."""
    amount = (f"{value:,.2f}" if value >= 100 else f"{value:,.4f}" if value >= 1
              else f"{value:.4g}")  # (significant digits: a rate of 1e-9 is not 0.000000)
    return f"${amount}" if unit == "USD" else f"{amount} {unit}"


def split_message(text: str, limit: int) -> list[str]:
    """Split at line boundaries into pieces of at most `limit` characters."""
    if len(text) <= limit:
        return [text]
    pieces: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > limit:  # a single line longer than a message
            cut = _safe_cut(line, limit)
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:cut])
            line = line[cut:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            pieces.append(current)
            current = line
        else:
            current = candidate
    if current:
        pieces.append(current)
    return pieces


def _safe_cut(line: str, limit: int) -> int:
    """A cut point <= limit that is not inside an HTML entity (&amp;) or tag (<b>)."""
    cut = limit
    amp, semi = line.rfind("&", 0, cut), line.rfind(";", 0, cut)
    if amp > semi and line.find(";", amp) >= cut:
        cut = amp
    lt, gt = line.rfind("<", 0, cut), line.rfind(">", 0, cut)
    if lt > gt:
        cut = lt
    return cut if cut > 0 else limit
