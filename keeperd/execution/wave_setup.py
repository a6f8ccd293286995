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

from keeperd.chain.rpc import Endpoint, RpcError, RpcPool, RpcUnavailable
from keeperd.config import ChainConfig, KeeperConfig
from keeperd.execution.delegation import KeeperCode, read_code
from keeperd.execution.wave_code import (
    DEPLOYER,
    WAVE_ADDRESS,
    deployment_input,
    is_wave_code,
)
from keeperd.keys import KeeperKey

NO_DELEGATE = "0x0000000000000000000000000000000000000000"
DELEGATION_GAS = 100_000  # a type-4 transaction with one authorization: ~46,000 used
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
        if self.deployed and codes == {"delegated to KeeperWave"}:
            lines.append("  ready: the keeper's address runs KeeperWave")
        elif not self.deployed:
            lines.append("  not deployed on every endpoint: `keeperd wave deploy`")
        elif codes == {"ordinary"}:
            lines.append("  deployed; the keeper's address is ordinary: `keeperd wave delegate`")
        return "\n".join(lines)


def _describe_keeper(code: KeeperCode) -> str:
    if code.plain:
        return "ordinary"
    if code.delegate is not None:
        return ("delegated to KeeperWave" if code.delegate == WAVE_ADDRESS
                else f"delegated to {code.delegate}")
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
        data = deployment_input()
        gas = int(await self.pool.request("eth_estimateGas", [{
            "from": self.key.address, "to": DEPLOYER, "data": "0x" + data.hex()}]), 16)
        sent = await self._send({"to": DEPLOYER, "data": data, "gas": gas * 5 // 4},
                                "deployment")
        return await self._after(sent, want_deployed=True)

    async def delegate(self) -> WaveState:
        state = await read_state(self.pool, self.chain.name, self.key.address)
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
        if codes - {"ordinary", "delegated to KeeperWave"}:
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
                                 "gas": DELEGATION_GAS,
                                 "authorizationList": [authorization]}, what, nonce=nonce)
        return await self._after(sent, want_keeper=("ordinary" if delegate == NO_DELEGATE
                                                    else "delegated to KeeperWave"))

    async def _nonce(self) -> int:
        """The key's next nonce, refused while transactions from it wait in the pool."""
        latest, pending = await asyncio.gather(
            self.pool.request("eth_getTransactionCount", [self.key.address, "latest"]),
            self.pool.request("eth_getTransactionCount", [self.key.address, "pending"]))
        if int(latest, 16) != int(pending, 16):
            raise WaveSetupError(
                f"transactions from {self.key.address} are still waiting in the node's pool "
                f"(nonce {int(latest, 16)} mined, {int(pending, 16)} pending): let them "
                "settle (start keeperd and let it finish them) before this command")
        return int(latest, 16)

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
                return Sent(tx_hash, int(receipt["blockNumber"], 16),
                            int(receipt["status"], 16), int(receipt["gasUsed"], 16))
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
        state = await read_state(self.pool, self.chain.name, self.key.address)
        if want_deployed and not state.deployed:
            raise WaveSetupError("mined, yet not every endpoint finds KeeperWave's code:\n"
                                 + state.render())
        if want_keeper is not None and state.keeper_codes() != {want_keeper}:
            raise WaveSetupError(f"mined, yet not every endpoint says {want_keeper}:\n"
                                 + state.render())
        return state
