"""`keeperd simulate --protocol`: a name the config does not have is refused before the chain
is read, by the option's own name, with the configured names to choose from; and the docs'
commands name protocols config/devnet.yaml has (`--protocol curie` said "--shock no protocol
'curie' in the config")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from keeperd import cli
from keeperd.config import load_config, parse_config
from keeperd.simulate import ProtocolChoiceError, pick_protocol

ROOT = Path(__file__).resolve().parents[2]
DEVNET = ROOT / "config" / "devnet.yaml"


pytestmark = pytest.mark.usefixtures("logging_restored")  # (tests/conftest.py)


@pytest.fixture
def devnet_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPERD_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("KEEPERD_DEVNET_RPC", "http://127.0.0.1:9")  # never asked


@pytest.mark.parametrize(("name", "hint"), [
    ("curie", " (did you mean curie-devnet?)"),
    ("Aave-Devnet", " (did you mean aave-devnet?)"),
    ("compound", ""),
])
def test_an_unknown_protocol_is_refused_by_its_option_with_the_names(
        devnet_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str,
        hint: str) -> None:
    assert cli.main(["simulate", "--config", str(DEVNET), "--protocol", name,
                     "--shock", "WETH=-25%", "--png", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert err == (f"keeperd simulate: --protocol {name!r}: no such protocol in the config"
                   f"{hint}; choose from aave-devnet, morpho-devnet, curie-devnet\n")
    assert "--shock" not in err and "chain did not answer" not in err


def test_a_perp_venue_is_not_a_book_to_shock(devnet_env: None) -> None:
    config = load_config(DEVNET)
    assert pick_protocol(config, "curie-devnet").name == "curie-devnet"
    assert pick_protocol(config, None).name == "aave-devnet"
    data = yaml.safe_load(DEVNET.read_text())
    data["protocols"].append({"kind": "hyperliquid", "name": "hl",
                              "accounts": ["0x5e9ee1089755c3435139848e47e6635505d5a13a"]})
    with_venue = parse_config(data)
    assert [p.name for p in with_venue.perp_venues] == ["hl"]
    with pytest.raises(ProtocolChoiceError) as refused:
        pick_protocol(with_venue, "hl")
    assert str(refused.value) == ("'hl' is a perp venue read over its API, not a book on a "
                                  "chain; choose from aave-devnet, morpho-devnet, curie-devnet")
    with pytest.raises(ProtocolChoiceError, match="no on-chain protocol"):
        pick_protocol(config.model_copy(update={"protocols": []}), None)


def test_the_docs_simulate_commands_name_the_devnet_configs_protocols(devnet_env: None) -> None:
    names = {p.name for p in load_config(DEVNET).protocols}
    docs = " ".join((ROOT / "docs" / "protocols.md").read_text().split())  # lines unwrapped
    used = re.findall(r"keeperd simulate [^`]*--protocol ([^\s`]+)", docs)
    assert used and set(used) <= names, (used, names)


def test_a_shock_is_a_drop_with_its_sign() -> None:
    """`WETH=30%` was modelled, and printed, as a 30 % drop: a user meaning a rise got the
    opposite silently. It is refused with the way to write a drop."""
    from keeperd.simulate import ShockError, parse_shock

    assert parse_shock("WETH=-30%") == ("WETH", 0.30)
    assert parse_shock("WETH=-0.3") == ("WETH", 0.30)
    for rise in ("WETH=30%", "WETH=0.3", "WETH=+20%", "WETH=0%"):
        with pytest.raises(ShockError):
            parse_shock(rise)
    with pytest.raises(ShockError, match=r"WETH=-30%.*a rise .* USD=-x%"):
        parse_shock("WETH=30%")
    # (`+` did not read as a number at all: the hint was only "write ASSET=-30%", a trial)
    with pytest.raises(ShockError, match=r"a rise .* USD=-x%"):
        parse_shock("WETH=+20%")
