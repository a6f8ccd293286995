"""Today's Aave V3 (v3.6), compiled from the published sources of the pinned npm package
`@aave-dao/aave-v3-origin` with the solc-js version its foundry config names.

The package ships Solidity only (no artifacts, no remappings): its imports use foundry's
library paths (`openzeppelin-contracts/contracts/...`, `solidity-utils/contracts/...`), which
are mapped here onto the npm layout. Only the files the entry contracts import are compiled
(~90 of the package's ~240), in one solc-js run (~30 s on two cores, cached by source hash;
two runs in parallel were measured slower). Libraries come out of the same compile and are
linked at deploy time from the link references.
"""

from __future__ import annotations

import posixpath
import re
from functools import cache
from pathlib import Path
from typing import Any

from keeperd.devnet import paths
from keeperd.devnet.contracts import Artifact
from keeperd.devnet.solc import compile_standard_json

SOLC_PACKAGE = "solc-0.8.27"  # npm alias of solc@0.8.27, beside the project's 0.8.19
PACKAGE = "@aave-dao/aave-v3-origin"
# Upstream foundry.toml: solc 0.8.27, optimizer 200 runs, evm shanghai, no via-IR,
# bytecode_hash none.
SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": "shanghai",
    "viaIR": False,
    "metadata": {"bytecodeHash": "none"},
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.bytecode.linkReferences"]}},
}
# Foundry library path → npm package path (the npm OpenZeppelin has no `contracts/` level).
REMAPPINGS = {
    "openzeppelin-contracts/contracts/": "@openzeppelin/contracts/",
    "openzeppelin-contracts-upgradeable/contracts/": "@openzeppelin/contracts-upgradeable/",
    "solidity-utils/": "@bgd-labs/solidity-utils/src/",
}
ENTRY_POINTS = (
    "src/contracts/protocol/configuration/PoolAddressesProvider.sol",
    "src/contracts/protocol/configuration/ACLManager.sol",
    "src/contracts/instances/PoolInstance.sol",
    "src/contracts/instances/PoolConfiguratorInstance.sol",
    "src/contracts/instances/ATokenInstance.sol",
    "src/contracts/instances/VariableDebtTokenInstance.sol",
    "src/contracts/misc/AaveOracle.sol",
    "src/contracts/misc/DefaultReserveInterestRateStrategyV2.sol",
    "src/contracts/helpers/AaveProtocolDataProvider.sol",
)
_IMPORT = re.compile(r"""import\s+(?:[^;]*?\bfrom\s+)?["']([^"']+)["']\s*;""", re.S)


def _package_root() -> Path:
    root = paths.node_modules() / PACKAGE
    if not (root / "src" / "contracts").is_dir():
        raise FileNotFoundError(f"{root} is missing: run `make setup` (npm ci)")
    return root


def _remap(path: str) -> str:
    for prefix, target in REMAPPINGS.items():
        if path.startswith(prefix):
            return target + path[len(prefix):]
    return path


def _file_for(unit: str) -> Path:
    """Source unit name → file: `src/...` inside the Aave package, `@...` in node_modules."""
    if unit.startswith("src/"):
        return _package_root() / unit
    return paths.node_modules() / unit


def collect_sources(entries: tuple[str, ...] = ENTRY_POINTS) -> dict[str, str]:
    """Every source unit the entries import, transitively, keyed by its unit name."""
    sources: dict[str, str] = {}
    todo = list(entries)
    while todo:
        unit = todo.pop()
        if unit in sources:
            continue
        text = _file_for(unit).read_text()
        sources[unit] = text
        for imported in _IMPORT.findall(text):
            if imported.startswith("."):
                todo.append(posixpath.normpath(posixpath.join(posixpath.dirname(unit), imported)))
            else:
                todo.append(_remap(imported))
    return sources


@cache
def _compiled() -> dict[str, dict[str, Any]]:
    sources = collect_sources()
    settings = dict(SETTINGS, remappings=[f"{k}={v}" for k, v in REMAPPINGS.items()])
    request = {"language": "Solidity",
               "sources": {u: {"content": t} for u, t in sorted(sources.items())},
               "settings": settings}
    output = compile_standard_json(request, solc_package=SOLC_PACKAGE)
    return dict(output["contracts"])


@cache
def artifact(name: str) -> Artifact:
    """A compiled Aave v3.6 contract by name. Names that clash (OpenZeppelin's and Aave's
    `Errors`, `Address`) resolve to the one under the Aave package's `src/`."""
    found = [(unit, per_file[name]) for unit, per_file in _compiled().items() if name in per_file]
    if not found:
        raise KeyError(f"no contract {name} in the compiled {PACKAGE}")
    found.sort(key=lambda f: not f[0].startswith("src/"))
    _, c = found[0]
    bytecode = c["evm"]["bytecode"]
    return Artifact(name, c["abi"], "0x" + bytecode["object"], bytecode.get("linkReferences", {}))


def source_fingerprint() -> bytes:
    """What a devnet state built from these sources depends on (package and compiler)."""
    pkg = (_package_root() / "package.json").read_bytes()
    solc = (paths.node_modules() / SOLC_PACKAGE / "package.json").read_bytes()
    return pkg + solc
