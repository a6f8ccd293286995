"""Inputs of the alert engine that need I/O, kept out of it: the engine decides, these fetch.

- `watched_liquidations`: a protocol's liquidation events of watched accounts since the last
  evaluation, through its plug-in's log filter and decoder (the engine knows no protocol). The
  cursor lives with the alert state (a reorg rewinds it there).
- `second_reading`: the watched accounts' health as another endpoint's protocol says it at
  the same block, the lower one alerted on.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import structlog

from keeperd.protocols.sdk.contract import LiquidationSeen, Plugin
from keeperd.protocols.sdk.views import row_key

log = structlog.get_logger(__name__)


async def watched_liquidations(engine: Any, plugin: Plugin, pool: Any, book: Any,
                               block: int) -> list[LiquidationSeen]:
    """Liquidations of watched accounts in (cursor, block]; the first time, this block only.
    A node that fails leaves the cursor: the next evaluation asks again."""
    accounts = [a for a in engine.watched_accounts() if a.startswith("0x")]
    if not accounts:
        return []
    name = f"liquidations:{plugin.name}"
    last = engine.cursor(name)
    start = block if last is None else last + 1
    if start > block:
        return []
    try:
        logs = await pool.request("eth_getLogs", [{
            "fromBlock": hex(start), "toBlock": hex(block),
            **plugin.liquidation_logs(book, accounts)}])
    except Exception as exc:
        log.warning("alerts.liquidation_logs_failed", protocol=plugin.name, error=str(exc))
        return []
    engine.set_cursor(name, block)
    return [seen for entry in logs
            if (seen := plugin.decode_liquidation(entry, book)) is not None]


# keeperd's health equals the pool's to the wei (docs/protocols.md): a relative difference
# past this, the second endpoint's lower, is a dispute, not rounding.
HEALTH_DISPUTE = 1e-6


async def second_reading(engine: Any, plugin: Plugin, pool: Any, result: Any,
                         metrics: Any, told: set[str] | None = None) -> Any:
    """`result` with each watched row's health the lower of the first endpoint's (the
    book's) and another endpoint's protocol at the same block (`Plugin.health_elsewhere`):
    a first endpoint lying about one account's collateral hid its fall under water from its
    holder, and the pool's cross-check, asked of the same endpoint, agreed (a by-hand trial).
    One endpoint alone can no longer silence a holder's alert; a disagreement is logged and
    counted (keeperd_health_mismatch_total). No second endpoint, or no answer: as it was.
    `told`: the accounts whose dispute was logged and lasts (the caller's, kept between
    blocks): logged once while it lasts, counted every block (an error line a block, a
    by-hand trial)."""
    second = pool.second()
    view = result.view
    if second is None or view is None:
        return result
    watched = {a.lower() for a in engine.watched_accounts() if a.startswith("0x")}
    rows = [i for i, a in enumerate(view.accounts) if a.lower() in watched]
    if not rows:
        return result
    accounts = list(dict.fromkeys(view.accounts[i] for i in rows))
    try:
        found = await plugin.health_elsewhere(result.book, accounts, second)
    except Exception as exc:  # (the second's trouble: the first's reading stands)
        log.info("alerts.second_reading_failed", protocol=plugin.name,
                 endpoint=second.safe_url, error=str(exc)[:200])
        return result
    if not found:
        return result
    health = view.health.copy()
    disputed = []
    for i in rows:
        labels = view.labels[i] if view.labels is not None else None
        other = found.get(row_key(view.accounts[i], labels), found.get(view.accounts[i]))
        mine = float(view.health[i])
        if other is None or not other < mine or (
                np.isfinite(mine) and other >= mine * (1 - HEALTH_DISPUTE)):
            continue
        health[i] = other
        disputed.append({"account": view.accounts[i], "first": round(mine, 6),
                         "second": round(other, 6)})
    now = {d["account"].lower() for d in disputed}
    if told is not None:
        ended = told - now
        if ended:
            log.info("positions.health_dispute_ended", protocol=plugin.name,
                     block=result.block, accounts=sorted(ended)[:10])
        new = [d for d in disputed if d["account"].lower() not in told]
        told.clear()
        told.update(now)
    else:
        new = disputed
    if not disputed:
        return result
    metrics.health_mismatches.labels(plugin.chain, plugin.name).inc(len(disputed))
    if new:
        log.error("positions.health_disputed", protocol=plugin.name, block=result.block,
                  endpoint=second.safe_url, accounts=new[:10],
                  meaning="another endpoint's pool says these watched positions are less "
                          "healthy than the first endpoint's reading: alerted on the lower "
                          "while it lasts; one of the endpoints lies or lags")
    return dataclasses.replace(result, view=dataclasses.replace(view, health=health))

