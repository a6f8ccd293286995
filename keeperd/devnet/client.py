"""A blocking JSON-RPC client for set-up work on the devnet (deploying, seeding, prices).

The daemon never uses it: it speaks through `keeperd.chain.rpc.RpcPool`. Set-up runs once,
outside any event loop, and reads best as straight-line code.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from eth_utils import to_checksum_address


class DevnetRpcError(RuntimeError):
    pass


class DevnetClient:
    def __init__(self, url: str, timeout: float = 120.0) -> None:
        parts = urlsplit(url)
        self.url = url
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._id = 0

    def _post(self, payload: Any) -> Any:
        body = json.dumps(payload).encode()
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port,
                                                        timeout=self._timeout)
            try:
                self._conn.request("POST", "/", body, {"Content-Type": "application/json"})
                resp = self._conn.getresponse()
                return json.loads(resp.read())
            except (http.client.HTTPException, ConnectionError):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def call(self, method: str, *params: Any) -> Any:
        self._id += 1
        answer = self._post({"jsonrpc": "2.0", "id": self._id, "method": method,
                             "params": list(params)})
        if "error" in answer:
            raise DevnetRpcError(f"{method}: {answer['error'].get('message')} "
                                 f"{answer['error'].get('data') or ''}".strip())
        return answer["result"]

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]], *, chunk: int = 1000) -> list[Any]:
        """Send calls in JSON-RPC batches; raise on the first error."""
        results: list[Any] = []
        for start in range(0, len(calls), chunk):
            part = calls[start:start + chunk]
            payload = [{"jsonrpc": "2.0", "id": i, "method": m, "params": list(p)}
                       for i, (m, p) in enumerate(part)]
            answer = sorted(self._post(payload), key=lambda a: a["id"])
            for a in answer:
                if "error" in a:
                    m = part[a["id"]][0]
                    raise DevnetRpcError(f"{m} (batch item {start + a['id']}): "
                                         f"{a['error'].get('message')}")
                results.append(a["result"])
        return results

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- conveniences -----------------------------------------------------------------------

    def accounts(self) -> list[str]:
        return [to_checksum_address(a) for a in self.call("eth_accounts")]

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def send(self, sender: str, to: str | None, data: bytes, *, gas: int | None = None,
             value: int = 0) -> dict[str, Any]:
        """Send a transaction (anvil signs for unlocked or impersonated senders); wait for it."""
        tx: dict[str, Any] = {"from": sender, "data": "0x" + data.hex()}
        if to is not None:
            tx["to"] = to
        if value:
            tx["value"] = hex(value)
        if gas is None:
            # anvil estimates against the latest block, but the transaction runs in the next
            # one, a second later: protocols that accrue interest first (Aave's indexes,
            # Morpho's _accrueInterest) then need more gas and ran out now and then. A margin
            # on the estimate ends that; a call that would revert fails here, with its reason.
            gas = int(int(self.call("eth_estimateGas", tx), 16) * 1.25) + 30_000
        tx["gas"] = hex(gas)
        tx_hash = self.call("eth_sendTransaction", tx)
        receipt = self.wait_receipt(tx_hash)
        if int(receipt["status"], 16) != 1:
            raise DevnetRpcError(f"transaction {tx_hash} reverted: {self.revert_reason(tx_hash)}")
        return receipt

    def revert_reason(self, tx_hash: str) -> str:
        """Why a mined transaction reverted, from anvil's call trace (best effort)."""
        try:
            trace = self.call("debug_traceTransaction", tx_hash, {"tracer": "callTracer"})
        except DevnetRpcError as exc:
            return f"(no trace: {exc})"
        while True:
            failed = [c for c in trace.get("calls") or [] if c.get("error")]
            if not failed:
                break
            trace = failed[-1]
        return (f"{trace.get('revertReason') or trace.get('error')} in {trace.get('to')} "
                f"(gas used {int(trace.get('gasUsed', '0x0'), 16):,})")

    def wait_receipt(self, tx_hash: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            receipt = self.call("eth_getTransactionReceipt", tx_hash)
            if receipt is not None:
                return receipt
            if time.monotonic() > deadline:
                raise DevnetRpcError(f"no receipt for {tx_hash} after {timeout}s")
            time.sleep(0.01)

    def deploy(self, sender: str, data: bytes) -> str:
        receipt = self.send(sender, None, data)
        return to_checksum_address(receipt["contractAddress"])

    def eth_call(self, to: str, data: bytes, block: str = "latest") -> bytes:
        """A view call. One that panics is asked once more a moment later: anvil answers a
        call that races the block it is mining (a keeper's transactions, automined) from the
        new block's state and the old block's header, and Aave's views then underflow
        comparing timestamps (panic 0x11; seen under CI load, never twice in a row)."""
        params = {"to": to, "data": "0x" + data.hex()}
        try:
            return bytes.fromhex(self.call("eth_call", params, block)[2:])
        except DevnetRpcError as exc:
            if "panic" not in str(exc):
                raise
            time.sleep(0.25)
            return bytes.fromhex(self.call("eth_call", params, block)[2:])

    def mine(self, blocks: int = 1, interval: int = 0) -> None:
        """`anvil_mine`; `interval`: seconds between the blocks (0: anvil's clock)."""
        if interval:
            self.call("anvil_mine", hex(blocks), hex(interval))
        else:
            self.call("anvil_mine", hex(blocks))

    def increase_time(self, seconds: int) -> None:
        self.call("evm_increaseTime", hex(seconds))
