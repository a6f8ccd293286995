"""A re-read config file cut short does not replace the running alerts (audit F3): every cut
of config/example.yaml that still loads is refused; what is taken away deliberately is
written out empty, and a single route, sink or watchlist removed is named."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from keeperd.config import Config, parse_config
from keeperd.reload_guard import judge_reload, unheard_warnings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.yaml"
ENV = {"ETH_RPC_PRIMARY": "https://a.example/v2/k", "ETH_RPC_SECONDARY": "https://b.example/k",
       "WEBHOOK_SECRET": "whsec_test_only_long_enough_for_hmac"}


def tree() -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE.read_text())
    assert isinstance(data, dict)
    return data


def load(data: dict[str, Any]) -> Config:
    return parse_config(data, env=ENV)


def judge(new: dict[str, Any]) -> tuple[list[str], list[str]]:
    running = load(tree())
    verdict = judge_reload(frozenset(running.model_fields_set), running.alerts, load(new))
    return verdict.refused, verdict.removed


def test_every_cut_of_the_example_that_loses_a_section_is_refused() -> None:
    """Every cut of config/example.yaml that still loads and lost a top-level section is
    refused; one inside the last section (`logging:`) keeps them all and is not judged
    here (what it loses restarts alone)."""
    lines = EXAMPLE.read_text().splitlines(keepends=True)
    loaded = 0
    for n in range(1, len(lines)):
        try:
            cut = yaml.safe_load("".join(lines[:n]))
            load(cut)
        except Exception:
            continue  # (a cut that does not load is refused as a broken file)
        loaded += 1
        refused, _ = judge(cut)
        if cut.keys() != tree().keys():
            assert any("no longer has its top-level section" in r for r in refused), n
    assert loaded > 40  # (most cuts load: the defaults fill what is gone)


@pytest.mark.parametrize("drop", ["alerts", "watchlists"])
def test_alerts_or_watchlists_gone_is_refused_and_names_what_would_go(drop: str) -> None:
    data = tree()
    if drop == "alerts":
        del data["alerts"]
    else:
        del data["alerts"]["watchlists"]
    refused, removed = judge(data)
    assert refused
    assert "watchlist 'treasury'" in removed
    if drop == "alerts":
        assert "route 'ops'" in removed and "route 'holders'" in removed
        assert any("alerts.routes would go from ops, holders to none" in r for r in refused)
    else:
        assert [r for r in refused if "every watchlist would go" in r] == refused


def test_every_route_gone_with_alerts_still_written_is_refused() -> None:
    data = tree()
    data["alerts"] = {"inhibition": "annotate"}
    refused, _ = judge(data)
    assert any("alerts.routes would go" in r for r in refused)
    assert any("every watchlist would go" in r for r in refused)


def test_written_out_empty_is_deliberate() -> None:
    data = tree()
    data["alerts"] = {"routes": []}  # (the watchlists go with them: each needs a route)
    refused, removed = judge(data)
    assert refused == []
    assert removed == ["route 'ops'", "route 'holders'", "watchlist 'treasury'"]
    data = tree()
    data["alerts"]["watchlists"] = []
    data["risk"] = {}
    assert judge(data) == ([], ["watchlist 'treasury'"])


def test_one_watchlist_route_or_sink_removed_is_applied_and_named() -> None:
    running = tree()
    running["alerts"]["watchlists"].append(
        {**running["alerts"]["watchlists"][0], "name": "fund", "route": "ops"})
    running["alerts"]["routes"][0]["sinks"].append(
        {"kind": "webhook", "url": "http://127.0.0.1:8788/hook", "id": "second",
         "secret": "${WEBHOOK_SECRET}"})
    old = load(running)
    new = copy.deepcopy(running)
    new["alerts"]["watchlists"].pop()
    new["alerts"]["routes"][0]["sinks"].pop()
    verdict = judge_reload(frozenset(old.model_fields_set), old.alerts, load(new))
    assert verdict.refused == []
    assert verdict.removed == ["sink 'second' of route 'ops'", "watchlist 'fund'"]
    new["alerts"]["watchlists"] = [w for w in new["alerts"]["watchlists"]
                                   if w["route"] != "holders"]
    new["alerts"]["routes"].pop()
    verdict = judge_reload(frozenset(old.model_fields_set), old.alerts, load(new))
    assert verdict.refused == []
    assert verdict.removed == ["sink 'second' of route 'ops'", "route 'holders'",
                               "watchlist 'treasury'", "watchlist 'fund'"]


def test_a_section_the_running_file_lacked_may_stay_out() -> None:
    data = tree()
    del data["risk"]
    old = load(data)
    assert judge_reload(frozenset(old.model_fields_set), old.alerts, load(data)).refused == []


def test_a_liquidating_keeper_with_no_route_is_told_at_start() -> None:
    data = tree()
    del data["alerts"]
    assert unheard_warnings(load(data)) == []  # (dry-run)
    data["keeper"]["mode"] = "liquidate"
    [issue] = unheard_warnings(load(data))
    assert issue.path == "alerts.routes"
    assert "empty with keeper.mode liquidate: no alert will be sent" in issue.message
    assert unheard_warnings(load(tree() | {"keeper": data["keeper"]})) == []
