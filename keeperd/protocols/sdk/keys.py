"""The keys of what the keeper signs, as types.

- `OpportunityKey`: a liquidation, or a plug-in's journaled follow-up (Curie's unwind). Its
  text is the journal's primary key, so a restart never sends it twice; that text is parsed
  back in one place (`OpportunityKey.parse`, at the journal boundary: `JournalEntry.opportunity`),
  and nothing else splits it.
- `UpkeepKey`: an approval or a margin deposit. Never journaled (fenced only); it lives in the
  transaction manager's memory while in flight.
- `WaveKey`: a wave of one protocol's liquidations sent as one transaction (the keeper's
  address delegated to KeeperWave: execution/wave_code.py); its members are the
  liquidations' keys in the order of their calls. The journal keeps the wave's signed
  transactions under each member (execution/journal.py), never under a key of its own.

Who owns a key is a field (`protocol`), never a prefix of its text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

_SEPARATORS = (":", "#")


def _plain(part: str, what: str) -> str:
    if not part or any(s in part for s in _SEPARATORS):
        raise ValueError(f"a key's {what} must be non-empty, without ':' or '#': {part!r}")
    return part


@dataclass(frozen=True, order=True)
class OpportunityKey:
    """Which liquidation: `position` says what within the account is liquidated (Aave: the
    collateral and debt assets; Morpho Blue: the market; Curie: the market, or `unwind` and
    the market for the keeper's own follow-up); `version` changes when the position does
    (someone repaid or liquidated part of it: a new opportunity); `attempt` > 0 is a retry
    after a revert."""

    protocol: str
    account: str
    position: tuple[str, ...]
    version: str
    attempt: int = 0

    def __post_init__(self) -> None:
        _plain(self.protocol, "protocol")
        _plain(self.account, "account")
        _plain(self.version, "version")
        if not self.position:
            raise ValueError("a key's position names at least one part")
        for part in self.position:
            _plain(part, "position")
        if self.attempt < 0:
            raise ValueError(f"a key's attempt is >= 0: {self.attempt}")

    def __str__(self) -> str:
        base = ":".join((self.protocol, self.account, *self.position, self.version))
        return f"{base}#retry{self.attempt}" if self.attempt else base

    def __repr__(self) -> str:  # (logs and events show the journal's text)
        return str(self)

    def retry(self, attempt: int) -> OpportunityKey:
        return replace(self, attempt=attempt)

    @classmethod
    def parse(cls, text: str) -> OpportunityKey:
        """The key a journal row was written under (the inverse of `str`)."""
        base, sep, retry = text.partition("#retry")
        attempt = int(retry) if sep else 0
        protocol, account, *position, version = base.split(":")
        if not position:
            raise ValueError(f"not an opportunity key: {text!r}")
        return cls(protocol, account, tuple(position), version, attempt)


@dataclass(frozen=True, order=True)
class UpkeepKey:
    """An approval (`approve`: `subject` the token) or a deposit (`deposit`: `subject` the
    vault) a protocol's liquidator sends for itself; `tag` tells one from the next."""

    protocol: str
    action: str
    subject: str
    tag: str

    def __str__(self) -> str:
        return f"{self.action}:{self.protocol}:{self.subject}:{self.tag}"

    def __repr__(self) -> str:
        return str(self)


@dataclass(frozen=True, order=True)
class WaveKey:
    """Many liquidations of one protocol in one transaction: `members[i]` is call i's."""

    protocol: str
    members: tuple[OpportunityKey, ...]

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("a wave has at least one member")
        if any(m.protocol != self.protocol for m in self.members):
            raise ValueError("a wave's members are of its protocol")
        if len(set(self.members)) != len(self.members):
            raise ValueError("a wave names each member once")

    def __str__(self) -> str:
        return f"wave:{self.members[0]}+{len(self.members) - 1}"

    def __repr__(self) -> str:
        return str(self)


TxKey = OpportunityKey | UpkeepKey | WaveKey
