"""Benchmark: is a protocol's first liquidation after a crash as fast with every other
protocol configured as alone? (issue #31 item 4)

    python bench/isolation.py --rounds 7 --warm-blocks 5 --out bench/results/isolation.json

(`--warm-blocks`: empty blocks each daemon evaluates before the crash, so that the order
between its paths rests on the weights of a daemon that has run a while; see `run`.)

One devnet (Aave, Morpho Blue and Perp Curie deployed, `keeperd.devnet.handle.Devnet`), the
real daemon in this process (liquidate mode, websocket heads, the default config otherwise:
the cascade monitor on; the chain's USD feeds of Morpho's assets as its `reference_feeds` in
both configs, as docs/protocols.md tells a Morpho operator: `--no-references` for none).
For each round and each measured protocol P, two daemons in turn, each started on the same
devnet state (a snapshot, reverted to before every start): P alone,
then Aave, Morpho and Curie together. Once the daemon is quiet (every scanner done with the
head), automine goes off, a price moves that puts some of P's positions under water and no
other protocol's (`crash`: the figure is about the other protocols' *work*, not about their
liquidations competing for the same nonce), one block is mined, and the daemon's
own `liquidation.sent` of P at that block gives block_to_broadcast_ms (from the header's
arrival to the node's acceptance of the raw transaction). Reported: the median per (P,
config) and the ratio all / alone, both from this one run. Each round also keeps P's
`execution.timing` of the crash block (its path step by step: the scanner's steps, the
plan's, the first wave's), and the file the medians of each step alone and with all three.

Where the event loop was blocked is profiled in one extra round per P with everything
configured: asyncio's debug mode logs every callback or task step that held the loop longer
than `--slow-ms`; the result file keeps those steps, by task, that ran between the crash
block's arrival and P's first broadcast (what P's liquidation waited behind).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# anvil's default mnemonic, account 5 (a published test key).
KEEPER_KEY = "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba"
KEEPER = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"
PROTOCOLS = ("aave", "morpho", "curie")
MEASURED = ("aave", "morpho")  # (a Curie crash walks its mark over many blocks: not one block)
# The chain's own USD feeds of Morpho's markets' assets, the chain's `reference_feeds` in both
# configs (`--no-references`: none, as before 2026-12-05, see `config_for`).
REFERENCE_SYMBOLS = ("WETH", "USDC", "DAI", "WBTC")


def protocol_entry(devnet: Any, name: str) -> dict[str, Any]:
    manifest = devnet.manifest
    if name == "aave":
        return {"kind": "aave_v3", "name": "aave", "chain": "devnet",
                "addresses_provider": manifest["aave_v3"]["addresses_provider"]}
    if name == "morpho":
        blue = manifest["morpho_blue"]
        return {"kind": "morpho_blue", "name": "morpho", "chain": "devnet",
                "morpho": blue["morpho"], "markets": [m["id"] for m in blue["markets"].values()]}
    return {"kind": "perp_curie", "name": "curie", "chain": "devnet",
            "clearing_house": manifest["perp_curie"]["clearing_house"],
            "asset_symbols": {"vETH": "WETH", "vBTC": "WBTC"}}


def config_for(devnet: Any, state_dir: str, protocols: tuple[str, ...],
               references: bool = True) -> Any:
    """The daemon's config, the same chain whatever the protocols. `references`: the chain's
    USD feeds of Morpho's assets as `reference_feeds`, what docs/protocols.md tells a
    Morpho operator to configure (without them every Morpho market's own oracle goes
    unchecked, `oracle.rate_unchecked`). Without references the two configs differ in more
    than the other protocols: with Aave on the chain, Morpho's oracles are checked against
    Aave's feeds (the price watch's work for Morpho, on Morpho's path), alone they are not
    checked at all, and the ratio counts that safety check as interference."""
    from keeperd.config import parse_config

    return parse_config({
        "state_dir": state_dir,
        "chains": [{"name": "devnet", "chain_id": 31337,
                    "rpc_urls": [devnet.manifest["rpc_url"]],
                    "ws_url": devnet.manifest["ws_url"], "confirmations": 0,
                    "poll_interval": 0.5,
                    "reference_feeds": {s: devnet.manifest["price_feeds"][s]
                                        for s in REFERENCE_SYMBOLS} if references else {}}],
        "protocols": [protocol_entry(devnet, p) for p in protocols],
        "keeper": {"mode": "liquidate", "min_profit_usd": 1.0,
                   "key": {"source": "env", "env": "KEEPERD_BENCH_KEY"}},
        "metrics": {"enabled": False},
    }, env={})


def fund_keeper(devnet: Any) -> None:
    """Every reserve's token for Aave (the keeper's own balance is its capital), USDC and DAI
    approved to Morpho."""
    from keeperd.devnet import contracts

    token = contracts.aave("MintableERC20")
    devnet.client.call("anvil_setBalance", KEEPER, hex(100 * 10**18))
    morpho = devnet.manifest["morpho_blue"]["morpho"]
    for symbol, address in devnet.manifest["tokens"].items():
        decimals = devnet.manifest["aave_v3"]["reserves"][symbol]["decimals"]
        amount = int(50_000_000 / devnet.manifest["prices_usd"][symbol])
        devnet.client.send(KEEPER, address, token.encode_call("mint", KEEPER,
                                                              amount * 10**decimals))
        if symbol in ("USDC", "DAI"):
            devnet.client.send(KEEPER, address, token.encode_call("approve", morpho,
                                                                  2**256 - 1))


def crash(devnet: Any, protocol: str) -> list[str]:
    """Send (not mine: automine is off) a price move that puts some of P's positions under
    water and no other protocol's. Aave: WETH down 15 % on its feed only (Morpho's oracles stay:
    its positions are not touched; with everything configured, keeperd's breaker then pauses
    Morpho's WETH market, whose oracle now deviates from the feed — a stable's feed cannot be
    used instead: Aave caps it). Morpho: WETH down 2.5 % on its oracles and the feed together,
    as a market moves (an oracle moved alone would trip the breaker against the feed as its
    reference), too little to put an Aave position under."""
    admin = devnet.manifest["aave_v3"]["admin"]
    price = devnet.price("WETH")
    moves = (devnet._price_moves("WETH", price * 0.85)[:1] if protocol == "aave"
             else devnet._price_moves("WETH", price * 0.975))
    return [str(devnet.client.call("eth_sendTransaction", {
        "from": admin, "to": to, "data": "0x" + data.hex(), "gas": hex(gas or 300_000)}))
        for to, data, gas in moves]


def crash_block(devnet: Any, hashes: list[str]) -> int:
    """The block the crash landed in (asked of the node: another block may be mined beside
    the bench's own, e.g. by a transaction the daemon sent as automine went off)."""
    blocks = {int(devnet.client.call("eth_getTransactionReceipt", h)["blockNumber"], 16)
              for h in hashes}
    if len(blocks) != 1:
        raise RuntimeError(f"the crash's transactions landed in blocks {sorted(blocks)}")
    return blocks.pop()


class LogTail:
    """The daemon's JSON log lines, read as they come (the daemon runs in this process)."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream
        self.offset = 0
        self.events: list[dict[str, Any]] = []
        self.since = 0  # the first event of this round (block numbers repeat after a revert)

    def start_round(self) -> None:
        self.poll()
        self.since = len(self.events)

    def poll(self) -> None:
        text = self.stream.getvalue()
        end = text.rfind("\n") + 1
        for line in text[self.offset:end].splitlines():
            if line.startswith("{"):
                self.events.append(json.loads(line))
        self.offset = max(self.offset, end)

    def first_sent(self, protocol: str, block: int) -> dict[str, Any] | None:
        self.poll()
        for event in self.events[self.since:]:
            if (event.get("event") == "liquidation.sent" and event.get("block") == block
                    and str(event.get("opportunity", "")).startswith(protocol + ":")):
                return event
        return None

    def timing(self, protocol: str, block: int) -> dict[str, Any] | None:
        """The protocol's first `execution.timing` of the block: where its path spent the
        time up to its first wave's broadcast (the scanner's steps, the plan's, the waves')."""
        self.poll()
        for event in self.events[self.since:]:
            if (event.get("event") == "execution.timing" and event.get("block") == block
                    and event.get("protocol") == protocol):
                waves = event.get("waves") or []
                return {"plan_ms": event.get("plan_ms"), "stages": event.get("stages"),
                        "first_wave": waves[0] if waves else None}
        return None


class SlowSteps(logging.Handler):
    """asyncio's debug mode: 'Executing <Task ...> took 0.412 seconds', kept with the time
    the step ended."""

    PATTERN = re.compile(r"Executing (?P<what>.*) took (?P<s>[0-9.]+) seconds")

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.steps: list[tuple[float, str, float]] = []  # (ended at perf_counter, what, s)

    def emit(self, record: logging.LogRecord) -> None:
        match = self.PATTERN.search(record.getMessage())
        if match:
            self.steps.append((time.perf_counter(), describe_step(match["what"]),
                               float(match["s"])))


def describe_step(what: str) -> str:
    """A task's name and the coroutine it runs, or a handle's callback (no addresses)."""
    task = re.search(r"name='([^']+)' coro=<([\w.<>]+)\(", what)
    if task:
        return f"task {task[1]}: {task[2]}"
    return re.sub(r" at 0x[0-9a-f]+", "", what)[:160]


async def one_round(devnet: Any, snapshot: list[str], protocols: tuple[str, ...],
                    measured: str, tail: LogTail, profile: SlowSteps | None = None,
                    slow_ms: float = 20.0, warm_blocks: int = 0, references: bool = True
                    ) -> dict[str, Any]:
    from keeperd.daemon import Daemon
    from keeperd.metrics import Metrics

    devnet.revert(snapshot[0])
    snapshot[0] = devnet.snapshot()  # (a snapshot is used up by its revert)
    devnet.client.call("evm_setAutomine", True)
    devnet.refresh_feeds()
    devnet.mine(1)
    loop = asyncio.get_running_loop()
    tail.start_round()
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(config_for(devnet, tmp, protocols, references), metrics=Metrics())
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        try:
            await asyncio.wait_for(daemon.ready.wait(), 180)
            for _ in range(warm_blocks):  # a daemon that has run a while (see `run`)
                warm = await asyncio.to_thread(devnet.mine, 1)
                await wait_until(lambda: all(s.completed_block >= warm  # noqa: B023
                                             for s in daemon.scanners.values()), 120)
            while True:  # quiet: every scanner done with the head, and no newer one
                # (the daemon's own start-up transactions are mined meanwhile)
                head = devnet.client.block_number()
                await wait_until(lambda: all(s.completed_block >= head  # noqa: B023
                                             for s in daemon.scanners.values()), 120)
                if devnet.client.block_number() == head:
                    break
            # What the order weighs each path by as the crash comes (ms)
            weights = {s.adapter.name: round(daemon.order.weight(s.name) * 1000, 2)
                       for s in daemon.scanners.values()}
            devnet.client.call("evm_setAutomine", False)
            hashes = await asyncio.to_thread(crash, devnet, measured)
            if profile is not None:
                loop.set_debug(True)
                loop.slow_callback_duration = slow_ms / 1000
                profile.steps.clear()
            started = time.perf_counter()
            await asyncio.to_thread(devnet.mine, 1)
            block = await asyncio.to_thread(crash_block, devnet, hashes)
            sent: dict[str, Any] | None = None

            def found() -> bool:
                nonlocal sent
                sent = tail.first_sent(measured, block)
                return sent is not None

            await wait_until(found, 60)
            sent_at = time.perf_counter()
            # The other protocols' scans of the crash block, finished or not: how long they
            # ran beside P's liquidation path.
            await wait_until(lambda: all(s.completed_block >= block
                                         for s in daemon.scanners.values()), 60)
            loop.set_debug(False)
            assert sent is not None
            out: dict[str, Any] = {"block": block, "ms": sent["block_to_broadcast_ms"],
                                   "timing": tail.timing(measured, block),
                                   "weights_ms": weights}
            if profile is not None:
                out["blocked_before_broadcast"] = summarize_steps(
                    [s for s in profile.steps if started <= s[0] <= sent_at])
                out["blocked_in_block"] = summarize_steps(
                    [s for s in profile.steps if s[0] >= started])
            return out
        finally:
            loop.set_debug(False)
            stop.set()
            await asyncio.wait_for(task, 60)
            # What the round sent stays out of the next (the revert restores the state; the
            # node's pool of pending transactions is dropped here).
            devnet.client.call("anvil_dropAllTransactions")
            devnet.client.call("evm_setAutomine", True)


def summarize_steps(steps: list[tuple[float, str, float]]) -> list[dict[str, Any]]:
    by: dict[str, list[float]] = {}
    for _, what, seconds in steps:
        by.setdefault(what, []).append(seconds)
    rows = [{"step": what, "count": len(s), "total_ms": round(sum(s) * 1000, 1),
             "max_ms": round(max(s) * 1000, 1)} for what, s in by.items()]
    return sorted(rows, key=lambda r: -r["total_ms"])


def median_stages(timings: list[dict[str, Any] | None]) -> dict[str, float]:
    """Per step of the path (the scanner's, the plan's, the first wave's): its median over
    the rounds that logged it."""
    by: dict[str, list[float]] = {}
    for timing in timings:
        if timing is None:
            continue
        steps = {"plan_ms": timing.get("plan_ms"), **(timing.get("stages") or {}),
                 **{f"wave1_{k}": v for k, v in (timing.get("first_wave") or {}).items()
                    if k != "size"}}
        if isinstance(steps.get("evaluated_ms"), int | float) and isinstance(
                steps.get("result_ms"), int | float):
            # the listeners ahead of the executor (the price watch's judgement)
            steps["before_executor_ms"] = steps["evaluated_ms"] - steps["result_ms"]
        for name, value in steps.items():
            if isinstance(value, int | float):
                by.setdefault(name, []).append(float(value))
    return {name: round(statistics.median(values), 2) for name, values in by.items()}


async def wait_until(condition: Callable[[], bool], limit_s: float) -> None:
    async def check() -> None:
        while not condition():  # noqa: ASYNC110 - a bench polls
            await asyncio.sleep(0.005)
    await asyncio.wait_for(check(), limit_s)


async def run(rounds: int, measured: tuple[str, ...], slow_ms: float,
              warm_blocks: int = 0, references: bool = True) -> dict[str, Any]:
    """`warm_blocks`: empty blocks each daemon evaluates before the crash. The order between
    the paths (keeperd/liquidation_first.py) weighs each by its lightest of its last 5
    runs; a daemon just started has one or two, its start-up scans among them, and orders
    its paths on a single sample — not what a daemon that has run for a while does."""
    import os

    import structlog

    from keeperd.devnet.handle import Devnet
    from keeperd.logs import configure_logging

    os.environ["KEEPERD_BENCH_KEY"] = KEEPER_KEY
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    tail = LogTail(out)
    slow = SlowSteps()
    logging.getLogger("asyncio").addHandler(slow)
    figures: dict[str, dict[str, list[float]]] = {p: {"alone": [], "all": []} for p in measured}
    timings: dict[str, dict[str, list[Any]]] = {p: {"alone": [], "all": []} for p in measured}
    profiles: dict[str, Any] = {}
    weights: dict[str, list[Any]] = {p: [] for p in measured}
    try:
        with Devnet() as devnet:
            fund_keeper(devnet)
            snapshot = [devnet.snapshot()]
            for _ in range(rounds):
                for p in measured:  # alone and all interleaved: the same machine load
                    for label, protocols in (("alone", (p,)), ("all", PROTOCOLS)):
                        r = await one_round(devnet, snapshot, protocols, p, tail,
                                            warm_blocks=warm_blocks, references=references)
                        figures[p][label].append(r["ms"])
                        timings[p][label].append(r["timing"])
                        if label == "all":
                            weights[p].append(r["weights_ms"])
                        print(f"{p} {label}: {r['ms']} ms (order_wait "
                              f"{((r['timing'] or {}).get('stages') or {}).get('order_wait_ms')}"
                              f" ms; weights, ms: {r['weights_ms']})", flush=True)
            for p in measured:
                profiles[p] = await one_round(devnet, snapshot, PROTOCOLS, p, tail,
                                              profile=slow, slow_ms=slow_ms,
                                              warm_blocks=warm_blocks, references=references)
    finally:
        logging.getLogger("asyncio").removeHandler(slow)
        structlog.reset_defaults()
        if os.environ.get("KEEPERD_BENCH_LOG"):
            Path(os.environ["KEEPERD_BENCH_LOG"]).write_text(out.getvalue())  # noqa: ASYNC240
    result: dict[str, Any] = {"rounds": rounds, "warm_blocks": warm_blocks,
                              "reference_feeds": list(REFERENCE_SYMBOLS) if references else [],
                              "protocols_all": list(PROTOCOLS),
                              "slow_step_ms": slow_ms, "protocols": {}}
    for p, by in figures.items():
        alone, every = statistics.median(by["alone"]), statistics.median(by["all"])
        result["protocols"][p] = {
            "alone_ms": by["alone"], "all_ms": by["all"],
            "alone_median_ms": round(alone, 2), "all_median_ms": round(every, 2),
            "ratio_all_over_alone": round(every / alone, 3),
            # each round's path, step by step (`execution.timing`), and the medians of its
            # steps: where the time with every protocol configured goes beyond alone's
            "timing_alone": timings[p]["alone"], "timing_all": timings[p]["all"],
            # the order's weight of each path as each round's crash came (all three)
            "weights_ms_all": weights[p],
            "stages_median_alone": median_stages(timings[p]["alone"]),
            "stages_median_all": median_stages(timings[p]["all"]),
            "profile_all": profiles.get(p)}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--protocols", nargs="+", choices=MEASURED, default=list(MEASURED))
    parser.add_argument("--slow-ms", type=float, default=20.0,
                        help="the profile round's threshold for a step that blocks the loop")
    parser.add_argument("--warm-blocks", type=int, default=0,
                        help="empty blocks each daemon evaluates before the crash (its "
                             "paths' weights: their lightest of 5 runs)")
    parser.add_argument("--no-references", action="store_true",
                        help="no chains[].reference_feeds in either config (the bench's "
                             "definition before 2026-12-05: see config_for)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from provenance import provenance, settled  # bench/, beside this script

    measured = provenance()  # (before the run: the code it loads)

    result = asyncio.run(run(args.rounds, tuple(args.protocols), args.slow_ms,
                             args.warm_blocks, not args.no_references))
    result.update(**settled(measured))
    out = args.out or ROOT / "bench" / "results" / "isolation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    for p, r in result["protocols"].items():
        print(f"{p}: first liquidation after a crash, median of {args.rounds}: alone "
              f"{r['alone_median_ms']} ms, with {', '.join(PROTOCOLS)} {r['all_median_ms']} ms:"
              f" ratio {r['ratio_all_over_alone']}")
        for row in (r["profile_all"] or {}).get("blocked_before_broadcast", [])[:5]:
            print(f"    loop blocked before the broadcast: {row['total_ms']} ms "
                  f"({row['count']}x, max {row['max_ms']}) {row['step']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
