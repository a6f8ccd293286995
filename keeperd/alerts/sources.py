"""Inputs of the alert engine that need I/O, kept out of it: the engine decides, these fetch.

- `watched_liquidations`: a protocol's liquidation events of watched accounts since the last
  evaluation, through its plug-in's log filter and decoder (the engine knows no protocol). The
  cursor lives with the alert state (a reorg rewinds it there).
"""

from __future__ import annotations

from typing import Any

import structlog

from keeperd.protocols.sdk.contract import LiquidationSeen, Plugin

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
