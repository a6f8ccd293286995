"""Capital as a stage: which liquidations the keeper's balances pay for (pure)."""

from __future__ import annotations

from keeperd.execution.capital import Need, allocate


def need(item: tuple[str, int, float]) -> Need:
    asset, amount, profit = item
    return Need(asset, asset.upper(), 6, amount, profit)


def test_most_profitable_first_then_what_still_fits() -> None:
    items = [("usdc", 700, 50.0), ("usdc", 500, 40.0), ("dai", 10, 1.0), ("usdc", 300, 5.0)]
    funded, unfunded, short = allocate(items, need, {"usdc": 1_000, "dai": 0})
    # 700 fits; 500 does not (300 left); the 300 after it still does.
    assert funded == [("usdc", 700, 50.0), ("usdc", 300, 5.0)]
    assert unfunded == [("usdc", 500, 40.0), ("dai", 10, 1.0)]
    # To fund everything: 1,500 USDC needed, 1,000 held; 10 DAI needed, none held.
    assert short["usdc"].missing == 500 and short["usdc"].opportunities == 1
    assert short["usdc"].profit_forgone_usd == 40.0 and short["usdc"].symbol == "USDC"
    assert short["dai"].missing == 10 and short["dai"].missing_tokens == 10 / 1e6


def test_enough_balance_means_no_shortfall() -> None:
    funded, unfunded, short = allocate([("usdc", 5, 1.0)], need, {"usdc": 5})
    assert funded == [("usdc", 5, 1.0)] and unfunded == [] and short == {}


def test_a_curie_shortfall_names_what_is_short() -> None:
    """Curie's capital is two things: free collateral in its Vault (takeovers; raised by
    keeper_margin_usd) and the wallet's USDC (collateral liquidations; keeper_margin_usd
    moves it into the Vault, so raising it there would make that worse). "Fund the keeper
    with the debt asset" named neither; one fix named the Vault for both."""
    from types import SimpleNamespace
    from typing import Any

    from keeperd.protocols.perp_curie.liquidator import VAULT, CurieLiquidator

    def curie(mode: str, held_usd: float, wallet_usd: float) -> Any:
        liq: Any = CurieLiquidator.__new__(CurieLiquidator)
        liq.config = SimpleNamespace(mode=mode)
        liq.adapter = SimpleNamespace(config=SimpleNamespace(keeper_margin_usd=2_000_000))
        liq._capital_read = (int(held_usd * 10**6), int(wallet_usd * 10**6))
        liq._margin_due = False
        return liq

    # The margin deposited and used up: raise it (and fund the wallet for it).
    spent = curie("liquidate", 2_000_000, 5_000)
    vault = spent.capital_fix({VAULT})
    wallet = spent.capital_fix({"0xUSDC"})
    assert vault is not None and vault.startswith("raise keeper_margin_usd")
    assert "wallet" not in vault
    assert wallet is not None and wallet.startswith("fund the keeper's wallet with USDC")
    assert spent.capital_fix({VAULT, "0xUSDC"}) == f"{vault}; {wallet}"
    assert spent.capital_fix(set()) is None
    # Not deposited, the wallet short of it: fund the wallet (raising the margin, already
    # $2M, was the advice a by-hand trial got with an empty wallet).
    empty = curie("liquidate", 0, 100).capital_fix({VAULT})
    assert empty is not None and empty.startswith("fund the keeper's wallet with USDC")
    assert "2,000,000" in empty and "100 in the wallet" in empty
    assert "with the next balances" in empty  # (under 90 % of it: refilled every few blocks)
    # Just over 90 % of it, losses having taken the rest: refilled only once under.
    near = curie("liquidate", 1_900_000, 50_000).capital_fix({VAULT})
    assert near is not None and near.startswith("fund the keeper's wallet with USDC")
    assert "once the margin is under 90% of it (or deposit by hand)" in near
    assert str(curie("liquidate", 1_900_000, 5_000_000).capital_fix({VAULT})).startswith(
        "raise keeper_margin_usd")
    pending = curie("liquidate", 0, 5_000_000)
    waiting = pending.capital_fix({VAULT})
    assert waiting is not None and waiting.startswith("the margin deposit has not gone yet")
    assert waiting.endswith("tried again with the balances")
    # A dry run deposits nothing: said so (it was told to raise the margin).
    rehearsal = curie("dry-run", 0, 10_000_000).capital_fix({VAULT})
    assert rehearsal is not None and rehearsal.startswith("dry-run deposits nothing")


def test_a_shortfall_is_published_and_each_forgone_liquidation_counted_once() -> None:
    """The gauge per asset (0 again when over); the funnel and the profit forgone for the
    liquidations newly forgone only (each pass counted its whole shortfall: twice in a
    crash's block and again each block); the log when the shortfall changes."""
    import structlog

    from keeperd.execution.capital import publish_shortfall
    from keeperd.metrics import Metrics
    from tests.conftest import metric_series, metric_value

    metrics = Metrics()
    labels = {"chain": "devnet", "protocol": "aave"}
    funnel = {**labels, "stage": "no_capital"}
    wbtc = Need("wbtc", "WBTC", 8, 123_456_789, 40.126)
    _, _, short = allocate([wbtc, ("dai", 10, 1.0)],
                           lambda i: i if isinstance(i, Need) else need(i), {"wbtc": 0})
    first = [wbtc, need(("dai", 10, 1.0))]
    with structlog.testing.capture_logs() as logs:
        publish_shortfall(metrics, "devnet", "aave", {}, short, counted=True, fix="fund it",
                          newly=first)
        publish_shortfall(metrics, "devnet", "aave", short, short, counted=True, fix="fund it")
    assert metric_value(metrics, "keeperd_liquidations_total", funnel) == 2
    assert metric_value(metrics, "keeperd_capital_forgone_usd_total", labels) == 41.126
    assert metric_value(metrics, "keeperd_capital_shortfall_tokens",
                        {**labels, "asset": "WBTC"}) == 1.23456789
    told = [e for e in logs if e["event"] == "liquidation.no_capital"]
    assert sorted(e["asset"] for e in told) == ["DAI", "WBTC"]  # (the second pass: silent)
    assert {(e["protocol"], e["fix"], e["opportunities"]) for e in told} == {("aave", "fund it", 1)}
    btc = next(e for e in told if e["asset"] == "WBTC")
    assert (btc["missing"], btc["profit_forgone_usd"]) == (1.234568, 40.13)
    # Over for WBTC: its gauge back to 0, DAI's kept, and said (nothing new forgone).
    dai_only = {k: v for k, v in short.items() if k == "dai"}
    with structlog.testing.capture_logs() as logs:
        publish_shortfall(metrics, "devnet", "aave", short, dai_only, counted=True, fix="")
    assert [e["asset"] for e in logs if e["event"] == "liquidation.no_capital"] == ["DAI"]
    # Not counted under capital: auto (its flash path took them).
    publish_shortfall(metrics, "devnet", "aave", dai_only, dai_only, counted=False, fix="",
                      newly=first)
    assert metric_value(metrics, "keeperd_capital_shortfall_tokens",
                        {**labels, "asset": "WBTC"}) == 0
    assert metric_value(metrics, "keeperd_capital_shortfall_tokens",
                        {**labels, "asset": "DAI"}) == 10 / 1e6
    assert metric_value(metrics, "keeperd_liquidations_total", funnel) == 2
    assert metric_series(metrics, "keeperd_capital_forgone_usd_total",
                         {"chain": "devnet", "protocol": "morpho"}) is None


def test_an_account_whose_pair_is_chosen_anew_is_not_forgone_twice() -> None:
    """Aave's plan picks an account's (collateral, debt) pair anew each block: as interest
    grew, a near tie flipped (WBTC/USDC at the crash block, WETH/USDC at the next) and the
    same forgone liquidation was counted again (no_capital 47 for 46, a CI run). A position
    of the account forgone before and not planned any more stands for the new one; a second
    position of an account (Morpho's markets) is still one more."""
    from keeperd.execution.executor import newly_forgone
    from keeperd.protocols.sdk.keys import OpportunityKey

    def key(account: str, *position: str) -> OpportunityKey:
        return OpportunityKey("aave", account, position, "v")

    forgone = {("0xa", ("wbtc", "usdc")), ("0xb", ("weth", "dai"))}
    flipped = [key("0xa", "weth", "usdc"), key("0xb", "weth", "dai")]
    planned = {(k.account, k.position) for k in flipped}
    assert newly_forgone(flipped, forgone, planned) == []
    # Still planned, the old one is not replaced: the new one is another liquidation.
    assert newly_forgone(flipped, forgone, {*planned, ("0xa", ("wbtc", "usdc"))}) == [0]
    # One gone stands for one new one only; a new account is new.
    more = [*flipped, key("0xa", "wsteth", "usdc"), key("0xc", "weth", "usdc")]
    assert newly_forgone(more, forgone, {(k.account, k.position) for k in more}) == [2, 3]


def test_a_shortfall_held_back_from_the_capital_stage_stands_as_it_was() -> None:
    """An asset whose forgone positions a breaker's pause kept from this block's capital
    stage stays short with the last full pass's figures (it resolved while nothing was
    funded, a by-hand trial); one judged short now has this block's; one whose positions are
    gone is over."""
    from keeperd.execution.capital import Shortfall
    from keeperd.execution.executor import _short_while_held

    def short(asset: str, missing: int) -> Shortfall:
        return Shortfall(asset, asset.upper(), 6, missing, 1, 10.0)

    last = {"usdc": short("usdc", 5), "dai": short("dai", 7), "usdt": short("usdt", 9)}
    now = {"usdc": short("usdc", 6)}
    assert _short_while_held(now, last, {"usdc", "dai"}) == {"usdc": now["usdc"],
                                                             "dai": last["dai"]}
    assert _short_while_held({}, last, set()) == {}
