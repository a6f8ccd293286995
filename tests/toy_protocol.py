"""A protocol keeperd does not ship, added the way an operator would add one: this module and
its `register` line, nothing else (loaded with KEEPERD_PLUGINS=tests.toy_protocol).

"toy_vault": every holder of a token owes a fixed USD debt against it, at a liquidation
threshold; the token is priced by a Chainlink-style feed. Real chain data all the way: holders
are discovered from the token's Transfer logs into keeperd's account index, balances and the
price read in Multicall3 batches at the block. keeperd only watches it (no liquidator).
With `evaluate_hold_s`, each evaluation holds the event loop that long (as a plug-in that
computes in Python on a large book does), and is recorded in `evaluations`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from eth_abi import decode
from eth_utils import to_checksum_address
from pydantic import BaseModel, ConfigDict, Field

from keeperd.chain.multicall import Call, Multicall, encode_call, event_topic
from keeperd.protocols.registry import register
from keeperd.protocols.sdk.contract import LogIndexed, PluginBase, PluginContext
from keeperd.protocols.sdk.indexer import AccountIndexer, LogFilter
from keeperd.protocols.sdk.views import AccountRow, HealthView
from keeperd.risk.cascade import Asset, Portfolio

TRANSFER = event_topic("Transfer(address,address,uint256)")
NEVER = event_topic("ToyVaultLiquidated(address)")  # the toy has no liquidation events


class ToyVaultConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["toy_vault"]
    name: str
    chain: str
    token: str
    price_feed: str = Field(description="Chainlink-style feed, 8 decimals (latestAnswer).")
    symbol: str = "WETH"
    decimals: int = 18
    debt_usd: float = Field(gt=0)
    threshold: float = Field(default=0.8, gt=0, le=1)
    bonus: float = 0.05
    start_block: int = 0
    evaluate_hold_s: float = Field(default=0.0, ge=0)


@dataclass(frozen=True)
class ToyBook:
    block: int
    accounts: tuple[str, ...]
    balances: tuple[int, ...]
    price_usd: float
    timestamp: int = 0


def _holders(entry: dict[str, Any], cache: dict[str, str]) -> Iterable[str]:
    topics = entry.get("topics") or []
    if len(topics) < 3 or topics[0] != TRANSFER:
        return ()
    return (to_checksum_address("0x" + topics[2][-40:]),)


@register
class ToyVault(LogIndexed, PluginBase):
    kind = "toy_vault"
    config_model = ToyVaultConfig
    position_action = "Top up the vault."

    def __init__(self, config: ToyVaultConfig, ctx: PluginContext) -> None:
        chain, pool, store, metrics = ctx.chain, ctx.pool, ctx.store, ctx.metrics
        self.config = config
        self.name = config.name
        self.chain = chain.name
        self.pool = pool
        self.multicall = Multicall(pool, address=chain.multicall3)
        self.indexer = AccountIndexer(
            config.name, chain.name, pool, store, LogFilter((config.token,), ((TRANSFER,),)),
            _holders, start_block=config.start_block, confirmations=chain.confirmations,
            metrics=metrics)
        # (block, perf_counter at the start, at the end) of each evaluation
        self.evaluations: list[tuple[int, float, float]] = []

    async def start(self) -> None:
        await self.indexer.start()


    async def read(self, block: int, previous: ToyBook | None, touched: set[str],
                   dropped: set[str]) -> ToyBook:
        accounts = tuple(sorted(self.accounts))
        results = await self.multicall.aggregate3(
            [Call(self.config.price_feed, encode_call("latestAnswer()", [], []))]
            + [Call(self.config.token, encode_call("balanceOf(address)", ["address"], [a]))
               for a in accounts], block)
        price = decode(["int256"], results[0].data)[0] / 1e8
        balances = tuple(decode(["uint256"], r.data)[0] for r in results[1:])
        return ToyBook(block, accounts, balances, price)

    def _values(self, book: ToyBook, prices: Mapping[str, float] | None
                ) -> tuple[np.ndarray, np.ndarray]:
        price = (prices or {}).get(self.config.symbol, book.price_usd)
        collateral = np.array(book.balances, dtype=np.float64) / 10**self.config.decimals * price
        debt = np.where(collateral > 0, self.config.debt_usd, 0.0)
        return collateral, debt

    def evaluate(self, book: ToyBook, prices: Mapping[str, float] | None = None) -> HealthView:
        started = time.perf_counter()
        time.sleep(self.config.evaluate_hold_s)  # (blocking: the loop is held, as by CPU work)
        self.evaluations.append((book.block, started, time.perf_counter()))
        collateral, debt = self._values(book, prices)
        with np.errstate(divide="ignore", invalid="ignore"):
            health = np.where(debt > 0, collateral * self.config.threshold / debt, np.inf)
            drop = np.where(np.isfinite(health) & (health > 0),
                            np.maximum(0.0, 1 - 1 / health), np.nan)
        n = len(book.accounts)
        return HealthView(book.accounts, health, collateral, debt,
                          np.full(n, self.config.threshold), [self.config.symbol] * n, drop,
                          assets=[frozenset({self.config.symbol})] * n)

    def liquidation_hold(self, book: ToyBook) -> str | None:
        return None

    def rows(self, book: ToyBook, view: HealthView) -> list[AccountRow]:
        return [AccountRow(self.name, a, None if not np.isfinite(view.health[i])
                           else float(view.health[i]), float(view.collateral_usd[i]),
                           float(view.debt_usd[i]), self.config.threshold, self.config.symbol,
                           None if np.isnan(view.drop_to_liquidation[i])
                           else float(view.drop_to_liquidation[i]))
                for i, a in enumerate(book.accounts)]

    def describe(self, book: ToyBook) -> tuple[Portfolio, list[Asset]]:
        collateral, debt = self._values(book, None)
        symbol = self.config.symbol
        zeros = np.zeros_like(collateral)
        portfolio = Portfolio.build(
            [symbol, "USD"], [book.price_usd, 1.0], np.column_stack([collateral, zeros]),
            np.column_stack([collateral * self.config.threshold, zeros]),
            np.column_stack([zeros, debt]), [self.config.bonus, 0.0],
            accounts=list(book.accounts))
        return portfolio, [Asset(symbol, self.config.token, self.config.decimals,
                                 book.price_usd, self.config.bonus),
                           Asset("USD", "0x" + "0" * 40, 6, 1.0, 0.0)]

    def liquidation_logs(self, book: ToyBook | None, accounts: Sequence[str]) -> dict[str, Any]:
        return {"address": self.config.token, "topics": [NEVER]}

    def decode_liquidation(self, entry: dict[str, Any], book: ToyBook | None) -> None:
        return None

    # (first_pass, liquidation_verification, price_feeds, liquidator and the optional hooks:
    # PluginBase's defaults — every row at once, known rules, no on-chain price, watched only)
