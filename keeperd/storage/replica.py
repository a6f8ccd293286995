"""Which replica acts: the lease loop of one keeper identity (chain + key).

Every replica follows the chain and evaluates; only the leader signs and sends. The loop, every
`renew_every_s` on the lease's own connection: the leader renews; a standby tries to take the
lease (it succeeds once the leader's has expired: failover <= length_s + renew_every_s). On
taking it, the new leader's `on_promoted` runs first (the executors reconcile the shared
journal: rebroadcast what the old leader signed, never sign it again under a new nonce). A
leader that fails to renew, or has not renewed for longer than the lease minus one renewal
interval (its clock's view; the database's is the one that counts), stops acting at once and
says so; so does one whose fenced write failed (`demote`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

from keeperd.config import LeaseConfig
from keeperd.metrics import Metrics
from keeperd.storage.lease import Lease, config_difference, fix_for
from keeperd.storage.shared_config import differing, reloadable

log = structlog.get_logger(__name__)

LEADER, STANDBY = "leader", "standby"


CLOCK_CHECK_S = 30.0  # the wall clock checked against the database's this often
CLOCK_SKEW_WARN_S = 5.0  # beyond this it is said (replica.clock_skewed, KeeperdClockSkewed)


class Replica:
    name = "replica"

    def __init__(self, lease: Lease, config: LeaseConfig, metrics: Metrics,
                 on_promoted: Callable[[int], Awaitable[None]] | None = None,
                 on_leading: Callable[[], Awaitable[None]] | None = None) -> None:
        self.lease = lease
        self.config = config
        self.metrics = metrics
        self.on_promoted = on_promoted
        # Once leading: act on what the standby already evaluated (it waited for the next
        # block: up to a block's time in the middle of a crash wave, a by-hand trial).
        self.on_leading = on_leading
        self.role = STANDBY
        # While `on_promoted` reconciles: what it settles is told (`tells`), once the alert
        # state was read afresh (`promotion_tells`, set by the daemon) and for as long as the
        # lease is still held (`_promotion_lost`: the renewal beside it failed).
        self.promoting = False
        self.promotion_tells = False
        self._promotion_lost = False
        self._first_act: asyncio.Task[None] | None = None
        self._renewed_at: float | None = None  # monotonic
        self._told_elsewhere: str | None = None
        self._told_standby = False  # (said once per time it becomes a standby)
        self._clock_checked_at = float("-inf")
        self._clock_told = False
        self._config_told: str | None = None  # (replica.config_differs: said once a reason)
        self._older_told = False  # (replica.leader_older: said once while it lasts)
        self._stop = asyncio.Event()
        self._publish()

    @property
    def identity(self) -> str:
        return self.lease.identity

    def tells(self) -> bool:
        """Whether this replica's alert engine writes what it found: leading, or reconciling
        the journal on its way to lead — the liquidations it settles then (the last leader's,
        included while it was down) were dropped as a standby's, never told (a by-hand
        trial) — once it has read the last leader's alert state, while its lease holds (and
        within it as last renewed, as `is_leader` judges it), until it leads."""
        margin = self.config.length_s - self.config.renew_every_s
        return self.is_leader() or (self.promoting and self.promotion_tells
                                    and not self._promotion_lost
                                    and self._renewed_at is not None
                                    and time.monotonic() - self._renewed_at <= margin)

    def is_leader(self) -> bool:
        """Leading, and within the lease as this process last renewed it: a loop that stalls
        (a blocked event loop, a database that stops answering) must not leave `is_leader`
        true past the expiry while another replica takes over. The margin is one renewal
        interval, as `step` judges it."""
        margin = self.config.length_s - self.config.renew_every_s
        return (self.role == LEADER and self._renewed_at is not None
                and time.monotonic() - self._renewed_at <= margin)

    def demote(self, reason: str, epoch: int | None = None) -> None:
        """Stop acting now (a fenced write failed, a renewal failed or came too late).
        `epoch`: the one led, when the lease already forgot it (a lost renewal clears it:
        the log said `epoch: null`)."""
        if self.role == LEADER:
            log.error("replica.demoted", identity=self.identity,
                      epoch=self.lease.epoch if epoch is None else epoch,
                      reason=reason, meaning="this replica stops sending; another takes over")
            self.metrics.lease_losses.labels(self.identity).inc()
        self.role = STANDBY
        self._told_standby = False
        self.lease.epoch = None
        if self._first_act is not None and not self._first_act.done():
            self._first_act.cancel()  # (it would act on under the next leadership's epoch)
        self._publish()

    async def _check_clock(self) -> None:
        """The wall clock against the database's, every CLOCK_CHECK_S: a replica two hours
        ahead signed every webhook two hours ahead (receivers refuse those) and, leading,
        dead-lettered 51 pending notifications at once, the outbox's windows judged against
        the other replicas' times; as a standby its outbox age paged (a by-hand trial)."""
        try:
            skew = await self.lease.clock_skew()
        except Exception:  # (the database's trouble: the lease's own calls say it)
            return
        self.metrics.clock_skew.set(round(skew, 3))
        off = abs(skew) > CLOCK_SKEW_WARN_S
        if off and not self._clock_told:
            log.error("replica.clock_skewed", identity=self.identity, skew_s=round(skew, 1),
                      meaning="this machine's clock is that far from the database's: its "
                              "webhook signatures are refused by receivers and, leading, it "
                              "may give up on pending alerts",
                      fix="synchronise the clock (chrony, systemd-timesyncd)")
        elif not off and self._clock_told:
            log.info("replica.clock_agrees", identity=self.identity, skew_s=round(skew, 1))
        self._clock_told = off

    async def _check_config(self) -> None:
        """A standby against the leader's config (the lease's `shared`), with the clock's
        check: a reload that changed the leader's sinks left a running standby on the old
        ones, and at the failover it led with them, saying nothing (a by-hand trial). Said
        once while it lasts; the standby still takes over when it must (leading on an older
        config is better than no leader), and the error says to restart it."""
        from keeperd.storage.lease import mismatch

        if self.role == LEADER or self.lease.shared is None:
            # (a standby that differed and leads now: nothing to differ from)
            self.metrics.replica_config_differs.labels(self.identity).set(0)
            self._config_told = None
            return
        try:
            live = await self.lease.live_elsewhere()
        except Exception:  # (the database's trouble: the lease's own calls say it)
            return
        older = sorted(ident for ident, _, mode, _ in live if mode is None)
        if older and not self._older_told:
            # (a rolling upgrade: the standby said nothing of the leader it would take over
            # from, and compared nothing — trial 30)
            log.warning("replica.leader_older", identity=self.identity, leaders=older,
                        meaning="the replica leading runs an older keeperd, whose config "
                                "cannot be compared; at a takeover this one leads on its own",
                        fix="finish the upgrade: stop the old leader once every standby "
                            "runs this version (docs/operations.md, Upgrade)")
        self._older_told = bool(older)
        why = mismatch(self.identity, self.lease.address or "watch", self.lease.mode or "",
                       live, self.lease.shared)
        self.metrics.replica_config_differs.labels(self.identity).set(int(why is not None))
        if why is not None and why != self._config_told:
            sections = sorted({p for _, _, _, theirs in live
                               for p in differing(self.lease.shared, theirs)})
            log.error("replica.config_differs", identity=self.identity, sections=sections,
                      reason=why,
                      meaning="at a failover this replica leads with its own config: what "
                              "differs changes what is told or done then",
                      fix=fix_for(sections) if sections else "restart it with the leader's "
                          "config (or stop every replica and start them with one)")
        self._config_told = why

    def reconfigured(self, shared: dict[str, list[str]]) -> bool:
        """This replica's config was read again (SIGHUP, or its file at a promotion): the
        lease says the new one from its next renewal (a standby compares with it at its next
        check). Whether what replicas share changed. A takeover on another config stays said
        while the reloaded one still differs from the last leader's (any reload cleared it,
        a restart-only part still differing: a review)."""
        before, self.lease.shared = self.lease.shared, shared
        if self.role == LEADER:
            self.metrics.replica_took_over_other_config.labels(self.identity).set(
                int(bool(differing(shared, self.lease.previous_shared))))
        return before is not None and before != shared

    def _say_takeover_config(self) -> None:
        """Just promoted: what differs from the config of the leader it took over from (read
        from the lease as it was taken, after this replica read its own file again). A
        standby left on its old watchlist took over, told the holder a position 'is no
        longer watched' and nothing more as it fell to critical (trial 28): said at error
        level and in `keeperd_replica_took_over_other_config` until a reload or a restart."""
        theirs, mine = self.lease.previous_shared, self.lease.shared
        # (a leader's config is the one in force: the standby's "differs from the leader"
        # stood up to 30 s after the promotion, its rule saying it of the leader — a trial)
        self.metrics.replica_config_differs.labels(self.identity).set(0)
        self._config_told = None
        sections = differing(mine, theirs)
        self.metrics.replica_took_over_other_config.labels(self.identity).set(
            int(bool(sections)))
        if not sections:
            return
        assert theirs is not None and mine is not None
        log.error("replica.took_over_with_other_config", identity=self.identity,
                  sections=sections,
                  reason=config_difference(sections, theirs, mine, "the last leader's"),
                  meaning="this replica leads now with its own config: what differs from the "
                          "last leader's changes what is told or done (a watchlist without "
                          "an account no longer alerts on it)",
                  fix="give this replica the config the last leader ran, then " + (
                      "reload it (systemctl reload keeperd: SIGHUP)"
                      if all(reloadable(p) for p in sections) else "restart it"))

    async def step(self) -> None:
        """One turn of the loop (tests drive it directly)."""
        now = time.monotonic()
        if now >= self._clock_checked_at + CLOCK_CHECK_S:  # (the peers: every CLOCK_CHECK_S)
            self._clock_checked_at = now
            await self._check_config()
            await self._check_clock()
        if self.role == LEADER:
            stale = (self._renewed_at is not None and now - self._renewed_at
                     > self.config.length_s - self.config.renew_every_s)
            led = self.lease.epoch
            try:
                ok = await self.lease.renew()
            except Exception as exc:  # the database is unreachable or slow: counted
                self.metrics.lease_renewals.labels(self.identity, "error").inc()
                log.warning("replica.renew_failed", identity=self.identity,
                            error=f"{type(exc).__name__}: {exc}")
                if stale:
                    self.demote("the lease could not be renewed before it expires")
                return
            if not ok:
                self.metrics.lease_renewals.labels(self.identity, "lost").inc()
                self.demote("the lease was taken over (or expired) before this renewal", led)
                return
            self.metrics.lease_renewals.labels(self.identity, "ok").inc()
            self._renewed_at = now
            self._publish()
            return
        try:
            epoch = await self.lease.try_acquire()
        except Exception as exc:
            self.metrics.lease_renewals.labels(self.identity, "error").inc()
            log.warning("replica.acquire_failed", identity=self.identity,
                        error=f"{type(exc).__name__}: {exc}")
            return
        if epoch is None:
            if not self._told_standby:
                # (a standby said nothing of it at start beyond `replica.started`)
                self._told_standby = True
                log.info("replica.standby", identity=self.identity, holder=self.lease.holder,
                         meaning="another replica leads: this one follows and evaluates, "
                                 "sends nothing, and takes over when its lease expires")
            elsewhere = self.lease.held_elsewhere
            if elsewhere is not None and elsewhere != self._told_elsewhere:
                log.warning("replica.key_led_elsewhere", identity=self.identity,
                            other=elsewhere, meaning="another replica signs with this key on "
                            "one of these chains under another configuration; this one stays "
                            "standby while that lease lives")
            self._told_elsewhere = elsewhere
            self._publish()
            return
        self._renewed_at = now
        log.info("replica.lease_taken", identity=self.identity, epoch=epoch,
                 holder=self.lease.holder, next="reconciling the journal before acting")
        if self._first_act is not None and not self._first_act.done():
            # (an act of an earlier leadership still under way ends before this one
            # reconciles: the two would sign beside each other)
            self._first_act.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._first_act
        try:
            if not await self._take_over(epoch):
                return
        finally:
            # (told from the alert state read at the promotion to the role's change, without
            # a gap: an evaluation during the last renewal was dropped as a standby's while
            # its change stayed in the state the new leader went on from)
            self.promoting = self.promotion_tells = False
        log.warning("replica.promoted", identity=self.identity, epoch=epoch,
                    holder=self.lease.holder, meaning="this replica signs and sends now")
        self._say_takeover_config()
        self._publish()
        if self.on_leading is not None:
            # A task: the lease loop goes on renewing while it acts (a crash wave's first
            # act can take longer than the lease).
            self._first_act = asyncio.create_task(self._act_first(self.on_leading))

    async def _take_over(self, epoch: int) -> bool:
        """From the lease taken to leading: `on_promoted`, then the lease renewed once more.
        False: this replica stays standby (it said why)."""
        if self.on_promoted is not None:
            try:
                await self._promote(epoch)
            except Exception as exc:  # not fit to lead: let the lease go to another
                log.error("replica.promotion_failed", identity=self.identity,
                          error=f"{type(exc).__name__}: {exc}")
                self.promoting = False  # (it tells nothing more as it lets the lease go)
                await self._release()
                self._publish()
                return False
        # The epoch again, right before acting: a promotion that outlived the lease (renewals
        # failing while it reconciled) must not lead on a lease another replica now holds.
        try:
            renewed = await self.lease.renew()
        except Exception as exc:
            renewed = False
            log.warning("replica.renew_failed", identity=self.identity,
                        error=f"{type(exc).__name__}: {exc}")
        if not renewed:
            log.error("replica.promotion_outlived_lease", identity=self.identity, epoch=epoch,
                      meaning="the lease was lost while reconciling; this replica stays standby")
            self.lease.epoch = None
            self._publish()
            return False
        if self._stop.is_set():
            # (a stop came while it reconciled: it hands the lease over at once rather than
            # start leading as the daemon shuts down, the lease left to expire)
            self.promoting = False
            await self._release()
            self._publish()
            return False
        self._renewed_at = time.monotonic()
        self.role = LEADER
        return True

    async def _act_first(self, act: Callable[[], Awaitable[None]]) -> None:
        try:
            await act()
        except Exception as exc:  # (the next block acts as ever)
            log.error("replica.first_act_failed", identity=self.identity,
                      error=f"{type(exc).__name__}: {exc}")

    async def _promote(self, epoch: int) -> None:
        """`on_promoted` (the journal's reconciliation, which may take longer than a lease on
        a large journal or a slow RPC), with the lease renewed beside it every
        `renew_every_s`."""
        assert self.on_promoted is not None

        async def keep_renewing() -> None:
            while True:
                await asyncio.sleep(self.config.renew_every_s)
                try:
                    if await self.lease.renew():
                        self._renewed_at = time.monotonic()
                        self.metrics.lease_renewals.labels(self.identity, "ok").inc()
                    else:
                        self.metrics.lease_renewals.labels(self.identity, "lost").inc()
                        self._promotion_lost = True  # (nothing more is told meanwhile)
                        return  # lost: the check after the promotion says so
                except Exception as exc:
                    self.metrics.lease_renewals.labels(self.identity, "error").inc()
                    log.warning("replica.renew_failed", identity=self.identity,
                                error=f"{type(exc).__name__}: {exc}")

        renewing = asyncio.create_task(keep_renewing())
        self.promoting, self._promotion_lost = True, False
        try:
            await self.on_promoted(epoch)
        finally:  # (`promoting` ends with the take-over, `step`)
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing

    async def run(self) -> None:
        while not self._stop.is_set():
            await self.step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.config.renew_every_s)

    def drain(self) -> None:
        self._stop.set()

    async def drained(self) -> None:
        """On a clean stop: hand the lease over at once instead of after its expiry (the
        first act of a promotion, if still under way, ended first)."""
        if self._first_act is not None and not self._first_act.done():
            # (the first act's wave may finish as the drain lets running work finish: one
            # renewal interval, then it is cut short — what it signed is journaled)
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._first_act),
                                       self.config.renew_every_s)
            self._first_act.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._first_act
        if self.role == LEADER:
            self.role = STANDBY
            await self._release()
            self._publish()

    async def _release(self) -> None:
        try:
            await self.lease.release()
        except Exception as exc:
            log.warning("replica.release_failed", identity=self.identity, error=str(exc))
        self.lease.epoch = None

    def _publish(self) -> None:
        m = self.metrics
        for role in (LEADER, STANDBY):
            m.replica_role.labels(self.identity, role).set(1 if self.role == role else 0)
        m.lease_epoch.labels(self.identity).set(self.lease.epoch or 0)
        if self._renewed_at is not None:
            m.lease_since_renewal.labels(self.identity).set(
                time.monotonic() - self._renewed_at)
