"""A typo in Perp Curie's `asset_symbols` (`vEHT: WETH` for a vETH market) left the market
priced as its default name (ETH), which no other protocol prices: the breaker and the shocks
of WETH passed it by, and nothing said so. It is told, with the fix."""

from __future__ import annotations

from keeperd.protocols.perp_curie.adapter import asset_symbol_typos


def test_a_key_like_a_market_it_leaves_out_is_a_typo() -> None:
    assert asset_symbol_typos({"vEHT": "WETH", "vBTC": "WBTC"}, ["vETH", "vBTC"]) == [
        ("vEHT", "vETH")]
    assert asset_symbol_typos({"veth": "WETH"}, ["vETH"]) == [("veth", "vETH")]


def test_a_mapping_that_matches_or_names_a_market_without_traders_is_not() -> None:
    assert asset_symbol_typos({"vETH": "WETH", "vBTC": "WBTC"}, ["vETH", "vBTC"]) == []
    # (vSOL: a market nobody trades yet, unlike any market seen)
    assert asset_symbol_typos({"vETH": "WETH", "vSOL": "SOL"}, ["vETH"]) == []
    # (a key like a market that is mapped already is not that market's typo)
    assert asset_symbol_typos({"vETH": "WETH", "vETh": "WETH"}, ["vETH"]) == []
