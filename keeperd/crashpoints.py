"""Named points where the fault suite kills keeperd (#17), to show what a crash at the worst
moment leaves behind: `KEEPERD_CRASH_AT=journal.signed keeperd run ...` dies by SIGKILL the
first time it passes that point, as a power cut or the OOM killer would. Without the variable
a point costs one dictionary lookup; the daemon refuses to start when the variable names no
point (a misspelt scenario would otherwise pass without ever crashing).
"""

from __future__ import annotations

import os
import signal

ENV = "KEEPERD_CRASH_AT"

POINTS = {
    "index.logs_read": "an index range read from the chain, not yet written",
    "journal.signed": "a wave of signed transactions journaled (write-ahead), none broadcast",
    "tx.broadcast": "transactions accepted by the node, the answer not yet acted on",
    "tx.settled": "a liquidation's receipt (or its lost nonce) seen, not yet journaled",
    "alerts.committed": "alert state and notifications written, nothing delivered",
    "sink.accepted": "a sink accepted a notification, the outbox row not yet marked",
}


def crash_point(name: str) -> None:
    """Die here (SIGKILL) when the environment names this point."""
    assert name in POINTS, name
    if os.environ.get(ENV) == name:
        # (stderr is unbuffered: the line is out before the process is gone)
        os.write(2, f"keeperd: crash point {name}: SIGKILL\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)


def configured_problem() -> str | None:
    """What is wrong with the environment's crash point, if anything."""
    name = os.environ.get(ENV)
    if name is None or name in POINTS:
        return None
    return f"{ENV}={name!r} names no crash point; the points: {', '.join(sorted(POINTS))}"
