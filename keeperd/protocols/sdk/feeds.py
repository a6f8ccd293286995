"""What a plug-in tells the chain's price watch: the prices its positions rest on.

Each plug-in declares its feeds from its book (`Plugin.price_feeds`), and the daemon's one
price watch per chain (`oracles/watch.py`) reads and judges them every block, whatever the
protocol. Two kinds:

- **a Chainlink-style USD feed** (`source` answers `latestRoundData`, or an adapter answering
  `latestAnswer` over named aggregators): Aave's oracle sources, Curie's index aggregators,
  the aggregators behind a Morpho market's oracle. Judged for age, nonsense, pinned bounds,
  jumps, and against the reference prices (independent HTTP quotes).
- **a market's own rate** (`rate`: Morpho Blue's `oracle.price()`, the collateral's price in
  loan-token units, read into the book): judged against the ratio of the references of its
  two assets — the chain's judged USD feeds of those symbols, or the HTTP medians.

`key` is what the circuit breaker holds on the chain: an asset symbol (`WETH`) for a USD
feed, the market (`morpho:<market id>`) for a market's rate. A liquidation pauses while any
key its position rests on (`Opportunity.assets`) is tripped on its chain.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PriceFeed:
    key: str  # what the breaker holds: a symbol, or a market (`morpho:<id>`)
    source: str  # the contract read (the aggregator, proxy or market oracle)
    # A market's rate: the collateral (`base`) in loan-token (`quote`) units, as a float,
    # taken from the book; None for a USD feed, which the watch reads itself.
    rate: float | None = None
    base: str = ""  # the rate's collateral symbol
    quote: str = ""  # the rate's loan symbol
    label: str = ""  # what an operator reads in logs and alerts (a market's name)

    @property
    def is_rate(self) -> bool:
        return self.rate is not None

