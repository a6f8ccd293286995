"""Benchmark: time from a block's arrival at keeperd to the broadcast of the liquidations it
revealed.

    python bench/latency.py --accounts 10000 --rounds 30 --out bench/results/latency-10000.json

Starts the devnet seeded with N borrowers and the real daemon (liquidate mode, the keeper's own
balance as capital, websocket heads) in this process. Each round lowers the WETH price by
`--step` (default 1 %), which makes a new slice of accounts liquidatable (and leaves the
half-liquidated ones liquidatable again). The latencies are the daemon's own measurement,
logged with every `liquidation.sent`: from the moment the block's header reached keeperd to
the moment the node accepted the raw transaction. Reported: p50 and p99 over every
liquidation, and over the first liquidation of each round, and the tail over the first (p99
over the first's p50); the stages of each round's waves (plan, simulate, journal + sign,
broadcast) from the daemon's `execution.timing` events.

    python bench/latency.py --accounts 10000 --rounds 30 --delay-ms 50

With `--delay-ms N` the daemon talks to anvil through the delay proxy (keeperd/devnet/
delay_proxy.py: N ms on every HTTP request and websocket message it sends, in a process of its
own as a remote provider is), which also counts the sequential round trips from each round's
head to its first broadcast.

    python bench/latency.py --accounts 10000 --rounds 30 --cpu

After each round (its liquidations in the node's pool, keeperd idle until the next block)
the bench measures the node's own share of the round (`node_by_round`): the round's
liquidations simulated again at the same head, a batch of 16 after another, then taken out of
the pool and sent again byte for byte, 16 a batch, one batch after another. `p99_node_serial_ms`
is the p99 the rounds would have if, after its plan (`plan_ms`: the head to the first
simulation asked), each round's liquidations were spread evenly over that serial work, and
`tail_over_first_node_serial` that over the measured first liquidation's p50. It is not a
bound (anvil takes a send while it simulates: keeperd's overlapped waves come in under it);
a measured p99 above it would say keeperd, not the node, is what the tail waits for.
Without a delay only: through the proxy the replay would measure its delay.

    python bench/latency.py --accounts 10000 --rounds 30 --waves

With `--waves` the keeper's address is delegated to keeperd's KeeperWave before the daemon
starts (deployed at its derived address, as `keeperd wave deploy` and `keeperd wave delegate`
do): a block's liquidations go out as one transaction (a delegated address has one in flight
at a time; execution/wave_code.py); the latencies are still each liquidation's.

With `--cpu` each round also records the CPU time keeperd and anvil spent in it (`cpu`, an
upper bound). It is sampled every 5 ms on the daemon's own loop, which costs the daemon ~7 %
of its loop in a round: the latencies of such a run are not comparable with one without.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# After a round: the node's work for its liquidations, {"liquidations", "node_ms", ...}.
NodeProbe = Callable[[str, str], Awaitable[dict[str, Any]]]

# anvil's default mnemonic, account 5 (a published test key).
KEEPER_KEY = "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba"


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def run(accounts: int, rounds: int, step: float, cascade: bool = True,
              aave: str = "v3.6", delay_ms: float | None = None,
              cpu: bool = False, *,
              before_daemon: Callable[[Any], dict[str, Any]] | None = None,
              node_probe: NodeProbe | None = None,
              keep_rounds: bool = False) -> dict[str, Any]:
    """The rounds; `before_daemon(devnet)` runs once the keeper is funded, before the daemon
    starts (what it returns is added to the daemon's `keeper` config), and
    `node_probe(rpc_url, keeper)` after each round in place of `node_work` (bench/wave_tx.py
    measures another way of sending the same liquidations with them);
    `keep_rounds` keeps each round's latencies and timing events in the result."""
    import contextlib
    import os

    from keeperd.devnet.delay_proxy import DelayProxyProcess
    from keeperd.devnet.handle import Devnet
    from keeperd.logs import configure_logging

    os.environ["KEEPERD_BENCH_KEY"] = KEEPER_KEY
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    with Devnet(accounts, aave_version=aave) as devnet, tempfile.TemporaryDirectory() as tmp:
        # (in a process of its own, as a remote provider is: its forwarding takes none of
        # the daemon's CPU)
        proxy = (DelayProxyProcess(devnet.manifest["rpc_url"], devnet.manifest["ws_url"],
                                   delay_s=delay_ms / 1000) if delay_ms is not None else None)
        async with proxy if proxy is not None else contextlib.nullcontext():
            return await _rounds(devnet, tmp, out, proxy, rounds, step, cascade, accounts,
                                 cpu, before_daemon, node_probe or node_work, keep_rounds)


async def _rounds(devnet: Any, tmp: str, out: io.StringIO, proxy: Any, rounds: int,
                  step: float, cascade: bool, accounts: int, cpu: bool,
                  before_daemon: Callable[[Any], dict[str, Any]] | None,
                  node_probe: NodeProbe, keep_rounds: bool) -> dict[str, Any]:
    import os

    from keeperd.config import parse_config
    from keeperd.daemon import Daemon
    from keeperd.devnet import contracts
    from keeperd.metrics import Metrics

    token = contracts.aave("MintableERC20")
    keeper = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"
    for symbol in devnet.manifest["tokens"]:
        decimals = devnet.manifest["aave_v3"]["reserves"][symbol]["decimals"]
        devnet.client.send(keeper, devnet.manifest["tokens"][symbol],
                           token.encode_call("mint", keeper, 10**12 * 10**decimals))
    keeper_extra = before_daemon(devnet) if before_daemon is not None else {}
    config = parse_config({
        "state_dir": tmp,
        "chains": [{"name": "devnet", "chain_id": 31337,
                    "rpc_urls": [proxy.http_url if proxy else devnet.manifest["rpc_url"]],
                    "ws_url": proxy.ws_url if proxy else devnet.manifest["ws_url"],
                    "confirmations": 0,
                    "poll_interval": 0.5, "multicall_chunk_size": 10_000}],
        "protocols": [{"kind": "aave_v3", "name": "aave", "chain": "devnet",
                       "addresses_provider":
                           devnet.manifest["aave_v3"]["addresses_provider"]}],
        "keeper": {"mode": "liquidate", "min_profit_usd": 1.0,
                   "key": {"source": "env", "env": "KEEPERD_BENCH_KEY"}, **keeper_extra},
        "metrics": {"enabled": False},
        "risk": {"cascade": {"enabled": cascade}},
    }, env={})
    daemon = Daemon(config, metrics=Metrics())
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    await asyncio.wait_for(daemon.ready.wait(), 120)
    scanner = daemon.scanners["aave"]

    # (when, this process's CPU, anvil's CPU): sampled while a round's block is worked on,
    # to tell whether its tail waits for a busy machine, and which side is busy
    anvil_pid = devnet.anvil.process.pid if devnet.anvil.process is not None else None
    cpu_samples: dict[int, list[tuple[float, float, float]]] = {}

    async def completed(block: int, sampled: bool = False) -> None:
        while scanner.completed_block < block:  # (a bench polls)
            if sampled:
                cpu_samples.setdefault(block, []).append(
                    (time.perf_counter(), time.process_time(), cpu_seconds(anvil_pid)))
            await asyncio.sleep(0.005)

    await asyncio.wait_for(completed(devnet.client.block_number()), 120)
    price = devnet.price("WETH")
    node: dict[int, dict[str, float]] = {}
    round_blocks: list[int] = []
    # Blocks come when mined, like a real chain's: a broadcast lands in the mempool
    # (with automine, anvil would mine a block inside every eth_sendRawTransaction).
    devnet.client.call("evm_setAutomine", False)
    for _ in range(rounds):
        price *= 1 - step
        await asyncio.to_thread(devnet.set_price_async, "WETH", price)
        block = await asyncio.to_thread(devnet.mine, 1)
        # (from the mined block's return, about when its header reaches the daemon: anvil's
        # own mining is not the round's work)
        round_blocks.append(block)
        if cpu:
            cpu_samples[block] = [(time.perf_counter(), time.process_time(),
                                   cpu_seconds(anvil_pid))]
        await asyncio.wait_for(completed(block, sampled=cpu), 60)
        if proxy is None:
            node[block] = await node_probe(devnet.manifest["rpc_url"], keeper)
        # The round's liquidations are mined in the next block, before the next move.
        await asyncio.wait_for(completed(await asyncio.to_thread(devnet.mine, 1)), 60)
    stop.set()
    await asyncio.wait_for(task, 30)
    if proxy is not None:
        await proxy.collect()

    import structlog

    structlog.reset_defaults()
    if os.environ.get("KEEPERD_BENCH_LOG"):
        Path(os.environ["KEEPERD_BENCH_LOG"]).write_text(out.getvalue())  # noqa: ASYNC240
    sent: dict[int, list[float]] = {}  # block -> latencies of the liquidations it revealed
    timings: dict[int, list[dict[str, Any]]] = {}  # block -> its execution.timing events
    for line in out.getvalue().splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        if event.get("event") == "liquidation.sent" and event.get("block") in round_blocks:
            sent.setdefault(event["block"], []).append(event["block_to_broadcast_ms"])
        if event.get("event") == "execution.timing" and event.get("block") in round_blocks:
            timings.setdefault(event["block"], []).append(
                {k: event.get(k) for k in ("partial", "plan_ms", "stages", "waves")})
    busy = [cpu_busy(cpu_samples.get(b, []), max(sent.get(b, [0.0]))) for b in round_blocks]
    serial = node_serial_latencies(sent, timings, node)
    every = [ms for per in sent.values() for ms in per]
    first = [min(per) for per in sent.values() if per]
    trips = ([proxy.round_trips_to_send(b) for b in round_blocks]
             if proxy is not None else [])
    counted = [t for t in trips if t is not None]
    kept = {"sent_by_round": sent, "timings_by_round": timings} if keep_rounds else {}
    return {
        **kept,
        "accounts": accounts,
        "rounds": rounds,
        "liquidations_sent": len(every),
        "p50_ms": round(percentile(every, 50), 2),
        "p99_ms": round(percentile(every, 99), 2),
        "max_ms": round(max(every), 2) if every else None,
        "first_per_round_p50_ms": round(percentile(first, 50), 2),
        "first_per_round_p99_ms": round(percentile(first, 99), 2),
        "mean_liquidations_per_round": round(statistics.mean(len(v) for v in sent.values()), 1)
        if sent else 0,
        "price_step": step,
        "tail_over_first": round(percentile(every, 99) / percentile(first, 50), 2)
        if first else None,
        "delay_ms": proxy.delay_s * 1000 if proxy is not None else None,
        "round_trips_head_to_first_send": trips,
        "round_trips_max": max(counted) if counted else None,
        "cpu_sampled": cpu,
        "p99_node_serial_ms": round(percentile(serial, 99), 2) if serial else None,
        "tail_over_first_node_serial": round(percentile(serial, 99) / percentile(first, 50), 2)
        if serial and first else None,
        "node_by_round": [{"block": b, **node[b]} for b in round_blocks if b in node],
        "stages_by_round": [{"block": b, "passes": timings.get(b, []), "cpu": busy[i]}
                            for i, b in enumerate(round_blocks)],
    }


Rpc = Callable[[list[tuple[str, list[Any]]]], Awaitable[list[Any]]]


def batch_rpc(session: Any, rpc_url: str) -> Rpc:
    """A function asking the node a list of calls in one JSON-RPC batch: their results in
    order, an error raised (the replays below read a quiet node: nothing may fail)."""
    async def rpc(calls: list[tuple[str, list[Any]]]) -> list[Any]:
        body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p}
                for i, (m, p) in enumerate(calls)]
        async with session.post(rpc_url, json=body) as resp:
            answers = sorted(await resp.json(), key=lambda a: a["id"])
        for a in answers:
            if "error" in a:
                raise RuntimeError(f"{calls[a['id']][0]}: {a['error']}")
        return [a["result"] for a in answers]
    return rpc


async def pending_of(rpc: Rpc, keeper: str) -> list[dict[str, Any]]:
    """The keeper's transactions in the node's pool, by nonce."""
    [content] = await rpc([("txpool_content", [])])
    mine = {k.lower(): v for k, v in content["pending"].items()}.get(keeper.lower(), {})
    return [mine[n] for n in sorted(mine, key=int)]


async def node_work(rpc_url: str, keeper: str) -> dict[str, float]:
    """The node's serial share of a round (see the module's doc): the keeper's pending
    liquidations simulated again at the head in batches of 16, one after another, then
    removed from the pool and sent again, byte for byte, 16 a batch (the pool ends as it
    was: the same transactions, the same hashes, mined by the next block)."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        rpc = batch_rpc(session, rpc_url)
        txs = await pending_of(rpc, keeper)
        if not txs:
            return {"liquidations": 0, "simulate_ms": 0.0, "send_ms": 0.0, "node_ms": 0.0}
        calls = [{"from": keeper, "to": t["to"], "data": t["input"], "gas": t["gas"]}
                 for t in txs]
        began = time.perf_counter()
        for i in range(0, len(calls), 16):
            await rpc([("eth_call", [c, "latest"]) for c in calls[i:i + 16]])
        simulated = time.perf_counter()
        hashes = [t["hash"] for t in txs]
        raws = await rpc([("eth_getRawTransactionByHash", [h]) for h in hashes])
        await rpc([("anvil_removePoolTransactions", [keeper])])
        resent = time.perf_counter()
        again: list[str] = []
        for i in range(0, len(raws), 16):
            again += await rpc([("eth_sendRawTransaction", [r]) for r in raws[i:i + 16]])
        sent = time.perf_counter()
        if [h.lower() for h in again] != [h.lower() for h in hashes]:
            raise RuntimeError("the pool did not take the round's transactions back as they were")
    return {"liquidations": len(txs), "simulate_ms": _round_ms(simulated - began),
            "send_ms": _round_ms(sent - resent),
            "node_ms": _round_ms(simulated - began + sent - resent)}


def node_serial_latencies(sent: dict[int, list[float]],
                          timings: dict[int, list[dict[str, Any]]],
                          node: dict[int, dict[str, float]]) -> list[float]:
    """Each round's liquidations as if the node did the round's work serially after the plan
    (the head to the first simulation asked, from the round's first pass): the k-th of N
    answered at k/N of the node's serial work for the round."""
    serial: list[float] = []
    for block, latencies in sent.items():
        work = node.get(block)
        plans = [t["plan_ms"] for t in timings.get(block, []) if t.get("plan_ms") is not None]
        if work is None or not plans or not work["liquidations"]:
            continue
        n = len(latencies)
        serial += [min(plans) + work["node_ms"] * (k + 1) / n for k in range(n)]
    return serial


def cpu_seconds(pid: int | None) -> float:
    """CPU time of every thread of a process so far (ns-precise, from schedstat; 0 without
    a pid or /proc)."""
    if pid is None:
        return 0.0
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    except OSError:
        return 0.0
    return total / 1e9


def cpu_busy(samples: list[tuple[float, float, float]], last_ms: float) -> dict[str, float]:
    """Over a round, from its block's mining (the node's answer) to its last broadcast: the
    wall time, and the CPU time keeperd's process and anvil's spent in it (on 2 cores,
    together near twice the wall time means the machine was the limit). The end is the first
    sample at or after the last broadcast: samples are taken only when the daemon lets the
    bench's task run, so the window may reach past it (an upper bound)."""
    if len(samples) < 2 or not last_ms:
        return {}
    start = samples[0]
    end = next((x for x in samples if x[0] - start[0] >= last_ms / 1000), samples[-1])
    return {"wall_ms": _round_ms(end[0] - start[0]),
            "keeperd_cpu_ms": _round_ms(end[1] - start[1]),
            "anvil_cpu_ms": _round_ms(end[2] - start[2])}


def _round_ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def delegate_to_wave(devnet: Any) -> dict[str, Any]:
    """KeeperWave deployed at its derived address and the keeper's address delegated to it
    (the `keeperd wave` commands' transactions, signed here): keeperd then sends a block's
    liquidations as one transaction."""
    from eth_account import Account

    from keeperd.execution import wave_code

    client = devnet.client
    keeper = Account.from_key(KEEPER_KEY)
    if client.call("eth_getCode", wave_code.WAVE_ADDRESS, "latest") in ("0x", "0x0"):
        client.send(keeper.address, wave_code.DEPLOYER, wave_code.deployment_input())
    nonce = int(client.call("eth_getTransactionCount", keeper.address, "latest"), 16)
    authorization = keeper.sign_authorization(
        {"chainId": 31337, "address": wave_code.WAVE_ADDRESS, "nonce": nonce + 1})
    raw = keeper.sign_transaction({
        "type": 4, "chainId": 31337, "nonce": nonce, "to": keeper.address, "value": 0,
        "data": "0x", "gas": 100_000, "maxFeePerGas": 10**11, "maxPriorityFeePerGas": 10**9,
        "authorizationList": [authorization]}).raw_transaction
    client.wait_receipt(client.call("eth_sendRawTransaction", "0x" + raw.hex()))
    code = client.call("eth_getCode", keeper.address, "latest").lower()
    if code != "0xef0100" + wave_code.WAVE_ADDRESS[2:].lower():
        raise RuntimeError(f"the keeper's code is {code}, not the delegation to KeeperWave")
    return {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--step", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-cascade", action="store_true",
                        help="without the cascade engine's per-block what-ifs")
    parser.add_argument("--aave", choices=("v3.6", "v3.0"), default="v3.6",
                        help="which Aave the devnet runs (default: today's)")
    parser.add_argument("--delay-ms", type=float, default=None,
                        help="through the delay proxy, N ms on every request the daemon sends "
                             "(and the round trips from head to first broadcast counted)")
    parser.add_argument("--cpu", action="store_true",
                        help="sample keeperd's and anvil's CPU time through each round "
                             "(every 5 ms, on the daemon's loop: it costs the daemon ~7 %% of "
                             "its loop in a round and lengthens the tail it measures)")
    parser.add_argument("--waves", action="store_true",
                        help="the keeper delegated to KeeperWave: a block's liquidations in one "
                             "transaction")
    args = parser.parse_args()
    from provenance import provenance, settled  # bench/, beside this script

    measured = provenance()  # (before the run: the code it loads)

    result = asyncio.run(run(args.accounts, args.rounds, args.step, not args.no_cascade,
                             args.aave, args.delay_ms, args.cpu,
                             before_daemon=delegate_to_wave if args.waves else None))
    result.update(cascade=not args.no_cascade, aave=args.aave, waves=args.waves,
                  **settled(measured))
    tag = ("" if args.aave == "v3.6" else f"-aave{args.aave}") + ("-waves" if args.waves else "")
    out = args.out or ROOT / "bench" / "results" / f"latency-{args.accounts}{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"accounts {result['accounts']}, rounds {result['rounds']}, "
          f"liquidations {result['liquidations_sent']} "
          f"({result['mean_liquidations_per_round']} a round)")
    print(f"block arrival -> broadcast: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
          f"max {result['max_ms']} ms")
    print(f"first liquidation of each round: p50 {result['first_per_round_p50_ms']} ms, "
          f"p99 {result['first_per_round_p99_ms']} ms")
    print(f"tail over first: p99 / first p50 = {result['tail_over_first']}")
    if result["p99_node_serial_ms"] is not None:
        print(f"the node's serial work (each round's plan, then its liquidations simulated and "
              f"sent one batch after another): p99 {result['p99_node_serial_ms']} ms, over the "
              f"first's p50 {result['tail_over_first_node_serial']}")
    if result["delay_ms"] is not None:
        print(f"+{result['delay_ms']} ms a request: round trips head -> first broadcast, max "
              f"{result['round_trips_max']}: {result['round_trips_head_to_first_send']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
