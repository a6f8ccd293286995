"""An OP Stack chain's fee predeploys on the devnet: the real L1Block and GasPriceOracle.

On OP Mainnet and Base every transaction pays an L1 data fee that the GasPriceOracle
predeploy (0x42..0F) prices from the L1 parameters the L1Block predeploy (0x42..15) holds,
set each block by the depositor account's system transaction. The devnet places both
contracts' compiled code, as published (@eth-optimism/contracts-bedrock, pinned in
package.json), at their predeploy addresses, and sets their parameters as the depositor
does: keeperd then asks the real oracle what each liquidation would pay.

anvil (even with `--network optimism`) does not charge the fee, nor put `l1Fee` in its
receipts (measured with 1.7.1): what keeperd books from a mined receipt is tested apart.
"""

from __future__ import annotations

import json
import time
from functools import cache

from eth_abi.packed import encode_packed

from keeperd.chain.l1_fee import GAS_PRICE_ORACLE
from keeperd.devnet import paths
from keeperd.devnet.client import DevnetClient

L1_BLOCK = "0x4200000000000000000000000000000000000015"
DEPOSITOR = "0xDeaDDEaDDeAdDeAdDEAdDEaddeAddEAdDEAd0001"  # the OP Stack's system sender
SET_L1_BLOCK_VALUES_ECOTONE = "440a5e20"  # setL1BlockValuesEcotone(), its arguments packed
SET_ECOTONE = "22b90ab3"
SET_FJORD = "8e98b106"
IS_ECOTONE = "4ef6e224"
IS_FJORD = "960e3a23"
# OP Mainnet's fee scalars since Ecotone (the superchain-ops playbook "Mainnet - Ecotone Blobs
# Gas Configuration": L1BaseFeeScalar 1368, BlobBaseFeeScalar 810949).
OP_MAINNET_BASE_FEE_SCALAR = 1368
OP_MAINNET_BLOB_BASE_FEE_SCALAR = 810949


@cache
def _deployed_code(name: str) -> str:
    path = (paths.node_modules() / "@eth-optimism" / "contracts-bedrock" / "forge-artifacts"
            / f"{name}.sol" / f"{name}.json")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `make setup` (npm ci)")
    code = json.loads(path.read_text())["deployedBytecode"]["object"]
    return str(code) if str(code).startswith("0x") else "0x" + str(code)


def _as_depositor(client: DevnetClient, to: str, data: str) -> None:
    client.send(DEPOSITOR, to, bytes.fromhex(data.removeprefix("0x")), gas=1_000_000)


def install(client: DevnetClient, *, l1_base_fee: int, blob_base_fee: int,
            base_fee_scalar: int = OP_MAINNET_BASE_FEE_SCALAR,
            blob_base_fee_scalar: int = OP_MAINNET_BLOB_BASE_FEE_SCALAR) -> None:
    """The L1Block and GasPriceOracle predeploys with their parameters, and the oracle at
    Fjord (the fee formula of OP Mainnet and Base since July 2024). Mines the depositor's
    transactions (the node must mine them: automine on). Again on a devnet that has them:
    the code stays, the fees move."""
    for address, name in ((L1_BLOCK, "L1Block"), (GAS_PRICE_ORACLE, "GasPriceOracle")):
        code = _deployed_code(name)
        if client.call("eth_getCode", address, "latest").lower() != code.lower():
            client.call("anvil_setCode", address, code)
    client.call("anvil_impersonateAccount", DEPOSITOR)
    client.call("anvil_setBalance", DEPOSITOR, hex(10**18))
    try:
        set_l1_fees(client, l1_base_fee=l1_base_fee, blob_base_fee=blob_base_fee,
                    base_fee_scalar=base_fee_scalar, blob_base_fee_scalar=blob_base_fee_scalar,
                    impersonated=True)
        # (once each: the oracle refuses a second activation, and a run again only moves
        # the fees)
        for flag, activate in ((IS_ECOTONE, SET_ECOTONE), (IS_FJORD, SET_FJORD)):
            if not int.from_bytes(client.eth_call(GAS_PRICE_ORACLE, bytes.fromhex(flag)),
                                  "big"):
                _as_depositor(client, GAS_PRICE_ORACLE, "0x" + activate)
    finally:
        client.call("anvil_stopImpersonatingAccount", DEPOSITOR)


def set_l1_fees(client: DevnetClient, *, l1_base_fee: int, blob_base_fee: int,
                base_fee_scalar: int = OP_MAINNET_BASE_FEE_SCALAR,
                blob_base_fee_scalar: int = OP_MAINNET_BLOB_BASE_FEE_SCALAR,
                impersonated: bool = False) -> None:
    """The L1 parameters, as the depositor's system transaction of each block sets them:
    packed as the OP Stack's Encoding.encodeSetL1BlockValuesEcotone packs them (the base fee
    scalar, the blob base fee scalar, the sequence number, the L1 block's time and number,
    its base fee and blob base fee, its hash and the batcher's hash)."""
    number = client.block_number()
    data = SET_L1_BLOCK_VALUES_ECOTONE + encode_packed(
        ["uint32", "uint32", "uint64", "uint64", "uint64", "uint256", "uint256", "bytes32",
         "bytes32"],
        [base_fee_scalar, blob_base_fee_scalar, 0, int(time.time()), number, l1_base_fee,
         blob_base_fee, b"\x11" * 32, b"\x22" * 32]).hex()
    if not impersonated:
        client.call("anvil_impersonateAccount", DEPOSITOR)
    try:
        _as_depositor(client, L1_BLOCK, "0x" + data)
    finally:
        if not impersonated:
            client.call("anvil_stopImpersonatingAccount", DEPOSITOR)
