"""The lifecycle every long-running component of the daemon follows.

The daemon (the composition root) builds its components in order — chains, store, alerts,
each protocol's pipeline — and runs each service's `run` in one TaskGroup. On stop it first
asks every service to `drain` (take no new work), waits for all to be `drained` (what is in
flight — an evaluation and its wave of liquidations — reaches its end) within the stop budget,
and only then cancels. What a service holds is closed by the exit stack it was registered on.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Service(Protocol):
    @property
    def name(self) -> str:
        """For task names and logs."""

    async def run(self) -> None:
        """The service's loop; runs until cancelled."""

    def drain(self) -> None:
        """Take no new work."""

    async def drained(self) -> None:
        """Return once the work in flight has finished."""
