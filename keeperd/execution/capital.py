"""Capital as a stage: which liquidations the keeper's own balances can pay for (pure).

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


@dataclass(frozen=True)
class Need:
    asset: str
    symbol: str
    decimals: int
    amount: int  # token units the liquidation pulls at most
    profit_usd: float


def allocate(items: Sequence[T], need: Callable[[T], Need], balances: Mapping[str, int]
             ) -> tuple[list[T], list[T], dict[str, Shortfall]]:
    """Greedy in the given order (a smaller liquidation later in the list may still use what
    a larger one could not): (funded, unfunded, shortfall per debt asset), the shortfall
    being what it would take to fund them all."""
    left = dict(balances)
    funded: list[T] = []
    unfunded: list[tuple[T, Need]] = []
    for item in items:
        n = need(item)
        have = left.get(n.asset, 0)
        if n.amount <= have:
            left[n.asset] = have - n.amount
            funded.append(item)
        else:
            unfunded.append((item, n))
    short: dict[str, Shortfall] = {}
    for _, n in unfunded:
        s = short.get(n.asset)
        short[n.asset] = Shortfall(
            n.asset, n.symbol, n.decimals, (s.missing if s else -left.get(n.asset, 0))
            + n.amount, (s.opportunities if s else 0) + 1,
            (s.profit_forgone_usd if s else 0.0) + n.profit_usd)
    return funded, [item for item, _ in unfunded], short
