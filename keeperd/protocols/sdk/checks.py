"""What a plug-in's `check_config` may use: checks of its config entry against the chain."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keeperd.chain.rpc import RpcError, RpcPool, RpcUnavailable
from keeperd.config import ConfigIssue


async def contract_issues(pool: RpcPool, proto: Any, pi: int, fields: Sequence[str]
                          ) -> list[ConfigIssue]:
    """Each address field of a protocol entry holds a contract on its chain (a plug-in's
    `check_config` names its fields)."""
    issues: list[ConfigIssue] = []
    for field in fields:
        address = getattr(proto, field, None)
        if address is None:
            continue
        try:
            code = await pool.request("eth_getCode", [address, "latest"])
        except (RpcError, RpcUnavailable) as exc:
            issues.append(ConfigIssue(f"protocols[{pi}].{field}", f"could not read code: {exc}",
                                      ""))
            continue
        if code in (None, "0x", "0x0"):
            issues.append(ConfigIssue(
                f"protocols[{pi}].{field}", f"{address} holds no contract on chain "
                f"{proto.chain!r}", "check the address and that it belongs to this chain"))
    return issues
