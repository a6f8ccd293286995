"""`keeperd wave status`'s verdict: the state that matters most is said, and no endpoint's
trouble reads as "deploy it" (a by-hand trial: a keeper delegated to foreign code got no
verdict at all, and endpoints that did not answer were told to deploy)."""

from __future__ import annotations

from keeperd.execution.wave_setup import EndpointView, WaveState

KEEPER = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"


def verdict(*views: tuple[str, str]) -> str:
    state = WaveState("devnet", KEEPER, [EndpointView(f"http://node{i}", executor, keeper)
                                         for i, (executor, keeper) in enumerate(views)])
    return state.render().splitlines()[-1].strip()


def test_each_state_has_its_verdict() -> None:
    assert verdict(("KeeperWave", "delegated to KeeperWave")) == (
        "ready: the keeper's address runs KeeperWave")
    assert verdict(("KeeperWave", "ordinary")).endswith("`keeperd wave delegate`")
    assert verdict(("none", "ordinary")) == (
        "not deployed on every endpoint: `keeperd wave deploy`")
    foreign = verdict(("KeeperWave", "delegated to 0x" + "ca11" * 10))
    assert foreign.startswith("the keeper's address runs code keeperd does not know")
    assert "`keeperd wave revoke`" in foreign
    assert verdict(("none", "contract code")).startswith(
        "the keeper's address runs code keeperd does not know (contract code)")
    assert verdict(("no answer: refused", "no answer: refused")).startswith(
        "no endpoint answered: check chains[].rpc_urls")
    assert verdict(("KeeperWave", "ordinary"), ("KeeperWave", "delegated to KeeperWave")
                   ).startswith("the endpoints disagree on the keeper's address")
