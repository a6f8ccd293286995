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
    from keeperd.protocols.perp_curie.liquidator import VAULT, CurieLiquidator

    fix = CurieLiquidator.capital_fix
    vault = fix(None, {VAULT})  # type: ignore[arg-type]
    wallet = fix(None, {"0xUSDC"})  # type: ignore[arg-type]
    assert vault is not None and "keeper_margin_usd" in vault and "wallet" not in vault
    assert wallet is not None and wallet.startswith("fund the keeper's wallet with USDC")
    assert fix(None, {VAULT, "0xUSDC"}) == f"{vault}; {wallet}"  # type: ignore[arg-type]
    assert fix(None, set()) is None  # type: ignore[arg-type]


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
