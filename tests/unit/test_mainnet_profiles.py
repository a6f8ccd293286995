"""config/mainnet/: each profile passes `check-config --offline`, pins its Aave pool, and every
address written in it (comments included) is the pinned address book's for that market; and
keeperd/protocols/aave_v3/published.json is what the pinned Aave book generates.

The books are read from node_modules with node (keeperd/devnet/address_book.py), at the
versions package.json pins.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from eth_abi import encode
from eth_utils import keccak, to_checksum_address

from keeperd.checks import check_config
from keeperd.config import AaveV3Config, Config, MorphoBlueConfig, load_config
from keeperd.devnet import address_book
from keeperd.metrics import Metrics
from keeperd.protocols.aave_v3.published import (
    PublishedMarket,
    published_implementation,
    published_markets,
)
from keeperd.protocols.sdk import indexer

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ROOT / "config" / "mainnet"
PINNED = {"@aave-dao/aave-address-book": "4.68.1", "@morpho-org/morpho-ts": "2.8.0",
          "@morpho-org/morpho-test": "4.0.3", "@uniswap/sdk-core": "7.19.4"}

# Each profile's protocol entries, by the market each is in its book.
AAVE_MARKETS = {"aave-v3-ethereum-core": "AaveV3Ethereum",
                "aave-v3-ethereum-prime": "AaveV3EthereumLido",
                "aave-v3-arbitrum": "AaveV3Arbitrum",
                "aave-v3-base": "AaveV3Base"}
# SparkLend is in no npm package: Spark's registry on GitHub (sparkdotfi/spark-address-registry,
# src/SparkLend.sol at 5348de20c16dc5174cbdede70ee959dd31f99ec1), copied by hand. Checked here
# against this copy only.
SPARKLEND = {"sparklend-ethereum": {
    "chain_id": 1,
    "addresses_provider": "0x02C3eA4e34C0cBd694D2adFa2c690EECbC1793eE",
    "pool": "0xC13e21B648A5Ee794902342038FF3aDAB66BE987",
    "oracle": "0x8105f69D9C41644c6A0803fDA7D03Aa70996cFD9",
    "data_provider": "0xFc21d6d146E6086B8359705C8b28512a983db0cb",
    "pool_impl": "0x5aE329203E00f76891094DcfedD5Aca082a50e1b"}}
MORPHO = {"morpho-blue-ethereum", "morpho-blue-base"}
# Morpho markets whose MarketParams are in no pinned package (loan, collateral, oracle, irm,
# lltv; a name is a key of morpho-ts's address registry): from Morpho's app and docs. The test
# checks that they hash to the id the profile lists, so a wrong one cannot pass unnoticed.
MORPHO_PARAMS_FROM_DOCS = {
    "0x64d65c9a2d91c36d56fbc42d69e979335320169b3df63bf92789e2c8883fcc64": (  # USDC / cbBTC
        "usdc", "0xcbB7C0000aB88B473b1f5aFd9ef808440eed33Bf",
        "0xA6D6950c9F177F1De7f7757FB33539e3Ec60182a", "adaptiveCurveIrm", 86 * 10**16),
}
# Chainlink's L2 sequencer uptime feed, in the Aave book's Chainlink libraries.
SEQUENCER_FEEDS = {42161: "ChainlinkArbitrum", 8453: "ChainlinkBase"}
# A chain's reference feeds (Morpho's markets' oracles are checked against them): symbol ->
# the constant of the book's Chainlink library of the chain.
CHAINLINK_LIBRARY = {1: "ChainlinkEthereum", 8453: "ChainlinkBase"}
REFERENCE_FEEDS = {"WETH": "ETH__USD", "USDC": "USDC__USD", "USDT": "USDT__USD",
                   "DAI": "DAI__USD", "WBTC": "BTC__USD", "cbBTC": "cbBTC__USD",
                   "wstETH": "wstETH__USD_Calculated", "sUSDe": "sUSDe__USD_Calculated"}
# What an operator exports (placeholders: offline, nothing is dialled).
ENV = {f"{chain}_RPC_{which}": f"https://rpc-{which.lower()}.example/v2/placeholder"
       for chain in ("ETH", "ARB", "BASE") for which in ("PRIMARY", "SECONDARY")}
FILES = sorted(p.name for p in PROFILES.glob("*.yaml"))
ADDRESS = re.compile(r"(?<![0-9a-fA-Fx])0x[0-9a-fA-F]{40}(?![0-9a-fA-F])")


def _load(name: str, **extra: str) -> Config:
    return load_config(PROFILES / name, env={**ENV, **extra})


def _checked_addresses(config: Config) -> list[tuple[str, str | None, str]]:
    """(field, value in the profile, value in its book) for every address field that is set
    or that the market needs."""
    (chain,) = config.chains  # one chain a profile: the keeper's swap factory is that chain's
    out: list[tuple[str, str | None, str]] = []
    if chain.chain_id in SEQUENCER_FEEDS:
        feeds = address_book.aave_library(SEQUENCER_FEEDS[chain.chain_id])
        out.append(("chains[0].sequencer_uptime_feed", chain.sequencer_uptime_feed,
                    to_checksum_address(feeds["L2_Sequencer_Uptime_Status_Feed"])))
    if chain.reference_feeds:
        library = address_book.aave_library(CHAINLINK_LIBRARY[chain.chain_id])
        for symbol, address in chain.reference_feeds.items():
            out.append((f"chains[0].reference_feeds.{symbol}", address,
                        to_checksum_address(library[REFERENCE_FEEDS[symbol]])))
    for i, proto in enumerate(config.protocols):
        if isinstance(proto, AaveV3Config):
            book: dict[str, Any]
            if proto.name in AAVE_MARKETS:
                book = vars(published_markets()[AAVE_MARKETS[proto.name]])
                book = {**book, "addresses_provider": book["pool_addresses_provider"]}
            else:
                book = SPARKLEND[proto.name]
            assert chain.chain_id == book["chain_id"], f"{proto.name} is on the wrong chain"
            for field in ("addresses_provider", "pool", "oracle", "data_provider"):
                out.append((f"protocols[{i}].{field}", getattr(proto, field), str(book[field])))
        else:
            assert isinstance(proto, MorphoBlueConfig) and proto.name in MORPHO, proto.name
            morpho = address_book.morpho_book(chain.chain_id)["addresses"]["morpho"]
            out.append((f"protocols[{i}].morpho", proto.morpho, to_checksum_address(morpho)))
    if config.keeper.uniswap_v3_factory is not None:
        out.append(("keeper.uniswap_v3_factory", config.keeper.uniswap_v3_factory,
                    address_book.uniswap_v3_factories()[chain.chain_id]))
    return out


def _market_id(loan: str, collateral: str, oracle: str, irm: str, lltv: int) -> str:
    return "0x" + keccak(encode(["address", "address", "address", "address", "uint256"],
                                [loan, collateral, oracle, irm, lltv])).hex()


# --- the books -------------------------------------------------------------------------------


def test_package_json_pins_each_address_book_exactly() -> None:
    wanted = json.loads((ROOT / "package.json").read_text())["dependencies"]
    for package, version in PINNED.items():
        assert wanted.get(package) == version, f"package.json must pin {package} at {version}"
        assert address_book.installed_version(package) == version, \
            f"node_modules holds another {package}: run `make setup` (npm ci)"


def test_published_json_is_what_the_pinned_book_generates() -> None:
    shipped = address_book.PUBLISHED.read_text()
    assert shipped == address_book.render(address_book.published_document()), \
        "published.json is stale: python -m keeperd.devnet.address_book"


def test_published_markets_are_the_books_production_markets() -> None:
    markets = published_markets()
    assert set(AAVE_MARKETS.values()) <= set(markets)
    assert not [n for n in markets if re.search(r"Sepolia|Fuji|Testnet|Goerli|Mumbai", n)]
    core = markets["AaveV3Ethereum"]
    assert isinstance(core, PublishedMarket) and core.chain_id == 1
    assert core.pool == "0x87870Bca3F3fD6335C3F4ce8392D69350B4fA4E2"
    assert {m.chain_id for m in markets.values()} >= {1, 10, 137, 8453, 42161, 43114}


def test_published_implementation_is_found_by_chain_and_address_in_any_case() -> None:
    core = published_markets()["AaveV3Ethereum"]
    assert published_implementation(1, core.pool_impl.lower()) == core
    assert published_implementation(1, core.pool_impl.upper().replace("0X", "0x")) == core
    assert published_implementation(42161, core.pool_impl) is None  # another chain's code
    assert published_implementation(1, core.pool) is None  # the proxy is not the logic
    spark = SPARKLEND["sparklend-ethereum"]
    assert published_implementation(1, str(spark["pool_impl"])) is None  # a fork's own build


# --- the profiles ----------------------------------------------------------------------------


def test_every_profile_is_one_these_tests_know() -> None:
    names = {p.name for f in FILES for p in _load(f).protocols}
    assert FILES and names == set(AAVE_MARKETS) | set(SPARKLEND) | MORPHO
    assert {f.removesuffix(".yaml") for f in FILES} == names  # one market a file, named so


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """The keeper key check-config loads as `run` would (anvil's account #1, chmod 600)."""
    path = tmp_path / "keeper.key"
    path.write_text("0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d\n")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("name", FILES)
def test_profile_passes_check_config_offline(name: str, key_file: Path) -> None:
    env = ({k: v for k, v in os.environ.items() if not k.startswith("KEEPERD_")} | ENV
           | {"KEEPERD_KEY_FILE": str(key_file)})
    done = subprocess.run([sys.executable, "-m", "keeperd", "check-config", "--offline",
                           str(PROFILES / name)], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "OK (1 chain(s), 1 protocol(s), mode dry-run; checked offline)" in done.stdout


@pytest.mark.parametrize("name", [f for f in FILES if not f.startswith("morpho")])
def test_aave_profile_goes_live_with_a_flash_liquidator(name: str, key_file: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {**ENV, "KEEPERD_MODE": "liquidate", "KEEPERD_CAPITAL": "auto",
                       "KEEPERD_KEY_FILE": str(key_file),
                       "KEEPERD_FLASH_LIQUIDATOR": "0x" + "11" * 20}.items():
        monkeypatch.setenv(key, value)
    config = check_config(PROFILES / name, online=False)  # what the CLI calls
    assert config.keeper.mode == "liquidate" and config.keeper.capital == "auto"


@pytest.mark.parametrize("name", FILES)
def test_profile_addresses_are_the_books(name: str) -> None:
    for field, value, book in _checked_addresses(_load(name)):
        assert value == book, f"{name}: {field} is {value}, the book says {book}"


@pytest.mark.parametrize("name", FILES)
def test_no_address_in_a_profile_goes_unchecked(name: str) -> None:
    checked = {book for _, _, book in _checked_addresses(_load(name))}
    written = set(ADDRESS.findall((PROFILES / name).read_text()))
    assert written <= checked, f"{name}: not compared with a book: {sorted(written - checked)}"


@pytest.mark.parametrize("name", [f for f in FILES if not f.startswith("morpho")])
def test_aave_pool_oracle_and_data_provider_are_pinned(name: str) -> None:
    for proto in _load(name).protocols:
        assert isinstance(proto, AaveV3Config)
        assert None not in (proto.pool, proto.oracle, proto.data_provider), \
            f"{name}: {proto.name} must pin pool, oracle and data_provider"


@pytest.mark.parametrize("name", sorted(f"{m}.yaml" for m in MORPHO))
def test_morpho_markets_hash_from_their_params_and_lend_priced_stablecoins(name: str) -> None:
    config = _load(name)
    (proto,) = config.protocols
    assert isinstance(proto, MorphoBlueConfig)
    book = address_book.morpho_book(config.chains[0].chain_id)
    registry = book["addresses"]
    fixtures = {m["id"].lower(): m for m in book["markets"].values()}
    stables = {to_checksum_address(registry[s]) for s in ("usdc", "usdt", "dai")
               if s in registry}
    collaterals = set()
    for market_id in proto.markets:
        params: tuple[str, str, str, str, int]
        if market_id in fixtures:
            m = fixtures[market_id]
            params = (m["loanToken"], m["collateralToken"], m["oracle"], m["irm"],
                      int(m["lltv"]))
        else:
            assert market_id in MORPHO_PARAMS_FROM_DOCS, \
                f"{market_id}: no MarketParams for it in @morpho-org/morpho-test nor in the table"
            loan, collateral, oracle, irm, lltv = MORPHO_PARAMS_FROM_DOCS[market_id]
            params = (registry[loan], collateral, oracle, registry[irm], lltv)
        loan, collateral, oracle, irm = (to_checksum_address(a) for a in params[:4])
        params = (loan, collateral, oracle, irm, params[4])
        assert _market_id(*params) == market_id, f"{market_id} is not the id of {params}"
        assert params[0] in stables, f"{market_id} lends a token keeperd does not price"
        assert params[3] == to_checksum_address(registry["adaptiveCurveIrm"])
        collaterals.add(params[1])
    # Gas is priced from a market of WETH collateral against a stablecoin.
    assert to_checksum_address(registry["wNative"]) in collaterals
    assert proto.start_block == int(book["deployments"]["morpho"])


# --- what the first index prints -------------------------------------------------------------


async def test_a_long_catch_up_logs_its_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]

    class Chain:  # every range read takes 20 s of the fake clock, and finds no log
        async def batch_at(self, end: int, calls: Any, **_: Any) -> Any:
            clock[0] += 20.0
            return {"hash": f"0x{end:064x}"}, ([],)

    class Store:
        async def cursor(self, protocol: str) -> None:
            return None

        async def accounts(self, protocol: str) -> list[str]:
            return []

        async def indexed_block_hashes(self, protocol: str) -> list[Any]:
            return []

        async def record_indexed(self, *args: Any, **kwargs: Any) -> bool:
            return True

        async def filter_elements(self, protocol: str) -> set[str]:
            return set()

        async def set_filter_elements(self, protocol: str, elements: Any) -> None:
            pass

    monkeypatch.setattr(indexer, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    logs: list[dict[str, Any]] = []

    def record(event: str, **fields: Any) -> None:
        logs.append({"event": event, **fields})

    # (a recorder, not structlog's capture_logs: a CLI test run earlier in the session leaves
    # structlog's loggers cached, and capture_logs then sees nothing)
    monkeypatch.setattr(indexer, "log", SimpleNamespace(info=record, warning=record,
                                                        error=record, debug=record))
    idx = indexer.AccountIndexer("aave-core", "ethereum", Chain(),  # type: ignore[arg-type]
                                 Store(), indexer.LogFilter(("0x" + "22" * 20,), ()),  # type: ignore[arg-type]
                                 lambda log, cache: (), start_block=1_000, metrics=Metrics(),
                                 initial_chunk=1_000)
    await idx.start()
    logs.clear()
    await idx.catch_up(1_000 + 255_000 - 1)  # ranges of 1,000, 2,000 ... 128,000: 8 reads
    progress = [e for e in logs if e["event"] == "index.progress"]
    # Every 30 s of the catch-up (every other read here); not after its last range.
    assert [(e["blocks_done"], e["blocks_total"], e["blocks_per_s"]) for e in progress] == [
        (3_000, 255_000, 75), (15_000, 255_000, 188), (63_000, 255_000, 525)]
    assert progress[-1]["to_block"] == 63_999 and progress[-1]["target"] == 255_999
