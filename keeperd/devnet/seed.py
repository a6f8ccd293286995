"""Seed the devnet's Aave V3 market with borrowers: deterministic for a given seed, with a
realistic spread of health factors, collateral mixes and some accounts in eMode.

Planning is pure (`plan_borrowers`); sending is batched: automine is switched off, thousands of
transactions with explicit nonces go out in JSON-RPC batches, then blocks are mined until the
pool is empty, and every receipt is checked.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from eth_abi import decode, encode
from eth_hash.auto import keccak
from eth_utils import function_signature_to_4byte_selector, to_checksum_address

from keeperd.devnet import contracts
from keeperd.devnet.client import DevnetClient, DevnetRpcError

MAX_UINT = 2**256 - 1
# Explicit gas so that sends skip estimation (which would run against not-yet-mined state).
SUPPLY_GAS = 400_000
BORROW_GAS = 600_000
EMODE_GAS = 300_000
BORROWER_ETH = 10 * 10**18
_AGGREGATE3 = function_signature_to_4byte_selector("aggregate3((address,bool,bytes)[])")


@dataclass(frozen=True)
class BorrowerPlan:
    address: str
    collateral: tuple[tuple[str, int], ...]  # (symbol, amount in token units)
    debt: tuple[str, int]  # the main debt
    emode: int
    target_health: float
    profile: str
    extra_debt: tuple[tuple[str, int], ...] = ()  # multi-debt borrowers' other debts

    @property
    def debts(self) -> tuple[tuple[str, int], ...]:
        return (self.debt, *self.extra_debt)


@dataclass
class MarketView:
    """What planning needs to know about the market (from the manifest)."""

    decimals: dict[str, int]
    prices: dict[str, float]
    ltv: dict[str, int]
    threshold: dict[str, int]
    emode: dict[int, tuple[int, int]] = field(default_factory=dict)  # id -> (ltv, threshold)


# (name, weight, collateral symbols, debt symbol choices, eMode category); a debt choice
# "A+B" is a multi-debt borrower owing both (60 / 40 by value).
Profile = tuple[str, float, tuple[str, ...], tuple[str, ...], int]
PROFILES_V30: tuple[Profile, ...] = (
    ("eth-long", 0.42, ("WETH",), ("USDC", "DAI"), 0),
    ("btc-long", 0.14, ("WBTC",), ("USDC", "WETH"), 0),
    ("eth-btc-basket", 0.14, ("WETH", "WBTC"), ("USDC",), 0),
    ("eth-short", 0.12, ("USDC",), ("WETH",), 0),
    ("stable-emode", 0.18, ("USDC",), ("DAI",), 1),
)
# Today's Aave: USDT debt, an eMode whose collateral (wstETH) has a zero base threshold,
# borrowers owing two assets; the size draw leaves about one in ten under $2,000.
PROFILES_V36: tuple[Profile, ...] = (
    ("eth-long", 0.28, ("WETH",), ("USDC", "DAI", "USDT"), 0),
    ("btc-long", 0.12, ("WBTC",), ("USDC", "WETH"), 0),
    ("eth-btc-basket", 0.10, ("WETH", "WBTC"), ("USDC",), 0),
    ("eth-short", 0.10, ("USDC",), ("WETH",), 0),
    ("stable-emode", 0.12, ("USDC",), ("DAI", "USDT"), 1),
    ("lst-emode", 0.14, ("wstETH",), ("WETH",), 2),
    ("multi-debt", 0.14, ("WETH",), ("USDC+USDT", "USDC+DAI"), 0),
)


def borrower_address(seed: int, index: int) -> str:
    digest = keccak(b"keeperd-devnet-borrower" + seed.to_bytes(8, "big") + index.to_bytes(8, "big"))
    return to_checksum_address(digest[12:])


def _target_health(rng: random.Random, floor: float) -> float:
    # A spread like a real market's: a thin layer near liquidation, most in 1.2-3, a long tail.
    u = rng.random()
    if u < 0.15:
        hf = rng.uniform(floor, 1.15)
    elif u < 0.50:
        hf = rng.uniform(1.15, 1.6)
    elif u < 0.85:
        hf = rng.uniform(1.6, 3.0)
    else:
        hf = rng.uniform(3.0, 8.0)
    return max(hf, floor)


def plan_borrowers(market: MarketView, n: int, seed: int,
                   profiles: tuple[Profile, ...] = PROFILES_V30) -> list[BorrowerPlan]:
    """Plan `n` borrowers; the same (market, n, seed, profiles) always gives the same plans."""
    rng = random.Random(seed)
    weights = [p[1] for p in profiles]
    plans: list[BorrowerPlan] = []
    for i in range(n):
        name, _, coll_symbols, debt_choices, emode = rng.choices(profiles, weights)[0]
        debt_symbols = rng.choice(debt_choices).split("+")
        size_usd = math.exp(rng.uniform(math.log(1_000), math.log(2_000_000)))
        shares = [rng.uniform(0.3, 1.0) for _ in coll_symbols]
        total = sum(shares)
        collateral: list[tuple[str, int]] = []
        ltv_usd = lt_usd = 0.0
        for sym, share in zip(coll_symbols, shares, strict=True):
            usd = size_usd * share / total
            units = int(usd / market.prices[sym] * 10 ** market.decimals[sym])
            usd = units / 10 ** market.decimals[sym] * market.prices[sym]
            collateral.append((sym, units))
            ltv, lt = market.emode[emode] if emode else (market.ltv[sym], market.threshold[sym])
            ltv_usd += usd * ltv / 10_000
            lt_usd += usd * lt / 10_000
        # Borrowing is capped at LTV, so the lowest health reachable is threshold / LTV.
        floor = lt_usd / ltv_usd * 1.002
        hf = _target_health(rng, floor)
        debt_usd = lt_usd / hf
        split = (1.0,) if len(debt_symbols) == 1 else (0.6, 0.4)
        debts = tuple(
            (sym, int(debt_usd * part / market.prices[sym] * 10 ** market.decimals[sym]))
            for sym, part in zip(debt_symbols, split, strict=True))
        plans.append(BorrowerPlan(borrower_address(seed, i), tuple(collateral), debts[0], emode,
                                  hf, name, debts[1:]))
    return plans


def market_view(manifest: dict[str, Any], prices: dict[str, float]) -> MarketView:
    reserves = manifest["aave_v3"]["reserves"]
    return MarketView(
        decimals={s: r["decimals"] for s, r in reserves.items()},
        prices=prices,
        ltv={s: r["ltv"] for s, r in reserves.items()},
        threshold={s: r["liquidation_threshold"] for s, r in reserves.items()},
        emode={int(k): (v["ltv"], v["liquidation_threshold"])
               for k, v in manifest["aave_v3"]["emode_categories"].items()},
    )


def _tx(sender: str, to: str, data: bytes, gas: int, nonce: int) -> tuple[str, list[Any]]:
    return ("eth_sendTransaction", [{"from": sender, "to": to, "data": "0x" + data.hex(),
                                     "gas": hex(gas), "nonce": hex(nonce)}])


def _mine_all(client: DevnetClient, sent: int) -> None:
    """Mine until the mempool is empty and check that every sent transaction was included.

    Receipts are not fetched: eth_getBlockReceipts on a block of thousands of transactions
    takes seconds per thousand on anvil. Success is checked on the resulting state instead
    (`verify_borrowers`).
    """
    start = client.block_number()
    while True:
        status = client.call("txpool_status")
        if int(status["pending"], 16) == 0 and int(status["queued"], 16) == 0:
            break
        client.mine(1)
    end = client.block_number()
    counts = client.batch([("eth_getBlockTransactionCountByNumber", [hex(b)])
                           for b in range(start + 1, end + 1)])
    included = sum(int(c, 16) for c in counts)
    if included != sent:
        raise DevnetRpcError(f"seeding: {included} of {sent} transactions were mined")


def _send_in_rounds(client: DevnetClient, calls: list[tuple[str, list[Any]]],
                    round_size: int = 2_000) -> None:
    """Send and mine in rounds: anvil's mempool slows down superlinearly past a few thousand
    pending transactions (3k: 2 s, 10k: 30 s, 100k: tens of minutes in one go).

    A round may cut between two transactions of one sender; explicit nonces keep their order.
    """
    for start in range(0, len(calls), round_size):
        part = calls[start:start + round_size]
        client.batch(part)
        _mine_all(client, len(part))


def verify_borrowers(client: DevnetClient, pool: str, plans: list[BorrowerPlan],
                     multicall: str, chunk: int = 2000) -> None:
    """Every planned borrower must hold debt and collateral (a reverted borrow shows here)."""
    pool_art = contracts.aave("Pool")
    empty: list[str] = []
    for start in range(0, len(plans), chunk):
        part = plans[start:start + chunk]
        calls = [(pool, True, pool_art.encode_call("getUserAccountData", p.address))
                 for p in part]
        data = "0x" + (_AGGREGATE3 + encode(["(address,bool,bytes)[]"], [calls])).hex()
        raw = client.call("eth_call", {"to": multicall, "data": data}, "latest")
        (results,) = decode(["(bool,bytes)[]"], bytes.fromhex(raw[2:]))
        for p, (ok, ret) in zip(part, results, strict=True):
            collateral, debt = int.from_bytes(ret[:32], "big"), int.from_bytes(ret[32:64], "big")
            if not ok or collateral == 0 or debt == 0:
                empty.append(p.address)
    if empty:
        raise DevnetRpcError(f"seeding: {len(empty)} borrowers have no position "
                             f"(first: {empty[:3]})")


def manifest_multicall(manifest: dict[str, Any]) -> str:
    return str(manifest.get("multicall3", "0xcA11bde05977b3631167028862bE2a173976CA11"))


def seed_market(client: DevnetClient, manifest: dict[str, Any], plans: list[BorrowerPlan],
                liquidity_multiple: float = 3.0) -> None:
    """Fund a liquidity provider and every planned borrower, then open their positions."""
    aave = manifest["aave_v3"]
    pool = aave["pool"]
    tokens = manifest["tokens"]
    token_art = contracts.aave("MintableERC20")
    pool_art = contracts.aave("Pool")
    accounts = client.accounts()
    whale, lender = accounts[2], accounts[3]

    supplied: dict[str, int] = dict.fromkeys(tokens, 0)
    borrowed: dict[str, int] = dict.fromkeys(tokens, 0)
    for p in plans:
        for sym, units in p.collateral:
            supplied[sym] += units
        for sym, units in p.debts:
            borrowed[sym] += units

    client.call("evm_setAutomine", False)
    try:
        # Phase 0: gas money for borrowers; tokens and approvals for the whale and the lender.
        client.batch([("anvil_setBalance", [p.address, hex(BORROWER_ETH)]) for p in plans])
        calls: list[tuple[str, list[Any]]] = []
        nonce = {a: int(client.call("eth_getTransactionCount", a, "pending"), 16)
                 for a in (whale, lender)}

        def send(sender: str, to: str, data: bytes, gas: int) -> None:
            calls.append(_tx(sender, to, data, gas, nonce[sender]))
            nonce[sender] += 1

        for sym, token in tokens.items():
            liquidity = int(borrowed[sym] * liquidity_multiple) + 10 ** 6
            send(whale, token, token_art.encode_call("mint", supplied[sym] + 1), 200_000)
            send(whale, token, token_art.encode_call("approve", pool, MAX_UINT), 100_000)
            send(lender, token, token_art.encode_call("mint", liquidity), 200_000)
            send(lender, token, token_art.encode_call("approve", pool, MAX_UINT), 100_000)
            send(lender, pool, pool_art.encode_call("supply", token, liquidity, lender, 0),
                 SUPPLY_GAS)
        # Phase 1: collateral supplied on each borrower's behalf by the whale.
        for p in plans:
            for sym, units in p.collateral:
                send(whale, pool, pool_art.encode_call("supply", tokens[sym], units, p.address, 0),
                     SUPPLY_GAS)
        _send_in_rounds(client, calls)

        # Phase 2: each borrower enters eMode if planned, then borrows at a variable rate.
        calls = []
        for p in plans:
            n = 0
            if p.emode:
                calls.append(_tx(p.address, pool, pool_art.encode_call("setUserEMode", p.emode),
                                 EMODE_GAS, n))
                n += 1
                # Collateral with a zero LTV outside eMode was not switched on when supplied.
                for sym, _ in p.collateral:
                    if aave["reserves"][sym]["ltv"] == 0:
                        calls.append(_tx(p.address, pool, pool_art.encode_call(
                            "setUserUseReserveAsCollateral", tokens[sym], True), EMODE_GAS, n))
                        n += 1
            for sym, units in p.debts:
                calls.append(_tx(p.address, pool, pool_art.encode_call(
                    "borrow", tokens[sym], units, 2, 0, p.address), BORROW_GAS, n))
                n += 1
        _send_in_rounds(client, calls)
    finally:
        client.call("evm_setAutomine", True)
    verify_borrowers(client, pool, plans, manifest_multicall(manifest))
