"""At start, before anything new is sent: what a protocol's journal left in flight.

One discipline for every protocol: an opportunity journaled but never signed (a crash or an
RPC error between the two) is forgotten, so it can be planned again — nothing of it can be on
chain; one with a signed transaction is tracked again by the transaction manager and its
latest signed bytes rebroadcast (a crash between the journal write and the broadcast must not
leave it unsent; the node answers "already known" otherwise). Its nonce is the one it was
signed with: the resumed transaction is settled, replaced or cancelled like any other, never
signed again under a new nonce.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import replace

import structlog
from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes

from keeperd.execution import journal as J
from keeperd.execution.txmanager import TxManager
from keeperd.protocols.sdk.keys import OpportunityKey, WaveKey

log = structlog.get_logger(__name__)

# Whether a transaction (to, data, gas) would still succeed from the keeper at the head.
StillSucceeds = Callable[[str, bytes, int], Awaitable[bool]]


def unconfigured_in_flight(pending: list[J.JournalEntry], configured: set[str],
                           mined: int | None = None) -> str | None:
    """Why a start in liquidate mode must not go on: signed, unsettled liquidations of a
    protocol the config no longer has (removed, or renamed: rows are keyed by its name). Each
    protocol resumes only its own rows, so theirs would be tracked by nothing — mined and
    never booked (`keeperd status` pending for good), or left in the node's pool under the
    key's nonces, which the start then called another sender's (a by-hand trial). None: every
    row in flight is a configured protocol's."""
    orphans: dict[str, list[J.JournalEntry]] = {}
    for entry in pending:
        # (`mined`: the least mined nonce count of the key on the configured chains — a row
        # under it can no longer be in any pool of theirs: mined or replaced, its P&L only
        # unbooked: the daemon logs `journal.unconfigured_in_flight`)
        if entry.protocol not in configured and (
                mined is None or entry.nonce is None or entry.nonce >= mined):
            orphans.setdefault(entry.protocol, []).append(entry)
    if not orphans:
        return None
    said = []
    for protocol, entries in sorted(orphans.items()):
        nonces = sorted(e.nonce for e in entries if e.nonce is not None)
        span = f", nonces {nonces[0]}-{nonces[-1]}" if nonces else ""
        said.append(f"{len(entries)} of `{protocol}`{span}")
    names = ", ".join(f"`{p}`" for p in sorted(orphans))
    return (f"the journal holds liquidations signed and not settled yet of protocols this "
            f"config does not have ({'; '.join(said)}): removed or renamed (journal rows are "
            "keyed by the protocol's name), nothing would track their transactions — mined "
            "and never booked, or left in the node's pool under the key's nonces. Put "
            f"{names} back under `protocols` as before and start keeperd until `keeperd "
            "status` shows none of it pending (a few blocks), then remove or rename it")


async def resume_journal(journal: J.Journal, tx: TxManager, protocol: str, head: int,
                         resend_if: StillSucceeds | None = None) -> int:
    """Resume `protocol`'s entries; return how many signed transactions are tracked again
    (with `resend_if`, sent again only if their call would still succeed: `track_again`)."""
    for entry in await journal.by_status(J.PLANNED):
        if entry.protocol == protocol and await journal.forget_unsigned(entry.key):
            log.info("journal.unsigned_forgotten", opportunity=entry.key,
                     meaning="journaled, never signed: it may be planned again")
    resumed = 0
    # The nonces mined already: a transaction under one of them was included (or its nonce
    # taken): not simulated — the watch settles it from its receipt. (A restart after a
    # SIGKILL warned "would revert ... not broadcast again" of liquidations mined before it,
    # then logged them included a moment later.)
    try:
        mined: int | None = int(await tx.pool.request(
            "eth_getTransactionCount", [tx.address, "latest"]), 16)
    except Exception:  # (unknown: each is checked as before)
        mined = None
    # Lowest nonce first: each transaction the node is sent again can be mined at once (one
    # sent before a lower nonce waits in the node's queue for it, and a crash in between left
    # only that one there). The journal's order is not the nonces': a wave's rows are
    # journaled in one write, with one time.
    pending = sorted(await journal.by_status(J.PENDING),
                     key=lambda e: (e.nonce is None, e.nonce or 0))
    for entry in pending:
        if entry.protocol != protocol:
            continue
        if await track_again(journal, tx, entry, head, resend_if, mined_nonce=mined):
            resumed += 1
            # (its settlement is counted in this process: so is where it came from)
            tx.metrics.liquidation_funnel.labels(tx.pool.chain, protocol, "resumed").inc()
            log.info("journal.resumed", opportunity=entry.key, nonce=entry.nonce)
        else:
            await journal.set_status(entry.key, J.DROPPED, detail="no transaction signed")
    return resumed


async def track_again(journal: J.Journal, tx: TxManager, entry: J.JournalEntry,
                      head: int, resend_if: StillSucceeds | None = None, *,
                      mined_nonce: int | None = None, reorged: bool = False) -> bool:
    """Hand an opportunity's journaled transactions back to the transaction manager (after a
    restart, or when a reorg took its block away) and send its latest bytes again; False when
    nothing was ever signed for it. With `resend_if`, the bytes are sent again only if the
    call would still succeed: one that would revert stays tracked, unsent, and its nonce is
    cancelled like that of any opportunity gone (the manager's watch). `mined_nonce`: the
    address's mined nonce count, when known: one signed under a nonce below it is sent again
    without its simulation (its receipt settles it)."""
    key: OpportunityKey | None = None
    try:
        key = entry.opportunity
    except ValueError as exc:  # not a key keeperd writes: the row is not ours to resume
        bad_key: str | None = f"its key is not an opportunity key ({exc})"
    else:
        bad_key = None
    records = await journal.txs(key or entry.key)
    if not records:
        return False
    if key is not None and bad_key is None and records[-1].wave_index is not None:
        return await _track_wave_again(journal, tx, entry, records, head, resend_if,
                                       mined_nonce=mined_nonce, reorged=reorged)
    problem = bad_key or next(
        (p for r in records if (p := forged(r, tx, records[0].nonce))), None)
    if problem is not None or key is None:
        # Whoever can write the state database must not get the keeper to sign, replace or
        # cancel a transaction of their making: nothing of this row is trusted or sent.
        rotated = problem is not None and problem.startswith("signed by ")
        log.error("journal.row_refused", opportunity=entry.key, problem=problem,
                  meaning="a journaled transaction this keeper's key did not sign: not "
                          "resumed, not replaced, its outcome not recorded"
                          + ("; if the key was changed while this was in flight (the old "
                             "key's address above), its outcome is on chain under that "
                             "address — change keys only with nothing pending (`keeperd "
                             "status`); otherwise the state database was written by someone "
                             "else" if rotated else
                             "; the state database was written by someone else, or is "
                             "corrupt: check who can write the state directory"))
        await journal.set_status(entry.key, J.DROPPED, detail=f"refused: {problem}"[:500])
        return True
    signed = TypedTransaction.from_bytes(HexBytes(records[0].raw)).as_dict()
    to, data = to_checksum_address(signed["to"]), bytes(signed["data"])
    tx.track(key, records, to, data, entry.max_fee_wei, head, pulls=entry.pulls)
    if mined_nonce is not None and records[0].nonce < mined_nonce:
        # Its nonce is mined (one endpoint's word): not simulated — its call reverts now if
        # it was included — but its bytes go again all the same, which is harmless ("nonce
        # too low", "already known") if that word was true and sends it if it was not.
        await tx.rebroadcast(key, resync=False)
        return True
    if resend_if is None or await resend_if(to, data, int(signed["gas"])):
        await tx.rebroadcast(key)
    else:
        log.warning("liquidation.not_sent_again", opportunity=entry.key, nonce=entry.nonce,
                    meaning="its call would revert at the head now: not broadcast again; "
                            "its nonce is cancelled unless the opportunity comes back")
    return True


async def _track_wave_again(journal: J.Journal, tx: TxManager, entry: J.JournalEntry,
                            records: list[J.TxRecord], head: int,
                            resend_if: StillSucceeds | None, *, mined_nonce: int | None,
                            reorged: bool = False) -> bool:
    """`track_again` for a liquidation sent in a wave (execution/waves.py): the wave is
    tracked once, under its members as journaled with its latest transaction (each in its
    call's place), whichever member comes first; the others find it tracked. Each of its
    journaled transactions must be one this keeper signed, under one nonce, and be journaled
    under every member in the same place: otherwise nothing of it is trusted. `reorged`: its
    block was reorganised away, so every member is pending again (one whose call failed in
    the old block may succeed in the new, and the other way round); at a restart only those
    still pending are (the others were settled before the crash)."""
    members = await journal.wave_members(records[-1].tx_hash)
    problem: str | None = None
    wave: WaveKey | None = None
    try:
        ordered = sorted(members.items(), key=lambda kv: kv[1])
        if [i for _, i in ordered] != list(range(len(ordered))):
            raise ValueError(f"its calls' places are {sorted(members.values())}")
        wave = WaveKey(entry.protocol, tuple(OpportunityKey.parse(k) for k, _ in ordered))
    except ValueError as exc:
        problem = f"its wave's members do not read ({exc})"
    if wave is not None and wave in tx.pending:
        if reorged:  # (tracked at this start before the reorg was seen: its members too)
            await _wave_pending_again(journal, wave)
        return True  # (another member tracked it)
    if problem is None:
        problem = next((p for r in records if (p := forged(r, tx, records[0].nonce))), None)
    if problem is None:
        for record in records:
            placed = await journal.wave_members(record.tx_hash)
            if placed != members:
                problem = f"its transaction {record.tx_hash} is journaled under other members"
                break
    if problem is not None or wave is None:
        log.error("journal.row_refused", opportunity=entry.key, problem=problem,
                  meaning="a journaled wave this keeper cannot trust: not resumed, not "
                          "replaced, its outcome not recorded; the state database was written "
                          "by someone else, or is corrupt")
        await journal.set_status(entry.key, J.DROPPED, detail=f"refused: {problem}"[:500])
        return True
    signed = TypedTransaction.from_bytes(HexBytes(records[0].raw)).as_dict()
    to, data = to_checksum_address(signed["to"]), bytes(signed["data"])
    budget, pulls = 0, dict[str, int]()
    for member in wave.members:
        found = await journal.get(member)
        budget += found.max_fee_wei if found is not None else 0
        for asset, amount in ((found.pulls or {}) if found is not None else {}).items():
            pulls[asset] = pulls.get(asset, 0) + amount
    if reorged:
        await _wave_pending_again(journal, wave)
    tx.track(wave, [replace(r, key=wave, wave_index=None) for r in records], to, data,
             budget, head, pulls=pulls)
    if (mined_nonce is not None and records[0].nonce < mined_nonce) or resend_if is None \
            or await resend_if(to, data, int(signed["gas"])):
        await tx.rebroadcast(wave, resync=mined_nonce is None or records[0].nonce >= mined_nonce)
    log.info("journal.wave_resumed", wave=str(wave), liquidations=len(wave.members),
             nonce=records[0].nonce)
    return True


async def _wave_pending_again(journal: J.Journal, wave: WaveKey) -> None:
    """A wave's block reorganised away: its members whose calls did not succeed there are
    pending again with it (on the new branch they may). One included stays included, and is
    checked on its own (`Executor._recheck_inclusion`): set pending here, its settlement
    would be booked a second time."""
    for member in wave.members:
        entry = await journal.get(member)
        if entry is not None and entry.status != J.INCLUDED:
            await journal.set_status(member, J.PENDING,
                                     detail="its wave's block reorganised away")


def forged(record: J.TxRecord, tx: TxManager, nonce: int) -> str | None:
    """Why a journaled transaction is not one this keeper signed for this chain, or None: its
    hash must be the keccak of its bytes, its signer the keeper's key, its chain and nonce the
    ones it was journaled under."""
    return not_signed_by(record, tx.address, tx.chain_id, nonce)


def not_signed_by(record: J.TxRecord, address: str, chain_id: int, nonce: int) -> str | None:
    """`forged` for a keeper's address and chain id (a start checks the journal before any
    transaction manager is made)."""
    try:
        raw = bytes(HexBytes(record.raw))
        if "0x" + keccak(raw).hex() != record.tx_hash.lower():
            return "its hash is not the keccak of its bytes"
        fields = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
        sender = Account.recover_transaction(raw)
    except Exception as exc:  # undecodable bytes are as untrusted as a wrong signature
        return f"its bytes do not decode: {type(exc).__name__}"
    if sender.lower() != address.lower():
        return f"signed by {sender}, not by the keeper {address}"
    if int(fields.get("chainId", -1)) != chain_id:
        return f"signed for chain {fields.get('chainId')}, not {chain_id}"
    if int(fields["nonce"]) != record.nonce or record.nonce != nonce:
        return f"nonce {fields['nonce']} in its bytes, {record.nonce} in the journal"
    return None


# Rows with a transaction looked at, the latest block first, for the journal's last block: one
# of the keeper's is almost always the first; many that are not are a state database written
# by someone else, and the chain is then not judged by its journal (its genesis still is).
LAST_BLOCK_ROWS = 64


async def journal_last_block(journal: J.Journal, protocols: Collection[str], address: str,
                             chain_id: int) -> tuple[int, str] | None:
    """The latest block `protocols`' journal saw its chain reach, and the row that says so:
    only a row whose transactions this keeper signed for this chain (`not_signed_by`) counts —
    anyone who can write the state database can write a block number, and one row of a block
    far ahead refused every start for good (a review). A row with nothing signed says nothing
    here (its key only stops it being planned twice). Rows with a transaction that do not
    verify, or whose block does not read, are set aside and said. None: no such row."""
    for key, block in await journal.latest_signed(protocols, LAST_BLOCK_ROWS):
        records = await journal.txs(key)
        problem = "its block does not read" if block is None else next(
            (p for r in records if (p := not_signed_by(r, address, chain_id,
                                                       records[0].nonce))), None)
        if problem is None and block is not None and records:
            return block, key
        log.warning("journal.block_unverified", key=key, block=block, problem=problem,
                    meaning="not counted in how far the journal saw this chain: its "
                            "transaction is not one this keeper signed for it")
    return None


def unconfigured_holdings(holdings: Mapping[str, Mapping[str, tuple[str, int]]],
                          configured: set[str]) -> str | None:
    """Why a start must not go on: the keeper holds something (`Journal.holdings`: Curie's
    takeovers not unwound) in a protocol the config no longer has — nothing would watch it,
    unwind it or tell its liquidation (a by-hand trial removed Curie with a position held:
    the only word was a resolved alert's text). None: nothing held outside the config."""
    held = {p: markets for p, markets in holdings.items()
            if p not in configured and markets}
    if not held:
        return None
    said = []
    for protocol, markets in sorted(held.items()):
        block = max(b for _, b in markets.values())
        what = ", ".join(text for text, _ in markets.values())
        said.append(f"`{protocol}`: {what} (read at block {block})")
    names = ", ".join(f"`{p}`" for p in sorted(held))
    return (f"the keeper holds positions in protocols this config does not have "
            f"({'; '.join(said)}): nothing would watch them, unwind them or tell their "
            f"liquidation. Put {names} back under `protocols` as before: keeperd unwinds what "
            "the keeper holds there; remove it once `keeperd status`'s \"keeper holds\" line "
            "no longer names it (closed by hand: start keeperd with it once, so that it "
            "reads them closed)")

