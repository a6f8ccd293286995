"""Which Pool implementation a market runs, by its code rather than by the number it reports.

Forks reuse `POOL_REVISION` numbers with rules of their own (a fork at revision 12 gates
`liquidationCall` behind a KYC token; another answers 10 with changed liquidation logic), so a
revision number alone does not say which rules hold. keeperd reads the pool proxy's
implementation (the EIP-1967 slot, every block, beside the market's first multicall) and
recognises it in one of two ways:

- **published**: the implementation address Aave's own address book gives for that chain
  (`POOL_IMPL`, from the pinned `@aave-dao/aave-address-book`; `published.json`);
- **built**: the code's fingerprint equals that of a Pool keeperd's devnet builds from the
  published packages (`implementations.json`, written by `python -m keeperd.devnet.implementations`
  and checked by the tests against what the devnets build).

The fingerprint is the keccak of the runtime code with every PUSH20 and PUSH32 operand zeroed
and the compiler's metadata trailer cut off: what changes from one deployment of the same
sources to another is exactly those — linked library addresses (PUSH20) and immutables such as
the addresses provider (PUSH32 placeholders) — while the rules (the code and its smaller
constants) stay in; and beside it the fingerprints of the libraries at those addresses
(`linked_fingerprint`), where the Pool keeps most of its rules (LiquidationLogic, PoolLogic,
...): without them a pool linked to a changed LiquidationLogic passed as the v3.6 keeperd
tested, and its unverified liquidations lost $254k on a devnet (a by-hand trial). A
revision number keeperd knows, on code it does not recognise, is *unknown*: its liquidations
are verified against the chain (adapter.py, docs/protocols.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from keeperd.chain.code import (  # noqa: F401 - re-exported
    IMPLEMENTATION_SLOT,
    code_fingerprint,
    linked_fingerprint,
    read_linked_fingerprint,
    strip_metadata,
)

_BUILT = Path(__file__).with_name("implementations.json")
# Aave's own markets whose Pool is not the standard one keeperd's rules describe: their
# liquidations are verified like a fork's.
OTHER_RULES = {
    "AaveV3EthereumHorizon": "the permissioned RWA market: who may liquidate is gated",
}


@dataclass(frozen=True)
class Implementation:
    """A pool's logic contract as keeperd saw it."""

    address: str
    fingerprint: str | None  # None while its code has not been read
    recognised_as: str | None  # "published: AaveV3Ethereum", "built: v3.6", or None

    @property
    def recognised(self) -> bool:
        return self.recognised_as is not None


@cache
def built_fingerprints() -> dict[str, tuple[int, str]]:
    """fingerprint -> (revision, release) of every Pool keeperd's devnets build."""
    if not _BUILT.exists():
        return {}
    data = json.loads(_BUILT.read_text())
    return {entry["fingerprint"]: (int(entry["revision"]), entry["release"])
            for entry in data["implementations"]}


def recognise(chain_id: int, address: str, fingerprint: str | None,
              revision: int) -> str | None:
    """How keeperd knows this implementation, or None. A built fingerprint counts only for
    the revision it was built as (a fork answering another number on the same code is not
    the code keeperd tested)."""
    from keeperd.protocols.aave_v3.published import published_implementation

    market = published_implementation(chain_id, address)
    if market is not None and market.name not in OTHER_RULES:
        return f"published: {market.name}"
    built = built_fingerprints().get(fingerprint or "")
    if built is not None and built[0] == revision:
        return f"built: {built[1]}"
    return None
