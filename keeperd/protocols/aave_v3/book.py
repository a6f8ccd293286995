"""Aave V3 state as plain values: the market (reserves, indexes, prices) and the positions of
many accounts as columns (account x reserve matrices). No I/O here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from keeperd.protocols.aave_v3.identity import Implementation
from keeperd.protocols.aave_v3.revisions import AaveRules, rules_for

ObjArray = NDArray[np.object_]


@dataclass(frozen=True)
class Reserve:
    asset: str
    symbol: str
    id: int  # position in the pool's reserve list: the bit pair in a user's configuration
    decimals: int
    ltv: int  # basis points
    liquidation_threshold: int
    liquidation_bonus: int  # 10500 = 5 % bonus
    emode_category: int
    a_token: str
    stable_debt_token: str
    variable_debt_token: str
    active: bool
    frozen: bool
    paused: bool
    borrowing_enabled: bool
    liquidation_protocol_fee: int = 0  # basis points of the bonus that go to the treasury
    grace_until: int = 0  # v3.1+: liquidations revert until this timestamp
    virtual_balance: int | None = None  # v3.1+: underlying the reserve can pay out

    @classmethod
    def from_configuration(cls, asset: str, symbol: str, reserve_id: int, config: int,
                           a_token: str, stable: str, variable: str) -> Reserve:
        """Decode Aave's ReserveConfigurationMap bitmap."""
        return cls(
            asset=asset, symbol=symbol, id=reserve_id,
            ltv=config & 0xFFFF,
            liquidation_threshold=(config >> 16) & 0xFFFF,
            liquidation_bonus=(config >> 32) & 0xFFFF,
            decimals=(config >> 48) & 0xFF,
            active=bool((config >> 56) & 1),
            frozen=bool((config >> 57) & 1),
            borrowing_enabled=bool((config >> 58) & 1),
            paused=bool((config >> 60) & 1),
            # Bits 168-175: v3.0's eMode category; deprecated and no longer updated since
            # v3.2 (membership is the category's bitmaps there).
            emode_category=(config >> 168) & 0xFF,
            liquidation_protocol_fee=(config >> 152) & 0xFFFF,
            a_token=a_token, stable_debt_token=stable, variable_debt_token=variable,
        )


@dataclass(frozen=True)
class EModeCategory:
    id: int
    ltv: int
    liquidation_threshold: int
    liquidation_bonus: int
    price_source: str | None
    label: str
    collateral_bitmap: int | None = None  # v3.2+: reserve ids whose collateral the mode covers
    ltvzero_bitmap: int = 0  # v3.6+: reserve ids with LTV 0 inside the mode


@dataclass(frozen=True)
class MarketState:
    """Reserve-level state at one block."""

    block: int
    reserves: tuple[Reserve, ...]
    income_index: tuple[int, ...]  # ray, getReserveNormalizedIncome at `block`
    debt_index: tuple[int, ...]  # ray, getReserveNormalizedVariableDebt at `block`
    prices: tuple[int, ...]  # oracle base units (USD x base_unit on Aave V3 Ethereum)
    base_unit: int
    emode: Mapping[int, EModeCategory] = field(default_factory=dict)
    emode_prices: Mapping[int, int] = field(default_factory=dict)  # category → price (0: none)
    rules: AaveRules = field(default_factory=lambda: rules_for(1))
    timestamp: int = 0  # of `block`; grace periods are compared with it
    # follower symbol → leader symbol: the follower's price source is built on the leader's
    # (an LST's adapter over ETH / USD), so a what-if move of the leader moves it too.
    price_links: Mapping[str, str] = field(default_factory=dict)
    # The pool's logic contract at `block` and whether keeperd recognises its code (identity.py)
    implementation: Implementation | None = None
    # Each reserve's deficit (v3.3+, getReserveDeficit: debt written off when a liquidation
    # left a position with no collateral, until covered), in its token's units (None: its
    # read failed); () before v3.3.
    deficits: tuple[int | None, ...] = ()

    def emode_covers(self, category: int, column: int) -> bool:
        """Whether eMode `category` applies its parameters to reserve `column`'s collateral:
        by the category's collateral bitmap since v3.2, by the reserve's category before."""
        if not category or category not in self.emode:
            return False
        reserve = self.reserves[column]
        bitmap = self.emode[category].collateral_bitmap
        if self.rules.emode_bitmaps:
            return bitmap is not None and bool((bitmap >> reserve.id) & 1)
        return reserve.emode_category == category

    def liquidatable_now(self, column: int) -> bool:
        """Reserve state lets a liquidation touch it: active, not paused, grace period over.
        (A frozen reserve is still liquidated: freezing stops supply and borrow only.)"""
        r = self.reserves[column]
        return (r.active and not r.paused
                and (r.grace_until == 0 or r.grace_until < self.timestamp))

    @cached_property
    def symbols(self) -> tuple[str, ...]:
        return tuple(r.symbol for r in self.reserves)

    def column(self, symbol_or_asset: str) -> int:
        for i, r in enumerate(self.reserves):
            if symbol_or_asset in (r.symbol, r.asset):
                return i
        raise KeyError(f"no reserve {symbol_or_asset!r} (reserves: {list(self.symbols)})")

    def prices_usd(self) -> NDArray[np.float64]:
        return np.array(self.prices, dtype=np.float64) / self.base_unit

    def what_if(self, prices: Mapping[str, float]) -> dict[str, float]:
        """A price move as the oracle would publish it: the assets named (symbol → USD), and
        with them the assets whose price source is built on theirs (wstETH on ETH / USD)."""
        moved = dict(prices)
        usd = self.prices_usd()
        for follower, leader in self.price_links.items():
            if follower in prices or leader not in prices:
                continue
            old = usd[self.column(leader)]
            if old > 0:
                moved[follower] = usd[self.column(follower)] * prices[leader] / old
        return moved

    def with_prices(self, prices: Mapping[str, float]) -> MarketState:
        """The same market with some assets repriced (symbol → USD, followers moved along);
        for what-if analysis."""
        new = list(self.prices)
        for symbol, usd in self.what_if(prices).items():
            new[self.column(symbol)] = round(usd * self.base_unit)
        return replace(self, prices=tuple(new))


@dataclass(frozen=True)
class Positions:
    """Balances of N accounts in R reserves. Integers stay exact (Python ints in object arrays);
    they are the inputs Aave's own GenericLogic uses."""

    accounts: tuple[str, ...]
    emode: NDArray[np.int64]  # (N,) the account's eMode category, 0 for none
    collateral_flag: NDArray[np.bool_]  # (N, R) the reserve counts as collateral
    borrowing_flag: NDArray[np.bool_]  # (N, R)
    a_scaled: ObjArray  # (N, R) aToken scaled balances
    variable_scaled: ObjArray  # (N, R) variable-debt scaled balances
    stable_debt: ObjArray  # (N, R) stable-debt balances (already accrued at the block)
    chain_account_data: ObjArray | None = None  # (N, 6) getUserAccountData where read
    chain_checked: NDArray[np.bool_] | None = None  # (N,) rows whose chain data was read

    def __len__(self) -> int:
        return len(self.accounts)

    @cached_property
    def position_of(self) -> dict[str, int]:
        return {a: i for i, a in enumerate(self.accounts)}

    @cached_property
    def float_balances(self) -> tuple[NDArray[np.float64], NDArray[np.float64],
                                      NDArray[np.float64]]:
        """a_scaled, variable_scaled and stable_debt as float64, the float path's inputs:
        converted from Python integers once per book and carried by `take` and `merge`
        (every block's first pass used to convert the exposed accounts' cells anew)."""
        return (self.a_scaled.astype(np.float64), self.variable_scaled.astype(np.float64),
                self.stable_debt.astype(np.float64))

    @classmethod
    def empty(cls, reserves: int) -> Positions:
        return cls((), np.zeros(0, np.int64), np.zeros((0, reserves), bool),
                   np.zeros((0, reserves), bool), _obj((0, reserves)), _obj((0, reserves)),
                   _obj((0, reserves)), _obj((0, 6)), np.zeros(0, bool))

    def take(self, rows: NDArray[np.intp] | Sequence[int]) -> Positions:
        """The positions at `rows`, in their order. Every row in order (a price that every
        account depends on moved): these, as they are."""
        idx = np.asarray(rows, dtype=np.intp)
        if len(idx) == len(self) and np.array_equal(idx, np.arange(len(self))):
            return self
        accounts = self.accounts  # (indexed by Python ints: half the time of numpy's)
        out = Positions(
            tuple([accounts[i] for i in idx.tolist()]), self.emode[idx],
            self.collateral_flag[idx],
            self.borrowing_flag[idx], self.a_scaled[idx], self.variable_scaled[idx],
            self.stable_debt[idx],
            None if self.chain_account_data is None else self.chain_account_data[idx],
            None if self.chain_checked is None else self.chain_checked[idx])
        floats = self.__dict__.get("float_balances")
        if floats is not None:
            out.__dict__["float_balances"] = tuple(a[idx] for a in floats)
        return out

    def merge(self, update: Positions, drop: set[str] | None = None) -> Positions:
        """These positions with `update`'s accounts replaced or added, and `drop` removed.
        Nothing to replace, add or remove (a block that moved only prices): these, as they
        are (their conversions kept)."""
        drop = drop or set()
        gone = [self.position_of[a] for a in (*update.accounts, *drop)
                if a in self.position_of]
        if not len(update) and not gone:
            return self
        keep = np.setdiff1d(np.arange(len(self), dtype=np.intp),
                            np.asarray(gone, dtype=np.intp), assume_unique=False)
        base = self.take(keep)
        chain = checked = None
        if base.chain_account_data is not None and update.chain_account_data is not None:
            chain = np.concatenate([base.chain_account_data, update.chain_account_data])
        if base.chain_checked is not None and update.chain_checked is not None:
            checked = np.concatenate([base.chain_checked, update.chain_checked])
        out = Positions(
            base.accounts + update.accounts,
            np.concatenate([base.emode, update.emode]),
            np.concatenate([base.collateral_flag, update.collateral_flag]),
            np.concatenate([base.borrowing_flag, update.borrowing_flag]),
            np.concatenate([base.a_scaled, update.a_scaled]),
            np.concatenate([base.variable_scaled, update.variable_scaled]),
            np.concatenate([base.stable_debt, update.stable_debt]),
            chain,
            checked,
        )
        floats = base.__dict__.get("float_balances")
        if floats is not None:
            out.__dict__["float_balances"] = tuple(
                np.concatenate([a, b]) for a, b in zip(floats, update.float_balances,
                                                       strict=True))
        return out

    def dependents(self, column: int) -> NDArray[np.intp]:
        """Rows whose health depends on reserve `column`'s price (the reverse index)."""
        return np.flatnonzero(self.collateral_flag[:, column] | self.borrowing_flag[:, column])


@dataclass(frozen=True)
class AaveBook:
    market: MarketState
    positions: Positions

    @property
    def accounts(self) -> tuple[str, ...]:
        return self.positions.accounts

    @property
    def block(self) -> int:
        return self.market.block

    @property
    def timestamp(self) -> int:
        return self.market.timestamp


def _obj(shape: tuple[int, int]) -> ObjArray:
    out = np.empty(shape, dtype=object)
    out.fill(0)
    return out
