"""The Pool implementations keeperd's devnets build, by code fingerprint
(`keeperd/protocols/aave_v3/identity.py`): `python -m keeperd.devnet.implementations` starts
each Aave devnet from its cached state, reads its pool proxy's implementation and writes
`keeperd/protocols/aave_v3/implementations.json`. A test checks the file against what the
devnets build, so a change of the pinned packages or compiler that changes the code fails
until the table is made anew (and the new code is then what the devnet tests ran against).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address

from keeperd.chain.code import IMPLEMENTATION_SLOT, linked_fingerprint, missing_codes
from keeperd.devnet.handle import Devnet

TABLE = (Path(__file__).resolve().parent.parent / "protocols" / "aave_v3"
         / "implementations.json")
VERSIONS = ("v3.6", "v3.0")


def built_implementation(devnet: Devnet) -> dict[str, Any]:
    """The devnet pool's implementation: address, fingerprint, revision and release."""
    aave = devnet.manifest["aave_v3"]
    slot = devnet.client.call("eth_getStorageAt", aave["pool"], IMPLEMENTATION_SLOT, "latest")
    address = to_checksum_address("0x" + str(slot)[-40:])

    codes: dict[str, bytes] = {}
    while wanted := missing_codes(address, codes):  # (the pool's code, then its libraries')
        codes.update((a, bytes.fromhex(str(devnet.client.call("eth_getCode", a, "latest"))[2:]))
                     for a in wanted)
    return {"release": aave["version"], "revision": int(aave["revision"]),
            "fingerprint": linked_fingerprint(address, codes), "address_on_devnet": address}


def main() -> None:
    found = []
    for version in VERSIONS:
        with Devnet(accounts=300, aave_version=version) as devnet:
            entry = built_implementation(devnet)
            found.append({k: v for k, v in entry.items() if k != "address_on_devnet"})
            print(f"{version}: revision {entry['revision']}, fingerprint {entry['fingerprint']}")
    TABLE.write_text(json.dumps({
        "about": "Aave Pool implementations keeperd's devnets build from the pinned packages "
                 "(keeperd/devnet/implementations.py writes this file; a test checks it)",
        "implementations": found}, indent=2) + "\n")
    print(f"wrote {TABLE}")


if __name__ == "__main__":
    main()
