"""Text for people: a reason cut to a line's room, a moment in UTC."""

from __future__ import annotations

import re
import time

# 64 hex digits, with or without 0x: the shape of a private key (and of a hash).
KEY_SHAPED = re.compile(r"\s*(0x)?[0-9a-fA-F]{64}\s*")
# What is said of such a value where an address goes, never the value: it may be the key (a
# private key pasted as keeper.address was echoed whole by check-config and on run's stderr,
# the journal under systemd: a by-hand trial).
KEY_SHAPED_NOT_AN_ADDRESS = (
    "holds 64 hex digits, not an address's 40: a private key, a transaction hash or a market "
    "id (not shown: if it is a private key, treat it as exposed wherever this was written or "
    "shared); fix: write the account's address, 0x and 40 hex digits")


def clip(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word's end (an address or a price cut in half
    read as another one: a trial)."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[:cut if cut > limit // 2 else limit].rstrip(" ;,:") + " …"


def utc_text(ts: float) -> str:
    """A moment as people read it in a message: 30 Nov 00:53:20 UTC."""
    return time.strftime("%d %b %H:%M:%S UTC", time.gmtime(ts))
