"""The circuit breaker: per (chain, asset), liquidations on that chain that depend on it pause
while its price cannot be trusted, and resume only after the condition has stayed clear for
`clear_after_s`. An asset is what the chain's price watch judges (`protocols/sdk/feeds.py`):
a symbol (`WETH`), or a market's own oracle (`morpho:<market id>`). A stale WETH feed on one
chain says nothing of WETH's price on another; an operator's trip names a chain, or every
chain (`*`).

State lives in the state database (SQLite, or PostgreSQL shared by replicas), so a trip
survives restarts and an operator's `keeperd breaker trip|reset ASSET` (another process) takes
effect at the daemon's next block — on every replica: the daemon re-reads the table every
block. Replicas read the same prices and fold them in alike (writes are idempotent upserts);
a manual trip or reset reaches whichever replica leads. Health evaluation and alerts continue
while tripped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from keeperd.chain.rpc import Endpoint, RpcError, RpcPool, RpcUnavailable
from keeperd.storage.db import Database
from keeperd.text import utc_text

EVERY_CHAIN = "*"  # a manual trip's chain when the operator named none
_COLUMNS = "chain, asset, tripped, manual, reason, since, clear_since, block_hash"
# Said of a market paused for its rate's deviation while nothing checks the rate: it cleared,
# and a market paused on a real deviation resumed, told "price trusted again", once its
# reference was doubted (a by-hand trial)
UNCHECKED_HOLD = ("held: its rate has no trusted reference now (a doubted source, references "
                  "unavailable), so it stays paused until it is checked again or reset by hand")


@dataclass(frozen=True)
class BreakerState:
    chain: str  # the chain's name, or EVERY_CHAIN (manual trips only)
    asset: str
    tripped: bool
    manual: bool
    reason: str | None
    since: float
    clear_since: float | None
    block_hash: str | None = None  # automatic trips: the block it was last observed at

    @property
    def key(self) -> tuple[str, str]:
        return (self.chain, self.asset)

    @property
    def where(self) -> str:
        return "every chain" if self.chain == EVERY_CHAIN else self.chain


# Whether a chain still has a block: True, False, or None when it cannot tell (no answer).
BlockKnown = Callable[[str, str], Awaitable[bool | None]]


async def block_known(pool: RpcPool, block_hash: str) -> bool | None:
    """Whether the chain still has the block, asked of every endpoint: gone only when each
    endpoint that answers says so (one endpoint's null must not forget a trip); None when
    none answers."""
    async def ask(ep: Endpoint) -> bool | None:
        try:
            return await pool.call_endpoint(ep, "eth_getBlockByHash",
                                            [block_hash, False]) is not None
        except (RpcUnavailable, RpcError):
            return None

    said = [s for s in await asyncio.gather(*(ask(ep) for ep in pool.voters))
            if s is not None]
    return None if not said else any(said)


@dataclass(frozen=True)
class Transition:
    chain: str
    asset: str
    tripped: bool  # True: tripped now; False: reset now
    reason: str


class Breaker:
    """Its tables come with the state database's migrations (`storage/migrations.py`)."""

    def __init__(self, db: Database, clear_after_s: float = 300.0) -> None:
        self.db = db
        self.clear_after_s = clear_after_s

    async def states(self) -> dict[tuple[str, str], BreakerState]:
        return {(r[0], r[1]): BreakerState(r[0], r[1], bool(r[2]), bool(r[3]), r[4], r[5],
                                           r[6], r[7])
                for r in await self.db.fetch(f"SELECT {_COLUMNS} FROM breaker")}

    async def tripped(self, chain: str) -> set[str]:
        """The assets paused on `chain`: tripped there, or on every chain."""
        return {r[0] for r in await self.db.fetch(
            "SELECT asset FROM breaker WHERE tripped <> 0 AND (chain = $1 OR chain = $2)",
            chain, EVERY_CHAIN)}

    async def paused(self, chain: str) -> dict[str, BreakerState]:
        """asset -> the trip that pauses it on `chain`: the chain's own, else an every-chain
        one."""
        # (the tripped rows of this chain only: read for every protocol's alerts each block)
        rows = await self.db.fetch(f"SELECT {_COLUMNS} FROM breaker WHERE tripped <> 0 AND "
                                   "(chain = $1 OR chain = $2)", chain, EVERY_CHAIN)
        out: dict[str, BreakerState] = {}
        for r in sorted(rows, key=lambda r: r[0] == EVERY_CHAIN):
            out.setdefault(r[1], BreakerState(r[0], r[1], bool(r[2]), bool(r[3]), r[4], r[5],
                                              r[6], r[7]))
        return out

    async def reasons(self, chain: str) -> dict[str, str]:
        """asset -> why it is paused on `chain`, as the breaker last recorded it."""
        return {asset: state.reason or "tripped"
                for asset, state in (await self.paused(chain)).items()}

    async def distrust(self, chain: str) -> dict[str, str]:
        """asset -> why it is paused on `chain`, and since when, as alerts tell it
        (`distrust_text`)."""
        return {asset: distrust_text(state, self.clear_after_s)
                for asset, state in (await self.paused(chain)).items()}

    async def trip(self, asset: str, reason: str, *, chain: str = EVERY_CHAIN,
                   manual: bool = False, now: float | None = None) -> None:
        now = time.time() if now is None else now
        await self.db.execute(
            "INSERT INTO breaker (chain, asset, tripped, manual, reason, since, clear_since) "
            "VALUES ($1, $2, 1, $3, $4, $5, NULL) ON CONFLICT (chain, asset) DO UPDATE "
            "SET tripped = 1, manual = CASE WHEN breaker.manual > excluded.manual "
            "THEN breaker.manual ELSE excluded.manual END, reason = excluded.reason, "
            "since = CASE WHEN breaker.tripped <> 0 THEN breaker.since ELSE excluded.since END, "
            "clear_since = NULL", chain, asset, int(manual), reason, now)

    async def reset(self, asset: str, chain: str | None = None,
                    now: float | None = None) -> int:
        """An operator's reset: clears manual and automatic trips of `asset` on `chain` (None:
        wherever it is tripped, every-chain trips included). The number of trips cleared (an
        automatic one comes back at the next block if its feed is still bad)."""
        now = time.time() if now is None else now
        rows = [r for r in await self.db.fetch(
                    "SELECT chain FROM breaker WHERE asset = $1 AND tripped <> 0", asset)
                if chain is None or r[0] == chain]
        for (where,) in rows:
            await self.db.execute("UPDATE breaker SET tripped = 0, manual = 0, reason = $1, "
                                  "since = $2, clear_since = NULL WHERE chain = $3 AND "
                                  "asset = $4", "reset by operator", now, where, asset)
        return len(rows)

    async def observe_many(self, chain: str, problems: dict[str, list[str]],
                           now: float | None = None, *, block_hash: str | None = None,
                           unchecked: Collection[str] = ()
                           ) -> tuple[list[Transition], set[str]]:
        """Fold one judgement of several assets on `chain` in, reading the table once before
        and once after (not once per asset): the trips and resets, and the assets paused on
        `chain` afterwards. An asset `unchecked` this time (a market's rate with no trusted
        reference) that is paused for a deviation stays paused: nothing was found wrong, but
        nothing was checked either (`UNCHECKED_HOLD`)."""
        states = await self.states()
        changes = []
        for asset, said in problems.items():
            state = states.get((chain, asset))
            if not said and asset in unchecked:
                said = _held_unchecked(state)
            change = await self._fold(chain, asset, said, now, block_hash, state)
            if change is not None:
                changes.append(change)
        return changes, await self.tripped(chain)

    async def observe(self, chain: str, asset: str, problems: list[str],
                      now: float | None = None, *, block_hash: str | None = None
                      ) -> Transition | None:
        """Fold one evaluation of the asset's price on `chain` (at the block `block_hash`)
        in; return a trip or reset, if any."""
        return await self._fold(chain, asset, problems, now, block_hash,
                                (await self.states()).get((chain, asset)))

    async def _fold(self, chain: str, asset: str, problems: list[str], now: float | None,
                    block_hash: str | None, state: BreakerState | None) -> Transition | None:
        now = time.time() if now is None else now
        if problems:
            reason = "; ".join(problems)
            transition = None
            if state is None or not state.tripped:
                await self.trip(asset, reason, chain=chain, now=now)
                transition = Transition(chain, asset, True, reason)
            await self.db.execute("UPDATE breaker SET clear_since = NULL, reason = $1, "
                                  "block_hash = $2 WHERE chain = $3 AND asset = $4 "
                                  "AND manual = 0", reason, block_hash, chain, asset)
            return transition
        if state is None or not state.tripped or state.manual:
            return None  # a manual trip only ends by an operator's reset
        if state.clear_since is None:
            await self.db.execute("UPDATE breaker SET clear_since = $1 WHERE chain = $2 AND "
                                  "asset = $3", now, chain, asset)
            return None
        if now - state.clear_since >= self.clear_after_s:
            reason = f"clear for {now - state.clear_since:.0f} s"
            await self.db.execute("UPDATE breaker SET tripped = 0, reason = $1, since = $2, "
                                  "clear_since = NULL WHERE chain = $3 AND asset = $4",
                                  reason, now, chain, asset)
            return Transition(chain, asset, False, reason)
        return None

    async def forget_gone(self, block_known: BlockKnown) -> list[BreakerState]:
        """Drop the automatic trips whose chain no longer has the block they were last
        observed at (a devnet stopped and started again, a reorg): what they said is about a
        chain that is not there. Manual trips and trips whose chain cannot tell (no answer,
        not configured) stay. Safe to drop: the price watch judges every feed again at the
        daemon's next block, before the executor acts; what is lost is the clear-for
        hysteresis of a feed that is fine now."""
        gone = []
        for state in (await self.states()).values():
            if (not state.tripped or state.manual or state.chain == EVERY_CHAIN
                    or not state.block_hash):
                continue
            if await block_known(state.chain, state.block_hash) is False:
                await self.db.execute("DELETE FROM breaker WHERE chain = $1 AND asset = $2 "
                                      "AND manual = 0 AND block_hash = $3",
                                      state.chain, state.asset, state.block_hash)
                gone.append(state)
        return gone


def _held_unchecked(state: BreakerState | None) -> list[str]:
    """The problem that keeps an unchecked asset's deviation trip standing, or none."""
    if (state is None or not state.tripped or state.manual
            or not (state.reason or "").startswith("deviation")):
        return []
    reason = str(state.reason)
    return [reason if UNCHECKED_HOLD in reason else f"{reason}; {UNCHECKED_HOLD}"]


def distrust_text(state: BreakerState, clear_after_s: float) -> str:
    """Why a tripped asset is untrusted, as an alert tells it: since when (an automatic
    trip's times are its blocks' timestamps), and, once its checks pass again and the trip
    only waits out `clear_after_s`, that the reason is the last one found, not now's: "stale:
    last update 4165 s ago" was told of a feed fresh again, and read as current (a by-hand
    trial)."""
    reason = state.reason or "tripped"
    if state.manual:
        return f"{reason} — untrusted since {utc_text(state.since)}, until an operator resets it"
    since = f"untrusted since the block of {utc_text(state.since)}"
    if state.clear_since is None:
        return f"{reason} — {since}"
    return (f"was {reason} until the block of {utc_text(state.clear_since)}, fine since — "
            f"{since}, trusted again after {clear_after_s:g} s fine")
