"""`keeperd simulate`: one shock on today's book, the cascade round by round, and a chart.

    keeperd simulate --config PATH --shock WETH=-30% [--shock WBTC=-20%] [--png FILE]

Reads every position of the configured protocols at the head (as `keeperd scan` does), reads
the depth models (Uniswap V3 pools at the same block), applies the shock, prints each round
(the prices after the previous rounds' selling, what is liquidated, cumulative totals) and the
outcome (bad debt, amplification, toxic debt, fund coverage), and draws the liquidation curve
over the configured shock grid next to the cascade's price path.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from keeperd.alerts.preview import WouldFire, cascade_alert, watchlist_alerts
from keeperd.cascade_monitor import read_depth
from keeperd.chain.connect import make_pool
from keeperd.chain.rpc import RpcPool
from keeperd.config import Config
from keeperd.metrics import Metrics
from keeperd.protocols import registry
from keeperd.protocols.sdk.contract import PluginContext
from keeperd.risk.cascade import CascadeResult, Columns, run_cascade, with_followers
from keeperd.risk.depth import DepthModel
from keeperd.storage.account_index import IndexStore

_SHOCK = re.compile(r"^\s*([A-Za-z0-9_.]+)\s*=\s*(-?\d+(?:\.\d+)?)\s*(%?)\s*$")


class ShockError(ValueError):
    pass


class ProtocolChoiceError(ShockError):
    """`--protocol` names no protocol the simulation can shock (the message lists those)."""


def pick_protocol(config: Config, protocol: str | None) -> Any:
    """The protocol named (or the first on-chain one): one whose book is read from a chain.
    A name that is none of those: ProtocolChoiceError, its message the configured names."""
    from keeperd.alerts.catalog import suggest

    chain = config.chain_protocols
    if protocol is None:
        if not chain:
            raise ProtocolChoiceError("the config has no on-chain protocol to shock")
        return chain[0]
    for p in chain:
        if p.name == protocol:
            return p
    names = [p.name for p in chain]
    choose = f"choose from {', '.join(names) or '(none configured)'}"
    if any(p.name == protocol for p in config.protocols):
        raise ProtocolChoiceError(f"{protocol!r} is a perp venue read over its API, not a "
                                  f"book on a chain; {choose}")
    # `curie` for `curie-devnet`: a prefix is a near miss too
    starts = [n for n in names if n.lower().startswith(protocol.lower())]
    hint = f" (did you mean {starts[0]}?)" if len(starts) == 1 else suggest(protocol, names)
    raise ProtocolChoiceError(f"{protocol!r}: no such protocol in the config{hint}; {choose}")


def parse_shock(text: str) -> tuple[str, float]:
    """'WETH=-30%' or 'WETH=-0.3' -> ('WETH', 0.30) (a drop, as a positive fraction)."""
    m = _SHOCK.match(text)
    rise = ("; a rise (what liquidates perp shorts) is the numeraire's drop on a perp book: "
            "USD=-x% (Perp Curie)")
    if not m:
        raise ShockError(f"{text!r}: write ASSET=-30% (or ASSET=-0.3)"
                         + (rise if "=+" in text else ""))
    value = float(m.group(2)) / (100.0 if m.group(3) else 1.0)
    if value >= 0:
        # (WETH=30% was read as a 30 % drop, and printed as one: a user meaning a rise —
        # what liquidates perp shorts — got the opposite without a word)
        raise ShockError(f"{text!r}: a shock is a price drop, written with its minus sign "
                         f"({m.group(1)}=-{m.group(2)}{m.group(3)}){rise}")
    drop = -value
    if not 0 < drop < 1:
        raise ShockError(f"{text!r}: the drop must be between 0 and 100 %")
    return m.group(1), drop


@dataclass
class Simulation:
    protocol: str
    block: int
    shocks: dict[str, float]
    result: CascadeResult  # column 0: the requested shock; then the curve
    assets: tuple[str, ...]
    prices: np.ndarray
    fund_usd: float | None
    positions: int
    notes: tuple[str, ...] = ()
    alerts: tuple[WouldFire, ...] = ()


def columns_for(assets: tuple[str, ...], shocks: dict[str, float], grid: list[float]
                ) -> Columns:
    """Column 0 is the requested shock; the rest scale it along the grid (a curve through it:
    each asset's drop is the grid step times its share of the largest requested drop)."""
    unknown = [a for a in shocks if a not in assets]
    if unknown:
        raise ShockError(f"unknown asset(s) {unknown}; this market has {list(assets)}")
    biggest = max(shocks.values())
    rows, values = [], []
    for s in [biggest, *grid]:
        m = np.ones(len(assets))
        for asset, drop in shocks.items():
            m[assets.index(asset)] = 1.0 - s * drop / biggest
        rows.append(m)
        values.append(s)
    mult = np.array(rows)
    shocked = np.zeros_like(mult, dtype=bool)
    for asset in shocks:
        shocked[:, assets.index(asset)] = True
    name = "+".join(shocks)
    return Columns(tuple([name] * len(values)), np.array(values), mult, shocked)


@contextlib.asynccontextmanager
async def _book_at_head(config: Config, proto: Any, store: IndexStore, *, discover: bool = True
                        ) -> AsyncIterator[tuple[Any, Any, int, RpcPool]]:
    """(plug-in, its book, head, the chain's pool) of one configured protocol, read at the
    head; without `discover` from the accounts `store` already holds."""
    chain = config.chain(proto.chain)
    metrics = Metrics()
    async with make_pool(chain, metrics) as pool:
        head = int(await pool.request("eth_blockNumber"), 16)
        plugin = registry.create(proto, PluginContext(chain, pool, store, metrics))
        await plugin.start()
        if discover:
            await plugin.discover(head)
        yield plugin, await plugin.read(head, None, set(), set()), head, pool


async def protocol_assets(config: Config) -> dict[str, tuple[str, ...]]:
    """Per configured on-chain protocol, the symbols of the assets it prices and the keys of
    its price feeds (`morpho:<market id>`), as the breaker and the executor name them (its
    cascade assets, less synthetic ones such as Curie's USD column). Read at the head with an
    empty account index: the markets alone, seconds whatever the size of the book."""
    out: dict[str, tuple[str, ...]] = {}
    with tempfile.TemporaryDirectory(prefix="keeperd-assets-") as empty:
        store = await IndexStore.open(Path(empty))
        try:
            for proto in config.chain_protocols:
                async with _book_at_head(config, proto, store, discover=False) as (plugin, book,
                                                                                   _, _):
                    described = plugin.describe(book)
                    feeds = await plugin.price_feeds(book)
                assets = described[1] if described is not None else []
                symbols = [a.symbol for a in assets if int(a.address, 16) != 0]
                # (and the markets with their own oracle, which the breaker names alike)
                out[proto.name] = tuple(dict.fromkeys(symbols + [f.key for f in feeds]))
        finally:
            await store.close()
    return out


async def simulate(config: Config, shocks: dict[str, float], protocol: str | None = None
                   ) -> Simulation:
    """The first configured protocol (or the one named) whose plug-in describes its book to
    the cascade engine, at the head, under `shocks`."""
    proto = pick_protocol(config, protocol)
    store = await IndexStore.open(config.state_dir)
    try:
        async with _book_at_head(config, proto, store) as (plugin, book, head, pool):
            described = plugin.describe(book)
            risk = plugin.book_risk(book)
            if described is None:
                raise ShockError(f"protocol {proto.name!r} has no book to shock")
            portfolio, assets = described
            own = await plugin.cascade_depth(book, assets, head)
            depth: list[DepthModel] = (own if own is not None
                                       else await read_depth(config.risk.cascade, assets,
                                                             pool, head))
    finally:
        await store.close()
    columns = with_followers(columns_for(portfolio.assets, shocks,
                                         list(config.risk.cascade.shocks)),
                             portfolio.assets, {a.symbol: a.follows for a in assets
                                                if a.follows})
    cascade = config.risk.cascade
    result = run_cascade(portfolio, columns, depth, max_rounds=cascade.max_rounds,
                         tolerance=cascade.tolerance)
    configured = cascade.fund_for(proto.name)  # (this protocol's: a fund is one protocol's)
    fund = configured.usd if configured is not None else None
    if fund is None and risk is not None:
        fund = risk.insurance_fund_usd  # the protocol's own fund, read at the head
    return Simulation(proto.name, head, shocks, result, portfolio.assets, portfolio.prices,
                      fund, len(portfolio), tuple(risk.lines) if risk is not None else (),
                      _alerts(config, proto, plugin, book, portfolio.assets, portfolio.prices,
                              result))


def _alerts(config: Config, proto: Any, plugin: Any, book: Any, assets: tuple[str, ...],
            prices: np.ndarray, result: CascadeResult) -> tuple[WouldFire, ...]:
    """The alerts the shock would raise: watched positions at the prices the cascade ends
    at (beside their health at today's), and the cascade rule's level for the bad debt."""
    def at(multiplier: np.ndarray) -> Any:
        return plugin.evaluate(book, dict(zip(assets, (prices * multiplier).tolist(),
                                              strict=True)))

    out = watchlist_alerts(config.alerts, proto.name, proto.chain,
                           at(result.final_multiplier[0]), at(np.ones(len(assets))))
    cascade = cascade_alert(config.alerts, float(result.bad_debt[0]))
    return tuple(out + ([cascade] if cascade is not None else []))


def round_table(sim: Simulation) -> str:
    """The requested shock, round by round."""
    r = sim.result
    shocked = [sim.assets.index(a) for a in sim.shocks]
    header = ["round", *[f"{sim.assets[a]} price" for a in shocked], "liquidated",
              "debt repaid USD", "collateral seized USD", "cum. repaid USD"]
    rows = []
    cum = 0.0
    for i, rnd in enumerate(r.per_round):
        accounts = int(rnd["accounts"][0])
        if i > 0 and accounts == 0:
            break
        prices = rnd["multiplier"][0] * sim.prices
        cum += float(rnd["repaid"][0])
        rows.append([str(i), *[f"{prices[a]:,.2f}" for a in shocked], f"{accounts:,}",
                     f"{float(rnd['repaid'][0]):,.0f}", f"{float(rnd['seized'][0]):,.0f}",
                     f"{cum:,.0f}"])
    final = r.final_multiplier[0] * sim.prices
    rows.append(["final", *[f"{final[a]:,.2f}" for a in shocked], f"{int(r.accounts[0]):,}",
                 f"{float(r.repaid[0]):,.0f}", f"{float(r.seized[0]):,.0f}",
                 f"{float(r.repaid[0]):,.0f}"])
    widths = [max(len(h), *(len(x[i]) for x in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(x, widths, strict=True)) for x in rows]
    return "\n".join(lines)


def summary(sim: Simulation) -> str:
    r = sim.result
    shock = ", ".join(f"{a} -{d:.1%}" for a, d in sim.shocks.items())
    lines = [
        f"{sim.protocol} at block {sim.block}: {sim.positions:,} positions with debt, total "
        f"debt ${r.total_debt:,.0f}",
        f"shock: {shock}",
        f"static (the shock alone): {int(r.static_accounts[0]):,} liquidated, "
        f"${float(r.static_repaid[0]):,.0f} repaid, bad debt ${float(r.static_bad_debt[0]):,.0f}",
        f"cascade: {int(r.rounds[0])} round(s), {int(r.accounts[0]):,} liquidated, "
        f"${float(r.repaid[0]):,.0f} repaid, ${float(r.seized[0]):,.0f} collateral sold, "
        f"bonus ${float(r.bonus[0]):,.0f}",
        f"final drop {float(r.final_drop[0]):.2%} (amplification "
        f"{float(r.amplification[0]):.3f}x), bad debt ${float(r.bad_debt[0]):,.0f}, toxic debt "
        f"${float(r.toxic_debt[0]):,.0f} (${float(r.toxic_debt_with_slippage[0]):,.0f} with "
        f"slippage)",
    ]
    if sim.fund_usd is not None:
        bad = float(r.bad_debt[0])
        cover = ("no bad debt" if bad <= 0 else "nothing covers it"
                 if sim.fund_usd == 0 else f"covers {sim.fund_usd / bad:.0%} of it")
        lines.append(f"insurance fund ${sim.fund_usd:,.0f}: {cover}")
    lines += sim.notes
    return "\n".join(lines)


def chart(sim: Simulation, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = sim.result
    curve = slice(1, None)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    shocks = r.columns.shock[curve] * 100
    left.plot(shocks, r.static_repaid[curve] / 1e6, marker="o", label="static (shock only)")
    left.plot(shocks, r.repaid[curve] / 1e6, marker="o", label="cascade (with price impact)")
    left.plot(shocks, r.bad_debt[curve] / 1e6, marker="x", linestyle="--",
              label="bad debt after cascade")
    left.axvline(r.columns.shock[0] * 100, color="grey", linewidth=0.8)
    left.set_xlabel(f"drop of {' + '.join(sim.shocks)} (%)")
    left.set_ylabel("USD millions")
    left.set_title("Liquidation curve")
    left.legend()
    left.grid(alpha=0.3)
    used = [x for i, x in enumerate(r.per_round) if i == 0 or x["accounts"][0] > 0]
    repaid = np.cumsum([float(x["repaid"][0]) for x in used]) / 1e6
    rounds = np.arange(len(repaid))
    right.bar(rounds, [float(x["repaid"][0]) / 1e6 for x in used], alpha=0.6,
              label="repaid in the round")
    right.plot(rounds, repaid, marker="o", color="C1", label="cumulative")
    right.set_xticks(rounds)
    right.set_xlabel("round")
    right.set_ylabel("debt repaid, USD millions")
    right.set_title(f"Cascade at -{r.columns.shock[0]:.0%}: final drop "
                    f"{float(r.final_drop[0]):.1%} ({float(r.amplification[0]):.2f}x)")
    right.legend()
    right.grid(alpha=0.3)
    fig.suptitle(f"keeperd simulate: {sim.protocol} at block {sim.block}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
