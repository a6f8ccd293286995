"""Polls each perp venue's watched accounts: metrics, open interest liquidated per move, and
the watchlists' health alerts (health = equity / maintenance margin, as for lending)."""

from __future__ import annotations

import time

import aiohttp
import structlog

from keeperd.alerts.engine import AlertEngine
from keeperd.config import DEFAULT_SHOCKS, DydxV4Config, HyperliquidConfig
from keeperd.metrics import Metrics
from keeperd.protocols.perps.dydx import DydxClient
from keeperd.protocols.perps.hyperliquid import HyperliquidClient
from keeperd.protocols.perps.margin import PerpAccount, liquidated_notional_by_move
from keeperd.protocols.perps.venues import (
    PARTIAL_LIQUIDATION,
    maintenance_moves,
    venue_reader,
)
from keeperd.risk.health import RISK_LEVELS, bucket_label

log = structlog.get_logger(__name__)

MOVES = tuple(DEFAULT_SHOCKS)  # (the cascade's shocks: one grid of moves everywhere)


class PerpMonitor:
    def __init__(self, config: HyperliquidConfig | DydxV4Config, metrics: Metrics,
                 alerts: AlertEngine | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.alerts = alerts
        self.accounts: list[PerpAccount] = []
        self._session: aiohttp.ClientSession | None = None
        # One client for the daemon's life (it was made anew at every poll: the rate limit
        # started afresh and a missing API type was asked for and warned about every time).
        self._reader: HyperliquidClient | DydxClient | None = None
        metrics.perp_polls.labels(config.name, "error")
        metrics.perp_polls.labels(config.name, "partial")
        metrics.perp_accounts_unread.labels(config.name)
        # Since when (wall clock) every poll has failed, and the last error; None: the last
        # answered (the alert engine's venue_down).
        self.failing: tuple[float, str] | None = None
        # The accounts the last poll that answered could not read (a number of theirs, or of
        # a market they hold, that does not read): since when, and the field and why. They
        # are not evaluated, and their alerts are kept, not resolved; venue_down says them.
        self.unread: dict[str, tuple[float, str]] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def poll(self) -> list[PerpAccount]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._reader = venue_reader(self.config, self._session)
        assert self._reader is not None
        venue = self.config.name
        try:
            read = await self._reader.read(self.config.accounts)
        except Exception as exc:  # the venue is down or lying: counted, retried next poll
            self.metrics.perp_polls.labels(venue, "error").inc()
            error = f"{type(exc).__name__}: {exc}"
            log.warning("perps.poll_failed", venue=venue, error=error)
            self.failing = (self.failing[0] if self.failing else time.time(), error[:200])
            # (every account unread since then: one still unread when the venue answers
            # again has been blind all along, `venue_down` goes on)
            self.unread = {a: self._unread_since(a, self.failing[0], "the poll failed")
                           for a in self.config.accounts}
            return self.accounts
        self.failing = None
        self.unread = {u.account: self._unread_since(u.account, time.time(),
                                                     f"{u.field}: {u.why}")
                       for u in read.unread}
        self.metrics.perp_polls.labels(venue, "partial" if read.unread else "ok").inc()
        self.metrics.perp_accounts_unread.labels(venue).set(len(read.unread))
        self.accounts = read.accounts
        self._publish(read.accounts)
        if self.alerts is not None:
            await self.alerts.on_perp_accounts(venue, read.accounts,
                                               maintenance_moves(self.config),
                                               unread=[u.account for u in read.unread])
        return read.accounts

    def _unread_since(self, account: str, now: float, why: str) -> tuple[float, str]:
        """(since when `account` has been unread, why): since its own entry's, or its
        holder's (a sub-account `user@dex`, `address/128`, of an entry unread before)."""
        holder = account.split("@", 1)[0].split("/", 1)[0]
        told = self.unread.get(account) or self.unread.get(holder)
        return (min(told[0], now) if told else now, why)

    def _publish(self, accounts: list[PerpAccount]) -> None:
        venue = self.config.name
        self.metrics.perp_maintenance_mismatches.labels(venue)
        for a in accounts:
            theirs = a.extra.get("venue_maintenance_margin_usd")
            if not isinstance(theirs, float):
                continue
            ours = a.maintenance_margin
            if abs(ours - theirs) > max(0.01, 1e-4 * abs(theirs)):
                self.metrics.perp_maintenance_mismatches.labels(venue).inc()
                log.warning("perps.maintenance_mismatch", venue=venue, account=a.account,
                            keeperd_usd=round(ours, 2), venue_usd=round(theirs, 2),
                            meaning="keeperd's margin tiers differ from the venue's")
        for level in RISK_LEVELS:
            self.metrics.perp_accounts_below.labels(venue, bucket_label(level)).set(
                sum(1 for a in accounts if a.health < level))
        coins = sorted({p.coin for a in accounts for p in a.positions})
        moves = [-m for m in MOVES] + list(MOVES)
        for coin in coins:
            self.metrics.perp_notional.labels(venue, coin).set(
                sum(p.notional for a in accounts for p in a.positions if p.coin == coin))
            liquidated = liquidated_notional_by_move(
                accounts, coin, moves, maintenance_moves=maintenance_moves(self.config),
                partial=PARTIAL_LIQUIDATION.get(self.config.kind))
            for move, notional in liquidated.items():
                self.metrics.perp_liquidated_notional.labels(venue, coin, f"{move:g}").set(
                    notional)
        log.info("perps.polled", venue=venue, accounts=len(accounts),
                 positions=sum(len(a.positions) for a in accounts),
                 min_health=round(min((a.health for a in accounts), default=float("inf")), 4))
