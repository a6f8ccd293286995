"""The signing policy: what the keeper may sign, judged before any signer is asked."""

from __future__ import annotations

import pytest
from eth_abi import encode
from eth_account import Account

from keeperd.chain.multicall import encode_call
from keeperd.execution.signer import UnsignedTx
from keeperd.execution.signer_policy import (
    Allowed,
    PolicedSigner,
    PolicyRefused,
    SignerPolicy,
)
from keeperd.execution.wave_code import EXECUTE
from keeperd.keys import KeeperKey
from keeperd.protocols.aave_v3.liquidator import FLASH_LIQUIDATE, LIQUIDATION_CALL

KEEPER = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"
POOL = "0x" + "11" * 20
FLASH = "0x" + "22" * 20
TOKEN = "0x" + "33" * 20
ATTACKER = "0x" + "66" * 20
GWEI = 10**9


def policy(waves: bool = True) -> SignerPolicy:
    p = SignerPolicy(31337, KEEPER, 500 * GWEI, waves_allowed=lambda: waves)
    p.allow(Allowed(POOL, LIQUIDATION_CALL, "aave liquidation"),
            Allowed.approval(POOL, "approval of the pool"),
            Allowed(FLASH, FLASH_LIQUIDATE, "flash"))
    return p


def tx(to: str, data: bytes, *, value: int = 0, chain_id: int = 31337,
       max_fee: int = 100 * GWEI, tip: int = GWEI) -> UnsignedTx:
    return UnsignedTx(chain_id, 3, to, value, data, 300_000, max_fee, tip)


def liquidation() -> bytes:
    return encode_call(LIQUIDATION_CALL, ["address", "address", "address", "uint256", "bool"],
                       [TOKEN, TOKEN, ATTACKER, 1, False])


def approve(spender: str) -> bytes:
    return encode_call("approve(address,uint256)", ["address", "uint256"], [spender, 2**256 - 1])


def wave(*calls: tuple[str, bytes]) -> bytes:
    """KeeperWave's `execute` of these calls (built here, not by keeperd's encoder: a forged
    wave need not come from it)."""
    return EXECUTE + encode(["(address,uint256,bytes)[]"], [[(to, 100_000, data)
                                                             for to, data in calls]])


def test_the_calls_keeperd_makes_pass() -> None:
    p = policy()
    assert p.check(tx(POOL, liquidation())) == "aave liquidation"
    assert p.check(tx(TOKEN, approve(POOL))) == "approval of the pool"
    assert p.check(tx(KEEPER, b"")) == "cancel"
    assert p.check(tx(FLASH, encode_call(
        FLASH_LIQUIDATE, ["address", "address", "address", "uint256", "uint24", "uint256",
                          "uint256"], [TOKEN, TOKEN, ATTACKER, 1, 3000, 0, 0]))) == "flash"
    assert p.check(tx(KEEPER, wave((POOL, liquidation()), (POOL, liquidation()),
                                   (TOKEN, approve(POOL))))) \
        == "wave of 3: aave liquidation, approval of the pool"


@pytest.mark.parametrize(("unsigned", "why"), [
    (tx(TOKEN, encode_call("transfer(address,uint256)", ["address", "uint256"],
                           [ATTACKER, 10**24])), "no call keeperd makes"),
    (tx(TOKEN, approve(ATTACKER)), "no spender keeperd approves"),
    (tx(FLASH, liquidation()), "no call keeperd makes"),  # a known function, the wrong contract
    (tx(ATTACKER, b""), "no call keeperd makes"),  # a plain transfer out
    (tx(KEEPER, b"\x01"), "keeper's own address with data that is no wave"),
    # A wave is signed only if each of its calls would be signed alone.
    (tx(KEEPER, wave((POOL, liquidation()), (TOKEN, encode_call(
        "transfer(address,uint256)", ["address", "uint256"], [ATTACKER, 10**24])))),
     "no call keeperd makes"),
    (tx(KEEPER, wave((POOL, liquidation()), (TOKEN, approve(ATTACKER)))),
     "no spender keeperd approves"),
    (tx(KEEPER, wave((KEEPER, b""))), "keeper's own address inside a wave"),
    (tx(KEEPER, wave((KEEPER, wave((POOL, liquidation()))))), "inside a wave"),
    (tx(KEEPER, EXECUTE + b"\x00" * 31), "do not decode"),
    (tx(KEEPER, EXECUTE + encode(["(address,uint256,bytes)[]"], [[]])), "no calls"),
    (tx(KEEPER, EXECUTE + encode(["(address,uint256,bytes)[]"], [[(POOL, 2**24 + 1,
                                                                    liquidation())]])),
     "more than 16777216 gas"),
    (tx(POOL, liquidation(), value=1), "value"),
    (tx(POOL, liquidation(), chain_id=1), "chain id 1"),
    (tx(POOL, liquidation(), max_fee=501 * GWEI), "max_fee_gwei"),
    (tx(POOL, liquidation(), max_fee=10 * GWEI, tip=11 * GWEI), "max_fee_gwei"),
    # An approval whose spender word has bits above the address: not the spender it shows.
    (tx(TOKEN, approve(POOL)[:4] + b"\x01" + approve(POOL)[5:]), "no spender"),
])
def test_anything_else_is_refused_with_its_reason(unsigned: UnsignedTx, why: str) -> None:
    with pytest.raises(PolicyRefused, match=why):
        policy().check(unsigned)


def test_a_wave_is_signed_only_while_the_address_runs_keeperwave() -> None:
    with pytest.raises(PolicyRefused, match="does not run KeeperWave"):
        policy(waves=False).check(tx(KEEPER, wave((POOL, liquidation()))))


async def test_a_refused_transaction_reaches_no_signer() -> None:
    key = KeeperKey(Account.create())
    signer = PolicedSigner(key, SignerPolicy(31337, key.address, 500 * GWEI))
    with pytest.raises(PolicyRefused):
        await signer.sign(tx(TOKEN, approve(ATTACKER)))
    raw = await signer.sign(tx(key.address, b""))  # the cancel: signed, by the key
    assert raw == await key.sign(tx(key.address, b""))
