"""Capital as a stage: which liquidations the keeper's own balances can pay for (`Purse`,
`allocate`: pure), and the one way a shortfall is reported (`publish_shortfall`).

A liquidation repays its debt from the keeper's balance of the debt asset. Simulating one the
keeper cannot pay for only fails with "transfer amount exceeds balance" — logged, forgotten,
and nobody learns that the crash's liquidations were all skipped. So, before simulating, the
block's plans (most profitable first) draw on the balances they need; those that do not fit
are the shortfall: counted and alerted per asset (how much is missing, how many liquidations
and how much profit were forgone), or, with `capital: auto`, sent through the flash-loan path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import structlog

from keeperd.metrics import Metrics
from keeperd.protocols.sdk.contract import Need

log = structlog.get_logger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Shortfall:
    asset: str  # token address
    symbol: str
    decimals: int
    missing: int  # token units the keeper would need on top of its balance
    opportunities: int
    profit_forgone_usd: float

    @property
    def missing_tokens(self) -> float:
        return self.missing / 10**self.decimals


class Purse:
    """The keeper's balances for one block, drawn on in order (most profitable first): a
    smaller liquidation later may still use what a larger one could not."""

    def __init__(self, balances: Mapping[str, int] | None = None) -> None:
        self.left: dict[str, int] = dict(balances or {})
        self._unfunded: list[Need] = []

    def knows(self, asset: str) -> bool:
        return asset in self.left

    def hold(self, asset: str, balance: int) -> None:
        self.left[asset] = balance

    def pay(self, need: Need) -> bool:
        have = self.left.get(need.asset, 0)
        if need.amount <= have:
            self.left[need.asset] = have - need.amount
            return True
        self._unfunded.append(need)
        return False

    def shortfall(self) -> dict[str, Shortfall]:
        """Per asset, what it would take to fund every unfunded need too."""
        short: dict[str, Shortfall] = {}
        for n in self._unfunded:
            s = short.get(n.asset)
            short[n.asset] = Shortfall(
                n.asset, n.symbol, n.decimals,
                (s.missing if s else -self.left.get(n.asset, 0)) + n.amount,
                (s.opportunities if s else 0) + 1,
                (s.profit_forgone_usd if s else 0.0) + n.profit_usd)
        return short


def allocate(items: Sequence[T], need: Callable[[T], Need], balances: Mapping[str, int]
             ) -> tuple[list[T], list[T], dict[str, Shortfall]]:
    """(funded, unfunded, shortfall per debt asset) of `items`, in their order."""
    purse = Purse(balances)
    funded: list[T] = []
    unfunded: list[T] = []
    for item in items:
        (funded if purse.pay(need(item)) else unfunded).append(item)
    return funded, unfunded, purse.shortfall()


def publish_shortfall(metrics: Metrics, chain: str, protocol: str,
                      previous: Mapping[str, Shortfall], short: Mapping[str, Shortfall], *,
                      counted: bool, fix: str, newly: Sequence[Need] = ()) -> None:
    """The one way a shortfall is reported: the gauge per asset (back to 0 when it is over)
    and, when the liquidations were forgone (`counted`), a log and — for `newly`, the
    forgone liquidations not forgone at the last pass — the funnel and the profit. (Each
    pass counted its whole shortfall: a crash's unfunded liquidations, evaluated twice a
    block and again each block, were counted twice as forgone in one block, and again.)"""
    for asset in {*previous, *short}:
        s = short.get(asset) or previous[asset]
        metrics.capital_shortfall.labels(chain, protocol, s.symbol).set(
            s.missing_tokens if asset in short else 0)
    if not counted:
        return
    for need in newly:
        metrics.liquidation_funnel.labels(chain, protocol, "no_capital").inc()
        metrics.capital_forgone.labels(chain, protocol).inc(need.profit_usd)
    if not newly and set(short) == set(previous):
        return  # (the same shortfall as at the last pass: logged then)
    for s in short.values():
        log.warning("liquidation.no_capital", protocol=protocol, asset=s.symbol,
                    missing=round(s.missing_tokens, 6), opportunities=s.opportunities,
                    profit_forgone_usd=round(s.profit_forgone_usd, 2), fix=fix)
