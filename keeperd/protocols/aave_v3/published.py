"""Aave V3 markets as Aave's own address book publishes them (`published.json`, written from the
pinned `@aave-dao/aave-address-book` by `python -m keeperd.devnet.address_book`).

The daemon has no node at run time, so the book ships as this JSON file. It answers two
questions: which market a pool implementation belongs to (identity.py recognises Aave's own
Pool code by its address, `POOL_IMPL`), and what the mainnet profiles must pin (the tests
compare `config/mainnet/` with it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

_PUBLISHED = Path(__file__).with_name("published.json")


@dataclass(frozen=True)
class PublishedMarket:
    """One Aave V3 market of the address book (addresses checksummed)."""

    name: str  # the book's library name: AaveV3Ethereum, AaveV3EthereumLido, AaveV3Base...
    chain_id: int
    pool_addresses_provider: str
    pool: str
    pool_impl: str  # the Pool implementation behind the proxy when the book was published
    oracle: str
    data_provider: str


@cache
def _markets() -> dict[str, PublishedMarket]:
    data = json.loads(_PUBLISHED.read_text())
    return {name: PublishedMarket(name=name, **fields)
            for name, fields in data["markets"].items()}


@cache
def _by_implementation() -> dict[tuple[int, str], PublishedMarket]:
    return {(m.chain_id, m.pool_impl.lower()): m for m in _markets().values()}


def published_markets() -> dict[str, PublishedMarket]:
    """Every published market by the book's name (a copy: callers may change it)."""
    return dict(_markets())


def published_implementation(chain_id: int, address: str) -> PublishedMarket | None:
    """The market whose `POOL_IMPL` is `address` on `chain_id` (any letter case), or None."""
    return _by_implementation().get((chain_id, address.lower()))
