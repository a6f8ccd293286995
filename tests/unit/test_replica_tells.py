"""Which of a replica's states tell (write alerts) and which act: the promotion's window
(its reconciliation told, once the last leader's alert state is read, while the lease holds;
a by-hand trial's failover dropped the old leader's inclusions as a standby's)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from keeperd.config import LeaseConfig
from keeperd.metrics import Metrics
from keeperd.storage.replica import LEADER, Replica


def replica() -> Replica:
    lease = SimpleNamespace(identity="0xkeeper@1", holder="host:1:x", epoch=None,
                            held_elsewhere=None)
    return Replica(lease, LeaseConfig(), Metrics())  # type: ignore[arg-type]


def test_a_standby_neither_tells_nor_leads() -> None:
    r = replica()
    assert not r.tells() and not r.is_leader()


def test_a_promotion_tells_once_the_alert_state_is_read_and_while_the_lease_holds() -> None:
    r = replica()
    r.promoting, r._renewed_at = True, time.monotonic()  # (as the lease is taken)
    assert not r.tells()  # (the last leader's alert state not read yet)
    r.promotion_tells = True
    assert r.tells() and not r.is_leader()  # told, not acting: nothing is sent yet
    r._renewed_at -= r.config.length_s  # (its renewals failing: the lease may have expired)
    assert not r.tells()
    r._renewed_at = time.monotonic()
    r._promotion_lost = True
    assert not r.tells()  # (another replica may lead: it tells)


def test_a_leader_tells() -> None:
    r = replica()
    r.role, r._renewed_at = LEADER, time.monotonic()
    assert r.tells() and r.is_leader()
