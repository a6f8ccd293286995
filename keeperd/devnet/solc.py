"""Compile our Solidity with the pinned solc-js from npm (no compiler download at run time).

Output is deterministic, so it is cached under .devnet/solc/ keyed by a hash of the sources,
the settings and the compiler package version.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keeperd.devnet import paths

_COMPILE_JS = r"""
const solc = require(process.argv[1]);
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


# The project's own contracts pin solc 0.8.19; Aave v3.6 needs 0.8.27 (require with a custom
# error, without via-IR), installed beside it under an npm alias.
DEFAULT_SOLC = "solc"


def _solc_version(package: str = DEFAULT_SOLC) -> str:
    pkg = paths.node_modules() / package / "package.json"
    return json.loads(pkg.read_text())["version"]


def compile_standard_json(request: dict[str, Any], *, solc_package: str = DEFAULT_SOLC,
                          timeout: float = 900) -> dict[str, Any]:
    """Run solc-js on a standard-JSON request; the output is cached by the request's hash
    and the compiler version (compiling Aave v3.6 takes ~30 s, loading the cache ~0.1 s)."""
    blob = json.dumps(request, sort_keys=True)
    version = _solc_version(solc_package)
    key = hashlib.sha256(f"{version}\n{blob}".encode()).hexdigest()[:24]
    cache = paths.devnet_dir() / "solc" / f"{key}.json"
    # The checkout's own cache serves a relocated devnet directory too (the output is a pure
    # function of the request): Aave v3.6 is not compiled again for every KEEPERD_DEVNET_DIR.
    for found in (cache, paths.project_root() / ".devnet" / "solc" / f"{key}.json"):
        if found.is_file():
            return dict(json.loads(found.read_text()))
    proc = subprocess.run(
        ["node", "-e", _COMPILE_JS, solc_package],
        input=blob, capture_output=True, text=True, cwd=paths.project_root(), check=False,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise SolcError(f"solc-js ({solc_package} {version}) failed: "
                        f"{proc.stderr.strip()[-2000:]}")
    output = json.loads(proc.stdout)
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise SolcError("\n".join(e.get("formattedMessage", e["message"]) for e in errors[:20]))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(output))
    tmp.replace(cache)
    return dict(output)


def compile_sources(
    sources: dict[str, str],
    *,
    optimizer_runs: int = 200,
    evm_version: str = "paris",
    via_ir: bool = False,
    metadata_hash: bool = True,
) -> dict[str, CompiledContract]:
    """Compile {file name: source}; return {contract name: CompiledContract}. Without
    `metadata_hash` the code does not end with a hash of the sources' text (solc's
    `bytecodeHash: none`): a comment edited leaves the bytes, and so a CREATE2 address,
    as they were."""
    settings: dict[str, Any] = {
        "optimizer": {"enabled": True, "runs": optimizer_runs},
        "evmVersion": evm_version,
        "viaIR": via_ir,
        "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object",
                                        "evm.deployedBytecode.object"]}},
    }
    if not metadata_hash:
        settings["metadata"] = {"bytecodeHash": "none"}
    request = {"language": "Solidity",
               "sources": {name: {"content": src} for name, src in sorted(sources.items())},
               "settings": settings}
    output = compile_standard_json(request)
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


# `import "./Other.sol";` — the only form of import our contracts use (one flat folder).
_LOCAL_IMPORT = re.compile(r'^\s*import\s+"\./([A-Za-z0-9_]+\.sol)";', re.MULTILINE)


def compile_project_contracts(names: list[str], *, metadata_hash: bool = True
                              ) -> dict[str, CompiledContract]:
    """Compile files from the repo's contracts/ folder (e.g. ["Multicall3.sol"]), with the
    files they import from it."""
    root = paths.contracts_dir()
    sources: dict[str, str] = {}
    wanted = list(names)
    while wanted:
        name = wanted.pop()
        if name not in sources:
            sources[name] = (root / name).read_text()
            wanted.extend(_LOCAL_IMPORT.findall(sources[name]))
    return compile_sources(sources, metadata_hash=metadata_hash)


def load_sources(folder: Path, pattern: str = "**/*.sol") -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.glob(pattern))}
