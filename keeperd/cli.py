"""The `keeperd` command line.

    keeperd run --config PATH            the daemon
    keeperd scan --config PATH [--once] [--json]   accounts by health, riskiest first
    keeperd status --config PATH         what the daemon is doing, from its state directory
    keeperd check-config PATH            validate a config, then check it against the chains
    keeperd breaker trip|reset|list      pause or resume liquidations on an asset by hand
    keeperd simulate --config PATH --shock WETH=-30%   the cascade of a shock, and a chart
    keeperd silence add|list|expire      mute matching alerts for a while
    keeperd alerts list|retry|test|route firing alerts and the outbox; requeue dead; test a
                                         route; which route and silences an alert would meet
    keeperd alerts outbox list|drop|reroute  what waits for each sink; drop or re-route what
                                         waits for a sink removed from the config
    keeperd storage migrate|copy|leases  the state database; a single machine's journal to
                                         PostgreSQL; who holds the replicas' lease
    keeperd config-schema                the config's JSON Schema (for editors)
    keeperd devnet up|down|set-price|l1-fee|mine|fund  the local chain for demos and tests
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from keeperd.chain.rpc import RpcUnavailable
from keeperd.config import (
    Config,
    ConfigError,
    config_json_schema,
    load_config,
    mistyped_variables,
    parse_config,
    read_config_tree,
    referenced_variables,
)
from keeperd.logs import configure_logging

if TYPE_CHECKING:
    from keeperd.devnet.handle import DevnetControl
    from keeperd.storage.db import Database

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


class UsageError(Exception):
    """An argument that would do nothing or fail later: said in one line with the choices
    (exit 2, as argparse's own)."""


class CommandFailed(Exception):
    """The command could not do its work; the message says what to do (exit 1)."""


def _choose(option: str, value: str, choices: list[str], kind: str) -> str:
    """`value` if it is one of `choices`, else a UsageError naming them (and the near miss:
    `weth` -> WETH)."""
    from keeperd.alerts.catalog import suggest

    if value in choices:
        return value
    raise UsageError(f"{option} {value!r}: no such {kind}{suggest(value, choices)}; "
                     f"choose from {', '.join(choices) or '(none configured)'}")


def _cmd_run(args: argparse.Namespace) -> int:
    from keeperd.daemon import Daemon, StartupError
    from keeperd.web import ListenError

    tree = read_config_tree(args.config)
    config = parse_config(tree, str(args.config))
    # The daemon adds the key and the sinks' secrets to this redactor: it must be the one
    # the log pipeline runs.
    redactor = configure_logging(config.logging.level, config.logging.format)
    log = structlog.get_logger("keeperd")
    for issue in mistyped_variables(tree):
        log.warning("config.variable_unread", problem=issue.message, fix=issue.fix)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if args.duration:
            loop.call_later(args.duration, stop.set)
        await Daemon(config, redactor=redactor, config_path=Path(args.config),
                     owns_process=True).run(stop)

    from keeperd.protocols.sdk.contract import StartRefused

    try:
        asyncio.run(main())
    except (StartupError, StartRefused) as exc:
        log.error("daemon.startup_refused", reason=str(exc))
        print(f"keeperd: {redactor.scrub(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    except ListenError as exc:  # (a failure a restart may mend: the port's holder may go)
        log.error("daemon.startup_failed", reason=str(exc))
        port = (tree.get("metrics") or {}).get("port") if isinstance(tree, dict) else None
        names = sorted(referenced_variables(port))
        # ("set metrics.port" of a config that reads it from a variable: name the variable)
        via = (f" (this config reads metrics.port from {', '.join(names)}: "
               f"export {names[0]}=<a free port>)" if names else "")
        print(f"keeperd: {redactor.scrub(str(exc))}{via}", file=sys.stderr)
        return EXIT_FAILURE
    # Anything else escapes to sys.excepthook, which configure_logging has made log it
    # (so redacted): the final traceback holds no secret the daemon registered.
    return EXIT_OK


def _cmd_check_config(args: argparse.Namespace) -> int:
    from keeperd.checks import check_config

    configure_logging("warning", "console")
    if (args.path is None) == (args.config_path is None):
        print("keeperd check-config: give the config file once, as PATH or --config PATH",
              file=sys.stderr)
        return EXIT_CONFIG
    path = args.path or args.config_path
    checked: list[str] = []
    config = check_config(Path(path), online=not args.offline, checked=checked)
    where = "offline" if args.offline else "against the chains"
    print(f"{path}: OK ({len(config.chains)} chain(s), {len(config.protocols)} "
          f"protocol(s), mode {config.keeper.mode}; checked {where})")
    for line in checked:
        print(f"  {line}")
    return EXIT_OK


def _note_fresh_state(config: Config, command: str) -> None:
    """A relative state_dir that does not exist here: the command builds a fresh index in
    this directory (minutes of reading from start_block), which it did without a word when
    run from another directory than the daemon's (a by-hand trial)."""
    state = config.state_dir
    if not state.is_absolute() and not state.exists():
        print(f"keeperd {command}: state_dir {state} is relative and there is none in "
              f"{Path.cwd()}: a fresh account index is built there (run from the directory "
              "keeperd runs in, or set KEEPERD_STATE_DIR, to use its index)", file=sys.stderr)


def _cmd_scan(args: argparse.Namespace) -> int:
    import time

    from keeperd import scan

    config = load_config(args.config)
    _note_fresh_state(config, "scan")
    names = [p.name for p in config.chain_protocols] + [v.name for v in config.perp_venues]
    for name in args.protocol or ():
        _choose("--protocol", name, names, "configured protocol or venue")
    configure_logging("warning", "console" if not args.json else "json")
    while True:
        rows = asyncio.run(scan.scan_once(config, protocols=args.protocol))
        if args.json:
            print(scan.to_json(rows), flush=True)
        else:
            print(scan.to_table(rows, limit=args.limit or None))
            s = scan.summary_line(rows)
            print(f"\n{s['accounts']} accounts, {s['with_debt']} with debt, "
                  f"{s['liquidatable']} liquidatable", flush=True)
        if args.once:
            return EXIT_OK
        time.sleep(args.interval)


def _cmd_status(args: argparse.Namespace) -> int:
    from keeperd import status

    info = status.collect(*status.status_config(args.config))
    print(json.dumps(info, indent=1) if args.json else status.render(info))
    return EXIT_OK


def _cmd_breaker(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    configure_logging("warning", "console")
    return _on_state_database(_breaker, args, config)


async def _breaker(args: argparse.Namespace, config: Config) -> int:
    from keeperd.oracles.breaker import EVERY_CHAIN, Breaker

    chains = [c.name for c in config.chains]
    if args.chain is not None and args.chain not in chains:
        from keeperd.alerts.catalog import suggest

        raise UsageError(f"--chain {args.chain!r} is not a configured chain"
                         f"{suggest(args.chain, chains)}; chains: {', '.join(chains) or 'none'}")
    db = await _state_database(config)
    try:
        breaker = Breaker(db, config.oracles.clear_after_s)
        if args.action != "list":
            await _check_breaker_asset(config, args.asset,
                                       {asset for _, asset in await breaker.states()})
        where = args.chain or "every chain"
        if args.action == "trip":
            await breaker.trip(args.asset, f"manual: {args.reason}",
                               chain=args.chain or EVERY_CHAIN, manual=True)
            print(f"{args.asset} on {where}: tripped by hand; liquidations depending on it pause "
                  "at the daemon's next block and stay paused (restarts included) until "
                  f"`keeperd breaker reset {args.asset}`")
        elif args.action == "reset":
            # (where it was tripped, not "every chain" for a trip on one: a trial)
            tripped = sorted("every chain" if c == EVERY_CHAIN else c
                             for (c, a), st in (await breaker.states()).items()
                             if a == args.asset and st.tripped
                             and (args.chain is None or c == args.chain))
            cleared = await breaker.reset(args.asset, args.chain)
            if cleared:
                print(f"{args.asset} on {', '.join(tripped) or where}: reset ({cleared} "
                      "trip(s) cleared); "
                      "liquidations resume at the daemon's next block (an automatic trip "
                      "comes back if the feed is still bad)")
            else:
                print(f"{args.asset} on {where}: nothing was tripped")
        else:
            for gone in await breaker.forget_gone(_block_known_on(config)):
                print(f"{gone.asset}: its automatic trip ({gone.reason}) was observed on a "
                      f"chain that is gone ({gone.chain} no longer has that block: a devnet "
                      "started again, or a reorg): forgotten")
            states = await breaker.states()
            if not states:
                print("no breaker has ever tripped")
            # (as wide as the longest asset: a Morpho market's `morpho:<id>` is 73
            # characters, and pushed the other columns out of line)
            width = max([8, *(len(s.asset) for s in states.values())])
            if states:
                print(f"{'ASSET':{width}} {'CHAIN':12} {'STATE':18} REASON  "
                      "(chain *: every chain)")
            for s in sorted(states.values(), key=lambda s: (s.asset, s.chain)):
                what = ("TRIPPED" + (" (manual)" if s.manual else "")) if s.tripped else "ok"
                # (its feed fresh again, the breaker clears after clear_after_s of chain
                # time: `list` said TRIPPED and nothing of it — a trial)
                clearing = (f"; clear since {time.strftime('%H:%M:%S', time.gmtime(s.clear_since))}"
                            f" UTC chain time, resets once clear for "
                            f"{config.oracles.clear_after_s:g} s"
                            if s.tripped and not s.manual and s.clear_since is not None else "")
                print(f"{s.asset:{width}} {s.chain:12} {what:18} {s.reason or ''}{clearing}")
    finally:
        await db.close()
    return EXIT_OK


def _block_known_on(config: Config) -> Callable[[str, str], Coroutine[Any, Any, bool | None]]:
    """Whether a configured chain still has a block (None: not configured, or no answer)."""
    from keeperd.chain.connect import make_pool
    from keeperd.metrics import Metrics
    from keeperd.oracles.breaker import block_known

    chains = {c.name: c for c in config.chains}

    async def known(chain: str, block_hash: str) -> bool | None:
        if chain not in chains:
            return None
        async with make_pool(chains[chain], Metrics()) as pool:
            return await block_known(pool, block_hash)

    return known


async def _check_breaker_asset(config: Config, asset: str, known: set[str]) -> None:
    """The breaker pauses liquidations by the symbols the protocols price (`WETH`, not `weth`):
    any other name would be written, reported as tripped and pause nothing. The symbols are
    read from the chain; a chain that does not answer, or a config that names no on-chain
    protocol (a minimal one for the command line), leaves the name unchecked, with a warning
    (a trip is what an operator may need most while the chain is troubled)."""
    from keeperd.alerts.catalog import suggest
    from keeperd.simulate import protocol_assets

    unchecked = f"keeperd breaker: warning: {asset} not checked against the assets of the "
    if not config.chain_protocols:
        print(unchecked + "protocols: the config names none", file=sys.stderr)
        return
    try:
        assets = await protocol_assets(config)
    except RpcUnavailable as exc:
        print(unchecked + f"configured protocols: the chain did not answer ({exc})",
              file=sys.stderr)
        return
    choices = sorted({a for names in assets.values() for a in names} | known)
    if asset not in choices:
        raise UsageError(f"no configured protocol prices {asset!r}{suggest(asset, choices)}; "
                         f"the assets of {', '.join(assets) or '(no on-chain protocol)'}: "
                         f"{', '.join(choices) or 'none'}")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """'90s', '30m', '2h', '1d12h', '1w' -> seconds."""
    parts = _DURATION.findall(text.strip())
    if not parts or "".join(a + b for a, b in parts) != text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 30m, 2h, 1d12h)")
    seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration must be longer than 0")
    return seconds


async def _state_database(config: Config) -> Database:
    """The configured state database (the SQLite file, or PostgreSQL with storage.url), its
    schema up to date."""
    from keeperd.storage.admin import open_configured
    from keeperd.storage.migrations import migrate

    db = await open_configured(config)
    await migrate(db)
    return db


def _on_state_database(command: Callable[[argparse.Namespace, Config], Coroutine[Any, Any, int]],
                       args: argparse.Namespace, config: Config) -> int:
    """Run a command against the state database; one it cannot reach is named, not a
    traceback."""
    from keeperd.storage.admin import StorageError
    from keeperd.storage.migrations import SchemaAhead

    try:
        return asyncio.run(command(args, config))
    except (StorageError, SchemaAhead) as exc:  # (a newer keeperd's database: said)
        print(f"keeperd: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _cmd_silence(args: argparse.Namespace) -> int:
    return _on_state_database(_silence, args, load_config(args.config))


async def _silence(args: argparse.Namespace, config: Config) -> int:
    from keeperd.alerts.silences import Silences

    db = await _state_database(config)
    try:
        silences = Silences(db, ((s.matchers, s.comment) for s in config.alerts.silences))
        if args.action == "add":
            if not args.match:
                print("keeperd: silence add needs at least one --match label=value "
                      "(e.g. --match account=0xabc... --match rule=position_health)",
                      file=sys.stderr)
                return EXIT_FAILURE
            try:
                sid = await silences.add(args.match, args.duration, args.comment,
                                         created_by=os.environ.get("USER", "cli"))
            except ValueError as exc:
                print(f"keeperd: {exc}", file=sys.stderr)
                return EXIT_FAILURE
            print(f"silence {sid} added for {args.duration:g} s: {' '.join(args.match)} "
                  "(the daemon applies it within seconds)")
        elif args.action == "expire":
            if args.id is None:
                print("keeperd: silence expire needs the silence's ID (see `silence list`)",
                      file=sys.stderr)
                return EXIT_FAILURE
            if not await silences.expire(args.id):
                print(f"keeperd: no active silence {args.id}", file=sys.stderr)
                return EXIT_FAILURE
            print(f"silence {args.id} expired")
        else:
            active = await silences.refresh()
            if not active:
                print("no active silences")
            now = time.time()
            for si in active:
                print(si.describe(now))
    finally:
        await db.close()
    return EXIT_OK


def _cmd_alerts(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.action not in ("route", "outbox") and args.args:
        raise UsageError(f"alerts {args.action} takes no RULE or labels (only `alerts route` "
                         f"does): {' '.join(args.args)}")
    if args.action != "outbox" and args.to is not None:
        raise UsageError("--to belongs to `alerts outbox reroute`")
    if args.action == "test":
        return _alerts_test(config, args.route)
    if args.action == "route":
        return _on_state_database(_alerts_route, args, config)
    if args.action == "outbox":
        _check_outbox_args(args)
        return _on_state_database(_alerts_outbox, args, config)
    return _on_state_database(_alerts, args, config)


OUTBOX_ACTIONS = ("list", "drop", "reroute")


def _check_outbox_args(args: argparse.Namespace) -> None:
    """`alerts outbox list`, `drop ROUTE/SINK`, `reroute ROUTE/SINK --to ROUTE/SINK`: the
    words, before the database is opened."""
    from keeperd.alerts.orphans import OutboxCommandError, SinkRef

    action, *rest = args.args or ["list"]
    _choose("alerts outbox", action, list(OUTBOX_ACTIONS), "action")
    wanted = 0 if action == "list" else 1
    if len(rest) != wanted:
        raise UsageError({"list": "alerts outbox list takes nothing more",
                          "drop": "alerts outbox drop takes one ROUTE/SINK_ID",
                          "reroute": "alerts outbox reroute takes one ROUTE/SINK_ID, and "
                                     "--to ROUTE/SINK_ID"}[action])
    if (action == "reroute") != (args.to is not None):
        raise UsageError("--to ROUTE/SINK_ID is where `alerts outbox reroute` sends them "
                         "(and only reroute takes it)")
    try:
        args.outbox_action = action
        args.outbox_from = SinkRef.parse(rest[0], "alerts outbox " + action) if rest else None
        args.outbox_to = SinkRef.parse(args.to, "--to") if args.to is not None else None
    except OutboxCommandError as exc:
        raise UsageError(str(exc)) from None


async def _alerts_outbox(args: argparse.Namespace, config: Config) -> int:
    from keeperd.alerts import orphans
    from keeperd.alerts.outbox import Outbox

    db = await _state_database(config)
    try:
        outbox = Outbox(db)
        try:
            if args.outbox_action == "drop":
                n = await orphans.drop(outbox, config.alerts, args.outbox_from)
                print(f"{n} notification(s) waiting for {args.outbox_from} dropped")
            elif args.outbox_action == "reroute":
                n = await orphans.reroute(outbox, config.alerts, args.outbox_from,
                                          args.outbox_to)
                print(f"{n} notification(s) waiting for {args.outbox_from} re-routed to "
                      f"{args.outbox_to}; the daemon delivers them")
            else:
                print(orphans.render(await orphans.waiting(outbox, config.alerts)))
        except orphans.OutboxCommandError as exc:
            raise CommandFailed(str(exc)) from None
    finally:
        await db.close()
    return EXIT_OK


async def _alerts_route(args: argparse.Namespace, config: Config) -> int:
    """Which route an alert of RULE with these labels takes, its sinks, and the active
    silences (config and `silence add`) that would mute it."""
    from keeperd.alerts import routing
    from keeperd.alerts.catalog import RULES
    from keeperd.alerts.silences import Silences

    if not args.args:
        raise UsageError("alerts route needs a RULE (then label=value ...), one of "
                         + ", ".join(RULES))
    try:
        labels = routing.parse_labels(args.args[1:])
        routing.resolve(config.alerts, args.args[0], labels)  # (the names, before any I/O)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    db = await _state_database(config)
    try:
        silences = Silences(db, ((s.matchers, s.comment) for s in config.alerts.silences))
        now = time.time()
        await silences.refresh(now)
        print(routing.render(args.args[0], routing.route(config.alerts, silences, args.args[0],
                                                         labels, now), now))
    finally:
        await db.close()
    return EXIT_OK


async def _alerts(args: argparse.Namespace, config: Config) -> int:
    from keeperd.alerts.outbox import Outbox
    from keeperd.alerts.state import AlertState

    db = await _state_database(config)
    try:
        outbox = Outbox(db)
        if args.action == "retry":
            n = await outbox.requeue_dead()
            print(f"{n} dead-lettered notification(s) requeued; the daemon delivers them")
            # A sink whose URL or chat id was fixed has another derived id: what waits for the
            # old one is never sent there (a trial's Telegram fix, then "NOT CONFIGURED").
            configured = {(r.name, sink.sink_id) for r in config.alerts.routes
                          for sink in r.sinks}
            for (route, sink), (waiting, _) in sorted((await outbox.stats()).items()):
                if (route, sink) not in configured:
                    ids = [f"{route}/{x.sink_id}" for r in config.alerts.routes
                           if r.name == route for x in r.sinks]
                    print(f"warning: {waiting} of them wait for {route}/{sink}, a sink no longer "
                          "in the config (a changed URL or chat id changes a derived id): "
                          f"`keeperd alerts outbox reroute {route}/{sink} --to "
                          f"{ids[0] if ids else 'ROUTE/SINK_ID'}` sends them there, or give the "
                          "sink `id:` to keep its id across such changes", file=sys.stderr)
            return EXIT_OK
        firing = (await AlertState(db).load()).firing_now()
        print(f"firing: {len(firing)} (each as last told)")
        for a, now in firing:
            quiet = (f" (now {now}: recovered from {a['severity']} without a message)"
                     if now != a["severity"] else "")
            print(f"  {now:8} {a['rule']:18} {a['summary']}{quiet}")
        stats = await outbox.stats()
        print(f"outbox: {sum(n for n, _ in stats.values())} pending, "
              f"{await outbox.dead_count()} dead")
        for (route, sink), (n, age) in sorted(stats.items()):
            print(f"  {route}/{sink}: {n} pending, oldest {age:,.0f} s")
        for e in await outbox.entries(limit=args.limit):
            print(f"  #{e.id:<5} {e.state:9} {e.route}/{e.sink}:{e.sink_kind:12} "
                  f"{e.alerts[0]['rule']} x{len(e.alerts)} attempts={e.attempts}"
                  + (f" error={e.last_error}" if e.last_error else ""))
    finally:
        await db.close()
    return EXIT_OK


def _alerts_test(config: Config, route_name: str | None) -> int:
    """Send one test alert through every sink of a route, now, and say what each answered."""
    import aiohttp

    from keeperd.alerts.model import Alert
    from keeperd.alerts.sinks import SinkError, make_sink

    routes = [r for r in config.alerts.routes if route_name in (None, r.name)]
    if not routes:
        print(f"keeperd: no route {route_name!r} (defined: "
              f"{[r.name for r in config.alerts.routes]})", file=sys.stderr)
        return EXIT_FAILURE
    redactor = configure_logging("warning", "console")
    alert = Alert("test", "info", "event", {"source": "keeperd alerts test"},
                  "keeperd test alert: this route works", action="Nothing to do.").to_json()

    async def run() -> bool:
        ok = True
        async with aiohttp.ClientSession() as session:
            for route in routes:
                for sink_config in route.sinks:
                    name = f"{route.name}/{sink_config.sink_id} {sink_config.kind}"
                    try:
                        sink = make_sink(sink_config)
                    except SinkError as exc:
                        print(f"{name}: {exc}")
                        ok = False
                        continue
                    for secret in sink.secrets:
                        redactor.add(secret)
                    result = await sink.send(session, [alert], f"test-{time.time_ns()}")
                    verdict = "delivered" if result.ok else redactor.scrub(result.error)
                    print(f"{name}: {verdict}")
                    ok = ok and result.ok
        return ok

    return EXIT_OK if asyncio.run(run()) else EXIT_FAILURE


def _cmd_simulate(args: argparse.Namespace) -> int:
    from keeperd.alerts.preview import render
    from keeperd.simulate import (
        ProtocolChoiceError,
        ShockError,
        chart,
        parse_shock,
        pick_protocol,
        round_table,
        simulate,
        summary,
    )

    config = load_config(args.config)
    _note_fresh_state(config, "simulate")
    configure_logging("warning", "console")
    try:
        shocks = dict(parse_shock(s) for s in args.shock)
    except ShockError as exc:
        print(f"keeperd: --shock {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:  # before the chain is read, with the names to choose from
        chosen = pick_protocol(config, args.protocol)
    except ProtocolChoiceError as exc:
        raise UsageError(f"--protocol {exc}" if args.protocol is not None else str(exc)) \
            from None
    others = [p.name for p in config.chain_protocols if p.name != chosen.name]
    if args.protocol is None and others:
        # (the README's command showed the first protocol's book only, without a word of the
        # others' exposure to the same move: a by-hand trial)
        print(f"keeperd simulate: {chosen.name} (the first protocol); the others are "
              f"simulated one at a time with --protocol: {', '.join(others)}",
              file=sys.stderr)
    name = "-".join(f"{a}{round(d * 100)}" for a, d in shocks.items())
    png = args.png or Path(f"keeperd-simulate-{name}.png")
    _check_writable("--png", png)  # before minutes of reading, not after
    try:
        sim = asyncio.run(simulate(config, shocks, args.protocol))
    except ShockError as exc:
        print(f"keeperd: --shock {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(summary(sim))
    print()
    print(round_table(sim))
    print()
    print(render(list(sim.alerts)))
    try:
        print(f"\nchart: {chart(sim, png)}")
    except OSError as exc:
        print(f"keeperd simulate: the chart was not written to {png}: {exc.strerror or exc} "
              "(give --png a path in a writable directory)", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _check_writable(option: str, path: Path) -> None:
    """A file the command will write: its directory exists and takes files."""
    parent = path.parent
    try:
        if path.is_dir():
            raise UsageError(f"{option} {path} is a directory: give a file name in it")
        if not parent.is_dir():
            what = "is not a directory" if parent.exists() else "does not exist"
            raise UsageError(f"{option} {path}: {parent} {what} (create it, or give another "
                             "path)")
        target = path if path.exists() else parent
    except OSError as exc:  # (a name too long, a loop of links)
        raise UsageError(f"{option} {path}: {exc.strerror or exc}") from None
    if not os.access(target, os.W_OK):
        raise UsageError(f"{option} {path}: {target} is not writable by this user (give "
                         "another path)")


def _cmd_storage(args: argparse.Namespace) -> int:
    from keeperd.storage import admin
    from keeperd.storage.migrations import SchemaAhead

    config = load_config(args.config)
    try:
        if args.storage_command == "migrate":
            dialect, applied = asyncio.run(admin.run_migrations(config))
            print(f"{dialect}: " + (f"applied migrations {applied}" if applied
                                    else "up to date"))
        elif args.storage_command == "copy":
            copied = asyncio.run(admin.copy_sqlite_to_postgres(config))
            print("copied " + ", ".join(f"{n} rows of {t}" for t, n in copied.rows.items())
                  + f" from {admin.sqlite_path(config)} to PostgreSQL")
        else:
            rows = asyncio.run(admin.leases(config))
            if not rows:
                print("no lease (one machine on SQLite, or no replica started yet)")
            for r in rows:
                state = (f"expires in {r.expires_in_s:.1f} s" if r.expires_in_s > 0
                         else f"EXPIRED {-r.expires_in_s:.1f} s ago: no replica acts")
                print(f"{r.identity}: held by {r.holder}, epoch {r.epoch}, {state}, renewed "
                      f"{r.since_renewal_s:.1f} s ago")
    except (admin.StorageError, SchemaAhead) as exc:
        print(f"keeperd storage {args.storage_command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _cmd_wave(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    redactor = configure_logging("warning", "console")
    chains = [c.name for c in config.chains]
    if not chains:
        raise UsageError("the config names no chain")
    name = _choose("--chain", args.chain, chains, "chain") if args.chain else chains[0]
    if args.chain is None and len(chains) > 1:
        raise UsageError(f"the config has {len(chains)} chains: say which with --chain "
                         f"({', '.join(chains)})")
    chain = next(c for c in config.chains if c.name == name)
    try:
        return asyncio.run(_wave(args, config, chain, redactor))
    except Exception as exc:
        from keeperd.chain.rpc import RpcError
        from keeperd.execution.wave_setup import WaveSetupError
        from keeperd.keys import SecretError
        from keeperd.statelock import StateDirLocked

        if isinstance(exc, StateDirLocked):
            # (not run's advice of another state_dir: that would sign beside the running
            # keeperd with its key, which reads the transaction as another sender on it)
            raise CommandFailed(
                f"keeperd is running on {config.state_dir}: stop it first (`systemctl stop "
                "keeperd`; with replicas, every one of them). keeperd wave signs with its "
                "key, and another state_dir would not make that safe.") from None
        if isinstance(exc, (WaveSetupError, SecretError)):
            raise CommandFailed(redactor.scrub(str(exc))) from None
        if isinstance(exc, RpcError):  # (a node's refusal: funds, nonce, a revert)
            raise CommandFailed(redactor.scrub(
                f"the node refused: {exc}; nothing more was sent (`keeperd wave status` says "
                "what the chain holds)")) from None
        raise


async def _wave(args: argparse.Namespace, config: Config, chain: Any, redactor: Any) -> int:
    from keeperd.chain.connect import make_pool
    from keeperd.checks import keeper_address
    from keeperd.config import RemoteSignerKey
    from keeperd.execution.wave_setup import WaveSetup, read_state
    from keeperd.hardening import forbid_core_dumps
    from keeperd.keys import load_key
    from keeperd.metrics import Metrics
    from keeperd.statelock import StateDirLock

    async with make_pool(chain, Metrics()) as pool:
        if args.action == "status":
            keeper = keeper_address(config)
            if keeper is None and config.keeper.key is not None:
                from keeperd.keys import SecretError

                try:
                    keeper = load_key(config.keeper.key).address
                except SecretError as exc:  # (a read-only command: the address is enough)
                    if config.keeper.address is None:
                        raise UsageError(f"{exc}; `keeperd wave status` only reads: set "
                                         "keeper.address to the keeper's address to run it "
                                         "without the key") from None
                    keeper = config.keeper.address
            if keeper is None:
                raise UsageError("the keeper's address is unknown: keeper.key (or "
                                 "keeper.address) is needed")
            print((await read_state(pool, chain.name, keeper)).render())
            return EXIT_OK
        source = config.keeper.key
        if source is None or isinstance(source, RemoteSignerKey):
            raise UsageError(
                f"keeperd wave {args.action} signs with the keeper's local key (keeper.key: "
                "env, file or keystore); a remote signer signs EIP-7702 authorizations with "
                "its own tooling (the delegate: `keeperd wave status` prints its address)")
        forbid_core_dumps()  # (before the key is in memory, as the daemon does)
        key = load_key(source)
        redactor.add(key.secret_hex())
        # (never beside a running keeperd on this state directory: its nonces; nor beside a
        # replica on another machine: the shared database's lease on this key says so)
        with StateDirLock(config.state_dir):
            await _no_replica_running(config, key.address)
            setup = WaveSetup(pool, chain, config.keeper, key, wait_s=args.wait)
            state = await getattr(setup, args.action)()
        print(state.render())
    return EXIT_OK


async def _no_replica_running(config: Config, address: str) -> None:
    """With replicas (storage.url): refuse while one holds the lease of this key (a replica
    elsewhere sends with it; the state directory's lock knows only this machine's keeperd —
    a revoke beside a live leader was read as another sender on the key, and held its
    liquidations for 10 blocks: a by-hand trial)."""
    from keeperd.execution.wave_setup import WaveSetupError
    from keeperd.storage.admin import StorageError, leases

    if config.storage.url is None:
        return
    try:
        rows = await leases(config)
    except StorageError as exc:
        raise WaveSetupError(f"{exc}: with replicas, keeperd wave first checks that none is "
                             "running (their lease)") from None
    live = [r for r in rows if r.identity.startswith(address.lower() + "@")
            and r.expires_in_s > 0]
    if live:
        r = live[0]
        raise WaveSetupError(
            f"replica {r.holder} holds the lease of this key ({r.identity}, epoch {r.epoch}, "
            f"{r.expires_in_s:.0f} s more): stop every replica first (`systemctl stop "
            "keeperd` on each); keeperd wave signs with its key")


def _cmd_config_schema(_: argparse.Namespace) -> int:
    print(json.dumps(config_json_schema(), indent=2))
    return EXIT_OK


# --- devnet -------------------------------------------------------------------------------


def _devnet_files() -> tuple[Path, Path]:
    from keeperd.devnet import paths

    d = paths.devnet_dir()
    return d / "manifest.json", d / "anvil.pid"


def _read_manifest() -> dict[str, Any]:
    manifest_path, _ = _devnet_files()
    if not manifest_path.is_file():
        raise SystemExit("keeperd: no devnet is running here (start one: keeperd devnet up)")
    return json.loads(manifest_path.read_text())


def _cmd_devnet_up(args: argparse.Namespace) -> int:
    from keeperd.devnet import paths
    from keeperd.devnet.handle import Devnet
    from keeperd.status import pid_running

    configure_logging("info", "console")
    manifest_path, pid_path = _devnet_files()
    if pid_path.is_file() and pid_running(int(pid_path.read_text())):
        print(f"keeperd: a devnet is already running (pid {pid_path.read_text().strip()}); "
              "stop it with: keeperd devnet down", file=sys.stderr)
        return EXIT_FAILURE
    if args.port is not None and _port_in_use(args.port):
        print(f"keeperd devnet up: port {args.port} is in use on 127.0.0.1 (another node or "
              "service)\n  fix: pick a free one, e.g. keeperd devnet up --port "
              f"{args.port + 2}", file=sys.stderr)
        return EXIT_FAILURE
    from keeperd.devnet.anvil import AnvilError

    devnet = Devnet(args.accounts, args.seed, port=args.port, detached=True,
                    log_path=paths.devnet_dir() / "anvil.log", aave_version=args.aave)
    try:
        devnet.start()
    except AnvilError as exc:
        print(f"keeperd devnet up: {exc}\n  (anvil's log: {paths.devnet_dir() / 'anvil.log'})",
              file=sys.stderr)
        return EXIT_FAILURE
    _set_aside_last_devnets_state(paths.devnet_dir() / "keeperd-state")
    assert devnet.anvil.process is not None
    pid_path.write_text(str(devnet.anvil.process.pid))
    devnet.write_manifest(manifest_path)
    devnet.close()
    # stdout is the manifest's path (scripts read it); people read the rest.
    print(f"devnet up: RPC {devnet.manifest['rpc_url']}, websocket {devnet.manifest['ws_url']}"
          f" (pid {devnet.anvil.process.pid}); {_devnet_config(args.aave)} reaches it with "
          f"KEEPERD_DEVNET_RPC={devnet.manifest['rpc_url']}; stop it with: keeperd devnet down",
          file=sys.stderr)
    print(manifest_path)
    return EXIT_OK


def _devnet_config(aave_version: str) -> str:
    """The shipped config for a devnet of this Aave version (config/devnet.yaml's addresses
    are v3.6's: against a v3.0 devnet its provider is another contract)."""
    return "config/devnet-aave-v3.0.yaml" if aave_version == "v3.0" else "config/devnet.yaml"


def _port_in_use(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # (as anvil binds: a port a devnet just left, in TIME_WAIT, is free to it)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _set_aside_last_devnets_state(state_dir: Path) -> None:
    """A devnet started again is a new chain from the seeded state: the journal config/
    devnet.yaml's default state directory holds belongs to the chain that is gone (its
    opportunities recorded there would be skipped on this one, its liquidations checked
    against a chain that never had them). It is moved aside, kept, unless a keeperd still
    runs on it."""
    import datetime

    from keeperd.statelock import StateDirLock, StateDirLocked
    from keeperd.storage.db import STATE_FILE

    if not (state_dir / STATE_FILE).is_file():
        return
    try:
        with StateDirLock(state_dir):
            pass
    except StateDirLocked:
        print(f"keeperd: a keeperd still runs on {state_dir}, whose journal belongs to the "
              "devnet that is gone: stop it, and start it again on a fresh state directory "
              "(KEEPERD_STATE_DIR=...)", file=sys.stderr)
        return
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = state_dir.with_name(f"{state_dir.name}.before-{stamp}")
    state_dir.rename(kept)
    print(f"the last devnet's keeperd state moved to {kept} (its journal belongs to the chain "
          "that is gone); config/devnet.yaml starts on a fresh one", file=sys.stderr)


def _cmd_devnet_down(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from keeperd.devnet.anvil import stop_pid

    manifest_path, pid_path = _devnet_files()
    if not pid_path.is_file():
        print("keeperd: no devnet is running here", file=sys.stderr)
        return EXIT_OK
    if args.port is not None and manifest_path.is_file():
        # (`up --port` was documented, `down --port` refused as an unknown argument: a trial)
        running = urlsplit(json.loads(manifest_path.read_text()).get("rpc_url", "")).port
        if running is not None and running != args.port:
            print(f"keeperd: the devnet of this directory runs on port {running}, not "
                  f"{args.port}; `devnet down` stops it (one devnet per directory: "
                  "KEEPERD_DEVNET_DIR names another)", file=sys.stderr)
            return EXIT_CONFIG
    stopped = stop_pid(int(pid_path.read_text()))
    pid_path.unlink(missing_ok=True)
    manifest_path.unlink(missing_ok=True)
    print("devnet stopped" if stopped else "devnet was not running")
    return EXIT_OK


def _cmd_devnet_set_price(args: argparse.Namespace) -> int:
    from keeperd.devnet.handle import PriceWalkError

    manifest = _read_manifest()
    _choose("SYMBOL", args.symbol, sorted(manifest["price_feeds"]), "asset on the devnet")
    with _devnet_control(manifest) as control:
        before = control.price(args.symbol)
        if not control.client.call("anvil_getAutomine"):
            # Blocks come only when mined (as the demo's crash and the docs' trials do): the
            # moves wait in the pool, all of them, for the next block. (Sent one by one and
            # waited for, it hung a minute, said "the devnet refused it" and left the feed's
            # move in the pool without the Morpho oracles' — a by-hand trial.)
            control.set_price_async(args.symbol, args.usd)
            print(f"{args.symbol}: {before:g} -> {args.usd:g} USD with the next block mined "
                  "(automine is off: `keeperd devnet mine`); Perp Curie's mark is not walked "
                  "(its walk mines blocks: set prices with automine on for Curie to follow)")
            return EXIT_OK
        try:
            control.set_price(args.symbol, args.usd, walk_perps=True)
        except PriceWalkError as exc:
            raise CommandFailed(str(exc)) from None
        print(f"{args.symbol}: {before:g} -> {control.price(args.symbol):g} USD")
    return EXIT_OK


def _cmd_devnet_l1_fee(args: argparse.Namespace) -> int:
    from keeperd.chain import l1_fee
    from keeperd.devnet import op_stack

    gwei = 10**9
    with _devnet_control(_read_manifest()) as control:
        op_stack.install(control.client, l1_base_fee=int(args.l1_base_fee_gwei * gwei),
                         blob_base_fee=int(args.blob_base_fee_gwei * gwei))
        method, params = l1_fee.l1_fee_request(int(control.manifest["chain_id"]),
                                               l1_fee.SAMPLE_TO, l1_fee.SAMPLE_CALL,
                                               l1_fee.SAMPLE_GAS)
        fee = l1_fee.decode_fee(control.client.call(method, *params))
    print(f"GasPriceOracle at {l1_fee.GAS_PRICE_ORACLE}: a {len(l1_fee.SAMPLE_CALL)}-byte "
          f"call pays {l1_fee.fee_text(fee)} of L1 data fee now (L1 base fee "
          f"{args.l1_base_fee_gwei:,g} gwei, blobs {args.blob_base_fee_gwei:,g} gwei)")
    print("keeperd prices it where chains[].l1_data_fee is op-stack: config/devnet.yaml takes "
          "KEEPERD_L1_DATA_FEE=op-stack")
    return EXIT_OK


def _cmd_devnet_mine(args: argparse.Namespace) -> int:
    with _devnet_control(_read_manifest()) as control:
        print(control.mine(args.blocks, block_time=args.block_time))
    return EXIT_OK


def _cmd_devnet_fund(args: argparse.Namespace) -> int:
    from keeperd.config import _checksum, _eip55

    try:  # (the config's own reading of an address: a mistyped checksum is refused too)
        who = _checksum(_eip55(args.address))
    except ValueError as exc:
        raise UsageError(f"ADDRESS {exc}") from None
    with _devnet_control(_read_manifest()) as control:
        minted = control.fund(who, args.usd)
    for symbol, amount in minted.items():
        print(f"{symbol}: +{amount:,.6f} to {who}")
    return EXIT_OK


@contextlib.contextmanager
def _devnet_control(manifest: dict[str, Any]) -> Iterator[DevnetControl]:
    """The running devnet's controls; one whose anvil is gone (a manifest left behind: a
    reboot, a kill) is said in one line."""
    from keeperd.devnet.client import DevnetRpcError
    from keeperd.devnet.handle import DevnetControl

    control = DevnetControl(manifest)
    try:
        yield control
        control.keep_feeds_fresh()  # as a real chain's heartbeat rounds would be
    except ConnectionError as exc:
        raise CommandFailed(f"the devnet at {manifest['rpc_url']} does not answer "
                            f"({exc.strerror or exc}): `keeperd devnet down`, then "
                            "`keeperd devnet up`") from None
    except DevnetRpcError as exc:
        raise CommandFailed(f"the devnet refused it: {exc}") from None
    except TimeoutError:
        raise CommandFailed(f"the devnet at {manifest['rpc_url']} did not answer in time (a "
                            "daemon reading every block slows it; what it finished stays "
                            "done): try again, or in smaller steps") from None
    finally:
        control.close()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keeperd")
    except PackageNotFoundError:  # a checkout on sys.path, not installed
        from keeperd import __version__

        return __version__


def _command(sub: Any, name: str, help_text: str, description: str = "") -> Any:
    """A sub-command with its one-line help (in the parent's list) and a description (its own
    --help): the help, and what to know before using it."""
    text = help_text[0].upper() + help_text[1:] + "."
    return sub.add_parser(name, help=help_text,
                          description=f"{text} {description}".strip())


CONFIG_HELP = "the keeperd config file (YAML)"


def build_parser() -> argparse.ArgumentParser:
    import keeperd

    parser = argparse.ArgumentParser(prog="keeperd", description=keeperd.__doc__,
                                     epilog="`keeperd COMMAND --help` describes each.")
    parser.add_argument("--version", action="version", version=f"keeperd {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(sub, "run", "run the daemon", "Follows every configured chain, evaluates "
                 "positions each block, liquidates (per keeper.mode), alerts, and serves "
                 "/metrics, /healthz and /readyz; stops cleanly on SIGTERM.")
    p.add_argument("--config", required=True, type=Path, help=CONFIG_HELP)
    p.add_argument("--duration", type=float, default=None,
                   help="stop by itself after this many seconds (demos, smoke tests)")
    p.set_defaults(func=_cmd_run)

    p = _command(sub, "check-config", "validate a config and check it against the chains",
                 "Every problem is reported with its field path and a fix; then each RPC's "
                 "chain id, the configured addresses and the perp venues are checked.")
    p.add_argument("path", nargs="?", help=CONFIG_HELP)
    # (every other command takes --config: a user who types it here is not wrong either)
    p.add_argument("--config", dest="config_path", help="the config file (or give it as PATH)")
    p.add_argument("--offline", action="store_true", help="validate the file only")
    p.set_defaults(func=_cmd_check_config)

    p = _command(sub, "scan", "print every account's health, riskiest first",
                 "Indexes, reads and evaluates every configured protocol (and perp venue).")
    p.add_argument("--config", required=True, type=Path, help=CONFIG_HELP)
    p.add_argument("--once", action="store_true", help="scan once and exit (else repeat)")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.add_argument("--protocol", action="append",
                   help="only this configured protocol or venue, by name (repeatable)")
    p.add_argument("--limit", type=int, default=50, help="table rows (0: all)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between scans")
    p.set_defaults(func=_cmd_scan)

    p = _command(sub, "status", "what the daemon is doing (from its state directory)",
                 "Whether it runs, is ready and alive, the index, the journal and the last "
                 "liquidations; works with the daemon stopped too.")
    p.add_argument("--config", required=True, type=Path, help=CONFIG_HELP)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_status)

    p = _command(sub, "breaker", "pause or resume liquidations on an asset by hand",
                 "trip: liquidations of every account using ASSET pause at the daemon's next "
                 "block (evaluation and alerts go on) until reset; reset: they resume; list: "
                 "every breaker's state. ASSET is a symbol a configured protocol prices, as "
                 "it spells it (WETH), or a market with its own oracle (morpho:<market id>); "
                 "a trip holds it on every chain unless --chain names one.")
    p.add_argument("action", choices=("trip", "reset", "list"), help="trip, reset or list")
    p.add_argument("asset", nargs="?", help="token symbol, e.g. WETH")
    p.add_argument("--config", required=True, type=Path, help=CONFIG_HELP)
    p.add_argument("--reason", default="operator", help="why (shown in `breaker list`)")
    p.add_argument("--chain", default=None, help="only on this chain (a `chains[].name`); "
                   "trip: default every chain; reset: default wherever it is tripped")
    p.set_defaults(func=_cmd_breaker)

    p = _command(sub, "simulate", "a price shock on today's book: the cascade round by "
                 "round, the alerts it would raise, and a chart",
                 "Reads every position of the protocol at the head, applies the shock, sells "
                 "the seized collateral into the configured depth round by round, and lists "
                 "the watched positions that would cross their watchlist's levels.")
    p.add_argument("--config", required=True, type=Path, help=CONFIG_HELP)
    p.add_argument("--shock", action="append", required=True,
                   help="ASSET=-30%% (repeatable: several assets fall together)")
    p.add_argument("--protocol", help="which configured protocol, by its `protocols[].name` "
                   "(e.g. curie-devnet in config/devnet.yaml; default: the first)")
    p.add_argument("--png", type=Path, help="where to draw the chart "
                   "(default: keeperd-simulate-<shock>.png)")
    p.set_defaults(func=_cmd_simulate)

    p = _command(sub, "silence", "mute alerts that match labels, for a while",
                 "add: a silence (every --match must hold; labels are those keeperd's alerts "
                 "carry: rule, severity, chain, protocol, account, watchlist, asset...); list: "
                 "the active ones; expire ID: end one now. The daemon reads them within "
                 "seconds. `keeperd alerts route` shows what a silence would mute.")
    p.add_argument("action", choices=("add", "list", "expire"), help="add, list or expire")
    p.add_argument("id", nargs="?", type=int, help="the silence to expire")
    p.add_argument("--config", required=True, type=Path, help=CONFIG_HELP)
    p.add_argument("--match", action="append", default=[],
                   help="label=value, label!=value, label=~regex (repeatable; all must match)")
    p.add_argument("--for", dest="duration", type=parse_duration, default=3600.0,
                   help="how long (30m, 2h, 1d; default 1h)")
    p.add_argument("--comment", default="", help="why (shown in `silence list`)")
    p.set_defaults(func=_cmd_silence)

    p = _command(sub, "alerts", "firing alerts and the outbox; retry dead ones; test a "
                 "route; where an alert would go",
                 "list: what fires and what waits in the outbox; retry: requeue dead-lettered "
                 "notifications; test [--route R]: send a test alert through every sink now; "
                 "route RULE [label=value ...]: the route an alert of RULE with those labels "
                 "takes, its sinks, and the silences that would mute it; outbox list: what "
                 "waits for each sink (ROUTE/SINK_ID), those no longer configured marked; "
                 "outbox drop ROUTE/SINK_ID: give up what waits for a removed sink; outbox "
                 "reroute ROUTE/SINK_ID --to ROUTE/SINK_ID: send it to a configured sink.")
    p.add_argument("action", choices=("list", "retry", "test", "route", "outbox"),
                   help="list, retry, test, route or outbox")
    p.add_argument("args", nargs="*", metavar="ARG",
                   help="route: the rule (e.g. position_health) and the alert's labels; "
                        "outbox: list, drop ROUTE/SINK_ID or reroute ROUTE/SINK_ID")
    p.add_argument("--config", required=True, type=Path, help=CONFIG_HELP)
    p.add_argument("--to", help="outbox reroute: the configured sink, ROUTE/SINK_ID")
    p.add_argument("--route", help="test: only this route")
    p.add_argument("--limit", type=int, default=20, help="list: recent outbox entries")
    p.set_defaults(func=_cmd_alerts)

    storage = _command(sub, "storage", "the state database: migrate, copy a single "
                       "machine's journal to PostgreSQL, show the replicas' leases")
    ssub = storage.add_subparsers(dest="storage_command", required=True, metavar="ACTION")
    for name, help_text in (
            ("migrate", "apply the schema migrations (SQLite, or PostgreSQL with storage.url)"),
            ("copy", "copy the journal from state_dir's SQLite file into storage.url's empty "
                     "PostgreSQL database (before starting replicas)"),
            ("leases", "who holds each keeper identity's lease, at which epoch")):
        p = _command(ssub, name, help_text)
        p.add_argument("--config", required=True, type=Path, help=CONFIG_HELP)
        if name == "copy":
            p.add_argument("--from", dest="source", choices=("sqlite",), default="sqlite",
                           help="the source (sqlite: state_dir's file)")
            p.add_argument("--to", dest="target", choices=("postgres",), default="postgres",
                           help="the target (postgres: storage.url)")
        p.set_defaults(func=_cmd_storage)

    p = _command(sub, "wave", "keeperd's wave executor: many liquidations in one "
                 "transaction (EIP-7702)",
                 "status: where KeeperWave is and what the keeper's address runs, from every "
                 "endpoint; deploy: put KeeperWave at its fixed address on the chain (through "
                 "the deterministic deployment proxy); delegate: the keeper's address runs "
                 "KeeperWave (an EIP-7702 authorization signed by its key); revoke: an "
                 "ordinary address again. Run with keeperd stopped (the state directory's lock "
                 "is taken). docs/operations.md, 'Wave transactions'.")
    p.add_argument("action", choices=("status", "deploy", "delegate", "revoke"),
                   help="status, deploy, delegate or revoke")
    p.add_argument("--config", required=True, type=Path, help=CONFIG_HELP)
    p.add_argument("--chain", default=None,
                   help="which configured chain (a `chains[].name`; needed with several)")
    p.add_argument("--wait", type=_positive(float), default=180.0,
                   help="seconds to wait for the transaction's receipt (default 180)")
    p.set_defaults(func=_cmd_wave)

    p = _command(sub, "config-schema", "print the config's JSON Schema",
                 "For editors: YAML language servers validate and complete the config with it.")
    p.set_defaults(func=_cmd_config_schema)

    devnet = _command(sub, "devnet", "the local chain with real Aave V3, Morpho Blue and Perp "
                      "Curie markets", "For demos and trying keeperd by hand; its files are in "
                      ".devnet/ (KEEPERD_DEVNET_DIR moves them).")
    dsub = devnet.add_subparsers(dest="devnet_command", required=True, metavar="ACTION")
    p = _command(dsub, "up", "start anvil in the background from the deployed state",
                 "Prints the manifest's path; the RPC and websocket URLs go to stderr.")
    p.add_argument("--accounts", type=int, default=300, help="seeded borrowers")
    p.add_argument("--seed", type=int, default=1, help="the seed of the borrowers")
    p.add_argument("--port", type=int, default=8545,
                   help="anvil's port on 127.0.0.1 (default 8545; config/devnet.yaml reads "
                        "KEEPERD_DEVNET_RPC for another)")
    p.add_argument("--aave", choices=("v3.6", "v3.0"), default="v3.6",
                   help="which Aave V3 to deploy: v3.6, the newest published release "
                        "(default, compiled from its sources; mainnet runs v3.7, verified at "
                        "run time) or the 2022 v3.0 some forks still run")
    p.set_defaults(func=_cmd_devnet_up)
    p = _command(dsub, "down", "stop the background devnet of this directory")
    p.add_argument("--port", type=int, default=None,
                   help="refuse unless that devnet runs on this port (the one `up --port` "
                        "started: one devnet per directory)")
    p.set_defaults(func=_cmd_devnet_down)
    p = _command(dsub, "set-price", "set an asset's oracle price in USD",
                 "For every protocol on the devnet: Aave's feed, Morpho Blue's oracles, and "
                 "Perp Curie's index, its mark walked to it by trades and chain time.")
    p.add_argument("symbol", help="the asset, as the devnet spells it (WETH, WBTC, USDC...)")
    p.add_argument("usd", type=_positive(float), help="the new price in USD (> 0)")
    p.set_defaults(func=_cmd_devnet_set_price)
    p = _command(dsub, "l1-fee", "price transactions as an OP Stack chain (Base) does",
                 "Places the published L1Block and GasPriceOracle predeploys on the devnet "
                 "(as on Base and OP Mainnet) with these L1 fees, OP Mainnet's scalars, and "
                 "says what a liquidation-sized call pays; run again to move the fees. The "
                 "devnet itself charges no L1 fee: keeperd prices it into each liquidation "
                 "where chains[].l1_data_fee is op-stack.")
    p.add_argument("l1_base_fee_gwei", metavar="L1_BASE_FEE_GWEI",
                   type=_positive(float, zero=True),
                   help="Ethereum's base fee the L1 data fee follows, in gwei (e.g. 20)")
    p.add_argument("--blob-base-fee-gwei", type=_positive(float, zero=True), default=1.0,
                   help="Ethereum's blob base fee, in gwei (default 1)")
    p.set_defaults(func=_cmd_devnet_l1_fee)
    p = _command(dsub, "mine", "mine blocks",
                 "Each block --block-time seconds after the one before, as a chain's are (what "
                 "waits on time waits on them: interest, Curie's TWAP catching up with a "
                 "crash before its collateral liquidations pay); the feeds' heartbeats follow. "
                 "Prints the head's number afterwards.")
    p.add_argument("blocks", type=_positive(int, zero=True), nargs="?", default=1,
                   help="how many (default 1)")
    p.add_argument("--block-time", type=_positive(int, zero=True), default=12,
                   help="seconds between the blocks (default 12, Ethereum's; 0: anvil's own "
                        "clock, as the tests mine)")
    p.set_defaults(func=_cmd_devnet_mine)
    p = _command(dsub, "fund", "mint the devnet's tokens to an address",
                 "Every token of the devnet (WETH, WBTC, USDC, DAI, USDT, wstETH), worth --usd "
                 "each at its price, and ETH for gas (topped up to 100): a keeper with "
                 "capital: own-balance needs the debt assets it repays with.")
    p.add_argument("address", help="who gets them (0x and 40 hex digits)")
    p.add_argument("--usd", type=_positive(float), default=10_000_000.0,
                   help="USD worth of each token (default 10,000,000)")
    p.set_defaults(func=_cmd_devnet_fund)
    return parser


def _positive(kind: Callable[[str], Any], zero: bool = False) -> Callable[[str], Any]:
    """An argparse type: a number above 0 (or at least 0)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text}: must be a finite number")
        if value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(
                f"{text}: must be {'0 or more' if zero else 'more than 0'}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "breaker" and args.action != "list" and not args.asset:
        parser.error("breaker trip|reset needs an ASSET (a token symbol, e.g. WETH)")
    where = " ".join(filter(None, (args.command, getattr(args, "devnet_command", None),
                                   getattr(args, "action", None) if args.command == "wave"
                                   else None)))
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"keeperd {where}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except CommandFailed as exc:
        print(f"keeperd {where}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    except RpcUnavailable as exc:  # (its message names endpoints by their redacted URLs)
        print(f"keeperd {args.command}: the chain did not answer: {exc}\n"
              "  fix: check that a node in the config's rpc_urls is up and reachable from "
              "here (the local devnet: `keeperd devnet up`)", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `keeperd scan --json | head`
        sys.stderr.close()
        return EXIT_OK
