"""Build the devnet's deployed-and-seeded state once, cache it, and start anvil from it.

A state is keyed by the number of borrowers, the seed and a hash of everything that shapes it
(our Solidity, the pinned npm packages, this package's deployment code). Building takes a few
seconds for hundreds of borrowers; loading takes well under one. The dump keeps blocks and
receipts (the account index discovers borrowers from the pool's logs) but drops anvil's call
traces, which are 80 % of its size.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from keeperd.devnet import aave, aave36, aave_origin, curie, morpho, paths, seed, uniswap
from keeperd.devnet.anvil import DEFAULT_CHAIN_ID, Anvil
from keeperd.devnet.client import DevnetClient
from keeperd.devnet.dump import StageHistory, dump_state

log = structlog.get_logger(__name__)

DEFAULT_ACCOUNTS = 300
DEFAULT_SEED = 1
MANIFEST_VERSION = 1
# Which Aave the devnet runs: today's (v3.6, compiled from the published sources) by
# default; v3.0 (the 2022 compiled artifacts) for forks that still run it.
AAVE_VERSIONS = ("v3.6", "v3.0")
DEFAULT_AAVE = "v3.6"
# Bump when the dump's format or the build steps here change what a state contains.
STATE_FORMAT = 1
# Borrowers seeded by one node of the build (see _StagedNode): a devnet of this many or fewer
# is built in one go. The build's memory grows with it, not with the devnet's size.
STAGE_BORROWERS = 10_000


@dataclass(frozen=True)
class BuiltState:
    state_path: Path
    manifest: dict[str, Any]


def _fingerprint(aave_version: str) -> str:
    h = hashlib.sha256(f"format {STATE_FORMAT} aave {aave_version}".encode())
    for src in sorted(paths.contracts_dir().glob("*.sol")):
        h.update(src.read_bytes())
    lock = paths.project_root() / "package-lock.json"
    if lock.is_file():
        h.update(lock.read_bytes())
    for module in (aave, aave36, aave_origin, seed, uniswap, morpho, curie):
        h.update(Path(module.__file__ or "").read_bytes())
    if aave_version != "v3.0":
        h.update(aave_origin.source_fingerprint())
        h.update(curie.source_fingerprint())
    return h.hexdigest()[:16]


def _check_version(aave_version: str) -> None:
    if aave_version not in AAVE_VERSIONS:
        raise ValueError(f"unknown Aave version {aave_version!r}: the devnet builds "
                         f"{' or '.join(AAVE_VERSIONS)}")


def state_dir_for(accounts: int, seed_value: int, aave_version: str = DEFAULT_AAVE) -> Path:
    _check_version(aave_version)
    tag = "" if aave_version == DEFAULT_AAVE else f"-aave{aave_version}"
    return (paths.devnet_dir() / "states"
            / f"n{accounts}-s{seed_value}{tag}-{_fingerprint(aave_version)}")


def ensure_state(accounts: int = DEFAULT_ACCOUNTS, seed_value: int = DEFAULT_SEED, *,
                 rebuild: bool = False, aave_version: str = DEFAULT_AAVE) -> BuiltState:
    """Return the cached state for (accounts, seed, Aave version), building it if needed."""
    folder = state_dir_for(accounts, seed_value, aave_version)
    state_gz, manifest_path = folder / "state.json.gz", folder / "manifest.json"
    folder.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time (test workers starting together, a demo beside them): the others
    # wait, then find it built. Without it two builds of one folder wrote over each other.
    with open(folder.parent / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if rebuild and folder.exists():
            shutil.rmtree(folder)
        if not (state_gz.is_file() and manifest_path.is_file()):
            # States built by older code for the same (accounts, seed) are dead weight.
            prefix = folder.name.rsplit("-", 1)[0]
            for stale in folder.parent.glob(f"{prefix}-*"):
                if stale.is_dir() and stale != folder and stale.name.rsplit("-", 1)[0] == prefix:
                    shutil.rmtree(stale, ignore_errors=True)
                    (stale.parent / f"{stale.name}.lock").unlink(missing_ok=True)
            _build(folder, accounts, seed_value, aave_version)
        # anvil reads plain JSON only; the uncompressed copy is made once next to the archive.
        state_json = folder / "state.json"
        if not state_json.is_file():
            tmp = state_json.with_suffix(".tmp")
            with gzip.open(state_gz, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            tmp.replace(state_json)
    return BuiltState(state_json, json.loads(manifest_path.read_text()))


class _StagedNode:
    """The build's anvil, restarted between stages of borrowers so that no node holds more
    than one stage of history. anvil keeps every transaction — with its call traces — in
    memory, and `anvil_dumpState` builds the whole dump in memory beside it: at 100,000
    borrowers in one go that passed 24 GB; restarted from full dumps of itself, 7.1 GB (#18).
    So at a stage's end its blocks and transactions are set aside on disk (`StageHistory`,
    traces dropped) and the next node starts from the accounts and the head block alone;
    the final dump writes the set-aside history back, so the built state has every block,
    receipt and log, as a chain that ran the whole build would."""

    HISTORY = 2  # past states kept (each a whole copy of the state): the build reads the head

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.history = StageHistory(folder / "history")
        self.node = Anvil(history=self.HISTORY).start()
        self.client = DevnetClient(self.node.rpc_url)

    def restart(self) -> None:
        """End a stage: its history set aside, a new node from the accounts and head."""
        tip = self.folder / "tip.json"
        dump_state(self.node.rpc_url, tip, history=self.history, set_aside=True)
        self.close()
        self.node = Anvil(load_state=tip, history=self.HISTORY).start(timeout=600)
        self.client = DevnetClient(self.node.rpc_url)
        tip.unlink()

    def dump(self, path: Path) -> None:
        """The whole chain, gzip-compressed: the set-aside history, then the node's own."""
        dump_state(self.node.rpc_url, path, compress=True, history=self.history)

    def close(self) -> None:
        self.client.close()
        self.node.stop()

    def remove_files(self) -> None:
        self.history.remove()
        (self.folder / "tip.json").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.history.folder.rmdir()


def _build(folder: Path, accounts: int, seed_value: int, aave_version: str) -> None:
    started = time.monotonic()
    log.info("devnet.build_started", accounts=accounts, seed=seed_value, aave=aave_version)
    folder.mkdir(parents=True, exist_ok=True)
    staged = _StagedNode(folder)
    try:
        client = staged.client
        multicall = aave.install_multicall3(client)
        if aave_version == "v3.0":
            market = aave.deploy_market(client)
            market["aave_v3"].update(revision=1, version="v3.0")
            prices = {r.symbol: r.price_usd for r in aave.DEFAULT_RESERVES}
            profiles = seed.PROFILES_V30
        else:
            market = aave36.deploy_market(client)
            prices = market.pop("prices_usd")
            profiles = seed.PROFILES_V36
        plans = seed.plan_borrowers(seed.market_view(market, prices), accounts, seed_value,
                                    profiles)
        for first in range(0, len(plans), STAGE_BORROWERS):
            if first:
                staged.restart()
                log.info("devnet.build_stage", seeded=first, of=len(plans))
            seed.seed_market(staged.client, market, plans[first:first + STAGE_BORROWERS])
        client = staged.client
        if aave_version != "v3.0":
            aave36.freeze_after_seeding(client, market)
        dex = uniswap.deploy_uniswap(client, market, prices)
        blue = morpho.deploy_morpho(client, market, prices, seed_value=seed_value)
        # Today's devnet also runs a derivatives protocol keeperd liquidates: Perp Curie.
        perps = (curie.deploy_curie(client, {**market, **dex}, prices, seed_value=seed_value)
                 if aave_version != "v3.0" else {})
        blue = morpho.deploy_liquidator(client, {**market, **dex, **blue}, prices)
        block = client.block_number()
        staged.dump(folder / "state.json.gz.tmp")
    finally:
        staged.close()
        staged.remove_files()
    manifest = {
        "version": MANIFEST_VERSION,
        "chain_id": DEFAULT_CHAIN_ID,
        "block": block,
        "multicall3": multicall,
        "accounts_seeded": accounts,
        "seed": seed_value,
        "prices_usd": prices,
        **market,
        **dex,
        **blue,
        **perps,
        "borrowers": [
            {"address": p.address, "profile": p.profile, "emode": p.emode,
             "collateral": [s for s, _ in p.collateral], "debt": p.debt[0],
             "debts": [s for s, _ in p.debts],
             "planned_health": round(p.target_health, 6)}
            for p in plans
        ],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (folder / "state.json.gz.tmp").replace(folder / "state.json.gz")
    log.info("devnet.build_finished", accounts=accounts, seconds=round(time.monotonic() -
             started, 2), block=block)
