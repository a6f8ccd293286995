"""What a liquidator learns from a receipt is the gas limit it needed, not the gas it paid
(`executor.RECEIPT_TO_LIMIT`). Figures recorded on the devnet (config/devnet.yaml, Aave's
flash path through the FlashLiquidator, 2026-12-05): each transaction's receipt gasUsed and the
least gas limit with which the same call succeeds at the same state (found by replaying it)."""

from __future__ import annotations

import math

from keeperd.config import KeeperConfig
from keeperd.execution.executor import RECEIPT_TO_LIMIT

# (receipt gasUsed, least working limit), three included flash liquidations
RECORDED = [(531_639, 694_910), (494_340, 646_026), (483_873, 632_309)]
# The one that reverted: its pair (WETH/DAI) had taught 517,481 (a receipt); this account's
# call, one second after its simulation's block, needed 651,547; it was sent with 646,851.
TAUGHT, NEEDED, SENT = 517_481, 651_547, 646_851


def limit(receipt_gas: int, margin: float) -> int:
    """A liquidator's limit from one receipt (`_gas_limit`: the learnt figure x margin)."""
    return int(math.ceil(receipt_gas * RECEIPT_TO_LIMIT) * margin)


def test_a_receipts_figure_becomes_the_limit_it_needed() -> None:
    for paid, least in RECORDED:
        assert math.ceil(paid * RECEIPT_TO_LIMIT) >= least  # even without a margin
        assert paid * 1.25 < least  # (the receipt x the default margin fell short)


def test_the_reverted_liquidation_would_have_had_enough() -> None:
    margin = KeeperConfig().gas_limit_margin
    assert int(TAUGHT * margin) == SENT  # what was sent: the receipt x the margin
    assert limit(TAUGHT, margin) >= NEEDED
