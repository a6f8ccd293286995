"""The narrow interface every protocol adapter implements.

The core (scanner, executor, alerts, cascade) only speaks this interface:

    accounts = await adapter.discover(head)          # index catch-up, returns touched accounts
    book     = await adapter.snapshot(accounts, block)  # batched reads → a columnar Book
    view     = adapter.evaluate(book, prices=None)      # pure: health per account

I/O lives in discover/snapshot; evaluate is a pure function of the book and an optional price
override, so what-if analysis (reprice, cascades) needs no RPC. Liquidation planning is the
protocol's pure module too (Aave V3: `protocols/aave_v3/liquidation.py`); the executor calls it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class AccountRow:
    """One account's health as shown by `keeperd scan` (JSON keys are these field names)."""

    protocol: str
    account: str
    health_factor: float | None  # None: no debt
    collateral_usd: float
    debt_usd: float
    liquidation_threshold: float | None  # weighted, as a fraction (0.825)
    main_collateral: str | None
    drop_to_liquidation: float | None  # fraction of the main collateral's price
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {
            "protocol": self.protocol,
            "account": self.account,
            "health_factor": self.health_factor,
            "collateral_usd": self.collateral_usd,
            "debt_usd": self.debt_usd,
            "liquidation_threshold": self.liquidation_threshold,
            "main_collateral": self.main_collateral,
            "drop_to_liquidation": self.drop_to_liquidation,
        }
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class HealthView:
    """Health of every account of a book, columnar (index i ↔ book.accounts[i])."""

    accounts: Sequence[str]
    health: NDArray[np.float64]  # inf where the account has no debt
    collateral_usd: NDArray[np.float64]
    debt_usd: NDArray[np.float64]
    liquidation_threshold: NDArray[np.float64]
    main_collateral: Sequence[str | None]
    drop_to_liquidation: NDArray[np.float64]  # NaN where no drop of it liquidates


@runtime_checkable
class ProtocolAdapter(Protocol):
    name: str
    kind: str
    chain: str

    async def start(self) -> None:
        """Resolve addresses, load the persisted index, check it against the chain."""

    async def discover(self, head: int) -> set[str]:
        """Index events up to `head` (less confirmations); return the accounts touched."""

    def on_reorg(self, ancestor: int) -> list[str]:
        """Rewind the index to `ancestor`; return the accounts that disappeared."""

    @property
    def accounts(self) -> set[str]:
        """Every account the index knows."""

    async def snapshot(self, accounts: Sequence[str], block: int) -> Any:
        """Read the state needed to evaluate `accounts` at `block`, in batches."""

    def evaluate(self, book: Any, prices: Mapping[str, float] | None = None) -> HealthView:
        """Health of every account in the book; `prices` (symbol → USD) overrides the book's."""

    def rows(self, book: Any, view: HealthView) -> list[AccountRow]:
        """Per-account rows for display and JSON."""
