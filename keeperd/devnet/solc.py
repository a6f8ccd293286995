"""Compile our Solidity with the pinned solc-js from npm (no compiler download at run time).

Output is deterministic, so it is cached under .devnet/solc/ keyed by a hash of the sources,
the settings and the compiler package version.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keeperd.devnet import paths

_COMPILE_JS = r"""
const solc = require('solc');
let input = '';
process.stdin.on('data', (d) => { input += d; });
process.stdin.on('end', () => { process.stdout.write(solc.compile(input)); });
"""


@dataclass(frozen=True)
class CompiledContract:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str  # 0x-prefixed creation code
    deployed_bytecode: str


class SolcError(RuntimeError):
    pass


def _solc_version() -> str:
    pkg = paths.node_modules() / "solc" / "package.json"
    return json.loads(pkg.read_text())["version"]


def compile_sources(
    sources: dict[str, str],
    *,
    optimizer_runs: int = 200,
    evm_version: str = "paris",
    via_ir: bool = False,
) -> dict[str, CompiledContract]:
    """Compile {file name: source}; return {contract name: CompiledContract}."""
    settings: dict[str, Any] = {
        "optimizer": {"enabled": True, "runs": optimizer_runs},
        "evmVersion": evm_version,
        "viaIR": via_ir,
        "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object",
                                        "evm.deployedBytecode.object"]}},
    }
    request = {"language": "Solidity",
               "sources": {name: {"content": src} for name, src in sorted(sources.items())},
               "settings": settings}
    blob = json.dumps(request, sort_keys=True)
    key = hashlib.sha256(f"{_solc_version()}\n{blob}".encode()).hexdigest()[:24]
    cache = paths.devnet_dir() / "solc" / f"{key}.json"
    if cache.is_file():
        output = json.loads(cache.read_text())
    else:
        proc = subprocess.run(
            ["node", "-e", _COMPILE_JS],
            input=blob, capture_output=True, text=True, cwd=paths.project_root(), check=False,
            timeout=600,
        )
        if proc.returncode != 0:
            raise SolcError(f"solc-js failed: {proc.stderr.strip()[-2000:]}")
        output = json.loads(proc.stdout)
        errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
        if errors:
            raise SolcError("\n".join(e.get("formattedMessage", e["message"]) for e in errors))
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(output))
        tmp.replace(cache)
    result: dict[str, CompiledContract] = {}
    for per_file in output["contracts"].values():
        for name, c in per_file.items():
            result[name] = CompiledContract(
                name=name,
                abi=c["abi"],
                bytecode="0x" + c["evm"]["bytecode"]["object"],
                deployed_bytecode="0x" + c["evm"]["deployedBytecode"]["object"],
            )
    return result


def compile_project_contracts(names: list[str]) -> dict[str, CompiledContract]:
    """Compile files from the repo's contracts/ folder (e.g. ["Multicall3.sol"])."""
    root = paths.contracts_dir()
    sources = {n: (root / n).read_text() for n in names}
    return compile_sources(sources)


def load_sources(folder: Path, pattern: str = "**/*.sol") -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.glob(pattern))}
