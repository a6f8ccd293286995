"""anvil's window where a read at its head's number N answers from the state of the block it
is mining (N + 1) while that block's receipts are not served yet (measured: 846 of 1,228 reads
at the head during automine; one CI run sent two sales that then reverted SwapBelowBound),
forced at the crash block's full pass (`check_foreign` at N), where it came about 1 run in
100 of test_a_keeper_without_capital_is_told_and_auto_takes_the_flash_path. The rest is the
real devnet and that test's `capital: auto` half. Without the receipts' check
(`TxManager._receipts_of_sales_counted`) it fails with 4 reverts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from keeperd.devnet.handle import Devnet
from keeperd.execution import journal as J
from tests.keeper_harness import (  # noqa: F401 - fixtures
    KEEPER,
    config_for,
    crash_through_flash_sales,
    keeper_key_env,
)


async def test_a_count_read_from_the_block_being_mined_sends_no_sale_that_reverts(
        devnet: Devnet, tmp_path: Path, run_daemon) -> None:
    devnet.client.call("anvil_setBalance", KEEPER, hex(100 * 10**18))  # gas, no tokens
    auto = await run_daemon(config_for(
        devnet, tmp_path / "auto", "liquidate", key={"source": "env", "env": "KEEPER_KEY"},
        capital="auto", flash_liquidator=devnet.manifest["flash_liquidator"]["address"],
        uniswap_v3_factory=devnet.manifest["uniswap_v3"]["factory"]))
    tx = auto.daemon.executors["aave"].tx
    pool = tx.pool
    window: dict[str, Any] = {}  # the racy read's block, and the receipts hidden meanwhile
    batch_at, request, batch = pool.batch_at, pool.request, pool.batch

    async def racy_batch_at(block: int, calls: Any, **kw: Any) -> Any:
        counts = [i for i, (m, p) in enumerate(calls)
                  if m == "eth_getTransactionCount" and p[1] == hex(block)]
        if counts and "block" not in window and tx.pending:
            # The crash block's full pass: what the partial pass sent is being mined.
            for _ in range(2000):  # (10 s at most: automine mines each as it comes)
                if int(await request("eth_getTransactionCount", [KEEPER, "latest"]),
                       16) >= tx._nonce:
                    break
                await asyncio.sleep(0.005)
            header, results = await batch_at(block, calls, **kw)
            latest = await request("eth_getTransactionCount", [KEEPER, "latest"])
            window["block"], window["count"] = block, int(latest, 16)
            window["hidden"] = {r.tx_hash for p in tx.pending.values() for r in p.attempts}
            window["was"] = [results[i] for i in counts]
            for i in counts:
                results[i] = latest  # (N + 1's state, asked at N)
            return header, results
        if "block" in window and block > window["block"]:
            window.pop("hidden", None)  # (the next block: the mined one is stored)
        return await batch_at(block, calls, **kw)

    def hidden(method: str, params: Any) -> bool:
        return method == "eth_getTransactionReceipt" and params[0] in window.get("hidden", ())

    async def racy_request(method: str, params: Any = (), *a: Any, **kw: Any) -> Any:
        return None if hidden(method, params) else await request(method, params, *a, **kw)

    async def racy_batch(calls: Any, *a: Any, **kw: Any) -> Any:
        answers = await batch([c for c in calls if not hidden(*c)], *a, **kw)
        it = iter(answers)
        return [None if hidden(*c) else next(it) for c in calls]

    pool.batch_at, pool.request, pool.batch = racy_batch_at, racy_request, racy_batch
    await crash_through_flash_sales(devnet, auto)
    assert "block" in window and window["count"] > int(window["was"][0], 16)
    journal = auto.daemon.executors["aave"].journal
    assert len(await journal.by_status(J.INCLUDED)) > 20
    reverted = await journal.by_status(J.REVERTED)
    assert reverted == [], [(e.nonce, e.account, e.detail) for e in reverted]
