from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from keeperd.chain.blocks import BlockEvent, BlockSource, NewBlock, Reorg
from keeperd.chain.rpc import RpcPool
from keeperd.devnet.handle import Devnet
from keeperd.metrics import Metrics


def silent_websocket() -> Any:
    """A websocket server that accepts eth_subscribe, answers pings, then says nothing (the
    socket open: a stalled subscription, or a node frozen behind a live socket)."""
    from aiohttp import WSMsgType, web

    async def silent(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=1)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_json({"jsonrpc": "2.0", "id": 1, "result": "0x1"})  # subscribed
        return ws

    app = web.Application()
    app.router.add_get("/", silent)
    return app


@contextlib.asynccontextmanager
async def following(source: BlockSource) -> AsyncIterator[list[BlockEvent]]:
    """`source` running, once it has told a first head: the events it tells."""
    events = recorder(source)
    task = asyncio.create_task(source.run())
    try:
        for _ in range(100):
            if events:
                break
            await asyncio.sleep(0.02)
        yield events
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def reached(events: list[BlockEvent], number: int, tries: int) -> None:
    """Until the last event's block is `number` (20 ms a try), or the tries run out."""
    for _ in range(tries):
        if events[-1].header.number >= number:  # type: ignore[union-attr]
            return
        await asyncio.sleep(0.02)


def recorder(source: BlockSource) -> list[BlockEvent]:
    events: list[BlockEvent] = []

    async def on(event: BlockEvent) -> None:
        events.append(event)

    source.subscribe(on)
    return events


async def test_every_block_is_reported_in_order_even_across_a_gap(pool: RpcPool,
                                                                  devnet: Devnet) -> None:
    source = BlockSource(pool)
    events = recorder(source)
    await source.poll_once()
    start = devnet.client.block_number()
    devnet.mine(3)
    await source.poll_once()
    await source.poll_once()  # same head again: nothing new
    numbers = [e.header.number for e in events if isinstance(e, NewBlock)]
    assert numbers == [start, start + 1, start + 2, start + 3]


async def test_a_far_future_head_from_a_lying_endpoint_is_not_trusted(pool: RpcPool,
                                                                      devnet: Devnet) -> None:
    """#17: one header 10,000 blocks ahead (a lying or misrouted node) used to become the tip:
    every real head after it was ignored as old. It is held until a block built on it arrives;
    the real chain goes on."""
    from keeperd.chain.blocks import BlockHeader

    source = BlockSource(pool)
    events = recorder(source)
    await source.poll_once()
    start = devnet.client.block_number()
    lie = BlockHeader(start + 10_000, "0x" + "ab" * 32, "0x" + "cd" * 32, 2**40)
    await source.process_header(lie)
    await source.process_header(lie)  # said again: still nothing to build on it
    assert [e.header.number for e in events if isinstance(e, NewBlock)] == [start]
    assert source.head is not None and source.head.number == start
    devnet.mine(2)
    await source.poll_once()
    assert [e.header.number for e in events if isinstance(e, NewBlock)] == [
        start, start + 1, start + 2]
    assert source.metrics.block_source_errors.labels(
        source.chain, "unconfirmed_jump")._value.get() == 1


async def test_a_made_up_first_head_is_not_followed_from(pool: RpcPool, devnet: Devnet) -> None:
    """#17: the very first head has nothing to be checked against; a made-up one (a lying
    node asked first) used to become the tip, and every real head after it was ignored as
    old — keeperd followed nothing. A first head must be a block the chain has."""
    from keeperd.chain.blocks import BlockHeader

    source = BlockSource(pool)
    events = recorder(source)
    start = devnet.client.block_number()
    await source.process_header(BlockHeader(start + 10_000, "0x" + "ab" * 32, "0x" + "cd" * 32,
                                            2**40))
    assert source.head is None and events == []
    await source.poll_once()
    assert [e.header.number for e in events if isinstance(e, NewBlock)] == [start]
    assert source.metrics.block_source_errors.labels(
        source.chain, "unknown_head")._value.get() == 1


async def test_a_first_head_just_past_the_http_endpoints_is_followed(
        pool: RpcPool, devnet: Devnet) -> None:
    """A websocket's node may be a block ahead of the HTTP endpoints, which then do not know
    its first head by hash yet: one block past their head is followed (10,000 is not, above);
    the real chain takes over as it comes."""
    from keeperd.chain.blocks import BlockHeader

    source = BlockSource(pool)
    events = recorder(source)
    start = devnet.client.block_number()
    ahead = BlockHeader(start + 1, "0x" + "ab" * 32, "0x" + "cd" * 32, 2**40)
    await source.process_header(ahead)
    assert source.head == ahead
    devnet.mine(2)
    await source.poll_once()
    assert source.head is not None and source.head.number == start + 2
    assert source.head.hash == devnet.client.call("eth_getBlockByNumber", "latest",
                                                  False)["hash"]
    assert next(e.header.number for e in events if isinstance(e, NewBlock)) == start + 1


async def test_a_long_gap_is_followed_once_a_block_builds_on_it(pool: RpcPool,
                                                                devnet: Devnet) -> None:
    """A real jump past the window (an outage): the far head is confirmed by the next block
    and followed from there."""
    source = BlockSource(pool, window=16)
    events = recorder(source)
    await source.poll_once()
    start = devnet.client.block_number()
    devnet.mine(40)
    await source.poll_once()  # 40 ahead, window 16: held
    assert [e.header.number for e in events if isinstance(e, NewBlock)] == [start]
    devnet.mine(3)
    await source.poll_once()  # a descendant (not its child: polls skip blocks) confirms it
    assert [e.header.number for e in events if isinstance(e, NewBlock)] == [
        start, start + 40, start + 41, start + 42, start + 43]
    devnet.mine(41)
    await source.poll_once()  # again past the window
    devnet.mine(1)
    await source.poll_once()  # its child
    assert [e.header.number for e in events if isinstance(e, NewBlock)][-2:] == [
        start + 84, start + 85]


async def test_reorg_is_detected_by_parent_hash(pool: RpcPool, devnet: Devnet) -> None:
    source = BlockSource(pool)
    events = recorder(source)
    base = devnet.client.block_number()
    await source.poll_once()
    snap = devnet.snapshot()
    devnet.mine(2)
    await source.poll_once()
    dropped_hashes = {e.header.hash for e in events if isinstance(e, NewBlock)
                      and e.header.number > base}
    # Replace the two blocks with three different ones (later timestamps give other hashes).
    devnet.revert(snap)
    devnet.advance_time(100, mine=False)
    devnet.mine(3)
    await source.poll_once()
    reorgs = [e for e in events if isinstance(e, Reorg)]
    assert len(reorgs) == 1
    assert reorgs[0].ancestor.number == base
    assert {h.hash for h in reorgs[0].dropped} == dropped_hashes
    assert reorgs[0].depth == 2
    after = [e.header.number for e in events[events.index(reorgs[0]) + 1:]
             if isinstance(e, NewBlock)]
    assert after == [base + 1, base + 2, base + 3]
    assert source.head is not None and source.head.number == base + 3


async def test_websocket_new_heads(pool: RpcPool, devnet: Devnet) -> None:
    # (chain_id: the websocket is asked eth_chainId first, and anvil's answer passes)
    source = BlockSource(pool, ws_url=devnet.manifest["ws_url"], poll_interval=30,
                         chain_id=31337)
    async with following(source) as events:
        start = events[-1].header.number  # type: ignore[union-attr]
        devnet.mine(1)
        devnet.mine(1)
        await reached(events, start + 2, 200)
    numbers = [e.header.number for e in events if isinstance(e, NewBlock)]
    # Poll interval is 30 s, so these arrived over the websocket.
    assert numbers[-2:] == [start + 1, start + 2]


async def test_a_stalled_subscription_falls_back_to_polling(pool: RpcPool,
                                                            devnet: Devnet) -> None:
    """A websocket that accepts eth_subscribe, answers pings and then says nothing (the
    socket stays open): keeperd gives it `ws_stall_after`, then polls."""
    from tests.conftest import serve

    async with serve(silent_websocket()) as url:
        source = BlockSource(pool, ws_url=url.replace("http", "ws"), poll_interval=0.1,
                             ws_stall_after=0.5, ws_retry_after=30)
        async with following(source) as events:
            start = events[-1].header.number  # type: ignore[union-attr]
            devnet.mine(1)  # nothing will come over the silent websocket
            await reached(events, start + 1, 150)
    assert events[-1].header.number == start + 1  # type: ignore[union-attr]
    assert pool.metrics.registry.get_sample_value(
        "keeperd_block_source_errors_total", {"chain": "devnet", "source": "websocket"}) == 1


async def test_a_frozen_subscription_is_caught_up_by_polling_long_before_its_stall(
        pool: RpcPool, devnet: Devnet) -> None:
    """A websocket whose node froze while its socket lives hid every block for `ws_stall_s`
    (a minute by default: five mainnet blocks). When the HTTP endpoints' probes credit a
    later head and the socket said nothing for a poll interval, the head is polled."""
    from tests.conftest import serve

    async with serve(silent_websocket()) as url:
        source = BlockSource(pool, ws_url=url.replace("http", "ws"), poll_interval=0.1,
                             ws_stall_after=60, ws_retry_after=60)
        async with following(source) as events:
            start = events[-1].header.number  # type: ignore[union-attr]
            devnet.mine(2)
            await asyncio.sleep(0.3)
            assert events[-1].header.number == start  # type: ignore[union-attr]  # not asked
            await pool.probe()  # (the daemon's probe loop: every poll interval)
            await reached(events, start + 2, 100)
    assert [e.header.number for e in events[-2:]] == [start + 1, start + 2]  # type: ignore[union-attr]
    sample = pool.metrics.registry.get_sample_value
    assert sample("keeperd_block_source_errors_total",
                  {"chain": "devnet", "source": "websocket_behind"}) == 1
    assert sample("keeperd_block_source_errors_total",
                  {"chain": "devnet", "source": "websocket"}) is None  # no stall, no reconnect


async def test_a_websocket_of_another_chain_is_never_followed(pool: RpcPool,
                                                              devnet: Devnet) -> None:
    """A ws_url that answers for another network (chain id 1 here): keeperd refuses its
    heads for good, counts and says so, and follows the chain-checked endpoints by polling."""
    from aiohttp import WSMsgType, web

    from tests.conftest import serve

    subscribed = []

    async def mainnet(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                body = msg.json()
                if body["method"] == "eth_chainId":
                    await ws.send_json({"jsonrpc": "2.0", "id": body["id"], "result": "0x1"})
                else:
                    subscribed.append(body)
        return ws

    app = web.Application()
    app.router.add_get("/", mainnet)
    async with serve(app) as url:
        source = BlockSource(pool, ws_url=url.replace("http", "ws"), poll_interval=0.1,
                             ws_retry_after=0.2, chain_id=31337)
        events = recorder(source)
        task = asyncio.create_task(source.run())
        try:
            for _ in range(200):
                if source.ws_url is None and events:
                    break
                await asyncio.sleep(0.02)
            start = devnet.client.block_number()
            devnet.mine(1)
            for _ in range(150):
                if events and events[-1].header.number > start:  # type: ignore[union-attr]
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)  # past the retry delay: the websocket stays dropped
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert source.ws_url is None and subscribed == []
    assert events[-1].header.number == start + 1  # type: ignore[union-attr]
    assert pool.metrics.registry.get_sample_value(
        "keeperd_block_source_errors_total", {"chain": "devnet", "source": "wrong_chain"}) == 1


async def test_a_subscriber_that_raises_on_a_reorg_hides_it_from_no_one(pool: RpcPool,
                                                                      devnet: Devnet) -> None:
    """The scanner's listener policy for block events (#29 item 1): a subscriber that raises
    (one protocol's index rewind meeting an RPC error) is logged and counted, and every
    subscriber after it still gets the Reorg and the blocks of the new branch."""
    metrics = Metrics()
    source = BlockSource(pool, metrics=metrics)

    async def failing(event: object) -> None:
        if isinstance(event, Reorg):
            raise RuntimeError("the rewind's RPC call failed")

    source.subscribe(failing)
    events = recorder(source)
    base = devnet.client.block_number()
    await source.poll_once()
    snap = devnet.snapshot()
    devnet.mine(2)
    await source.poll_once()
    devnet.revert(snap)
    devnet.advance_time(100, mine=False)
    devnet.mine(3)
    await source.poll_once()  # (raised out of here before, with the reorg half told)
    reorgs = [e for e in events if isinstance(e, Reorg)]
    assert len(reorgs) == 1 and reorgs[0].ancestor.number == base
    assert [e.header.number for e in events[events.index(reorgs[0]) + 1:]
            if isinstance(e, NewBlock)] == [base + 1, base + 2, base + 3]
    assert metrics.registry.get_sample_value(
        "keeperd_block_source_errors_total", {"chain": "devnet", "source": "subscriber"}) == 1
