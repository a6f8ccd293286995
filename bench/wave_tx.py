"""Benchmark: what one transaction per wave would save against the one transaction per
liquidation keeperd sends today — the node's work and the gas of each liquidation (#31 item 2).

    python bench/wave_tx.py --accounts 10000 --rounds 12 --out bench/results/wave-tx-10000.json

The crash tail of bench/latency.py is the node's serial work (its `node_by_round`): anvil
simulates a liquidation in ~0.2-0.3 ms and accepts one (`eth_sendRawTransaction`) in ~0.2 ms,
one after another. This bench asks what fewer transactions would change, without changing
keeperd: it runs bench/latency.py's rounds (the real daemon, liquidate mode, 10,000 borrowers,
WETH down 1 % a round) with the keeper's address delegated (EIP-7702) to a small executor
written here, `WaveExecutor`: called by the address itself, it makes each call of a list in
turn and reports which succeeded, a failing one not undoing the rest. Delegated, the keeper's
address still sends its liquidations one by one as before (its calls from it are unchanged).

After each round, keeperd idle and its liquidations in the node's pool, both ways are measured
on the same liquidations at the same head, in turn (the order alternates by round):
- **one per liquidation**, bench/latency.py's replay: the round's transactions simulated 16 a
  batch, taken out of the pool and sent again byte for byte, 16 a batch;
- **one per wave**: the same calldata, 16 a wave, as one `execute` call from the keeper to
  itself: simulated (one `eth_call` a wave), then sent as one signed transaction a wave
  (the round's own transactions taken out of the pool and put back after).
Gas is what the node's call tracer says each transaction uses (intrinsic gas included; a
wave run with the gas limit it is signed with: its transactions' own, and 100,000), divided
by the liquidations in it; each wave's simulation must report every call succeeded, or the round
says how many did not.

Reported per round and over the run: the node's milliseconds per liquidation (simulate, send)
and gas per liquidation, both ways; and bench/latency.py's `p99_node_serial_ms` projection
(each round's plan, then its liquidations over the node's serial work) with the node's work of
one way or the other, over the measured first liquidation's p50. A projection, not a
measurement of a keeperd that sends waves: that keeperd does not exist (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

WAVE = 16  # keeperd's later waves (execution/executor.py `LATER_WAVE`)
CHAIN_ID = 31337

# Made for this measurement; not a part keeperd ships or calls. Only the address itself may
# call it (msg.sender == address(this)): delegated to, it runs only in the keeper's own
# transactions.
WAVE_EXECUTOR_SOL = """
// SPDX-License-Identifier: MIT
pragma solidity 0.8.19;
contract WaveExecutor {
    struct Call { address to; bytes data; }
    event Failed(uint256 index, bytes reason);
    function execute(Call[] calldata calls) external returns (bool[] memory ok) {
        require(msg.sender == address(this), "self only");
        ok = new bool[](calls.length);
        for (uint256 i; i < calls.length; ++i) {
            (bool success, bytes memory reason) = calls[i].to.call(calls[i].data);
            ok[i] = success;
            if (!success) emit Failed(i, reason);
        }
    }
}
"""


class WaveProbe:
    """bench/latency.py's `before_daemon` (deploy the executor, delegate the keeper to it)
    and `node_probe` (both ways, after each round)."""

    def __init__(self, keeper_key: str) -> None:
        from eth_account import Account

        from keeperd.devnet import contracts
        from keeperd.devnet.solc import compile_sources

        compiled = compile_sources({"WaveExecutor.sol": WAVE_EXECUTOR_SOL})["WaveExecutor"]
        self.creation = compiled.bytecode
        self.artifact = contracts.from_compiled("WaveExecutor", compiled.abi, compiled.bytecode)
        self.account = Account.from_key(keeper_key)
        self.executor: str | None = None
        self.rounds: list[dict[str, Any]] = []

    def delegate(self, devnet: Any) -> dict[str, Any]:
        """The executor deployed and the keeper delegated to it; the keeper's config then
        allows that delegate (keeperd sends nothing from an address delegated elsewhere)."""
        client = devnet.client
        receipt = client.send(devnet.manifest["aave_v3"]["admin"], None,
                              bytes.fromhex(self.creation[2:]), gas=2_000_000)
        self.executor = receipt["contractAddress"]
        keeper = self.account.address
        nonce = int(client.call("eth_getTransactionCount", keeper, "latest"), 16)
        # (the sender's own authorization: its nonce is the transaction's plus one)
        authorization = self.account.sign_authorization(
            {"chainId": CHAIN_ID, "address": self.executor, "nonce": nonce + 1})
        tx = {"type": 4, "chainId": CHAIN_ID, "nonce": nonce, "to": keeper, "value": 0,
              "data": "0x", "gas": 200_000, "maxFeePerGas": 10**11,
              "maxPriorityFeePerGas": 10**9, "authorizationList": [authorization]}
        client.call("eth_sendRawTransaction",
                    "0x" + self.account.sign_transaction(tx).raw_transaction.hex())
        client.mine(1)
        code = client.call("eth_getCode", keeper, "latest")
        want = "0xef0100" + self.executor[2:].lower()
        if code.lower() != want:
            raise RuntimeError(f"the keeper's code is {code}, not the delegation {want}")
        return {"allowed_delegates": [self.executor]}

    async def node_probe(self, rpc_url: str, keeper: str) -> dict[str, Any]:
        import aiohttp
        from eth_abi import decode
        from latency import batch_rpc, pending_of

        async with aiohttp.ClientSession() as session:
            rpc = batch_rpc(session, rpc_url)
            txs = await pending_of(rpc, keeper)
            n = len(txs)
            if not n:
                return {"liquidations": 0, "node_ms": 0.0}
            calls = [{"from": keeper, "to": t["to"], "data": t["input"], "gas": t["gas"]}
                     for t in txs]
            raws = await rpc([("eth_getRawTransactionByHash", [t["hash"]]) for t in txs])
            waves = [txs[i:i + WAVE] for i in range(0, n, WAVE)]
            wave_data = ["0x" + self.artifact.encode_call(
                "execute", [(t["to"], bytes.fromhex(t["input"][2:])) for t in wave]).hex()
                for wave in waves]
            first = txs[0]
            nonce = int(first["nonce"], 16)
            max_fee = int(first.get("maxFeePerGas") or first["gasPrice"], 16)
            tip = int(first.get("maxPriorityFeePerGas") or first["gasPrice"], 16)
            # (a wave's gas limit: its transactions' own, and some for the loop)
            wave_gas = [sum(int(t["gas"], 16) for t in wave) + 100_000 for wave in waves]
            wave_raws = ["0x" + self.account.sign_transaction({
                "type": 2, "chainId": CHAIN_ID, "nonce": nonce + j, "to": keeper, "value": 0,
                "data": data, "gas": wave_gas[j],
                "maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip,
            }).raw_transaction.hex() for j, data in enumerate(wave_data)]

            async def each() -> tuple[float, float]:
                began = time.perf_counter()
                for i in range(0, n, WAVE):
                    await rpc([("eth_call", [c, "latest"]) for c in calls[i:i + WAVE]])
                simulated = time.perf_counter()
                await rpc([("anvil_removePoolTransactions", [keeper])])
                resent = time.perf_counter()
                for i in range(0, n, WAVE):
                    await rpc([("eth_sendRawTransaction", [r]) for r in raws[i:i + WAVE]])
                return simulated - began, time.perf_counter() - resent

            async def by_wave() -> tuple[float, float, int]:
                began = time.perf_counter()
                succeeded = 0
                for j, data in enumerate(wave_data):
                    [answer] = await rpc([("eth_call", [
                        {"from": keeper, "to": keeper, "data": data, "gas": hex(wave_gas[j])},
                        "latest"])])
                    succeeded += sum(decode(["bool[]"], bytes.fromhex(answer[2:]))[0])
                simulated = time.perf_counter()
                await rpc([("anvil_removePoolTransactions", [keeper])])
                resent = time.perf_counter()
                for raw in wave_raws:
                    await rpc([("eth_sendRawTransaction", [raw])])
                sent = time.perf_counter()
                # the round's own transactions back, as they were (mined by the next block)
                await rpc([("anvil_removePoolTransactions", [keeper])])
                for i in range(0, n, WAVE):
                    await rpc([("eth_sendRawTransaction", [r]) for r in raws[i:i + WAVE]])
                return simulated - began, sent - resent, succeeded

            wave_first = len(self.rounds) % 2 == 1
            if wave_first:
                w_sim, w_send, succeeded = await by_wave()
                e_sim, e_send = await each()
            else:
                e_sim, e_send = await each()
                w_sim, w_send, succeeded = await by_wave()
            back = await pending_of(rpc, keeper)
            if [t["hash"] for t in back] != [t["hash"] for t in txs]:
                raise RuntimeError("the pool did not take the round's transactions back")
            # gas used as the node executes them (its call tracer's, intrinsic gas included):
            # an estimate would not do for a wave, whose calls' failures do not revert it
            # (the least gas that does not revert can be one where every call ran out)
            traced = {"tracer": "callTracer", "tracerConfig": {"onlyTopCall": True}}
            gas_each = await rpc([("debug_traceCall", [c, "latest", traced]) for c in calls])
            gas_waves = await rpc([("debug_traceCall", [
                {"from": keeper, "to": keeper, "data": d, "gas": hex(wave_gas[j])}, "latest",
                traced]) for j, d in enumerate(wave_data)])
            if any(t.get("error") for t in gas_each + gas_waves):
                raise RuntimeError("a traced transaction failed: "
                                   f"{[t.get('error') for t in gas_each + gas_waves]}")
        row = {
            "liquidations": n, "waves": len(waves), "wave_first": wave_first,
            "wave_calls_succeeded": succeeded,
            "each": {"simulate_ms": _ms(e_sim), "send_ms": _ms(e_send),
                     "node_ms": _ms(e_sim + e_send),
                     "gas": sum(int(t["gasUsed"], 16) for t in gas_each)},
            "wave": {"simulate_ms": _ms(w_sim), "send_ms": _ms(w_send),
                     "node_ms": _ms(w_sim + w_send),
                     "gas": sum(int(t["gasUsed"], 16) for t in gas_waves)},
        }
        self.rounds.append(row)
        # (bench/latency.py's node_by_round; its projection uses node_ms: this way's)
        return {**row, "node_ms": row["each"]["node_ms"]}


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Per-liquidation medians both ways, and the tail projected with each way's node work."""
    from latency import node_serial_latencies, percentile

    rows = [r for r in result["node_by_round"] if r.get("liquidations")]
    if not rows:
        raise SystemExit("no round liquidated anything: more --rounds (the first few 1 % "
                         "steps liquidate nothing on the seeded book)")
    per: dict[str, Any] = {}
    for way in ("each", "wave"):
        per[way] = {
            f"{what}_ms_per_liquidation": round(statistics.median(
                r[way][f"{what}_ms"] / r["liquidations"] for r in rows), 4)
            for what in ("simulate", "send", "node")}
        per[way]["gas_per_liquidation"] = round(
            sum(r[way]["gas"] for r in rows) / sum(r["liquidations"] for r in rows))
    sent = {int(b): v for b, v in result["sent_by_round"].items()}
    timings = {int(b): v for b, v in result["timings_by_round"].items()}
    first_p50 = result["first_per_round_p50_ms"]
    for way in ("each", "wave"):
        node = {r["block"]: {"liquidations": r["liquidations"], "node_ms": r[way]["node_ms"]}
                for r in rows}
        serial = node_serial_latencies(sent, timings, node)
        p99 = percentile(serial, 99) if serial else float("nan")
        per[way]["p99_node_serial_ms"] = round(p99, 2)
        per[way]["tail_over_first_node_serial"] = round(p99 / first_p50, 2)
    per["all_wave_calls_succeeded"] = all(
        r["wave_calls_succeeded"] == r["liquidations"] for r in rows)
    return per


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--step", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import latency
    from provenance import provenance, settled  # bench/, beside this script

    measured = provenance()  # (before the run: the code it loads)

    probe = WaveProbe(latency.KEEPER_KEY)
    result = asyncio.run(latency.run(args.accounts, args.rounds, args.step,
                                     before_daemon=probe.delegate,
                                     node_probe=probe.node_probe, keep_rounds=True))
    result["ways"] = summarize(result)
    result.update(executor=probe.executor, **settled(measured))
    out = args.out or ROOT / "bench" / "results" / f"wave-tx-{args.accounts}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    ways = result["ways"]
    print(f"accounts {result['accounts']}, rounds {result['rounds']}, liquidations "
          f"{result['liquidations_sent']}; measured p99 {result['p99_ms']} ms, first p50 "
          f"{result['first_per_round_p50_ms']} ms ({result['tail_over_first']}x)")
    for way, label in (("each", "a transaction per liquidation"),
                       ("wave", f"a transaction per wave of {WAVE}")):
        w = ways[way]
        print(f"{label}: node {w['simulate_ms_per_liquidation']} ms to simulate + "
              f"{w['send_ms_per_liquidation']} ms to accept a liquidation; "
              f"{w['gas_per_liquidation']} gas a liquidation; the tail projected on the "
              f"node's serial work: p99 {w['p99_node_serial_ms']} ms, "
              f"{w['tail_over_first_node_serial']}x the first's p50")
    if not ways["all_wave_calls_succeeded"]:
        print("some calls failed inside a wave's simulation: see node_by_round")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
