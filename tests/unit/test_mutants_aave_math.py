"""A case that kills the survivors of `make mutate` in exact_account_data's chunking
(keeperd/protocols/aave_v3/math.py, docs/mutation.md): the unit tests' books hold at most 20
accounts, under the 8,192 a pass takes, so the passes over slices were never run."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
from hypothesis import given, settings

from keeperd.protocols.aave_v3.math import exact_account_data
from tests.unit.test_aave_math import accounts, indexes, market, positions, prices, scalar_health


@settings(max_examples=50, deadline=None)
@given(accounts, prices, indexes, indexes)
def test_passes_over_slices_equal_one_pass_and_the_reference(rows, p, inc, dbt) -> None:
    m = market(p, inc, dbt)
    pos = positions(rows)
    whole = exact_account_data(m, pos)
    sliced = exact_account_data(m, pos, rows_per_pass=3)
    for f in fields(whole):
        assert np.array_equal(getattr(sliced, f.name), getattr(whole, f.name)), f.name
    for i, (em, coll, var, cf, bf) in enumerate(rows):
        assert sliced.health_factor[i] == scalar_health(m, em, coll, var, cf, bf)
