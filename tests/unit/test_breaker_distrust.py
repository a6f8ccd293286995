"""What the breaker tells the alerts of a trip: its reason, since when, and — the feed's
checks passing again while the trip waits out `clear_after_s` — that the reason is the last
one found, not the feed's state now."""

from __future__ import annotations

from pathlib import Path

from keeperd.oracles.breaker import Breaker
from keeperd.storage.db import SqliteDatabase
from keeperd.storage.migrations import migrate

TRIPPED_AT = 1_796_000_000.0  # 30 Nov 00:53:20 UTC


async def breaker(path: Path) -> Breaker:
    db = SqliteDatabase.open(path)
    await migrate(db)
    return Breaker(db, clear_after_s=300)


async def test_a_trip_says_since_when(tmp_path: Path) -> None:
    b = await breaker(tmp_path / "s.db")
    await b.observe("devnet", "WETH", ["stale: last update 4165 s ago"], now=TRIPPED_AT)
    await b.observe("devnet", "WETH", ["stale: last update 4177 s ago"], now=TRIPPED_AT + 12)
    assert await b.distrust("devnet") == {"WETH": "stale: last update 4177 s ago — untrusted "
                                                  "since the block of 30 Nov 00:53:20 UTC"}
    assert await b.reasons("devnet") == {"WETH": "stale: last update 4177 s ago"}


async def test_a_trip_waiting_out_its_clear_time_says_its_reason_is_past(tmp_path: Path
                                                                        ) -> None:
    """The feed fresh again, the breaker holds for clear_after_s: "stale: last update 4165 s
    ago" was told of it and read as current (a by-hand trial)."""
    b = await breaker(tmp_path / "s.db")
    await b.observe("devnet", "WETH", ["stale: last update 4165 s ago"], now=TRIPPED_AT)
    await b.observe("devnet", "WETH", [], now=TRIPPED_AT + 60)  # fresh again
    [told] = (await b.distrust("devnet")).values()
    assert told == ("was stale: last update 4165 s ago until the block of 30 Nov 00:54:20 UTC, "
                    "fine since — untrusted since the block of 30 Nov 00:53:20 UTC, trusted "
                    "again after 300 s fine")
    await b.observe("devnet", "WETH", [], now=TRIPPED_AT + 360)
    assert await b.distrust("devnet") == {}


async def test_a_manual_trip_says_an_operator_ends_it_and_a_chains_own_trip_wins(
        tmp_path: Path) -> None:
    b = await breaker(tmp_path / "s.db")
    await b.trip("WBTC", "manual: maintenance", manual=True, now=TRIPPED_AT)
    await b.observe("devnet", "WBTC", ["stale: 7200 s"], now=TRIPPED_AT + 60)
    told = await b.distrust("devnet")
    assert told["WBTC"] == "stale: 7200 s — untrusted since the block of 30 Nov 00:54:20 UTC"
    assert await b.distrust("mainnet") == {"WBTC": "manual: maintenance — untrusted since 30 "
                                                   "Nov 00:53:20 UTC, until an operator "
                                                   "resets it"}
