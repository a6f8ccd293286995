"""Text for people: a reason cut to a line's room, a moment in UTC."""

from __future__ import annotations

import time


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
