"""`keeperd devnet fund ADDRESS` (#27 item 12): the devnet's tokens, minted to an address,
so that a keeper with `capital: own-balance` has what it repays with; and what a wrong
address, no devnet, or a devnet that is gone says (one line each, no traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from keeperd.devnet.anvil import free_port
from keeperd.devnet.handle import Devnet
from keeperd.devnet.paths import project_root
from tests.integration.test_morpho_without_capital import balances

pytestmark = pytest.mark.devnet

WHO = "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"  # anvil's account 9


def keeperd(devnet_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KEEPERD_DEVNET_DIR": str(devnet_dir)}
    return subprocess.run([sys.executable, "-m", "keeperd", "devnet", "fund", *args],
                          capture_output=True, text=True, env=env, cwd=project_root(),
                          timeout=120, check=False)


@pytest.fixture
def devnet_dir(tmp_path: Path) -> Path:
    """A devnet directory of this test's own (never the checkout's .devnet/, where someone's
    devnet may be up)."""
    own = tmp_path / "devnet"
    own.mkdir()
    return own


def test_fund_mints_every_devnet_token_and_gas(devnet: Devnet, devnet_dir: Path) -> None:
    """Each token's worth at the pool's own price, after a move too: wstETH's (a ratio
    adapter on ETH/USD, no feed of its own) follows ETH (it was minted at a seeded $3,600)."""
    devnet.write_manifest(devnet_dir / "manifest.json")
    devnet.set_price("WETH", devnet.price("WETH") * 0.7)
    devnet.client.call("anvil_setBalance", WHO, "0x0")
    before = balances(devnet, WHO)
    run = keeperd(devnet_dir, WHO.lower(), "--usd", "250000")
    assert run.returncode == 0, run.stderr
    after = balances(devnet, WHO)
    decimals = {s: r["decimals"] for s, r in devnet.manifest["aave_v3"]["reserves"].items()}
    ratio = devnet.manifest["prices_usd"]["wstETH"] / devnet.manifest["prices_usd"]["WETH"]
    for symbol in devnet.manifest["tokens"]:
        price = (devnet.price("WETH") * ratio if symbol == "wstETH" else devnet.price(symbol))
        worth = (after[symbol] - before[symbol]) / 10**decimals[symbol] * price
        assert worth == pytest.approx(250_000, rel=1e-6), symbol
        assert f"{symbol}: +" in run.stdout
    assert int(devnet.client.call("eth_getBalance", WHO, "latest"), 16) == 100 * 10**18


@pytest.mark.parametrize(("address", "says"), [
    ("0x1234", "is not an Ethereum address (0x followed by 40 hex digits)"),
    ("0xa0Ee7A142d267C1f36714E4a8F75612F20a79721X", "is not an Ethereum address"),
    ("0xa0EE7A142d267C1f36714E4a8F75612F20a79720", "fails its EIP-55 checksum"),
], ids=["short", "not-hex", "bad-checksum"])
def test_a_bad_address_is_one_line(devnet: Devnet, devnet_dir: Path, address: str,
                                   says: str) -> None:
    devnet.write_manifest(devnet_dir / "manifest.json")
    before = balances(devnet, WHO)
    run = keeperd(devnet_dir, address)
    assert run.returncode == 2
    assert run.stderr.startswith(f"keeperd devnet fund: ADDRESS '{address}' ")
    assert says in run.stderr and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert balances(devnet, WHO) == before


def test_no_devnet_is_one_line(devnet: Devnet, devnet_dir: Path) -> None:
    run = keeperd(devnet_dir, WHO)
    assert run.returncode == 1
    assert run.stderr == ("keeperd: no devnet is running here (start one: keeperd devnet "
                          "up)\n")
    # A manifest left behind by a devnet that is gone (a reboot, a kill).
    gone = f"http://127.0.0.1:{free_port()}"
    (devnet_dir / "manifest.json").write_text(json.dumps({**devnet.manifest,
                                                          "rpc_url": gone}))
    run = keeperd(devnet_dir, WHO)
    assert run.returncode == 1, run.stderr
    assert run.stderr.startswith(f"keeperd devnet fund: the devnet at {gone} does not answer")
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
