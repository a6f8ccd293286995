"""What an alert resting on an untrusted price says of it (`alerts.inhibition: annotate`),
worded for who reads it.

An operator may act on a price keeperd distrusts: liquidate, or change the book's caps on a
cascade's figures; "do not act on this price yet" is their advice. A position's holder acts on
their own position, and the protocol liquidates it at its own oracle's price whatever keeperd
thinks of that price: a holder told health 0.9879 and "do not act on this price yet", the
oracle at 2800 against references at 2500 (their real risk worse), was liquidated 40 s later
(a by-hand trial). The holder is told the fact, never to wait.
"""

from __future__ import annotations


def holder_note(subject: str, why: str) -> str:
    """The note on a watched position's alert: keeperd distrusts `subject`'s price (`why`:
    the breaker's reason and since when), and that changes nothing for the protocol."""
    return (f"note: keeperd distrusts the {subject} price ({why}); the protocol still "
            "liquidates at its own oracle's price, whatever keeperd thinks of it")


def operator_note(subject: str, why: str) -> str:
    """The warning on an operator's alert whose figures rest on `subject`'s price."""
    return f"do not act on this price yet: {subject} price untrusted: {why}"
