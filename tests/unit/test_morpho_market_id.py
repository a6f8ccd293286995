"""Morpho market parameters are checked against the market id (#28 item 4): the id is the
keccak of the ABI-encoded (loanToken, collateralToken, oracle, irm, lltv)."""

from __future__ import annotations

from eth_abi import encode

from keeperd.protocols.morpho_blue.adapter import params_problem

# Morpho Blue on Ethereum, the wstETH/USDC market (86 % LLTV) — its published id and params.
WSTETH_USDC = "0xb323495f7e4148be5643a4ea4a8221eef163e4bccfdedc2a6f4696baacbc86cc"
PARAMS = ("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",  # USDC
          "0x7f39C581F595B53c5cb19bD0b3f8dA6c935E2Ca0",  # wstETH
          "0x48F7E36EB6B826B2dF4B2E630B62Cd25e89E40e2",  # its oracle
          "0x870aC11D48B15DB9a138Cf899d20F13F79Ba00BC",  # AdaptiveCurveIrm
          860000000000000000)


def params(*values: object) -> bytes:
    return encode(["address", "address", "address", "address", "uint256"], list(values))


def test_parameters_that_hash_to_the_id_pass() -> None:
    assert params_problem(WSTETH_USDC, params(*PARAMS)) is None


def test_an_oracle_swapped_by_a_lying_endpoint_is_refused() -> None:
    forged = params(*PARAMS[:2], "0x" + "66" * 20, *PARAMS[3:])
    problem = params_problem(WSTETH_USDC, forged)
    assert problem is not None and "hash to" in problem
    assert params_problem(WSTETH_USDC, bytes(32)) is not None  # too short
