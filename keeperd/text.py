"""Text for people: a reason cut to a line's room."""

from __future__ import annotations


def clip(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word's end (an address or a price cut in half
    read as another one: a trial)."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[:cut if cut > limit // 2 else limit].rstrip(" ;,:") + " …"
