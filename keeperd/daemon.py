"""The daemon's lifecycle: connect, check, follow every chain, serve, stop cleanly.

One `ChainRuntime` per configured chain owns its RPC pool and block source. Everything runs in
one TaskGroup; a stop request (SIGTERM/SIGINT via the CLI) cancels the group, and the exit
stack closes pools and the web server, so no task is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from keeperd import __version__, crashpoints
from keeperd.alerts.delivery import Dispatcher
from keeperd.alerts.engine import AlertEngine
from keeperd.alerts.outbox import Outbox
from keeperd.alerts.sources import second_reading, watched_liquidations
from keeperd.cascade_monitor import CascadeMonitor
from keeperd.chain import l1_fee
from keeperd.chain.blocks import BlockEvent, BlockSource, NewBlock, Reorg, confirmed_head
from keeperd.chain.connect import check_chain_ids, make_pool
from keeperd.chain.rpc import RpcError, RpcPool, RpcUnavailable
from keeperd.collector_hold import CollectorHold
from keeperd.config import (
    AlertsConfig,
    ChainConfig,
    Config,
    ConfigError,
    EnvKey,
    KeystoreKey,
    RemoteSignerKey,
    is_loopback,
    load_config,
    metrics_exposure_warnings,
    operator_route_warnings,
)
from keeperd.execution.delegation import KeyHold
from keeperd.execution.executor import Executor
from keeperd.execution.journal import PENDING, Journal, TxRecord
from keeperd.execution.reconcile import (
    journal_last_block,
    unconfigured_holdings,
    unconfigured_in_flight,
)
from keeperd.execution.signer import RemoteSigner, Signer, SignerError
from keeperd.execution.txmanager import FeePolicy, TxManager
from keeperd.hardening import drop_from_environment, forbid_core_dumps
from keeperd.keys import KeyLoadError, SecretError, load_key
from keeperd.liquidation_first import LiquidationFirst, count_child_tasks
from keeperd.logs import Redactor
from keeperd.metrics import Metrics
from keeperd.notify import Notifier
from keeperd.oracles.breaker import Breaker, block_known
from keeperd.oracles.watch import ChainPriceWatch
from keeperd.protocols import registry
from keeperd.protocols.perps.monitor import PerpMonitor
from keeperd.protocols.sdk.contract import (
    FieldProblem,
    Plugin,
    PluginContext,
    StartRefused,
)
from keeperd.protocols.sdk.keys import UpkeepKey
from keeperd.reload_guard import judge_reload, unheard_warnings
from keeperd.restart_pending import (
    RESTART_CHECK_S,
    RESTART_FIX,
    RestartPending,
    protocol_changes,
    protocols_to_check,
    restart_sections,
)
from keeperd.scanner import ProtocolScanner
from keeperd.services import Service
from keeperd.statelock import StateDirLock, StateDirLocked
from keeperd.storage.account_index import IndexStore
from keeperd.storage.chain_identity import OtherChain, check_chain
from keeperd.storage.db import STATE_FILE, Database, PostgresDatabase, SqliteDatabase
from keeperd.storage.lease import (
    Lease,
    fence,
    identity_of,
    mismatch,
    redact_url,
    unreachable,
    with_password,
)
from keeperd.storage.migrations import INDEX_MIGRATIONS, SchemaAhead, migrate
from keeperd.storage.replica import Replica
from keeperd.storage.shared_config import shared_config
from keeperd.storage.wal_checkpoint import WalCheckpointer
from keeperd.text import clip
from keeperd.web import WebServer, make_app, read_bearer_token

log = structlog.get_logger(__name__)


def write_status(path: Path, status: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=1, default=str))
    tmp.replace(path)


# While no RPC endpoint of a chain answers at start, keeperd asks again after 1, 2, 4 ... s,
# at most this far apart.
START_WAIT_MAX_S = 30.0


def _ends_quietly_at_stop(job: Callable[..., Awaitable[Any]]
                          ) -> Callable[..., Awaitable[None]]:
    """A scheduled job cut short by the stop ends without a word: apscheduler logs a
    cancellation as the job's error, with a traceback, at every stop that caught a perp poll
    or an index catch-up under way (a trial: an error-level traceback on each restart)."""
    @functools.wraps(job)
    async def run(*args: Any) -> None:
        try:
            await job(*args)
        except asyncio.CancelledError:
            log.debug("daemon.job_cut_at_stop", job=getattr(job, "__qualname__", str(job)))
    return run


class StartupError(Exception):
    """keeperd cannot start with this configuration; the message says why and what to do."""


# A plug-in's start reads the protocol's contracts; one answer an endpoint got wrong (junk,
# an error, parameters that do not hash to the market id) failed the daemon's start with a
# traceback. It is asked again, this many times in all, the waits doubling from 1 s (15 s).
PLUGIN_START_TRIES = 5
PLUGIN_START_FIRST_WAIT_S = 1.0


@dataclass
class ChainRuntime:
    config: ChainConfig
    pool: RpcPool
    blocks: BlockSource
    last_block_at: float | None = None
    prices: ChainPriceWatch | None = None  # the chain's price watch, once the breaker is open


class Daemon:
    def __init__(self, config: Config, *, metrics: Metrics | None = None,
                 redactor: Redactor | None = None, config_path: Path | None = None,
                 owns_process: bool = False) -> None:
        self.config = config
        # `keeperd run`: the process is keeperd's alone, its environment included (an
        # env-sourced key is dropped from it once loaded). Embedded (tests, the demo): not.
        self.owns_process = owns_process
        self.config_path = config_path
        # The top-level sections the running config's file had: one that goes at a reload
        # is a file cut short, refused (`judge_reload`).
        self._file_sections = frozenset(config.model_fields_set)
        self.alerts: AlertEngine | None = None
        self.cascades: dict[str, CascadeMonitor] = {}
        self.perps: dict[str, PerpMonitor] = {}
        self.dispatcher: Dispatcher | None = None
        self.metrics = metrics or Metrics()
        self.redactor = redactor or Redactor()
        self._metrics_token: str | None = None  # what /metrics asks for (_web_server)
        self.executors: dict[str, Executor] = {}
        self.chains: dict[str, ChainRuntime] = {}
        self.scanners: dict[str, ProtocolScanner] = {}
        # One event loop for every protocol: the light liquidation paths go first, heavy
        # ones and everyone's after-work after them (liquidation_first.py).
        self.order = LiquidationFirst()
        self.collector = CollectorHold()  # the cyclic GC held off while paths run
        self.index_store: IndexStore | None = None
        # With storage.url: this replica's lease loop (None: one machine, always acting).
        self.replica: Replica | None = None
        # The last refused write to the state directory (a full disk), None while writes work.
        self.state_error: str | None = None
        self.web: WebServer | None = None
        self.started_at = time.monotonic()
        self._heartbeat = time.monotonic()
        # Why /readyz says no before the daemon has started (None once it has).
        self._starting: str | None = "starting"
        self.ready = asyncio.Event()
        self.notifier = Notifier()
        # The long-running components (services.py), run, drained and stopped together.
        self.services: list[Service] = []
        # Who takes a new alerting configuration on SIGHUP (the engine, cascade monitors).
        self.alert_config_subscribers: list[Callable[[AlertsConfig], None]] = []
        # The alert tick's failures: since when, and when last logged (`_alert_tick`)
        self._tick_failing_since: float | None = None
        self._tick_told_at = 0.0
        # What a reload read that only a restart applies, and its check (`_restart_needed`)
        self.restart_pending: RestartPending | None = None
        self._restart_check: asyncio.Task[None] | None = None
        self._keeper_address: str | None = None  # (the key's, once loaded: the check's)
        self.metrics.config_restart_would_fail.set(0)

    # --- health -----------------------------------------------------------------------------

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """/healthz: the process makes progress — its event loop turns and every chain's
        follower keeps trying (a hung follower fails it, so a container's liveness probe
        restarts keeperd). Not whether the chain or its RPCs are fine: restarting cannot mend
        those (/readyz says)."""
        now = time.monotonic()
        age = now - self._heartbeat
        ok = age < 30
        detail: dict[str, Any] = {"loop_heartbeat_age_s": round(age, 3)}
        for name, rt in self.chains.items():
            last = rt.blocks.last_attempt
            idle = None if last is None else round(now - last, 3)
            stuck = idle is not None and idle > self._follower_limit(rt)
            detail[name] = {"follower_idle_s": idle, "follower_stuck": stuck}
            ok = ok and not stuck
        return ok, detail

    @staticmethod
    def _follower_limit(rt: ChainRuntime) -> float:
        """The longest a healthy follower goes without trying: a poll that fails on every
        attempt (with the pool's backoff), or a websocket's wait for its next message."""
        c = rt.config
        poll = c.poll_interval + c.max_attempts * (c.request_timeout + 5.0) + 2.0
        return poll + (c.ws_stall_s if rt.blocks.ws_url else 0.0)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Useful: every chain followed with a healthy RPC, every index caught up."""
        detail: dict[str, Any] = {}
        if self._starting is not None:
            return False, {"starting": self._starting}
        ok = bool(self.chains)
        now = time.monotonic()
        for name, rt in self.chains.items():
            healthy = rt.pool.healthy_count()
            stale_after = max(30.0, 10 * rt.config.poll_interval)
            fresh = rt.last_block_at is not None and now - rt.last_block_at < stale_after
            detail[name] = {"healthy_endpoints": healthy,
                            "head": rt.blocks.head.number if rt.blocks.head else None,
                            "following": fresh}
            if not fresh and healthy == 0:  # (the endpoints first: the chain may be fine)
                detail[name]["why"] = (
                    "no healthy RPC endpoint: none answers" + (
                        "" if rt.last_block_at is None else
                        f" (no new block for {now - rt.last_block_at:.0f} s)"))
            elif not fresh:  # say why, not only that (an idle devnet mines no block)
                detail[name]["why"] = (
                    "no block seen yet" if rt.last_block_at is None else
                    f"no new block for {now - rt.last_block_at:.0f} s (more than "
                    f"{stale_after:.0f} s): the chain halted, or the endpoints stopped "
                    "serving new heads; a devnet that mines only on transactions halts too")
            elif healthy == 0:
                detail[name]["why"] = "no healthy RPC endpoint"
            ok = ok and healthy > 0 and fresh
        for name, scanner in self.scanners.items():
            lag = self._index_lag(scanner)
            caught_up = lag is not None and lag <= self.config.metrics.ready_max_index_lag
            detail[name] = {"index_lag_blocks": lag, "evaluated_block": scanner.completed_block}
            if not caught_up:  # (status said "NOT ready" with no reason for this: a review)
                detail[name]["why"] = (
                    "its index has not reached a head yet" if lag is None else
                    f"its index is {lag} blocks behind the head (more than "
                    f"metrics.ready_max_index_lag, {self.config.metrics.ready_max_index_lag})")
            ok = ok and caught_up
        if self.state_error is not None:
            detail["state_dir"] = {"error": self.state_error}
        if self.replica is not None:
            # A standby is ready (it follows and evaluates, and takes over when needed):
            # the role is said, not failed on.
            detail["replica"] = {"role": self.replica.role, "identity": self.replica.identity,
                                 "epoch": self.replica.lease.epoch}
        return ok, detail

    def _index_lag(self, scanner: ProtocolScanner) -> int | None:
        head = self.chains[scanner.adapter.chain].blocks.head
        return None if head is None else scanner.adapter.index_lag(head.number)

    def _alive(self) -> bool:
        """The watchdog's test is /healthz's: a systemd unit and a container restart keeperd
        on the same grounds — a stalled event loop or a hung chain follower — and neither on
        failing RPCs or a halted chain, which a restart cannot mend. (It used to want an
        answer from the chain within 30 s: every RPC down, systemd killed and restarted
        keeperd every minute while the container's probe did not.)"""
        return self.liveness()[0]

    def _status_line(self) -> str:
        parts = []
        for name, rt in self.chains.items():
            head = rt.blocks.head.number if rt.blocks.head else "?"
            parts.append(f"{name} at {head}")
        for name, scanner in self.scanners.items():
            view = scanner.view
            if view is not None:
                liq = int((view.health < 1.0).sum())
                # (accounts with a position: the index counts every account it has seen)
                parts.append(f"{name}: {len(view.accounts)} accounts with a position, {liq} "
                             "liquidatable" + self._not_sent(name, liq))
            # (status named none of these: only alert names, a by-hand trial)
            if scanner.hold_reason is not None:
                parts.append(f"{name}: liquidations held ({clip(scanner.hold_reason, 200)})")
            elif scanner.verification_reason is not None:
                parts.append(f"{name}: each liquidation sent only on the chain's word "
                             f"({clip(scanner.verification_reason, 160)})")
            if (held := self._held_by_keeperd(name)) is not None:
                parts.append(f"{name}: new liquidations held ({clip(held, 200)})")
            executor = self.executors.get(name)
            if executor is not None and executor.capital_shortfall:
                # (a dry run's Curie takeovers, short of a margin only liquidate mode
                # deposits, showed no row and no word in status: a by-hand trial)
                short = executor.capital_shortfall.values()
                parts.append(f"{name}: {sum(s.opportunities for s in short)} liquidation(s) "
                             f"short of capital ({', '.join(sorted(s.symbol for s in short))})"
                             + (f": {clip(executor.capital_fix, 200)}" if executor.capital_fix
                                else ""))
        return f"{self.config.keeper.mode}; " + "; ".join(parts)

    def _not_sent(self, protocol: str, liquidatable: int) -> str:
        """Why the liquidatable are not liquidated, at the last block judged: " (at block N:
        12 unprofitable, 2 held)", or nothing (none liquidatable, or alert-only)."""
        executor = self.executors.get(protocol)
        last = executor.not_sent() if executor is not None and liquidatable else None
        if last is None or not last[1]:
            return ""
        block, reasons = last
        said = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(
            reasons.items(), key=lambda r: -r[1]))
        return f" (not sent at block {block}: {said})"

    def _held_by_keeperd(self, protocol: str) -> str | None:
        """Why keeperd itself holds a protocol's new liquidations now (the key's hold, its
        own sending limits), for `keeperd status`: a start on a key with transactions in
        flight held 67 liquidatable positions while status said "liquidations none yet"
        (a by-hand trial)."""
        executor = self.executors.get(protocol)
        last = executor._last if executor is not None else None
        if executor is None or last is None or executor.tx is None or \
                self.config.keeper.mode != "liquidate":
            return None
        hold = executor.tx.send_hold(last.block)
        return hold.reason if hold is not None else (
            executor.send_pause(last.block) or executor.fee_hold(last.block)
            or executor.waves_hold(last.block) or executor.opinion_hold(last.block))

    # --- lifecycle --------------------------------------------------------------------------

    def _register_url_secrets(self, config: Config | None = None) -> None:
        """The keys in the configured URLs (RPC endpoints, the private relay, venues, a remote
        signer), registered with the redactor before anything can echo one: the logs and every
        alert (the engine's backstop) are scrubbed of them where a text quotes one without its
        URL (a venue's 404 page giving back its path). (`config`: a reloaded file's too.)"""
        config = config or self.config
        urls: list[str | None] = [config.keeper.private_rpc_url]
        for chain in config.chains:
            urls += [*chain.rpc_urls, chain.ws_url]
        for venue in config.perp_venues:
            urls.append(getattr(venue, "api_url", None) or getattr(venue, "indexer_url", None))
        if isinstance(config.keeper.key, RemoteSignerKey):
            urls.append(config.keeper.key.url)
        for url in urls:
            self.redactor.add_url(url)

    async def run(self, stop: asyncio.Event) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self._register_url_secrets()
        self.metrics.build_info.labels(__version__).set(1)
        async with contextlib.AsyncExitStack() as stack:
            if (problem := crashpoints.configured_problem()) is not None:
                raise StartupError(problem)
            try:  # first of all: one keeperd per state directory
                stack.enter_context(StateDirLock(self.config.state_dir))
            except StateDirLocked as exc:
                raise StartupError(str(exc)) from None
            # What a scanner's path starts (a multicall's chunks) counts in its weight.
            loop = asyncio.get_running_loop()
            previous = loop.get_task_factory()
            loop.set_task_factory(count_child_tasks(previous))
            stack.callback(loop.set_task_factory, previous)
            if self.config.metrics.enabled:
                # Served from the start: while keeperd waits for an RPC endpoint (minutes,
                # in a provider's outage) Prometheus and a probe see it there and not ready,
                # with why, instead of a port that does not answer.
                self.web = self._web_server()
                await self.web.start()
                stack.push_async_callback(self.web.stop)
                log.info("web.listening", host=self.web.host, port=self.web.port,
                         paths=["/metrics", "/healthz", "/readyz"])
            starting = loop.create_task(self._heartbeat_loop(), name="heartbeat:start")
            stack.callback(starting.cancel)
            for chain in self.config.chains:
                pool = make_pool(chain, self.metrics)
                await stack.enter_async_context(pool)
                if not await self._check_chain(chain, pool, stop):
                    log.info("daemon.stopped_before_start", chain=chain.name)
                    return
                source = BlockSource(pool, poll_interval=chain.poll_interval,
                                     ws_url=chain.ws_url, metrics=self.metrics,
                                     ws_stall_after=chain.ws_stall_s, chain_id=chain.chain_id)
                rt = ChainRuntime(chain, pool, source)
                source.subscribe(self._block_logger(rt))
                self.chains[chain.name] = rt
            local = SqliteDatabase.open(self.config.state_dir / STATE_FILE)
            stack.push_async_callback(local.close)
            # (its commits on the loop append to the log; the copy back, with its fsyncs,
            # runs in a thread)
            self.services.append(WalCheckpointer(local, self.config.state_dir / STATE_FILE,
                                                 self.metrics))
            key = await self._open_signer(stack)
            self._keeper_address = key.address if key is not None else \
                self.config.keeper.address
            db = await self._open_storage(stack, key, local)
            # The schema first, explicitly: every table the journal, the alerts and the
            # breaker read (with replicas, the account index stays in this one's own file).
            try:
                applied = await migrate(db)
                if db is not local:
                    applied += await migrate(local, only=INDEX_MIGRATIONS)
            except SchemaAhead as exc:
                raise StartupError(f"storage: {exc}") from None
            if applied and min(applied) == 1:  # (a new database: nothing to warn of — a
                # first start's warning read as trouble, a by-hand trial)
                log.info("storage.created", backend=db.dialect, version=max(applied))
            elif applied:  # (an upgrade moved a database from 11 to 16 with no word: a trial)
                log.warning("storage.migrated", backend=db.dialect, versions=sorted(applied),
                            meaning="the state database was migrated for this keeperd: "
                                    "an older keeperd must not run on it (recent ones refuse "
                                    "it, older ones do not know to); going back is restoring "
                                    "a backup taken before the upgrade")
            journal = await Journal.open(db)
            await self._check_journal_chains(db, journal, "storage.url" if db is not local
                                             else f"the state directory {self.config.state_dir}",
                                             key)
            await self._check_journal_protocols(journal, key)
            await self._check_journal_holdings(journal)
            self.index_store = IndexStore(local)
            breaker = Breaker(db, self.config.oracles.clear_after_s)
            for gone in await breaker.forget_gone(self._block_known):
                log.warning("breaker.forgotten", asset=gone.asset, chain=gone.chain,
                            reason=gone.reason, why="the chain no longer has the block it "
                            "was observed at (a devnet started again, a reorg); the feed is "
                            "judged again at the next block")
            for rt in self.chains.values():  # one price watch per chain, for every protocol
                rt.prices = ChainPriceWatch(rt.config, rt.pool, breaker, self.config.oracles,
                                            self.metrics, self.config.state_dir)
                stack.push_async_callback(rt.prices.close)
            await self._start_alerts(db)
            tx_managers: dict[str, TxManager] = {}
            scheduler = AsyncIOScheduler()
            native_prices: dict[str, float] = {}
            for proto in self.config.chain_protocols:
                rt = self.chains[proto.chain]
                plugin = registry.create(proto, PluginContext(rt.config, rt.pool, self.index_store,
                                                           self.metrics))
                await self._start_plugin(plugin)
                await self._add_protocol(plugin, rt, journal, key, tx_managers, stack, breaker,
                                         native_prices, scheduler)
            if self.replica is None:
                await self._prepare_executors()
            for venue in self.config.perp_venues:
                perp = PerpMonitor(venue, self.metrics, self.alerts)
                stack.push_async_callback(perp.close)
                self.perps[venue.name] = perp
                scheduler.add_job(_ends_quietly_at_stop(perp.poll), "interval",
                                  seconds=venue.poll_interval_s,
                                  max_instances=1, coalesce=True, id=f"{venue.name}:poll",
                                  next_run_time=datetime.now(UTC))
            if self.cascades:
                # First run in an environment compiles the cascade kernels (seconds, holding
                # the GIL): do it before declaring ready, not on the first block.
                from keeperd.risk.kernels import kernels

                await asyncio.to_thread(kernels)
            scheduler.start()
            stack.callback(scheduler.shutdown, wait=False)
            starting.cancel()  # (the running daemon's own heartbeat takes over)
            self._starting = None
            for issue in operator_route_warnings(self.config.alerts):
                log.warning("alerts.operator_route_unset", problem=issue.message,
                            fix=issue.fix)
            for issue in unheard_warnings(self.config):
                log.error("alerts.no_routes", problem=issue.message, fix=issue.fix)
            for issue in metrics_exposure_warnings(self.config.metrics):
                log.warning("metrics.exposed_without_token", problem=issue.message,
                            fix=issue.fix)
            log.info("daemon.started", version=__version__, mode=self.config.keeper.mode,
                     chains=[c.name for c in self.config.chains],
                     protocols=[p.name for p in self.config.protocols])
            self.ready.set()
            self.notifier.ready(self._status_line())
            loop = asyncio.get_running_loop()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGHUP, self._reload)
                stack.callback(loop.remove_signal_handler, signal.SIGHUP)
                loop.add_signal_handler(signal.SIGUSR1, self._dump_tasks)
                stack.callback(loop.remove_signal_handler, signal.SIGUSR1)
            await self._run_tasks(stop)
        log.info("daemon.stopped")

    async def _check_journal_protocols(self, journal: Journal, key: Signer | None) -> None:
        """Liquidations in flight of a protocol no longer configured refuse a start that
        sends (`reconcile.unconfigured_in_flight`) — those whose nonce the key has not mined
        on some configured chain: one under every chain's count can be in no pool any more
        (its P&L only unbooked: said, not refused — a review); in another mode they are
        said."""
        pending = await journal.by_status(PENDING)
        configured = {p.name for p in self.config.chain_protocols}
        if all(e.protocol in configured for e in pending):
            return
        why = unconfigured_in_flight(pending, configured)
        if self.config.keeper.mode == "liquidate" and key is not None:
            counts = []
            for rt in self.chains.values():
                try:
                    counts.append(int(await rt.pool.request(
                        "eth_getTransactionCount", [key.address, "latest"]), 16))
                except (RpcError, RpcUnavailable, ValueError, TypeError):
                    counts = []  # (a chain unread: every row may still be in flight there)
                    break
            refused = unconfigured_in_flight(pending, configured,
                                             min(counts) if counts else None)
            if refused is not None:
                raise StartupError(refused)
        if why is None:
            return
        log.warning("journal.unconfigured_in_flight", problem=why,
                    meaning="their transactions are mined or replaced on every configured "
                            "chain (under the key's mined nonce): only their P&L waits, "
                            "booked once the protocol is configured again"
                    if self.config.keeper.mode == "liquidate" else
                    "nothing is sent in this mode; liquidate mode refuses to start while any "
                    "of them may still be in a pool")

    async def _check_journal_holdings(self, journal: Journal) -> None:
        """Positions the keeper holds in a protocol no longer configured (Curie's takeovers
        not unwound, `Journal.holdings`) refuse a start in liquidate mode: nothing would
        watch, unwind or tell them. In another mode nothing is unwound either way: said."""
        why = unconfigured_holdings(await journal.holdings(),
                                    {p.name for p in self.config.protocols})
        if why is None:
            return
        if self.config.keeper.mode == "liquidate":
            raise StartupError(why)
        log.warning("journal.unconfigured_holdings", problem=why)

    async def _check_journal_chains(self, db: Database, journal: Journal, where: str,
                                    key: Signer | None) -> None:
        """Each chain is the one the journal was kept on (`storage/chain_identity.py`), or the
        start is refused (`where`: the state, for the message). How far the journal saw a
        chain is said only by rows this keeper signed for it (`reconcile.journal_last_block`):
        without a key or keeper.address (alert-only) nothing can be verified and only the
        genesis is checked — a start that can send checks the rest."""
        address = key.address if key is not None else self.config.keeper.address
        for rt in self.chains.values():
            protocols = {p.name for p in self.config.chain_protocols
                         if p.chain == rt.config.name}
            last = None if address is None else await journal_last_block(
                journal, protocols, address, rt.config.chain_id)
            try:
                await check_chain(db, rt.config.name, rt.config.chain_id, rt.pool, where,
                                  *(last or (None, None)))
            except OtherChain as exc:
                raise StartupError(str(exc)) from None

    async def _open_storage(self, stack: contextlib.AsyncExitStack, key: Signer | None,
                            local: SqliteDatabase) -> Database:
        """Where the journal, the alert state and the outbox live: the embedded SQLite file,
        or — with storage.url — PostgreSQL, shared with the other replicas, its writes that
        lead to a transaction or a notification fenced by this replica's lease (the Replica
        service that holds the lease is created here too)."""
        storage = self.config.storage
        if not storage.replicated:
            return local
        assert storage.url is not None
        address = key.address if key is not None else (self.config.keeper.address or "watch")
        chain_ids = [c.chain_id for c in self.config.chains]
        identity = identity_of(address, chain_ids)
        password = storage.password()
        self.redactor.add(password)  # (every form of it: the DSN holds it URL-quoted)
        if storage.password_env:
            # (held in the DSN from here, reconnections included: out of /proc/<pid>/environ
            # as the key's variable is — it stayed there, a by-hand trial)
            drop_from_environment(storage.password_env)
        dsn = with_password(storage.connect_url, password)
        lease = Lease(dsn, identity, length_s=storage.lease.length_s,
                      statement_timeout_s=storage.lease.statement_timeout_s,
                      address=address if address != "watch" else None, chain_ids=chain_ids,
                      mode=self.config.keeper.mode, shared=shared_config(self.config))
        try:
            await lease.connect()
            refused = mismatch(identity, address, self.config.keeper.mode,
                               await lease.live_elsewhere(), lease.shared, starting=True)
            if refused is not None:
                await lease.close()
                raise StartupError(refused)
            db = await PostgresDatabase.connect(
                dsn, statement_timeout_s=storage.statement_timeout_s,
                fence=lambda conn: fence(conn, identity, lease.holder, lease.epoch))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StartupError(unreachable(storage.url, exc)) from None
        except (ValueError, OverflowError):
            # A URL the config's check let through and asyncpg's parser does not (a port
            # `:abc` or `:99999`): a plain ValueError (OverflowError) escaped as a crash, and
            # its message, from the DSN with the password put in, may hold part of it (audit
            # F1). Neither the URL nor the message is said.
            raise StartupError(
                "storage.url: PostgreSQL's client could not read the URL: check its form "
                "(postgresql://user@host:port/database; the password in password_env or "
                "password_file)") from None
        stack.push_async_callback(lease.close)
        stack.push_async_callback(db.close)
        self.replica = Replica(lease, storage.lease, self.metrics,
                               on_promoted=self._promoted, on_leading=self._leading)
        self.services.append(self.replica)
        log.info("replica.started", identity=identity, holder=lease.holder,
                 lease_s=storage.lease.length_s, storage=redact_url(storage.url))
        return db

    async def _promoted(self, epoch: int) -> None:
        """Before acting as leader: the alert engine reads what the last leader told (so
        nothing is told twice); every executor reconciles the shared journal (what the last
        leader signed is tracked and rebroadcast under its own nonce, never signed again) and
        syncs its nonce with the chain. First, its config file is read again, as SIGHUP
        would: a file edited on every host but reloaded only on the last leader (what
        `systemctl reload` on one host does) is what the operator meant, and this replica
        led with its old watchlist, telling a watched position 'no longer watched' (trial
        28). What differs then from the last leader's is said (`Replica`)."""
        self._read_config_again("promotion", only_if_changed=True)
        if self.alerts is not None:
            await self.alerts.load()
            if self.dispatcher is not None:
                self.dispatcher.wake()
        if self.replica is not None:
            self.replica.promotion_tells = True  # (what it settles now is told)
            await self._after_an_older_leader()
        for name, executor in self.executors.items():
            head = await confirmed_head(executor.pool)
            await executor.reconcile(head)
            log.info("replica.reconciled", protocol=name, epoch=epoch, head=head)
        await self._prepare_executors()

    async def _after_an_older_leader(self) -> None:
        """The lease taken from a keeperd older than the outcomes' `told` marks (a rolling
        upgrade): what it settled, it told — marked so, not told again (`Journal.mark_told_
        by_older_leader`)."""
        assert self.replica is not None
        if self.replica.lease.previous_told_outcomes is not False or not self.executors:
            return
        journal = next(iter(self.executors.values())).journal
        marked = await journal.mark_told_by_older_leader()
        log.warning("replica.took_over_from_an_older_keeperd", outcomes_taken_as_told=marked,
                    meaning="the last leader ran a keeperd that does not mark what it tells: "
                            "the outcomes it settled that were in flight when the database was "
                            "migrated are taken as told by it (those it journaled after were "
                            "never marked to tell: neither are told again; one it settled and "
                            "had not told when it stopped is not told); finish the upgrade of "
                            "every replica")

    async def _prepare_executors(self) -> None:
        """Each executor's preparation (approvals, a deposit), once every executor's journal
        is reconciled: an approval sent before another protocol on the same key had resumed
        its journaled, unbroadcast liquidation took that one's nonce, and the liquidation
        never went (a review)."""
        for executor in self.executors.values():
            await executor.prepare(await confirmed_head(executor.pool))

    async def _leading(self) -> None:
        """Just promoted: each executor acts on the standby's last evaluation, if it is of
        the head (it used to wait for the next block)."""
        for name, executor in self.executors.items():
            try:
                await executor.act_on_last()
            except Exception as exc:  # (the others still act; this one at the next block)
                log.error("replica.first_act_failed", protocol=name,
                          error=f"{type(exc).__name__}: {exc}")

    def _dump_tasks(self) -> None:
        """SIGUSR1: log where every task is waiting (for a daemon that seems stuck)."""
        import io

        for task in asyncio.all_tasks():
            buf = io.StringIO()
            task.print_stack(limit=12, file=buf)
            log.warning("daemon.task_stack", task=task.get_name(), stack=buf.getvalue())

    async def _start_alerts(self, db: Database) -> None:
        acting = self.replica.is_leader if self.replica is not None else (lambda: True)
        self.dispatcher = Dispatcher(Outbox(db), self.config.alerts.outbox, self.metrics,
                                     self.redactor, acting=acting)
        try:
            self.dispatcher.configure(self.config.alerts.routes)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        tells = self.replica.tells if self.replica is not None else (lambda: True)
        self.alerts = await AlertEngine.open(db, self.config.alerts, self.dispatcher,
                                             self.metrics, acting=tells,
                                             sends=self.config.keeper.mode == "liquidate",
                                             explorers=AlertEngine.explorers_of(self.config),
                                             sources=AlertEngine.sources_of(self.config))
        self.alert_config_subscribers.append(self.alerts.configure)
        for name, rt in self.chains.items():
            rt.blocks.subscribe(functools.partial(self.alerts.on_block_event, chain=name))
            if rt.prices is not None:
                rt.prices.on_source_changed = functools.partial(self.alerts.on_source_changed,
                                                                chain=name)
        pending = sum(n for n, _ in (await self.dispatcher.outbox.stats()).values())
        log.info("alerts.started", routes=[r.name for r in self.config.alerts.routes],
                 watchlists=[w.name for w in self.config.alerts.watchlists],
                 outbox_pending=pending)

    async def _start_plugin(self, plugin: Plugin) -> None:
        """`plugin.start()`, asked again while it fails (every answer may lie, and the next
        may come from another endpoint); what fails every time is a StartupError that names
        the protocol, with the last error (a config's wrong address fails so, and says so)."""
        delay, waited = PLUGIN_START_FIRST_WAIT_S, 0.0
        for attempt in range(1, PLUGIN_START_TRIES + 1):
            try:
                await plugin.start()
                return
            except (asyncio.CancelledError, StartRefused):
                raise  # (a refusal is the plug-in's verdict, not a failed read)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:400]
                if attempt == PLUGIN_START_TRIES:
                    if isinstance(exc, FieldProblem):  # (the field, and its own fix)
                        raise StartupError(
                            f"protocol {plugin.name}: {exc.field}: {str(exc)[:400]} (its "
                            f"start asked {attempt} times over {waited:.0f} s)\n  fix: "
                            f"{exc.fix}") from None
                    raise StartupError(
                        f"protocol {plugin.name}: its start (reading its contracts) failed "
                        f"{attempt} times over {waited:.0f} s; the last error: "
                        f"{error}\n  fix: check the protocol's addresses in the config "
                        "(`keeperd check-config` checks them against the chains) and the RPC "
                        "endpoints (one may answer wrongly)") from None
                log.warning("protocol.start_failed", protocol=plugin.name, attempt=attempt,
                            error=error, retry_in_s=delay,
                            meaning="asked again: an endpoint's answer may have been wrong")
                await asyncio.sleep(delay)
                waited += delay
                delay *= 2

    async def _add_protocol(self, plugin: Plugin, rt: ChainRuntime, journal: Journal,
                            key: Signer | None, tx_managers: dict[str, TxManager],
                            stack: contextlib.AsyncExitStack, breaker: Breaker,
                            native_prices: dict[str, float],
                            scheduler: AsyncIOScheduler) -> None:
        """One protocol through the one pipeline: its scanner, and the scanner's listeners in
        order — its liquidation path: the chain's price watch (this block's prices judged
        first), the executor; its after-work, once no other protocol's liquidation path is
        running: the alerts, the cascade monitor (what-ifs after the block's liquidations
        and alerts)."""
        scanner = ProtocolScanner(plugin, self.metrics)
        scanner.order = self.order
        scanner.collector = self.collector
        scanner.listeners.append(self._price_listener(plugin, rt))
        assert rt.prices is not None
        rt.prices.expect(plugin.name)
        scanner.reading_hooks.append(rt.prices.prepare)  # (judged while the read is out)
        executor: Executor | None = None
        if self.config.keeper.mode != "alert-only":
            executor = await self._make_executor(plugin, rt, journal, key, tx_managers, stack,
                                                 breaker, native_prices)
            if executor is not None:
                scanner.listeners.append(executor.on_scan)
                scanner.holds.append(executor.liquidator.hold)
                self.executors[plugin.name] = executor
                stack.push_async_callback(executor.close)  # (its background traces)
        scanner.after_listeners.append(self._alert_listener(plugin, rt, breaker, executor,
                                                            scanner))
        if self.config.risk.cascade.enabled:
            cascade = CascadeMonitor(self.config.risk.cascade, rt.config.name, plugin.name,
                                     rt.pool, self.metrics, self.alerts, self.config.alerts,
                                     describe=plugin.describe,
                                     depth_of=plugin.cascade_depth,
                                     book_risk=plugin.book_risk,
                                     after_work=functools.partial(
                                         self.order.before_after_work, scanner.name),
                                     state_dir=self.config.state_dir)
            stack.push_async_callback(cascade.close)
            scanner.after_listeners.append(cascade.on_scan)
            self.alert_config_subscribers.append(cascade.configure_alerts)
            self.cascades[plugin.name] = cascade
        rt.blocks.subscribe(scanner.on_block_event)
        self.services.append(scanner)
        self.scanners[plugin.name] = scanner
        # max_instances=1 + coalesce: a slow job never stacks up behind itself.
        if plugin.full_rescan_interval_s:
            scheduler.add_job(scanner.request_full_rescan, "interval",
                              seconds=plugin.full_rescan_interval_s, max_instances=1,
                              coalesce=True, id=f"{plugin.name}:full-rescan")
        scheduler.add_job(_ends_quietly_at_stop(self._index_catch_up), "interval",
                          args=[rt, plugin],
                          seconds=plugin.index_interval_s, max_instances=1,
                          coalesce=True, id=f"{plugin.name}:index")

    async def _block_known(self, chain: str, block_hash: str) -> bool | None:
        rt = self.chains.get(chain)
        return None if rt is None else await block_known(rt.pool, block_hash)

    @staticmethod
    def _price_listener(plugin: Plugin, rt: ChainRuntime) -> Callable[[Any], Awaitable[None]]:
        """The protocol's feeds, as its book declares them, to the chain's watch."""
        assert rt.prices is not None
        prices = rt.prices

        async def on_scan(result: Any) -> None:
            await prices.judge(plugin.name, result.block, await plugin.price_feeds(result.book))
        return on_scan

    def _alert_listener(self, plugin: Plugin, rt: ChainRuntime, breaker: Breaker,
                        executor: Executor | None, scanner: ProtocolScanner
                        ) -> Callable[[Any], Awaitable[None]]:
        disputed: set[str] = set()  # (the watched accounts whose health is disputed now)

        async def on_scan(result: Any) -> None:
            if self.alerts is None or result.partial:
                return
            # (why, and since when: a trip's reason told as it stood when the feed was last
            # found wrong read as current while the breaker waited out clear_after_s)
            tripped = await breaker.distrust(rt.config.name)
            # (a failure here is the scanner's listener policy: logged, counted, the next
            # listener still runs)
            seen = await watched_liquidations(self.alerts, plugin, rt.pool, result.book,
                                              result.block)
            # (the watched rows read again on another endpoint: one alone hid a position
            # under water from its holder, a by-hand trial — after the block's
            # liquidations, in this listener)
            result = await second_reading(self.alerts, plugin, rt.pool, result, self.metrics,
                                          disputed)
            await self.alerts.on_scan(
                result, chain=rt.config.name, tripped=tripped, protocol=plugin.name,
                names=rt.prices.labels() if rt.prices is not None else None,
                # (as the scanner published them for this block, just before its after-
                # listeners: the plug-in's gate and the liquidator's own hold)
                held=scanner.hold_reason, verifying=scanner.verification_reason,
                shortfalls=executor.capital_shortfall if executor is not None else None,
                liquidations=seen, action=plugin.position_action,
                capital_fix=executor.capital_fix if executor is not None else None)
        return on_scan

    async def _alert_tick(self) -> None:
        if self.alerts is None:
            return
        balances: dict[str, float | None] = {}
        for executor in self.executors.values():
            if executor.native_balance is not None:
                balances[executor.adapter.chain] = executor.native_balance
        conflicts: dict[str, KeyHold | None] = {}
        pauses: dict[tuple[str, str], str | None] = {}
        for executor in self.executors.values():
            last = executor._last
            if executor.tx is not None and last is not None:
                conflicts[executor.adapter.chain] = (conflicts.get(executor.adapter.chain)
                                                     or executor.tx.key_alert(last.block))
                pauses[executor.labels] = (executor.send_pause(last.block)
                                           or executor.fee_hold(last.block)
                                           or executor.waves_hold(last.block)
                                           or executor.opinion_hold(last.block))
        try:
            await self.alerts.tick(
                rpc_healthy={n: rt.pool.healthy_count() for n, rt in self.chains.items()},
                rpc_failing_for={n: rt.pool.failing_for() for n, rt in self.chains.items()},
                index_lag={s.labels: self._index_lag(s) for s in self.scanners.values()},
                keeper_balance=balances, key_conflicts=conflicts, send_pauses=pauses,
                venues_failing={name: perp.failing for name, perp in self.perps.items()},
                venues_unread={name: perp.unread for name, perp in self.perps.items()},
                rpc_wrong_chain={(n, ep.name): ep.safe_url if ep.health.chain_ok is False
                                 else None
                                 for n, rt in self.chains.items() for ep in rt.pool.endpoints})
        except Exception as exc:
            # The first failure with its traceback, then one line a minute while it lasts
            # (a PostgreSQL outage logged a traceback every 5 s: a by-hand trial).
            now = time.monotonic()
            if self._tick_failing_since is None:
                self._tick_failing_since = self._tick_told_at = now
                log.exception("alerts.tick_failed", error=str(exc))
            elif now - self._tick_told_at >= 60:
                self._tick_told_at = now
                log.error("alerts.tick_failed", error=str(exc),
                          failing_s=round(now - self._tick_failing_since))
        else:
            if self._tick_failing_since is not None:
                log.info("alerts.tick_recovered",
                         after_s=round(time.monotonic() - self._tick_failing_since))
                self._tick_failing_since = None

    def _reload(self) -> None:
        """SIGHUP (systemctl reload): re-read the config file; apply alert routes, watchlists,
        rules and silences at once. Everything else needs a restart, and is named if changed.
        A config that does not load leaves the running one in place."""
        self._read_config_again("SIGHUP")

    def _read_config_again(self, why: str, *, only_if_changed: bool = False) -> None:
        """The reload of `why` (SIGHUP, or a promotion: `only_if_changed`, quiet when the
        file says what runs). What replicas share goes to the lease at its next renewal:
        a standby compares the leader's with its own within its check (30 s)."""
        if self.config_path is None or self.alerts is None or self.dispatcher is None:
            log.warning("daemon.reload_ignored", why=why,
                        reason="started without a config file")
            return
        try:
            new = load_config(self.config_path)
            # (against what the lease says was loaded, whose digests read the secret files
            # when it was: one rotated since reads the same on both sides now — a review)
            loaded = self.replica.lease.shared if self.replica is not None else None
            if only_if_changed and new.model_dump() == self.config.model_dump() and \
                    shared_config(new) == (loaded or shared_config(self.config)):
                return
            verdict = judge_reload(self._file_sections, self.config.alerts, new)
            if verdict.refused:
                log.error("daemon.reload_refused", why=why, problems=verdict.refused,
                          would_remove=verdict.removed,
                          action="the running configuration stays", fix=verdict.fix)
                return
            self.dispatcher.configure(new.alerts.routes)
        except (ConfigError, ValueError) as exc:
            log.error("daemon.reload_failed", why=why, error=str(exc),
                      action="the running configuration stays; fix the file and reload again")
            return
        if verdict.removed:
            log.warning("daemon.reload_removes", why=why, removed=verdict.removed,
                        meaning="their alerts stop: a removed watchlist's firing position "
                                "alerts are resolved as 'no longer watched'")
        self._file_sections = frozenset(new.model_fields_set)
        needs_restart = restart_sections(self.config, new)
        token_changed = "metrics" not in needs_restart and self._metrics_token_changed(new)
        # (before the alerts take the new watchlists: an account added with its market is
        # told as waiting for the restart, not as a typo)
        self._restart_needed(why, new, needs_restart + ["metrics"] * token_changed)
        for subscriber in self.alert_config_subscribers:
            subscriber(new.alerts)
        if token_changed:
            needs_restart.append("metrics (the bearer token file's content)")
        self.config = self.config.model_copy(update={"alerts": new.alerts})
        if self.replica is not None and self.replica.reconfigured(
                shared_config(self.config)) and why != "promotion":
            # (at a promotion the replicas it would tell are gone: the takeover's own check
            # says what differs from the last leader's)
            log.warning("replica.shared_config_reloaded", identity=self.replica.identity,
                        meaning="what replicas share changed here: a standby still on "
                                "the old config says replica.config_differs, and leads "
                                "with it at a failover",
                        fix="give every other replica this config and reload it")
        for issue in operator_route_warnings(new.alerts):  # (as at start)
            log.warning("alerts.operator_route_unset", problem=issue.message, fix=issue.fix)
        log.info("daemon.reloaded", why=why, reloaded=["alerts"],
                 routes=[r.name for r in new.alerts.routes],
                 watchlists=[w.name for w in new.alerts.watchlists],
                 needs_restart=needs_restart)

    def _restart_needed(self, why: str, new: Config, sections: list[str]) -> None:
        """What the reload read that only a restart applies (`restart_pending.py`): said at
        warning level with the fix, kept for `keeperd status` and the metrics until the
        restart (or a reload that puts the file back), and the protocols the file changed
        checked as check-config checks them, in a task of its own (the loop goes on)."""
        if self._restart_check is not None:
            self._restart_check.cancel()  # (a newer file: its own check)
            self._restart_check = None
        previous = self.restart_pending
        gauge = self.metrics.config_restart_pending
        for sample in [s for m in gauge.collect() for s in m.samples]:
            if sample.labels["section"] not in sections:
                gauge.remove(sample.labels["section"])
        if not sections:
            self.restart_pending = None
            self.metrics.config_restart_would_fail.set(0)
            if self.alerts is not None:
                self.alerts.waiting_for_restart({})
            if previous is not None:
                log.info("daemon.restart_no_longer_needed", why=why,
                         meaning="the file is back to what runs: nothing waits for a restart")
            return
        changes = protocol_changes(self.config, new)
        pending = RestartPending(sections, [f"{n}: {w}" for n, w in changes.items()], changes,
                                 since=previous.since if previous is not None else time.time())
        self.restart_pending = pending
        for section in sections:
            gauge.labels(section).set(1)
        self.metrics.config_restart_would_fail.set(0)
        if self.alerts is not None:
            self.alerts.waiting_for_restart(changes)
        self._register_url_secrets(new)  # (before anything of the new file is logged)
        checking = protocols_to_check(self.config, new)
        if checking:
            pending.check = "checking"
            self._restart_check = asyncio.get_running_loop().create_task(
                self._check_restart(new, checking, pending), name="reload:restart-check")
        log.warning("daemon.reload_needs_restart", why=why, sections=sections,
                    protocols=pending.changes or None,
                    meaning="read, not applied: keeperd runs on what it started with until "
                            "it is restarted" + ("; the changed protocols are being checked as "
                                                 "check-config checks them (next line)"
                                                 if checking else ""),
                    fix=RESTART_FIX)

    async def _check_restart(self, new: Config, indices: list[int],
                             pending: RestartPending) -> None:
        """The protocols a restart would start differently, started as check-config starts
        them: a mistyped market id passed the reload, and the next restart refused the whole
        keeper (a by-hand trial). An error when the restart would fail."""
        from keeperd.checks import restart_issues

        names = [new.protocols[i].name for i in indices]
        try:
            issues, started = await asyncio.wait_for(
                restart_issues(new, indices, self._keeper_address), RESTART_CHECK_S)
        except Exception as exc:  # (the check's own failure: the restart is not judged)
            if self.restart_pending is not pending:
                return
            pending.check = f"not checked: {type(exc).__name__}: {clip(str(exc), 200)}"
            log.warning("daemon.restart_unchecked", protocols=names, error=pending.check,
                        meaning="whether a restart would start them is not known",
                        fix="run `keeperd check-config` on the file before restarting")
            return
        if self.restart_pending is not pending:
            return  # (a newer reload's)
        if issues:
            pending.check = "would fail"
            pending.problems = [clip(f"{i.path}: {i.message}" + (f" (fix: {i.fix})" if i.fix
                                                                   else ""), 600)
                                for i in issues]  # (one line each: `keeperd status` shows them)
            self.metrics.config_restart_would_fail.set(1)
            log.error("daemon.restart_would_fail", protocols=names,
                      problems=pending.problems,
                      meaning="keeperd run would refuse to start on this file: the next "
                              "restart (a deploy, a reboot, systemd's) takes every protocol "
                              "down; the running keeper goes on with what it started with",
                      fix="correct the file (`keeperd check-config` says the same) and "
                          "reload; restart only once this says it would start")
            return
        pending.check = "ok"
        log.info("daemon.restart_checked", protocols=names, started=started,
                 meaning="a restart would start them (as check-config checks them)",
                 fix=RESTART_FIX)

    async def _run_tasks(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self._heartbeat_loop(), name="heartbeat")]
            for name, rt in self.chains.items():
                tasks.append(tg.create_task(rt.blocks.run(), name=f"{name}:blocks"))
                tasks.append(tg.create_task(self._probe_loop(rt), name=f"{name}:probe"))
            for service in self.services:
                tasks.append(tg.create_task(service.run(), name=service.name))
            tasks.append(tg.create_task(self._status_loop(), name="status"))
            delivery = None
            if self.dispatcher is not None:
                delivery = tg.create_task(self.dispatcher.run(), name="alerts:delivery")
            await stop.wait()
            log.info("daemon.stopping", tasks=len(tasks))
            self.notifier.stopping()
            await self._drain()
            if delivery is not None and self.dispatcher is not None:
                # Stop the delivery loops first, so the flush is the only sender.
                delivery.cancel()
                await asyncio.gather(delivery, return_exceptions=True)
                await self.dispatcher.flush(self.config.alerts.outbox.flush_on_stop_s)
            for t in tasks:
                t.cancel()
            if self._restart_check is not None:
                self._restart_check.cancel()

    async def _drain(self, limit_s: float = 5.0) -> None:
        """Stop taking new work; let a running evaluation (and the liquidations it is
        journaling and broadcasting) reach its end, within the stop budget."""
        for service in self.services:
            service.drain()
        # The replica last: its lease is handed over once this replica's work is done.
        waits = [s.drained() for s in self.services if s is not self.replica]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), limit_s)
        except TimeoutError:
            log.warning("daemon.drain_timeout", seconds=limit_s,
                        note="in-flight work is journaled and resumes at the next start")
        if self.replica is not None:
            await self.replica.drained()

    async def _status_loop(self) -> None:
        """Watchdog pings while alive; STATUS for systemctl; status.json for `keeperd status`."""
        interval = min(self.notifier.watchdog_interval or 5.0, 5.0)
        path = self.config.state_dir / "status.json"
        while True:
            if self._alive():
                self.notifier.watchdog()
            await self._alert_tick()
            line = self._status_line()
            self.notifier.status(line)
            ready, detail = self.readiness()
            try:
                write_status(path, {"pid": os.getpid(), "updated_at": time.time(),
                                    "mode": self.config.keeper.mode, "ready": ready,
                                    "alive": self._alive(), "status": line, "detail": detail,
                                    "restart_pending": self.restart_pending.as_status()
                                    if self.restart_pending is not None else None})
            except OSError as exc:
                self._state_write_failed("status", exc)
            else:
                self.state_error = None
            await asyncio.sleep(interval)

    def _state_write_failed(self, what: str, exc: OSError) -> None:
        """The state directory refuses writes (a full disk, a read-only remount): said through
        what still works — the log, the metric Prometheus scrapes from memory (and its alert
        rule), /readyz — while keeperd goes on: the journal's writes fail before anything is
        sent, alerts wait in memory, and all of it resumes when space comes back."""
        first = self.state_error is None
        self.state_error = f"{type(exc).__name__}: {exc}"
        self.metrics.state_write_errors.labels(what).inc()
        if first:
            log.error("state.write_failed", what=what, error=self.state_error,
                      state_dir=str(self.config.state_dir),
                      action="free space in the state directory (or remount it read-write)")

    async def _check_chain(self, chain: ChainConfig, pool: RpcPool, stop: asyncio.Event
                           ) -> bool:
        """At least one endpoint answering on the configured chain. While none answers
        keeperd waits for one (asked again with backoff, each wait logged, systemd's start
        timeout extended): a provider down at boot must not turn into a restart loop whose
        log says the opposite. An endpoint of another network is never used (the pool's
        `chain_ok`), said at error level and in `keeperd_rpc_endpoint_up` (the shipped rule
        `KeeperdRpcEndpointDown`, the `rpc_wrong_chain` alert); the start is refused when
        the first endpoint (listed best) or every endpoint answers for another network — a
        wrong chain_id is the likelier mistake then, and a stray URL that happens to match it
        must not be what keeperd runs on — but a backup URL gone wrong must not stop a keeper
        its primary serves: it did, and under systemd restart-looped. False when a stop came
        meanwhile."""
        index = self.config.chains.index(chain)
        attempt = 0
        while True:
            checks = await check_chain_ids(pool, chain.chain_id)
            wrong = [c for c in checks if c.status == "wrong_chain"]
            lines = [f"chains[{index}].rpc_urls[{c.index}]: {c.safe_url} {c.detail}"
                     for c in wrong]
            if wrong and (len(wrong) == len(checks) or wrong[0].index == 0):
                which = ("every RPC endpoint belongs" if len(wrong) == len(checks)
                         else "the first RPC endpoint (listed best) belongs")
                raise StartupError(
                    f"refusing to start: {which} to another network\n  "
                    + "\n  ".join(lines)
                    + "\n  fix: point the URLs at the right network, or correct the chain_id")
            if any(c.status == "ok" for c in checks):
                self._starting = "starting"
                for c in wrong:
                    log.error("rpc.endpoint_wrong_chain", chain=chain.name, endpoint=c.index,
                              url=c.safe_url, detail=c.detail,
                              field=f"chains[{index}].rpc_urls[{c.index}]",
                              action="never used; point the URL at the right network "
                                     "(keeperd runs on the other endpoints, without the "
                                     "redundancy configured)")
                break
            attempt += 1
            wait = min(2.0 ** (attempt - 1), START_WAIT_MAX_S)
            log.error("rpc.no_endpoint_answers", chain=chain.name, attempt=attempt,
                      next_try_s=wait, endpoints=[f"{c.safe_url}: {c.detail}" for c in checks],
                      action=f"keeperd waits until an endpoint of chains[{index}].rpc_urls "
                             "answers (nothing is evaluated meanwhile); check the provider, "
                             "the URL and the network")
            tried = "; ".join(f"{c.safe_url}: {c.detail}" for c in checks)
            self._starting = (f"waiting for an RPC endpoint of {chain.name} (attempt "
                              f"{attempt}): {tried}")
            self.notifier.status(f"waiting for an RPC endpoint of {chain.name} "
                                 f"(attempt {attempt})")
            self.notifier.send(f"EXTEND_TIMEOUT_USEC={int((wait + 30) * 1e6)}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
                return False
        for c in checks:
            if c.status == "unreachable":
                log.warning("rpc.endpoint_unreachable_at_start", chain=chain.name,
                            endpoint=c.index, url=c.safe_url, detail=c.detail,
                            action="kept in the pool; it is retried and used once it answers")
        return True

    def _block_logger(self, rt: ChainRuntime) -> Callable[[BlockEvent], Awaitable[None]]:
        async def on_event(event: BlockEvent) -> None:
            if isinstance(event, NewBlock):
                rt.last_block_at = time.monotonic()
                log.info("chain.block", chain=rt.config.name, number=event.header.number,
                         hash=event.header.hash)
            elif isinstance(event, Reorg):
                log.warning("chain.reorg", chain=rt.config.name, depth=event.depth,
                            ancestor=event.ancestor.number)
        return on_event

    @staticmethod
    def _reorg_listener(rt: ChainRuntime, executor: Executor
                        ) -> Callable[[BlockEvent], Awaitable[None]]:
        """A reorg may take away a block holding one of our liquidations: the executor
        checks and hands such a liquidation back to the transaction manager."""
        async def on_event(event: BlockEvent) -> None:
            if not isinstance(event, Reorg):
                return
            head = rt.blocks.head.number if rt.blocks.head else event.ancestor.number
            try:
                await executor.on_reorg(event.ancestor.number, head,
                                        past_window=event.past_window)
            except Exception as exc:  # the block source goes on; the next reorg checks again
                log.exception("liquidation.reorg_check_failed", protocol=executor.adapter.name,
                              error=f"{type(exc).__name__}: {exc}")
        return on_event

    def _metrics_token_changed(self, new: Config) -> bool:
        """A token file rewritten in place changes no config field; the server keeps the
        token it started with until a restart, which the reload must say."""
        try:
            return read_bearer_token(new.metrics) != self._metrics_token
        except SecretError:
            return True

    def _web_server(self) -> WebServer:
        served = self.config.metrics
        try:
            token = read_bearer_token(served)
        except SecretError as exc:
            raise StartupError(f"{exc.field}: {exc}; fix: {exc.fix}") from None
        self._metrics_token = token
        if token is not None:
            self.redactor.add(token)
        elif not is_loopback(served.listen):
            log.warning("web.metrics_without_token", listen=served.listen,
                        fix="set metrics.bearer_token (a ${ENV} reference) or "
                        "metrics.bearer_token_file: /metrics is readable by anyone who "
                        "reaches the port")
        return WebServer(make_app(self.metrics, self.liveness, self.readiness, token),
                         served.listen, served.port, self.metrics,
                         header_timeout_s=served.header_timeout_s,
                         max_connections=served.max_connections)

    async def _open_signer(self, stack: contextlib.AsyncExitStack) -> Signer | None:
        """The keeper's signer: its key loaded into this process — made undumpable first,
        an env-sourced key then dropped from the environment — or a remote signer, checked
        to answer and to hold the keeper's account."""
        source = self.config.keeper.key
        if source is None or self.config.keeper.mode == "alert-only":
            return None  # alert-only never signs: do not even read the key
        if isinstance(source, RemoteSignerKey):
            remote = RemoteSigner(source.url, source.address, timeout_s=source.timeout_s)
            await stack.enter_async_context(remote)
            try:
                await remote.check()
            except SignerError as exc:
                raise StartupError(f"keeper.key: {exc}; check keeper.key.url and "
                                   "keeper.key.address") from None
            log.info("keeper.remote_signer", address=remote.address, signer=remote.safe_url)
            return remote
        try:
            forbid_core_dumps()  # before the key is in memory
        except OSError as exc:
            raise StartupError(f"keeper.key: cannot forbid core dumps of the process that "
                               f"will hold the key ({exc}); keeperd will not load it") from None
        try:
            key = load_key(source)
        except KeyLoadError as exc:
            raise StartupError(f"keeper.key: {exc}") from None
        if isinstance(source, KeystoreKey):  # its password too (load_key keeps it to itself)
            self.redactor.add(source.password_file.read_text().rstrip("\n"))
        self.redactor.add(key.secret_hex())
        if isinstance(source, EnvKey) and self.owns_process:
            # Not inherited by anything keeperd starts, nor left in /proc/<pid>/environ.
            drop_from_environment(source.env)
        log.info("keeper.key_loaded", address=key.address, source=source.source)
        return key

    async def _make_executor(self, plugin: Plugin, rt: ChainRuntime, journal: Journal,
                             key: Signer | None, tx_managers: dict[str, TxManager],
                             stack: contextlib.AsyncExitStack, breaker: Breaker,
                             native_prices: dict[str, float]) -> Executor | None:
        keeper = self.config.keeper
        tx = await self._tx_manager(rt, key, tx_managers, stack, journal)
        if tx is not None:
            tx.protocols.add(plugin.name)  # (the key's journaled nonces on this chain are theirs)
        address = key.address if key is not None else keeper.address
        liquidator = plugin.liquidator(keeper, address, tx)
        if liquidator is None:
            return None  # a protocol keeperd only watches
        liquidator.keep_deposits_in(journal)  # (before prepare: its deposits are there)
        if tx is not None:  # (before prepare: approvals are signed there)
            tx.signing_policy.allow(*liquidator.signing_rules())
        chain = rt.config
        op_stack = l1_fee.charges_l1_fee(chain.chain_id, chain.l1_data_fee)
        unpriced = l1_fee.unpriced_reason(chain.chain_id, chain.l1_data_fee)
        if unpriced is not None:
            log.warning("liquidation.l1_data_fee_unpriced", protocol=plugin.name,
                        chain=chain.name, reason=unpriced,
                        action=f"remove chains[].l1_data_fee of {chain.name} (auto prices it)")
        if op_stack:
            log.info("liquidation.l1_data_fee_priced", protocol=plugin.name, chain=chain.name,
                     oracle=l1_fee.GAS_PRICE_ORACLE, meaning="each liquidation's L1 data fee "
                     "(and operator fee) is asked of the chain's GasPriceOracle with its "
                     "simulation and comes off its profit; unread, it is not sent")
        executor = Executor(keeper, plugin, liquidator, rt.pool, journal, self.metrics, tx,
                            address, rt.prices, native_prices,
                            op_stack_chain_id=chain.chain_id if op_stack else None)
        if self.alerts is not None:
            executor.events = self.alerts.on_liquidation
            executor.events_flush = self.alerts.commit
            self.alerts.mark_told = executor.journal.mark_told
        rt.blocks.subscribe(self._reorg_listener(rt, executor))
        if self.replica is not None:
            # A replica acts only while it leads; it reconciles when it is promoted.
            executor.acting = self.replica.is_leader
            executor.on_fenced = self.replica.demote
            return executor  # (reconciled and prepared when promoted)
        # Its journal resumed at once (what it signed goes out while the other protocols
        # start); its approvals once every protocol's is (`_prepare_executors`).
        await executor.reconcile(await confirmed_head(rt.pool))
        return executor

    async def _tx_manager(self, rt: ChainRuntime, key: Signer | None,
                          tx_managers: dict[str, TxManager], stack: contextlib.AsyncExitStack,
                          journal: Journal) -> TxManager | None:
        """One transaction manager per chain (one nonce sequence per key), shared by every
        protocol's executor on it."""
        keeper = self.config.keeper
        if key is None or keeper.mode != "liquidate":
            return None
        tx = tx_managers.get(rt.config.name)
        if tx is None:
            private = None
            if keeper.private_rpc_url:
                private = RpcPool.from_urls(f"{rt.config.name}-private",
                                            [keeper.private_rpc_url], metrics=self.metrics)
                await stack.enter_async_context(private)
            policy = FeePolicy.from_config(keeper)
            tx = TxManager(rt.pool, key, rt.config.chain_id, metrics=self.metrics,
                           policy=policy, private_pool=private,
                           record=lambda r: _journal_tx(journal, r),
                           record_many=journal.record_txs,
                           allowed_delegates=frozenset(keeper.allowed_delegates))
            tx_managers[rt.config.name] = tx
        return tx

    async def _index_catch_up(self, rt: ChainRuntime, adapter: Plugin) -> None:
        """Catch the index up even when no block arrives (a stalled head, a missed event)."""
        head = rt.pool.best_head
        if head is None:
            return
        try:
            await adapter.discover(head)
        except Exception as exc:
            log.warning("index.catch_up_failed", protocol=adapter.name, error=str(exc))

    async def _probe_loop(self, rt: ChainRuntime) -> None:
        while True:
            await rt.pool.probe()
            await asyncio.sleep(rt.config.poll_interval)

    async def _heartbeat_loop(self) -> None:
        while True:
            self._heartbeat = time.monotonic()
            await asyncio.sleep(1.0)


async def _journal_tx(journal: Journal, record: TxRecord) -> None:
    """The tx manager's write-ahead: every signed liquidation transaction; approvals and
    deposits are not opportunities and are not journaled, but each is fenced alike (with
    replicas, only the lease's holder signs anything)."""
    if isinstance(record.key, UpkeepKey):
        await journal.fence()
    else:
        await journal.record_tx(record)
