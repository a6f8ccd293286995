"""What a plug-in's own sends (approvals, deposits) through the chain's transaction manager
may raise, defined where a plug-in may import it: a plug-in that records what it is about to
send undoes the record when the send never reached the chain."""

from __future__ import annotations


class SendRefused(Exception):
    """The transaction was not sent (fees over budget, or the node refused it)."""
