"""The command line a new user meets, without a chain: inputs that would do nothing are refused
with the choices, ordinary failures are one line, and the help says what each command does.
(`keeperd.cli.main` in-process; the devnet's half is tests/integration/test_cli_inputs.py.)"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from keeperd import cli
from keeperd.alerts.silences import Silences
from keeperd.config import RulesConfig
from keeperd.storage.db import SqliteDatabase

ROOT = Path(__file__).resolve().parents[2]
ALICE = "0xABC0000000000000000000000000000000000001"


pytestmark = pytest.mark.usefixtures("logging_restored")  # (tests/conftest.py)


HOOK_SECRET = "a-webhook-secret-of-32-or-more-bytes"


def write(tmp_path: Path, **extra: object) -> str:
    config = {
        "state_dir": str(tmp_path / "state"),
        "chains": [{"name": "x", "chain_id": 1, "rpc_urls": ["http://127.0.0.1:9"],
                    "max_attempts": 1, "request_timeout": 1}],
        "protocols": [{"kind": "aave_v3", "name": "aave", "chain": "x",
                       "addresses_provider": "0x9A9f2CCfdE556A7E9Ff0848998Aa4a0CFD8863AE"}],
        "alerts": {
            "routes": [
                {"name": "ops", "sinks": [{"kind": "webhook", "url": "http://127.0.0.1:9/hook",
                                           "secret": f"${{KEEPERD_TEST_UNSET:-{HOOK_SECRET}}}"}]},
                {"name": "holders", "sinks": [
                    {"kind": "telegram", "bot_token": "${KEEPERD_TEST_UNSET:-1:AA}",
                     "chat_id": -100123},
                    {"kind": "slack", "webhook_url":
                        "${KEEPERD_TEST_UNSET:-https://hooks.slack.com/services/T0/B0/SECRET}"}]}],
            "watchlists": [{"name": "alice", "accounts": [ALICE], "route": "holders"}],
            "silences": [{"matchers": ["rule=index_lag"], "comment": "known lag"}]},
        **extra,
    }
    path = tmp_path / "keeperd.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"keeperd {importlib.metadata.version('keeperd')}"


def test_every_command_has_help_and_a_description() -> None:
    def parsers(parser: argparse.ArgumentParser, name: str
                ) -> Iterator[tuple[str, argparse.ArgumentParser, str | None]]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                for sub_name, sub in action.choices.items():
                    yield f"{name} {sub_name}", sub, helps.get(sub_name)
                    yield from parsers(sub, f"{name} {sub_name}")

    found = list(parsers(cli.build_parser(), "keeperd"))
    assert len(found) >= 17
    for name, parser, help_text in found:
        assert help_text, f"{name} has no help in its parent's list"
        assert parser.description and len(parser.description) > len(help_text), name
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                assert action.help, f"{name} {action.option_strings or action.dest}: no help"


def test_silence_refuses_a_label_or_rule_no_alert_carries(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path)
    for match, hint in (("acount=0x1", "did you mean account?"),
                        ("rule=position_helth", "did you mean position_health?"),
                        ("severity=warn", "did you mean warning?"),
                        ("account=0xabc", "account=~0xabc.*")):
        assert cli.main(["silence", "add", "--config", config, "--match", match]) == 1
        err = capsys.readouterr().err
        assert hint in err and "Traceback" not in err
    assert cli.main(["silence", "list", "--config", config]) == 0
    assert "ends in" not in capsys.readouterr().out  # (only the config's silence)


def test_silence_for_zero_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["silence", "add", "--config", write(tmp_path), "--match", "rule=oracle",
                  "--for", "0m"])
    assert exit_.value.code == 2
    assert "longer than 0" in capsys.readouterr().err


def test_a_silence_on_alertname_mutes_its_rule(tmp_path: Path) -> None:
    async def run() -> tuple[object, object]:
        db = SqliteDatabase.open(tmp_path / "s.sqlite3")
        try:
            silences = Silences(db, [(["alertname=keeperd_oracle"], "from amtool habits")])
            return (silences.matching({"rule": "oracle", "asset": "WETH"}),
                    silences.matching({"rule": "rpc_down", "chain": "x"}))
        finally:
            await db.close()

    oracle, rpc = asyncio.run(run())
    assert oracle is not None and rpc is None


def test_scan_refuses_a_protocol_not_configured(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["scan", "--config", write(tmp_path), "--protocol", "Aave",
                     "--once"]) == 2
    err = capsys.readouterr().err
    assert "'Aave'" in err and "did you mean aave?" in err and "choose from aave" in err


@pytest.fixture
def stopped_devnet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A devnet directory whose manifest names a port nothing listens on."""
    monkeypatch.setenv("KEEPERD_DEVNET_DIR", str(tmp_path))
    manifest = {"rpc_url": "http://127.0.0.1:9", "aave_v3": {"admin": "0x" + "1" * 40},
                "price_feeds": {"WETH": "0x" + "2" * 40, "WBTC": "0x" + "3" * 40}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def test_set_price_refuses_a_symbol_the_devnet_does_not_have(
        stopped_devnet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["devnet", "set-price", "weth", "3000"]) == 2
    err = capsys.readouterr().err
    assert "did you mean WETH?" in err and "WBTC, WETH" in err and "Traceback" not in err


def test_a_devnet_too_slow_to_answer_is_one_line(
        stopped_devnet: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`devnet mine 4000` beside a running daemon outlasted the client's timeout: a raw
    TimeoutError traceback (seen by hand). Now one line, and mining goes in runs."""
    from keeperd.devnet.handle import DevnetControl

    def slow(self: DevnetControl, blocks: int = 1, **_: object) -> int:
        raise TimeoutError("timed out")

    monkeypatch.setattr(DevnetControl, "mine", slow)
    assert cli.main(["devnet", "mine", "4000"]) == 1
    err = capsys.readouterr().err
    assert "did not answer in time" in err and "Traceback" not in err


def test_mine_refuses_a_negative_count(stopped_devnet: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["devnet", "mine", "-3"])
    assert exit_.value.code == 2 and "0 or more" in capsys.readouterr().err


def test_a_devnet_that_is_gone_is_one_line(stopped_devnet: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["devnet", "mine", "2"]) == 1
    err = capsys.readouterr().err
    assert "http://127.0.0.1:9 does not answer" in err and "keeperd devnet up" in err


def test_simulate_refuses_a_png_path_it_cannot_write(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Said before the chain is read (minutes on a large book), not after."""
    config = write(tmp_path)
    (tmp_path / "a-file").write_text("")
    for png, what in ((tmp_path / "missing" / "c.png", "does not exist"),
                      (tmp_path / "a-file" / "c.png", "is not a directory"),
                      (tmp_path, "is a directory"),
                      (tmp_path / ("c" * 300 + ".png"), "File name too long")):
        assert cli.main(["simulate", "--config", config, "--shock", "WETH=-30%",
                         "--png", str(png)]) == 2
        err = capsys.readouterr().err
        assert what in err and "chain did not answer" not in err, err


def test_alerts_route_names_the_route_its_sinks_and_the_silences(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path)
    assert cli.main(["silence", "add", "--config", config, "--match",
                     f"account={ALICE.lower()}", "--match", "severity=warning",
                     "--comment", "topping up"]) == 0
    capsys.readouterr()

    assert cli.main(["alerts", "route", "position_health", f"account={ALICE}",
                     "--config", config]) == 0
    out = capsys.readouterr().out
    assert "route holders (watchlist alice's route)" in out
    assert "sink telegram--100123: telegram (chat -100123)" in out
    assert re.search(r"sink slack-[0-9a-f]{10}: slack \(its webhook URL\)", out), out
    assert "SECRET" not in out  # a Slack webhook URL is the secret
    assert re.search(r"muted by silence 1 .*topping up\s+\(only at severity warning\)", out)

    assert cli.main(["alerts", "route", "index_lag", "chain=x", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "route ops (the first route" in out and re.search(
        r"sink webhook-127\.0\.0\.1-[0-9a-f]{10}: webhook \(127\.0\.0\.1:9\)", out)
    assert "muted by silence -  ends never (config)" in out and "known lag" in out

    assert cli.main(["alerts", "route", "oracle", "asset=WETH", "--config", config]) == 0
    assert "no active silence matches: it would be sent" in capsys.readouterr().out

    assert cli.main(["alerts", "route", "position_health",
                     "account=0x0000000000000000000000000000000000000002",
                     "--config", config]) == 0
    assert "not routed: no watchlist watches" in capsys.readouterr().out


def test_alerts_route_refuses_names_no_alert_has(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path)
    for args, hint in ((["positon_health"], "did you mean position_health?"),
                       (["oracle", "aset=WETH"], "did you mean asset?"),
                       (["position_health", "watchlist=alcie"], "did you mean alice?"),
                       (["keeper_balance", "severity=info"], "fires at warning, critical"),
                       ([], "needs a RULE")):
        assert cli.main(["alerts", "route", *args, "--config", config]) == 2, args
        assert hint in capsys.readouterr().err


def test_the_rule_catalog_names_every_rule_keeperd_raises() -> None:
    """Silences and `alerts route` refuse a rule not in the catalog: it must list each rule
    the engine and the cascade monitor raise, and each switch under alerts.rules."""
    from keeperd.alerts.catalog import RULES

    raised = set()
    for path in (ROOT / "keeperd").rglob("*.py"):
        raised |= set(re.findall(r"\b(?:Condition|Alert)\(\s*\"([a-z_]+)\"", path.read_text()))
    assert raised - {"test"} == set(RULES)  # ("test": `alerts test`, sent straight to a sink)
    assert {r.toggle for r in RULES.values() if r.toggle} == set(RulesConfig.model_fields)


def test_a_devnet_started_again_sets_the_last_ones_keeperd_state_aside(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """By hand: `devnet down`, `devnet up`, `run` again on config/devnet.yaml's default state
    directory sent the gone chain's liquidations again (65 reverted, the breaker paused
    sending). `devnet up` moves that state aside, kept, unless a keeperd runs on it."""
    from keeperd.statelock import StateDirLock
    from keeperd.storage.db import STATE_FILE

    state = tmp_path / "keeperd-state"
    cli._set_aside_last_devnets_state(state)  # none yet: nothing to do
    assert not state.exists() and capsys.readouterr().err == ""
    state.mkdir()
    (state / STATE_FILE).write_text("journal")
    with StateDirLock(state):  # a keeperd running on it: left alone, and said
        cli._set_aside_last_devnets_state(state)
    assert (state / STATE_FILE).is_file() and "still runs on" in capsys.readouterr().err
    cli._set_aside_last_devnets_state(state)
    assert not state.exists()
    [kept] = tmp_path.glob("keeperd-state.before-*")
    assert (kept / STATE_FILE).read_text() == "journal"
    assert "moved to" in capsys.readouterr().err
