"""`keeperd wave`: keeperd's wave executor on a chain, and the keeper's address delegated to it.

    keeperd wave status   --config F   where the executor is, whether it is there, what the
                                        keeper's address runs (every endpoint asked)
    keeperd wave deploy   --config F   deploy KeeperWave through the deterministic deployment
                                        proxy (anyone may; the address is the same for all)
    keeperd wave delegate --config F   delegate the keeper's address to it (EIP-7702)
    keeperd wave revoke   --config F   delegate it to nothing: an ordinary address again

Changing what the keeper's address runs is an operator's act, never the daemon's: these
commands sign with the keeper's key (a local key: a remote signer's own tooling signs an
authorization, which keeperd does not ask of it) and take the state directory's lock first,
so that they never send beside a running keeperd (its nonces, and a transaction it did not
send would read as another sender on its key). Nothing is signed while the key has
transactions waiting in the node's pool.

What is checked before anything is signed: every endpoint is of the configured chain (the
pool refuses others); `delegate` needs every endpoint that answers to find KeeperWave's
code at its derived address (one that does not is a lying or lagging endpoint, and the
command stops: delegating to an address without code leaves an address whose calls do
nothing), and refuses a key delegated to other code (whoever put it there may be sweeping
the address: move the funds to a new key). After the transaction, its receipt is awaited
and the state read again from every endpoint.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from keeperd.chain.rpc import Endpoint, RpcError, RpcPool, RpcUnavailable
from keeperd.config import ChainConfig, KeeperConfig
from keeperd.execution.delegation import KeeperCode, read_code
from keeperd.execution.wave_code import (
    DEPLOYER,
    KNOWN_WAVE_ADDRESSES,
    WAVE_ADDRESS,
    deployment_input,
    is_wave_code,
)
from keeperd.keys import KeeperKey

NO_DELEGATE = "0x0000000000000000000000000000000000000000"
DELEGATION_GAS = 100_000  # a type-4 transaction with one authorization: ~37,000-46,000 used
AFTER_WAIT_S = 15.0  # how long the endpoints may take to show a mined transaction's effect
GWEI = 10**9


class WaveSetupError(Exception):
    """The command cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class EndpointView:
    endpoint: str  # the endpoint's safe URL
    executor: str  # "KeeperWave", "none", "other code", or "no answer: ..."
    keeper: str  # "ordinary", "delegated to KeeperWave", "delegated to 0x...", "contract code",
    # or "no answer: ..."


@dataclass(frozen=True)
class WaveState:
    chain: str
    keeper: str
    views: list[EndpointView] = field(default_factory=list)

    @property
    def answered(self) -> list[EndpointView]:
        return [v for v in self.views if not v.executor.startswith("no answer")]

    @property
    def deployed(self) -> bool:
        """Every endpoint that answered finds KeeperWave's code, and one at least did."""
        return bool(self.answered) and all(v.executor == "KeeperWave" for v in self.answered)

    def keeper_codes(self) -> set[str]:
        return {v.keeper for v in self.views if not v.keeper.startswith("no answer")}

    def render(self) -> str:
        lines = [f"chain {self.chain}: KeeperWave at {WAVE_ADDRESS}, keeper {self.keeper}"]
        for v in self.views:
            lines.append(f"  {v.endpoint}: executor {v.executor}; keeper's address {v.keeper}")
        codes = self.keeper_codes()
        foreign = sorted(c for c in codes if c.startswith("delegated to 0x")
                         or c == "contract code")
        if not self.answered:
            # (a wave deploy is not what a dead or wrong endpoint needs: a trial was told so)
            lines.append("  no endpoint answered: check chains[].rpc_urls (the log says why)")
        elif foreign:
            lines.append(f"  the keeper's address runs code keeperd does not know "
                         f"({' / '.join(foreign)}): keeperd signs nothing from it; "
                         "`keeperd wave revoke` if that delegation is not yours, else name "
                         "the delegate in keeper.allowed_delegates")
        elif len(codes) > 1:
            lines.append(f"  the endpoints disagree on the keeper's address "
                         f"({' / '.join(sorted(codes))}): one of them lags or lies; check "
                         "them before delegating or revoking")
        elif self.deployed and codes == {"delegated to KeeperWave"}:
            lines.append("  ready: the keeper's address runs KeeperWave")
        elif not self.deployed:
            lines.append("  not deployed on every endpoint: `keeperd wave deploy`")
        elif codes <= {"ordinary", PAST}:
            lines.append(f"  deployed; the keeper's address is {' / '.join(sorted(codes))}: "
                         "`keeperd wave delegate`")
        return "\n".join(lines)


PAST = "delegated to an earlier KeeperWave"


def _describe_keeper(code: KeeperCode) -> str:
    if code.plain:
        return "ordinary"
    if code.delegate is not None:
        if code.delegate == WAVE_ADDRESS:
            return "delegated to KeeperWave"
        if code.delegate in KNOWN_WAVE_ADDRESSES:
            return PAST
        return f"delegated to {code.delegate}"
    return "contract code"


async def read_state(pool: RpcPool, chain: str, keeper: str) -> WaveState:
    """Each endpoint asked, at once, for the code at WAVE_ADDRESS and at the keeper's."""

    async def view(ep: Endpoint) -> EndpointView:
        url = ep.safe_url
        try:
            executor, own = await asyncio.gather(
                pool.call_endpoint(ep, "eth_getCode", [WAVE_ADDRESS, "latest"]),
                pool.call_endpoint(ep, "eth_getCode", [keeper, "latest"]))
        except (RpcError, RpcUnavailable) as exc:
            why = f"no answer: {exc}"[:200]
            return EndpointView(url, why, why)
        what = ("KeeperWave" if is_wave_code(executor)
                else "none" if executor in ("0x", "0x0", "") else "other code")
        try:
            mine = _describe_keeper(read_code(own))
        except ValueError as exc:
            mine = f"no answer: {exc}"[:200]
        return EndpointView(url, what, mine)

    views = await asyncio.gather(*(view(ep) for ep in pool.voters))
    return WaveState(chain, keeper, list(views))


@dataclass(frozen=True)
class Sent:
    tx_hash: str
    block: int
    status: int
    gas_used: int


class WaveSetup:
    """The three commands' transactions on one chain, signed with the keeper's local key."""

    def __init__(self, pool: RpcPool, chain: ChainConfig, keeper: KeeperConfig, key: KeeperKey,
                 *, wait_s: float = 180.0, say: Callable[[str], None] = print) -> None:
        self.pool, self.chain, self.keeper, self.key = pool, chain, keeper, key
        self.wait_s = wait_s
        self.say = say

    async def deploy(self) -> WaveState:
        state = await read_state(self.pool, self.chain.name, self.key.address)
        if state.deployed:
            self.say(f"KeeperWave is already at {WAVE_ADDRESS} on {self.chain.name}: nothing "
                     "to do")
            return state
        if any(v.executor == "other code" for v in state.answered):
            # (CREATE2 cannot put other code there: an endpoint that says so lies)
            raise WaveSetupError(
                f"an endpoint says {WAVE_ADDRESS} holds other code than KeeperWave, which "
                "CREATE2 makes impossible: it lies, or serves another chain. Check the "
                "endpoints: " + "; ".join(f"{v.endpoint}: {v.executor}" for v in state.views))
        proxy = await self._codes(DEPLOYER)
        if not proxy or any(code in ("0x", "0x0", "") for code in proxy.values()):
            raise WaveSetupError(
                f"the deterministic deployment proxy ({DEPLOYER}) is not on {self.chain.name} "
                "for every endpoint (" + "; ".join(f"{url}: {'code' if len(c) > 3 else 'none'}"
                                                   for url, c in proxy.items())
                + "): KeeperWave's address is derived from it; a chain without it needs the "
                "proxy deployed first (its published presigned transaction)")
        data = deployment_input()
        gas = int(await self.pool.request("eth_estimateGas", [{
            "from": self.key.address, "to": DEPLOYER, "data": "0x" + data.hex()}]), 16)
        sent = await self._send({"to": DEPLOYER, "data": data, "gas": gas * 5 // 4},
                                "deployment")
        return await self._after(sent, want_deployed=True)

    async def delegate(self) -> WaveState:
        state = await read_state(self.pool, self.chain.name, self.key.address)
        if not state.answered:
            raise WaveSetupError(f"no endpoint of {self.chain.name} answered: " + "; ".join(
                f"{v.endpoint}: {v.executor}" for v in state.views))
        if not state.deployed:
            seen = "; ".join(f"{v.endpoint}: {v.executor}" for v in state.views)
            if any(v.executor == "KeeperWave" for v in state.views):
                raise WaveSetupError(
                    f"the endpoints of {self.chain.name} disagree on the code at "
                    f"{WAVE_ADDRESS} ({seen}): one lies, lags or serves another chain; "
                    "nothing is signed until every endpoint that answers finds KeeperWave "
                    "there (check the endpoints, or wait for the lagging one)")
            raise WaveSetupError(
                f"KeeperWave is not at {WAVE_ADDRESS} on {self.chain.name} ({seen}): "
                "`keeperd wave deploy` first (a delegation to an address without its code "
                "would leave the keeper's calls doing nothing)")
        codes = state.keeper_codes()
        if codes == {"delegated to KeeperWave"}:
            self.say(f"{self.key.address} already runs KeeperWave on {self.chain.name}: "
                     "nothing to do")
            return state
        if codes - {"ordinary", "delegated to KeeperWave", PAST}:
            raise WaveSetupError(
                f"the keeper's address {self.key.address} runs other code ("
                + ", ".join(sorted(codes)) + "): if you did not delegate it, the key is "
                "compromised: move the funds to a new key. If you did, `keeperd wave revoke` "
                "first, then delegate")
        return await self._set_code(WAVE_ADDRESS, "delegation")

    async def revoke(self) -> WaveState:
        state = await read_state(self.pool, self.chain.name, self.key.address)
        if state.keeper_codes() == {"ordinary"}:
            self.say(f"{self.key.address} is an ordinary address on {self.chain.name}: "
                     "nothing to revoke")
            return state
        return await self._set_code(NO_DELEGATE, "revocation")

    async def _set_code(self, delegate: str, what: str) -> WaveState:
        """A type-4 transaction from the keeper to itself carrying the key's own
        authorization (the sender's: its nonce is the transaction's plus one)."""
        nonce = await self._nonce()
        authorization = self.key.sign_authorization(
            chain_id=self.chain.chain_id, address=delegate, nonce=nonce + 1)
        sent = await self._send({"type": 4, "to": self.key.address, "data": b"",
                                 "gas": await self._delegation_gas(authorization),
                                 "authorizationList": [authorization]}, what, nonce=nonce)
        return await self._after(sent, want_keeper=("ordinary" if delegate == NO_DELEGATE
                                                    else "delegated to KeeperWave"))

    async def _delegation_gas(self, authorization: Any) -> int:
        """The type-4 transaction's limit: the node's estimate with its authorization, and a
        margin (on Arbitrum the limit also pays for posting the transaction to L1, which no
        fixed figure covers); DELEGATION_GAS when the node cannot estimate one."""
        auth = {"chainId": hex(authorization.chain_id),
                "address": "0x" + bytes(authorization.address).hex(),
                "nonce": hex(authorization.nonce), "yParity": hex(authorization.y_parity),
                "r": hex(authorization.r), "s": hex(authorization.s)}
        try:
            estimate = int(await self.pool.request("eth_estimateGas", [{
                "from": self.key.address, "to": self.key.address, "data": "0x",
                "authorizationList": [auth]}]), 16)
        except (RpcError, RpcUnavailable, ValueError, TypeError):
            return DELEGATION_GAS
        return max(DELEGATION_GAS, estimate * 3 // 2)

    async def _codes(self, address: str) -> dict[str, str]:
        """The code at `address` as each endpoint that answers says it."""
        async def ask(ep: Endpoint) -> tuple[str, str | None]:
            try:
                return ep.safe_url, str(await self.pool.call_endpoint(
                    ep, "eth_getCode", [address, "latest"]))
            except (RpcError, RpcUnavailable):
                return ep.safe_url, None
        answers = await asyncio.gather(*(ask(ep) for ep in self.pool.voters))
        return {url: code for url, code in answers if code is not None}

    async def _nonce(self) -> int:
        """The key's next nonce, as every endpoint that answers says it; refused while they
        disagree (one lagging or lying would leave a transaction under a nonce that waits
        for others) or while transactions from it wait in the pool."""
        async def ask(ep: Endpoint) -> tuple[int, int] | None:
            try:
                latest, pending = await asyncio.gather(
                    self.pool.call_endpoint(ep, "eth_getTransactionCount",
                                            [self.key.address, "latest"]),
                    self.pool.call_endpoint(ep, "eth_getTransactionCount",
                                            [self.key.address, "pending"]))
                return int(latest, 16), int(pending, 16)
            except (RpcError, RpcUnavailable, ValueError, TypeError):
                return None
        said = [a for a in await asyncio.gather(*(ask(ep) for ep in self.pool.voters))
                if a is not None]
        if not said:
            raise WaveSetupError(f"no endpoint of {self.chain.name} said the key's nonce")
        if len({latest for latest, _ in said}) > 1:
            raise WaveSetupError(
                f"the endpoints disagree on {self.key.address}'s nonce "
                f"({sorted({latest for latest, _ in said})}): one lags or lies; try again "
                "when they agree")
        latest = said[0][0]
        pending = max(p for _, p in said)
        if pending != latest:
            raise WaveSetupError(
                f"transactions from {self.key.address} are still waiting in the node's pool "
                f"(nonce {latest} mined, {pending} pending): let them settle (start keeperd "
                "and let it finish them) before this command")
        return latest

    async def _send(self, fields: dict[str, object], what: str, *, nonce: int | None = None
                    ) -> Sent:
        if nonce is None:
            nonce = await self._nonce()
        block = await self.pool.request("eth_getBlockByNumber", ["latest", False])
        base_fee = int(block.get("baseFeePerGas", "0x0"), 16)
        tip = int(self.keeper.priority_fee_gwei * GWEI)
        cap = int(self.keeper.max_fee_gwei * GWEI)
        max_fee = min(int(base_fee * self.keeper.base_fee_headroom) + tip, cap)
        if cap <= base_fee:
            raise WaveSetupError(
                f"the base fee is {base_fee / GWEI:.3f} gwei, above keeper.max_fee_gwei "
                f"({self.keeper.max_fee_gwei}): try again when it falls, or raise the cap")
        tx = {"chainId": self.chain.chain_id, "nonce": nonce, "value": 0,
              "maxFeePerGas": max_fee, "maxPriorityFeePerGas": min(tip, max_fee), **fields}
        if "type" not in tx:
            tx["type"] = 2
        raw = self.key.sign_transaction(tx)
        tx_hash = await self.pool.request("eth_sendRawTransaction", ["0x" + raw.hex()])
        self.say(f"{what} sent: {tx_hash} (nonce {nonce}, gas limit {tx['gas']}, max fee "
                 f"{max_fee / GWEI:.3f} gwei); waiting for its receipt")
        deadline = time.monotonic() + self.wait_s
        while True:
            receipt = await self.pool.request("eth_getTransactionReceipt", [tx_hash])
            if receipt:
                try:
                    return Sent(tx_hash, int(receipt["blockNumber"], 16),
                                int(receipt["status"], 16), int(receipt["gasUsed"], 16))
                except (KeyError, TypeError, ValueError):
                    raise WaveSetupError(f"{what} {tx_hash}: its receipt does not read "
                                         f"({str(receipt)[:200]}); `keeperd wave status` "
                                         "says what the chain holds") from None
            if time.monotonic() > deadline:
                raise WaveSetupError(
                    f"{what} {tx_hash} not mined after {self.wait_s:.0f} s: it may still be; "
                    "`keeperd wave status` says what the chain holds")
            await asyncio.sleep(1.0)

    async def _after(self, sent: Sent, *, want_deployed: bool = False,
                     want_keeper: str | None = None) -> WaveState:
        if sent.status != 1:
            raise WaveSetupError(f"{sent.tx_hash} reverted in block {sent.block} "
                                 f"(gas used {sent.gas_used})")
        self.say(f"mined in block {sent.block} (gas used {sent.gas_used})")
        # (an endpoint a block behind has not seen it yet: asked again for a while)
        deadline = time.monotonic() + AFTER_WAIT_S
        while True:
            state = await read_state(self.pool, self.chain.name, self.key.address)
            done = ((not want_deployed or state.deployed) and
                    (want_keeper is None or state.keeper_codes() == {want_keeper}))
            if done or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        if want_deployed and not state.deployed:
            raise WaveSetupError("mined, yet not every endpoint finds KeeperWave's code:\n"
                                 + state.render())
        if want_keeper is not None and state.keeper_codes() != {want_keeper}:
            raise WaveSetupError(f"mined, yet not every endpoint says {want_keeper}:\n"
                                 + state.render())
        return state
