"""Aave V3 call encodings and event topics (v3.0 to v3.6), written out by hand.

The daemon must not need the npm artifacts at run time, and the hot path encodes with
eth_abi directly (see keeperd.chain.multicall).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi import decode
from eth_utils import to_checksum_address

from keeperd.chain.multicall import address_call, encode_call, event_topic, selector

# --- topics of the Pool events that make or change a position ------------------------------
topic = event_topic


SUPPLY = topic("Supply(address,address,address,uint256,uint16)")
BORROW = topic("Borrow(address,address,address,uint256,uint8,uint256,uint16)")
REPAY = topic("Repay(address,address,address,uint256,bool)")
WITHDRAW = topic("Withdraw(address,address,address,uint256)")
LIQUIDATION_CALL = topic("LiquidationCall(address,address,address,uint256,uint256,address,bool)")
COLLATERAL_ENABLED = topic("ReserveUsedAsCollateralEnabled(address,address)")
COLLATERAL_DISABLED = topic("ReserveUsedAsCollateralDisabled(address,address)")
USER_EMODE_SET = topic("UserEModeSet(address,uint8)")

# Which indexed topic holds the account whose position changed, per event.
ACCOUNT_TOPIC = {
    SUPPLY: 2,  # onBehalfOf
    BORROW: 2,  # onBehalfOf
    REPAY: 2,  # user
    WITHDRAW: 2,  # user
    LIQUIDATION_CALL: 3,  # user
    COLLATERAL_ENABLED: 2,
    COLLATERAL_DISABLED: 2,
    USER_EMODE_SET: 1,
}
POSITION_EVENTS = tuple(ACCOUNT_TOPIC)


def topic_address(value: str, cache: dict[str, str] | None = None) -> str:
    """The address in an indexed topic, checksummed. Logs repeat their accounts and
    checksumming costs a keccak, so callers pass a cache for the length of a batch."""
    key = value[-40:].lower()
    if cache is None:
        return to_checksum_address("0x" + key)
    found = cache.get(key)
    if found is None:
        found = cache[key] = to_checksum_address("0x" + key)
    return found


# --- calls -----------------------------------------------------------------------------------
# (the SELECT_ selectors of f(address) calls also build a scan's calls as columns: reader.py)
SELECT_GET_USER_ACCOUNT_DATA = selector("getUserAccountData(address)")
SELECT_GET_USER_CONFIGURATION = selector("getUserConfiguration(address)")
SELECT_GET_USER_EMODE = selector("getUserEMode(address)")
SELECT_SCALED_BALANCE_OF = selector("scaledBalanceOf(address)")
SELECT_BALANCE_OF = selector("balanceOf(address)")


def get_user_account_data(user: str) -> bytes:
    return address_call(SELECT_GET_USER_ACCOUNT_DATA, user)


def get_user_configuration(user: str) -> bytes:
    return address_call(SELECT_GET_USER_CONFIGURATION, user)


def get_user_emode(user: str) -> bytes:
    return address_call(SELECT_GET_USER_EMODE, user)


def scaled_balance_of(user: str) -> bytes:
    return address_call(SELECT_SCALED_BALANCE_OF, user)


def balance_of(user: str) -> bytes:
    return address_call(SELECT_BALANCE_OF, user)


GET_RESERVES_LIST = selector("getReservesList()")
GET_POOL = selector("getPool()")
GET_PRICE_ORACLE = selector("getPriceOracle()")
GET_POOL_DATA_PROVIDER = selector("getPoolDataProvider()")
BASE_CURRENCY_UNIT = selector("BASE_CURRENCY_UNIT()")
SYMBOL = selector("symbol()")


def get_reserve_data(asset: str) -> bytes:
    return encode_call("getReserveData(address)", ["address"], [asset])


def get_normalized_income(asset: str) -> bytes:
    return encode_call("getReserveNormalizedIncome(address)", ["address"], [asset])


def get_normalized_debt(asset: str) -> bytes:
    return encode_call("getReserveNormalizedVariableDebt(address)", ["address"], [asset])


def get_asset_price(asset: str) -> bytes:
    return encode_call("getAssetPrice(address)", ["address"], [asset])


def get_emode_category_data(category: int) -> bytes:
    return encode_call("getEModeCategoryData(uint8)", ["uint8"], [category])


def emode_uint8_call(signature: str, category: int) -> bytes:
    """getEModeCategoryCollateralConfig / ...CollateralBitmap / ...LtvzeroBitmap (v3.2+)."""
    return encode_call(signature, ["uint8"], [category])


GET_EMODE_COLLATERAL_CONFIG = "getEModeCategoryCollateralConfig(uint8)"
GET_EMODE_COLLATERAL_BITMAP = "getEModeCategoryCollateralBitmap(uint8)"
GET_EMODE_LTVZERO_BITMAP = "getEModeCategoryLtvzeroBitmap(uint8)"
GET_EMODE_LABEL = "getEModeCategoryLabel(uint8)"
POOL_REVISION = selector("POOL_REVISION()")
GET_CURRENT_BLOCK_TIMESTAMP = selector("getCurrentBlockTimestamp()")
BASE_TO_USD_AGGREGATOR = selector("BASE_TO_USD_AGGREGATOR()")


def get_liquidation_grace_period(asset: str) -> bytes:
    return encode_call("getLiquidationGracePeriod(address)", ["address"], [asset])


def get_reserve_deficit(asset: str) -> bytes:
    return encode_call("getReserveDeficit(address)", ["address"], [asset])


def get_virtual_underlying_balance(asset: str) -> bytes:
    return encode_call("getVirtualUnderlyingBalance(address)", ["address"], [asset])


def get_source_of_asset(asset: str) -> bytes:
    return encode_call("getSourceOfAsset(address)", ["address"], [asset])


# --- decoding ----------------------------------------------------------------------------------
RESERVE_DATA = ("((uint256),uint128,uint128,uint128,uint128,uint128,uint40,uint16,address,"
                "address,address,address,uint128,uint128,uint128)")
EMODE_CATEGORY = "(uint16,uint16,uint16,address,string)"


def decode_uint(data: bytes) -> int:
    return int.from_bytes(data[:32], "big")


def decode_address(data: bytes) -> str:
    return to_checksum_address(data[12:32])


def decode_address_list(data: bytes) -> list[str]:
    (items,) = decode(["address[]"], data)
    return [to_checksum_address(a) for a in items]


def decode_string(data: bytes) -> str:
    try:
        (value,) = decode(["string"], data)
        return str(value)
    except Exception:  # some tokens (MKR) return bytes32
        return data[:32].rstrip(b"\0").decode(errors="replace")


def decode_account_data(data: bytes) -> tuple[int, int, int, int, int, int]:
    """(totalCollateralBase, totalDebtBase, availableBorrowsBase, currentLiquidationThreshold,
    ltv, healthFactor)."""
    return tuple(int.from_bytes(data[i:i + 32], "big") for i in range(0, 192, 32))  # type: ignore[return-value]


@dataclass(frozen=True)
class LiquidationEvent:
    """A decoded Pool `LiquidationCall` log: whoever sent it (keeperd or a competitor)."""

    collateral_asset: str
    debt_asset: str
    user: str
    debt_repaid: int  # debt-token units
    collateral_seized: int  # collateral-token units (to the liquidator; the fee apart)
    liquidator: str
    receive_a_token: bool
    block: int | None
    tx_hash: str | None
    log_index: str | None


def decode_liquidation_call(entry: dict[str, Any]) -> LiquidationEvent | None:
    """The LiquidationCall in a log entry (from eth_getLogs or a receipt), or None."""
    topics = entry.get("topics") or []
    if len(topics) < 4 or topics[0] != LIQUIDATION_CALL:
        return None
    data = bytes.fromhex(entry["data"][2:])
    block = entry.get("blockNumber")
    return LiquidationEvent(
        topic_address(topics[1]), topic_address(topics[2]), topic_address(topics[3]),
        int.from_bytes(data[:32], "big"), int.from_bytes(data[32:64], "big"),
        to_checksum_address(data[64 + 12:96]), bool(int.from_bytes(data[96:128], "big")),
        int(block, 16) if block else None, entry.get("transactionHash"), entry.get("logIndex"))
