"""Benchmark: time from a block's arrival at keeperd to the broadcast of the liquidations it
revealed.

    python bench/latency.py --accounts 10000 --rounds 30 --out bench/results/latency-10000.json

Starts the devnet seeded with N borrowers and the real daemon (liquidate mode, the keeper's own
balance as capital, websocket heads) in this process. Each round lowers the WETH price by
`--step` (default 1 %), which makes a new slice of accounts liquidatable (and leaves the
half-liquidated ones liquidatable again). The latencies are the daemon's own measurement,
logged with every `liquidation.sent`: from the moment the block's header reached keeperd to
the moment the node accepted the raw transaction. Reported: p50 and p99 over every
liquidation, and over the first liquidation of each round.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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
              aave: str = "v3.6") -> dict[str, Any]:
    import os

    from keeperd.config import parse_config
    from keeperd.daemon import Daemon
    from keeperd.devnet import contracts
    from keeperd.devnet.handle import Devnet
    from keeperd.logs import configure_logging
    from keeperd.metrics import Metrics

    os.environ["KEEPERD_BENCH_KEY"] = KEEPER_KEY
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    with Devnet(accounts, aave_version=aave) as devnet, tempfile.TemporaryDirectory() as tmp:
        token = contracts.aave("MintableERC20")
        keeper = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"
        for symbol in devnet.manifest["tokens"]:
            decimals = devnet.manifest["aave_v3"]["reserves"][symbol]["decimals"]
            devnet.client.send(keeper, devnet.manifest["tokens"][symbol],
                               token.encode_call("mint", keeper, 10**12 * 10**decimals))
        config = parse_config({
            "state_dir": tmp,
            "chains": [{"name": "devnet", "chain_id": 31337,
                        "rpc_urls": [devnet.manifest["rpc_url"]],
                        "ws_url": devnet.manifest["ws_url"], "confirmations": 0,
                        "poll_interval": 0.5, "multicall_chunk_size": 10_000}],
            "protocols": [{"kind": "aave_v3", "name": "aave", "chain": "devnet",
                           "addresses_provider":
                               devnet.manifest["aave_v3"]["addresses_provider"]}],
            "keeper": {"mode": "liquidate", "min_profit_usd": 1.0,
                       "key": {"source": "env", "env": "KEEPERD_BENCH_KEY"}},
            "metrics": {"enabled": False},
            "risk": {"cascade": {"enabled": cascade}},
        }, env={})
        daemon = Daemon(config, metrics=Metrics())
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        await asyncio.wait_for(daemon.ready.wait(), 120)
        scanner = daemon.scanners["aave"]

        async def completed(block: int) -> None:
            while scanner.completed_block < block:  # noqa: ASYNC110 - a bench polls
                await asyncio.sleep(0.005)

        await asyncio.wait_for(completed(devnet.client.block_number()), 120)
        price = devnet.price("WETH")
        round_blocks: list[int] = []
        # Blocks come when mined, like a real chain's: a broadcast lands in the mempool
        # (with automine, anvil would mine a block inside every eth_sendRawTransaction).
        devnet.client.call("evm_setAutomine", False)
        for _ in range(rounds):
            price *= 1 - step
            await asyncio.to_thread(devnet.set_price_async, "WETH", price)
            block = await asyncio.to_thread(devnet.mine, 1)
            round_blocks.append(block)
            await asyncio.wait_for(completed(block), 60)
            # The round's liquidations are mined in the next block, before the next move.
            await asyncio.wait_for(completed(await asyncio.to_thread(devnet.mine, 1)), 60)
        stop.set()
        await asyncio.wait_for(task, 30)

    import structlog

    structlog.reset_defaults()
    if os.environ.get("KEEPERD_BENCH_LOG"):
        Path(os.environ["KEEPERD_BENCH_LOG"]).write_text(out.getvalue())  # noqa: ASYNC240
    sent: dict[int, list[float]] = {}  # block -> latencies of the liquidations it revealed
    for line in out.getvalue().splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        if event.get("event") == "liquidation.sent" and event.get("block") in round_blocks:
            sent.setdefault(event["block"], []).append(event["block_to_broadcast_ms"])
    every = [ms for per in sent.values() for ms in per]
    first = [min(per) for per in sent.values() if per]
    return {
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
    }


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
    args = parser.parse_args()
    from provenance import provenance  # bench/, beside this script

    result = asyncio.run(run(args.accounts, args.rounds, args.step, not args.no_cascade,
                             args.aave))
    result.update(cascade=not args.no_cascade, aave=args.aave, **provenance())
    tag = "" if args.aave == "v3.6" else f"-aave{args.aave}"
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
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
