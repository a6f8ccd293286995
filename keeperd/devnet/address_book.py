"""The pinned address books behind `config/mainnet/` and Aave's published Pool implementations.

Read from node_modules with node (the packages are JavaScript; `make setup` installs them at the
versions package-lock.json pins):

- `@aave-dao/aave-address-book`: every Aave V3 market (pool, its implementation, oracle, data
  provider, chain id) and Chainlink's L2 sequencer uptime feeds. Testnets are told apart by
  the `testnet` flag of viem's chain table (viem is the book's own peer dependency, pinned in
  the same lock), so a new testnet in the book needs no list kept here.
- `@morpho-org/morpho-ts`: Morpho Blue's address and deployment block per chain, the tokens and
  the AdaptiveCurveIrm; `@morpho-org/morpho-test`: Morpho's own MarketParams of the main
  Ethereum markets.
- `@uniswap/sdk-core`: the Uniswap V3 factory per chain (the FlashLiquidator's swaps).

`python -m keeperd.devnet.address_book` rewrites `keeperd/protocols/aave_v3/published.json`
(what the daemon ships: it has no node at run time); a test checks the file against this
module's output, and the mainnet profiles against both.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address

from keeperd.devnet import paths

AAVE_BOOK = "@aave-dao/aave-address-book"
MORPHO_ADDRESSES = "@morpho-org/morpho-ts"
MORPHO_MARKETS = "@morpho-org/morpho-test"
UNISWAP = "@uniswap/sdk-core"
PUBLISHED = (Path(__file__).resolve().parent.parent / "protocols" / "aave_v3"
             / "published.json")
# The book's names for what published.json keeps of each market.
_AAVE_FIELDS = {"pool_addresses_provider": "POOL_ADDRESSES_PROVIDER", "pool": "POOL",
                "pool_impl": "POOL_IMPL", "oracle": "ORACLE",
                "data_provider": "AAVE_PROTOCOL_DATA_PROVIDER"}

_AAVE_JS = """
const book = require(process.argv[1]);
const chains = Object.values(require('viem/chains'));
const out = [];
for (const [name, lib] of Object.entries(book)) {
  if (!/^AaveV3/.test(name) || lib === null || typeof lib !== 'object') continue;
  if (!('POOL' in lib)) continue;
  const known = chains.filter((c) => c.id === lib.CHAIN_ID);
  out.push({name, lib: Object.fromEntries(Object.entries(lib).filter(([, v]) =>
              typeof v === 'string' || typeof v === 'number')),
            testnet: known.length ? known.some((c) => c.testnet === true) : null});
}
process.stdout.write(JSON.stringify(out));
"""

_LIBRARY_JS = """
const lib = require(process.argv[1])[process.argv[2]];
if (lib === undefined) { process.stderr.write('no library ' + process.argv[2]); process.exit(3); }
process.stdout.write(JSON.stringify(Object.fromEntries(Object.entries(lib).filter(([, v]) =>
  typeof v === 'string' || typeof v === 'number'))));
"""

_MORPHO_JS = """
const ts = require(process.argv[1]);
const {markets} = require(process.argv[2]);
const id = process.argv[3];
const plain = (o) => JSON.parse(JSON.stringify(o, (k, v) =>
  typeof v === 'bigint' ? v.toString() : v));
const fixtures = {};
for (const [name, m] of Object.entries(markets[id] || {})) {
  fixtures[name] = plain({loanToken: m.loanToken, collateralToken: m.collateralToken,
                          oracle: m.oracle, irm: m.irm, lltv: m.lltv, id: m.id});
}
process.stdout.write(JSON.stringify({addresses: plain(ts.addresses[id] || {}),
  deployments: plain(ts.deployments[id] || {}), markets: fixtures}));
"""

_UNISWAP_JS = """
const map = require(process.argv[1]).CHAIN_TO_ADDRESSES_MAP;
process.stdout.write(JSON.stringify(Object.fromEntries(Object.entries(map).map(([id, a]) =>
  [id, a.v3CoreFactoryAddress]))));
"""


class AddressBookError(RuntimeError):
    """A pinned address book could not be read or says something keeperd cannot use."""


def _node(script: str, *args: str) -> Any:
    """Run `script` with node from the checkout (packages resolve from its node_modules) and
    parse what it prints as JSON."""
    node = shutil.which("node")
    if node is None:
        raise AddressBookError("node is not on PATH: the address books are npm packages "
                               "(install node, then `make setup`)")
    root = paths.project_root()
    done = subprocess.run([node, "-e", script, *args], cwd=root, capture_output=True,
                          text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise AddressBookError(f"node could not read {args[0] if args else 'the book'} from "
                               f"{root / 'node_modules'}: {done.stderr.strip()[-600:]}\n"
                               "  fix: `make setup` (npm ci installs the pinned versions)")
    return json.loads(done.stdout)


def installed_version(package: str) -> str:
    """The version of `package` in node_modules (what the lock file pinned)."""
    manifest = paths.node_modules() / package / "package.json"
    if not manifest.is_file():
        raise AddressBookError(f"{package} is not installed under {paths.node_modules()}: "
                               "run `make setup` (npm ci)")
    return str(json.loads(manifest.read_text())["version"])


def _checksum(value: Any, where: str) -> str:
    try:
        return to_checksum_address(str(value))
    except ValueError:
        raise AddressBookError(f"{where}: {value!r} is not an address") from None


@cache
def aave_markets() -> dict[str, dict[str, Any]]:
    """Every Aave V3 market on a production chain in the book, by the book's name
    (AaveV3Ethereum, AaveV3EthereumLido...): chain_id and the addresses in `_AAVE_FIELDS`."""
    markets: dict[str, dict[str, Any]] = {}
    for entry in _node(_AAVE_JS, AAVE_BOOK):
        name, lib, testnet = entry["name"], entry["lib"], entry["testnet"]
        if testnet is None:
            raise AddressBookError(
                f"{AAVE_BOOK}: {name} is on chain {lib.get('CHAIN_ID')}, which viem's chain "
                "table does not know, so keeperd cannot tell whether it is a testnet: pin a "
                "viem that knows it (package.json) or leave this book version")
        if testnet:
            continue
        missing = [book for book in (*_AAVE_FIELDS.values(), "CHAIN_ID") if book not in lib]
        if missing:
            raise AddressBookError(f"{AAVE_BOOK}: {name} has no {', '.join(missing)}")
        market: dict[str, Any] = {"chain_id": int(lib["CHAIN_ID"])}
        for ours, book in _AAVE_FIELDS.items():
            market[ours] = _checksum(lib[book], f"{name}.{book}")
        markets[name] = market
    if not markets:
        raise AddressBookError(f"{AAVE_BOOK} lists no Aave V3 market")
    return dict(sorted(markets.items()))


@cache
def aave_library(name: str) -> dict[str, Any]:
    """One library of the Aave book as it stands (e.g. `ChainlinkArbitrum`): its string and
    number constants."""
    return dict(_node(_LIBRARY_JS, AAVE_BOOK, name))


@cache
def morpho_book(chain_id: int) -> dict[str, Any]:
    """Morpho's pinned packages for one chain: `addresses` (morpho, adaptiveCurveIrm, usdc,
    ...), `deployments` (block numbers, as strings) and `markets` (the fixtures' MarketParams
    by name: loanToken, collateralToken, oracle, irm, lltv as a decimal string, id)."""
    return dict(_node(_MORPHO_JS, MORPHO_ADDRESSES, MORPHO_MARKETS, str(chain_id)))


@cache
def uniswap_v3_factories() -> dict[int, str]:
    """Uniswap's V3 factory per chain id, from its SDK."""
    return {int(k): _checksum(v, f"{UNISWAP} {k}")
            for k, v in _node(_UNISWAP_JS, UNISWAP).items() if v}


def published_document() -> dict[str, Any]:
    """What published.json holds, from the installed book."""
    return {"about": "Aave V3 markets on production chains as Aave's address book publishes "
                     "them; written by `python -m keeperd.devnet.address_book`, checked by "
                     "tests/unit/test_mainnet_profiles.py",
            "source": f"{AAVE_BOOK}@{installed_version(AAVE_BOOK)}",
            "markets": aave_markets()}


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"


def main() -> None:
    document = published_document()
    PUBLISHED.write_text(render(document))
    print(f"wrote {PUBLISHED}: {len(document['markets'])} markets from {document['source']}")


if __name__ == "__main__":
    main()
