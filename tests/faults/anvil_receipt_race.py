"""Does this anvil still panic when a receipt lookup meets a revert? (#18 item 11)

anvil 1.7.1 serves eth_getTransactionReceipt by reading the transaction, then its block, then
the block's receipts, each under its own lock; an evm_revert between them removes the block's
receipts and the third read comes back short: "range end index N out of range for slice of
length M" (backend/mem/mod.rs:3717), and the node exits. The test suite keeps receipt lookups
and reverts apart (tests/integration/test_liquidation.py, `run_daemon`); run this after an
anvil upgrade to see whether it still needs to:

    .venv/bin/python -m tests.faults.anvil_receipt_race --seconds 60

Two threads read the receipts of the newest transactions without pause while the main thread
mines blocks of signed and impersonated transactions and reverts every sixth one. Exits 1 with
anvil's panic when anvil dies (seen within one to four 40-second runs on 2026-11-28), 0 if it
survived.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
from pathlib import Path

from eth_account import Account

from keeperd.devnet.anvil import Anvil
from keeperd.devnet.client import DevnetClient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    log = Path(tempfile.mkdtemp()) / "anvil.log"
    node = Anvil(log_path=log).start()
    client = DevnetClient(node.rpc_url)
    keys = [Account.create() for _ in range(6)]
    impersonated = [f"0x00000000000000000000000000000000C0FfeE{i:02d}" for i in range(4)]
    for address in [k.address for k in keys] + impersonated:
        client.call("anvil_setBalance", address, hex(10**22))
    hashes: list[str] = []
    nonces = {k.address: 0 for k in keys}
    stop = threading.Event()

    def read() -> None:
        reader = DevnetClient(node.rpc_url)
        while not stop.is_set():
            for h in list(hashes[-40:]):
                try:
                    reader.call("eth_getTransactionReceipt", h)
                except Exception:
                    return

    readers = [threading.Thread(target=read, daemon=True) for _ in range(2)]
    for t in readers:
        t.start()
    client.call("evm_setAutomine", False)
    blocks, snapshot, saved = 0, None, dict(nonces)
    deadline = time.monotonic() + args.seconds
    try:
        while time.monotonic() < deadline and node.process and node.process.poll() is None:
            for sender in random.sample(impersonated, 2):
                hashes.append(client.call("eth_sendTransaction", {
                    "from": sender, "to": sender, "value": "0x1", "gas": "0x5208",
                    "maxPriorityFeePerGas": hex(random.randint(1, 500) * 10**9),
                    "maxFeePerGas": hex(1000 * 10**9)}))
            for key in keys:
                nonce = nonces[key.address]
                raw = key.sign_transaction({
                    "to": key.address, "value": 1, "gas": 21000, "nonce": nonce,
                    "chainId": 31337, "maxFeePerGas": 10**12,
                    "maxPriorityFeePerGas": (nonce % 7 + 1) * 10**9}).raw_transaction
                hashes.append(client.call("eth_sendRawTransaction", "0x" + raw.hex()))
                nonces[key.address] += 1
            client.call("evm_mine")
            blocks += 1
            if blocks % 6 == 1:
                snapshot, saved = client.call("evm_snapshot"), dict(nonces)
            elif blocks % 6 == 0:
                client.call("anvil_dropAllTransactions")
                client.call("evm_revert", snapshot)
                nonces = dict(saved)
    except Exception:
        pass  # (the node went away under us: its log says why)
    finally:
        stop.set()
        died = node.process is not None and node.process.poll() is not None
        client.close()
        node.stop()
    if died:
        print(f"anvil died after {blocks} blocks:\n{log.read_text()[:600]}")
        return 1
    print(f"anvil survived {blocks} blocks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
