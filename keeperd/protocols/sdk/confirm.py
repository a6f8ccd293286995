"""An address the keeper will approve or pay, confirmed before liquidate mode acts on it.

The Aave pool behind a PoolAddressesProvider, Curie's Vault behind its ClearingHouse: each
gets the keeper's approvals and, through its calls, its tokens. Such an address may not rest on
one RPC answer (a compromised provider's answer would be approved the keeper's balance). Pinned
in the config, it is taken as is; otherwise every endpoint is asked, each apart, and all that
answer must agree — and with one answering, only a node on this machine is believed.

Values read once at start that price the keeper's money (a token's decimals and symbol) are
asked of every endpoint too (`confirm_reads`): all that answer must say what was read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import structlog
from eth_utils import to_checksum_address

from keeperd.chain.calls import ContractCall
from keeperd.chain.rpc import RpcPool
from keeperd.config import is_loopback
from keeperd.protocols.sdk import approvals
from keeperd.protocols.sdk.contract import StartRefused

log = structlog.get_logger(__name__)


async def confirm_address(pool: RpcPool, source: str, getter: str, *, expected: str,
                          where: str, what: str, pin: str) -> None:
    """Refuse the start (`StartRefused`, naming `where` and the fix) unless every endpoint
    that answers `source.getter()` names `expected`, and either two did or the one that did
    is on this machine. `what` says what is at stake; `pin` is the config field that pins it."""
    call = ContractCall(source, getter, returns=["address"])
    answers: dict[str, str] = {}
    for ep in pool.voters:
        try:
            raw = await pool.call_endpoint(ep, "eth_call", [
                {"to": source, "data": "0x" + call.data.hex()}, "latest"])
            answers[ep.safe_url] = to_checksum_address("0x" + str(raw)[-40:])
        except Exception as exc:  # an endpoint down is not a vote
            log.warning("keeper.address_check_unanswered", endpoint=ep.safe_url,
                        getter=getter, error=str(exc)[:200])
    if len(set(answers.values()) | {to_checksum_address(expected)}) > 1:
        raise StartRefused(
            f"{where}: the RPC endpoints disagree on {what} behind {source} ({answers}); one "
            f"of them lies or is broken. Pin `{pin}` in the config, after checking it")
    local = [u for u in answers if is_loopback(urlsplit(u).hostname or "")]
    if len(answers) < 2 and not local:
        raise StartRefused(
            f"{where}: liquidate mode would approve the keeper's tokens to {what} one remote "
            f"RPC endpoint named ({next(iter(answers.values()), '?')}); pin `{pin}` in the "
            "config, or configure a second independent endpoint to agree on it")
    log.info("keeper.address_confirmed", what=what, address=expected, endpoints=len(answers),
             local=bool(local))


async def confirm_reads(pool: RpcPool, calls: Sequence[ContractCall], read: Sequence[Any], *,
                        where: str, names: Sequence[str], fix: str) -> None:
    """Refuse the start (`StartRefused`, naming `where`, what each endpoint said and `fix`)
    unless every voter endpoint that answers `calls` (plain eth_calls, each endpoint apart)
    says `read`, the values keeperd read and will use; `names` names each call's value. An
    endpoint that does not answer a call is no vote on it; with one endpoint there is
    nothing to compare (as before)."""
    said = await approvals.by_endpoint_named(pool, calls)
    differ = [i for i, value in enumerate(read)
              if any(answers[i] is not None and answers[i] != value for _, answers in said)]
    if differ:
        told = "; ".join(f"{names[i]}: read {read[i]!r}, " + ", ".join(
            f"rpc_urls[{name}] said {answers[i]!r}" for name, answers in said) for i in differ)
        raise StartRefused(f"{where}: the RPC endpoints disagree ({told}); one of them lies "
                           f"or is broken. {fix}")
    if len(pool.voters) > 1 and len(said) < len(pool.voters):
        log.warning("keeper.reads_check_unanswered", where=where, answered=len(said),
                    endpoints=len(pool.voters),
                    meaning="an endpoint that did not answer is no vote: the values read "
                            "rest on those that did")
