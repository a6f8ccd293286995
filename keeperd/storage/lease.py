"""A lease with a fencing epoch on PostgreSQL: which replica of a keeper identity (chain + key)
acts.

One row per identity: holder, epoch, expiry — in the database's clock, never a replica's. A
replica takes the lease only when it has expired (or was never taken), and taking it increments
the epoch; the holder renews it on its own connection, before it expires, only while it still
holds that epoch. Every write that leads to a transaction (reserving a nonce, journaling a
signed transaction, marking it broadcast) calls `fence` in the same database transaction: it
reads the row `FOR SHARE`, so a takeover waits for the write to commit, and a write by a
replica whose lease was taken (a process frozen past its expiry, then resumed) fails with
`FencedOut` instead of landing. The nonce is the second fence, on chain.

The lease connection sets a statement timeout and an idle-in-transaction timeout: a renewal
that hangs must fail well inside the lease, not outlive it. It must be a direct connection (or
a session-pooling proxy): a transaction-pooling proxy may run the fence and the write on two
server sessions.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from keeperd.storage.shared_config import differing, refused_at_start, reloadable

SCHEMA = """
CREATE TABLE IF NOT EXISTS keeper_lease (
    identity    TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    epoch       BIGINT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    renewed_at  TIMESTAMPTZ NOT NULL
);
ALTER TABLE keeper_lease ADD COLUMN IF NOT EXISTS address TEXT;
ALTER TABLE keeper_lease ADD COLUMN IF NOT EXISTS chain_ids BIGINT[];
ALTER TABLE keeper_lease ADD COLUMN IF NOT EXISTS mode TEXT;
ALTER TABLE keeper_lease ADD COLUMN IF NOT EXISTS shared TEXT;
ALTER TABLE keeper_lease ADD COLUMN IF NOT EXISTS told_by TEXT;
"""


def identity_of(address: str, chain_ids: Sequence[int]) -> str:
    """The lease's name: the key's address and the chain ids it sends on — not the config's
    chain names, which two replicas may spell differently while sharing one key and one
    nonce."""
    return f"{address.lower()}@{','.join(str(c) for c in sorted(set(chain_ids)))}"


def _address_named(identity: str) -> str:
    """The address a lease's name holds: `<address>@<chain ids>`, or an older keeperd's
    `<chain names>:<address>`."""
    return identity.split("@", 1)[0] if "@" in identity else identity.rsplit(":", 1)[-1]


# What one live lease says of its holder: (identity, address, keeper.mode, what its config
# shares with every replica — `shared_config` — or None from an older keeperd).
Live = tuple[str, str, str | None, "dict[str, list[str]] | None"]

# A takeover is said to differ from the last leader's config only when that lease expired
# this recently (a crash or a freeze, taken over at its expiry): seconds, in the database's
# clock.
TAKEOVER_SAID_WITHIN_S = 120


def mismatch(identity: str, address: str, mode: str, live: Sequence[Live],
             shared: dict[str, list[str]] | None = None, *, starting: bool = False
             ) -> str | None:
    """Why this replica must not join the replicas whose live leases are `live`, or None.
    One database holds one keeper's journal, alert state and outbox: a replica of another
    key (or of none: an alert-only one) would lead beside it and tell every alert again (a
    by-hand trial: three "resolved" for one price); one of another mode would take the lease
    when it next expires and send nothing (a dry run led a crash: nothing liquidated, no
    alert). `starting`: only a difference in what refuses a start (`REFUSED_AT_START`) does
    (a rolling change of a watchlist or a rule must get through); the running check says
    any."""
    for other, other_address, other_mode, other_shared in live:
        if other_address != address.lower():
            return (f"storage.url: this database is led by another keeper ({other}), this "
                    f"replica is {identity}: replicas sharing a database run one key on the "
                    "same chains (its journal, alert state and outbox are the database's); "
                    "give this one keeper.key and chains like the others', or its own "
                    "database")
        if other_mode is not None and other_mode != mode:
            return (f"storage.url: the replica leading {other} runs keeper.mode "
                    f"{other_mode}, this one {mode}: it would take the lease when it next "
                    "expires and act in its own mode; run every replica in one mode "
                    "(keeper.mode, KEEPERD_MODE) — a lease this replica held before a crash "
                    "ends within storage.lease.length_s")
        parts = [p for p in differing(shared, other_shared)
                 if not starting or refused_at_start(p)]
        if parts:
            assert shared is not None and other_shared is not None
            return (f"storage.url: replicas of one database run one config, and this one "
                    f"differs from the replica leading {other}: "
                    + config_difference(parts, other_shared, shared, "the leader's")
                    + ". It would lead with it at the next failover. Fix: "
                    + fix_for(parts, starting=starting))
    return None


def config_difference(parts: Sequence[str], theirs: dict[str, list[str]],
                      mine: dict[str, list[str]], whose: str) -> str:
    """The differing parts, theirs and this replica's (digests where a secret may be): whole
    for the short lists that refuse a start (the protocols each side runs), else only the
    lines that differ (all 11 of `oracles` were said on both sides for one `max_jump`, a
    by-hand trial)."""
    def said_of(part: str, one: list[str], other: list[str]) -> str:
        lines = one if refused_at_start(part) else [line for line in one if line not in other]
        return ", ".join(lines) or "none"

    said = "; ".join(f"{part}: {whose} {said_of(part, theirs[part], mine[part])}; this one's "
                     f"{said_of(part, mine[part], theirs[part])}" for part in parts)
    if "alert sinks" in parts:
        said += (" (a sink's digest covers its destination and its secret: replicas must "
                 "deliver to the same place with the same secret)")
    return said


def fix_for(parts: Sequence[str], *, starting: bool = False) -> str:
    """What mends a difference in `parts`: at a refused start, this replica on the leader's
    config; running, a reload of each replica when SIGHUP applies them all, a restart of
    one replica at a time when none refuses a start, else a stop of every replica."""
    if starting:  # (refused: only what refuses a start is in `parts`)
        return ("start this replica with the leader's config; to change it, stop every "
                "replica, then start them with the new config")
    if all(reloadable(p) for p in parts):
        return ("give every replica the same file, then reload each (systemctl reload "
                "keeperd: SIGHUP)")
    if not any(refused_at_start(p) for p in parts):
        # (a start is not refused for these: a rolling restart gets through, and "stop every
        # replica" took the keeper down for nothing — a by-hand trial)
        return ("give every replica the same file, then restart them one at a time, the "
                "standbys first and the leader last (a reload applies only the alerts)")
    return ("give every replica the same; to change it, stop every replica, then start them "
            "with the new config")


def _shared(text: str | None) -> dict[str, list[str]] | None:
    """A lease's `shared_config` as written: each part a list of lines. A row this code
    cannot read is not a reason to refuse; a part that is not a list of lines is left out
    (`{"chains": 5}` in a live row crashed every standby's comparison and every start: a
    review)."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    return {str(part): lines for part, lines in value.items()
            if isinstance(lines, list) and all(isinstance(line, str) for line in lines)}


class FencedOut(RuntimeError):
    """This replica no longer holds the lease at the epoch it acts under: stop acting."""


@dataclass(frozen=True)
class LeaseRow:
    identity: str
    holder: str
    epoch: int
    expires_in_s: float  # negative: expired that long ago
    since_renewal_s: float


def with_password(url: str, password: str | None) -> str:
    """The DSN with the password put in (it never is in the config's URL)."""
    if not password:
        return url
    from urllib.parse import quote, unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    # (as written, percent-encoded or not: quoted again as written, `my%40user` became
    # `my%2540user` and authentication failed — a review)
    user = unquote(parts.username or "")
    # The hosts as written: several, an [IPv6] literal, a percent-encoded socket directory
    # (`hostname` would keep only the first host and lose the brackets and the case).
    hosts = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{hosts}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact_url(url: str) -> str:
    """For logs: the URL without any password."""
    from urllib.parse import urlsplit, urlunsplit

    from keeperd.config import url_password_span

    # (found by its text: `urlsplit` stops at a `/`, `?` or `#` in the password, and a
    # password holding one was printed whole — an audit)
    span = url_password_span(url)
    if span is not None:
        url = url[:span[0]] + "***" + url[span[1]:]
    parts = urlsplit(url)
    # (a password in the query: the config refuses it; redacted here all the same)
    query = re.sub(r"(?i)((?:^|&)(?:ssl)?password=)[^&]*", r"\1***", parts.query)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def unreachable(url: str, exc: BaseException) -> str:
    """Why PostgreSQL at `url` could not be reached, for an operator: the URL without its
    password, the error, and for a certificate that did not verify, what to do."""
    detail = " ".join(str(exc).split())  # (asyncpg's messages carry HINT: on a line of its own)
    return (f"storage.url: cannot reach PostgreSQL at {redact_url(url)}: "
            f"{type(exc).__name__}: {detail}{tls_hint(exc)}")


def tls_hint(exc: BaseException) -> str:
    """For a server certificate that did not verify (or no CA to verify it with), what to
    do; else nothing."""
    if isinstance(exc, ssl.SSLError) or (isinstance(exc, asyncpg.ClientConfigurationError)
                                         and "certificate" in str(exc)):
        return ("; keeperd asks a host that is not loopback for sslmode=verify-full: give "
                "the CA that signed the server's certificate (sslrootcert=/path/to/ca.pem in "
                "storage.url, or ~/.postgresql/root.crt) and connect by the name the "
                "certificate holds, or set storage.allow_insecure_transport: true on a "
                "network you trust end to end")
    return ""


def holder_name() -> str:
    """Unique per process: a restarted keeperd is a new holder, so it takes a new epoch and
    reconciles the journal before acting."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """With `address` (and its `chain_ids`), the lease is also exclusive across identities:
    it is not taken while another live lease holds the same address on any of the same
    chains — a replica configured with other chains, or one of a version that named its
    lease by chain names (`<names>:<address>`) — since both would sign with one nonce."""

    def __init__(self, dsn: str, identity: str, *, holder: str | None = None,
                 length_s: float = 10.0, statement_timeout_s: float = 2.0,
                 address: str | None = None, chain_ids: Sequence[int] = (),
                 mode: str | None = None, shared: dict[str, list[str]] | None = None) -> None:
        if not 0 < statement_timeout_s < length_s:
            raise ValueError("the lease's statement timeout must be shorter than the lease")
        self.dsn = dsn
        self.identity = identity
        self.holder = holder or holder_name()
        self.length_s = length_s
        self.statement_timeout_s = statement_timeout_s
        self.address = address.lower() if address else None
        self.chain_ids = sorted(set(chain_ids))
        self.mode = mode  # keeper.mode, written with the lease (`live_elsewhere`)
        self.shared = shared  # `shared_config`, written with it too
        self.epoch: int | None = None  # the epoch held, None: standby
        self.held_elsewhere: str | None = None  # the other identity that kept it from us
        # What the last holder's config shared, read as this replica took the lease from it
        # (None: no other holder, or one that wrote none): a takeover on another config
        # is said (`Replica`).
        self.previous_shared: dict[str, list[str]] | None = None
        # Whether the last holder, as this replica took the lease from it, marked what it told
        # of each outcome (`told_by`: written by this code at each acquisition, its holder and
        # epoch; an older keeperd leaves another holder's there). None: no other holder.
        self.previous_told_outcomes: bool | None = None
        self._conn: Any = None
        self._create = True

    async def connect(self, *, create: bool = True) -> None:
        """Connect; `create`: make or bring the lease table up to this code's columns first
        (a replica's start). Without it nothing is written: `check-config` and `storage
        leases` run against a production database before any replica is upgraded, and
        check-config altered its table (a trial)."""
        self._create = create
        await self._open()

    async def _ready(self) -> Any:
        """The lease's connection, opened again if it broke (a server restart)."""
        if self._conn is None or self._conn.is_closed():
            self._conn = None
            await self._open()
        return self._conn

    async def _open(self) -> None:
        ms = str(int(self.statement_timeout_s * 1000))
        self._conn = await asyncpg.connect(
            self.dsn, timeout=self.statement_timeout_s * 2,
            server_settings={"statement_timeout": ms,
                             "idle_in_transaction_session_timeout": ms,
                             "application_name": "keeperd-lease"})
        if self._create:
            await self._conn.execute(SCHEMA)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def try_acquire(self) -> int | None:
        """Take the lease if it is free or expired (a new epoch); the epoch, or None when
        another replica holds it."""
        conn = await self._ready()
        async with conn.transaction():
            if self.address is not None:
                # One taker per address at a time, so two identities cannot both pass the
                # check below.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.address)
                self.held_elsewhere = await conn.fetchval(
                    """
                    SELECT identity FROM keeper_lease
                     WHERE identity <> $1 AND expires_at > now()
                       AND ((address = $2 AND chain_ids && $3::bigint[])
                            OR (address IS NULL AND lower(identity) LIKE '%:' || $2))
                     LIMIT 1
                    """, self.identity, self.address, self.chain_ids)
                if self.held_elsewhere is not None:
                    self.epoch = None
                    return None
            # (the last leader's config, if it crashed or froze lately: one that stopped
            # cleanly wrote none — `release` — and one long dead is no takeover; compared
            # with them, every planned restart onto a new config paged a critical, a review)
            previous = await conn.fetchrow(
                "SELECT holder, epoch, told_by, shared, "
                "expires_at > now() - make_interval(secs => $2) "
                "AS recent FROM keeper_lease WHERE identity = $1 FOR UPDATE",
                self.identity, float(TAKEOVER_SAID_WITHIN_S))
            epoch = await conn.fetchval(
                """
                INSERT INTO keeper_lease AS l (identity, holder, epoch, expires_at, renewed_at,
                                               address, chain_ids, mode, shared, told_by)
                VALUES ($1, $2, 1, now() + make_interval(secs => $3), now(), $4, $5, $6, $7,
                        $2 || '@1')
                ON CONFLICT (identity) DO UPDATE
                   SET holder = EXCLUDED.holder, epoch = l.epoch + 1,
                       expires_at = EXCLUDED.expires_at, renewed_at = now(),
                       address = EXCLUDED.address, chain_ids = EXCLUDED.chain_ids,
                       mode = EXCLUDED.mode, shared = EXCLUDED.shared,
                       told_by = EXCLUDED.holder || '@' || (l.epoch + 1)::text
                 WHERE l.expires_at <= now()
                RETURNING epoch
                """, self.identity, self.holder, self.length_s, self.address,
                self.chain_ids or None, self.mode,
                json.dumps(self.shared, sort_keys=True) if self.shared is not None else None)
        self.epoch = epoch
        if epoch is not None:
            self.previous_shared = (_shared(previous["shared"]) if previous is not None
                                    and previous["holder"] != self.holder
                                    and previous["recent"] else None)
            # (a lease with its config written is of a keeperd that marks what it tells too,
            # from before `told_by`: one that crashed keeps it there — its untold outcomes
            # are told late, not taken as told; a clean stop clears it, and leaves none)
            self.previous_told_outcomes = (
                None if previous is None or previous["holder"] == self.holder
                else previous["told_by"] == f"{previous['holder']}@{previous['epoch']}"
                or previous["shared"] is not None)
        return epoch

    async def renew(self) -> bool:
        """Extend the lease held at `epoch`; False (and standby) when it was lost."""
        if self.epoch is None:
            return False
        conn = await self._ready()
        epoch = await conn.fetchval(
            """
            UPDATE keeper_lease SET expires_at = now() + make_interval(secs => $4),
                   renewed_at = now(), shared = COALESCE($5, shared)
             WHERE identity = $1 AND holder = $2 AND epoch = $3 AND expires_at > now()
            RETURNING epoch
            """, self.identity, self.holder, self.epoch, self.length_s,
            json.dumps(self.shared, sort_keys=True) if self.shared is not None else None)
        if epoch is None:
            self.epoch = None
            return False
        return True

    async def release(self) -> None:
        """On a clean stop: let a standby take over at once instead of after the expiry."""
        if self.epoch is not None:
            # (its config with it: the next leader did not take over from a failure, and
            # says no difference — a planned restart onto a new config is no page)
            await (await self._ready()).execute(
                "UPDATE keeper_lease SET expires_at = now(), shared = NULL WHERE identity = $1 "
                "AND holder = $2 AND epoch = $3", self.identity, self.holder, self.epoch)
            self.epoch = None

    async def clock_skew(self) -> float:
        """This process's wall clock less the database's, in seconds (the database's read
        at the middle of the round trip)."""
        before = time.time()
        db_now = await (await self._ready()).fetchval(
            "SELECT extract(epoch from clock_timestamp())")
        after = time.time()
        return (before + after) / 2 - float(db_now)

    async def live_elsewhere(self) -> list[Live]:
        """The leases another process holds now: (identity, the address it names — "watch"
        for a keyless one —, its keeper.mode and its `shared_config`, each None when written
        by an older keeperd)."""
        records = await (await self._ready()).fetch(
            "SELECT identity, address, mode, shared FROM keeper_lease "
            "WHERE expires_at > now() AND holder <> $1 ORDER BY identity", self.holder)
        return [(r["identity"], (r["address"] or _address_named(r["identity"])).lower(),
                 r["mode"], _shared(r["shared"])) for r in records]

    async def rows(self) -> list[LeaseRow]:
        """Every identity's lease (for `keeperd status`)."""
        records = await (await self._ready()).fetch(
            "SELECT identity, holder, epoch, "
            "extract(epoch FROM expires_at - now())::float8 AS expires_in, "
            "extract(epoch FROM now() - renewed_at)::float8 AS since_renewal "
            "FROM keeper_lease ORDER BY identity")
        return [LeaseRow(r["identity"], r["holder"], r["epoch"], r["expires_in"],
                         r["since_renewal"]) for r in records]


async def fence(conn: Any, identity: str, holder: str, epoch: int | None) -> None:
    """Inside the caller's transaction on `conn`: fail unless `holder` holds the lease at
    `epoch` and it has not expired. `FOR SHARE` makes a concurrent takeover wait until the
    caller's transaction ends, so no write of an old epoch lands after a new one began."""
    if epoch is None:
        raise FencedOut(f"{identity}: this replica is standby; it does not act")
    ok = await conn.fetchval(
        "SELECT true FROM keeper_lease WHERE identity = $1 AND holder = $2 AND epoch = $3 "
        "AND expires_at > now() FOR SHARE", identity, holder, epoch)
    if not ok:
        raise FencedOut(f"{identity}: the lease at epoch {epoch} is no longer {holder}'s; "
                        "another replica acts now")
