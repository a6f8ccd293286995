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

import structlog
from eth_account.typed_transactions import TypedTransaction
from eth_utils import to_checksum_address
from hexbytes import HexBytes

from keeperd.execution import journal as J
from keeperd.execution.txmanager import TxManager

log = structlog.get_logger(__name__)


async def resume_journal(journal: J.Journal, tx: TxManager, protocol: str, head: int) -> int:
    """Resume `protocol`'s entries; return how many signed transactions are tracked again."""
    for entry in await journal.by_status(J.PLANNED):
        if entry.protocol == protocol and await journal.forget_unsigned(entry.key):
            log.info("journal.unsigned_forgotten", opportunity=entry.key,
                     meaning="journaled, never signed: it may be planned again")
    resumed = 0
    for entry in await journal.by_status(J.PENDING):
        if entry.protocol != protocol:
            continue
        if await track_again(journal, tx, entry, head):
            resumed += 1
            log.info("journal.resumed", opportunity=entry.key, nonce=entry.nonce)
        else:
            await journal.set_status(entry.key, J.DROPPED, detail="no transaction signed")
    return resumed


async def track_again(journal: J.Journal, tx: TxManager, entry: J.JournalEntry,
                      head: int) -> bool:
    """Hand an opportunity's journaled transactions back to the transaction manager (after a
    restart, or when a reorg took its block away) and send its latest bytes again; False when
    nothing was ever signed for it."""
    records = await journal.txs(entry.key)
    if not records:
        return False
    signed = TypedTransaction.from_bytes(HexBytes(records[0].raw)).as_dict()
    tx.track(entry.key, records, to_checksum_address(signed["to"]), bytes(signed["data"]),
             entry.max_fee_wei, head)
    await tx.rebroadcast(entry.key)
    return True
