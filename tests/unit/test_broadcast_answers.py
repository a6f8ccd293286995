"""Which refusals of a broadcast mean "the node already has these bytes" (sent, not refused):
each node's wording, as they answer a transaction sent again."""

from __future__ import annotations

import pytest

from keeperd.execution.txmanager import node_has_it


@pytest.mark.parametrize("message", [
    "already known",                                                       # geth, erigon
    "transaction already imported",                                        # anvil
    "Transaction with the same hash was already imported.",                # OpenEthereum
    "AlreadyKnown",                                                        # Nethermind
    "Known transaction",                                                   # Besu, old geth
])
def test_the_node_already_holds_it(message: str) -> None:
    assert node_has_it(message)


@pytest.mark.parametrize("message", [
    "nonce too low",
    "replacement transaction underpriced",
    "insufficient funds for gas * price + value",
    "max fee per gas less than block base fee",
    "execution reverted",
])
def test_a_real_refusal_is_not_mistaken_for_it(message: str) -> None:
    assert not node_has_it(message)
