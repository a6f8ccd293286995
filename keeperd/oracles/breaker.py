"""The circuit breaker: per asset, liquidations that depend on it pause while its price cannot
be trusted, and resume only after the condition has stayed clear for `clear_after_s`.

State lives in the state database (SQLite, or PostgreSQL shared by replicas), so a trip
survives restarts and an operator's `keeperd breaker trip|reset ASSET` (another process) takes
effect at the daemon's next block — on every replica: the daemon re-reads the table every
block. Replicas read the same prices and fold them in alike (writes are idempotent upserts);
a manual trip or reset reaches whichever replica leads. Health evaluation and alerts continue
while tripped.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from keeperd.storage.db import Database


@dataclass(frozen=True)
class BreakerState:
    asset: str
    tripped: bool
    manual: bool
    reason: str | None
    since: float
    clear_since: float | None
    chain: str | None = None  # automatic trips: where it was last observed
    block_hash: str | None = None


# Whether a chain still has a block: True, False, or None when it cannot tell (no answer).
BlockKnown = Callable[[str, str], Awaitable[bool | None]]


@dataclass(frozen=True)
class Transition:
    asset: str
    tripped: bool  # True: tripped now; False: reset now
    reason: str


class Breaker:
    """Its tables come with the state database's migrations (`storage/migrations.py`)."""

    def __init__(self, db: Database, clear_after_s: float = 300.0) -> None:
        self.db = db
        self.clear_after_s = clear_after_s

    async def states(self) -> dict[str, BreakerState]:
        return {r[0]: BreakerState(r[0], bool(r[1]), bool(r[2]), r[3], r[4], r[5], r[6], r[7])
                for r in await self.db.fetch("SELECT asset, tripped, manual, reason, since, "
                                             "clear_since, chain, block_hash FROM breaker")}

    async def tripped(self) -> set[str]:
        return {r[0] for r in await self.db.fetch("SELECT asset FROM breaker WHERE tripped = 1")}

    async def trip(self, asset: str, reason: str, *, manual: bool = False,
                   now: float | None = None) -> None:
        now = time.time() if now is None else now
        await self.db.execute(
            "INSERT INTO breaker (asset, tripped, manual, reason, since, clear_since) "
            "VALUES ($1, 1, $2, $3, $4, NULL) ON CONFLICT (asset) DO UPDATE "
            "SET tripped = 1, manual = CASE WHEN breaker.manual > excluded.manual "
            "THEN breaker.manual ELSE excluded.manual END, reason = excluded.reason, "
            "since = CASE WHEN breaker.tripped = 1 THEN breaker.since ELSE excluded.since END, "
            "clear_since = NULL", asset, int(manual), reason, now)

    async def reset(self, asset: str, now: float | None = None) -> None:
        """An operator's reset: clears a manual trip and any automatic one."""
        now = time.time() if now is None else now
        await self.db.execute(
            "INSERT INTO breaker (asset, tripped, manual, reason, since, clear_since) "
            "VALUES ($1, 0, 0, 'reset by operator', $2, $3) ON CONFLICT (asset) DO UPDATE "
            "SET tripped = 0, manual = 0, reason = excluded.reason, since = excluded.since, "
            "clear_since = NULL", asset, now, now)

    async def observe(self, asset: str, problems: list[str], now: float | None = None, *,
                      chain: str | None = None, block_hash: str | None = None
                      ) -> Transition | None:
        """Fold one evaluation of the asset's price (on `chain`, at the block `block_hash`)
        in; return a trip or reset, if any."""
        now = time.time() if now is None else now
        state = (await self.states()).get(asset)
        if problems:
            reason = "; ".join(problems)
            transition = None
            if state is None or not state.tripped:
                await self.trip(asset, reason, now=now)
                transition = Transition(asset, True, reason)
            await self.db.execute("UPDATE breaker SET clear_since = NULL, reason = $1, "
                                  "chain = $2, block_hash = $3 WHERE asset = $4 AND manual = 0",
                                  reason, chain, block_hash, asset)
            return transition
        if state is None or not state.tripped or state.manual:
            return None  # a manual trip only ends by an operator's reset
        if state.clear_since is None:
            await self.db.execute("UPDATE breaker SET clear_since = $1 WHERE asset = $2",
                                  now, asset)
            return None
        if now - state.clear_since >= self.clear_after_s:
            await self.db.execute("UPDATE breaker SET tripped = 0, reason = $1, since = $2, "
                                  "clear_since = NULL WHERE asset = $3",
                                  f"clear for {now - state.clear_since:.0f} s", now, asset)
            return Transition(asset, False, f"clear for {now - state.clear_since:.0f} s")
        return None

    async def forget_gone(self, block_known: BlockKnown) -> list[BreakerState]:
        """Drop the automatic trips whose chain no longer has the block they were last
        observed at (a devnet stopped and started again, a reorg): what they said is about a
        chain that is not there. Manual trips, trips from before migration 7 and trips whose
        chain cannot tell (no answer, not configured) stay. Safe to drop: the oracle watch
        judges every feed again at the daemon's next block, before the executor acts; what
        is lost is the clear-for hysteresis of a feed that is fine now."""
        gone = []
        for state in (await self.states()).values():
            if not state.tripped or state.manual or not state.chain or not state.block_hash:
                continue
            if await block_known(state.chain, state.block_hash) is False:
                await self.db.execute("DELETE FROM breaker WHERE asset = $1 AND manual = 0 "
                                      "AND block_hash = $2", state.asset, state.block_hash)
                gone.append(state)
        return gone
