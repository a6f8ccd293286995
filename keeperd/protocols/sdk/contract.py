"""The protocol plug-in contract: everything the core asks of an on-chain protocol.

The scanner, the executor, the alert engine, the cascade monitor, `scan`, `simulate` and
`check-config` loop over configured protocols through this contract and never name one. A
protocol is one package under `keeperd/protocols/` and one line in `registry.py`.

    plugin = Plugin(config, PluginContext(chain, pool, store, metrics))  # registry.create
    await plugin.start()                              # addresses, persisted index, checks
    touched = await plugin.discover(head)              # the account index, from the logs
    book = await plugin.read(block, previous, touched)   # Multicall3 reads -> the book
    view = plugin.evaluate(book)                       # pure: health, exposure per row
    plugin.liquidation_hold(book)                      # None, or why nothing may be sent
    plugin.describe(book)                              # the book for the cascade engine
    await plugin.price_feeds(book)                     # what the chain's price watch judges
    plugin.liquidation_logs(accounts) / plugin.decode_liquidation(log, book)
    plugin.liquidator(...)                             # plans and encodes liquidations

Rows of a view are positions: one per account for a cross-margined protocol (Aave), one per
(market, account) for an isolated one (Morpho Blue); `HealthView.labels` tells them apart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
from eth_utils import to_checksum_address

from keeperd.protocols.sdk.feeds import PriceFeed
from keeperd.protocols.sdk.keys import OpportunityKey
from keeperd.protocols.sdk.views import AccountRow, BookRisk, HealthView

if TYPE_CHECKING:  # (types only: the config imports the registry, which imports this)
    from keeperd.chain.rpc import RpcPool
    from keeperd.config import ChainConfig, ConfigIssue, KeeperConfig
    from keeperd.metrics import Metrics
    from keeperd.risk.cascade import Asset, Portfolio  # (the kernels load when the cascade runs)
    from keeperd.storage.account_index import IndexStore


# What a block did to a protocol's positions, told before its read (`Plugin.outlook`).
Outlook = Literal["quiet", "moved", "under"]


@dataclass(frozen=True)
class Need:
    """What a liquidation takes from the keeper's balance (the capital stage's input)."""

    asset: str
    symbol: str
    decimals: int
    amount: int  # token units the liquidation pulls at most
    profit_usd: float


APPROVE = "approve(address,uint256)"


@dataclass(frozen=True)
class Allowed:
    """One kind of call the keeper makes: `function` on `to` (for what, in `purpose`); or, with
    `spender`, an `approve` of any token to that spender only."""

    to: str
    function: str
    purpose: str
    spender: str | None = None

    @classmethod
    def approval(cls, spender: str, purpose: str) -> Allowed:
        return cls("*", APPROVE, purpose, to_checksum_address(spender))


# A receipt's gasUsed is what a transaction paid, not the limit it needed: the storage refund
# is taken off it (up to a fifth of the gas, EIP-3529), and every call keeps 1/64 of its gas
# back (EIP-150). Measured on the devnet's flash liquidations, the least limit that works is
# 1.307x the receipt's figure, every time: a limit of the learned figure x gas_limit_margin
# (1.25) covered a call using at most ~96 % of it, and a liquidation one second later than its
# simulation (the reserves' interest and the swap pool's price record written again, +19k)
# ran out of gas at 618,625 of 646,851 (the `reverted` seen by hand). What the liquidators
# learn is the limit the receipt says was needed.
RECEIPT_TO_LIMIT = 1.31


def charged_gas(gas_limit: int) -> float:
    """The gas a successful liquidation sent with `gas_limit` is expected to pay for: the
    limit less what a limit carries and a success gives back (RECEIPT_TO_LIMIT), i.e. the
    receipt's figure a liquidator learnt the limit from, times its margin. Priced at the
    limit, every liquidation looked 31 % dearer in gas than it is, and trader remains worth
    $27-34 were left to others. (The worst case, a transaction that runs to its limit, is
    the fee budget's: fee cap x limit, never above the profit.)"""
    return gas_limit / RECEIPT_TO_LIMIT


@dataclass(frozen=True)
class GasQuote:
    """What gas costs this block, as the executor's fee policy prices it (a plug-in never
    recomputes the policy): the fee per gas a liquidation is sent with, the native token in
    USD, and the operator's `min_profit_usd`."""

    fee_per_gas: int  # wei
    native_usd: float
    min_profit_usd: float
    # What a liquidation is expected to pay beside its gas (an OP Stack chain's L1 data and
    # operator fees, with headroom: the executor's last priced figure), in wei.
    fee_beside_gas_wei: int = 0

    def gas_usd(self, gas_limit: int) -> float:
        """What a liquidation sent with `gas_limit` is expected to pay for its gas at this
        fee (`charged_gas`): the executor's decision prices it the same way."""
        return charged_gas(gas_limit) * self.fee_per_gas / 1e18 * self.native_usd

    def least_profit(self, gas_limit: int, token_usd: float, decimals: int) -> int:
        """What a seller contract must keep of the token it repays in (units), or revert:
        enough to pay for the gas at this fee, and what the chain charges beside it, and still
        clear `min_profit_usd` — the bar the executor's decision sets, or one that passed it
        would revert in simulation."""
        beside_usd = self.fee_beside_gas_wei / 1e18 * self.native_usd
        return int((self.min_profit_usd + self.gas_usd(gas_limit) + beside_usd) / token_usd
                   * 10**decimals)


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


class FieldProblem(ValueError):
    """A plug-in's start failed on what one field of its config names (a market id that no
    market has): `field`, its path inside the protocol's entry (`markets[1]`), and `fix`.
    Asked again like any failed start (the answer may be one endpoint's); the last one is
    said with the field and the fix, by `keeperd run` and by check-config."""

    def __init__(self, message: str, *, field: str, fix: str) -> None:
        super().__init__(message)
        self.field = field
        self.fix = fix


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
    # The swap pool it sells the seized collateral in (the flash paths): the block's sales
    # through one pool are simulated in turn (execution/sales.py), as they will be mined.
    sells_through: str | None = None


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
    # realises nothing itself, 0.0).
    profit_usd: float | None = None
    # Where the gain is realised when not here (Perp Curie: "by the unwind"), for the words
    # of an inclusion whose realised figure is its gas alone.
    realised_later: str | None = None


@dataclass(frozen=True)
class PriceTrust:
    """What the chain's price watch trusts at a block (its gate, for a plug-in): `paused`,
    the assets whose breaker is tripped; `hold`, why no price is trusted at all (the block
    not judged, the sequencer down), or None."""

    paused: frozenset[str] = frozenset()
    hold: str | None = None


# Asked only by a follow-up that rests on a price: the gate reads the breaker's table, and
# most blocks of most protocols have no follow-up at all.
TrustNow = Callable[[], Awaitable[PriceTrust]]


async def trust_everything() -> PriceTrust:
    """No price watch (tests of other stages, a tool without one): nothing is paused."""
    return PriceTrust()


# Whether a follow-up (its key as `housekeeping` gives it) goes at this block: not already in
# hand — journaled and in flight or included, or given up after its tries. The executor's
# journal decides; a plug-in asks before spending a request on it (Curie's unwind limit asked
# every voter endpoint for an unwind in flight, ahead of every block's liquidations).
DueNow = Callable[[OpportunityKey], Awaitable[bool]]


async def always_due(key: OpportunityKey) -> bool:
    """No journal (tests of other stages): every follow-up goes."""
    return True


class DepositRecords(Protocol):
    """The margin deposits a keeper sent, kept in its state database (`Journal`)."""

    async def record_deposit(self, protocol: str, deposit_id: str, amount: int, *,
                             refill: bool) -> None: ...

    async def forget_deposit(self, deposit_id: str) -> None: ...

    async def deposits(self, protocol: str) -> list[tuple[float, int | None, bool]]: ...


@runtime_checkable
class Liquidator(Protocol):
    """The execution half of a plug-in: planning and encoding. The executor's stages (breaker,
    journal, decision, capital, simulation, signing, settling) are the same for every protocol."""

    flash_premium_bps: int  # 0 when the protocol has no flash-loan path
    supports_flash: bool  # a capital-free path the capital stage may send it down

    async def keep_allowances(self, head: int, book: Any) -> None:
        """Every 10 blocks: top up what its contracts may take from the keeper."""

    async def balances(self, assets: list[str]) -> dict[str, int] | None:
        """Capital that is not a token balance, or None (the core reads token balances)."""

    def spender(self, asset: str) -> str | None:
        """The contract that pulls `asset` from the keeper's wallet in its own-capital
        liquidations, whose allowance (bounded: protocols/sdk/approvals.py) caps them; None
        when nothing pulls it (or it is no token: Curie's vault margin)."""

    def capital_fix(self, short: Collection[str]) -> str | None:
        """What covers a shortfall of these assets of `balances` (None: the core's words,
        fund the keeper with the debt asset)."""

    def paid_short(self, receipt: Mapping[str, Any], account: str,
                   planned: Mapping[str, int] | None) -> float | None:
        """How far the collateral its event gave per debt repaid fell short of the plan's
        (`LiquidatorBase.paid_short`)."""

    def unplanned(self, result: Any, accounts: Collection[str],
                  planned: Collection[str]) -> Mapping[str, int]:
        """Why liquidatable accounts got no plan, by reason (`LiquidatorBase.unplanned`)."""

    def sale_too_large(self, opp: Opportunity, block: int) -> int | None:
        """Plan this flash sale's pair smaller (`LiquidatorBase.sale_too_large`)."""

    def keep_deposits_in(self, records: DepositRecords) -> None:
        """Where the margin it deposits is recorded (`LiquidatorBase.keep_deposits_in`)."""

    def sale_pool(self, target: str, data: bytes) -> str | None:
        """The swap pool a signed call sells through (`LiquidatorBase.sale_pool`)."""

    def error_names(self) -> Mapping[str, str]:
        """The protocol's custom errors' names by selector (4 bytes, hex): a reverted
        liquidation's reason names them (chain/revert_reason.py)."""

    async def housekeeping(self, result: Any, trust: TrustNow = trust_everything,
                           due: DueNow = always_due
                           ) -> list[tuple[OpportunityKey, str, bytes, int]]:
        """Its journaled follow-ups: (key, target, calldata, gas). `trust`: what the price
        watch trusts now, for a follow-up bounded by a price (Curie's unwinds); `due`: whether
        a follow-up goes this block — one that does not may be left out unasked (the executor
        leaves it out anyway)."""

    def housekeeping_settled(self, key: OpportunityKey, block: int, failed: str | None, *,
                             lasting: bool = False, simulated: bool = False) -> None:
        """A follow-up's fate: `failed` says why it could not go (its simulation reverted) or
        reverted on chain; None: it was included (`simulated`: its simulation passed, it goes
        now). `lasting`: it will not be tried again (its retries reverted, or too many tries
        ended unmined)."""

    def hold(self) -> str | None:
        """Why the liquidator itself holds some of its liquidations (Curie: takeovers in a
        market whose unwinds fail), or None; told as `liquidations_held`."""

    def keeper_holdings(self, book: Any) -> Mapping[str, str] | None:
        """What the keeper itself holds in this protocol as of `book` (Curie: the positions
        it took over and has not unwound), market -> the holding as text; None when its
        liquidations leave the keeper nothing to hold. Kept in the journal: a start whose
        config lacks the protocol is refused while it holds something there."""

    def realised(self, receipt: Mapping[str, Any]) -> float:
        """What a transaction of the keeper's (a liquidation, a follow-up) realised for it in
        USD beyond its liquidation event's figure, from its receipt (Curie: its own trades'
        realised PnL less funding — an unwind's gain or loss); 0.0: nothing beyond."""

    def signing_rules(self) -> list[Allowed]:
        """Every call it sends — contract and function, and the spenders it approves — for
        the signing policy, which signs nothing else (execution/signer_policy.py). Asked once
        the plug-in has started, before `prepare`."""

    async def confirm(self, head: int) -> None:
        """The read-only half of `prepare`: each contract its liquidations trust (the pool
        approved, a flash-liquidation contract, a vault) confirmed on the chain, or
        `StartRefused` naming the field and the fix. `keeperd check-config` runs it with no
        transaction manager (it sends nothing); `prepare` starts with it."""

    async def prepare(self, head: int) -> None:
        """Before anything is sent: `confirm`, then approvals, parameters read once."""

    def plan(self, result: Any, accounts: set[str]) -> list[Opportunity]:
        """The liquidations of `accounts` (liquidatable in `result`), most profitable first."""

    def adjust(self, opportunities: list[Opportunity], book: Any) -> list[Opportunity]:
        """Block-wide limits on what was decided (Aave: the reserves' virtual balances)."""

    async def calls(self, chosen: list[tuple[Opportunity, bool]], book: Any,
                    gas: GasQuote) -> list[Call | None]:
        """(opportunity, through the flash path) -> the call to send; None: it cannot be."""

    def learn(self, key: OpportunityKey, gas_used: int) -> None:
        """A receipt: the gas limit this kind of liquidation really needs (the executor's
        reading of its gasUsed, the refund and the 1/64 reserve added back:
        `RECEIPT_TO_LIMIT` above); a liquidator's limit is the most it has learnt, times
        `gas_limit_margin` for the state a later block brings."""

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
    index_interval_s: float
    full_rescan_interval_s: float | None

    async def start(self) -> None:
        """Resolve addresses, load the persisted index, check it against the chain."""

    def started(self) -> str | None:
        """What `start` found on the chain and checked, in one line (`keeperd check-config`
        prints it: the operator sees what was verified, not only that nothing failed)."""

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

    async def outlook(self, block: int, previous: Any | None) -> Outlook | None:
        """What `block` did to its positions, told before its read — asked beside `discover`,
        as cheaply as the read it starts anyway (`liquidation_first.py` orders the protocols'
        paths by it):
        - "quiet": it changed nothing they rest on but time (no price of its own moved, no
          market state changed); with no touched account either, the other protocols'
          liquidation paths go first;
        - "under": at the block's prices a position of `previous` is under water (it will
          be liquidated: this path reads before the others that cannot say so);
        - "moved": anything else.
        None: it cannot tell before its read."""

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

    def verification_at_start(self) -> str | None:
        """As `liquidation_verification`, for what its start read (`check-config` then asks
        the endpoints whether they serve the `eth_simulateV1` the verification needs)."""

    def rows(self, book: Any, view: HealthView) -> list[AccountRow]:
        """Per-row display for `keeperd scan`."""

    def describe(self, book: Any) -> tuple[Portfolio, list[Asset]] | None:
        """(Portfolio, assets) for the cascade engine; None: nothing to model."""

    def liquidation_logs(self, book: Any, accounts: Sequence[str]) -> dict[str, Any]:
        """An eth_getLogs filter (address, topics) for liquidations of `accounts`."""

    def decode_liquidation(self, entry: dict[str, Any], book: Any) -> LiquidationSeen | None:
        """One log of that filter, decoded and valued at the book's prices."""

    async def price_feeds(self, book: Any) -> list[PriceFeed]:
        """The prices this book's positions rest on (`protocols/sdk/feeds.py`): the chain's price
        watch judges them every block and holds liquidations on what it cannot trust. The
        keys must be what the opportunities' `assets` name."""

    def liquidator(self, keeper: KeeperConfig, keeper_address: str | None,
                   tx: Any) -> Liquidator | None:
        """The execution half, or None for a protocol keeperd only watches."""

    def publish(self, book: Any, view: HealthView) -> None:
        """Its own risk metrics after each evaluation (`PluginBase`: none)."""

    async def cascade_depth(self, book: Any, assets: Sequence[Any], block: int
                            ) -> list[Any] | None:
        """The depth its liquidations trade against; None: the chain's spot market."""

    def book_risk(self, book: Any) -> BookRisk | None:
        """Its insurance fund and lines for `keeperd simulate`, or None."""

    async def health_elsewhere(self, book: Any, accounts: Sequence[str], endpoint: Any
                               ) -> dict[str, float] | None:
        """The protocol's own health of `accounts` at the book's block, as another endpoint
        than the one the book was read from answers (`endpoint`, one attempt): the second
        reading of watched accounts, so that one endpoint alone cannot hide a position going
        under water from its holder (`alerts/sources.py`). Keyed by account, or by
        `views.row_key(account, labels)` where an account has several rows (Morpho's markets).
        None: it cannot be asked."""


@dataclass(frozen=True)
class PluginContext:
    """What the daemon hands every plug-in it creates (`registry.create`), beside the plug-in's
    own config entry: its chain, that chain's RPC pool, the account index's store and the
    metrics."""

    chain: ChainConfig
    pool: RpcPool
    store: IndexStore
    metrics: Metrics


class PluginBase:
    """The optional hooks of `Plugin`, declared and defaulted: a plug-in subclasses this and
    overrides what it has; the core calls every hook directly (no lookups by name)."""

    # The daemon's schedule for it: the account index caught up this often even when no
    # block arrives; every account re-read this often (None: only what events touch).
    index_interval_s: float = 60.0
    full_rescan_interval_s: float | None = None

    def __init__(self, config: Any, ctx: PluginContext) -> None:
        """Its config entry (its own `config_model`) and what the daemon hands it."""

    @staticmethod
    async def check_config(pool: Any, config: Any, index: int) -> list[ConfigIssue]:
        """Problems `keeperd check-config` finds in its entry against the chain (contracts
        deployed where it says)."""
        return []

    def started(self) -> str | None:
        return None  # nothing to say beyond "started"

    def publish(self, book: Any, view: HealthView) -> None:
        """Its own risk metrics from an evaluated book, after the core's, every scan (no I/O:
        what it needs is read into the book by `read`), once no protocol's liquidation path
        is running: its cost delays no liquidation (`keeperd/liquidation_first.py`)."""

    async def cascade_depth(self, book: Any, assets: Sequence[Any], block: int
                            ) -> list[Any] | None:
        """The market depth the liquidations of each cascade asset trade against; None: the
        chain's spot market (the cascade reads it)."""
        return None

    def book_risk(self, book: Any) -> BookRisk | None:
        """Its insurance fund and risk lines for `keeperd simulate`; None: nothing beyond the
        cascade."""
        return None

    async def health_elsewhere(self, book: Any, accounts: Sequence[str], endpoint: Any
                               ) -> dict[str, float] | None:
        return None  # no second reading of its watched accounts

    async def outlook(self, block: int, previous: Any | None) -> Outlook | None:
        return None  # it cannot tell before its read: its path goes as any other

    def first_pass(self, previous: Any | None, book: Any
                   ) -> tuple[np.ndarray, np.ndarray, HealthView] | None:
        return None  # every row is evaluated at once

    def liquidation_verification(self, book: Any) -> str | None:
        return None  # it knows the rules its book runs

    def verification_at_start(self) -> str | None:
        return None

    async def price_feeds(self, book: Any) -> list[PriceFeed]:
        return []  # no on-chain price to judge

    def liquidator(self, keeper: KeeperConfig, keeper_address: str | None,
                   tx: Any) -> Liquidator | None:
        return None  # watched only


class LiquidatorBase:
    """The optional hooks of `Liquidator`, declared and defaulted."""

    flash_premium_bps: int = 0
    supports_flash: bool = False  # a capital-free path (the executor's capital stage)

    def capital_fix(self, short: Collection[str]) -> str | None:
        return None  # token balances: the core's words

    def keep_deposits_in(self, records: DepositRecords) -> None:
        """The state database's record of the margin deposits it sends into its protocol
        (Curie's Vault), given before `prepare`: a budget of refills that lives in memory is
        spent again at every restart. A plug-in that deposits nothing ignores it."""

    def sale_too_large(self, opp: Opportunity, block: int) -> int | None:
        """A flash sale of `opp` failed its bound alone (the pool's depth): plan the pair
        smaller from the next block, if the plug-in can (the new cap, or None)."""
        return None

    def sale_pool(self, target: str, data: bytes) -> str | None:
        """The swap pool a signed call of its sells through (`Call.sells_through`), read from
        its calldata: a sale resumed after a restart is simulated ahead of new ones through
        that pool until mined. None: it sells through none."""
        return None

    def unplanned(self, result: Any, accounts: Collection[str],
                  planned: Collection[str]) -> Mapping[str, int]:
        """Why liquidatable `accounts` got no plan (`planned`: those that did), as the
        protocol's own state says: reason -> how many accounts (Aave: a reserve paused, or in
        its grace period). Empty: nothing the protocol holds (dust, pricing: the
        decision's). 16 accounts under water behind a paused reserve were skipped with no
        word (a by-hand trial)."""
        return {}

    def paid_short(self, receipt: Mapping[str, Any], account: str,
                   planned: Mapping[str, int] | None) -> float | None:
        """How far the collateral the protocol's own event in `receipt` gave per debt repaid
        fell short of the plan's (0.09: 9 % less; below 0: more), or None when it cannot
        say (no plan journaled, no event of `account`). The executor's loss guard reads it:
        a shortfall beyond a price's move says the rules keeperd planned on are not the
        pool's."""
        return None

    def error_names(self) -> Mapping[str, str]:
        return {}  # (reverts with a message, or none known)

    def signing_rules(self) -> list[Allowed]:
        return []

    async def confirm(self, head: int) -> None:
        """Nothing it trusts beyond the protocol's own contracts."""

    async def keep_allowances(self, head: int, book: Any) -> None:
        """Every 10 blocks: top up what its contracts may take from the keeper."""

    async def balances(self, assets: list[str]) -> dict[str, int] | None:
        """Capital that is not a token balance (Curie: margin in its vault), by need asset;
        None: the keeper's token balances (the core reads them)."""
        return None

    def spender(self, asset: str) -> str | None:
        """Who pulls `asset` from the keeper's wallet (default: nothing it knows of)."""
        return None

    async def housekeeping(self, result: Any, trust: TrustNow = trust_everything,
                           due: DueNow = always_due
                           ) -> list[tuple[OpportunityKey, str, bytes, int]]:
        """Its own follow-ups, journaled like liquidations: (key, target, calldata, gas)."""
        return []

    def housekeeping_settled(self, key: OpportunityKey, block: int, failed: str | None, *,
                             lasting: bool = False, simulated: bool = False) -> None:
        """A follow-up's fate (default: nothing depends on it)."""

    def hold(self) -> str | None:
        return None  # (its liquidations held only by the core's gates)

    def keeper_holdings(self, book: Any) -> Mapping[str, str] | None:
        """What the keeper itself holds in this protocol as of `book` (market -> the holding
        as text), kept in the journal so that a start without the protocol refuses while it
        holds something there; None: its liquidations leave the keeper nothing to hold."""
        return None

    def realised(self, receipt: Mapping[str, Any]) -> float:
        return 0.0  # (its liquidation event says all it gains)

    def adjust(self, opportunities: list[Opportunity], book: Any) -> list[Opportunity]:
        return opportunities  # no block-wide limit

    def learn(self, key: OpportunityKey, gas_used: int) -> None:
        """A receipt: what this kind of liquidation really costs in gas (default: nothing
        learnt)."""

    def native_usd(self, book: Any) -> float | None:
        return None


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
