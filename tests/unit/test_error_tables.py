"""The custom errors' names a reverted liquidation's reason uses (chain/revert_reason.py,
protocols/aave_v3/errors.py) are the sources': Aave's `Errors.sol` of the npm package the
devnet is built from, keeperd's own contracts. (Apart from test_revert_reason.py, which the
mutation runs copy without the sources.)"""

from __future__ import annotations

import re
from pathlib import Path

from eth_utils import keccak

from keeperd.chain.revert_reason import OWN_ERRORS, OWN_SIGNATURES
from keeperd.protocols.aave_v3.errors import ERRORS, LATER_SIGNATURES, SIGNATURES

ROOT = Path(__file__).resolve().parents[2]


def signatures(source: str) -> list[str]:
    """Each `error Name(type name, ...);` of a Solidity source, as its signature."""
    out = []
    for m in re.finditer(r"^\s*error\s+(\w+)\(([^)]*)\);", source, re.M):
        types = [p.strip().split()[0] for p in m.group(2).split(",") if p.strip()]
        out.append(f"{m.group(1)}({','.join(types)})")
    return out


def test_the_error_tables_are_the_sources() -> None:
    errors_sol = ROOT / ("node_modules/@aave-dao/aave-v3-origin/src/contracts/protocol/"
                         "libraries/helpers/Errors.sol")
    assert list(SIGNATURES) == signatures(errors_sol.read_text())
    # v3.7's additions are not in the package's (v3.6) source, and no selector collides.
    assert not set(LATER_SIGNATURES) & set(SIGNATURES)
    assert "930bb771" in ERRORS and len(ERRORS) == len(SIGNATURES) + len(LATER_SIGNATURES)
    assert ERRORS[keccak(text="UserHasAssetWithZeroLtv()")[:4].hex()] == "UserHasAssetWithZeroLtv"
    own = [s for f in sorted((ROOT / "contracts").glob("*.sol"))
           for s in signatures(f.read_text())]
    assert sorted(OWN_SIGNATURES) == sorted(own) and len(OWN_ERRORS) == len(own)
