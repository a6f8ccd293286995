"""The protocol plug-in contract: everything the core asks of an on-chain protocol.

The scanner, the executor, the alert engine, the cascade monitor, `scan`, `simulate` and
`check-config` loop over configured protocols through this contract and never name one. A
protocol is one package under `keeperd/protocols/` and one line in `registry.py`.

    plugin = Plugin(config, chain, pool, store, metrics)   # registry.create
    await plugin.start()                              # addresses, persisted index, checks
    touched = await plugin.discover(head)              # the account index, from the logs
    book = await plugin.read(block, previous, touched)   # Multicall3 reads -> the book
    view = plugin.evaluate(book)                       # pure: health, exposure per row
    plugin.liquidation_hold(book)                      # None, or why nothing may be sent
    plugin.describe(book)                              # the book for the cascade engine
    plugin.liquidation_logs(accounts) / plugin.decode_liquidation(log, book)
    plugin.liquidator(...)                             # plans and encodes liquidations

Rows of a view are positions: one per account for a cross-margined protocol (Aave), one per
(market, account) for an isolated one (Morpho Blue); `HealthView.labels` tells them apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from keeperd.config import KeeperConfig
from keeperd.execution.capital import Need
from keeperd.execution.signer_policy import Allowed
from keeperd.protocols.base import AccountRow, HealthView


@dataclass(frozen=True, order=True)
class OpportunityKey:
    """Which liquidation: the journal's primary key, so a restart never sends one twice.

    `position` says what within the account is liquidated (Aave: the collateral and debt
    assets; Morpho Blue: the market); `version` changes when the position does (someone repaid
    or liquidated part of it: a new opportunity); `attempt` > 0 is a retry after a revert."""

    protocol: str
    account: str
    position: str
    version: str
    attempt: int = 0

    def __str__(self) -> str:
        base = f"{self.protocol}:{self.account}:{self.position}:{self.version}"
        return f"{base}#retry{self.attempt}" if self.attempt else base

    def retry(self, attempt: int) -> OpportunityKey:
        return OpportunityKey(self.protocol, self.account, self.position, self.version, attempt)


@dataclass(frozen=True)
class Opportunity:
    """A planned liquidation, priced, before the executor's stages decide on it."""

    key: OpportunityKey
    collateral: str  # symbol (journal, logs)
    debt: str  # symbol
    amount: int  # debt to repay, token units (journal)
    assets: frozenset[str]  # symbols the position's health rests on (the breaker holds those)
    need: Need  # what the keeper's balance must cover (the capital stage)
    gross_profit_usd: float  # the bonus seized, before slippage, premium and gas
    seized_usd: float  # what selling the seized collateral risks slippage on
    repaid_usd: float  # what a flash loan would borrow
    gas_limit: int
    plan: Any  # the plug-in's own plan: what `Liquidator.calls` encodes
    detail: str = ""
    # What the protocol's own liquidation event will show if the chain at inclusion is the
    # chain planned on: the event's fields by name, in token units (journaled with the row).
    planned: Mapping[str, int] | None = None

    @property
    def account(self) -> str:
        return self.key.account


class StartRefused(Exception):
    """A plug-in will not start as configured (an address it would trust its money to comes
    from one unverified answer, say): the message says why and what to do. keeperd run exits
    with it, as with a configuration error."""


@dataclass(frozen=True)
class Verdict:
    """What the chain itself said of a liquidation simulated under verification: whether it
    may be sent, and its outcome priced from what the simulation did (never from the plan)."""

    ok: bool
    reason: str  # why not, or what was confirmed (logs)
    seized_usd: float = 0.0
    repaid_usd: float = 0.0

    @property
    def gross_profit_usd(self) -> float:
        return self.seized_usd - self.repaid_usd


@dataclass(frozen=True)
class Verification:
    """A liquidation on rules keeperd does not know for sure (Aave: a revision or an
    implementation it does not recognise) is sent only on the chain's word: `reads` run from
    the keeper's address in the same simulated block just before the liquidation (the
    protocol's own health view), and `judge` weighs their answers and the liquidation's
    simulated logs (the executor simulates the three together with `eth_simulateV1`)."""

    why: str  # the reason verification is needed (alerts, logs)
    reads: tuple[tuple[str, bytes], ...]  # (target, calldata)
    judge: Callable[[list[bytes], list[dict[str, Any]]], Verdict]


@dataclass(frozen=True)
class Call:
    """One transaction to simulate and send."""

    opportunity: Opportunity
    target: str
    data: bytes
    flash: bool = False  # through a flash-loan contract (its premium counts against profit)
    verification: Verification | None = None  # send only on the chain's own word


@dataclass(frozen=True)
class ExecutionEvent:
    """What the executor did with an opportunity (sent, included, reverted, lost_race,
    not_sent, ...): the alert engine's input."""

    kind: str
    chain: str
    protocol: str
    account: str
    opportunity: str
    block: int | None
    details: Mapping[str, Any]


@dataclass(frozen=True)
class LiquidationSeen:
    """A liquidation event of the protocol, decoded (anyone's: lost races, watched positions,
    forensics)."""

    account: str
    liquidator: str
    block: int | None
    tx_hash: str
    log_index: str
    summary: str  # "$1,234.00 of USDC debt repaid, ..."
    repaid_usd: float | None
    seized_usd: float | None
    details: Mapping[str, Any]
    labels: Mapping[str, str]  # which position (Morpho: its market)
    # What the liquidator gained, when it is not seized minus repaid (Perp Curie: a takeover
    # moves no token; the liquidator's share of the penalty is its prize).
    profit_usd: float | None = None


@runtime_checkable
class Liquidator(Protocol):
    """The execution half of a plug-in: planning and encoding. The executor's stages (breaker,
    journal, decision, capital, simulation, signing, settling) are the same for every protocol."""

    flash_premium_bps: int  # 0 when the protocol has no flash-loan path

    def signing_rules(self) -> list[Allowed]:
        """Every call it sends — contract and function, and the spenders it approves — for
        the signing policy, which signs nothing else (execution/signer_policy.py). Asked once
        the plug-in has started, before `prepare`."""

    async def prepare(self, head: int) -> None:
        """Before anything is sent: approvals, parameters read once."""

    def plan(self, result: Any, accounts: set[str]) -> list[Opportunity]:
        """The liquidations of `accounts` (liquidatable in `result`), most profitable first."""

    def adjust(self, opportunities: list[Opportunity], book: Any) -> list[Opportunity]:
        """Block-wide limits on what was decided (Aave: the reserves' virtual balances)."""

    async def calls(self, chosen: list[tuple[Opportunity, bool]], book: Any, base_fee: int,
                    native_usd: float) -> list[Call | None]:
        """(opportunity, through the flash path) -> the call to send; None: it cannot be."""

    def learn(self, key: str, gas_used: int) -> None:
        """A receipt: what this kind of liquidation really costs in gas."""

    def native_usd(self, book: Any) -> float | None:
        """The chain's native token in USD as this protocol prices it (None: it does not)."""

    def tokens(self, book: Any) -> list[tuple[str, str, int]]:
        """(address, symbol, decimals) of what the keeper repays with (balance gauges)."""


@runtime_checkable
class Plugin(Protocol):
    kind: ClassVar[str]
    config_model: ClassVar[type]  # the pydantic model of its config entry (`kind` a Literal)
    position_action: ClassVar[str]  # what a watched borrower should do, in the alert
    name: str
    chain: str
    config: Any

    async def start(self) -> None:
        """Resolve addresses, load the persisted index, check it against the chain."""

    @property
    def accounts(self) -> set[str]:
        """Every account the index knows."""

    def index_lag(self, head: int) -> int | None:
        """Blocks the account index is behind `head` (None: not started)."""

    async def discover(self, head: int) -> set[str]:
        """Index events up to `head` (less confirmations); the accounts touched."""

    async def on_reorg(self, ancestor: int) -> list[str]:
        """Rewind the index to `ancestor`; the accounts that disappeared."""

    async def read(self, block: int, previous: Any | None, touched: set[str],
                   dropped: set[str]) -> Any:
        """The book at `block`: every account when `previous` is None, else `previous` with the
        touched accounts re-read (and the dropped ones gone). Has `.block`."""

    def evaluate(self, book: Any, prices: Mapping[str, float] | None = None) -> HealthView:
        """Health and exposure of every row; `prices` (symbol -> USD) is a what-if."""

    def first_pass(self, previous: Any | None, book: Any
                   ) -> tuple[np.ndarray, np.ndarray, HealthView] | None:
        """When prices moved: (the rows exposed to them, those of them that may be under
        water, their health) — evaluated ahead of the rest, so the executor acts on them
        first; None when nothing moved."""

    def liquidation_hold(self, book: Any) -> str | None:
        """Why liquidations must not be sent on this book, or None."""

    def liquidation_verification(self, book: Any) -> str | None:
        """Why each liquidation on this book may be sent only on the chain's own word (its
        `Call.verification`), or None: the plug-in knows the rules the book runs."""

    def rows(self, book: Any, view: HealthView) -> list[AccountRow]:
        """Per-row display for `keeperd scan`."""

    def describe(self, book: Any) -> tuple[Any, list[Any]] | None:
        """(Portfolio, assets) for the cascade engine; None: nothing to model."""

    def liquidation_logs(self, book: Any, accounts: Sequence[str]) -> dict[str, Any]:
        """An eth_getLogs filter (address, topics) for liquidations of `accounts`."""

    def decode_liquidation(self, entry: dict[str, Any], book: Any) -> LiquidationSeen | None:
        """One log of that filter, decoded and valued at the book's prices."""

    def oracle_monitor(self, breaker: Any, config: Any) -> Any | None:
        """A scanner listener watching the protocol's price feeds and tripping the breaker
        (`on_scan`, `close`), or None."""

    def liquidator(self, keeper: KeeperConfig, keeper_address: str | None,
                   tx: Any) -> Liquidator | None:
        """The execution half, or None for a protocol keeperd only watches."""


# Hooks a plug-in may leave out (the core looks them up with getattr):
# - `publish(book, view) -> None`: the protocol's own risk metrics from an evaluated book,
#   after the core's, every scan (no I/O: what it needs is read into the book by `read`);
# - `async cascade_depth(book, assets, block) -> list[depth]`: the market depth the
#   liquidations of each cascade asset trade against, when it is not the chain's spot market;
# - `book_risk(book) -> BookRisk`: its insurance fund and risk lines for `keeperd simulate`.
OPTIONAL_HOOKS = ("publish", "cascade_depth", "book_risk")


class LogIndexed:
    """The account-index half of a plug-in whose accounts come from its events through an
    `AccountIndexer` in `self.indexer` (set by its constructor)."""

    indexer: Any

    @property
    def accounts(self) -> set[str]:
        accounts: set[str] = self.indexer.accounts
        return accounts

    def index_lag(self, head: int) -> int | None:
        return max(0, head - self.indexer.confirmations - self.indexer.indexed_block)

    async def discover(self, head: int) -> set[str]:
        touched: set[str] = (await self.indexer.catch_up(head)).touched
        return touched

    async def on_reorg(self, ancestor: int) -> list[str]:
        dropped: list[str] = await self.indexer.on_reorg(ancestor)
        return dropped


def account_topic(account: str) -> str:
    """An address as an indexed event topic."""
    return "0x" + "0" * 24 + account[2:].lower()
