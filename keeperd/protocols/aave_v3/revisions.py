"""Which rules an Aave V3 pool runs, by its `POOL_REVISION()`.

Governance upgrades the Pool implementation behind the same proxy, and the rules a keeper
lives by changed between revisions (../shared/AAVE-TODAY.md lists them with their sources):

- 1, 2 (v3.0.x): eMode by reserve-config bits with an optional price source; close factor
  50 % of the reserve debt above HF 0.95; half-up rounding.
- 3 (v3.1): liquidation grace periods; virtual underlying balance.
- 4-6 (v3.2): eMode by category bitmaps (collateral, borrowable); stable debt removed.
- 7, 8 (v3.3, v3.4): close factor 100 %, 50 % of the *total* debt only when both reserves are
  worth >= $2,000 and HF > 0.95; MustNotLeaveDust under $1,000; bad debt burned.
- 9 (v3.5): aToken balances floor, debt balances and debt in base ceil, no basis-point floor
  on the average threshold.
- 10 (v3.6): zero-threshold collateral counts (eMode's threshold applies) and may be
  seized; the LTV-zero bitmap.
- 11 (v3.7, Ethereum Core since June 2026): health unchanged; the seized collateral rounds
  against the liquidator at three sites (total collateral floor, its base part floor, the
  protocol fee ceil); "no collateral left" (bad debt burnt) is decided in scaled aToken units,
  so a few wei worth $0 count as nothing left; no price-oracle sentinel; isolated eMode
  (LTV only: keeperd's health does not use LTV).

Revisions 1 and 10 are tested against a real pool on the devnet; the others follow the
published sources (11's package is not published: it cannot be built on the devnet). A
revision not in this table, or a known number on code keeperd does not recognise
(identity.py), is *unknown*: keeperd evaluates with the nearest known rules and, by default,
sends a liquidation only when the chain confirms it (`unknown_revision: verify`). A known
revision not tested (`tested`) is verified the same way, unless the operator accepts it
(`accept_revisions`): v3.7, Ethereum Core's since June 2026, is one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AaveRules:
    revision: int
    release: str
    emode_bitmaps: bool  # v3.2+: eMode membership and parameters from the category bitmaps
    grace_periods: bool  # v3.1+: getLiquidationGracePeriod, virtual underlying balance
    close_factor_v33: bool  # v3.3+: 100 % default, 50 % of total debt, dust rule
    rounding_v35: bool  # v3.5+: floor collateral, ceil debt, unfloored average threshold
    zero_lt_collateral: bool  # v3.6+: zero-threshold collateral counts and may be seized
    ltvzero_bitmap: bool  # v3.6+: getEModeCategoryLtvzeroBitmap
    rounding_v37: bool = False  # v3.7+: seizure rounds against the liquidator; scaled bad debt
    # v3.0-v3.6: on a pool with a PriceOracleSentinel (L2s), only health < 0.95 may be
    # liquidated while the sequencer is down or in its grace period; v3.7 removed it.
    price_sentinel: bool = True
    known: bool = True
    # Run against a real pool in keeperd's tests (TESTED_REVISIONS), or accepted by the
    # operator. Known but untested rules (v3.7's, derived by hand from its sources: its
    # package is not published) are verified against the chain like unknown ones.
    tested: bool = True


_RELEASES: dict[int, str] = {1: "v3.0", 2: "v3.0.2", 3: "v3.1", 4: "v3.2", 5: "v3.2", 6: "v3.2",
                             7: "v3.3", 8: "v3.4", 9: "v3.5", 10: "v3.6", 11: "v3.7"}
# Revisions whose rules have run against a real pool in keeperd's tests.
TESTED_REVISIONS = frozenset({1, 10})
LATEST_KNOWN = max(_RELEASES)


def rules_for(revision: int, accepted: frozenset[int] | set[int] = frozenset()) -> AaveRules:
    """The rules of `revision`. An unknown revision gets the rules of the nearest known one
    below it (the protocol only ever adds rules) and `known=False`, unless the operator
    accepted it, in which case it is treated as known."""
    base = min(max(revision, 1), LATEST_KNOWN)
    return AaveRules(
        revision=revision,
        release=_RELEASES.get(revision, f"unknown (rules of {_RELEASES[base]})"),
        emode_bitmaps=base >= 4,
        grace_periods=base >= 3,
        close_factor_v33=base >= 7,
        rounding_v35=base >= 9,
        zero_lt_collateral=base >= 10,
        ltvzero_bitmap=base >= 10,
        rounding_v37=base >= 11,
        price_sentinel=base < 11,
        known=revision in _RELEASES or revision in accepted,
        tested=revision in TESTED_REVISIONS or revision in accepted,
    )
