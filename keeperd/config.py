"""The configuration: pydantic models, YAML loading with ${ENV} references, and errors that
name the file, the field's path and the fix.

Secrets never sit inline in the shipped examples: they come from `${ENV}` references
(`${VAR}` or `${VAR:-default}`) or from files. Unknown fields are errors, so a misspelt key is
caught at start rather than silently ignored.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import yaml
from eth_utils import is_address, to_checksum_address
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SerializeAsAny,
    Tag,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)

from keeperd.text import KEY_SHAPED, KEY_SHAPED_NOT_AN_ADDRESS

# --- errors ---------------------------------------------------------------------------------


class ConfigIssue:
    __slots__ = ("fix", "message", "path")

    def __init__(self, path: str, message: str, fix: str) -> None:
        self.path, self.message, self.fix = path, message, fix

    def __str__(self) -> str:
        return f"{self.path or '(top level)'}: {self.message}" + (
            f"\n    fix: {self.fix}" if self.fix else "")


class ConfigError(Exception):
    """The configuration cannot be used. `issues` lists every problem found, not just the first."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        lines = [f"{source}: {len(issues)} problem(s) in the configuration:"]
        lines += [f"  {source}: {issue}" for issue in issues]
        super().__init__("\n".join(lines))


# --- value types ----------------------------------------------------------------------------


def _checksum(value: str) -> str:
    # (eth_utils takes 40 hex digits without 0x as an address: a mixed-case one was then
    # blamed on its checksum, a by-hand trial's missing 0x)
    if isinstance(value, str) and value.startswith("0X"):
        value = "0x" + value[2:]  # (as eth_utils took it before 0x was required)
    if not isinstance(value, str) or not value.startswith("0x") or \
            not is_address(value):
        what = "is not an Ethereum address (0x followed by 40 hex digits)"
        if isinstance(value, str) and _KEY_SHAPED.fullmatch(value):
            # (a private key pasted where the address goes was echoed whole, by check-config
            # and on run's stderr — the journal under systemd: a by-hand trial)
            raise ValueError(KEY_SHAPED_NOT_AN_ADDRESS)
        if isinstance(value, str) and value.strip() != value:
            # (" 0x…": it said "0x included" of an address that had its 0x, a by-hand trial)
            fix = f"remove the spaces around it: {value.strip()!r}"
        elif isinstance(value, str) and not value.startswith("0x") and \
                re.fullmatch(r"[0-9a-fA-F]{40}", value):
            fix = f"it lacks its 0x: write 0x{value}"
        elif not (isinstance(value, str) and value.startswith("0x")):
            fix = "copy the whole address again, 0x included (ENS names are not resolved)"
        elif len(value) != 42:
            fix = f"copy the whole address again (this one has {len(value) - 2} characters " \
                  "after 0x)"
        else:
            odd = sorted({c for c in value[2:] if c not in "0123456789abcdefABCDEF"})
            fix = f"it holds {', '.join(map(repr, odd))}, not hex digits: copy it again"
        raise ValueError(f"{value!r} {what}; fix: {fix}")
    # (a mixed-case one must carry its EIP-55 checksum: a contract's address with one digit
    # mistyped used to pass offline, and online only as "holds no contract"; an account's,
    # as keeper.address, not at all)
    return to_checksum_address(_eip55(value))


Address = Annotated[str, AfterValidator(_checksum)]

_URL = re.compile(r"^(https?|wss?)://[^\s/]+", re.IGNORECASE)


def _http_url(value: str) -> str:
    if not re.match(r"^https?://", value, re.IGNORECASE) or not _URL.match(value):
        raise ValueError("must be an http:// or https:// URL")
    return value


def _ws_url(value: str) -> str:
    if not re.match(r"^wss?://", value, re.IGNORECASE) or not _URL.match(value):
        raise ValueError("must be a ws:// or wss:// URL")
    return value


def is_loopback(host: str) -> bool:
    """An address on this machine, parsed: a name that merely starts with "127."
    (127.evil.example) is a remote host."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _plain_to_remote(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme.lower() in ("http", "ws") and not is_loopback(parts.hostname or "")


def _tls_unless_loopback(value: str) -> str:
    """Alert sinks and venue APIs: what goes there (tokens, signed alerts) or comes back
    (margin data alerts are raised on) must not cross a network in clear."""
    if _plain_to_remote(value):
        raise ValueError("plain http to a host that is not loopback: use https (or a "
                         "TLS-terminating proxy on 127.0.0.1)")
    return value


def _tls_if_credentials(value: str) -> str:
    """RPC endpoints: plain http to a node on the same network is common, but a URL that
    carries credentials (user info, a key in the query or the path, as providers issue them)
    must not travel in clear."""
    if _plain_to_remote(value):
        parts = urlsplit(value)
        if parts.username or parts.password or parts.query or any(
                _looks_like_a_key(segment) for segment in parts.path.split("/")):
            raise ValueError("this URL carries credentials (user info, or a key in its path "
                             "or query) over plain http; fix: use https:// (wss://) for it, "
                             "or reach the node on 127.0.0.1")
    return value


def _looks_like_a_key(segment: str) -> bool:
    """A path segment as providers issue keys: long (16 characters or more), hex or digits
    only from 12, or letters and digits mixed from 8. Judged per segment: the whole path's
    length refused a node's plain `/ethereum/mainnet/archive` and passed `/v2/` with a short
    key after it."""
    if len(segment) >= 16 or (len(segment) >= 12 and all(
            c in "0123456789abcdefABCDEF" for c in segment)):
        return True  # (long, or a hex or digit string of 12 or more)
    return (len(segment) >= 8 and any(c.isdigit() for c in segment)
            and any(c.isalpha() for c in segment))


HttpUrl = Annotated[str, AfterValidator(_http_url)]
WsUrl = Annotated[str, AfterValidator(_ws_url), AfterValidator(_tls_if_credentials)]
RpcUrl = Annotated[str, AfterValidator(_http_url), AfterValidator(_tls_if_credentials)]
SecureUrl = Annotated[str, AfterValidator(_http_url), AfterValidator(_tls_unless_loopback)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- chains ---------------------------------------------------------------------------------


class ChainConfig(_Model):
    """One chain and how to reach it."""

    name: Name = Field(description="Short name used in logs, metrics and protocol entries.")
    chain_id: int = Field(gt=0, description="EIP-155 chain id; every RPC is checked against it.")
    rpc_urls: list[RpcUrl] = Field(
        min_length=1,
        description="HTTP JSON-RPC endpoints, best first. Put API keys in ${ENV} references.",
    )
    ws_url: WsUrl | None = Field(
        default=None, description="Optional websocket endpoint for newHeads; polling otherwise.")
    ws_stall_s: float = Field(
        default=60.0, gt=0, description="A newHeads subscription silent this long is dead "
        "(the socket may still answer pings): keeperd polls, then subscribes again. Several "
        "block times of the chain.")
    confirmations: int = Field(
        default=2, ge=0, le=256,
        description="Blocks a log must be buried under before the account index trusts it.")
    poll_interval: float = Field(default=2.0, gt=0, le=300, description="Seconds between polls.")
    request_timeout: float = Field(default=10.0, gt=0, le=120)
    max_attempts: int = Field(default=4, ge=1, le=20,
                              description="Tries per request across endpoints.")
    rate_limit: float | None = Field(
        default=None, gt=0, description="Requests per second per endpoint (None: unlimited).")
    max_head_lag: int = Field(
        default=3, ge=0, description="Blocks an endpoint may trail the best head before it is "
        "ranked below the others.")
    block_time_s: float | None = Field(
        default=None, gt=0, le=600, description="The chain's block time, in seconds: a head "
        "one endpoint claims past the others is believed only as fast as blocks come (with "
        "max_head_lag). Unset: the known chain's (Ethereum 12, OP Mainnet and Base 2, "
        "Arbitrum One 0.25, Polygon 2), else 0.25 — with which one lying backup of two "
        "endpoints was followed within a second on mainnet (a by-hand trial).")
    multicall3: Address = Field(default="0xcA11bde05977b3631167028862bE2a173976CA11")
    multicall_chunk_size: int = Field(
        default=1000, ge=1, le=50_000,
        description="Calls per Multicall3 request. Larger means fewer requests; the provider's "
        "eth_call gas and response-size caps set the ceiling.")
    max_request_bytes: int = Field(
        default=2_000_000, ge=10_000, description="Largest JSON-RPC request body keeperd sends "
        "(a Multicall3 chunk ends before it); anvil refuses bodies over 2 MiB.")
    scan_reader: bool = Field(
        default=True, description="Read full scans through keeperd's scan reader, a contract "
        "placed for the length of an eth_call by a state override (contracts/readers/"
        "ScanReader.sol): much less work per call for the node than Multicall3. A node that "
        "refuses or ignores overrides is read through Multicall3 anyway; false: always.")
    explorer_url: HttpUrl | None = Field(
        default=None, description="Block-explorer base URL for links in alerts.")
    sequencer_uptime_feed: Address | None = Field(
        default=None, description="On L2s, Chainlink's sequencer uptime feed (answer 0: up, "
        "1: down). While the sequencer is down, and for `sequencer_grace_period_s` after it "
        "comes back, every asset of the chain is paused.")
    sequencer_grace_period_s: int = Field(default=3_600, ge=0)
    l1_data_fee: Literal["auto", "op-stack", "none"] = Field(
        default="auto", description="Whether the chain's transactions pay an OP Stack L1 data "
        "fee (and operator fee) beside their gas, priced into every liquidation from the "
        "chain's GasPriceOracle (keeperd/chain/l1_fee.py). auto: for the OP Stack chains "
        "keeperd knows by chain id (OP Mainnet, Base, Unichain, ...); op-stack for another.")
    reference_feeds: dict[str, Address] = Field(
        default_factory=dict, description="Chainlink-style USD feeds on this chain (symbol -> "
        "aggregator or proxy) that the price watch reads every block as references: a market's "
        "own oracle (Morpho Blue) is checked against the ratio of its two assets' prices. "
        "Judged like any feed; a stale one is not believed, and trips nothing itself.")

    @field_validator("rpc_urls")
    @classmethod
    def _unique_urls(cls, urls: list[str]) -> list[str]:
        if len(set(urls)) != len(urls):
            raise ValueError("the same URL is listed twice; each endpoint once")
        return urls


# --- protocols ------------------------------------------------------------------------------


class AaveV3Config(_Model):
    """An Aave V3 market (or a fork with the same ABI)."""

    kind: Literal["aave_v3"]
    name: Name
    chain: Name = Field(description="The `name` of an entry under `chains`.")
    addresses_provider: Address = Field(
        description="PoolAddressesProvider; the pool, oracle and data provider are read from it.")
    pool: Address | None = None
    oracle: Address | None = None
    data_provider: Address | None = None
    start_block: int = Field(default=0, ge=0, description="First block to index events from.")
    cross_check_every: int = Field(
        default=10, ge=0, description="Read the pool's own getUserAccountData for one account "
        "in this many (1: every account, 0: never), rotating each block, and count any "
        "difference from keeperd's local health (keeperd_health_mismatch_total). It is the "
        "costliest call of a scan: 1 doubles a full scan's time.")
    full_rescan_interval: float = Field(
        default=300.0, gt=0, description="Seconds between full re-reads of every account "
        "(between them, only accounts touched by events are re-read).")
    index_interval: float = Field(
        default=60.0, gt=0, description="Seconds between index catch-ups that run even when "
        "no block arrives.")
    unknown_revision: Literal["verify", "hold"] = Field(
        default="verify", description="What keeperd does on a pool whose rules it does not "
        "know for sure (a POOL_REVISION it does not know, a known number on a pool "
        "implementation it does not recognise: a fork's, or an upgrade's; or a revision whose "
        "rules it follows from the sources without having run them against a real pool: "
        "v3.7, revision 11, Ethereum Core's since June 2026): `verify` "
        "evaluates with the nearest known rules and sends a liquidation only when the chain "
        "confirms it at that block (the pool's own getUserAccountData below 1, the exact "
        "liquidationCall simulated from the keeper, the profit from the simulated outcome); "
        "`hold` sends nothing on that market (evaluation and alerts go on).")
    accept_revisions: list[int] = Field(
        default_factory=list, description="POOL_REVISION values keeperd does not know (or "
        "knows from the sources only: 11) but the operator has checked (release notes, a fork, "
        "keeperd's rules in docs/protocols.md) and accepts: liquidations go on under the rules "
        "of that revision (of the nearest known below, for one keeperd does not know), without "
        "verification, whatever the pool's implementation.")
    parity_gate: bool = Field(
        default=True, description="A difference between keeperd's health factor and the "
        "pool's getUserAccountData (see cross_check_every) holds liquidations on this market "
        "and alerts, until the accounts that differed agree again (they are read and checked "
        "every block meanwhile).")


class MorphoBlueConfig(_Model):
    """Morpho Blue markets (one Morpho contract, the market ids to watch)."""

    kind: Literal["morpho_blue"]
    name: Name
    chain: Name = Field(description="The `name` of an entry under `chains`.")
    morpho: Address = Field(description="The Morpho Blue contract.")
    markets: list[Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{64}$")]] = Field(
        min_length=1, description="Market ids (bytes32) to watch and liquidate.")
    start_block: int = Field(default=0, ge=0, description="First block to index events from.")
    index_interval: float = Field(default=60.0, gt=0)
    liquidator_contract: Address | None = Field(
        default=None, description="The MorphoLiquidator owned by the keeper and deployed for "
        "this `morpho` (contracts/MorphoLiquidator.sol): with keeper.capital flash-loan or "
        "auto, liquidations go through it without capital (Morpho's liquidate callback: the "
        "seized collateral is sold on the keeper.uniswap_v3_factory pool of the pair and the "
        "debt repaid from the sale). Unset: only the keeper's own balance.")


class PerpCurieConfig(_Model):
    """Perpetual Protocol v2 ("Curie"): cross-margined perpetuals on Uniswap V3 pools of
    virtual tokens, liquidated by anyone through its ClearingHouse."""

    kind: Literal["perp_curie"]
    name: Name
    chain: Name = Field(description="The `name` of an entry under `chains`.")
    clearing_house: Address = Field(description="The ClearingHouse; the vault, account "
                                    "balance, exchange and config are read from it.")
    vault: Address | None = Field(
        default=None, description="The Vault, pinned: in liquidate mode the keeper approves "
        "it and deposits into it, so the ClearingHouse's answer must equal this; unset, every "
        "RPC endpoint must agree on it (two at least, or one on this machine).")
    asset_symbols: dict[str, str] = Field(
        default_factory=dict, description="Base token symbol -> the asset symbol keeperd "
        "uses for its price elsewhere (the breaker, what-ifs, shocks), e.g. {vETH: WETH}. By "
        "default the base token's symbol without its leading `v` (vETH -> ETH).")
    start_block: int = Field(default=0, ge=0, description="First block to index events from.")
    index_interval: float = Field(default=60.0, gt=0)
    keeper_margin_usd: float = Field(
        default=0.0, ge=0, description="USDC the keeper keeps deposited in the Vault as margin "
        "for the positions it takes over when liquidating (10 % of a liquidated notional is "
        "needed until it is unwound); deposited from the keeper's wallet at start, and "
        "refilled to it once under 90 % of it (unwinds' losses, funding).")
    unwind_max_slippage_bps: int | None = Field(
        default=None, ge=0, le=5_000, description="How far beyond the market's index or mark "
        "(whichever is kinder to the unwind), in basis points, an unwind of a position the "
        "keeper took over may push the pool's price: closePosition's price limit. What the "
        "pool cannot take within it is left for a later block (a partial close); a pool "
        "already beyond it (a sandwich's front leg, a panic) makes the unwind's simulation "
        "revert, at no gas. Unset: no limit beyond Curie's own (1,000 ticks, ~10 %, a block). "
        "Set it where arbitrage brings the pool back to the index between blocks: without "
        "arbitrage the keeper's own sale leaves the pool at the limit, and the rest of its "
        "position waits (an unwind held 3 blocks holds the market's takeovers, "
        "`liquidations_held`).")


class _PerpVenueConfig(_Model):
    """A perpetual-futures venue watched over its public API (monitor and alert only: the
    venue's own engine liquidates)."""

    poll_interval_s: float = Field(default=10.0, gt=0, le=3600,
                                   description="Seconds between reads of the accounts.")
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    max_attempts: int = Field(default=4, ge=1, le=20)
    rate_limit: float = Field(default=5.0, gt=0, description="Requests per second at most.")

    @property
    def chain(self) -> None:
        return None  # off-chain venues: no entry under `chains`


class HyperliquidConfig(_PerpVenueConfig):
    kind: Literal["hyperliquid"]
    name: Name = "hyperliquid"
    api_url: SecureUrl = "https://api.hyperliquid.xyz"
    accounts: list[Address] = Field(min_length=1, description="Accounts to watch.")
    dexes: list[Annotated[str, Field(min_length=1, max_length=32)]] = Field(
        default_factory=list, description="Builder-deployed (HIP-3) perp dexes to watch the "
        "accounts on as well, by name; each has its own markets and margin (an account there "
        "is reported as `user@dex`).")
    liquidation_rule: Literal["current", "fixed-maintenance"] = Field(
        default="current", description="How the liquidation price treats the position's own "
        "maintenance margin: `current` (it moves with the price, as Hyperliquid documents "
        "today) or `fixed-maintenance` (held at its current value: the 2023 rule, which "
        "reproduces the venue's own figures in recorded answers of that time).")


class DydxV4Config(_PerpVenueConfig):
    kind: Literal["dydx_v4"]
    name: Name = "dydx"
    indexer_url: SecureUrl = "https://indexer.dydx.trade"
    accounts: list[str] = Field(
        min_length=1, description="dYdX addresses with a subaccount number: "
        "`dydx1...` (subaccount 0) or `dydx1.../2`.")

    @field_validator("accounts")
    @classmethod
    def _dydx(cls, value: list[str]) -> list[str]:
        for a in value:
            address = a.split("/", 1)[0]
            if not re.fullmatch(r"dydx1[02-9ac-hj-np-z]{38}", address):
                raise ValueError(f"{a!r} is not a dYdX address (dydx1 + 38 bech32 characters, "
                                 "optionally /subaccount)")
        return value


BuiltInProtocolConfig = Annotated[
    AaveV3Config | MorphoBlueConfig | PerpCurieConfig | HyperliquidConfig | DydxV4Config,
    Field(discriminator="kind")]


def _protocol_entry(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Built-in kinds validate through the tagged union; a kind registered by a plug-in
    (`keeperd.protocols.registry`) through that plug-in's own config model."""
    if isinstance(value, BaseModel):
        return value
    if isinstance(value, dict):
        from keeperd.protocols.registry import extra_config_model

        model = extra_config_model(value.get("kind"))
        if model is not None:
            return model.model_validate(value)
    return handler(value)


ProtocolConfig = Annotated[BuiltInProtocolConfig, WrapValidator(_protocol_entry)]


# --- keeper ---------------------------------------------------------------------------------


class EnvKey(_Model):
    source: Literal["env"]
    env: str = Field(min_length=1, description="Name of the variable holding the hex key.")

    @field_validator("env")
    @classmethod
    def _a_variable_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):  # (not echoed: a key, maybe)
            raise ValueError("not an environment variable's name (letters, digits and '_', "
                             "not starting with a digit); fix: write the name of the variable "
                             "holding the key (`env: KEEPER_KEY`), never the key")
        return value


class FileKey(_Model):
    source: Literal["file"]
    path: Path = Field(description="File holding the hex key (systemd: "
                       "`${CREDENTIALS_DIRECTORY}/keeper-key`, with LoadCredential=); neither "
                       "its group nor others may read it, by its mode or its ACL.")


class KeystoreKey(_Model):
    source: Literal["keystore"]
    path: Path = Field(description="Encrypted JSON keystore (web3 secret storage).")
    password_file: Path


class RemoteSignerKey(_Model):
    """The key stays in a signer service (Web3Signer, or any node serving
    `eth_signTransaction` for an account it holds); keeperd sends it each transaction, once
    its signing policy has allowed it, and checks what comes back."""

    source: Literal["remote"]
    url: SecureUrl = Field(description="The signer's JSON-RPC endpoint (https unless "
                           "loopback: transactions and their signatures cross it).")
    address: Address = Field(description="The keeper's account, held by the signer.")
    timeout_s: float = Field(default=5.0, gt=0, le=60, description="Per signature.")


KeySource = Annotated[EnvKey | FileKey | KeystoreKey | RemoteSignerKey,
                      Field(discriminator="source")]
KeeperMode = Literal["alert-only", "dry-run", "liquidate"]


class KeeperConfig(_Model):
    mode: KeeperMode = Field(
        default="alert-only",
        description="alert-only: send nothing; dry-run: simulate and record; liquidate: send.")
    key: KeySource | None = None
    address: Address | None = Field(
        default=None, description="The keeper's address, for dry-run simulations without a "
        "key (with a key, its address is used).")
    capital: Literal["own-balance", "flash-loan", "auto"] = Field(
        default="own-balance", description="own-balance: repay with the keeper's tokens "
        "(the pool is approved once per asset; what the balances cannot cover is counted and "
        "alerted as a shortfall, not sent); flash-loan: through keeperd's FlashLiquidator "
        "contract, which flash-borrows the debt asset from Aave and sells the seized "
        "collateral on Uniswap V3 in the same transaction; auto: own balance first, the "
        "flash-loan path for what it cannot cover.")
    flash_liquidator: Address | None = Field(
        default=None, description="The FlashLiquidator contract owned by the keeper "
        "(contracts/FlashLiquidator.sol); needed for capital: flash-loan.")
    uniswap_v3_factory: Address | None = Field(
        default=None, description="Uniswap V3 factory whose pools the FlashLiquidator sells "
        "collateral on.")
    swap_fee: int = Field(default=3000, description="Uniswap V3 fee tier of the swap pools.")
    min_profit_usd: float = Field(
        default=5.0, ge=0, description="Skip liquidations whose expected profit after gas "
        "and slippage is below this.")
    swap_slippage_bps: int = Field(
        default=50, ge=0, le=5_000, description="Expected cost of turning seized collateral "
        "back into the debt asset, in basis points of its value: the plan's estimate (it ranks "
        "a block's liquidations and decides which are worth simulating). A flash sale is sent "
        "on what its simulation kept (the seller contract's return), not on this.")
    max_swap_slippage_bps: int = Field(
        default=300, ge=0, le=5_000, description="Flash path: the FlashLiquidator reverts "
        "(SwapBelowBound, costing gas only) when selling the seized collateral pays less than "
        "the oracle rate less this, in basis points: the pool's fee, the sale's own price "
        "impact and a sandwich's take all count. At least `swap_slippage_bps`.")
    native_symbol: str = Field(
        default="WETH", description="Reserve whose price values the native gas token.")
    gas_limit_margin: float = Field(default=1.25, ge=1.0, le=3.0,
                                    description="Gas limit = estimate x this.")
    # (gwei: a figure written in wei, 1e9 times too large, paid the whole cap as the tip of
    # every transaction and passed check-config — a by-hand trial; the bounds catch that)
    priority_fee_gwei: float = Field(default=2.0, ge=0, le=10_000, description="The tip, in "
                                     "gwei (not wei); at most max_fee_gwei.")
    base_fee_headroom: float = Field(
        default=2.0, ge=1.0, le=20.0,
        description="maxFeePerGas = base fee x this + priority fee.")
    max_fee_gwei: float = Field(default=500.0, gt=0, le=100_000,
                                description="Hard cap on maxFeePerGas, in gwei (not wei).")
    fee_bump: float = Field(default=1.125, ge=1.1, le=3.0,
                            description="Fee multiplier of a replacement (nodes need >= 1.1).")
    replace_after_blocks: int = Field(
        default=2, ge=1, description="Replace (or cancel) a transaction not included after "
        "this many blocks.")
    private_rpc_url: RpcUrl | None = Field(
        default=None, description="Protect-style endpoint tried first; falls back to the "
        "public RPCs after `private_timeout_blocks`.")
    private_timeout_blocks: int = Field(default=3, ge=1)
    revert_breaker_reverts: int = Field(
        default=3, ge=1, description="This many of a protocol's liquidations reverted on chain "
        "within `revert_breaker_blocks` pause its sending (alert sending_paused) until that "
        "many blocks pass without another: a lying endpoint can make healthy accounts look "
        "liquidatable, and every send of them burns gas. A race lost to another keeper's "
        "liquidation of the account, mined before ours and after the block it was planned "
        "on, is not counted (the crash's competition).")
    revert_breaker_blocks: int = Field(default=50, ge=1)
    second_opinion: bool = Field(
        default=True, description="With two or more RPC endpoints on the chain, simulate each "
        "liquidation on a second one too, at the block it was planned on, beside the first "
        "(no added round trip unless the second is the slower, and then 0.5 s at most): a "
        "call the second endpoint sees revert is not sent. One lying endpoint can fabricate a "
        "liquidatable account and a simulation that passes; it cannot make another endpoint "
        "agree. A second endpoint that cannot answer (behind, down, benched, slower than that) "
        "does not hold a send.")
    max_gas_usd_per_hour: float | None = Field(
        default=None, gt=0, description="The most the keeper may spend on gas (receipts' gas "
        "x price, with an OP Stack chain's L1 data fee, reverted ones included) in any "
        "hour; past it, sending pauses (alert sending_paused) until the hour's spend falls "
        "back. Unset: no cap beyond each liquidation's own profit.")
    allowed_delegates: list[Address] = Field(
        default_factory=list, description="Contracts the keeper's address may be delegated "
        "to (EIP-7702) while keeperd sends from it. Delegated to any other, the key signs "
        "nothing and key_in_use_elsewhere fires: a delegate's code can move everything the "
        "address holds (the 7702 drainers). Empty (the default): an ordinary address, or "
        "one delegated to keeperd's own KeeperWave (`keeperd wave`), only. A delegated "
        "address has one transaction in flight at a time (nodes refuse a second): one "
        "liquidation a block, or a KeeperWave wave.")

    @model_validator(mode="after")
    def _key_for_liquidate(self) -> KeeperConfig:
        if self.mode == "liquidate" and self.key is None:
            raise ValueError("mode 'liquidate' needs `key` (source: env, file, keystore or "
                             "remote)")
        # (which contract the flash path needs depends on the protocols: Config checks it)
        if self.max_swap_slippage_bps < self.swap_slippage_bps:
            raise ValueError(
                f"max_swap_slippage_bps ({self.max_swap_slippage_bps}) is below "
                f"swap_slippage_bps ({self.swap_slippage_bps}): every flash swap priced as "
                "expected would revert; raise max_swap_slippage_bps")
        if self.priority_fee_gwei > self.max_fee_gwei:
            raise ValueError(
                f"@priority_fee_gwei: {self.priority_fee_gwei:g} gwei is above max_fee_gwei "
                f"({self.max_fee_gwei:g}): every transaction would pay the whole cap as its "
                "tip; fix: set the tip in gwei (2 is typical on Ethereum, 0.001 on L2s)")
        if self.mode == "dry-run" and self.key is None and self.address is None:
            raise ValueError("mode 'dry-run' needs `key` or `address` (simulations run from "
                             "the keeper's address, which must hold the debt assets)")
        return self


# --- alerts ----------------------------------------------------------------------------------


def _one_secret(model: BaseModel, field: str) -> None:
    """Exactly one of `field` and `field_file` (a secret inline via ${ENV}, or from a file)."""
    inline, from_file = getattr(model, field), getattr(model, f"{field}_file")
    if (inline is None) == (from_file is None):
        raise ValueError(f"set exactly one of `{field}` (use a ${{ENV}} reference) and "
                         f"`{field}_file` (a file holding it)")


def _digest(text: str) -> str:
    """A short fingerprint of a destination for a sink's derived id: it tells two
    destinations apart without showing one (a Slack or Discord webhook URL is a credential)."""
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _host_label(url: str) -> str:
    """The URL's host, as a sink id may spell it (no user info, no port: they are in the
    digest beside it)."""
    host = urlsplit(url).hostname or "host"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", host)[:32]


class _SinkConfig(_Model):
    id: Name | None = Field(
        default=None, description="The sink's stable id: its notifications waiting in the "
        "outbox are kept under it, so they reach this sink wherever it moves in the route. "
        "Default: derived from its kind and destination (telegram-<chat>, "
        "webhook-<host>-<digest of the URL>...), never from a secret; set one to keep the "
        "sink's pending notifications across a change of destination. Unique within a route.")
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="Per request.")
    group: bool | None = Field(
        default=None, description="One message per group of alerts that fire together "
        "(same rule, severity and status in one evaluation). Default: on for people's chats "
        "(telegram, slack, discord), off for machines (webhook, alertmanager), which get one "
        "request per alert and group themselves.")

    @property
    def sink_id(self) -> str:
        """The id the outbox keys this sink's notifications by: `id`, or the derived one."""
        return self.id or self.derived_id()

    def derived_id(self) -> str:
        raise NotImplementedError


class TelegramSinkConfig(_SinkConfig):
    kind: Literal["telegram"]
    bot_token: str | None = Field(default=None, description="From @BotFather; use ${ENV}.")
    bot_token_file: Path | None = None
    chat_id: int | str = Field(description="A chat id (negative for groups) or @channelname.")
    message_thread_id: int | None = Field(default=None, description="A forum topic.")
    api_url: SecureUrl = "https://api.telegram.org"

    @model_validator(mode="after")
    def _secret(self) -> TelegramSinkConfig:
        _one_secret(self, "bot_token")
        return self

    def derived_id(self) -> str:
        # (a chat id or @channel, and a topic, say where; the bot's token is the secret)
        chat = str(self.chat_id).lstrip("@")
        topic = "" if self.message_thread_id is None else f"-topic{self.message_thread_id}"
        return f"telegram-{chat}{topic}"[:64]


# Headers the webhook sink owns: a configured header must not replace the signature.
WEBHOOK_OWN_HEADERS = frozenset({"x-keeperd-signature", "idempotency-key", "content-type"})


class WebhookSinkConfig(_SinkConfig):
    kind: Literal["webhook"]
    url: SecureUrl
    secret: str | None = Field(default=None, description="HMAC-SHA256 key; use ${ENV}.")
    secret_file: Path | None = None
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers (not "
                                    "the ones keeperd signs and dedupes with).")

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: str | None) -> str | None:
        problem = None if value is None else webhook_secret_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _secret(self) -> WebhookSinkConfig:
        _one_secret(self, "secret")
        reserved = {h.lower() for h in self.headers} & WEBHOOK_OWN_HEADERS
        if reserved:
            raise ValueError(f"headers may not set {sorted(reserved)}: keeperd sets them "
                             "(the signature and the idempotency key a receiver checks)")
        return self

    def derived_id(self) -> str:
        return f"webhook-{_host_label(self.url)}-{_digest(self.url)}"


# HMAC-SHA256 takes any key, but one a receiver could brute-force from a single signed
# alert lets anyone forge alerts: RFC 2104 advises a key no shorter than the hash's output.
MIN_WEBHOOK_SECRET_BYTES = 32


def webhook_secret_problem(secret: str) -> str | None:
    """Why this webhook secret is refused (None: it is not), with the fix."""
    size = len(secret.encode())
    if size >= MIN_WEBHOOK_SECRET_BYTES:
        return None
    return (f"the webhook secret is {size} bytes; it must be at least "
            f"{MIN_WEBHOOK_SECRET_BYTES} (a shorter HMAC key can be guessed from one signed "
            "alert, then alerts forged); fix: generate one with `openssl rand -hex 32` and "
            "give it to keeperd and the receiver")


class SlackSinkConfig(_SinkConfig):
    kind: Literal["slack"]
    webhook_url: SecureUrl | None = Field(default=None, description="An incoming-webhook URL "
                                        "(it is the secret: use ${ENV}).")
    webhook_url_file: Path | None = None

    @model_validator(mode="after")
    def _secret(self) -> SlackSinkConfig:
        _one_secret(self, "webhook_url")
        return self

    def derived_id(self) -> str:
        # The URL is the credential: only its digest (or the file's path) names the sink.
        where = self.webhook_url if self.webhook_url is not None else str(self.webhook_url_file)
        return f"{self.kind}-{_digest(where)}"


class DiscordSinkConfig(_SinkConfig):
    kind: Literal["discord"]
    webhook_url: SecureUrl | None = Field(default=None, description="A channel webhook URL "
                                        "(it is the secret: use ${ENV}).")
    webhook_url_file: Path | None = None

    @model_validator(mode="after")
    def _secret(self) -> DiscordSinkConfig:
        _one_secret(self, "webhook_url")
        return self

    def derived_id(self) -> str:
        # The URL is the credential: only its digest (or the file's path) names the sink.
        where = self.webhook_url if self.webhook_url is not None else str(self.webhook_url_file)
        return f"{self.kind}-{_digest(where)}"


class AlertmanagerSinkConfig(_SinkConfig):
    kind: Literal["alertmanager"]
    url: SecureUrl = Field(description="Alertmanager's base URL, e.g. http://127.0.0.1:9093 "
                           "(https beyond loopback)")
    bearer_token: str | None = None
    bearer_token_file: Path | None = None
    resend_s: float = Field(
        default=60.0, gt=0, description="Alertmanager forgets a firing alert that is not "
        "re-sent before its resolve_timeout; keeperd re-sends firing alerts this often.")

    def derived_id(self) -> str:
        return f"alertmanager-{_host_label(self.url)}-{_digest(self.url)}"


SinkConfig = Annotated[
    TelegramSinkConfig | WebhookSinkConfig | SlackSinkConfig | DiscordSinkConfig
    | AlertmanagerSinkConfig, Field(discriminator="kind")]

# A sink's secrets, by kind: each field with a `_file` twin (bot_token, secret, webhook_url,
# bearer_token). Derived from the models, so a new sink's secret cannot be forgotten.
_SINK_SECRETS = {
    get_args(m.model_fields["kind"].annotation)[0]:
        tuple(f for f in m.model_fields if f"{f}_file" in m.model_fields)
    for m in get_args(get_args(SinkConfig)[0])}


def _inline_secret_issues(data: dict[str, Any]) -> list[ConfigIssue]:
    """Secrets never sit in the file (it travels: backups, diffs, a repository): a sink's
    secret is one whole `${ENV}` reference, or comes from its `_file`. Read on the tree as
    written, since after substitution a value no longer tells where it came from; a tree of
    the wrong shape is left to the models to report."""
    alerts = data.get("alerts")
    routes = alerts.get("routes") if isinstance(alerts, dict) else None
    issues = []
    for ri, route in enumerate(routes if isinstance(routes, list) else []):
        sinks = route.get("sinks") if isinstance(route, dict) else None
        for si, sink in enumerate(sinks if isinstance(sinks, list) else []):
            kind = sink.get("kind") if isinstance(sink, dict) else None
            for field in _SINK_SECRETS.get(kind, ()) if isinstance(kind, str) else ():
                value = sink.get(field)
                if value is None or (isinstance(value, str)
                                     and _ENV_REF.fullmatch(value.strip())):
                    continue
                issues.append(ConfigIssue(
                    f"alerts.routes[{ri}].sinks[{si}].{field}",
                    "a secret written into the file: secrets never go inline",
                    f"write `{field}: ${{VARIABLE}}` and set VARIABLE in keeperd's environment, "
                    f"or use `{field}_file:` (a file only keeperd's user can read)"))
    return issues


# A private key's shape (32 bytes of hex). Morpho market ids have it too, so it is looked for
# only where a name or a path belongs.
_KEY_SHAPED = KEY_SHAPED
_NAME_FIELDS = ("env", "path", "password_file", "password_env")


_KEY_FIELDS = ("private_key", "privatekey", "secret_key", "key_hex", "value", "hex", "secret")


def _inline_key_issues(data: dict[str, Any]) -> list[ConfigIssue]:
    """The keeper's key written into the file itself (`keeper.key: "0x..."`, or a field of
    its own: `private_key:`): told as that, never echoed. (It read "Input should be a valid
    dictionary" with no fix, or "did you mean `private_rpc_url`?": a by-hand trial.)"""
    keeper = data.get("keeper")
    if not isinstance(keeper, dict):
        return []
    places = []
    if isinstance(keeper.get("key"), str):
        if _ENV_REF.fullmatch(keeper["key"].strip()):
            return [ConfigIssue("keeper.key", "a ${VARIABLE} reference: keeper.key says where "
                                "the key is, not the key",
                                f"keeper.key: {{source: env, env: "
                                f"{keeper['key'].strip()[2:-1].split(':')[0]}}}")]
        places.append("keeper.key")
    places += [f"keeper.{f}" for f in keeper if str(f).lower() in _KEY_FIELDS]
    key = keeper.get("key")
    if isinstance(key, dict):
        places += [f"keeper.key.{f}" for f in key if str(f).lower() in _KEY_FIELDS]
    return [ConfigIssue(
        where, "holds what looks like the private key itself (not shown): the key never goes "
        "into the file, which travels (backups, diffs, a repository) — treat it as exposed if "
        "this file was shared",
        "keeper.key: {source: env, env: KEEPER_KEY} (the variable set in keeperd's "
        "environment), or {source: file, path: ...} (a file only keeperd's user can read)")
        for where in places]


def _key_in_name_issues(data: dict[str, Any], at: str = "") -> list[ConfigIssue]:
    """A private key pasted where the name of its variable or its file belongs
    (`keeper.key.env: 0x8b3a...`): the errors that follow ("environment variable 0x8b3a...
    is not set", "key file 0x8b3a... does not exist") printed it whole, into the log and
    journald (a by-hand trial). Found on the tree as written, and never echoed."""
    issues = []
    for name, value in data.items():
        where = f"{at}.{name}" if at else str(name)
        if isinstance(value, dict):
            issues += _key_in_name_issues(value, where)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    issues += _key_in_name_issues(item, f"{where}[{i}]")
        elif (name in _NAME_FIELDS or str(name).endswith(("_env", "_file"))) and \
                isinstance(value, str) and _KEY_SHAPED.fullmatch(value):
            issues.append(ConfigIssue(
                where, "holds what looks like a private key itself, not the name of the "
                "variable or file holding it (not shown: treat it as exposed if this file "
                "was shared)",
                "put the key in a variable or a file only keeperd's user can read, and "
                "write its name here (" + (f"`{name}: KEEPER_KEY`" if "env" in str(name)
                                           else f"`{name}: /etc/keeperd/keeper-key`") + ")"))
    return issues


def sink_id_issues(routes: list[RouteConfig]) -> list[ConfigIssue]:
    """Two sinks of one route under one id would share their pending notifications: each
    repeat is named, with the sink it repeats."""
    issues = []
    for ri, route in enumerate(routes):
        first: dict[str, int] = {}
        for si, sink in enumerate(route.sinks):
            sink_id = sink.sink_id
            if sink_id not in first:
                first[sink_id] = si
                continue
            how = "its `id`" if sink.id else "the id derived from its kind and destination"
            issues.append(ConfigIssue(
                f"alerts.routes[{ri}].sinks[{si}].id",
                f"sink id {sink_id!r} ({how}) is also alerts.routes[{ri}].sinks"
                f"[{first[sink_id]}]'s, in route {route.name!r}: the outbox keeps each "
                "sink's notifications under its id",
                "give one of the two its own `id:` (letters, digits, '.', '_', '-'), or "
                "remove the repeated sink"))
    return issues


class RouteConfig(_Model):
    """A named destination: one or more sinks that all receive the route's alerts."""

    name: Name
    sinks: list[SinkConfig] = Field(min_length=1)
    rate_limit_per_minute: int | None = Field(
        default=None, ge=1, description="Messages per minute per sink; more wait in the outbox "
        "(none are dropped; critical ones go first). Default by sink: telegram 20 (Telegram's "
        "limit for one group), discord 30, slack 60, webhook and alertmanager 600.")
    repeat_interval_s: float = Field(
        default=4 * 3600, gt=0, description="Re-send an alert that keeps firing this often.")


def _watched_account(value: str) -> str:
    """An EVM address (checksummed) or a dYdX address (dydx1..., optionally /subaccount)."""
    if isinstance(value, str) and value.startswith("dydx1"):
        if not re.fullmatch(r"dydx1[02-9ac-hj-np-z]{38}(/\d+)?", value):
            raise ValueError(f"{value!r} is not a dYdX address (dydx1 + 38 bech32 characters, "
                             "optionally /subaccount)")
        return value
    return _checksum(value)


def _eip55(value: str) -> str:
    """A mixed-case address carries an EIP-55 checksum, and a wrong one is refused: it is
    usually a mistyped character, and that account would be watched without ever alerting.
    All-lowercase (or all-uppercase) hex carries none and is taken as written."""
    if not isinstance(value, str) or not is_address(value):
        return value  # (`_checksum` says what an address is)
    digits = value[2:]
    if digits in (digits.lower(), digits.upper()) or value == to_checksum_address(value):
        return value
    raise ValueError(f"{value!r} fails its EIP-55 checksum: a character is likely mistyped. "
                     f"Check it against where it came from; if the hex digits are right, "
                     f"write {to_checksum_address(value)}")


WatchedAccount = Annotated[str, AfterValidator(_watched_account)]


class WatchlistConfig(_Model):
    """Accounts someone cares about, with their own thresholds and route. Perp accounts are
    watched the same way: their health is equity / maintenance margin."""

    name: Name
    accounts: list[WatchedAccount] = Field(min_length=1)
    warn: float = Field(default=1.2, gt=0, description="Health factor that fires a warning.")
    critical: float = Field(default=1.05, gt=0, description="Health factor that escalates.")
    route: Name
    protocols: list[Name] | None = Field(
        default=None, description="Only these protocols (default: every one the accounts "
        "have positions on).")
    clear_margin: float = Field(
        default=0.02, ge=0, description="Hysteresis: a level clears only once health is this "
        "far above it, so health hovering at 1.2 does not flap.")
    escalation_step: float = Field(
        default=0.05, gt=0, description="Re-alert when health falls this much below the "
        "last value sent (the same level, but worse).")

    @model_validator(mode="after")
    def _ordered(self) -> WatchlistConfig:
        if self.critical >= self.warn:
            raise ValueError("`critical` must be below `warn` (health falls from warn to "
                             f"critical); fix: set critical under {self.warn:g} (e.g. warn: "
                             "1.2, critical: 1.05), or raise warn")
        return self


class RuleToggle(_Model):
    enabled: bool = True
    route: Name | None = Field(default=None, description="Default: alerts.operator_route.")


class KeeperBalanceRule(RuleToggle):
    warn_below: float = Field(default=0.1, ge=0, le=1e6, description="Native token (ETH) "
                              "balance, in whole tokens (not wei).")
    critical_below: float = Field(default=0.02, ge=0, le=1e6)


class RpcDownRule(RuleToggle):
    after_s: float = Field(default=30.0, ge=0, description="Every endpoint of a chain "
                           "unhealthy for this long.")


class VenueDownRule(RuleToggle):
    after_s: float = Field(default=120.0, ge=0, description="A perp venue's polls all failing "
                           "for this long, or a watched account of it unread this long (a "
                           "number of its answer that cannot be: its alerts are kept as "
                           "they were, unwatched meanwhile).")


class IndexLagRule(RuleToggle):
    warn_blocks: int = Field(default=20, ge=1)
    critical_blocks: int = Field(default=100, ge=1)


class CascadeRule(RuleToggle):
    shock: float = Field(default=0.2, gt=0, lt=1, description="The price drop looked at.")
    warn_bad_debt_usd: float = Field(default=100_000.0, ge=0)
    critical_bad_debt_usd: float = Field(default=1_000_000.0, ge=0)


class RulesConfig(_Model):
    liquidation: RuleToggle = Field(
        default_factory=RuleToggle, description="Our liquidations: sent, included, reverted, "
        "lost to another keeper, not sent.")
    oracle: RuleToggle = Field(default_factory=RuleToggle, description="A price feed is "
                               "stale, deviating, or its breaker tripped.")
    liquidations_held: RuleToggle = Field(
        default_factory=RuleToggle, description="Liquidations on a market are held: an "
        "unknown or changed protocol revision, or keeperd's health differing from the "
        "protocol's own.")
    sending_paused: RuleToggle = Field(
        default_factory=RuleToggle, description="A protocol's sending is paused by keeperd's "
        "own safety limits: its liquidations reverted too often (keeper.revert_breaker_*), or "
        "the hour's gas spend reached keeper.max_gas_usd_per_hour.")
    key_in_use_elsewhere: RuleToggle = Field(
        default_factory=RuleToggle, description="A transaction keeperd did not sign was mined "
        "from the keeper's address (another keeper or tool on the same key): new "
        "liquidations wait until it stops.")
    revision_unverified: RuleToggle = Field(
        default_factory=RuleToggle, description="A market runs rules keeperd does not know "
        "for sure (Aave: a POOL_REVISION or pool implementation it does not recognise): its "
        "liquidations are sent only when the chain confirms each in a simulation.")
    capital_shortfall: RuleToggle = Field(
        default_factory=RuleToggle, description="The keeper's balance of a debt asset falls "
        "short of the liquidations found (they are not sent): how much is missing, how many "
        "liquidations and how much profit were forgone.")
    keeper_balance: KeeperBalanceRule = Field(default_factory=KeeperBalanceRule)
    rpc_down: RpcDownRule = Field(default_factory=RpcDownRule)
    rpc_wrong_chain: RuleToggle = Field(
        default_factory=RuleToggle, description="An RPC endpoint answers for another network: "
        "never used, the chain runs without the redundancy configured (and a delegation's "
        "refusal cannot be lifted while it stands).")
    venue_down: VenueDownRule = Field(default_factory=VenueDownRule)
    index_lag: IndexLagRule = Field(default_factory=IndexLagRule)
    cascade: CascadeRule = Field(default_factory=CascadeRule)


class SilenceConfig(_Model):
    matchers: list[str] = Field(
        min_length=1, description="Alertmanager-style: label=value, label!=value, "
        "label=~regex, label!~regex; all must match.")
    comment: str = ""

    @field_validator("matchers")
    @classmethod
    def _parse(cls, value: list[str]) -> list[str]:
        from keeperd.alerts.silences import parse_matcher

        for m in value:
            parse_matcher(m)
        return value


class OutboxConfig(_Model):
    max_attempts: int = Field(default=15, ge=1, description="Then dead-lettered (counted, "
                              "logged, kept for `keeperd alerts retry`).")
    backoff_initial_s: float = Field(default=2.0, gt=0)
    backoff_max_s: float = Field(default=600.0, gt=0)
    flush_on_stop_s: float = Field(default=5.0, ge=0, description="On stop, keep delivering "
                                   "this long; the rest waits on disk for the next start.")
    keep_delivered_s: float = Field(default=7 * 86400, gt=0, description="History kept for "
                                    "reorg retraction and `keeperd alerts list`.")
    refused_retry_s: float = Field(default=1800.0, ge=0, description="A notification a sink "
                                   "refuses with 401, 403, 404 or another 4xx but 400/413/422 "
                                   "(a receiver mid-deploy, a rotated token) is retried this "
                                   "long after it was queued, then dead-lettered.")


class AlertsConfig(_Model):
    routes: list[RouteConfig] = Field(default_factory=list)
    watchlists: list[WatchlistConfig] = Field(default_factory=list)
    operator_route: Name | None = Field(
        default=None, description="Where keeper, oracle, RPC and cascade alerts go (default: "
        "the first route).")
    rules: RulesConfig = Field(default_factory=RulesConfig)
    inhibition: Literal["annotate", "hold"] = Field(
        default="annotate", description="Cascade alerts of a book with a stale or distrusted "
        "price: sent with a note not to act on the price yet (annotate), or held until the "
        "price is trusted again (hold). Position alerts on such an account are always sent, "
        "noting that the protocol still liquidates at its own oracle's price.")
    silences: list[SilenceConfig] = Field(default_factory=list)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)

    @model_validator(mode="after")
    def _routes_exist(self) -> AlertsConfig:
        names = [r.name for r in self.routes]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"route names must be unique; repeated: {sorted(dupes)}")
        # (paths below alerts: the issue names the field, `validate_config`)
        used = [(f"watchlists[{i}].route", w.route) for i, w in enumerate(self.watchlists)]
        used += [("operator_route", self.operator_route)] if self.operator_route else []
        for rule in RulesConfig.model_fields:
            route = getattr(self.rules, rule).route
            if route:
                used.append((f"rules.{rule}.route", route))
        for where, route in used:
            if route not in names:
                issue = _undefined_route(where, str(route), names)
                raise ValueError(f"@{where}: {issue.message}; fix: {issue.fix}")
        return self

    def route_for(self, rule: str) -> str | None:
        """The route of an operator rule: its own, the operator route, or the first route."""
        own = getattr(self.rules, rule).route if rule in RulesConfig.model_fields else None
        if own:
            return str(own)
        if self.operator_route:
            return self.operator_route
        return self.routes[0].name if self.routes else None


# --- risk: the cascade engine ---------------------------------------------------------------


class ConstantProductDepth(_Model):
    kind: Literal["constant_product"]
    reserve_tokens: float = Field(gt=0, description="The asset's side of an x*y=k pool, in "
                                  "whole tokens.")


class CurveDepth(_Model):
    kind: Literal["curve"]
    points: list[tuple[float, float]] = Field(
        min_length=1, description="[USD sold at today's price, price drop] pairs, "
        "increasing, e.g. [[1e6, 0.005], [1e7, 0.03], [1e8, 0.15]].")


class UniswapV3Depth(_Model):
    kind: Literal["uniswap_v3"]
    pool: Address = Field(description="A pool of the asset against a stablecoin; its "
                          "liquidity and price are read each evaluation (virtual reserves).")


DepthConfig = Annotated[ConstantProductDepth | CurveDepth | UniswapV3Depth,
                        Field(discriminator="kind")]


class FundConfig(_Model):
    """The insurance / default fund bad debt is measured against."""

    usd: float | None = Field(default=None, ge=0, description="A fixed amount.")
    token: str | None = Field(default=None, description="A reserve's symbol whose balance "
                              "at `holder` is the fund (read on chain each evaluation).")
    holder: Address | None = None

    @model_validator(mode="after")
    def _one(self) -> FundConfig:
        if (self.usd is None) == (self.token is None or self.holder is None):
            raise ValueError("set either `usd`, or `token` and `holder`")
        return self


DEFAULT_SHOCKS = [0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5]
DEFAULT_STABLES = ["USDC", "USDT", "DAI", "FRAX", "LUSD", "GHO", "PYUSD", "USDe", "crvUSD",
                   "USDS", "sUSDe", "EURC"]


def _fund_form(value: Any) -> str:
    """`insurance_fund` is one fund ({usd: ...}, {token, holder}) or one per protocol name:
    told apart by its keys, so a typo in either is named as that form's (not both)."""
    if isinstance(value, dict) and value and all(
            isinstance(v, dict | FundConfig) for v in value.values()):
        return "each"
    return "one"


class CascadeConfig(_Model):
    enabled: bool = True
    shocks: list[float] = Field(default_factory=lambda: list(DEFAULT_SHOCKS), min_length=1,
                                description="Price drops, as fractions (0.1 = 10 %).")
    stable_assets: list[str] = Field(
        default_factory=lambda: list(DEFAULT_STABLES),
        description="Left out of the joint 'everything correlated' scenario (each still has "
        "its own, a depeg).")
    max_rounds: int = Field(default=10, ge=1, le=100)
    tolerance: float = Field(default=1e-4, gt=0, description="A scenario has converged when "
                             "no price moves more than this between rounds.")
    threads: int = Field(default=1, ge=1, le=64, description="Threads the engine may use. "
                         "1 leaves the other cores to following blocks and liquidating: "
                         "the cascade is a what-if, the keeper's latency is not.")
    every_blocks: int = Field(default=1, ge=1, description="Evaluate every N blocks...")
    min_interval_s: float = Field(default=5.0, ge=0, description="...and at most this often.")
    min_liquidation_usd: float = Field(
        default=1_000_000, gt=0, description="The 'critical shock' is the smallest drop that "
        "liquidates at least this much debt.")
    depth: dict[str, DepthConfig] = Field(
        default_factory=dict, description="Per asset symbol; an asset without one is "
        "assumed infinitely deep (its price is not moved by liquidations).")
    insurance_fund: Annotated[
        Annotated[FundConfig, Tag("one")] | Annotated[dict[str, FundConfig], Tag("each")],
        Discriminator(_fund_form)] | None = Field(
        default=None, description="What bad debt is measured against: one protocol's fund "
        "({usd: ...} or {token, holder}) when one protocol is configured, else per protocol "
        "name ({aave: {usd: ...}}); a protocol with none uses what it reads on chain (Perp "
        "Curie's InsuranceFund) or has none. A fund is one protocol's: it was counted as "
        "each configured protocol's own.")

    def fund_for(self, protocol: str) -> FundConfig | None:
        """The fund configured for `protocol` (a lone fund: the one protocol's)."""
        if isinstance(self.insurance_fund, dict):
            return self.insurance_fund.get(protocol)
        return self.insurance_fund

    @field_validator("shocks")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        bad = [v for v in value if not 0 < v < 1]
        if bad:
            raise ValueError(f"shocks are fractions between 0 and 1 (0.1 = 10 %); got {bad}")
        return sorted(set(value))


class RiskConfig(_Model):
    cascade: CascadeConfig = Field(default_factory=CascadeConfig)


# --- oracles ---------------------------------------------------------------------------------


class ReferenceSourceConfig(_Model):
    """One independent price source over HTTP (its public ticker format)."""

    kind: Literal["binance", "coinbase", "kraken", "pyth_hermes"]
    name: Name
    url: SecureUrl = Field(description="Base URL, e.g. https://api.exchange.example")
    markets: dict[str, str] = Field(
        min_length=1, description="Token symbol -> the source's market id (ETHUSDT, ETH-USD, "
        "XETHZUSD, or a Pyth price id).")


class PythConfig(_Model):
    """An on-chain Pyth contract whose prices keeperd checks next to the protocol's oracle."""

    contract: Address
    chain: Name | None = Field(default=None, description="The chain the contract is on (the "
                               "`name` of an entry under `chains`); unset: every chain.")
    feeds: dict[str, str] = Field(min_length=1, description="Token symbol -> Pyth price id "
                                  "(0x + 64 hex digits).")
    max_age_s: int = Field(default=60, gt=0, description="An older publish time trips.")
    max_conf_ratio: float = Field(default=0.01, gt=0, description="Confidence width sigma/mu "
                                  "beyond this trips, like staleness.")

    @field_validator("feeds")
    @classmethod
    def _ids(cls, feeds: dict[str, str]) -> dict[str, str]:
        for symbol, fid in feeds.items():
            if not re.fullmatch(r"0x[0-9a-fA-F]{64}", fid):
                raise ValueError(f"{symbol}: {fid!r} is not a Pyth price id (0x + 64 hex)")
        return feeds


class OraclesConfig(_Model):
    heartbeat_s: int = Field(default=3_600, gt=0, le=604_800, description="The default feed "
                             "heartbeat, in seconds (a week at most: longer would never trip): "
                             "an answer older than this trips the breaker, unless the feed's "
                             "own last rounds show a longer heartbeat (a day for USDC / USD "
                             "on Ethereum; their second-longest gap): then that, x 1.1 + "
                             "2 min, at most two days. Each aggregator an adapter wraps by "
                             "its own.")
    heartbeats: dict[str, Annotated[int, Field(gt=0, le=604_800)]] = Field(
                                       default_factory=dict,
                                       description="Per-asset heartbeats (symbol -> seconds): "
                                       "these stand instead of the default and the learnt.")
    max_jump: float = Field(default=0.25, gt=0, description="Largest believable move between "
                            "two consecutive rounds (fraction).")
    second_read: bool = Field(
        default=True, description="With two or more healthy RPC endpoints on a chain, read "
        "the price feeds on the second one too, at the same block, and judge both readings "
        "(the first alone cannot hide a stale round), against the later of the two "
        "endpoints' times of the block; the sequencer-uptime feed too, the least favourable "
        "answer holding: each block's judgement then waits for "
        "the second up to 0.3 s after the first (its reading dropped, counted, if later). "
        "false: the first endpoint's reading alone, no wait.")
    bound_margin: float = Field(default=0.005, ge=0, description="An answer this close to the "
                                "aggregator's minAnswer/maxAnswer counts as pinned.")
    clear_after_s: float = Field(default=300.0, ge=0, description="A tripped breaker resets "
                                 "after its condition has been clear this long.")
    references: list[ReferenceSourceConfig] = Field(
        default_factory=list, description="Independent prices; the oracle is compared with "
        "their median.")
    min_sources: int = Field(default=2, ge=1, description="Sources that must answer for a "
                             "median to count.")
    max_deviation: float = Field(default=0.05, gt=0, le=1.0, description="Oracle vs "
                                 "reference median beyond this (a fraction: 0.05 is 5 %; 5 "
                                 "would never trip) trips the breaker.")
    reference_interval_s: float = Field(default=15.0, gt=0, description="Seconds between "
                                        "reference fetches (public APIs rate-limit).")
    reference_timeout_s: float = Field(default=3.0, gt=0)
    pyth: PythConfig | None = None


# --- serving and logging --------------------------------------------------------------------


class MetricsConfig(_Model):
    enabled: bool = True
    listen: str = Field(default="127.0.0.1", description="Address for /metrics and /healthz.")
    port: int = Field(default=9464, ge=0, le=65535, description="0 picks a free port.")
    ready_max_index_lag: int = Field(
        default=10, ge=0, description="/readyz fails while an account index trails the "
        "head by more blocks than this.")
    header_timeout_s: float = Field(
        default=5.0, gt=0, le=300, description="A connection that has not sent a whole "
        "request this long after opening, or after its last response, is closed: a "
        "half-sent request holds no socket for longer (nor does an idle keep-alive: one timer "
        "for both).")
    max_connections: int = Field(
        default=32, ge=1, le=1024, description="Open connections at most; past it a new one "
        "is answered 503 and closed at once (Prometheus needs one); the last quarter only to "
        "peers holding none (an orchestrator's probe).")
    bearer_token: str | None = Field(
        default=None, description="If set, /metrics answers 401 without "
        "`Authorization: Bearer <token>` (/healthz and /readyz stay open for probes); use "
        "${ENV}, or bearer_token_file.")
    bearer_token_file: Path | None = Field(
        default=None, description="A file holding the token (chmod 600); Prometheus reads "
        "its copy with `authorization: {credentials_file: ...}`.")

    @model_validator(mode="after")
    def _one_token_source(self) -> MetricsConfig:
        if self.bearer_token is not None and self.bearer_token_file is not None:
            raise ValueError("set one of `bearer_token` (a ${ENV} reference) and "
                             "`bearer_token_file`, not both")
        return self


def _inline_metrics_token(data: dict[str, Any]) -> list[ConfigIssue]:
    """metrics.bearer_token, like a sink's secret, is a whole ${ENV} reference, never the
    token itself written into the file."""
    metrics = data.get("metrics")
    value = metrics.get("bearer_token") if isinstance(metrics, dict) else None
    if value is None or (isinstance(value, str) and _ENV_REF.fullmatch(value.strip())):
        return []
    return [ConfigIssue("metrics.bearer_token", "a secret written into the file: secrets "
                        "never go inline", "write `bearer_token: ${VARIABLE}` and set VARIABLE "
                        "in keeperd's environment, or use `bearer_token_file:` (a file only "
                        "keeperd's user can read)")]


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: pretty on a terminal, JSON otherwise.")


class LeaseConfig(_Model):
    length_s: float = Field(default=6.0, gt=1.0, le=300.0, description=(
        "How long a replica's lease lasts without renewal: a frozen or partitioned leader "
        "is replaced this long after its last renewal (failover <= length_s + "
        "renew_every_s)."))
    renew_every_s: float = Field(default=2.0, gt=0.0, description=(
        "How often the leader renews (and a standby tries to take the lease)."))
    statement_timeout_s: float = Field(default=1.5, gt=0.0, description=(
        "Statement and idle-in-transaction timeout of the lease's own connection."))

    @model_validator(mode="after")
    def _fits(self) -> LeaseConfig:
        if self.renew_every_s * 2 > self.length_s:
            raise ValueError(f"renew_every_s ({self.renew_every_s}) must be at most half of "
                             f"length_s ({self.length_s}): a renewal that fails once must "
                             "leave time for the next")
        if self.statement_timeout_s >= self.renew_every_s:
            raise ValueError(f"statement_timeout_s ({self.statement_timeout_s}) must be "
                             f"shorter than renew_every_s ({self.renew_every_s})")
        return self


_PORTS_THEN_QUERY = re.compile(r"\d+(,[^,/@]+:\d+)*(,[^,/@]+)*/[^?#]*\?")


def url_password_span(url: str) -> tuple[int, int] | None:
    """Where a password written into `url`'s user info is, by its text (start, end), or None.
    `urlsplit` ends the user info at the first `/`, `?` or `#`: a password holding one (base64
    passwords hold `/` and `+`) read as none, passed the check and was printed whole (an
    audit). Here the user info runs to the last `@`, and holds a password when a `:` follows
    a user name with no `@` or `/` in it."""
    start = url.find("://")
    if start < 0:
        return None
    start += 3
    at = url.rfind("@")
    if at < start:
        return None
    user, colon, rest = url[start:at].partition(":")
    if not colon or "@" in user or "/" in user or user.startswith("["):
        return None  # (`[::1]:5432`: an IPv6 host, no user)
    # (`host:5432/db?application_name=k@a`, `h1:5432,h2:5432/db?user=a@b`: no user info, an
    # `@` in the query — the ports' digits, then a path and a query before the `@`)
    if _PORTS_THEN_QUERY.match(rest):
        return None
    begin = start + len(user) + 1
    return begin, at


def postgres_hosts(url: str) -> list[str]:
    """The hosts a postgresql:// URL names, as asyncpg reads them: the ones before the path
    (several, comma-separated, each maybe with a port; percent-encoded, a unix socket's
    directory), else the `host` query parameter."""
    parts = urlsplit(url)
    spec = parts.netloc.rpartition("@")[2]
    if not spec:
        spec = (parse_qs(parts.query).get("host") or [""])[-1]
    hosts = []
    for one in spec.split(","):
        one = unquote(one.strip())
        if one.startswith("["):  # [::1]:5432
            one = one[1:].partition("]")[0]
        elif not one.startswith("/"):
            one = one.rpartition(":")[0] if one.count(":") == 1 else one
        if one:
            hosts.append(one)
    return hosts


def postgres_ports_problem(url: str) -> str | None:
    """What is wrong with a port the URL's hosts name (a number from 1 to 65535), or None.
    asyncpg's parser raised a plain ValueError (`:abc`) or OverflowError (`:99999`) at the
    daemon's start, its message quoting the port's text — a password typed there (a review)."""
    spec = urlsplit(url).netloc.rpartition("@")[2]
    for one in spec.split(",") if spec else []:
        one = one.strip()
        if one.startswith("["):
            port = one.partition("]")[2].removeprefix(":")
        else:
            port = one.rpartition(":")[2] if ":" in one else ""
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            return "a host's port is not a number from 1 to 65535"
    return None


def _local_postgres_host(host: str) -> bool:
    """A unix socket (a directory) or a loopback address: no network to cross."""
    return host.startswith("/") or is_loopback(host)


def _sslmode(url: str) -> str | None:
    modes = parse_qs(urlsplit(url).query).get("sslmode")
    return modes[-1].lower() if modes else None  # (asyncpg, too, takes the last one)


class StorageConfig(_Model):
    url: str | None = Field(default=None, description=(
        "postgresql://user@host:5432/db to share the state between replicas (the password "
        "from password_env or password_file, never in the URL); unset: the embedded SQLite "
        "file in state_dir."))
    password_env: str | None = Field(default=None, description=(
        "Environment variable holding the PostgreSQL password."))
    password_file: Path | None = Field(default=None, description=(
        "File holding the PostgreSQL password (a systemd credential, a mounted secret)."))
    allow_insecure_transport: bool = Field(default=False, description=(
        "Reach a PostgreSQL host that is not loopback without sslmode=verify-full: "
        "sslmode=require encrypts but lets anyone on the path answer, prefer (libpq's "
        "default) falls back to plaintext without a word. Only on a network you trust end "
        "to end. A loopback host or a unix socket is never held to verify-full."))
    statement_timeout_s: float = Field(default=10.0, gt=0.0)
    lease: LeaseConfig = Field(default_factory=LeaseConfig)

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres"):
            # (not echoed: a mistyped URL may carry a password)
            raise ValueError(f"the scheme {parts.scheme!r} is not postgresql: write "
                             "postgresql://user@host:5432/database (leave storage.url out for "
                             "the embedded SQLite file)")
        # (libpq and asyncpg take it from the query too: `?password=` connected, and was
        # printed whole by check-config, the start's log and status — a by-hand trial)
        query = {k.lower() for k in parse_qs(parts.query, keep_blank_values=True)}
        if parts.password or url_password_span(value) or query & {"password", "sslpassword"}:
            raise ValueError("the password must not be in storage.url (it would reach logs "
                             "and process listings): use storage.password_env or "
                             "storage.password_file")
        if (problem := postgres_ports_problem(value)) is not None:
            raise ValueError(f"{problem}: write postgresql://user@host:5432/database")
        if not postgres_hosts(value) or not parts.path.strip("/"):
            # (not echoed: a URL this far wrong may hold a password)
            raise ValueError("name the host and the database, "
                             "postgresql://user@host:5432/database (a unix socket: "
                             "postgresql://user@/database?host=/run/postgresql)")
        return value

    @model_validator(mode="after")
    def _one_password_source(self) -> StorageConfig:
        if self.password_env and self.password_file:
            raise ValueError("set one of storage.password_env and storage.password_file")
        return self

    @model_validator(mode="after")
    def _verified_server(self) -> StorageConfig:
        if self.url is None or self.allow_insecure_transport:
            return self
        remote = [h for h in postgres_hosts(self.url) if not _local_postgres_host(h)]
        mode = _sslmode(self.url)
        if remote and mode not in (None, "verify-full"):
            fallback = (" and may fall back to plaintext" if mode in ("disable", "allow",
                                                                       "prefer") else "")
            raise ValueError(
                f"storage.url asks for sslmode={mode} to {remote[0]}, which is not loopback: "
                f"that checks neither the server's certificate nor its name{fallback}; use "
                "sslmode=verify-full (with sslrootcert=/path/to/ca.pem, the CA that signed the "
                "server's certificate), or leave sslmode out (keeperd then asks for "
                "verify-full), or set storage.allow_insecure_transport: true on a network you "
                "trust end to end")
        return self

    @property
    def replicated(self) -> bool:
        return self.url is not None

    @property
    def connect_url(self) -> str:
        """storage.url as keeperd connects with it: where it names a host that is not
        loopback and no sslmode, sslmode=verify-full is added (libpq's and asyncpg's default,
        prefer, checks no certificate and falls back to plaintext silently; PGSSLMODE in the
        environment is overridden too)."""
        assert self.url is not None
        remote = any(not _local_postgres_host(h) for h in postgres_hosts(self.url))
        if not remote or self.allow_insecure_transport or _sslmode(self.url) is not None:
            return self.url
        parts = urlsplit(self.url)
        query = f"{parts.query}&sslmode=verify-full" if parts.query else "sslmode=verify-full"
        return urlunsplit(parts._replace(query=query))

    def password(self) -> str | None:
        """The password, read when connecting (never kept in the config object)."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError("environment", [ConfigIssue(
                    "storage.password_env", f"the environment variable {self.password_env} "
                    "is not set", "export it, or use storage.password_file")])
            return value
        if self.password_file:
            return self.password_file.read_text().strip()
        return None


def _what_it_watches(protocol: Any) -> list[tuple[str, ...]]:
    """(chain, contract, market) of what a protocol entry watches, for the chain protocols
    whose identity is one address (and Morpho's markets)."""
    chain = getattr(protocol, "chain", None)
    if isinstance(protocol, AaveV3Config):
        return [(str(chain), protocol.addresses_provider.lower())]
    if isinstance(protocol, MorphoBlueConfig):
        return [(str(chain), protocol.morpho.lower(), m.lower()) for m in protocol.markets]
    if isinstance(protocol, PerpCurieConfig):
        return [(str(chain), protocol.clearing_house.lower())]
    return []


class Config(_Model):
    state_dir: Path = Field(description="Directory for the local state (the SQLite file: "
                            "index, journal, outbox; with storage.url, what stays local). "
                            "Created if missing.")
    storage: StorageConfig = Field(default_factory=StorageConfig)
    chains: list[ChainConfig] = Field(min_length=1)
    protocols: list[SerializeAsAny[ProtocolConfig]] = Field(default_factory=list)
    keeper: KeeperConfig = Field(default_factory=KeeperConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    oracles: OraclesConfig = Field(default_factory=OraclesConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _cross_references(self) -> Config:
        chain_names = [c.name for c in self.chains]
        dupes = {n for n in chain_names if chain_names.count(n) > 1}
        if dupes:
            raise ValueError(f"chain names must be unique; repeated: {sorted(dupes)}")
        ids = [c.chain_id for c in self.chains]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            # (two entries of one chain: two nonce sequences for one key, each taking the
            # other's transactions for another sender's — a crash's liquidations held, and a
            # key_in_use_elsewhere page, a by-hand trial)
            names = [c.name for c in self.chains if c.chain_id == twice[0]]
            again = [i for i, c in enumerate(self.chains) if c.chain_id == twice[0]][1]
            raise ValueError(
                f"@chains[{again}].chain_id: chain id {twice[0]} is configured twice "
                f"({', '.join(names)}): one chain, one entry (one nonce sequence for the "
                "key); fix: keep one chains[] entry and "
                f"point every protocol of it at that name (protocols[].chain: {names[0]})")
        proto_names = [p.name for p in self.protocols]
        dupes = {n for n in proto_names if proto_names.count(n) > 1}
        if dupes:
            raise ValueError(f"protocol names must be unique; repeated: {sorted(dupes)}")
        # One market under two names: evaluated twice, each name's liquidations racing the
        # other's (47 simulations failed) and its alerts told twice (a by-hand trial).
        seen: dict[tuple[str, ...], tuple[int, str]] = {}
        for i, p in enumerate(self.protocols):
            for what in _what_it_watches(p):
                first = seen.setdefault(what, (i, p.name))
                if first[0] != i:
                    raise ValueError(
                        f"@protocols[{i}]: {p.name} watches what protocols[{first[0]}] "
                        f"({first[1]}) watches ({' '.join(what[1:])} on {what[0]}): one "
                        "market under two names is evaluated twice, each racing the other's "
                        "liquidations; fix: keep one of them")
        pyth = self.oracles.pyth
        if pyth is not None and pyth.chain is not None and pyth.chain not in chain_names:
            raise ValueError(f"oracles.pyth.chain {pyth.chain!r} is not a configured chain "
                             f"(chains: {', '.join(chain_names) or 'none'})")
        return self

    @property
    def chain_protocols(self) -> list[Any]:
        """The on-chain protocols, each run by its plug-in (keeperd reads, evaluates and
        liquidates them); the rest are perp venues polled over their APIs."""
        from keeperd.protocols.registry import is_chain_protocol

        return [p for p in self.protocols if is_chain_protocol(p)]

    @property
    def perp_venues(self) -> list[HyperliquidConfig | DydxV4Config]:
        return [p for p in self.protocols if isinstance(p, HyperliquidConfig | DydxV4Config)]

    def chain(self, name: str) -> ChainConfig:
        for c in self.chains:
            if c.name == name:
                return c
        raise KeyError(name)


# --- loading --------------------------------------------------------------------------------

# What an unset variable stands as when the rest of a config is checked (`validate_config`):
# a string most fields take, URLs included; nothing keeperd could reach.
UNSET_STAND_IN = "http://unset-{n}.invalid"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


_BARE_REF = re.compile(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)")


def _bare_reference_field(path: str) -> str | None:
    """What a field holds, for the bare `$NAME` check: "name" (the name of a variable
    keeperd reads), "value" (an address, a path, a directory), or None (free text, headers,
    secrets: not looked at)."""
    last = re.sub(r"(\[\d+\])+$", "", path).rpartition(".")[2]
    if last == "env" or last.endswith("_env"):
        return "name"
    if last in ("state_dir", "rpc_urls", "url", "path") or last.endswith(
            ("_url", "_urls", "_file", "_dir", "_path")):
        return "value"
    return None


def name_like(name: str) -> bool:
    """An environment variable's name as they are written: capitals, digits, underscores."""
    return re.fullmatch(r"[A-Z_][A-Z0-9_]*", name) is not None


def _substitute(node: Any, path: str, env: dict[str, str], issues: list[ConfigIssue],
                unset_as: str = "", origins: dict[str, str] | None = None) -> Any:
    """Replace ${VAR} / ${VAR:-default} in every string of the parsed YAML tree; an unset
    variable is an issue, and `unset_as` in its place. `origins` gets, by path, where a
    value came from when a field's error would not show it: the variables that filled it,
    or a `$VAR` that was left as written (only `${VAR}` is a reference)."""
    if isinstance(node, dict):
        return {k: _substitute(v, _join(path, str(k)), env, issues, unset_as, origins)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, f"{path}[{i}]", env, issues, unset_as, origins)
                for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node
    if origins is not None:
        filled = [m.group(1) for m in _ENV_REF.finditer(node) if env.get(m.group(1))]
        if filled:
            origins[path] = ("its value comes from the environment: "
                             + ", ".join(f"${{{n}}}" for n in filled))
        # A `$NAME` left as written: the whole value (`state_dir: $KEEPERD_STATE_DIR` made a
        # directory of that name, and check-config said OK — a trial), or inside one a name
        # the environment sets (`http://$RPCHOST:8545`). Named, never the value: a `$`
        # inside a password is not echoed.
        # Only where a literal `$` has no business (an address, a path, a directory): not in
        # free text, headers or secrets, whose values are never echoed.
        kind = _bare_reference_field(path)
        whole = _BARE_REF.fullmatch(node.strip())
        if kind == "name" and whole:
            # (a field that names the variable: `${NAME}` there would put the secret itself
            # in the name, and its error would print it — a review)
            issues.append(ConfigIssue(path, f"names the variable keeperd reads: `{node.strip()}` "
                                      "is not a name", f"write `{whole.group(1)}`"))
        elif kind == "value":
            for name in ([whole.group(1)] if whole and name_like(whole.group(1)) else
                         [m.group(1) for m in _BARE_REF.finditer(_ENV_REF.sub("", node))
                          if env.get(m.group(1))])[:1]:
                issues.append(ConfigIssue(path, f"`${name}` is not a reference: only "
                                          f"`${{{name}}}` is filled in from the environment",
                                          f"write `${{{name}}}`"))

    def replace(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        # As the shell's `:-`: a variable set but empty takes the default too (an empty
        # line in a systemd EnvironmentFile, `docker -e NAME=`), and without one it is
        # named, not met as the field's own complaint about an empty value.
        if env.get(name):
            return env[name]
        if default is not None:
            return default
        unset = "is set but empty" if name in env else "is not set"
        if name not in env:
            # (a typo in the reference, or in the export: said by name, never by value)
            close = difflib.get_close_matches(name, [k for k, v in env.items() if v],
                                              n=1, cutoff=0.8)
            unset += f" (did you mean {close[0]}? it is set)" if close else ""
        issues.append(ConfigIssue(path, f"environment variable {name} {unset}",
                                  f"export {name}=... before starting keeperd, or write "
                                  f"${{{name}:-default}} to give a default"))
        if not unset_as:
            return ""
        return unset_as.format(n=len(issues))  # (each its own: two URLs are not one)

    result = _ENV_REF.sub(replace, node)
    # `key: ${OPTIONAL:-}` that resolves to nothing means "not set", not an empty string.
    if result == "" and _ENV_REF.fullmatch(node.strip()):
        return None
    return result


# What keeperd reads of the environment itself, beside a config's ${...} references.
OWN_VARIABLES = frozenset({"KEEPERD_DEVNET_DIR", "KEEPERD_PLUGINS", "KEEPERD_PROJECT_ROOT",
                           "KEEPERD_CRASH_AT", "KEEPERD_DEVNET_RPC", "KEEPERD_DEVNET_KEY"})


def referenced_variables(node: Any) -> set[str]:
    """The ${VAR} names a config tree (as written) refers to."""
    if isinstance(node, dict):
        return set().union(*(referenced_variables(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(referenced_variables(v) for v in node))
    return {m.group(1) for m in _ENV_REF.finditer(node)} if isinstance(node, str) else set()


def mistyped_variables(tree: Any, env: Mapping[str, str] | None = None) -> list[ConfigIssue]:
    """KEEPERD_* variables set that nothing reads and that are a letter or two from one the
    config does read: a typo (`KEEPERD_DEVNET_RCP`) left the config's default in force with no
    word — on a machine where another node answers the default, against the wrong chain (a
    by-hand trial). Only near misses are told: a variable another config reads is not one."""
    env = os.environ if env is None else env
    read = referenced_variables(tree)
    # (and the variables the config names to be read, not through ${...}: the key's, the
    # database password's)
    if isinstance(tree, dict):
        key = (tree.get("keeper") or {}).get("key") if isinstance(tree.get("keeper"), dict) \
            else None
        storage = tree.get("storage")
        read |= {str(v) for v in (key.get("env") if isinstance(key, dict) else None,
                                   storage.get("password_env") if isinstance(storage, dict)
                                   else None) if isinstance(v, str)}
    known = read | OWN_VARIABLES
    out = []
    for name in sorted(n for n in env if n.startswith("KEEPERD_") and n not in known):
        close = difflib.get_close_matches(name, sorted(read), n=1, cutoff=0.85)
        if close:
            out.append(ConfigIssue(
                "(environment)", f"{name} is set, and nothing reads it",
                f"did you mean {close[0]}? The config reads {close[0]}"
                + (" (unset: its default is in force)" if close[0] not in env else "")))
    return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _format_loc(loc: tuple[Any, ...]) -> str:
    """An error's location as the YAML's path: without the tag pydantic puts after a list's
    index or a field holding a tagged union (`keeper.key.file.path` is `keeper.key.path` in the
    file: its `source: file` is no level of its own), nor its validator frames."""
    out = ""
    after_union = False  # (the part before was a list's index or a tagged union's field)
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            after_union = True
            continue
        if after_union and part in _UNION_TAGS:
            after_union = False
            continue
        after_union = part in _UNION_FIELDS
        if isinstance(part, str) and (part.startswith("function-") or "[" in part):
            continue  # validator frames pydantic puts in the location
        out = _join(out, str(part))
    return out


def _model_fields(model: type[BaseModel]) -> Iterator[tuple[type[BaseModel], str]]:
    seen: set[type[BaseModel]] = set()
    stack = [model]
    while stack:
        m = stack.pop()
        if m in seen:
            continue
        seen.add(m)
        for name, field in m.model_fields.items():
            yield m, name
            for sub in _nested_models(field.annotation):
                stack.append(sub)


def _nested_models(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _nested_models(arg)
    meta = getattr(annotation, "__metadata__", None)
    if meta is not None:
        yield from _nested_models(getattr(annotation, "__origin__", None))


_ALL_FIELDS = sorted({name for _, name in _model_fields(Config)})


def _union_tags(model: type[BaseModel]) -> set[str]:
    """The discriminator values of every tagged union under `model` (protocol `kind`s, key
    `source`s, sink `kind`s...): pydantic puts the chosen one in an error's location, and the
    path shown to the user leaves it out. Derived from the models, so a new member of a union
    cannot be forgotten here."""
    def tagged(annotation: Any) -> Iterator[str]:  # (a callable discriminator's `Tag`s)
        for meta in getattr(annotation, "__metadata__", ()) or ():
            if isinstance(meta, Tag):
                yield meta.tag
        for arg in get_args(annotation):
            yield from tagged(arg)

    tags: set[str] = set()
    for m, name in _model_fields(model):
        annotation = m.model_fields[name].annotation
        if get_origin(annotation) is Literal and len(get_args(annotation)) == 1:
            tags.add(str(get_args(annotation)[0]))
        tags.update(tagged(annotation))
    return tags


_UNION_TAGS = _union_tags(Config)


def _union_fields(model: type[BaseModel]) -> set[str]:
    """The fields holding one tagged union member (not a list of them): their annotation,
    maybe optional, carries a discriminator."""
    def discriminated(annotation: Any) -> bool:
        for meta in getattr(annotation, "__metadata__", ()) or ():
            if getattr(meta, "discriminator", None) is not None:
                return True
        if get_origin(annotation) is list:
            return False
        return any(discriminated(a) for a in get_args(annotation))

    return {name for m, name in _model_fields(model)
            if discriminated(m.model_fields[name].annotation)
            or m.model_fields[name].discriminator is not None}


_UNION_FIELDS = _union_fields(Config)


# What a range error's fix says first, by the field's name (its unit).
_UNITS = (("_gwei", "the unit is gwei, not wei; "), ("_bps", "the unit is basis points "
          "(100 = 1 %); "), ("_s", "the unit is seconds; "), ("_usd", "the unit is dollars; "),
          ("deviation", "a fraction (0.05 = 5 %), not a percentage; "),
          ("_jump", "a fraction (0.25 = 25 %), not a percentage; "),
          ("_below", "whole tokens, not wei; "))


def _misspelt_required(errors: list[tuple[str, Any]]) -> dict[str, str]:
    """Unknown fields that are a near miss of a missing field beside them (`rpc_url:` for
    `rpc_urls:`), by the unknown field's path: one mistake, told once — as the unknown field,
    its fix naming the missing one."""
    missing = {where for where, err in errors if err["type"] == "missing"}
    out = {}
    for where, err in errors:
        if err["type"] != "extra_forbidden":
            continue
        parent, _, key = where.rpartition(".")
        siblings = [m.rpartition(".")[2] for m in missing if m.rpartition(".")[0] == parent]
        close = difflib.get_close_matches(key, siblings, n=1, cutoff=0.6)
        if close:
            out[where] = close[0]
    return out


def _fix_for(error: dict[str, Any]) -> str:
    kind = error["type"]
    loc = error["loc"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        close = difflib.get_close_matches(key, _ALL_FIELDS, n=1, cutoff=0.6)
        return (f"did you mean `{close[0]}`? " if close else "") + \
            "remove the field or check its spelling (`keeperd config-schema` lists them all)"
    if kind == "missing":
        return "add this field (`keeperd config-schema` shows what it takes)"
    if kind in ("int_parsing", "int_type", "int_from_float", "float_parsing", "float_type"):
        # ("500ms" for a poll interval: the unit is the field's, not written)
        field = str(loc[-1]) if loc else ""
        unit = next((text for suffix, text in _UNITS if field.endswith(suffix)),
                    "the unit is seconds; " if field.endswith("interval")
                    else "")
        whole = kind.startswith("int")
        return f"{unit}use a {'whole ' if whole else ''}number".replace("; use", ": use")
    if kind in ("bool_parsing", "bool_type"):
        return "use true or false"
    if kind in ("literal_error", "union_tag_invalid"):
        expected = error.get("ctx", {}).get("expected") or error.get("ctx", {}).get(
            "expected_tags")
        return f"use one of: {expected}" if expected else "use one of the allowed values"
    if kind == "union_tag_not_found":
        return f"add `{error.get('ctx', {}).get('discriminator', 'kind')}`"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        # (the unit first: a figure in the wrong one is the usual way past a bound)
        field = str(error.get("loc", ("",))[-1])
        unit = next((text for suffix, text in _UNITS if field.endswith(suffix)), "")
        return (f"{unit}bring the value into the allowed range (`keeperd config-schema` gives "
                "both ends of it)")
    if kind in ("too_short", "list_type"):
        return "give a list with at least one entry"
    if kind == "string_pattern_mismatch":
        pattern = str((error.get("ctx") or {}).get("pattern", ""))
        if "0x" in pattern and "{64}" in pattern:
            return "a 32-byte id: 0x and 64 hex digits (a Morpho market id, a Pyth feed id)"
        if "0x" in pattern and "{40}" in pattern:
            return "an address: 0x and 40 hex digits"
        return "use letters, digits, '.', '_' or '-' only"
    return ""


def parse_config(data: Any, source: str = "<config>",
                 env: dict[str, str] | None = None) -> Config:
    """Validate an already-parsed YAML/JSON tree. Raises ConfigError listing every problem."""
    config, issues = validate_config(data, source, env)
    if issues or config is None:
        raise ConfigError(source, issues)
    return config


def validate_config(data: Any, source: str = "<config>", env: dict[str, str] | None = None
                    ) -> tuple[Config | None, list[ConfigIssue]]:
    """Every problem of the tree, and the config it makes when the only problems are unset
    environment variables (those fields left empty: `keeperd check-config` checks the rest
    of what it would load, the key file, at once), or when there are none."""
    env = dict(os.environ) if env is None else env
    if not isinstance(data, dict):
        return None, [ConfigIssue("", "the file must hold a mapping (key: value)",
                                  "start from config/example.yaml")]
    # the file as written, before ${ENV} is filled in
    inline = (_inline_secret_issues(data) + _inline_metrics_token(data)
              + _key_in_name_issues(data) + _inline_key_issues(data))
    if any(i.message.startswith("holds what looks like") for i in inline):
        # (nothing else is validated: a field's own error could print the value)
        return None, [i for i in inline if i.message.startswith("holds what looks like")]
    issues: list[ConfigIssue] = []
    origins: dict[str, str] = {}
    written, data = data, _substitute(data, "", env, issues, origins=origins)
    # The rest is validated too, with the unset variables left empty: one run names every
    # problem (an unset RPC variable stopped it before a missing key file was told). What a
    # field says of its own empty value is left out: the unset variable is its problem.
    unset_at = {issue.path for issue in issues}
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        errors = [(_format_loc(tuple(err["loc"])), err) for err in exc.errors(include_url=False)]
        if unset_at and all(where in unset_at for where, _ in errors):
            # Nothing wrong but the unset ones: a config to check the rest of what would be
            # loaded (the key file) with a stand-in for them — never one to run (its issues).
            with contextlib.suppress(ValidationError):
                stand_in = Config.model_validate(_substitute(written, "", env, [],
                                                             UNSET_STAND_IN))
                return stand_in, (issues + _reference_issues(stand_in)
                                  + _flash_issues(stand_in) + _fund_issues(stand_in)
                                  + sink_id_issues(stand_in.alerts.routes) + inline)
        misspelt = _misspelt_required(errors)
        meant = {_join(w.rpartition(".")[0], name) for w, name in misspelt.items()}
        for where, err in errors:
            if where in unset_at or (err["type"] == "missing" and where in meant):
                continue  # (a required field misspelt: its unknown field's error says it)
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field"
            if msg.startswith("@"):  # a model's check naming the field below it
                below, _, msg = msg[1:].partition(": ")
                where = f"{where}.{below}" if where and not where.startswith("(") else below
            if _follows_from_unset(where, msg, unset_at):
                continue
            msg, _, fix = msg.partition("; fix: ")  # (a validator's own fix)
            if where in misspelt:
                fix = (f"did you mean `{misspelt[where]}`? It is required here, and missing "
                       "(`keeperd config-schema` shows what it takes)")
            if where in origins:  # (the file shows `${VAR}`: nothing wrong to see in it)
                note, _, note_fix = origins[where].partition("; fix: ")
                msg, fix = f"{msg} ({note})", note_fix or fix
            issues.append(ConfigIssue(where, msg, fix or _fix_for(dict(err))))
        # What the model's own cross-checks would say, read from the tree: they run only
        # once every field below them validated, and a run that stopped there told the
        # next problem only after this one was fixed (four runs, by hand).
        told = {i.path for i in issues}
        issues += [i for i in _tree_reference_issues(data) if i.path not in told]
        # (a field the inline checks told of is not told again by the model's words)
        inline_at = {i.path for i in inline}
        return None, [i for i in issues if i.path not in inline_at] + inline
    issues += (_reference_issues(config) + _flash_issues(config) + _fund_issues(config)
               + _watchlist_protocol_issues(config)
               + sink_id_issues(config.alerts.routes) + inline)
    return config, issues


def metrics_exposure_warnings(metrics: MetricsConfig) -> list[ConfigIssue]:
    """/metrics on an address beyond loopback with no bearer token: the book, the keeper's
    balances and its P&L to whoever reaches the port (accepted without a word: a by-hand
    trial)."""
    if not metrics.enabled or metrics.listen in ("127.0.0.1", "::1", "localhost") or \
            metrics.listen.startswith("127.") or metrics.bearer_token is not None or \
            metrics.bearer_token_file is not None:
        return []
    return [ConfigIssue("metrics.bearer_token", f"not set, and /metrics listens on "
                        f"{metrics.listen}: the positions, the keeper's balances and its P&L "
                        "to whoever reaches the port",
                        "set metrics.bearer_token (${ENV}) or bearer_token_file, and the same "
                        "in Prometheus's scrape config; or listen on 127.0.0.1")]


def operator_route_warnings(alerts: AlertsConfig) -> list[ConfigIssue]:
    """With no `operator_route`, the keeper's own alerts (cascade, oracle, RPC, keeper
    balance) go to the first route; when a watchlist's holders are on it, they get those
    too (as documented, and a surprise to a holder in a by-hand trial)."""
    if alerts.operator_route or not alerts.routes:
        return []
    first = alerts.routes[0].name
    lists = sorted({w.name for w in alerts.watchlists if w.route == first})
    rules = [r for r in RulesConfig.model_fields if alerts.route_for(r) == first]
    if not lists or not rules:
        return []
    shown = ", ".join(rules[:4]) + (f" and {len(rules) - 4} more" if len(rules) > 4 else "")
    return [ConfigIssue("alerts.operator_route", f"not set: the keeper's own alerts ({shown}) "
                        f"go to the first route, {first!r}, which watchlist(s) "
                        f"{', '.join(lists)} send holders' alerts to",
                        "set alerts.operator_route to a route of your own (or give each "
                        "rule its route under alerts.rules)")]


def keeper_of_tree(data: Any, env: dict[str, str] | None = None) -> KeeperConfig | None:
    """The `keeper` section alone, from a tree that may not validate as a whole (None when it
    does not validate itself): `check-config` checks its key on a config with other problems
    too, so that one run tells them all."""
    if not isinstance(data, dict) or not isinstance(data.get("keeper"), dict):
        return None
    env = dict(os.environ) if env is None else env
    try:
        return KeeperConfig.model_validate(_substitute(data["keeper"], "keeper", env, []))
    except ValidationError:
        return None


def _follows_from_unset(where: str, message: str, unset_at: set[str]) -> bool:
    """A model's complaint about a field left empty by its unset ${VAR} (a sink's "set
    exactly one of `bot_token` ... and `bot_token_file`"): the unset variable is the problem,
    already told, and the complaint's fix would send the user elsewhere."""
    prefix = f"{where}." if where and not where.startswith("(") else ""
    for path in unset_at:
        if path.startswith(prefix) and "." not in path[len(prefix):] \
                and f"`{path[len(prefix):]}`" in message:
            return True
    return False


def _tree_reference_issues(data: Any) -> list[ConfigIssue]:
    """`_reference_issues` and the alert routes' check on the tree as written, for a config
    that did not validate (best effort: a part of the wrong shape is left to the model's own
    errors)."""
    def named(items: Any) -> list[str]:
        return [str(i["name"]) for i in items if isinstance(i, dict) and "name" in i] \
            if isinstance(items, list) else []

    if not isinstance(data, dict):
        return []
    issues = []
    chains = named(data.get("chains"))
    protocols = data.get("protocols")
    for i, p in enumerate(protocols if isinstance(protocols, list) else []):
        chain = p.get("chain") if isinstance(p, dict) else None
        if isinstance(chain, str) and chains and chain not in chains:
            issues.append(_undefined_chain(i, chain, chains))
    alerts = data.get("alerts")
    if not isinstance(alerts, dict):
        return issues
    routes = named(alerts.get("routes"))
    used = []
    watchlists = alerts.get("watchlists")
    for i, w in enumerate(watchlists if isinstance(watchlists, list) else []):
        if isinstance(w, dict) and isinstance(w.get("route"), str):
            used.append((f"alerts.watchlists[{i}].route", w["route"]))
    if isinstance(alerts.get("operator_route"), str):
        used.append(("alerts.operator_route", alerts["operator_route"]))
    rules = alerts.get("rules")
    for rule, spec in (rules.items() if isinstance(rules, dict) else []):
        if isinstance(spec, dict) and isinstance(spec.get("route"), str):
            used.append((f"alerts.rules.{rule}.route", spec["route"]))
    issues += [_undefined_route(where, route, routes) for where, route in used
               if route not in routes]
    return issues


def _fund_issues(config: Config) -> list[ConfigIssue]:
    """risk.cascade.insurance_fund: a fund is one protocol's. One fund with several
    protocols was counted as each one's (three times the money, Curie's own on-chain fund
    replaced); a name that is no protocol's would be a fund no one uses."""
    fund = config.risk.cascade.insurance_fund
    names = [p.name for p in config.chain_protocols]
    where = "risk.cascade.insurance_fund"
    if fund is None:  # (checked with the cascade off too: `keeperd simulate` reads it)
        return []
    if isinstance(fund, FundConfig):
        if len(names) <= 1:
            return []
        written = ", ".join(f"{k}: {v:g}" if isinstance(v, float) else f"{k}: {v}"
                            for k, v in fund.model_dump(exclude_none=True).items())
        return [ConfigIssue(where, f"one fund for {len(names)} protocols ({', '.join(names)}): "
                            "it would be counted as each one's",
                            f"name the protocol whose fund it is, e.g. insurance_fund: "
                            f"{{{names[0]}: {{{written}}}}}")]
    issues = []
    for name in fund:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
            issues.append(ConfigIssue(
                f"{where}.{name}", f"no protocol named {name!r}",
                (f"did you mean {close[0]!r}? " if close else "")
                + f"the protocols are {', '.join(names) or 'none'}"))
    return issues


def _watchlist_protocol_issues(config: Config) -> list[ConfigIssue]:
    """A watchlist's `protocols` each names a configured protocol or perp venue: a typo was
    accepted and the watchlist covered nothing, its holders told nothing (a by-hand trial:
    `aave-devent` passed check-config)."""
    names = [p.name for p in config.protocols] + [v.name for v in config.perp_venues]
    issues = []
    for i, w in enumerate(config.alerts.watchlists):
        for j, name in enumerate(w.protocols or []):
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
                issues.append(ConfigIssue(
                    f"alerts.watchlists[{i}].protocols[{j}]",
                    f"no protocol or perp venue named {name!r}: watchlist {w.name!r} would "
                    "watch nothing there",
                    (f"did you mean {close[0]!r}? " if close else "")
                    + f"the protocols and venues are {', '.join(names) or 'none'}"))
    return issues


def _flash_issues(config: Config) -> list[ConfigIssue]:
    """`capital: flash-loan | auto` needs, per protocol, the contract its capital-free path
    goes through: Aave's `keeper.flash_liquidator`, Morpho's own `liquidator_contract` (with
    `auto`, a Morpho without one uses the keeper's balance), and the Uniswap factory both sell
    on. Each named by its field, with the fix (it was "(top level)", without one)."""
    keeper = config.keeper
    if keeper.capital == "own-balance":
        return []
    wanted = f"capital {keeper.capital!r}"
    issues: list[ConfigIssue] = []
    for i, p in enumerate(config.protocols):
        if isinstance(p, AaveV3Config) and keeper.flash_liquidator is None:
            issues.append(ConfigIssue(
                "keeper.flash_liquidator", f"{wanted} with protocol {p.name!r} (aave_v3) needs "
                "the address of your FlashLiquidator (contracts/FlashLiquidator.sol)",
                "deploy one (README.md, \"Mainnet quick start\") and set it here (the mainnet "
                "profiles read KEEPERD_FLASH_LIQUIDATOR), or use capital: own-balance"))
        if isinstance(p, MorphoBlueConfig) and p.liquidator_contract is None \
                and keeper.capital == "flash-loan":
            issues.append(ConfigIssue(
                f"protocols[{i}].liquidator_contract", f"{wanted} with protocol {p.name!r} "
                "(morpho_blue) needs its MorphoLiquidator (contracts/MorphoLiquidator.sol)",
                "set it, or use capital: auto to liquidate with the keeper's balance there"))
        uses_swap = isinstance(p, AaveV3Config) or (
            isinstance(p, MorphoBlueConfig) and p.liquidator_contract is not None)
        if uses_swap and keeper.uniswap_v3_factory is None:
            issues.append(ConfigIssue(
                "keeper.uniswap_v3_factory", f"{wanted} with protocol {p.name!r} needs the "
                "Uniswap V3 factory whose pools it sells the seized collateral on",
                "set the chain's UniswapV3Factory address"))
    return list({(i.path, i.message): i for i in issues}.values())


def _undefined_route(where: str, route: str, names: list[str]) -> ConfigIssue:
    """A route a field names that alerts.routes does not define (the model's check and the
    tree's, `_tree_reference_issues`)."""
    close = difflib.get_close_matches(route, names, n=1, cutoff=0.6)
    return ConfigIssue(where, f"route {route!r} is not defined under alerts.routes",
                       (f"did you mean {close[0]!r}? " if close else "")
                       + f"use one of {sorted(names)}, or add a route named {route!r} under "
                         "alerts.routes")


def _undefined_chain(i: int, chain: str, names: list[str]) -> ConfigIssue:
    return ConfigIssue(f"protocols[{i}].chain", f"no chain named {chain!r}",
                       f"use one of {names} or add a chain with that name under `chains`")


def _reference_issues(config: Config) -> list[ConfigIssue]:
    names = [c.name for c in config.chains]
    return [_undefined_chain(i, p.chain, names) for i, p in enumerate(config.protocols)
            if p.chain is not None and p.chain not in names]


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    """Read, substitute and validate a YAML config file."""
    return parse_config(read_config_tree(path), str(path), env)


def read_config_tree(path: str | Path) -> Any:
    """A config file's YAML tree, as written (ConfigError: unreadable, not YAML)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(str(path), [ConfigIssue("", "file not found",
                                                  "check the path given to --config")]) from None
    except OSError as exc:
        raise ConfigError(str(path), [ConfigIssue("", f"cannot read: {exc.strerror}",
                                                  "check the file's permissions")]) from None
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # (a SafeLoader)
    except DuplicateKey as exc:
        raise ConfigError(str(path), [ConfigIssue(exc.where, exc.message, exc.fix)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        fix = "fix the YAML syntax there"
        line = text.splitlines()[mark.line] if mark and mark.line < len(text.splitlines()) \
            else ""
        if re.search(r"[\[{,:]\s*\$\{", line) and re.search(r"[\[{]", line):
            # `{kind: telegram, bot_token: ${TG_TOKEN}}`, `[${RPC}]`: in YAML's flow style `{`
            # opens a mapping, so an unquoted reference there breaks it
            fix = ('quote the ${VAR} references inside { ... } or [ ... ] (flow style), e.g. '
                   'bot_token: "${TG_TOKEN}"')
        raise ConfigError(str(path), [ConfigIssue("", f"not valid YAML at {where}: {problem}",
                                                  fix)]) from None
    return data


class DuplicateKey(yaml.YAMLError):
    """A mapping of the file names one key twice. YAML's loaders keep the last silently: a
    snippet pasted below a profile, starting with its own `protocols:`, replaced the
    profile's protocols and `check-config` said OK (a by-hand trial)."""

    def __init__(self, key: str, first: int, again: int) -> None:
        super().__init__(key)
        self.where = key
        self.message = (f"written twice in one mapping (lines {first} and {again}): the "
                        "second would replace the first whole")
        self.fix = (f"merge the two `{key}:` blocks into one (a list's items under one "
                    "key), or remove one")


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader refusing a key written twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # (`<<:` merges are YAML's own way of writing keys again)
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, str | int | float | bool) and key in seen:
                raise DuplicateKey(str(key), seen[key], line)
            if isinstance(key, str | int | float | bool):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def config_json_schema() -> dict[str, Any]:
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "keeperd configuration"
    return schema
