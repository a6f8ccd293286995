"""What the keeper may sign: the one place every transaction passes before any signature,
local or remote.

No token may leave the keeper or its contract except by a liquidation the planner made, at a
fee within the operator's cap. Whatever asks for a signature — a bug, a forged journal row, a
lying endpoint's answer turned into calldata — gets one only for a call keeperd makes:

- a function a liquidator declared (`Allowed`) on the contract it declared it for: the
  pool's `liquidationCall`, the FlashLiquidator's entry point, Morpho's `liquidate`, ...;
- an ERC-20 `approve` whose spender is one of the declared spenders (the token itself does
  not matter: an approval moves nothing, the spender is who could);
- the keeper's cancel: nothing, to itself;
- a wave (the keeper's address delegated to KeeperWave: execution/wave_code.py): `execute`
  on the keeper's own address, each of whose calls is one of the above but the cancel (a call
  the policy would sign alone), none to the keeper's own address;

on the configured chain, with no value, at a max fee per gas within `max_fee_gwei`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from eth_abi import decode
from eth_utils import keccak, to_checksum_address

from keeperd.execution.signer import Signer, SignerError, UnsignedTx
from keeperd.execution.wave_code import EXECUTE
from keeperd.protocols.sdk.contract import APPROVE, Allowed

log = structlog.get_logger(__name__)



MAX_CALL_GAS = 2**24  # a wave's call: no more than a transaction may ask (EIP-7825)


def selector(function: str) -> bytes:
    """The 4-byte selector of a function signature, `name(type,...)`."""
    return keccak(text=function)[:4]


class PolicyRefused(SignerError):
    """A transaction outside the signing policy: not signed, and why."""


@dataclass
class SignerPolicy:
    """The calls the keeper may sign on one chain. Starts with only the cancel allowed;
    each liquidator's declared calls are added (`allow`) before it sends anything."""

    chain_id: int
    keeper: str
    max_fee_per_gas_wei: int
    # Whether the keeper's address runs KeeperWave now (the transaction manager's code read):
    # a wave is signed only then (under other code `execute` may mean anything).
    waves_allowed: Callable[[], bool] = lambda: False
    _calls: dict[tuple[str, bytes], str] = field(default_factory=dict)
    _spenders: dict[str, str] = field(default_factory=dict)

    def allow(self, *rules: Allowed) -> None:
        for rule in rules:
            if rule.spender is not None:
                self._spenders[rule.spender.lower()] = rule.purpose
            else:
                self._calls[(rule.to.lower(), selector(rule.function))] = rule.purpose

    def check(self, tx: UnsignedTx) -> str:
        """What `tx` is for, or PolicyRefused naming what broke the policy."""
        if tx.chain_id != self.chain_id:
            raise PolicyRefused(f"chain id {tx.chain_id} is not the configured {self.chain_id}")
        if tx.value != 0:
            raise PolicyRefused(f"it sends {tx.value} wei of value; the keeper never does")
        if tx.max_fee > self.max_fee_per_gas_wei or tx.tip > tx.max_fee:
            raise PolicyRefused(f"max fee {tx.max_fee} wei/gas (tip {tx.tip}) is over the "
                                f"cap keeper.max_fee_gwei ({self.max_fee_per_gas_wei} wei)")
        if tx.to.lower() == self.keeper.lower():
            if not tx.data:
                return "cancel"
            if tx.data[:4] != EXECUTE:
                raise PolicyRefused("a call to the keeper's own address with data that is "
                                    "no wave")
            if not self.waves_allowed():
                raise PolicyRefused("a wave while the keeper's address does not run KeeperWave")
            try:
                (calls,) = decode(["(address,uint256,bytes)[]"], tx.data[4:])
            except Exception:
                raise PolicyRefused("a wave whose calls do not decode") from None
            if not calls:
                raise PolicyRefused("a wave of no calls")
            if any(gas > MAX_CALL_GAS for _, gas, _ in calls):
                raise PolicyRefused(f"a wave's call asks more than {MAX_CALL_GAS} gas")
            purposes = [self._call_purpose(str(target), bytes(data)) for target, _, data in calls]
            return f"wave of {len(calls)}: " + ", ".join(sorted(set(purposes)))
        return self._call_purpose(tx.to, tx.data)

    def _call_purpose(self, target: str, data: bytes) -> str:
        to = target.lower()
        if to == self.keeper.lower():
            raise PolicyRefused("a call to the keeper's own address inside a wave")
        purpose = self._calls.get((to, data[:4]))
        if purpose is not None:
            return purpose
        if data[:4] == selector(APPROVE) and len(data) == 68:
            spender = "0x" + data[16:36].hex()
            if data[4:16] == bytes(12) and spender in self._spenders:
                return self._spenders[spender]
            raise PolicyRefused(f"an approval of {to_checksum_address(target)} to "
                                f"{to_checksum_address(spender)}, which is no spender "
                                "keeperd approves")
        raise PolicyRefused(f"a call of 0x{data[:4].hex()} on {to_checksum_address(target)}"
                            ", which is no call keeperd makes")


class PolicedSigner:
    """A signer that asks the policy first: the only signer the transaction manager has."""

    def __init__(self, signer: Signer, policy: SignerPolicy) -> None:
        self.signer = signer
        self.policy = policy

    @property
    def address(self) -> str:
        return self.signer.address

    async def sign(self, tx: UnsignedTx) -> bytes:
        try:
            self.policy.check(tx)
        except PolicyRefused as exc:
            log.error("signer.refused", to=tx.to, selector="0x" + tx.data[:4].hex(),
                      nonce=tx.nonce, reason=str(exc),
                      meaning="keeperd was asked to sign a transaction outside its signing "
                              "policy: not signed; a bug or a forged input — investigate")
            raise
        return await self.signer.sign(tx)
