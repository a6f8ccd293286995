"""Message rendering, Telegram's limits, webhook signatures, silence matchers."""

from __future__ import annotations

import html

import pytest

from keeperd.alerts.model import Alert
from keeperd.alerts.render import render, render_parts, split_message
from keeperd.alerts.silences import parse_matcher
from keeperd.alerts.sinks import TELEGRAM_LIMIT, sign, verify, webhook_body


def alert(summary: str, **kw: object) -> dict:
    return Alert("position_health", "warning", "firing",
                 {"account": "0x" + "ab" * 20, "watchlist": "w"}, summary,
                 action="Add collateral <now> & repay", **kw).to_json()  # type: ignore[arg-type]


def test_html_escapes_everything_from_outside() -> None:
    text = render([alert("health <1.15> & falling")], "html")
    assert "health &lt;1.15&gt; &amp; falling" in text
    assert "Add collateral &lt;now&gt; &amp; repay" in text
    assert text.count("<b>") == text.count("</b>") == 1


def test_long_messages_split_on_lines_under_the_limit() -> None:
    alerts = [alert(f"account {i} & more <b>not a tag</b>") for i in range(300)]
    text = render(alerts, "html")
    assert len(text) > TELEGRAM_LIMIT
    parts = split_message(text, TELEGRAM_LIMIT)
    assert len(parts) >= 2
    assert all(len(p) <= TELEGRAM_LIMIT for p in parts)
    assert "\n".join(parts) == text  # nothing lost or repeated


def test_a_long_group_is_split_between_alerts_each_part_titled() -> None:
    """A part never starts with the facts of an alert whose summary ended the part before
    (a by-hand trial's Telegram message did, with no title saying what it was): each part
    has the title and its number, each alert whole, the action under the last."""
    alerts = [alert(f"account {i} & more <b>not a tag</b>",
                    details={"collateral_usd": 1_000.0 + i, "debt_usd": 900.0},
                    block=100 + i) for i in range(300)]
    parts = render_parts(alerts, "html", TELEGRAM_LIMIT)
    n = len(parts)
    assert n >= 3 and all(len(p) <= TELEGRAM_LIMIT for p in parts)
    seen = []
    for k, part in enumerate(parts, 1):
        lines = part.split("\n")
        assert lines[0] == f"🟠 <b>WARNING · position health · 300 alerts · part {k}/{n}</b>"
        body = lines[1:-1] if k == n else lines[1:]
        assert len(body) % 2 == 0, body[:2]
        for summary, facts in zip(body[::2], body[1::2], strict=True):
            i = int(summary.split()[1])
            assert facts == f"    collateral ${1_000 + i:,.2f} · debt $900.00 · block {100 + i}"
            seen.append(i)
        assert (lines[-1] == "➜ Add collateral &lt;now&gt; &amp; repay") == (k == n)
    assert seen == list(range(300))  # each alert once, in order
    # (one that fits is one message, as before)
    assert render_parts(alerts[:3], "html", TELEGRAM_LIMIT) == [render(alerts[:3], "html")]
    # One alert longer than a message: the whole cut on its lines, unnumbered (a part k/n
    # would not count the pieces of the long one).
    huge = [alerts[0], alert("x " * 3_000), alerts[1]]
    assert render_parts(huge, "html", TELEGRAM_LIMIT) == split_message(
        render(huge, "html"), TELEGRAM_LIMIT)


def liquidated(account: str, action: str, block: int = 100) -> dict:
    return Alert("position_liquidated", "critical", "event",
                 {"account": account, "watchlist": "alice"},
                 f"alice: {account} was liquidated: $1,000.00 of USDC debt repaid",
                 action=action, details={"tx_hash": "0x" + "12" * 32},
                 block=block).to_json()


@pytest.mark.parametrize("markup", ["html", "slack", "discord", "plain"])
def test_a_group_whose_actions_differ_says_each_under_its_own_alert(markup: str) -> None:
    """Two watched accounts liquidated in one block were one message with the first's
    action said once for both: "What is left: debt $368,111.48" read by the second's holder
    as theirs (a by-hand trial). Each action goes under its own alert, none under the group."""
    first = liquidated("0x68AcDd", "What is left: debt $368,111.48, health 1.0330 now")
    second = liquidated("0x7A39D8", "Its whole debt was repaid: nothing is left at risk")
    lines = render([first, second], markup).split("\n")  # type: ignore[arg-type]
    actions = [k for k, line in enumerate(lines) if "➜" in line]
    assert len(actions) == 2 and all(lines[k].startswith("    ➜ ") for k in actions)
    assert "368,111.48" in lines[actions[0]] and "whole debt" in lines[actions[1]]
    assert "0x68AcDd" in lines[actions[0] - 2] and "0x7A39D8" in lines[actions[1] - 2]
    assert actions[1] == len(lines) - 1  # (its own, not the group's: no line after it)
    # The same action for all is said once, under the group, as before.
    same = [alert("a"), alert("b")]
    text = render(same, markup)  # type: ignore[arg-type]
    assert text.count("➜") == 1 and text.split("\n")[-1].startswith("➜ ")


def test_a_split_group_keeps_each_alerts_own_action_with_it() -> None:
    """Split between alerts for Telegram's limit, each part carries the actions of its own
    alerts, and no part ends with another alert's."""
    alerts = [liquidated(f"0x{i:04d}", f"What is left: debt ${i:,}.00 " + "x" * 60, block=i)
              for i in range(200)]
    parts = render_parts(alerts, "html", TELEGRAM_LIMIT)
    assert len(parts) >= 3 and all(len(p) <= TELEGRAM_LIMIT for p in parts)
    seen = []
    for part in parts:
        lines = part.split("\n")[1:]
        assert len(lines) % 3 == 0
        for summary, _facts, action in zip(lines[::3], lines[1::3], lines[2::3], strict=True):
            i = int(summary.split()[1][2:])
            assert action.startswith(f"    ➜ What is left: debt ${i:,}.00 ")
            seen.append(i)
    assert seen == list(range(200))


def test_a_single_huge_line_is_cut_outside_entities() -> None:
    line = ("x" * 4093) + "&amp;" + "y" * 100  # the entity straddles 4096
    parts = split_message(line, TELEGRAM_LIMIT)
    assert "".join(parts) == line
    assert all(html.unescape(p).count("&") == p.count("&amp;") for p in parts)
    assert parts[0] == "x" * 4093 and parts[1].startswith("&amp;")


def test_webhook_signature_round_trip_and_tamper() -> None:
    body = b'{"status":"firing"}'
    header = sign("s3cret", body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify("s3cret", body, header, now=1_700_000_010)
    assert not verify("s3cret", body + b" ", header, now=1_700_000_010)
    assert not verify("other", body, header, now=1_700_000_010)
    assert not verify("s3cret", body, header, now=1_700_001_000)  # too old: replay


def test_webhook_body_has_the_documented_fields() -> None:
    one = webhook_body([alert("a", details={"health_factor": 1.1})], "k1")
    assert one["status"] == "firing" and one["rule"] == "position_health"
    assert one["severity"] == "warning" and one["account"] == "0x" + "ab" * 20
    assert one["health_factor"] == 1.1 and one["summary"] == "a"
    assert one["idempotency_key"] == "k1" and one["group_size"] == 1
    many = webhook_body([alert("a"), alert("b")], "k2")
    assert many["group_size"] == 2 and len(many["alerts"]) == 2 and "account" not in many


def test_matchers() -> None:
    labels = {"rule": "oracle", "asset": "WETH"}
    assert parse_matcher("asset=weth").matches(labels)
    assert parse_matcher("asset!=WBTC").matches(labels)
    assert parse_matcher("rule=~orac.*").matches(labels)
    assert not parse_matcher("rule!~orac.*").matches(labels)
    assert not parse_matcher("account=0x1").matches(labels)
    with pytest.raises(ValueError, match="label=value"):
        parse_matcher("just words")
    with pytest.raises(ValueError, match="regular expression"):
        parse_matcher("rule=~(")


@pytest.mark.parametrize("header", [None, "", "t=", "v1=abc", "t=1,v1", "t=abc,v1=00",
                                    "t=1700000000,v1=\u00e9\u00e9", "t=1700000000,=,v1=zz"])
def test_the_webhook_verifier_refuses_malformed_headers_without_raising(header: object) -> None:
    from keeperd.alerts.sinks import verify

    assert verify("s", b"{}", header, now=1_700_000_000) is False  # type: ignore[arg-type]


def test_the_documented_verifier_is_the_shipped_one() -> None:
    import re
    from pathlib import Path

    from keeperd.alerts.sinks import sign

    doc = (Path(__file__).resolve().parents[2] / "docs" / "alerts.md").read_text()
    [snippet] = re.findall(r"```python\n(import hashlib.*?def verify.*?)```", doc, re.S)
    scope: dict[str, object] = {}
    exec(snippet, scope)  # the receiver's code, exactly as documented
    documented = scope["verify"]
    import time

    body = b'{"status":"firing"}'
    good = sign("s", body, int(time.time()))
    assert documented("s", body, good) is True  # type: ignore[operator]
    assert documented("t", body, good) is False  # type: ignore[operator]
    for bad in (None, "", "t=1,v1", "t=1700000000,v1=\u00e9"):
        assert documented("s", body, bad) is False  # type: ignore[operator]


def test_sink_headers_cannot_replace_the_signature() -> None:
    from keeperd.config import ConfigError, parse_config

    base = {"state_dir": "/tmp/x", "chains": [{"name": "d", "chain_id": 1,
                                                "rpc_urls": ["http://127.0.0.1:1"]}]}
    with pytest.raises(ConfigError, match="keeperd sets them"):
        parse_config({**base, "alerts": {"routes": [{"name": "r", "sinks": [
            {"kind": "webhook", "url": "http://127.0.0.1:9/h", "secret": "${WEBHOOK_SECRET}",
             "headers": {"X-Keeperd-Signature": "t=1,v1=forged"}}]}]}},
        env={"WEBHOOK_SECRET": "s" * 32})


def test_a_message_says_when_it_was_told_in_every_part() -> None:
    """A message delivered after a sink's outage said only its block and read as news (a
    by-hand trial's came 33 s late; the outbox's backoff may make it a quarter hour): each
    part's title says when keeperd queued it — the same at every attempt, so a message resent
    from its third part renders the same parts."""
    queued = 1_796_000_000.0  # 2026-11-30 00:53:20 UTC
    one = render([{**alert("health 1.05"), "queued_at": queued}], "plain")
    assert one.splitlines()[0].endswith(" · 30 Nov 00:53:20 UTC")
    many = [{**alert(f"account {i} " + "x" * 300), "queued_at": queued} for i in range(40)]
    parts = render_parts(many, "html", TELEGRAM_LIMIT)
    assert len(parts) > 1 and all("30 Nov 00:53:20 UTC" in p.splitlines()[0] for p in parts)
    assert render_parts(many, "html", TELEGRAM_LIMIT) == parts
    assert " UTC" not in render([alert("health 1.05")], "plain").splitlines()[0]


def test_a_negative_amount_reads_as_one() -> None:
    """A perp account's value below zero: "$-2,277.40" read as a typo (a by-hand trial)."""
    from keeperd.alerts.render import usd_text

    assert usd_text(-2277.4) == "-$2,277.40" and usd_text(1234.5) == "$1,234.50"
    assert usd_text(0.0) == "$0.00"


def test_every_rule_has_a_chat_title() -> None:
    """A rule without one was titled by its identifier (`WARNING · capital_shortfall` in
    Slack, a by-hand trial)."""
    from keeperd.alerts.catalog import RULES
    from keeperd.alerts.render import _RULE_TITLE

    assert set(RULES) <= set(_RULE_TITLE), set(RULES) - set(_RULE_TITLE)
