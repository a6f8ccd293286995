"""Perp Curie's execution half: liquidations as opportunities, and the unwind of what the
keeper took over.

A Curie liquidation transfers no tokens: the liquidator takes the trader's position over at
the mark, discounted by its share of the penalty (half of 2.5 % of the notional; all of it when
the trader's account value is negative), and must keep free collateral at the initial margin
(10 %) afterwards. So:
- capital is the keeper's free collateral in the Vault, not a token balance: a liquidation needs
  10 % of (notional - its fee) of it (`Liquidator.balances` reads it);
- the prize is the fee share less the cost of unwinding: the exchange fee of closing the
  position (the market's fee ratio) — the executor's `swap_slippage_bps` covers the price
  impact, on the notional;
- one liquidation per trader per block, the largest position first: after it the trader may no
  longer be liquidatable (a second call in the same block would revert `CH_EAV`); the next
  block evaluates it afresh;
- only in an open market: a paused or closed one (its BaseToken's status, read every block)
  reverts `liquidate` with `CH_MNO`. A trader is liquidated through its positions in open
  markets (cross margin: taking any of them lowers the account's requirement); one with none
  left is held (counted `held` in the funnel, logged by the adapter) until its market reopens
  (its WETH margin, if the vault calls it liquidatable, may still be sold: that is no market's);
- what the keeper holds afterwards is unwound in a following transaction (`closePosition`), a
  housekeeping call of the next block, journaled like a liquidation so a restart never sends
  it twice (in a paused market it waits; in a closed one it is settled at the closing price by
  `quitMarket`);
- an unwind that cannot go in three blocks (its simulation reverts: the pool has no
  liquidity at the price, a slippage guard; or it reverts on chain), or whose retries are
  spent, holds new takeovers in that market until one is included: each
  would add to a position the keeper cannot close (a by-hand trial's keeper grew its vETH
  from 1,271 to 1,314 through 22 failed unwinds, unalerted). The hold is told as
  `liquidations_held` with the position and what to do; collateral liquidations and other
  markets go on.

Collateral liquidations (`Vault.liquidateCollateral`) are the second kind: once the vault
calls a trader with non-settlement collateral (WETH) liquidatable, anyone may pay part of its
USDC debt from their wallet and take WETH at the vault's TWAP less the collateral's discount
(10 %); 3 % of the payment goes to the insurance fund. Capital is the keeper's USDC balance;
the prize is the discount (the WETH's TWAP value less the USDC paid), less the executor's
`swap_slippage_bps` on it and gas. The keeper keeps the WETH (as with Aave's own-capital
liquidations, selling it is the operator's choice). One liquidation per trader per block: its
positions first when those are liquidatable.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog
from eth_abi import decode
from eth_abi.exceptions import DecodingError
from eth_utils import to_checksum_address

from keeperd.chain.calls import ContractCall, call_many
from keeperd.chain.multicall import encode_call, event_topic
from keeperd.config import KeeperConfig
from keeperd.protocols.perp_curie import margin as cm
from keeperd.protocols.perp_curie import unwind_bound as ub
from keeperd.protocols.perp_curie.adapter import CLOSED, OPEN
from keeperd.protocols.sdk import approvals
from keeperd.protocols.sdk.contract import (
    Allowed,
    Call,
    DepositRecords,
    DueNow,
    GasQuote,
    LiquidatorBase,
    Need,
    Opportunity,
    OpportunityKey,
    StartRefused,
    TrustNow,
    always_due,
    trust_everything,
)
from keeperd.protocols.sdk.keys import UpkeepKey
from keeperd.protocols.sdk.sending import SendRefused

if TYPE_CHECKING:
    from keeperd.protocols.perp_curie.adapter import CurieBook, PerpCurieAdapter

log = structlog.get_logger(__name__)

# Measured on anvil: liquidate 1.5-1.9M gas, closePosition ~0.5M.
LIQUIDATE_GAS = 2_000_000
# A liquidation closes the position through the market's pool: its gas grows with the ticks
# the trade crosses, and a liquidation (or an unwind) mined before it in the same block moves
# the pool. Seen in the demo: one simulated at 2.55 M gas at the head ran out of gas on chain
# behind the keeper's own earlier trades in that market (2.54 M used, the next attempt 2.37 M
# fine). The learnt worst case gets this much more room on top of the usual margin.
POOL_PATH_HEADROOM = 1.4
# Measured 0.24 M for an account with no position left, 0.35 M with one: what is learnt from
# receipts only ever raises these (a lighter account first must not starve a heavier one).
LIQUIDATE_COLLATERAL_GAS = 500_000
COLLATERAL_SHARE_BPS = 9_900  # of the most a collateral liquidation may repay
CLOSE_GAS = 900_000
DEADLINE = 2**255
# ClearingHouse's "position size is zero": an unwind simulated once the last one went.
NOTHING_TO_UNWIND = "CH_PSZ"
# The pool's price already beyond the unwind's price limit (ours, `ub.unwind_price_limit`):
# Uniswap's swap refuses to start ("SPL").
PRICE_LIMIT_PASSED = re.compile(r"\bSPL\b")
# Blocks an unwind fails in (simulated or on chain), none included between, before its
# market's takeovers are held.
UNWIND_FAILED_BLOCKS = 3
# The margin in the Vault is refilled up to `keeper_margin_usd` once under this share of it
# (unwinds' losses, funding): not for every dollar an unwind loses (a deposit each).
MARGIN_REFILL_BELOW = 0.9
REFILL_WINDOW_S = 86_400  # refills within it add up to one margin at most
UNWIND = "unwind"  # the position part of the keeper's own follow-up keys (housekeeping)
VAULT = "vault"  # the capital "asset": free collateral in the Vault
# What the keeper sends: ClearingHouse takeovers and unwinds, Vault deposits and collateral
# liquidations (the signing policy allows these and nothing else).
LIQUIDATE = "liquidate(address,address,int256)"
CLOSE_POSITION = "closePosition((address,uint160,uint256,uint256,bytes32))"
QUIT_MARKET = "quitMarket(address,address)"
DEPOSIT = "deposit(address,uint256)"
LIQUIDATE_COLLATERAL = "liquidateCollateral(address,address,uint256,bool)"
# What a trade of the keeper's realises (the ClearingHouse's events, the trader indexed first):
# a position reduced or closed (realizedPnl, net of the exchange fee), one settled in a closed
# market, and the funding it paid (positive: paid) — (topic, data types, realised at, sign).
REALISED_EVENTS = {
    event_topic("PositionChanged(address,address,int256,int256,uint256,int256,int256,uint256)"):
        (["int256", "int256", "uint256", "int256", "int256", "uint256"], 4, 1),
    event_topic("PositionClosed(address,address,int256,int256,int256,int256,uint256)"):
        (["int256", "int256", "int256", "int256", "uint256"], 3, 1),
    event_topic("FundingPaymentSettled(address,address,int256)"): (["int256"], 0, -1),
}


def settled_margin(deposit: Any, pnl: Any) -> int | None:
    """The keeper's margin in the Vault in USDC units (6 decimals): its deposit plus its owed
    realised PnL and pending maker fees (18 decimals), as the Vault counts its settlement
    balance (funding pending left out: it moves every block); None if either is unread."""
    if not isinstance(deposit, int) or not isinstance(pnl, tuple | list) or len(pnl) < 3 or \
            not all(isinstance(v, int) for v in pnl):
        return None
    owed, _unrealised, fee = pnl[0], pnl[1], pnl[2]
    return deposit + (owed + fee) // 10**12


def _collateral_planned(amount: int, repaid: int, in_usdc: bool) -> dict[str, int]:
    """What Vault.CollateralLiquidated will show: the USDC paid in (`settlement`: the event's
    repaid part plus the insurance fund's fee); and, asked for in tokens, the collateral
    taken (asked for in USDC, the vault converts at its TWAP at inclusion: not planned)."""
    return {"settlement": repaid} if in_usdc else {"settlement": repaid, "collateral": amount}


class CurieLiquidator(LiquidatorBase):
    flash_premium_bps = 0
    supports_flash = False

    def __init__(self, adapter: PerpCurieAdapter, config: KeeperConfig, keeper: str | None,
                 tx: Any) -> None:
        self.adapter = adapter
        self.config = config
        self.keeper = keeper
        self.tx = tx
        self._gas_used: dict[str, int] = {}
        # The margin deposit did not go at start (the key held: its address delegated; a fee
        # over budget): tried again with the allowances, until it does.
        self._margin_due = False
        self._margin_short_told = False  # (a wallet too short to refill: said once)
        self._refills: list[tuple[float, int]] = []  # (when, USDC units) within a day
        self._refills_spent_told = False
        # Where the deposits are recorded (the state database: `keep_deposits_in`), and
        # whether any was recorded before this run's: then a start's top-up is a refill too.
        self._deposit_records: DepositRecords | None = None
        self._deposited_before = False
        # Markets (base token) whose unwind failed: (since which block, why), until one of
        # them is included or the keeper holds nothing there; their takeovers are held.
        self._unwind_failing: dict[str, tuple[int, str]] = {}
        self._unwind_failures: dict[str, set[int]] = {}  # (blocks it failed in, not held yet)
        # Markets the keeper held a position in at its first book (None: not read yet): held
        # until one of their unwinds passes its simulation or is included — the hold above
        # lives in memory, and a restart took one more position over that it could not
        # close, and told the operator "resume" (a by-hand trial). The housekeeping that
        # simulates them runs before the block's plan: a restart that can unwind loses no
        # block.
        self._unverified: set[str] | None = None
        self._held_sizes: dict[str, int] = {}  # (the keeper's position there, last book)
        self._unwinds_waiting: set[str] = set()  # (markets whose unwind waited, last block)
        self._symbols: dict[str, str] = {}  # (base token -> market symbol, last book)
        self._told_held: frozenset[str] = frozenset()
        self._mine_of: tuple[CurieBook, cm.CurieTrader | None] | None = None  # (`_mine`)
        # (the keeper's margin in the Vault and its wallet's USDC, as `balances` last read
        # them: what `capital_fix` tells a shortfall to do)
        self._capital_read = (0, 0)

    def signing_rules(self) -> list[Allowed]:
        ch, vault = self.adapter.config.clearing_house, self.adapter.addresses["Vault"]
        return [Allowed(ch, LIQUIDATE, "curie takeover"),
                Allowed(ch, CLOSE_POSITION, "curie unwind"),
                Allowed(ch, QUIT_MARKET, "curie unwind of a closed market"),
                Allowed(vault, DEPOSIT, "curie keeper margin"),
                Allowed(vault, LIQUIDATE_COLLATERAL, "curie collateral liquidation"),
                Allowed.approval(vault, "approval of the curie vault")]

    def keep_deposits_in(self, records: DepositRecords) -> None:
        self._deposit_records = records

    async def prepare(self, head: int) -> None:
        """Margin for taking positions over: the keeper's USDC deposited into the Vault up to
        `keeper_margin_usd` (the vault approved once); what stays in the wallet pays for
        collateral liquidations. After a first deposit (recorded in the state database), a
        start's top-up is a refill like any other, within the day's budget: a daemon
        restarted after each losing unwind topped the margin up at every start."""
        if self.tx is None or self.keeper is None or self.config.mode != "liquidate":
            return
        if self._deposit_records is not None:
            recorded = await self._deposit_records.deposits(self.adapter.name)
            self._deposited_before = bool(recorded)
            since = time.time() - REFILL_WINDOW_S
            whole = int(self.adapter.config.keeper_margin_usd * 10**6)
            self._refills = [(at, whole if amount is None else amount)  # (unread: the worst)
                             for at, amount, refill in recorded if refill and at > since]
        self._margin_due = True  # (until it is done)
        await self.confirm(head)
        await self._keep_margin(head, 1.0)

    async def keep_allowances(self, head: int, book: Any = None) -> None:
        """Every few blocks: a top-up of the keeper's USDC approved to the Vault in turn; the
        margin deposit too, if it did not go at start, and a refill once unwinds' losses
        have taken the margin under MARGIN_REFILL_BELOW of `keeper_margin_usd` (it was
        deposited at start only: a margin eaten by losses stopped the takeovers, each a
        `capital_shortfall`, until a restart or a deposit by hand)."""
        if self.tx is None or self.keeper is None or self.config.mode != "liquidate":
            return
        await self._keep_margin(head, 1.0 if self._margin_due else MARGIN_REFILL_BELOW)

    async def _keep_margin(self, head: int, below: float) -> None:
        """The vault's allowance topped up, and the margin deposited up to
        `keeper_margin_usd` when it is under `below` of it. The margin is the most any
        endpoint says is there, the wallet the least: one lying answer must not make keeperd
        deposit the wallet's USDC (which Aave's and Morpho's liquidations may repay with)."""
        assert self.tx is not None and self.keeper is not None
        a = self.adapter.addresses
        target = self.adapter.config.keeper_margin_usd
        if self.tx.signing_held() is not None or self.tx.upkeep_hold(head) is not None:
            # (no deposit or approval while the key signs nothing, logged by the tx; nor while
            # another sender uses it: the approvals wait, and a deposit without its approval
            # reverts — tried again with the allowances, every few blocks)
            return
        usdc = a["SettlementToken"]
        # The margin as the Vault settles it: the deposit plus what the keeper's trades
        # realised and not yet settled into it (an unwind's loss is owed, not taken from the
        # deposit: the deposit alone never showed it).
        deposit_call = ContractCall(a["Vault"], "getBalance(address)", ["address"],
                                    [self.keeper], ["int256"])
        pnl_call = ContractCall(a["AccountBalance"], "getPnlAndPendingFee(address)",
                                ["address"], [self.keeper], ["int256", "int256", "uint256"])
        wallet_call = ContractCall(usdc, "balanceOf(address)", ["address"], [self.keeper])
        deposit, pnl, allowance, wallet = await call_many(self.adapter.pool, [
            deposit_call, pnl_call,
            ContractCall(usdc, "allowance(address,address)", ["address", "address"],
                         [self.keeper, a["Vault"]]),
            wallet_call])
        held = settled_margin(deposit, pnl)
        if not isinstance(allowance, int) or not isinstance(wallet, int):
            return  # (unread: asked again with the next allowances)
        for other in await approvals.by_endpoint(self.adapter.pool,
                                                 [deposit_call, pnl_call, wallet_call]):
            said = settled_margin(other[0], other[1])
            if said is not None and held is not None and said > held:
                held = said  # (our own endpoint unread: no deposit on another's word alone)
            if isinstance(other[2], int) and other[2] < wallet:
                wallet = other[2]
        # The vault pulls USDC for deposits and for collateral liquidations: approved the
        # wallet's balance (protocols/sdk/approvals.py), topped up as the balance is.
        if allowance < wallet:
            await approvals.keep_allowances(self.tx, self.adapter.pool,
                                            protocol=self.adapter.name, keeper=self.keeper,
                                            spender=a["Vault"], tokens=[(usdc, "USDC")],
                                            head=head)
        if held is None:
            return  # (the margin unread: asked again with the next allowances)
        wanted = int(target * 10**6)
        # (never more than the margin itself, whatever is read: a negative margin — one
        # lying answer of a huge loss owed — would have asked for the whole wallet)
        missing = min(wanted, wanted - held)
        if held >= wanted * below or missing <= 0:
            self._margin_due = False
            return
        refill = not self._margin_due or self._deposited_before
        if refill:
            # Refills follow losses: at most one margin's worth a day (REFILL_WINDOW_S),
            # then the takeovers wait for the operator (capital_shortfall says so) — an
            # unwind's losses must not drain the wallet a refill at a time.
            now = time.time()
            self._refills = [(t, usd) for t, usd in self._refills if t > now - REFILL_WINDOW_S]
            room = wanted - sum(usd for _, usd in self._refills)
            if room <= 0:
                if not self._refills_spent_told:
                    log.error("curie.keeper_margin_refills_spent", protocol=self.adapter.name,
                              held_usd=held / 10**6, wanted_usd=target,
                              refilled_usd=sum(usd for _, usd in self._refills) / 10**6,
                              meaning="unwinds' losses took a whole margin within a day: no "
                                      "more is deposited until a day has passed since the "
                                      "first refill (a restart does not reset it: the "
                                      "refills are kept in the state database); check the "
                                      "unwinds, and deposit by hand to go on sooner")
                    self._refills_spent_told = True
                return
            missing = min(missing, room)
        self._refills_spent_told = False
        if any(isinstance(k, UpkeepKey) and (k.protocol, k.action) == (self.adapter.name,
                                                                       "deposit")
               for k in self.tx.pending):
            return  # (one in flight: its inclusion is what this waits for)
        # (less what the key's liquidations in flight will take from the wallet: Aave's and
        # Morpho's on the chain repay in this USDC — a deposit planned on the whole wallet
        # left their liquidations of the same block short, and 7 reverted: a by-hand trial)
        taken = self.tx.in_flight_pulls().get(usdc.lower(), 0)
        amount = min(missing, wallet - taken)
        if amount <= 0 and taken:
            return  # (the wallet's USDC is for liquidations in flight: tried again later)
        if amount <= 0:
            if self._margin_due or not self._margin_short_told:
                log.warning("curie.keeper_margin_short", protocol=self.adapter.name,
                            wanted_usd=target, held_usd=held / 10**6,
                            fix="fund the keeper with USDC: it deposits up to "
                                "keeper_margin_usd")
            self._margin_due = False  # (the balance's own trouble: told, not retried)
            self._margin_short_told = True
            return
        self._margin_short_told = False
        key = UpkeepKey(self.adapter.name, "deposit", a["Vault"], str(head))
        if self._deposit_records is not None:  # (before it is signed: a SIGKILL after it)
            await self._deposit_records.record_deposit(self.adapter.name, str(key), amount,
                                                       refill=refill)
        try:
            await self.tx.send(key, a["Vault"],
                               encode_call(DEPOSIT, ["address", "uint256"],
                                           [usdc, amount]), 400_000, budget_wei=10**18,
                               block=head,
                               pulls={usdc: amount})  # (the others' capital stages see it)
        except SendRefused:
            if self._deposit_records is not None:  # (never reached the chain)
                await self._deposit_records.forget_deposit(str(key))
            raise
        self._deposited_before = True
        # (one trimmed by liquidations in flight tops up with the next balances)
        self._margin_due = amount < missing and taken > 0
        if refill:
            self._refills.append((time.time(), amount))
        (log.warning if refill else log.info)(
            "curie.keeper_margin_refilled" if refill else "curie.keeper_margin_deposited",
            protocol=self.adapter.name, usd=amount / 10**6, held_usd=held / 10**6,
            wanted_usd=target)

    async def confirm(self, head: int) -> None:
        """The Vault the keeper's USDC is approved to (liquidate mode)."""
        if self.config.mode == "liquidate":
            await self._confirm_vault()

    async def _confirm_vault(self) -> None:
        """The Vault is approved the keeper's USDC and takes its deposits: pinned (`vault`)
        and equal to what the ClearingHouse names, or agreed by the endpoints."""
        from keeperd.protocols.sdk.confirm import confirm_address

        vault, pinned = self.adapter.addresses["Vault"], self.adapter.config.vault
        where = f"protocols[{self.adapter.name}].vault"
        if pinned is not None:
            if to_checksum_address(pinned) != to_checksum_address(vault):
                raise StartRefused(f"{where}: pinned {pinned}, but the ClearingHouse names "
                                   f"{vault}; check which is right and fix the pin")
            return
        await confirm_address(self.adapter.pool, self.adapter.config.clearing_house,
                              "getVault()", expected=vault, what="Curie's Vault",
                              where=where, pin="vault")

    def capital_fix(self, short: Collection[str]) -> str | None:
        """Takeovers are short of free collateral in the Vault (`keeper_margin_usd`, deposited
        from the wallet at start and refilled), collateral liquidations of the wallet's USDC:
        "fund the keeper with the debt asset" named neither."""
        fixes = []
        target = int(self.adapter.config.keeper_margin_usd * 10**6)
        held, wallet = self._capital_read
        # (the margin is deposited at start, refilled once under MARGIN_REFILL_BELOW of it)
        refills = self._margin_due or held < target * MARGIN_REFILL_BELOW
        if VAULT in short and self.config.mode != "liquidate":
            # (a trial's dry-run was told to raise a margin it never deposits)
            fixes.append(f"{self.config.mode} deposits nothing: takeovers need free "
                         "collateral in Curie's Vault, which liquidate mode deposits at start "
                         "(keeper_margin_usd from the keeper's USDC); to rehearse them, "
                         "deposit into the Vault from the keeper first")
        elif VAULT in short and held < target and wallet < target - held:
            when = ("with the next balances" if refills else
                    f"once the margin is under {MARGIN_REFILL_BELOW:.0%} of it (or deposit by "
                    "hand)")
            fixes.append(f"fund the keeper's wallet with USDC: keeperd deposits up to "
                         f"keeper_margin_usd ({target / 10**6:,.0f}) into Curie's Vault "
                         f"{when}; {held / 10**6:,.0f} there now, {wallet / 10**6:,.0f} in "
                         "the wallet")
        elif VAULT in short and refills:
            fixes.append("the margin deposit has not gone yet (curie.keeper_margin_* in the "
                         "log says why); it is tried again with the balances")
        elif VAULT in short:
            fixes.append("raise keeper_margin_usd on this protocol's entry (takeovers need "
                         "free collateral in Curie's Vault, deposited from the keeper's USDC "
                         "at the next start) and fund the keeper with that much USDC")
        if set(short) - {VAULT}:
            fixes.append("fund the keeper's wallet with USDC beyond keeper_margin_usd "
                         "(collateral liquidations pay from it)")
        return "; ".join(fixes) or None

    async def balances(self, assets: list[str]) -> dict[str, int]:
        """For the capital stage: free collateral in the Vault (takeovers) and the wallet's
        USDC (collateral liquidations), in settlement-token units."""
        if self.keeper is None:
            return {}
        usdc = self.adapter.addresses["SettlementToken"]
        vault = self.adapter.addresses["Vault"]
        free, wallet, deposit, pnl = await call_many(self.adapter.pool, [
            ContractCall(vault, "getFreeCollateral(address)", ["address"], [self.keeper]),
            ContractCall(usdc, "balanceOf(address)", ["address"], [self.keeper]),
            ContractCall(vault, "getBalance(address)", ["address"], [self.keeper],
                         ["int256"]),
            ContractCall(self.adapter.addresses["AccountBalance"],
                         "getPnlAndPendingFee(address)", ["address"], [self.keeper],
                         ["int256", "int256", "uint256"])])
        wallet = int(wallet) if isinstance(wallet, int) else 0
        settled = settled_margin(deposit, pnl)  # (unread: the deposit, as told before)
        self._capital_read = (settled if settled is not None else
                              deposit if isinstance(deposit, int) else 0, wallet)
        return {VAULT: int(free) if isinstance(free, int) else 0, usdc: wallet}

    def spender(self, asset: str) -> str | None:
        """The Vault pulls the wallet's USDC for collateral liquidations."""
        a = self.adapter.addresses
        return a["Vault"] if asset.lower() == a["SettlementToken"].lower() else None

    def housekeeping_settled(self, key: OpportunityKey, block: int, failed: str | None, *,
                             lasting: bool = False, simulated: bool = False) -> None:
        """An unwind's fate. A failure in one block is routine in a crash (the price moved
        its 1000 ticks already: the next block's goes); in UNWIND_FAILED_BLOCKS blocks without
        an inclusion between, or once no retry is left, its market's takeovers are held
        (held at the first, every crash raised and resolved the alert, a review)."""
        if key.position[0] != UNWIND:
            return
        base = key.position[1]
        if failed is not None and NOTHING_TO_UNWIND in failed:
            return  # (simulated after the last unwind went: nothing is held there)
        if failed is None:  # (included, or its simulation passed: it goes)
            self._unwind_failing.pop(base, None)
            self._unwind_failures.pop(base, None)
            if self._unverified is not None:
                self._unverified.discard(base)
            return
        if PRICE_LIMIT_PASSED.search(failed):
            bps = self.adapter.config.unwind_max_slippage_bps
            # ("(None bps)" when unset: then the bound is Curie's own, a by-hand trial)
            failed = ("SPL: the pool's price is beyond " + (
                f"unwind_max_slippage_bps ({bps} bps) from the index and mark" if bps is not None
                else "the price limit of the unwind (Curie's own)"))
        blocks = self._unwind_failures.setdefault(base, set())
        blocks.add(block)
        if base not in self._unwind_failing and (lasting
                                                 or len(blocks) >= UNWIND_FAILED_BLOCKS):
            self._unwind_failing[base] = (min(blocks), failed)

    def hold(self) -> str | None:
        unverified = sorted((self._unverified or set()) - set(self._unwind_failing))
        if not self._unwind_failing and not unverified:
            return None
        held = []
        for base, (since, why) in sorted(self._unwind_failing.items()):
            symbol = self._symbols.get(base, base)
            size = self._held_sizes.get(base, 0) / cm.WAD
            held.append(f"the keeper's {size:,.6g} {symbol} cannot be unwound since block "
                        f"{since} ({why[:160]}): takeovers in {symbol} are held")
        for base in unverified:
            symbol = self._symbols.get(base, base)
            size = self._held_sizes.get(base, 0) / cm.WAD
            held.append(f"the keeper holds {size:,.6g} {symbol} from before this start, not "
                        f"yet shown to unwind: takeovers in {symbol} wait for its unwind")
        return ("; ".join(held) + ". Close it by hand (ClearingHouse.closePosition from the "
                "keeper) if the pool will not take it; each later takeover would add to it")

    def _mine(self, book: CurieBook) -> cm.CurieTrader | None:
        """The keeper's own account in the book, or None: looked up once a book (the plan,
        the follow-ups and the holdings each asked, a scan of every trader each)."""
        if self._mine_of is not None and self._mine_of[0] is book:
            return self._mine_of[1]
        keeper = self.keeper.lower() if self.keeper is not None else None
        mine = None if keeper is None else next(
            (t for t in book.traders if t.account.lower() == keeper), None)
        self._mine_of = (book, mine)
        return mine

    def keeper_holdings(self, book: Any) -> Mapping[str, str] | None:
        """The keeper's own positions in the book (its takeovers not yet unwound), by base
        token: "1.25 vETH (short)". None while the keeper is not among the book's traders
        (never traded, or an index that has not reached its first trade yet: nothing known,
        and what was journaled stays — a review)."""
        if self.keeper is None:
            return None
        mine = self._mine(book)
        if mine is None:
            return None
        return {p.base: f"{abs(p.size) / cm.WAD:,.6g} "
                        f"{book.markets[p.base].symbol if p.base in book.markets else p.base} "
                        f"({'long' if p.size > 0 else 'short'})"
                for p in mine.positions if p.size}

    def _unwinds_failing(self, book: CurieBook) -> frozenset[str]:
        """The markets whose takeovers wait (`_unwind_failing`), as of this book: one where
        the keeper holds nothing any more (closed by hand, settled) is free again."""
        mine = self._mine(book)
        self._held_sizes = {p.base: p.size for p in mine.positions} if mine else {}
        self._symbols = {b: m.symbol for b, m in book.markets.items()}
        if self._unverified is None:  # (only what liquidate mode unwinds; a dry run never)
            self._unverified = ({b for b, size in self._held_sizes.items() if size}
                                if self.config.mode == "liquidate" else set())
        self._unverified &= {b for b, size in self._held_sizes.items() if size}
        for base in [b for b in self._unwind_failing if not self._held_sizes.get(b)]:
            del self._unwind_failing[base]
        for base in [b for b in self._unwind_failures if not self._held_sizes.get(b)]:
            del self._unwind_failures[base]
        failing = frozenset(self._unwind_failing) | frozenset(self._unverified)
        if failing != self._told_held:
            # (an error when an unwind failed; a warning when it only waits for a start's
            # first unwind, routine after a restart — released at the next block as a rule)
            (log.error if self._unwind_failing else log.warning if failing else log.info)(
                "curie.takeovers_held" if failing else "curie.takeovers_released",
                protocol=self.adapter.name, markets=sorted(failing), reason=self.hold())
            self._told_held = failing
        return failing

    def plan(self, result: Any, accounts: set[str]) -> list[Opportunity]:
        book: CurieBook = result.book
        out = []
        unwinding = self._unwinds_failing(book)
        for t in book.traders:
            if t.account not in accounts:
                continue
            if self.keeper is not None and t.account.lower() == self.keeper.lower():
                continue  # our own takeovers: unwound, never "liquidated" by us
            if not (cm.is_liquidatable(t) and t.positions):
                out += self._plan_collateral(t)
                continue
            p = max((p for p in t.positions if book.markets[p.base].is_open
                     and p.base not in unwinding),
                    key=lambda p: p.notional, default=None)
            if p is None:  # every position in a paused or closed market (or one whose
                # unwinds fail): held
                self.adapter.metrics.liquidation_funnel.labels(
                    self.adapter.chain, self.adapter.name, "held").inc()
                out += self._plan_collateral(t)  # (the vault's, bound to no market)
                continue
            size = cm.liquidatable_size(t, p)
            if size == 0:
                continue
            notional = abs(size) * p.mark // cm.WAD
            penalty, fee = cm.liquidation_fee(notional, book.penalty_ratio, t.account_value)
            unwind_fee = notional * self.adapter.fee_ratios.get(p.base, 1_000) // cm.RATIO
            margin_needed = (notional - fee) * book.im_ratio // cm.RATIO
            profit = (fee - unwind_fee) / cm.WAD
            out.append(Opportunity(
                OpportunityKey(self.adapter.name, t.account, (p.base,), str(p.size)),
                # (every asset the account's health rests on, not this market's alone: the
                # breaker holds the liquidation on any of them — a trial's WETH pause let 11
                # takeovers of vBTC go whose traders were under water by WETH's fall)
                p.market, "USDC", abs(size), t.assets,
                Need(VAULT, "USDC (free collateral)", 6, margin_needed // 10**12 + 1, profit),
                profit, notional / cm.WAD, 0.0,
                int(max(self._gas_used.get(p.base, 0), LIQUIDATE_GAS)
                    * self.config.gas_limit_margin * POOL_PATH_HEADROOM),
                (t.account, p.base, size),
                f"market={p.market} size={size} notional={notional} fee={fee} "
                f"bad_debt={t.account_value < 0}",
                planned={"positionSize": abs(size), "positionNotional": notional,
                         "liquidationPenalty": penalty}))
        return sorted(out, key=lambda o: o.gross_profit_usd, reverse=True)

    def _plan_collateral(self, t: cm.CurieTrader) -> list[Opportunity]:
        """The trader's largest collateral liquidation the vault allows now, if any."""
        if not t.collateral_liquidatable:
            return []
        c = max((c for c in t.collateral if c.max_repaid > 0),
                key=lambda c: c.max_repaid, default=None)
        if c is None or c.spot_price <= 0:
            # (its latest price unread: valued at the TWAP alone, a crash's lag would be
            # bought as a profit — the loss this valuation is for; a review)
            return []
        usdc = self.adapter.addresses["SettlementToken"]
        value = cm.collateral_liquidation_value(c) / cm.WAD
        if c.max_liquidatable >= c.amount:
            # All of it may go: asked for in tokens, exactly the balance (the USDC it costs is
            # fixed at inclusion). Leaving dust would keep the account from having its bad
            # debt settled, which the vault does only once no collateral is left.
            repaid, amount, in_usdc = c.max_repaid, c.amount, False
            need = c.max_repaid * (20_000 - COLLATERAL_SHARE_BPS) // 10_000
        else:
            # The most the vault allows moves with funding and the collateral's TWAP from
            # block to block; asking for all of it, read a block earlier, reverts `V_MSAE`.
            repaid = amount = need = c.max_repaid * COLLATERAL_SHARE_BPS // 10_000
            in_usdc = True
            value = value * repaid / c.max_repaid
        paid = repaid / 10**6
        return [Opportunity(
            OpportunityKey(self.adapter.name, t.account, (c.token,), f"collateral-{c.amount}"),
            c.asset, "USDC", repaid, t.assets,
            Need(usdc, "USDC", 6, need, value - paid), value - paid, value, paid,
            int(max(self._gas_used.get(c.token, 0), LIQUIDATE_COLLATERAL_GAS)
                * self.config.gas_limit_margin),
            ("collateral", t.account, c.token, amount, in_usdc),
            f"collateral={c.asset} max_amount={c.max_liquidatable} repaid={repaid} "
            f"of {c.max_repaid}", planned=_collateral_planned(amount, repaid, in_usdc))]

    def adjust(self, opportunities: list[Opportunity], book: Any) -> list[Opportunity]:
        return opportunities

    async def calls(self, chosen: list[tuple[Opportunity, bool]], book: Any,
                    gas: GasQuote) -> list[Call | None]:
        ch = self.adapter.config.clearing_house
        vault = self.adapter.addresses["Vault"]
        # Collateral liquidations in USDC: the vault's maximum read again now (the book's may
        # be blocks old, and the keeper's own transactions of this wave move it).
        partial = [opp for opp, flash in chosen if not flash and opp.plan[0] == "collateral"
                   and opp.plan[4]]
        fresh = dict(zip([o.key for o in partial], await call_many(self.adapter.pool, [
            ContractCall(vault, "getMaxRepaidSettlementAndLiquidatableCollateral(address,"
                         "address)", ["address", "address"], [o.plan[1], o.plan[2]],
                         ["uint256", "uint256"]) for o in partial]), strict=True))
        out: list[Call | None] = []
        for opp, flash in chosen:
            if flash:
                out.append(None)
                continue
            if opp.plan[0] == "collateral":
                _, trader, token, amount, in_usdc = opp.plan
                now = fresh.get(opp.key)
                if in_usdc and isinstance(now, tuple | list):
                    amount = min(amount, int(now[0]) * COLLATERAL_SHARE_BPS // 10_000)
                    opp = replace(opp, planned=_collateral_planned(amount, amount, True))
                out.append(Call(opp, vault, encode_call(
                    LIQUIDATE_COLLATERAL, ["address", "address", "uint256", "bool"],
                    [trader, token, amount, in_usdc])))
                continue
            trader, base, _ = opp.plan
            # positionSize 0: the most the rules allow at inclusion (a block of funding
            # cannot make a fixed size too large).
            out.append(Call(opp, ch, encode_call(LIQUIDATE, ["address", "address", "int256"],
                                                 [trader, base, 0])))
        return out

    async def housekeeping(self, result: Any, trust: TrustNow = trust_everything,
                           due: DueNow = always_due
                           ) -> list[tuple[OpportunityKey, str, bytes, int]]:
        """Unwind what the keeper holds: (journal key, target, calldata, gas) per market."""
        if self.keeper is None:
            return []
        book: CurieBook = result.book
        self._unwinds_failing(book)  # (a market the keeper no longer holds is free again)
        mine = self._mine(book)
        if mine is None:
            return []
        ch = self.adapter.config.clearing_house
        bps = self.adapter.config.unwind_max_slippage_bps
        # (only the unwinds that go this block are bounded: one in flight has its limit signed
        # already — asked again, every voter endpoint was asked at every block of a cascade,
        # ahead of its liquidations, for positions whose unwinds were on their way)
        closing = [p for p in mine.positions if book.markets[p.base].status == OPEN
                   and (bps is None or await due(self._unwind_key(p)))]
        limits = ({} if bps is None or not closing  # (unset: Curie's own limit only, 0)
                  else await self._unwind_limits(book, closing, bps, trust))
        out = []
        for p in mine.positions:
            status = book.markets[p.base].status
            key = self._unwind_key(p)
            if status == OPEN:
                limit = 0 if bps is None else limits.get(p.base)
                if limit is None:
                    continue  # (in hand already, or it waits: `_unwind_limits` said why)
                out.append((key, ch, encode_call(
                    CLOSE_POSITION, ["(address,uint160,uint256,uint256,bytes32)"],
                    [(p.base, limit, 0, DEADLINE, b"\0" * 32)]), CLOSE_GAS))
            elif status == CLOSED:  # settled at the closing price (closePosition: CH_MNO)
                out.append((key, ch, encode_call(QUIT_MARKET, ["address", "address"],
                                                 [self.keeper, p.base]), CLOSE_GAS))
            # (paused: every way out reverts until the market reopens or closes)
        return out

    async def _unwind_limits(self, book: CurieBook, closing: list[cm.CuriePosition],
                             bps: int, trust: TrustNow) -> dict[str, int | None]:
        """Each unwind's price limit (unwind_bound.py), or None where it waits this block:
        its asset's price breaker tripped (or no price trusted at all) — its limit rests on
        the index the watch distrusts, and the takeovers there wait too, so nothing is
        counted against the unwind; the endpoints' prices apart, or one endpoint's alone
        where several are configured, or none read — counted as an unwind that cannot go
        (`housekeeping_settled`: three blocks hold its market's takeovers, alerted)."""
        trusted = await trust()
        waiting = {p.base: f"the price watch holds every price: {trusted.hold}"
                   if trusted.hold is not None else "its asset's price breaker is tripped"
                   for p in closing
                   if trusted.hold is not None or book.markets[p.base].asset in trusted.paused}
        asked = [p for p in closing if p.base not in waiting]
        pool = self.adapter.pool
        said = (await ub.ask_every_endpoint(pool, self.adapter.addresses["AccountBalance"],
                                            [p.base for p in asked], book.block)
                if asked and len(pool.voters) > 1 else {})
        # (further apart than the slippage, the tightest limit lies beyond what the others
        # say the pool may reach: the unwind would fail per their word — it waits, and the
        # log says who said what instead of `SPL`)
        tolerance = bps / 10_000
        limits: dict[str, int | None] = {}
        for p in asked:
            m = book.markets[p.base]
            voices = [ub.Said(ub.BOOK, m.mark, m.index), *said.get(p.base, [])]
            why = self._unwind_doubt(voices, len(pool.voters), tolerance)
            limit = None if why is not None else ub.tightest_limit(p.size, voices, bps)
            if why is None and limit is None:
                why = "the market's index and mark are unread: no price to bound its unwind by"
            if why is not None:
                self.housekeeping_settled(self._unwind_key(p), book.block, why)
                waiting.setdefault(p.base, why)
            limits[p.base] = limit
        self._tell_unwinds_waiting(book, waiting)
        return limits

    def _unwind_key(self, p: cm.CuriePosition) -> OpportunityKey:
        """The follow-up's key for unwinding the keeper's position `p` (a new size, a new
        unwind)."""
        return OpportunityKey(self.adapter.name, str(self.keeper), (UNWIND, p.base),
                              str(p.size))

    @staticmethod
    def _unwind_doubt(voices: list[ub.Said], endpoints: int, tolerance: float) -> str | None:
        """Why these voices cannot bound an unwind, or None: with several endpoints
        configured, fewer than two of them read its prices (the book is the first's own
        word), or their prices lie apart."""
        heard = {v.who for v in voices if v.who != ub.BOOK and v.read}
        if endpoints > 1 and len(heard) < 2:
            return (f"only {len(heard)} of {endpoints} endpoints read the market's mark and "
                    "index: its unwind's limit would rest on one endpoint's word")
        return ub.disagreement([v for v in voices if v.read], tolerance)

    def _tell_unwinds_waiting(self, book: CurieBook, waiting: Mapping[str, str]) -> None:
        """Once when a market's unwind starts to wait (and why), once when it goes again."""
        for base, why in waiting.items():
            if base not in self._unwinds_waiting:
                log.warning("curie.unwind_waits", protocol=self.adapter.name,
                            market=book.markets[base].symbol, block=book.block, reason=why,
                            meaning="the keeper's position there is not unwound this block; "
                                    "asked again at the next")
        for base in self._unwinds_waiting - waiting.keys():
            log.info("curie.unwind_goes_again", protocol=self.adapter.name,
                     market=self._symbols.get(base, base), block=book.block)
        self._unwinds_waiting = set(waiting)

    def realised(self, receipt: Mapping[str, Any]) -> float:
        """What the keeper's own trades in this transaction realised, in USD: an unwind's
        gain or loss against the price it took the position over at (the exchange fee taken),
        a takeover netted against a position it held, the funding either settled — the
        takeover's share of the penalty included, a discount in its position's price. The
        journal and `keeperd status` said a takeover earned half its penalty whatever closing
        it cost (a by-hand trial)."""
        if self.keeper is None:
            return 0.0
        house = self.adapter.config.clearing_house.lower()
        mine = "0x" + self.keeper.lower()[2:].rjust(64, "0")
        total = 0
        for entry in receipt.get("logs") or []:
            topics = entry.get("topics") or []
            event = REALISED_EVENTS.get(str(topics[0]).lower()) if len(topics) >= 2 else None
            if event is None or str(entry.get("address", "")).lower() != house or \
                    str(topics[1]).lower() != mine:
                continue
            types, at, sign = event
            try:
                total += sign * decode(types, bytes.fromhex(str(entry["data"])[2:]))[at]
            except (ValueError, TypeError, DecodingError):  # (a log that does not read:
                continue  # nothing of it booked, the settlement goes on)
        return total / cm.WAD

    def learn(self, key: OpportunityKey, gas_used: int) -> None:
        if key.position[0] != UNWIND:  # (an unwind is not a takeover: its gas says nothing)
            market = key.position[0]
            self._gas_used[market] = max(self._gas_used.get(market, 0), gas_used)

    def native_usd(self, book: CurieBook) -> float | None:
        for m in book.markets.values():
            if m.asset == self.config.native_symbol:
                return m.index / cm.WAD
        return None

    def tokens(self, book: Any) -> list[tuple[str, str, int]]:
        return []
