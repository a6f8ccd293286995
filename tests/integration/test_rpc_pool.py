"""The RPC pool against the real devnet, plus broken endpoints on loopback (a dead port and a
server that answers garbage), which is what failing providers look like from the client."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

import keeperd.chain.rpc as rpc_module
from keeperd.chain.rpc import Endpoint, RpcError, RpcPool, RpcPoolSettings, RpcUnavailable
from keeperd.chain.web3_provider import make_web3
from keeperd.devnet.anvil import free_port
from keeperd.devnet.handle import Devnet
from keeperd.metrics import Metrics
from tests.conftest import metric_absent, metric_series, metric_value, serve

FAST = RpcPoolSettings(timeout=2.0, max_attempts=4, backoff_base=0.01, backoff_max=0.05,
                       bench_after=2, bench_min_seconds=30)


@pytest.fixture
async def garbage_url() -> AsyncIterator[str]:
    """A server that answers 200 with a body that is not JSON-RPC (a lying endpoint)."""

    async def handler(_: web.Request) -> web.Response:
        return web.Response(text="<html>upstream error</html>")

    app = web.Application()
    app.router.add_post("/", handler)
    async with serve(app) as url:
        yield url


async def test_fails_over_from_a_dead_endpoint_then_prefers_the_live_one(
        devnet: Devnet) -> None:
    metrics = Metrics()
    dead = f"http://127.0.0.1:{free_port()}"
    failovers = {"chain": "t", "from_endpoint": "0", "to_endpoint": "1"}
    async with RpcPool.from_urls("t", [dead, devnet.manifest["rpc_url"]], settings=FAST,
                                 metrics=metrics, rng=random.Random(1)) as pool:
        assert int(await pool.request("eth_chainId"), 16) == 31337
        assert metric_value(metrics, "keeperd_rpc_failovers_total", failovers) == 1
        # The failed endpoint is demoted: the next requests go straight to the live one.
        assert pool.ranked()[0].name == "1"
        await pool.request("eth_blockNumber")
        await pool.request("eth_blockNumber")
    assert metric_value(metrics, "keeperd_rpc_failovers_total", failovers) == 1
    assert metric_value(metrics, "keeperd_rpc_requests_total",
                        {"chain": "t", "endpoint": "0", "method": "eth_chainId",
                         "outcome": "transport_error"}) == 1


async def test_garbage_answers_are_counted_and_failed_over(devnet: Devnet,
                                                           garbage_url: str) -> None:
    metrics = Metrics()
    async with RpcPool.from_urls("t", [garbage_url, devnet.manifest["rpc_url"]],
                                 settings=FAST, metrics=metrics) as pool:
        assert await pool.request("eth_blockNumber")
    assert metric_value(metrics, "keeperd_rpc_requests_total",
                        {"chain": "t", "endpoint": "0", "method": "eth_blockNumber",
                         "outcome": "bad_response"}) == 1


async def test_a_revert_is_an_answer_not_retried(pool: RpcPool, devnet: Devnet,
                                                 metrics: Metrics) -> None:
    pool_address = devnet.manifest["aave_v3"]["pool"]
    with pytest.raises(RpcError):
        # liquidationCall with zero arguments reverts inside the pool.
        await pool.request("eth_call", [{"to": pool_address, "data": "0x00a718a9"}, "latest"])
    assert metric_absent(metrics, "keeperd_rpc_retries_total",
                                 {"chain": "devnet", "method": "eth_call"})


async def test_every_endpoint_down_raises_after_backoff() -> None:
    urls = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    metrics = Metrics()
    async with RpcPool.from_urls("t", urls, settings=FAST, metrics=metrics) as pool:
        with pytest.raises(RpcUnavailable) as info:
            await pool.request("eth_blockNumber")
    assert "after 4 attempts" in str(info.value)
    assert metric_value(metrics, "keeperd_rpc_all_endpoints_down", {"chain": "t"}) == 1
    # Two failures in a row each: both endpoints are benched.
    for name in ("0", "1"):
        assert metric_value(metrics, "keeperd_rpc_endpoint_up",
                            {"chain": "t", "endpoint": name}) == 0
    assert metric_value(metrics, "keeperd_rpc_retries_total",
                        {"chain": "t", "method": "eth_blockNumber"}) == 3


async def test_a_hung_endpoint_is_failing_from_its_first_request_not_from_its_bench(
        devnet: Devnet) -> None:
    """A node that hangs (SIGSTOP) fails a request only at its timeout, and is benched only
    after `bench_after` of them: rpc_down, counted from the bench, came ~25 s after its
    `after_s`, and a 50 s hang told no one (a by-hand trial). `failing_for` counts from the
    first failed request's send, while the endpoint is still in use; a success ends it."""
    import aiohttp

    hanging = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        if hanging.is_set():
            await asyncio.sleep(2)  # (past the pool's timeout; the server's stop waits for it)
        async with aiohttp.ClientSession() as session, session.post(
                devnet.manifest["rpc_url"], data=await request.read(),
                headers={"Content-Type": "application/json"}) as answer:
            return web.Response(body=await answer.read(), content_type="application/json")

    app = web.Application()
    app.router.add_post("/", handler)
    settings = RpcPoolSettings(timeout=0.5, max_attempts=1, backoff_base=0.01,
                               backoff_max=0.05, bench_after=3, bench_min_seconds=30)
    async with serve(app) as url, RpcPool.from_urls("t", [url], settings=settings,
                                                    metrics=Metrics()) as pool:
        await pool.request("eth_blockNumber")
        assert pool.failing_for() == 0.0
        hanging.set()
        sent = asyncio.get_running_loop().time()
        with pytest.raises(RpcUnavailable):
            await pool.request("eth_blockNumber")
        # one timeout: not benched, still counted healthy, but failing since its send
        assert pool.healthy_count() == 1
        assert pool.failing_for() >= asyncio.get_running_loop().time() - sent - 0.05 > 0.45
        first = pool.failing_for()
        with pytest.raises(RpcUnavailable):
            await pool.request("eth_blockNumber")
        assert pool.failing_for() > first + 0.45  # (from the first failure, not the last)
        hanging.clear()
        await pool.request("eth_blockNumber")
        assert pool.failing_for() == 0.0


async def test_batch_returns_errors_in_place(pool: RpcPool) -> None:
    results = await pool.batch([("eth_chainId", []), ("eth_noSuchMethod", []),
                                ("eth_blockNumber", [])])
    assert int(results[0], 16) == 31337
    assert isinstance(results[1], RpcError)
    assert int(results[2], 16) > 0


async def test_probe_measures_head_lag_and_restores_benched_endpoints(devnet: Devnet) -> None:
    metrics = Metrics()
    async with RpcPool.from_urls("t", [devnet.manifest["rpc_url"]], settings=FAST,
                                 metrics=metrics) as pool:
        ep = pool.endpoints[0]
        ep.health.benched_until = 1e18  # benched "forever"
        await pool.probe()
        assert pool.is_healthy(ep)
        assert ep.health.head == devnet.client.block_number()
    assert metric_value(metrics, "keeperd_rpc_endpoint_head_lag_blocks",
                        {"chain": "t", "endpoint": "0"}) == 0


async def test_web3_async_api_runs_over_the_pool(pool: RpcPool, devnet: Devnet) -> None:
    w3 = make_web3(pool)
    assert await w3.eth.chain_id == 31337
    assert await w3.eth.block_number == devnet.client.block_number()
    async with w3.batch_requests() as batch:
        batch.add(w3.eth.get_block("latest"))
        batch.add(w3.eth.get_balance(devnet.manifest["aave_v3"]["admin"]))
        block, balance = await batch.async_execute()
    assert block["number"] >= 1 and balance > 0


def test_rate_limit_spaces_requests() -> None:
    ep = Endpoint("0", "http://x", rate_limit=10.0)
    waits = [ep.take_token(100.0) for _ in range(12)]
    assert waits[:10] == [0.0] * 10          # the burst
    assert waits[10] == pytest.approx(0.1)   # then one every 1/rate seconds
    assert waits[11] == pytest.approx(0.2)
    assert Endpoint("1", "http://x", None).take_token(0.0) == 0.0


async def test_lagging_endpoint_ranks_after_fresh_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_000.0]
    monkeypatch.setattr(rpc_module.time, "monotonic", lambda: clock[0])
    pool = RpcPool("t", [Endpoint("a", "http://a", None), Endpoint("b", "http://b", None)],
                   settings=RpcPoolSettings(max_head_lag=2, min_block_seconds=1.0))
    pool.endpoints[0].health.head = pool.endpoints[1].health.head = 100
    assert pool.best_head == 100
    clock[0] += 12.0  # twelve seconds later b is 10 blocks on, a has not moved: a lags
    pool.endpoints[0].health.latency_ewma = 0.001
    pool.endpoints[1].health.head = 110
    pool.endpoints[1].health.latency_ewma = 0.5
    assert [e.name for e in pool.ranked()] == ["b", "a"]
    await asyncio.sleep(0)


def test_an_endpoint_overstating_its_head_does_not_make_the_others_lag(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """#28 item 5: the best head was the highest claim, so one endpoint answering a head far
    ahead became primary and marked the operator's own node lagging."""
    clock = [1_000.0]
    monkeypatch.setattr(rpc_module.time, "monotonic", lambda: clock[0])
    eps = [Endpoint("own-node", "http://a", None), Endpoint("provider", "http://b", None),
           Endpoint("liar", "http://c", None)]
    pool = RpcPool("t", eps, settings=RpcPoolSettings(max_head_lag=3, min_block_seconds=1.0))
    for head, ep in zip((100, 100, 10_100), eps, strict=True):
        ep.health.head = head
    assert pool.best_head == 100  # the claim nobody corroborates is not the reference
    assert pool.healthy_count() == 3 and pool.ranked()[0].name == "own-node"
    for _ in range(5):  # the chain moves on; the liar keeps its lead
        clock[0] += 12.0
        for ep in eps:
            ep.health.head = (ep.health.head or 0) + 1
        assert pool.best_head == eps[0].health.head
        assert pool.ranked()[0].name == "own-node" and pool.healthy_count() == 3
    # Alone at the start, two endpoints far apart: the lower is believed until time says
    # otherwise (a lagging node is told from a liar by how fast the heads move).
    two = RpcPool("t", [Endpoint("x", "http://x", None), Endpoint("y", "http://y", None)])
    two.endpoints[0].health.head, two.endpoints[1].health.head = 100, 5_000
    assert two.best_head == 100


def probe(clock: list[float], eps: list[Endpoint], *heads: int) -> None:
    """One probe round 2 s after the last: each endpoint answers its head."""
    clock[0] += 2.0
    for ep, head in zip(eps, heads, strict=True):
        ep.health.probed(head, clock[0])


def test_one_endpoint_a_few_blocks_past_two_agreeing_ones_is_not_the_reference(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim four blocks past two agreeing endpoints was credited by time at the next
    probe (0.25 s a block): it became the reference, both honest endpoints lagged (unhealthy:
    no second opinion, no second feed reading) and the liar was followed alone."""
    clock = [1_000.0]
    monkeypatch.setattr(rpc_module.time, "monotonic", lambda: clock[0])
    eps = [Endpoint("own-node", "http://a", None), Endpoint("provider", "http://b", None),
           Endpoint("liar", "http://c", None)]
    pool = RpcPool("t", eps)  # (the daemon's settings: 3 blocks of lag, 0.25 s a block)
    probe(clock, eps, 100, 100, 100)
    assert pool.best_head == 100
    chain = 100
    for round_ in range(60):  # probes 2 s apart for two minutes; a block every 12 s
        chain += round_ % 6 == 5
        probe(clock, eps, chain, chain, chain + 4)  # the liar stays four blocks past it
        assert pool.best_head == chain
        assert pool.healthy_count() == 3
        assert [e.name for e in pool.ranked()] == ["own-node", "provider", "liar"]
        assert pool.second() is eps[1]
    # A few 429s bench the provider for a while: its last head still votes (the liar's claim
    # was taken in that window, and stayed the reference the time rule counted from)
    eps[1].health.benched_until = clock[0] + 10
    probe(clock, eps, chain, chain, chain + 4)
    assert pool.best_head == chain and pool.ranked()[0] is eps[0]


def test_two_endpoints_frozen_together_outvote_the_live_one_only_for_a_while(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two endpoints stuck at one height (one provider's two nodes) vetoed the one endpoint
    that follows the chain for good (a review): a head that has not moved for VOTE_FRESH_S
    outvotes no one, and the live endpoint's head is credited by time again."""
    clock = [1_000.0]
    monkeypatch.setattr(rpc_module.time, "monotonic", lambda: clock[0])
    eps = [Endpoint("p1", "http://a", None), Endpoint("p2", "http://b", None),
           Endpoint("own-node", "http://c", None)]
    pool = RpcPool("t", eps)
    chain = 100
    probe(clock, eps, chain, chain, chain)
    followed = []
    for _ in range(40):  # 80 s: a block every 2 s, the pair frozen at 100
        chain += 1
        probe(clock, eps, 100, 100, chain)
        followed.append(pool.ranked()[0].name)
    assert followed[-1] == "own-node" and pool.best_head == chain
    stuck_for = 2.0 * followed.index("own-node")
    assert rpc_module.VOTE_FRESH_S <= stuck_for <= rpc_module.VOTE_FRESH_S + 6, stuck_for
    assert pool.healthy_count() == 1  # (the pair lags: not asked for second opinions)
    # Followed for reads, but one endpoint's word against two: nothing of the keeper's money
    # goes on it (`contested`; a chain halt with a liar past it looks the same).
    assert "one endpoint's word" in (pool.contested() or "")
    probe(clock, eps, chain + 1, chain + 1, chain + 1)  # the pair caught up: agreed again
    assert pool.contested() is None


def test_a_claim_past_a_halted_chain_is_followed_but_moves_no_money(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The chain halts; two honest endpoints stand at its last block and still answer; a
    third invents a block every 2 s past it. Once the honest heads have stood still for
    VOTE_FRESH_S the invented head is credited by time (a stalled pair must not hide the
    chain), and with no second opinion it decided the keeper's sends alone (a trial). Now the
    pool says the head is contested, which holds every send and approval (alerted), until
    the chain moves again and the honest pair outvotes the claim."""
    clock = [1_000.0]
    monkeypatch.setattr(rpc_module.time, "monotonic", lambda: clock[0])
    eps = [Endpoint("own-node", "http://a", None), Endpoint("provider", "http://b", None),
           Endpoint("liar", "http://c", None)]
    pool = RpcPool("t", eps)
    for head in range(100, 105):
        probe(clock, eps, head, head, head)
        assert pool.best_head == head  # (asked at every probe, as polling does)
    invented = 104
    for _ in range(25):  # 50 s of a halted chain
        invented += 1
        probe(clock, eps, 104, 104, invented)
        pool.ranked()
    assert pool.best_head == invented and pool.ranked()[0].name == "liar"
    held = pool.contested()
    assert held is not None and f"block {invented}" in held and "block 104" in held
    assert "http://c" in held
    eps[1].health.benched_until = clock[0] + 10  # (an honest one's 429s: still held)
    assert pool.contested() is not None
    eps[1].health.benched_until = 0.0
    probe(clock, eps, 105, 105, invented + 1)  # the chain moves again: the pair votes
    assert pool.best_head == 105 and pool.contested() is None
    # Two endpoints: no majority against either; time decides, and nothing is contested.
    two = RpcPool("t", eps[1:])
    for _ in range(25):
        invented += 1
        probe(clock, eps[1:], 105, invented)
        two.ranked()
    assert two.best_head == invented and two.contested() is None


def test_an_endpoint_two_behind_two_others_ranks_after_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first endpoint frozen a block or three back stayed first while within
    `max_head_lag`: polling asked it for the head, which hid those blocks. Two others past it
    by two blocks rank it after them, once its head did not move at a probe; it stays
    healthy. One endpoint's claim alone moves nobody down, nor does a live head two blocks
    behind (a fast chain's routine, which a liar claiming the same turned into a demotion:
    a review), and two endpoints make no quorum."""
    clock = [1_000.0]
    monkeypatch.setattr(rpc_module.time, "monotonic", lambda: clock[0])
    eps = [Endpoint("own-node", "http://a", None), Endpoint("provider", "http://b", None),
           Endpoint("public", "http://c", None)]
    pool = RpcPool("t", eps)
    probe(clock, eps, 100, 101, 100)
    assert [e.name for e in pool.ranked()] == ["own-node", "provider", "public"]  # one block
    probe(clock, eps, 101, 103, 103)  # own-node moved: two behind, but live
    assert [e.name for e in pool.ranked()] == ["own-node", "provider", "public"]
    probe(clock, eps, 101, 104, 104)  # it did not move: frozen, behind two others
    assert [e.name for e in pool.ranked()] == ["provider", "public", "own-node"]
    assert pool.healthy_count() == 3 and pool.behind_quorum(eps[0])
    assert pool.second() is eps[2]  # (the frozen one is no second opinion)
    probe(clock, eps, 104, 104, 104)  # it catches up: first again
    assert [e.name for e in pool.ranked()] == ["own-node", "provider", "public"]
    probe(clock, eps, 104, 107, 104)  # one claim alone: nobody moves
    probe(clock, eps, 104, 108, 104)
    assert [e.name for e in pool.ranked()] == ["own-node", "provider", "public"]
    two = RpcPool("t", eps[:2])
    probe(clock, eps[:2], 109, 111)
    probe(clock, eps[:2], 109, 111)  # frozen two behind, within the lag: no quorum of two
    assert [e.name for e in two.ranked()] == ["own-node", "provider"]


def test_a_lagging_endpoint_that_still_moves_does_not_contest_the_head(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An L2 at 4 blocks a second: the own node follows the chain, one public endpoint has
    stood still for minutes, the other lags 1-6 blocks but moves. When it lags past
    `max_head_lag` the own node's head is credited by time (one voter is not two), and it
    is not contested: only endpoints whose heads stand still make a head contested (a
    review: sends paused 60 % of the time, the alert flapping)."""
    clock = [1_000.0]
    monkeypatch.setattr(rpc_module.time, "monotonic", lambda: clock[0])
    eps = [Endpoint("own-node", "http://a", None), Endpoint("frozen", "http://b", None),
           Endpoint("lagging", "http://c", None)]
    pool = RpcPool("t", eps, settings=RpcPoolSettings(min_block_seconds=0.25))
    eps[1].health.probed(900, clock[0] - 60)  # (its head last moved a minute ago)
    chain = 1_000
    contested = []
    for i in range(120):  # 4 minutes, a probe every 2 s
        chain += 8
        probe(clock, eps, chain, 900, chain - 1 - i % 6)
        pool.ranked()
        contested.append(pool.contested())
        if i % 6 >= 3:  # (4-6 behind: the own node's head is credited by time)
            assert pool.best_head == chain
    assert not any(contested)


async def test_an_endpoint_that_moves_but_stays_behind_two_others_ranks_after_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A first endpoint that moves at every probe but stays three blocks behind two others
    (within `max_head_lag`) stayed first for good: its head moved, so it never counted as
    behind, and polling asked it for the head, three blocks late at every block. After
    BEHIND_PROBES probes in a row behind them it ranks after them; caught up, first again."""
    clock = [1_000.0]
    monkeypatch.setattr(rpc_module.time, "monotonic", lambda: clock[0])
    eps = [Endpoint("own-node", "http://a", None), Endpoint("provider", "http://b", None),
           Endpoint("public", "http://c", None)]
    pool = RpcPool("t", eps)
    heads: dict[str, int] = {}

    async def answer(ep: Endpoint) -> None:  # (each endpoint's head, as its probe reads it)
        ep.health.probed(heads[ep.name], clock[0])

    monkeypatch.setattr(pool, "_probe_one", answer)
    order = []
    for head in range(100, 100 + rpc_module.BEHIND_PROBES + 1):
        clock[0] += 2.0
        heads.update({"own-node": head - 3, "provider": head, "public": head})
        await pool.probe()  # (counts the runs behind, as the daemon's probes do)
        order.append(pool.ranked()[0].name)
    assert order[:rpc_module.BEHIND_PROBES - 1] == ["own-node"] * (rpc_module.BEHIND_PROBES - 1)
    assert order[-1] == "provider" and pool.behind_quorum(eps[0])
    heads.update({"own-node": 110, "provider": 110, "public": 110})
    await pool.probe()
    assert pool.ranked()[0].name == "own-node"


def test_a_read_that_found_no_block_does_not_make_a_frozen_head_move() -> None:
    """A batch at a block the endpoint lacks lowers its head to the block before (as far as
    is known); its next probe, the same frozen head, read as a head that moved: it voted and
    ranked as live (a review)."""
    ep = Endpoint("frozen", "http://a", None)
    ep.health.probed(100, 1_000.0)
    ep.health.probed(100, 1_002.0)
    assert ep.health.probes_unmoved == 1
    ep.health.head = 99  # (what `_batch_at` does when it has no block 100... here, 101)
    ep.health.probed(100, 1_004.0)
    assert ep.health.probes_unmoved == 2 and ep.health.head_moved_at == 1_000.0
    ep.health.probed(101, 1_006.0)  # (a real move)
    assert ep.health.probes_unmoved == 0 and ep.health.head_moved_at == 1_006.0


def test_configured_order_wins_unless_an_endpoint_is_much_slower() -> None:
    eps = [Endpoint("primary", "http://a", None), Endpoint("fallback", "http://b", None)]
    pool = RpcPool("t", eps)
    eps[0].health.latency_ewma, eps[1].health.latency_ewma = 0.020, 0.005
    assert [e.name for e in pool.ranked()] == ["primary", "fallback"]
    eps[0].health.latency_ewma = 0.5  # > 4 x 5 ms + 50 ms
    assert [e.name for e in pool.ranked()] == ["fallback", "primary"]


async def test_oversized_answers_are_refused_unread(pool: RpcPool, devnet: Devnet,
                                                    metrics: Metrics) -> None:
    from keeperd.chain.rpc import ResponseTooLarge

    query = [{"fromBlock": "0x0", "toBlock": "latest",
              "address": devnet.manifest["aave_v3"]["pool"]}]
    with pytest.raises(ResponseTooLarge):
        await pool.request("eth_getLogs", query, max_response_bytes=10_000)
    logs = await pool.request("eth_getLogs", query)
    assert len(logs) > 100
    assert metric_value(metrics, "keeperd_rpc_requests_total",
                        {"chain": "devnet", "endpoint": "0", "method": "eth_getLogs",
                         "outcome": "too_large"}) == 1
    assert pool.endpoints[0].health.consecutive_failures == 0  # the node did nothing wrong


async def test_malformed_answers_are_the_endpoints_fault_not_a_crash(devnet: Devnet) -> None:
    """An error that is a bare string, a body that is not JSON-RPC, a header without fields
    (the chaos proxy in front of the devnet's node): the endpoint is failed over and counted;
    nothing raises into the caller; the block source keeps following."""
    from keeperd.chain.blocks import BlockSource
    from tests.faults.chaos_proxy import ChaosProxy, Fault

    malformed = [b'{"jsonrpc": "2.0", "id": 1, "error": "boom"}', b'{"jsonrpc": "2.0"}',
                 b"[1, 2]", b'{"jsonrpc": "2.0", "id": 1, "error": {"code": "x"}}']
    metrics = Metrics()
    async with ChaosProxy(devnet.manifest["rpc_url"]) as proxy:
        async with RpcPool.from_urls("devnet", [proxy.url, devnet.manifest["rpc_url"]],
                                     metrics=metrics) as pool:
            for raw in malformed:
                proxy.faults["eth_blockNumber"] = Fault.body(raw)
                head = int(await pool.request("eth_blockNumber"), 16)
                assert head == devnet.client.block_number()
        assert metric_value(metrics, "keeperd_rpc_requests_total", {
            "chain": "devnet", "endpoint": "0", "method": "eth_blockNumber",
            "outcome": "bad_response"}) >= 1
        proxy.faults["*"] = Fault.body(b'{"jsonrpc": "2.0", "id": 1, "error": "boom"}')
        proxy.faults["eth_getBlockByNumber"] = Fault.body(  # a header without fields
            b'{"jsonrpc": "2.0", "id": 1, "result": {"number": "0x5"}}')
        async with RpcPool.from_urls("devnet", [proxy.url], metrics=metrics,
                                     settings=FAST) as only_the_liar:
            source = BlockSource(only_the_liar, poll_interval=0.05)
            task = asyncio.create_task(source.run())
            for _ in range(300):  # (each poll fails over and backs off first: not a block)
                await asyncio.sleep(0.1)
                assert not task.done()  # still following, not crashed
                if (metric_series(metrics, "keeperd_block_source_errors_total",
                                  {"chain": "devnet", "source": "poll"}) or 0) >= 3:
                    break
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert proxy.faulted["eth_getBlockByNumber"] >= 1
    assert metric_value(metrics, "keeperd_block_source_errors_total",
                        {"chain": "devnet", "source": "poll"}) >= 3
    # (the header without fields is the endpoint's fault: a bad response, failed over)
    assert metric_value(metrics, "keeperd_rpc_requests_total", {
        "chain": "devnet", "endpoint": "0", "method": "eth_getBlockByNumber",
        "outcome": "bad_response"}) >= 1


async def test_an_endpoint_of_another_chain_is_never_used(devnet) -> None:  # type: ignore[no-untyped-def]
    """An endpoint down at start that comes back answering for another network (mainnet's
    chain id here): asked eth_chainId before anything else, found wrong, never used again —
    the requests go to the endpoint of the configured chain."""
    from aiohttp import web

    from keeperd.chain.rpc import Endpoint, RpcPool
    from tests.conftest import serve

    seen: list[str] = []
    down = [True]

    async def other_chain(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body["method"])
        if down[0]:
            return web.Response(status=503)
        result = "0x1" if body["method"] == "eth_chainId" else "0x999999"
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": result})

    app = web.Application()
    app.router.add_post("/", other_chain)
    async with serve(app) as url:
        pool = RpcPool("devnet", [Endpoint("0", url, None),
                                  Endpoint("1", devnet.manifest["rpc_url"], None)],
                       expected_chain_id=31337)
        async with pool:
            head = int(await pool.request("eth_blockNumber"), 16)  # 0 is down: 1 answers
            assert head == devnet.client.block_number()
            down[0] = False  # back, on another network
            # Asked by name first (a vote on the keeper's code): its chain id, then nothing.
            before = len(seen)
            with pytest.raises(RpcUnavailable, match="another network"):
                await pool.call_endpoint(pool.endpoints[0], "eth_getCode",
                                         ["0x" + "11" * 20, "latest"])
            with pytest.raises(RpcUnavailable, match="another network"):
                await pool.batch_on(pool.endpoints[0], [("eth_blockNumber", [])])
            assert seen[before:] == ["eth_chainId"]  # (asked once, then known)
            await pool.probe()
            assert pool.endpoints[0].health.chain_ok is False
            assert pool.endpoints[1].health.chain_ok is True
            # Nor asked when every endpoint is (an address to approve, the keeper's code, a
            # block still there): its answers are another chain's.
            assert pool.voters == [pool.endpoints[1]]
            for _ in range(5):
                assert int(await pool.request("eth_blockNumber"), 16) == head
    assert "eth_chainId" in seen
    assert seen.count("eth_blockNumber") == 0  # not one request went to it after it answered
    assert pool.healthy_count() == 1


async def test_a_dead_endpoint_is_probed_as_its_bench_says() -> None:
    """A dead endpoint was probed at every poll interval for good (twice a second on the
    devnet, each probe a transport error counted; a by-hand trial). Benched, it is probed
    as often as its cooldown says, at most every 10 s."""
    url = f"http://127.0.0.1:{free_port()}"
    async with RpcPool.from_urls("t", [url], settings=FAST, metrics=Metrics()) as pool:
        ep = pool.endpoints[0]
        for _ in range(20):
            await pool.probe()
        # (FAST benches after its few failures: the rest of the probes wait for the bench)
        assert ep.health.benched_until > 0
        assert ep.health.errors <= FAST.bench_after + 1, ep.health.errors


async def test_each_endpoints_answer_is_read_at_the_block_asked(devnet: Devnet) -> None:
    """The keeper's balance as each endpoint says it, read beside the first reading: each at
    "latest", a moment apart, disagreed in every crash (liquidations move the balance) —
    false keeper.balance_disagreement warnings, a by-hand trial. Both now read one block."""
    from keeperd.chain.calls import ContractCall, call_many, call_many_at_latest
    from keeperd.protocols.sdk.approvals import by_endpoint

    rich = "0x00000000000000000000000000000000000b0b00"
    rpc = devnet.manifest["rpc_url"]
    async with RpcPool.from_urls("devnet", [rpc, rpc.replace("127.0.0.1", "localhost")]) as pool:
        balance = ContractCall(devnet.manifest["multicall3"], "getEthBalance(address)",
                               ["address"], [rich])
        devnet.client.call("anvil_setBalance", rich, hex(5))
        block = devnet.mine(1)
        devnet.mine(1)
        devnet.client.call("anvil_setBalance", rich, hex(9))  # (the head's state, in place)
        assert await call_many(pool, [balance], block) == [5]
        assert await by_endpoint(pool, [balance], block) == [[5], [5]]
        assert await by_endpoint(pool, [balance]) == [[9], [9]]
        # (the approvals read the first at "latest" and learn which block that was)
        assert await call_many_at_latest(pool, [balance]) == (block + 1, [9])


async def test_a_result_no_method_returns_is_the_endpoints_fault(devnet: Devnet) -> None:
    """One endpoint of three answering results of the wrong shape — a head "0xZZ" (raised
    in the probe: the daemon crashed at every start, a by-hand trial), a multicall "0x" (every
    block's evaluation failed, the endpoint kept first), a batch whose ids are lists
    (TypeError in the caller): each is a bad response, failed over to the next endpoint and
    counted; nothing raises into the caller."""
    from keeperd.chain.multicall import Call, Multicall
    from keeperd.protocols.aave_v3 import abi
    from tests.faults.chaos_proxy import ChaosProxy, Fault

    metrics = Metrics()
    m = devnet.manifest
    async with ChaosProxy(m["rpc_url"]) as proxy:
        def pool() -> RpcPool:  # (a fresh one each time: the liar first again)
            return RpcPool.from_urls("devnet", [proxy.url, m["rpc_url"]], metrics=metrics,
                                     settings=FAST)

        async with pool() as first:
            proxy.faults["eth_blockNumber"] = Fault.answer("0xZZ")
            await first.probe()  # (raised ValueError out of the probe loop)
        async with pool() as second:
            assert int(await second.request("eth_blockNumber"), 16) == \
                devnet.client.block_number()
        async with pool() as third:
            proxy.faults["eth_call"] = Fault.answer("0x")
            [reserves] = await Multicall(third, address=m["multicall3"]).aggregate3(
                [Call(m["aave_v3"]["pool"], abi.GET_RESERVES_LIST)])
            assert reserves.success and len(abi.decode_address_list(reserves.data)) > 3
        async with pool() as fourth:
            proxy.faults["*"] = Fault.body(
                b'[{"jsonrpc": "2.0", "id": [1], "result": "0x1"}]')
            answers = await fourth.batch([("eth_chainId", []), ("eth_blockNumber", [])])
            assert int(answers[0], 16) == 31337
    for method in ("eth_blockNumber", "eth_call", "batch"):
        assert metric_value(metrics, "keeperd_rpc_requests_total", {
            "chain": "devnet", "endpoint": "0", "method": method,
            "outcome": "bad_response"}) >= 1, method


def test_a_backup_claiming_blocks_past_the_chain_is_not_believed_faster_than_blocks_come(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two endpoints on mainnet, the backup claiming 12 blocks past the first, which follows
    the chain (a block every 12 s): with the 0.25 s a block any chain got, the claim was
    credited within a second, the honest endpoint made lagging and the liar followed alone
    (74 liquidations sent on its state, every one reverted, a by-hand trial). A known
    chain's head moves on no faster than its blocks come."""
    from keeperd.chain.connect import make_pool, min_block_seconds
    from keeperd.config import ChainConfig

    mainnet = ChainConfig(name="mainnet", chain_id=1,
                          rpc_urls=["https://own.example", "https://backup.example"])
    assert min_block_seconds(mainnet) == pytest.approx(10.8)
    assert min_block_seconds(mainnet.model_copy(update={"block_time_s": 2.0})) == \
        pytest.approx(1.8)
    assert min_block_seconds(mainnet.model_copy(update={"chain_id": 31337})) == 0.25
    clock = [1_000.0]
    monkeypatch.setattr(rpc_module.time, "monotonic", lambda: clock[0])
    for settings, believed in ((make_pool(mainnet, Metrics()).settings, False),
                               (RpcPoolSettings(), True)):
        eps = [Endpoint("own", "http://a", None), Endpoint("backup", "http://b", None)]
        pool = RpcPool("mainnet", eps, settings=settings)
        followed = []
        for i in range(150):  # 5 minutes, a probe every 2 s
            head = 20_000_000 + i // 6
            probe(clock, eps, head, head + 12)
            followed.append(pool.best_head == head + 12)
        assert any(followed) is believed, settings
        if not believed:
            assert pool.is_healthy(eps[0]) and pool.ranked()[0].name == "own"


async def test_a_short_call_answer_is_asked_of_the_second_endpoint(devnet: Devnet) -> None:
    """A first endpoint answering "0x" to every eth_call: the calls made one at a time (the
    cascade's depth reads, the keeper's allowances) failed every block while it stayed first
    (a by-hand trial). A short answer is asked once of the second endpoint, whose full one
    stands; a contract that is not there is short on both, as before."""
    from keeperd.chain.calls import ContractCall, ShortAnswer, call_many
    from tests.faults.chaos_proxy import ChaosProxy, Fault

    m = devnet.manifest
    usdc = m["tokens"]["USDC"]
    decimals = ContractCall(usdc, "decimals()", returns=["uint8"])
    async with ChaosProxy(m["rpc_url"]) as proxy, \
            RpcPool.from_urls("devnet", [proxy.url, m["rpc_url"]], settings=FAST) as pool:
        proxy.faults["eth_call"] = Fault.answer("0x")
        assert await decimals.call(pool) == 6
        [again] = await call_many(pool, [decimals])
        assert again == 6
        nowhere = ContractCall("0x" + "11" * 20, "decimals()", returns=["uint8"])
        with pytest.raises(ShortAnswer):
            await nowhere.call(pool)


async def test_an_endpoint_of_another_chain_does_not_hold_failing_for_at_zero() -> None:
    """One found on another network is never asked again, so its run of failures never
    starts: it held `failing_for` at 0 while the chain's own endpoint hung (a review)."""
    urls = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    async with RpcPool.from_urls("t", urls, settings=FAST, metrics=Metrics()) as pool:
        hung, other = pool.endpoints
        other.health.chain_ok = False
        hung.health.failing_since = 100.0
        assert pool.failing_for(now=130.0) == 30.0
        other.health.chain_ok = None  # (not known to be elsewhere: it counts, unfailed)
        assert pool.failing_for(now=130.0) == 0.0
