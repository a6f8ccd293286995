"""What a grown discovery filter must read of the past: exactly the logs its new elements add."""

from __future__ import annotations

from keeperd.protocols.sdk.indexer import LogFilter

POOL, ATOKEN, NEW_ATOKEN = "0xP00l", "0xA70C", "0xNEW0"
EVENTS = ("0xsupply", "0xborrow")


def test_a_new_address_is_read_with_every_topic() -> None:
    before = LogFilter((POOL, ATOKEN), (EVENTS,))
    after = LogFilter((POOL, ATOKEN, NEW_ATOKEN), (EVENTS,))
    new = after.elements() - before.elements()
    assert new == {"address:0xnew0"}
    assert after.narrowed_to(new) == [LogFilter((NEW_ATOKEN,), (EVENTS,))]


def test_a_new_topic_value_is_read_at_its_position_with_every_address() -> None:
    before = LogFilter((POOL,), (EVENTS, ("0xm1",)))
    after = LogFilter((POOL,), (EVENTS, ("0xm1", "0xM2")))
    new = after.elements() - before.elements()
    assert new == {"topic1:0xm2"}
    assert after.narrowed_to(new) == [LogFilter((POOL,), (EVENTS, ("0xM2",)))]
    assert after.narrowed_to(set()) == []
