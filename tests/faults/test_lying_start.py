"""A by-hand trial's finding: one endpoint's wrong answers while keeperd starts (junk to a
protocol's first reads) crashed the start with a traceback, every protocol with it, though
the same faults once running are quarantined. A plug-in's start is asked again (the waits
doubling); what fails every time is one clear error naming the protocol."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from keeperd import daemon as daemon_module
from keeperd.daemon import StartupError
from keeperd.devnet.handle import Devnet
from tests.conftest import metric_value
from tests.faults.chaos_proxy import ChaosProxy, Fault
from tests.keeper_harness import config_for, keeper_key_env  # noqa: F401 - fixtures

JUNK = "0x" + "ff" * 7  # (not a whole word: no decoder takes it)


async def test_junk_answers_at_start_are_asked_again_and_the_daemon_starts(
        devnet: Devnet, tmp_path: Path, run_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon_module, "PLUGIN_START_FIRST_WAIT_S", 0.05)
    async with ChaosProxy(devnet.manifest["rpc_url"]) as liar:
        liar.faults["eth_call"] = Fault.answer(JUNK, times=2)
        config = config_for(devnet, tmp_path, "alert-only", rpc_urls=[liar.url])
        with structlog.testing.capture_logs() as logs:
            keeper = await run_daemon(config)
            await keeper.evaluated_at(devnet.client.block_number())
    assert liar.faulted["eth_call"] == 2
    # (a multicall answer of the wrong shape is the endpoint's fault, asked again by the
    # pool itself; a start failing past the pool's attempts is asked again by the daemon,
    # protocol.start_failed — the test below)
    assert metric_value(keeper.daemon.metrics, "keeperd_rpc_requests_total", {
        "chain": "devnet", "endpoint": "0", "method": "eth_call",
        "outcome": "bad_response"}) == 2
    assert not [e for e in logs if e["event"] == "protocol.start_failed"]


async def test_a_start_that_fails_every_time_is_one_clear_error(
        devnet: Devnet, tmp_path: Path, run_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon_module, "PLUGIN_START_FIRST_WAIT_S", 0.01)
    async with ChaosProxy(devnet.manifest["rpc_url"]) as liar:
        liar.faults["eth_call"] = Fault.answer(JUNK)
        config = config_for(devnet, tmp_path, "alert-only", rpc_urls=[liar.url])
        with pytest.raises(StartupError, match=r"protocol aave: its start \(reading its "
                                               r"contracts\) failed 5 times"):
            await run_daemon(config)


async def test_a_market_that_does_not_exist_is_said_by_its_field_with_its_fix(
        devnet: Devnet, tmp_path: Path, run_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mistyped Morpho market id, asked again as any failed start is (one endpoint's empty
    answer is not the chain's), then refused naming the market's own entry and what to do —
    it was `ValueError: ...` and a fix for any protocol's addresses (a by-hand trial)."""
    from keeperd.config import parse_config
    from tests.keeper_harness import devnet_chain, morpho_protocol

    monkeypatch.setattr(daemon_module, "PLUGIN_START_FIRST_WAIT_S", 0.01)
    morpho = morpho_protocol(devnet)
    morpho["markets"] = [morpho["markets"][0], "0x" + "ab" * 32]
    config = parse_config({"state_dir": str(tmp_path / "state"),
                           "chains": [devnet_chain(devnet)], "protocols": [morpho],
                           "metrics": {"enabled": False},
                           "risk": {"cascade": {"enabled": False}}})
    with structlog.testing.capture_logs() as logs, pytest.raises(StartupError) as raised:
        await run_daemon(config)
    said = str(raised.value)
    assert said.startswith(f"protocol morpho: markets[1]: morpho: market 0x{'ab' * 32} does "
                           "not exist on "), said
    assert "ValueError" not in said and "fix: copy the market's id again" in said
    assert len([e for e in logs if e["event"] == "protocol.start_failed"]) == 4
