"""Loopback is an address, not a prefix (#28 item 12): plain http is allowed to this machine
only, and a host named "127.evil.example" is not this machine."""

from __future__ import annotations

import pytest

from keeperd.config import ConfigError, parse_config

MINIMAL = {"state_dir": "/tmp/keeperd-test", "chains": [
    {"name": "d", "chain_id": 1, "rpc_urls": ["http://127.0.0.1:8545"]}],
    "protocols": [{"kind": "aave_v3", "name": "a", "chain": "d",
                   "addresses_provider": "0x" + "11" * 20}]}


def alertmanager(url: str) -> dict:  # type: ignore[type-arg]
    return {**MINIMAL, "alerts": {"routes": [{"name": "ops", "sinks": [
        {"kind": "alertmanager", "url": url}]}]}}


@pytest.mark.parametrize("url", ["http://127.0.0.1:9093", "http://127.1.2.3:9093",
                                 "http://localhost:9093", "http://[::1]:9093"])
def test_this_machine_may_be_spoken_to_in_clear(url: str) -> None:
    parse_config(alertmanager(url), env={})


@pytest.mark.parametrize("url", ["http://127.evil.example:9093", "http://127.0.0.1.nip.io:9093",
                                 "http://10.0.0.5:9093", "http://localhost.evil.example"])
def test_a_name_that_looks_local_is_not(url: str) -> None:
    with pytest.raises(ConfigError, match="use https"):
        parse_config(alertmanager(url), env={})
