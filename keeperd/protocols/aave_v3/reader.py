"""Batched reads of an Aave V3 market, pinned to one block.

Market: two multicalls (the reserve list, then each reserve's data, indexes, price and symbol,
then eMode categories). Positions: phase A reads every account's configuration bitmap and
eMode (and, for those cross-checked, the pool's getUserAccountData); phase B reads only the
balances the bitmap says matter (aToken for collateral, debt tokens for borrows), so a typical
account costs four or five calls. Positions are all f(address) calls: built and decoded as
byte columns and sent through the scan reader (keeperd/chain/multicall.py, scan_reader.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

import numpy as np
import structlog
from eth_abi import decode
from eth_utils import to_checksum_address
from numpy.typing import NDArray

from keeperd.chain.multicall import AddressCalls, Call, Multicall, address_bytes
from keeperd.protocols.aave_v3 import abi
from keeperd.protocols.aave_v3.book import EModeCategory, MarketState, Positions, Reserve
from keeperd.protocols.aave_v3.identity import (
    IMPLEMENTATION_SLOT,
    Implementation,
    read_linked_fingerprint,
    recognise,
)
from keeperd.protocols.aave_v3.revisions import AaveRules, rules_for

log = structlog.get_logger(__name__)

ZERO = "0x0000000000000000000000000000000000000000"
# Blocks between two probes of which eMode categories exist (v3.2+).
EMODE_PROBE_EVERY = 300


class AaveReadError(RuntimeError):
    pass


@dataclass(frozen=True)
class AaveAddresses:
    addresses_provider: str
    pool: str
    oracle: str
    data_provider: str | None


class AaveV3Reader:
    def __init__(self, multicall: Multicall, addresses: AaveAddresses,
                 accepted_revisions: frozenset[int] = frozenset(), chain_id: int = 0) -> None:
        self.multicall = multicall
        self.addresses = addresses
        self.accepted_revisions = accepted_revisions
        self.chain_id = chain_id
        self._fingerprints: dict[str, str] = {}  # implementation address -> code fingerprint
        self._emode_ids: list[int] | None = None
        self._emode_probed_at = 0
        self._links: dict[str, str] | None = None
        self._links_read_at = 0
        # The provider's pool when a pinned one differs (`resolve`): named when the pin fails.
        self.provider_pool: str | None = None

    @classmethod
    async def resolve(cls, multicall: Multicall, addresses_provider: str, *,
                      pool: str | None = None, oracle: str | None = None,
                      data_provider: str | None = None,
                      accepted_revisions: frozenset[int] = frozenset(),
                      chain_id: int = 0) -> AaveV3Reader:
        """Fill in the pool, oracle and data provider from the PoolAddressesProvider."""
        results = await multicall.aggregate3([
            Call(addresses_provider, abi.GET_POOL),
            Call(addresses_provider, abi.GET_PRICE_ORACLE),
            Call(addresses_provider, abi.GET_POOL_DATA_PROVIDER),
        ])
        if not all(r.success and len(r.data) >= 32 for r in results):
            raise AaveReadError(f"{addresses_provider} does not answer like an Aave V3 "
                                "PoolAddressesProvider (getPool/getPriceOracle failed)")
        found = [abi.decode_address(r.data) for r in results]
        if pool is not None and pool.lower() != found[0].lower():
            # The pin stands (an endpoint may lie about getPool: the pin is what protects the
            # keeper's approvals), but said: a wrong pin failed later as "getReservesList()
            # failed on 0x0165…", naming neither the pin nor the provider (a trial).
            log.warning("aave.pinned_pool_differs", pinned=pool, provider=addresses_provider,
                        provider_says=found[0],
                        meaning="the pinned pool is used; if its reads fail, check the pin")
        reader = cls(multicall, AaveAddresses(
            addresses_provider, pool or found[0], oracle or found[1],
            data_provider or (found[2] if found[2] != ZERO else None)), accepted_revisions,
            chain_id)
        if pool is not None and pool.lower() != found[0].lower():
            reader.provider_pool = found[0]
        return reader

    async def read_market(self, block: int) -> MarketState:
        pool, oracle = self.addresses.pool, self.addresses.oracle
        # The implementation slot rides beside the first multicall (same round trip): an
        # upgrade under the running daemon is seen in the block it happens.
        first, implementation_address = await asyncio.gather(
            self.multicall.aggregate3(
                [Call(pool, abi.GET_RESERVES_LIST), Call(oracle, abi.BASE_CURRENCY_UNIT),
                 Call(pool, abi.POOL_REVISION),
                 Call(self.multicall.address, abi.GET_CURRENT_BLOCK_TIMESTAMP)], block),
            self._implementation_address(block))
        if not first[0].success:
            pinned = "" if self.provider_pool is None else (
                f" (the pinned pool: its addresses provider {self.addresses.addresses_provider} "
                f"names {self.provider_pool}; check protocols[].pool, or leave it out)")
            raise AaveReadError(f"getReservesList() failed on {pool}{pinned} at block {block}")
        assets = abi.decode_address_list(first[0].data)
        base_unit = abi.decode_uint(first[1].data) if first[1].success else 10**8
        # Forks without POOL_REVISION() run the v3.0 code they were forked from.
        revision = abi.decode_uint(first[2].data) if first[2].success and first[2].data else 1
        rules = rules_for(revision, self.accepted_revisions)
        implementation = await self._identify(implementation_address, revision, block)
        if (not implementation.recognised and rules.known
                and revision not in self.accepted_revisions):
            # A number keeperd knows on code it does not: a fork's, or an upgrade that kept it.
            rules = replace(rules, known=False,
                            release=f"{rules.release} by number; code not recognised")
        timestamp = abi.decode_uint(first[3].data) if first[3].success else 0
        # (the deficit rides in the same multicall: a risk figure, no round trip of its own)
        deficits_read = rules.close_factor_v33
        per_reserve = 5 + (2 if rules.grace_periods else 0) + (1 if deficits_read else 0)
        calls: list[Call] = []
        for asset in assets:
            calls += [Call(pool, abi.get_reserve_data(asset)),
                      Call(pool, abi.get_normalized_income(asset)),
                      Call(pool, abi.get_normalized_debt(asset)),
                      Call(oracle, abi.get_asset_price(asset)),
                      Call(asset, abi.SYMBOL)]
            if rules.grace_periods:
                calls += [Call(pool, abi.get_liquidation_grace_period(asset)),
                          Call(pool, abi.get_virtual_underlying_balance(asset))]
            if deficits_read:
                calls.append(Call(pool, abi.get_reserve_deficit(asset)))
        results = await self.multicall.aggregate3(calls, block)
        reserves: list[Reserve] = []
        income: list[int] = []
        debt_index: list[int] = []
        prices: list[int] = []
        deficits: list[int | None] = []
        for k, asset in enumerate(assets):
            row = results[k * per_reserve:(k + 1) * per_reserve]
            if deficits_read:
                *row, deficit = row
                # (a call that failed is unknown, not $0 — a fork without the view)
                deficits.append(abi.decode_uint(deficit.data)
                                if deficit.success and len(deficit.data) >= 32 else None)
            data, inc, dbt, price, sym, *v31 = row
            if not (data.success and inc.success and dbt.success and price.success):
                raise AaveReadError(f"reading reserve {asset} failed at block {block}")
            (rd,) = decode([abi.RESERVE_DATA], data.data)
            symbol = abi.decode_string(sym.data) if sym.success else asset[:10]
            reserve = Reserve.from_configuration(
                asset, symbol, int(rd[7]), int(rd[0][0]), rd[8], rd[9], rd[10])
            if v31:
                grace, virtual = v31
                reserve = replace(
                    reserve, grace_until=abi.decode_uint(grace.data) if grace.success else 0,
                    virtual_balance=abi.decode_uint(virtual.data) if virtual.success else None)
            reserves.append(reserve)
            income.append(abi.decode_uint(inc.data))
            debt_index.append(abi.decode_uint(dbt.data))
            prices.append(abi.decode_uint(price.data))

        if self._links is None or block - self._links_read_at >= EMODE_PROBE_EVERY:
            self._links = await self._read_price_links(reserves, block)
            self._links_read_at = block
        emode_prices: dict[int, int] = {}
        if rules.emode_bitmaps:
            emode = await self._read_emode_bitmaps(rules, block)
        else:
            emode, emode_prices = await self._read_emode_legacy(reserves, block)
        return MarketState(block, tuple(reserves), tuple(income), tuple(debt_index),
                           tuple(prices), base_unit, emode, emode_prices, rules, timestamp,
                           dict(self._links), implementation, tuple(deficits))

    async def _implementation_address(self, block: int) -> str:
        """The pool proxy's logic contract at `block` (EIP-1967); the pool itself when the
        slot is empty (a pool deployed without a proxy)."""
        pool = self.addresses.pool
        raw = await self.multicall.pool.request(
            "eth_getStorageAt", [pool, IMPLEMENTATION_SLOT, hex(block)])
        value = int(raw, 16) if isinstance(raw, str) else 0
        if value == 0 or value >> 160:
            return to_checksum_address(pool)
        return to_checksum_address(f"0x{value:040x}")

    async def _identify(self, address: str, revision: int, block: int) -> Implementation:
        """Its code's fingerprint with the libraries it links (read once per implementation
        address: code at an address does not change, nor the library addresses in it) and
        whether keeperd recognises it (identity.py)."""
        fingerprint = self._fingerprints.get(address)
        if fingerprint is None:
            async def codes(addresses: list[str]) -> list[bytes]:
                answers = await self.multicall.pool.batch(
                    [("eth_getCode", [a, hex(block)]) for a in addresses])
                for answer in answers:
                    if not isinstance(answer, str):  # (unread: asked again next block)
                        raise AaveReadError(f"eth_getCode of the pool's code failed: {answer}")
                return [bytes.fromhex(str(a)[2:]) for a in answers]

            fingerprint = await read_linked_fingerprint(address, codes)
            self._fingerprints[address] = fingerprint
        return Implementation(address, fingerprint,
                              recognise(self.chain_id, address, fingerprint, revision))

    async def _read_price_links(self, reserves: list[Reserve], block: int) -> dict[str, str]:
        """Which reserves' price sources are built on another reserve's source: Aave's LST
        adapters name the ETH / USD feed WETH is priced by (BASE_TO_USD_AGGREGATOR)."""
        oracle = self.addresses.oracle
        found = await self.multicall.aggregate3(
            [Call(oracle, abi.get_source_of_asset(r.asset)) for r in reserves], block)
        sources = [abi.decode_address(f.data) if f.success and len(f.data) >= 32 else None
                   for f in found]
        by_source = {s: r.symbol for r, s in zip(reserves, sources, strict=True) if s}
        bases = await self.multicall.aggregate3(
            [Call(s or oracle, abi.BASE_TO_USD_AGGREGATOR) for s in sources], block)
        links: dict[str, str] = {}
        for reserve, source, base in zip(reserves, sources, bases, strict=True):
            if source and base.success and len(base.data) >= 32:
                leader = by_source.get(abi.decode_address(base.data))
                if leader and leader != reserve.symbol:
                    links[reserve.symbol] = leader
        return links

    async def _read_emode_legacy(self, reserves: list[Reserve], block: int
                                 ) -> tuple[dict[int, EModeCategory], dict[int, int]]:
        """v3.0/v3.1: categories named by the reserves' configuration, each with an optional
        price source that replaces the oracle price inside the mode."""
        pool, oracle = self.addresses.pool, self.addresses.oracle
        categories = sorted({r.emode_category for r in reserves if r.emode_category})
        emode: dict[int, EModeCategory] = {}
        emode_prices: dict[int, int] = {}
        if not categories:
            return emode, emode_prices
        cat_results = await self.multicall.aggregate3(
            [Call(pool, abi.get_emode_category_data(c)) for c in categories], block)
        sources: list[tuple[int, str]] = []
        for cat_id, res in zip(categories, cat_results, strict=True):
            if not res.success:
                raise AaveReadError(f"getEModeCategoryData({cat_id}) failed")
            ((ltv, lt, bonus, source, label),) = decode([abi.EMODE_CATEGORY], res.data)
            src = None if int(source, 16) == 0 else source
            emode[cat_id] = EModeCategory(cat_id, ltv, lt, bonus, src, label)
            if src:
                sources.append((cat_id, src))
        if sources:
            source_prices = await self.multicall.aggregate3(
                [Call(oracle, abi.get_asset_price(s)) for _, s in sources], block)
            for (cat_id, _), res in zip(sources, source_prices, strict=True):
                emode_prices[cat_id] = abi.decode_uint(res.data) if res.success else 0
        return emode, emode_prices

    async def _read_emode_bitmaps(self, rules: AaveRules, block: int) -> dict[int, EModeCategory]:
        """v3.2+: each category's collateral config and bitmaps. Which categories exist is
        found by probing every id (1-255) now and then (governance adds categories rarely),
        and at once when an account is seen in a category not read yet."""
        pool = self.addresses.pool
        if self._emode_ids is None or block - self._emode_probed_at >= EMODE_PROBE_EVERY:
            probe = await self.multicall.aggregate3(
                [Call(pool, abi.emode_uint8_call(abi.GET_EMODE_COLLATERAL_CONFIG, c))
                 for c in range(1, 256)], block)
            self._emode_ids = [c for c, res in zip(range(1, 256), probe, strict=True)
                               if res.success and any(res.data[32:64])]
            self._emode_probed_at = block
        per = 3 if rules.ltvzero_bitmap else 2
        calls: list[Call] = []
        for c in self._emode_ids:
            calls += [Call(pool, abi.emode_uint8_call(abi.GET_EMODE_COLLATERAL_CONFIG, c)),
                      Call(pool, abi.emode_uint8_call(abi.GET_EMODE_COLLATERAL_BITMAP, c))]
            if rules.ltvzero_bitmap:
                calls.append(Call(pool, abi.emode_uint8_call(abi.GET_EMODE_LTVZERO_BITMAP, c)))
        results = await self.multicall.aggregate3(calls, block) if calls else []
        emode: dict[int, EModeCategory] = {}
        for k, c in enumerate(self._emode_ids):
            config, bitmap, *ltvzero = results[k * per:(k + 1) * per]
            if not (config.success and bitmap.success):
                raise AaveReadError(f"eMode category {c}: reading its configuration failed")
            ltv, lt, bonus = decode(["uint16", "uint16", "uint16"], config.data[:96])
            emode[c] = EModeCategory(
                c, ltv, lt, bonus, None, "", collateral_bitmap=abi.decode_uint(bitmap.data),
                ltvzero_bitmap=abi.decode_uint(ltvzero[0].data)
                if ltvzero and ltvzero[0].success else 0)
        return emode

    async def read_positions(self, accounts: Sequence[str], market: MarketState,
                             block: int, *, batch_accounts: int | None = None,
                             cross_check_every: int = 1,
                             always_check: Collection[str] = ()) -> Positions:
        """Read every account's position at `block`.

        Accounts go in batches (phase A then phase B per batch, a few batches in flight) so
        that memory stays bounded by the batch, not by the number of accounts.

        `cross_check_every`: also read the pool's own getUserAccountData for one account in
        this many (1: all, 0: none), rotating with the block number, so local health can be
        checked against the protocol. It is the most expensive call of a scan (~35k gas).
        `always_check`: accounts checked whatever the rotation (those that disagreed last).
        """
        n, r = len(accounts), len(market.reserves)
        if n == 0:
            return Positions.empty(r)
        size = batch_accounts or 5_000
        out = _Columns(n, r)
        limit = asyncio.Semaphore(3)
        try:
            addresses = address_bytes(accounts)
        except ValueError as exc:
            raise AaveReadError(f"cannot read positions: {exc}") from exc

        if cross_check_every > 0:
            out.checked[(np.arange(n) + block) % cross_check_every == 0] = True
        if always_check:
            out.checked[[i for i, a in enumerate(accounts) if a in always_check]] = True

        async def one(start: int) -> None:
            async with limit:
                await self._read_batch(accounts, addresses, start, min(n, start + size),
                                       market, block, out)

        await asyncio.gather(*(one(s) for s in range(0, n, size)))
        return Positions(tuple(accounts), out.emode, out.collateral, out.borrowing,
                         out.a_scaled, out.variable, out.stable, out.chain_data, out.checked)

    async def _read_batch(self, accounts: Sequence[str], addresses: NDArray[np.uint8],
                          lo: int, hi: int, market: MarketState, block: int,
                          out: _Columns) -> None:
        """Phase A then phase B for accounts lo..hi, built and decoded as columns
        (multicall.AddressCalls): per call, no Python object is made but the returned word."""
        pool, m = self.addresses.pool, hi - lo
        batch = addresses[lo:hi]
        checked = lo + np.flatnonzero(out.checked[lo:hi])
        # Phase A: every account's configuration bitmap, then its eMode, then the pool's own
        # account data for those cross-checked.
        res_a = await self.multicall.read_columns(AddressCalls.concat([
            AddressCalls.to(pool, abi.SELECT_GET_USER_CONFIGURATION, batch),
            AddressCalls.to(pool, abi.SELECT_GET_USER_EMODE, batch),
            AddressCalls.to(pool, abi.SELECT_GET_USER_ACCOUNT_DATA, addresses[checked],
                            words=6)]),
            block)
        answered = res_a.answered()
        answered[2 * m:] &= res_a.answered(6)[2 * m:]
        if not answered.all():
            k = int(np.flatnonzero(~answered)[0])
            which = (lo + k if k < m else lo + k - m if k < 2 * m
                     else int(checked[k - 2 * m]))
            what = "getUserAccountData" if k >= 2 * m else "reading account"
            raise AaveReadError(f"{what} {accounts[which]} failed at block {block}")
        if len(checked):
            data = np.stack([res_a.words(slice(2 * m, None), w) for w in range(6)], axis=1)
            out.chain_data[checked] = data
        # Bit 2*id of the configuration is "borrowing" reserve id, bit 2*id+1 "collateral".
        bits = np.unpackbits(res_a.raw_words(slice(0, m)), axis=1)[:, ::-1]  # bit j at [:, j]
        ids = np.array([x.id for x in market.reserves], dtype=np.intp)
        out.borrowing[lo:hi] = bits[:, 2 * ids].astype(bool)
        out.collateral[lo:hi] = bits[:, 2 * ids + 1].astype(bool)
        emode_words = res_a.raw_words(slice(m, 2 * m))
        if emode_words[:, :31].any():  # a uint8 in a word: anything above is a lie
            k = int(np.flatnonzero(emode_words[:, :31].any(axis=1))[0])
            raise AaveReadError(f"getUserEMode({accounts[lo + k]}) answered an impossible "
                                f"category at block {block}")
        out.emode[lo:hi] = categories = emode_words[:, 31].astype(np.int64)
        if market.rules.emode_bitmaps:
            unknown = np.flatnonzero((categories != 0)
                                     & ~np.isin(categories, list(market.emode)))
            if len(unknown):
                # A category created since the last probe: probe again on the next read.
                self._emode_ids = None
                k = int(unknown[0])
                raise AaveReadError(
                    f"account {accounts[lo + k]} is in eMode category {categories[k]}, "
                    f"which the market read at block {block} does not have")
        del res_a

        # Phase B: only the balances that count, reserve by reserve.
        parts: list[AddressCalls] = []
        where: list[tuple[NDArray[np.object_], NDArray[np.intp], int]] = []
        for col, reserve in enumerate(market.reserves):
            lending = lo + np.flatnonzero(out.collateral[lo:hi, col])
            owing = lo + np.flatnonzero(out.borrowing[lo:hi, col])
            reads = [(reserve.a_token, abi.SELECT_SCALED_BALANCE_OF, lending, out.a_scaled),
                     (reserve.variable_debt_token, abi.SELECT_SCALED_BALANCE_OF, owing,
                      out.variable)]
            if int(reserve.stable_debt_token, 16):  # removed in v3.2
                reads.append((reserve.stable_debt_token, abi.SELECT_BALANCE_OF, owing,
                              out.stable))
            for token, select, rows, target in reads:
                if len(rows):
                    parts.append(AddressCalls.to(token, select, addresses[rows]))
                    where.append((target, rows, col))
        res_b = await self.multicall.read_columns(AddressCalls.concat(parts), block)
        answered = res_b.answered()
        if not answered.all():
            k = int(np.flatnonzero(~answered)[0])
            rows = np.concatenate([w[1] for w in where])
            raise AaveReadError(f"balance read for {accounts[int(rows[k])]} failed at "
                                f"block {block}")
        values = res_b.words()
        k = 0
        for target, rows, col in where:
            target[rows, col] = values[k:k + len(rows)]
            k += len(rows)


class _Columns:
    """The arrays a position read fills in."""

    def __init__(self, n: int, r: int) -> None:
        self.chain_data = _zeros((n, 6))
        self.emode = np.zeros(n, dtype=np.int64)
        self.collateral = np.zeros((n, r), dtype=bool)
        self.borrowing = np.zeros((n, r), dtype=bool)
        self.a_scaled = _zeros((n, r))
        self.variable = _zeros((n, r))
        self.stable = _zeros((n, r))
        self.checked = np.zeros(n, dtype=bool)


def _zeros(shape: tuple[int, int]) -> NDArray[np.object_]:
    out = np.empty(shape, dtype=object)
    out.fill(0)
    return out
