"""`make demo`: keeperd on its embedded default, end to end, in about a minute.

1. starts the devnet (anvil with Aave v3.6, the newest published, built from its sources,
   and 300 seeded borrowers);
2. runs the keeperd daemon on config/devnet.yaml, pointed at that devnet, in `liquidate` mode
   with anvil's published test account 5 as the keeper (funded with the debt assets), on the
   Aave V3 market and the two Morpho Blue markets;
3. shows the positions it found, riskiest first;
4. crashes the WETH price by 30 % (Aave's feed and Morpho's WETH/USDC oracle): keeperd sees
   the block, simulates and sends the liquidations on both protocols, and the next blocks
   include them; the journal and the balances show it;
5. shows the alerts a webhook receiver got (signatures verified): the watchlist of the riskiest
   borrowers warned and escalated, watched positions liquidated, the keeper's liquidations;
6. shows the cascade-risk figures of the book after the crash: what a further 10-30 % drop
   would liquidate, with and without the price impact of the liquidations' selling;
7. shows the metrics Prometheus would scrape.
It stops everything it started on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import threading
import traceback
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from keeperd.alerts.sinks import verify
from keeperd.config import AlertsConfig, WatchlistConfig, load_config
from keeperd.daemon import Daemon
from keeperd.devnet import contracts
from keeperd.devnet.anvil import free_port
from keeperd.devnet.handle import Devnet
from keeperd.execution.journal import JournalEntry
from keeperd.logs import configure_logging
from keeperd.metrics import Metrics
from keeperd.scan import sort_rows, to_table

ROOT = Path(__file__).resolve().parent.parent


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 74 - len(text)), flush=True)


async def wait_for_block(daemon: Daemon, block: int, limit_s: float = 30.0) -> None:
    async def done() -> None:
        while True:
            scanners = list(daemon.scanners.values())
            if scanners and all(s.completed_block >= block for s in scanners):
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(done(), limit_s)


def show_positions(daemon: Daemon, limit: int) -> None:
    for scanner in daemon.scanners.values():
        assert scanner.book is not None and scanner.view is not None
        rows = sort_rows(scanner.adapter.rows(scanner.book, scanner.view))
        print(to_table(rows, limit=limit))
        with_debt = [r for r in rows if r.health_factor is not None]
        liquidatable = [r for r in with_debt if r.health_factor < 1.0]  # type: ignore[operator]
        print(f"\n{len(rows)} accounts, {len(with_debt)} with debt, {len(liquidatable)} "
              f"liquidatable (debt {sum(r.debt_usd for r in liquidatable):,.0f} USD)")


# anvil's default mnemonic, account 5: a published test key, for the local devnet only.
DEMO_KEEPER_KEY = "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba"
DEMO_KEEPER = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"


def fund_keeper(devnet: Devnet) -> None:
    """Mint the keeper the debt assets it repays with (the devnet tokens mint freely)."""
    token = contracts.aave("MintableERC20")
    for symbol, address in devnet.manifest["tokens"].items():
        decimals = devnet.manifest["aave_v3"]["reserves"][symbol]["decimals"]
        devnet.client.send(DEMO_KEEPER, address,
                           token.encode_call("mint", DEMO_KEEPER, 10_000_000 * 10**decimals))


def keeper_balances(devnet: Devnet) -> dict[str, float]:
    token = contracts.aave("MintableERC20")
    out = {}
    for symbol, address in devnet.manifest["tokens"].items():
        decimals = devnet.manifest["aave_v3"]["reserves"][symbol]["decimals"]
        (raw,) = token.decode_result("balanceOf", devnet.client.eth_call(
            address, token.encode_call("balanceOf", DEMO_KEEPER)))
        out[symbol] = raw / 10**decimals
    return out


STILL_BLOCKS = 4  # blocks without a change after which the perps follow-up ends
CURIE = "curie-devnet"  # config/devnet.yaml's Perp Curie protocol


def of_protocol(entries: Iterable[JournalEntry], protocol: str) -> list[JournalEntry]:
    """The journal is one for every protocol (one database): the entries of one of them."""
    return [e for e in entries if e.protocol == protocol]


def traders_liquidated(entries: Iterable[JournalEntry], protocol: str) -> set[str]:
    """The accounts of `protocol` a liquidation of keeperd's was included for (not the
    unwinds of what it took over, which repay no debt; nor another protocol's)."""
    return {e.account for e in of_protocol(entries, protocol)
            if e.status == "included" and e.debt}


async def perps_follow(daemon: Daemon, devnet: Devnet, price: float) -> None:
    """Curie's mark follows its index only through trades and time (its TWAPs): the devnet's
    arbitrageur walks it there in steps, 16 s apart; keeperd liquidates traders as their
    margin runs out and unwinds what it took over; a quarter hour of chain time later the
    vault's 15-minute TWAP of WETH margin has caught up, and keeperd sells the margin of those
    left with USDC debt. Then a few blocks until nothing is left."""
    from keeperd.devnet.curie import settle_collateral_twap, walk_mark

    await asyncio.to_thread(walk_mark, devnet.client, devnet.manifest, "WETH", price)
    await asyncio.to_thread(settle_collateral_twap, devnet.client, devnet.manifest)
    scanner = daemon.scanners[CURIE]
    # (Its journal is every protocol's — one database: Curie's traders are counted apart.)
    executor = daemon.executors.get(CURIE)
    # Until nothing is left, or nothing has changed for a few blocks with nothing in flight
    # (what is left after a partial liquidation may not be worth the gas at the demo's min
    # profit: waiting the 30 blocks out for it was most of the demo's run time).
    settled = 0
    previous = -1
    for _ in range(30):
        await wait_for_block(daemon, devnet.mine(1))
        view = scanner.view
        under = [] if view is None else [view.accounts[int(i)]
                                          for i in np.flatnonzero(view.health < 1.0)]
        left = len(set(under))
        # (in flight on any protocol: the journal summary that follows shows settled rows)
        pending = await executor.journal.by_status("pending") if executor else []
        settled = settled + 1 if (left == previous and not pending) else 0
        previous = left
        if (left == 0 and not pending) or settled >= STILL_BLOCKS:
            break
    done = traders_liquidated(await executor.journal.all(), CURIE) if executor else set()
    # What is left, judged as keeperd judges it: dust its own pricing declines (the bonus
    # less slippage and gas under min_profit_usd), or missed.
    declined = await executor.declined(set(under)) if executor else {}
    print(f"Curie mark {price:,.0f}; traders liquidated by keeperd: {len(done)}, still under "
          f"water: {left}, {len(declined)} of them declined by keeperd's pricing (the best "
          f"prize, {max(declined.values(), default=0):,.2f} USD, does not pay the gas at the "
          f"fee cap and min_profit_usd {daemon.config.keeper.min_profit_usd:g})")


async def show_journal(daemon: Daemon) -> None:
    """What `keeperd status` says of each protocol (one summary, storage/summary.py: the same
    numbers as the metrics)."""
    from keeperd.storage.summary import protocol_summary

    journals = [e.journal for e in daemon.executors.values()]
    if not journals:
        return
    rows = [(e.protocol, e.status, e.account, e.collateral, e.debt, e.realised_profit_usd)
            for e in await journals[0].all()]  # one journal (one database) for every protocol
    for protocol, p in protocol_summary(rows).items():
        counts = p["liquidations"]
        print(f"journal, {protocol}: {sum(counts.values())} liquidations {counts} of "
              f"{p['accounts_liquidated']} accounts; realised P&L "
              f"{p['realised_pnl_usd']:,.2f} USD; {p['housekeeping']} housekeeping "
              "transactions")


DEMO_SECRET = "devnet-only-webhook-secret-not-for-use"  # as config/devnet*.yaml


class Receiver:
    """The demo's webhook receiver: what a team's alert endpoint does (verify, dedup, show)."""

    def __init__(self) -> None:
        self.alerts: list[dict] = []
        self.seen: set[str] = set()
        self.refused = 0

    def app(self) -> web.Application:
        async def hook(request: web.Request) -> web.Response:
            body = await request.read()
            if not verify(DEMO_SECRET, body, request.headers.get("X-Keeperd-Signature", "")):
                self.refused += 1
                return web.Response(status=401, text="bad signature")
            key = request.headers.get("Idempotency-Key", "")
            if key not in self.seen:
                self.seen.add(key)
                self.alerts.append(await request.json())
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_post("/hook", hook)
        return app

    def show(self) -> None:
        counts: dict[tuple[str, str], int] = {}
        for a in self.alerts:
            counts[(a["rule"], a["kind"])] = counts.get((a["rule"], a["kind"]), 0) + 1
        print(f"{len(self.alerts)} alerts received, signatures verified ({self.refused} "
              f"refused): " + ", ".join(f"{r}/{k} x{n}" for (r, k), n in sorted(counts.items())))
        people = [a for a in self.alerts if a["rule"] in ("position_health",
                                                           "position_liquidated")]
        for a in people[:12]:
            print(f"  {a['severity']:8} {a['kind']:9} {a['summary']}")
        if len(people) > 12:
            print(f"  ... and {len(people) - 12} more about watched positions")


def show_cascade(daemon: Daemon) -> None:
    for name, monitor in daemon.cascades.items():
        r = monitor.last
        if r is None:
            print(f"{name}: no cascade figures yet")
            continue
        print(f"{name} at block {monitor.last_block} (the Uniswap V3 pools of the devnet are "
              "thin, so the cascades are steep):")
        print(f"  {'scenario':8} {'shock':>6} {'static repaid':>15} {'cascade repaid':>15} "
              f"{'bad debt':>13} {'final drop':>10} {'ampl.':>6} {'rounds':>6}")
        for k, (scenario, shock) in enumerate(zip(r.columns.scenario, r.columns.shock,
                                                  strict=True)):
            if scenario in ("WETH", "joint") and round(float(shock), 3) in (0.1, 0.2, 0.3):
                print(f"  {scenario:8} {shock:>6.0%} {r.static_repaid[k]:>15,.0f} "
                      f"{r.repaid[k]:>15,.0f} {r.bad_debt[k]:>13,.0f} "
                      f"{r.final_drop[k]:>10.1%} {r.amplification[k]:>6.2f} "
                      f"{int(r.rounds[k]):>6}")


def riskiest(devnet: Devnet, n: int) -> list[str]:
    """The n borrowers closest to liquidation, not yet liquidatable (the pool's own health)."""
    healths = []
    for b in devnet.manifest["borrowers"]:
        hf = devnet.account_data(b["address"])[5]
        if hf >= 10**18:
            healths.append((hf, b["address"]))
    return [a for _, a in sorted(healths)[:n]]


def show_metrics(port: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    wanted = ("keeperd_accounts_tracked", "keeperd_debt_at_risk_usd",
              "keeperd_head_block_number", "keeperd_liquidations_total",
              "keeperd_liquidation_profit_usd_total", "keeperd_liquidation_loss_usd_total",
              "keeperd_block_to_broadcast_seconds_count",
              "keeperd_health_mismatch_total", "keeperd_alerts_total",
              "keeperd_notifications_total", "keeperd_outbox_pending")
    for line in text.splitlines():
        if line.startswith(wanted):
            print("  " + line)


def _note_interrupts(interrupted: threading.Event) -> Callable[[], None]:
    """Chain a handler ahead of asyncio.run's own for SIGINT (which cancels the demo on the
    first, raises on the second) that notes the interruption; returns what puts it back.
    A terminal's Ctrl-C signals the whole process group, the demo's anvil with it: what fails
    afterwards for want of the devnet is the interruption's doing, not an error (`main`)."""
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: Any) -> None:
        interrupted.set()
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)

    def restore() -> None:
        signal.signal(signal.SIGINT, previous)
    return restore


async def run_demo(accounts: int, crash: float, log_path: Path,
                   interrupted: threading.Event | None = None) -> None:
    restore = (_note_interrupts(interrupted) if interrupted is not None
               and threading.current_thread() is threading.main_thread() else None)
    try:
        await _run_demo(accounts, crash, log_path)
    finally:
        if restore is not None:
            restore()


async def _run_demo(accounts: int, crash: float, log_path: Path) -> None:
    with Devnet(accounts) as devnet, open(log_path, "w") as log_file:  # noqa: ASYNC230
        metrics_port = free_port()
        state_dir = Path(tempfile.mkdtemp(prefix="keeperd-demo-"))
        receiver = Receiver()
        runner = web.AppRunner(receiver.app())
        await runner.setup()
        hook_port = free_port()
        await web.TCPSite(runner, "127.0.0.1", hook_port).start()
        config = load_config(ROOT / "config" / "devnet.yaml", env={
            "KEEPERD_DEVNET_RPC": devnet.manifest["rpc_url"],
            "KEEPERD_METRICS_PORT": str(metrics_port),
            "KEEPERD_STATE_DIR": str(state_dir),
            "KEEPERD_MODE": "liquidate",
            "KEEPERD_ALERT_WEBHOOK": f"http://127.0.0.1:{hook_port}/hook",
        })
        os.environ["KEEPERD_DEVNET_KEY"] = DEMO_KEEPER_KEY
        fund_keeper(devnet)
        configure_logging("info", "json", stream=log_file)
        aave = devnet.manifest["aave_v3"]
        banner(f"devnet up at {devnet.manifest['rpc_url']}: Aave {aave['version']} "
               f"(POOL_REVISION {aave['revision']}), {len(devnet.manifest['borrowers'])} "
               "seeded borrowers")
        print(f"pool {devnet.manifest['aave_v3']['pool']}, block {devnet.client.block_number()}")
        print(f"keeperd logs (JSON) go to {log_path}; its state directory is {state_dir} "
              f"(KEEPERD_STATE_DIR={state_dir} .venv/bin/keeperd status "
              "--config config/devnet.yaml)")

        # Watch the ten riskiest borrowers, as their holders would.
        watched = riskiest(devnet, 10)
        # Every block's cascade figures (the default throttle is 5 s; the demo is quicker).
        risk = config.risk.model_copy(update={"cascade": config.risk.cascade.model_copy(
            update={"min_interval_s": 0.0})})
        config = config.model_copy(update={"risk": risk, "alerts": AlertsConfig.model_validate({
            **config.alerts.model_dump(), "watchlists": [WatchlistConfig(
                name="holders", accounts=watched, warn=1.2, critical=1.05,
                route="ops").model_dump()]})})
        print(f"alerts: a watchlist of the {len(watched)} riskiest borrowers (warn 1.2, "
              f"critical 1.05) and the keeper's own events go to a local webhook receiver")

        daemon = Daemon(config, metrics=Metrics())
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop), name="daemon")
        try:
            await asyncio.wait_for(daemon.ready.wait(), 30)
            await wait_for_block(daemon, devnet.client.block_number())
            banner("keeperd is following the chain: the riskiest positions")
            show_positions(daemon, limit=10)

            old = devnet.price("WETH")
            new = old * (1 - crash)
            banner(f"WETH crashes {crash:.0%}: {old:,.0f} -> {new:,.0f} USD")
            before = keeper_balances(devnet)
            devnet.client.call("evm_setAutomine", False)  # blocks come when mined, as on a chain
            try:
                devnet.set_price_async("WETH", new)  # Aave's feed and Morpho's oracle
                crash_block = devnet.mine(1)
                await wait_for_block(daemon, crash_block)
                show_positions(daemon, limit=8)
                banner(f"block {crash_block}: keeperd sent its liquidations; "
                       f"block {crash_block + 1} includes them")
                await wait_for_block(daemon, devnet.mine(1))
            finally:
                # (Ctrl-C reaches anvil too, in the same process group: the devnet gone, its
                # refused connection replaced the interruption, and a Ctrl-C ended in
                # "process.uncaught_exception: ConnectionRefusedError" — a by-hand trial)
                with contextlib.suppress(OSError):
                    devnet.client.call("evm_setAutomine", True)
            await wait_for_block(daemon, devnet.mine(1))
            if CURIE in daemon.scanners:
                banner("Perp Curie: the mark walks to the new index; keeperd liquidates "
                       "and unwinds")
                await perps_follow(daemon, devnet, new)
            await show_journal(daemon)
            after = keeper_balances(devnet)
            print("\nkeeper balances (on chain):")
            for symbol in before:
                print(f"  {symbol:5} {before[symbol]:>18,.4f} -> {after[symbol]:>18,.4f}")
            banner("positions after the liquidations")
            show_positions(daemon, limit=8)

            banner("alerts the webhook receiver got")
            await asyncio.sleep(1.0)  # the outbox delivers in the background
            receiver.show()

            banner("cascade risk now: what further drops would liquidate (USD)")
            show_cascade(daemon)

            banner(f"metrics on http://127.0.0.1:{metrics_port}/metrics (excerpt)")
            await asyncio.to_thread(show_metrics, metrics_port)  # the server is on this loop
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await runner.cleanup()
        banner("stopped cleanly")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=300)
    parser.add_argument("--crash", type=float, default=0.30, help="WETH price drop (0.30 = 30 %%)")
    parser.add_argument("--log", type=Path, default=ROOT / ".devnet" / "demo.log")
    args = parser.parse_args()
    args.log.parent.mkdir(parents=True, exist_ok=True)
    interrupted = threading.Event()
    try:
        asyncio.run(run_demo(args.accounts, args.crash, args.log, interrupted))
        return 0
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        if not interrupted.is_set():
            # (the log file is closed by now, so the crash hook's traceback was "withheld: it
            # could not be logged" — a bare `ConnectionRefusedError` and no more: a trial)
            with open(args.log, "a") as log:
                traceback.print_exc(file=log)
            print(f"keeperd demo: stopped by {type(exc).__name__}: {str(exc)[:200]} (did the "
                  f"devnet's anvil stop? the traceback is at the end of {args.log})",
                  file=sys.stderr)
            return 1
        # (interrupted: the devnet went with the Ctrl-C, and a call to it failed on the way
        # out — said as the interruption it is, not as a crash: a by-hand trial)
    print("interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
