"""What every seller contract (contracts/SeizedCollateralSeller.sol: the FlashLiquidator,
the MorphoLiquidator) must do with a Uniswap V3 pool that misbehaves, as one suite both
contracts' test modules run (#28 item 3, #27 item 12): pay only the pool of the swap in flight,
once, in the token it sold and no more than was seized; a callback outside a swap pays
nothing. A test module takes these by importing them and providing a `seller` fixture (a
`Seller`); the fake pool's code is put at the real pool's address, where the contract's
CREATE2 derivation points, so it pays out of that pool's balances."""

from __future__ import annotations

from typing import Any, Protocol

import pytest
from eth_utils import function_signature_to_4byte_selector, to_checksum_address

from keeperd.devnet import contracts
from keeperd.devnet.client import DevnetRpcError
from keeperd.devnet.handle import Devnet
from keeperd.devnet.solc import compile_sources
from tests.keeper_harness import KEEPER

GAS = 3_000_000
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
HONEST, TWICE, MORE, OTHER, RELAY = range(5)

FAKE_POOL = """// SPDX-License-Identifier: MIT
pragma solidity 0.8.19;

interface IFakeToken {
    function transfer(address to, uint256 amount) external returns (bool);
}

interface ISwapCallee {
    function uniswapV3SwapCallback(int256 amount0Delta, int256 amount1Delta,
                                   bytes calldata data) external;
}

/// A Uniswap V3 pool that misbehaves: its runtime code (immutables only, no storage) is put
/// at a real pool's address, so it pays out of that pool's balances and sits where the
/// liquidator's CREATE2 derivation points. `poke` calls a swap callback directly.
contract FakePool {
    uint8 public constant HONEST = 0;
    uint8 public constant TWICE = 1;   // calls back a second time
    uint8 public constant MORE = 2;    // asks for twice what it was offered
    uint8 public constant OTHER = 3;   // asks for the token it sells as well
    uint8 public constant RELAY = 4;   // has another contract call back while it swaps

    uint8 public immutable mode;
    address public immutable token0;
    address public immutable token1;
    uint256 public immutable out;
    address public immutable relay;

    constructor(uint8 mode_, address token0_, address token1_, uint256 out_, address relay_) {
        mode = mode_;
        token0 = token0_;
        token1 = token1_;
        out = out_;
        relay = relay_;
    }

    function swap(address recipient, bool zeroForOne, int256 amountSpecified, uint160,
                  bytes calldata data) external returns (int256 amount0, int256 amount1) {
        require(IFakeToken(zeroForOne ? token1 : token0).transfer(recipient, out));
        int256 owed = mode == MORE ? 2 * amountSpecified : amountSpecified;
        int256 sold = mode == OTHER ? int256(out / 2) : -int256(out);
        (amount0, amount1) = zeroForOne ? (owed, sold) : (sold, owed);
        if (mode == RELAY) {
            FakePool(relay).poke(msg.sender, amount0, amount1, data);
        } else {
            ISwapCallee(msg.sender).uniswapV3SwapCallback(amount0, amount1, data);
        }
        if (mode == TWICE) ISwapCallee(msg.sender).uniswapV3SwapCallback(amount0, amount1, data);
    }

    function poke(address target, int256 amount0, int256 amount1, bytes calldata data)
        external {
        ISwapCallee(target).uniswapV3SwapCallback(amount0, amount1, data);
    }
}
"""


# What the contract holds between liquidations (leftovers, tokens sent by mistake).
INVENTORY = {"WETH": 100 * 10**18, "USDC": 100_000 * 10**6, "DAI": 100_000 * 10**18}


class Holdings:
    """The balances a seller's tests watch: the contract's, its beneficiary's, the pool's."""

    devnet: Devnet
    contract: str
    beneficiary: str
    pool: str

    def token(self, symbol: str) -> str:
        return str(self.devnet.manifest["tokens"][symbol])

    def balance(self, symbol: str, holder: str) -> int:
        erc20 = contracts.aave("MintableERC20")
        return int(erc20.decode_result("balanceOf", self.devnet.client.eth_call(
            self.token(symbol), erc20.encode_call("balanceOf", holder)))[0])

    def holdings(self) -> dict[tuple[str, str], int]:
        return {(s, who): self.balance(s, who) for s in INVENTORY
                for who in (self.contract, self.beneficiary, self.pool)}


class Seller(Protocol):
    """A seller contract on the devnet, holding leftovers a thief would want."""

    devnet: Devnet
    contract: str
    pool: str  # the real pool of the pair: where the contract's derivation points
    token0: str
    token1: str

    @property
    def impostor_out(self) -> int:
        """What a fake pool pays for the sale: plenty for the contract's own checks."""

    def holdings(self) -> dict[tuple[str, str], int]:
        """Balances of the contract, its beneficiary and the pool."""

    def liquidate(self) -> bytes:
        """The owner's liquidate call (a liquidation whose sale goes through the pool)."""


def selector(signature: str) -> str:
    return function_signature_to_4byte_selector(signature).hex()


@pytest.fixture(scope="module")
def fake_pool() -> contracts.Artifact:
    c = compile_sources({"FakePool.sol": FAKE_POOL})["FakePool"]
    return contracts.from_compiled("FakePool", c.abi, c.bytecode)


def refused(s: Any, sender: str, to: str, data: bytes) -> str:
    """The revert of a call (its data, from eth_call), after checking that the same call,
    sent, is mined and fails."""
    tx = {"from": sender, "to": to, "data": "0x" + data.hex(), "gas": hex(GAS)}
    try:
        s.devnet.client.call("eth_call", tx, "latest")
    except DevnetRpcError as exc:
        reason = str(exc)
    else:
        raise AssertionError("the call went through")
    receipt = s.devnet.client.wait_receipt(s.devnet.client.call("eth_sendTransaction", tx))
    assert int(receipt["status"], 16) == 0
    return reason


def transfers(receipt: dict[str, Any], token: str) -> list[tuple[str, str, int]]:
    return [(to_checksum_address("0x" + e["topics"][1][-40:]),
             to_checksum_address("0x" + e["topics"][2][-40:]), int(e["data"], 16))
            for e in receipt["logs"] if e["address"].lower() == token.lower()
            and e["topics"][0] == TRANSFER_TOPIC]


def impostor(s: Seller, fake_pool: contracts.Artifact, mode: int) -> None:
    """Put a misbehaving pool's code at the real pool's address."""
    admin = s.devnet.client.accounts()[0]
    relay = s.devnet.client.deploy(admin, fake_pool.deploy_data(HONEST, s.token0, s.token1,
                                                                0, admin))
    fake = s.devnet.client.deploy(admin, fake_pool.deploy_data(
        mode, s.token0, s.token1, s.impostor_out, relay))
    s.devnet.client.call("anvil_setCode", s.pool,
                         s.devnet.client.call("eth_getCode", fake, "latest"))


def test_a_callback_outside_a_swap_pays_nothing(seller: Seller,
                                                fake_pool: contracts.Artifact) -> None:
    admin = seller.devnet.client.accounts()[0]
    fake = seller.devnet.client.deploy(admin, fake_pool.deploy_data(
        HONEST, seller.token0, seller.token1, 0, admin))
    before = seller.holdings()
    for amount0, amount1 in ((10**18, 0), (0, 10**9), (10**18, 10**9)):
        why = refused(seller, admin, fake, fake_pool.encode_call(
            "poke", seller.contract, amount0, amount1, b""))
        assert selector("NoSwapInFlight()") in why, why
    assert seller.holdings() == before


@pytest.mark.parametrize(("mode", "error"), [
    (TWICE, "NoSwapInFlight()"),  # a second callback finds the swap spent
    (MORE, "BadCallback(int256,int256)"),  # more than was seized
    (OTHER, "BadCallback(int256,int256)"),  # the token the swap buys, too
    (RELAY, "NotPool()"),  # another contract, while the pool swaps
], ids=["twice", "more-than-seized", "the-other-token", "another-caller"])
def test_a_pool_that_misbehaves_in_the_swap_is_paid_nothing(
        seller: Seller, fake_pool: contracts.Artifact, mode: int, error: str) -> None:
    impostor(seller, fake_pool, mode)
    before = seller.holdings()
    why = refused(seller, KEEPER, seller.contract, seller.liquidate())
    assert selector(error) in why, why
    assert seller.holdings() == before
