"""`keeperd check-config`: validate the file, check what `keeperd run` would load on this
machine (the key, every secret file), then check it against the live chains."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from keeperd.chain import l1_fee
from keeperd.chain.connect import check_chain_ids, make_pool
from keeperd.chain.rpc import RpcError, RpcPool, RpcUnavailable
from keeperd.config import (
    AaveV3Config,
    ChainConfig,
    Config,
    ConfigError,
    ConfigIssue,
    KeeperConfig,
    MorphoBlueConfig,
    RemoteSignerKey,
    keeper_of_tree,
    metrics_exposure_warnings,
    mistyped_variables,
    operator_route_warnings,
    read_config_tree,
    validate_config,
    webhook_secret_problem,
)
from keeperd.devnet.anvil import DEFAULT_CHAIN_ID
from keeperd.execution.signer import RemoteSigner, SignerError
from keeperd.keys import KeyLoadError, SecretError, check_secret_file, load_key
from keeperd.metrics import Metrics
from keeperd.protocols import registry
from keeperd.protocols.sdk.contract import FieldProblem, Plugin, PluginContext, StartRefused
from keeperd.reload_guard import unheard_warnings
from keeperd.storage.account_index import IndexStore
from keeperd.storage.db import STATE_FILE, Database, PostgresDatabase, SqliteDatabase
from keeperd.storage.migrations import NAMES, ahead_said, applied_read_only
from keeperd.text import clip

# Per protocol or venue name: the accounts (lowercase) it holds a position for.
Holders = dict[str, set[str]]


def local_issues(config: Config) -> list[ConfigIssue]:
    """What `keeperd run` would refuse on this machine, offline: the keeper's key (loaded as
    run loads it, unless alert-only, which never reads it) and every file holding a secret
    (there, readable by this user, not empty, not readable by its group or others)."""
    issues = key_issues(config.keeper)
    for field, path in secret_files(config):
        try:
            check_secret_file(path, field)
        except SecretError as exc:
            issues.append(ConfigIssue(field, str(exc), exc.fix))
            continue
        if field.endswith(".secret_file"):  # a webhook's: as long as `run` requires
            problem = webhook_secret_problem(path.read_text().strip())
            if problem is not None:
                why, _, fix = problem.partition("; fix: ")
                issues.append(ConfigIssue(field, why, fix))
    return issues


def key_issues(keeper: KeeperConfig | None) -> list[ConfigIssue]:
    """The keeper's key, loaded as `run` loads it (unless alert-only, which never reads it;
    a remote signer is asked online: `signer_issues`)."""
    if keeper is None or keeper.key is None or keeper.mode == "alert-only" \
            or keeper.key.source == "remote":
        return []
    try:
        load_key(keeper.key)
    except KeyLoadError as exc:
        return [ConfigIssue(exc.field or "keeper.key", str(exc), exc.fix)]
    return []


async def signer_issues(config: Config) -> list[ConfigIssue]:
    """A remote signer answers and holds the keeper's account, as `keeperd run` checks."""
    source = config.keeper.key
    if not isinstance(source, RemoteSignerKey) or config.keeper.mode == "alert-only":
        return []
    async with RemoteSigner(source.url, source.address, timeout_s=source.timeout_s) as signer:
        try:
            await signer.check()
        except SignerError as exc:
            return [ConfigIssue("keeper.key", str(exc),
                                "check keeper.key.url, the signer, and keeper.key.address")]
    return []


def secret_files(config: Config) -> Iterator[tuple[str, Path]]:
    """(field path, file) of each secret kept in a file, but the key's (`load_key` checks
    those): every `*_file` of an alert sink, the PostgreSQL password file, the metrics
    token file."""
    for ri, route in enumerate(config.alerts.routes):
        for si, sink in enumerate(route.sinks):
            for name in type(sink).model_fields:
                path = getattr(sink, name)
                if name.endswith("_file") and path is not None:
                    yield f"alerts.routes[{ri}].sinks[{si}].{name}", path
    if config.storage.password_file is not None:
        yield "storage.password_file", config.storage.password_file
    if config.metrics.bearer_token_file is not None:
        yield "metrics.bearer_token_file", config.metrics.bearer_token_file


async def online_issues(config: Config, warnings: list[ConfigIssue] | None = None,
                        checked: list[str] | None = None) -> list[ConfigIssue]:
    """Problems only the chains can reveal: wrong chain ids, dead RPCs, addresses with no code.
    Watched accounts no configured protocol holds a position for go to `warnings`; what each
    protocol's start found and checked (its plug-in's `started`) to `checked`."""
    async with contextlib.AsyncExitStack() as stack:
        # (the state database, read only, for the chains' identity: `run` refused a state
        # directory check-config had passed — a trial's devnet started again)
        journal = await journal_reader(config, stack)
        return await _online_issues(config, journal, warnings, checked)


async def _online_issues(config: Config, journal: tuple[Database, str] | None,
                         warnings: list[ConfigIssue] | None, checked: list[str] | None
                         ) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    metrics = Metrics()
    holders: Holders = {}
    indexed: Holders = {}  # (every account each protocol's index knows)
    for ci, chain in enumerate(config.chains):
        async with make_pool(chain, metrics) as pool:
            checks = await check_chain_ids(pool, chain.chain_id)
            # As `run` judges them: a backup endpoint down or of another network is a warning
            # (run starts without it: check-config failed a deploy `run` would have made); the
            # first endpoint of another network, or none answering for this one, an error.
            answering = any(c.status == "ok" for c in checks)
            for check in checks:
                path = f"chains[{ci}].rpc_urls[{check.index}]"
                if check.status == "wrong_chain":
                    issue = ConfigIssue(path, f"{check.safe_url} {check.detail}",
                                        "point this URL at the right network or fix "
                                        f"chains[{ci}].chain_id")
                elif check.status == "unreachable":
                    issue = ConfigIssue(path, f"{check.safe_url} does not answer: "
                                        f"{check.detail}" + ("; run starts without it"
                                                             if answering else ""),
                                        "check the URL, the node and the firewall")
                else:
                    continue
                refused = not answering or (check.status == "wrong_chain" and check.index == 0)
                if refused:
                    issues.append(issue)
                elif warnings is not None:
                    warnings.append(issue)
            if not any(c.status == "ok" for c in checks):
                continue  # nothing to ask about contracts
            if journal is not None:
                issues += await chain_identity_issues(config, journal, chain, pool, checked)
            sound = len(issues)
            head = int(await pool.request("eth_blockNumber"), 16)
            for pi, proto in enumerate(config.protocols):
                if getattr(proto, "chain", None) == chain.name:
                    issues += await deployment_issues(pool, proto, pi, head)
            multicall = await pool.request("eth_getCode", [chain.multicall3, "latest"])
            if multicall in (None, "0x"):
                issues.append(ConfigIssue(f"chains[{ci}].multicall3",
                                          f"no Multicall3 at {chain.multicall3}",
                                          "deploy one or set the address of this chain's"))
                continue  # (every protocol reads through it: not started, not blamed)
            code_error, code_note = await keeper_code_issues(config, ci, pool)
            issues += code_error
            if code_note is not None and checked is not None:
                checked.append(code_note)
            gas_warning, gas_note = await keeper_gas(config, ci, pool)
            if warnings is not None:
                warnings += gas_warning
            if gas_note is not None and checked is not None:
                checked.append(gas_note)
            fee_error, fee_warning, fee_note = await l1_fee_issues(chain, ci, pool)
            issues += fee_error
            if warnings is not None:
                warnings += fee_warning
            if fee_note is not None and checked is not None:
                checked.append(fee_note)
            if len(issues) != sound:
                continue  # (no contract at some address: said; nothing started)
            # Each protocol started as run does, into an index in a temporary directory
            # (check-config never writes the daemon's state), then read for the watchlists.
            with tempfile.TemporaryDirectory(prefix="keeperd-check-") as tmp:
                store = await IndexStore.open(Path(tmp))
                try:
                    found, started = await start_issues(config, chain, pool, metrics, store)
                    issues += found
                    issues += await liquidator_issues(config, pool, started)
                    verifying = [config.protocols[pi].name for pi, running in started.items()
                                 if running.verification_at_start() is not None]
                    selling = [] if verifying else flash_sellers(config, chain.name)
                    if verifying or selling:
                        simulate_error, simulate_warning = await simulate_support_issues(
                            pool, ci, verifying, selling)
                        issues += simulate_error
                        if warnings is not None:
                            warnings += simulate_warning
                    if checked is not None:
                        for pi, running in started.items():
                            proto = config.protocols[pi]
                            checked.append(f"protocols[{pi}] {proto.name} ({proto.kind} on "
                                           f"{chain.name}): "
                                           f"{running.started() or 'started as run starts it'}")
                    if config.alerts.watchlists and not found:
                        holders |= await chain_holders(config, chain, pool, started, warnings,
                                                       indexed)
                finally:
                    await store.close()
    if warnings is not None:
        warnings += await reference_warnings(config)
    issues += await venue_issues(config, holders)
    issues += await storage_issues(config, checked)
    issues += await signer_issues(config)
    if warnings is not None:
        warnings += watchlist_warnings(config, holders, indexed)
    return issues


async def journal_reader(config: Config, stack: contextlib.AsyncExitStack
                         ) -> tuple[Database, str] | None:
    """The state database `run` would open, opened to read only, and where it is (as `run`
    names it): the state file without storage.url (None when there is none yet, or when it
    cannot be read: `sqlite_schema_issues` says so), else PostgreSQL in read-only
    transactions (None when it does not answer: `storage_issues` says so). Closed by
    `stack`."""
    if config.storage.url is None:
        path = config.state_dir / STATE_FILE
        try:
            if not path.is_file():
                return None
            local = SqliteDatabase.open_read_only(path)
        except (OSError, sqlite3.Error):
            return None
        stack.push_async_callback(local.close)
        return local, f"the state directory {config.state_dir}"
    from keeperd.storage.lease import with_password

    storage = config.storage
    try:
        dsn = with_password(storage.connect_url, storage.password())
        shared = await PostgresDatabase.connect(dsn,
                                                statement_timeout_s=storage.statement_timeout_s)
    except Exception:  # (said by storage_issues, with its reason)
        return None
    stack.push_async_callback(shared.close)
    try:
        # (nothing check-config does may write there: the session refuses it too)
        await shared.execute("SET default_transaction_read_only = on")
    except Exception:
        return None
    return shared, "storage.url"


async def chain_identity_issues(config: Config, journal: tuple[Database, str],
                                chain: ChainConfig, pool: RpcPool,
                                checked: list[str] | None = None) -> list[ConfigIssue]:
    """The chain is the one the state database's journal was kept on, judged as `run`
    judges it at start (`storage/chain_identity.py`: the genesis recorded, and how far the
    journal saw the chain by rows this keeper signed), with nothing written. A devnet
    started again passed check-config, and `run` then refused the state directory (a
    by-hand trial). A database that cannot be read so is said in `checked`, not refused."""
    from keeperd.execution.journal import Journal
    from keeperd.execution.reconcile import journal_last_block
    from keeperd.storage.chain_identity import FIX, OtherChain, check_chain

    db, where = journal
    # (as `run` has it: an alert-only keeper never reads its key, keeper.address says)
    address = (config.keeper.address if config.keeper.mode == "alert-only"
               else keeper_address(config))
    protocols = {p.name for p in config.chain_protocols if p.chain == chain.name}
    try:
        if not await applied_read_only(db):
            return []  # (no keeperd has started on it: nothing recorded)
        last = None if address is None else await journal_last_block(
            Journal(db), protocols, address, chain.chain_id)
        await check_chain(db, chain.name, chain.chain_id, pool, where, *(last or (None, None)),
                          record=False)
    except OtherChain as exc:
        said = str(exc).removesuffix(FIX).rstrip()
        return [ConfigIssue("storage.url" if where == "storage.url" else "state_dir",
                            f"{said} `keeperd run` refuses to start on it.", FIX)]
    except Exception as exc:  # (an older schema, a table unread: not this check's verdict)
        if checked is not None:
            checked.append(f"{where}: not checked against {chain.name} ({type(exc).__name__}: "
                           f"{clip(str(exc), 160)})")
        return []
    if checked is not None:
        checked.append(f"{where}: its journal is {chain.name}'s (its genesis and the blocks "
                       "it saw, as run checks them at start)")
    return []


async def reference_warnings(config: Config) -> list[ConfigIssue]:
    """Each reference source asked once (its first market): one that does not answer leaves
    the oracles' deviation check to the others, and with fewer than `min_sources` it is off
    (it went off silently with the shipped exchanges unreachable: a by-hand trial). Each
    says why it gave nothing (refused, timed out, an HTTP status, an answer that does not
    read) and which assets it prices: a bare "gave no price" left the operator guessing."""
    from keeperd.oracles.references import References

    found = []
    for i, source in enumerate(config.oracles.references):
        if not source.markets:
            continue
        refs = References([source], Metrics(), timeout_s=config.oracles.reference_timeout_s)
        try:
            answered = await refs.quotes(next(iter(source.markets)))
        finally:
            await refs.close()
        if not answered:
            asked = next(iter(source.markets))
            why = refs.last_failure.get(source.name, "an answer that does not read")
            others = [a for a in source.markets if a != asked]
            priced = asked + (f" (and {', '.join(others[:5])}"
                              f"{', …' if len(others) > 5 else ''})" if others else "")
            found.append(ConfigIssue(
                f"oracles.references[{i}]",
                f"{source.name} ({source.url}) gave no price for {asked}: {why}. While it "
                f"does not answer, the deviation check of {priced} rests on the other "
                f"sources alone, and is off for an asset fewer than "
                f"{config.oracles.min_sources} sources (oracles.min_sources) answer for",
                "check keeperd's access to it (a firewall, a proxy, the URL), or remove it"))
    return found


async def deployment_issues(pool: RpcPool, proto: Any, pi: int, head: int
                            ) -> list[ConfigIssue]:
    """A protocol's start block not past the head, and its plug-in's own check of its
    contracts (code at each address: the plug-in's `check_config`, which calls
    `protocols.sdk.checks.contract_issues`)."""
    issues = []
    start_block = getattr(proto, "start_block", 0) or 0
    if start_block > head:
        # (it indexed nothing and said nothing: a by-hand trial watched no one)
        issues.append(ConfigIssue(
            f"protocols[{pi}].start_block", f"{start_block} is past the chain's "
            f"head ({head}): nothing would be indexed, no position watched",
            "set it to the block the protocol's contracts were deployed at, or "
            "leave it out"))
    plugin = registry.plugin_class(proto.kind)
    if plugin is not None:  # (a perp venue has no contract to check)
        issues += await plugin.check_config(pool, proto, pi)
    return issues


async def restart_issues(config: Config, only: Collection[int], address: str | None
                         ) -> tuple[list[ConfigIssue], list[str]]:
    """The online checks check-config runs, for the protocols `only` (indices into
    `config.protocols`): what a reload that changed them runs (`restart_pending.py`), so a
    restart into them is known to start before it is made. Each one's chain answers for its
    id, its start block and contracts, its start as `run` starts it (a Morpho market that
    does not exist is refused there) and what its liquidator trusts (`address`: the
    keeper's, as the running daemon has it). (The issues, a line per protocol started.)"""
    issues: list[ConfigIssue] = []
    checked: list[str] = []
    metrics = Metrics()
    for ci, chain in enumerate(config.chains):
        wanted = {pi for pi in only if getattr(config.protocols[pi], "chain", None) == chain.name}
        if not wanted:
            continue
        async with make_pool(chain, metrics) as pool:
            if not any(c.status == "ok" for c in await check_chain_ids(pool, chain.chain_id)):
                names = ", ".join(config.protocols[pi].name for pi in sorted(wanted))
                issues.append(ConfigIssue(
                    f"chains[{ci}].rpc_urls", f"no endpoint answers for chain id "
                    f"{chain.chain_id}: {names} not checked",
                    "check the RPC endpoints (keeperd run waits for one)"))
                continue
            head = int(await pool.request("eth_blockNumber"), 16)
            found = []
            for pi in sorted(wanted):
                found += await deployment_issues(pool, config.protocols[pi], pi, head)
            if found:
                issues += found
                continue  # (no contract at some address: said; nothing started)
            with tempfile.TemporaryDirectory(prefix="keeperd-check-") as tmp:
                store = await IndexStore.open(Path(tmp))
                try:
                    failed, started = await start_issues(config, chain, pool, metrics, store,
                                                         wanted)
                    issues += failed
                    issues += await liquidator_issues(config, pool, started, address)
                finally:
                    await store.close()
            for pi, running in started.items():
                proto = config.protocols[pi]
                checked.append(f"protocols[{pi}] {proto.name}: "
                               f"{running.started() or 'started as run starts it'}")
    return issues, checked


def flash_sellers(config: Config, chain: str) -> list[str]:
    """The protocols on `chain` whose liquidations may sell the seized collateral in a swap
    pool (liquidate mode, capital flash-loan or auto, their seller contract set)."""
    keeper = config.keeper
    if keeper.mode != "liquidate" or keeper.capital == "own-balance":
        return []
    return [p.name for p in config.protocols if p.chain == chain and (
        (isinstance(p, AaveV3Config) and keeper.flash_liquidator is not None)
        or (isinstance(p, MorphoBlueConfig) and p.liquidator_contract is not None))]


async def simulate_support_issues(pool: RpcPool, ci: int, protocols: list[str],
                                  sellers: list[str] | None = None
                                  ) -> tuple[list[ConfigIssue], list[ConfigIssue]]:
    """Liquidations sent on the chain's word are simulated with `eth_simulateV1`: an endpoint
    that does not serve it fails every one of them (`simulation_failed`, nothing sent) — with
    v3.7's rules verified, every Ethereum Core liquidation. (errors: no endpoint serves it;
    warnings: some do not.) The flash paths' sales through one pool are simulated in turn
    with it (execution/sales.py): without it only a block's first sale through a pool goes
    (`sellers`: warnings only)."""
    probe = [{"blockStateCalls": [{"calls": []}]}, "latest"]
    lacking: list[tuple[int, str, str]] = []
    for i, ep in enumerate(pool.endpoints):
        try:
            await pool.call_endpoint(ep, "eth_simulateV1", probe)
        except RpcError as exc:
            if exc.code == -32601 or re.search(r"not (found|supported|available)|does not "
                                               r"exist|unknown method|unsupported",
                                               str(exc), re.I):
                lacking.append((i, ep.safe_url, str(exc)[:120]))
        except RpcUnavailable:
            continue  # (down: said with the chain ids)
    if not lacking:
        return [], []
    if not protocols:
        return [], [ConfigIssue(
            f"chains[{ci}].rpc_urls[{i}]", f"{url} does not serve eth_simulateV1 ({error}): "
            f"{', '.join(sellers or [])} sell what a liquidation seizes in a swap pool, and "
            "a block's later sales through one pool are simulated after its earlier ones "
            "with it; while this endpoint answers first, only the first sale through a pool "
            "goes each block (the rest wait: simulated alone they would pass and revert)",
            "use an endpoint that serves eth_simulateV1 (geth, reth, Nethermind, Erigon, most "
            "providers), or list one first") for i, url, error in lacking]
    names = ", ".join(protocols)
    told = [ConfigIssue(f"chains[{ci}].rpc_urls[{i}]", f"{url} does not serve eth_simulateV1 "
                        f"({error}): {names} send each liquidation only on a simulation of "
                        "it, which fails there", "use an endpoint that serves eth_simulateV1 "
                        "(geth, reth, Nethermind, Erigon, most providers), or list one first")
            for i, url, error in lacking]
    if len(lacking) == len(pool.endpoints):
        return told, []
    return [], told


async def keeper_gas(config: Config, ci: int, pool: RpcPool
                     ) -> tuple[list[ConfigIssue], str | None]:
    """In liquidate mode: the keeper's address and its gas on this chain, said (check-config
    said OK for a random key with no gas, and named no address: a by-hand trial); a warning
    under the keeper_balance rule's critical level."""
    address = keeper_address(config) if config.keeper.mode == "liquidate" else None
    if address is None:
        return [], None
    try:
        native = int(await pool.request("eth_getBalance", [address, "latest"]), 16) / 1e18
    except (RpcError, RpcUnavailable, ValueError):
        return [], None  # (an endpoint's trouble: said with the chain ids)
    note = f"keeper {address} on chains[{ci}] ({config.chains[ci].name}): {native:.6g} native"
    floor = config.alerts.rules.keeper_balance.critical_below
    if native > floor:
        return [], note
    return [ConfigIssue(f"chains[{ci}]", f"the keeper {address} holds {native:.6g} of the "
                        f"native token (under {floor:g}, alerts.rules.keeper_balance."
                        "critical_below): " + ("no transaction can be sent" if native == 0
                                               else "a crash's transactions would run out"),
                        "send it gas before liquidate mode needs it")], note


async def keeper_code_issues(config: Config, ci: int, pool: RpcPool
                             ) -> tuple[list[ConfigIssue], str | None]:
    """What the keeper's address runs on this chain (EIP-7702), judged as `run` judges it: an
    error when the key would sign nothing there (delegated to code not allowed, or contract
    code), else a line saying how it sends (waves through KeeperWave, one transaction in
    flight under another delegate). Only in liquidate mode: nothing else signs."""
    from keeperd.execution.delegation import read_code, refusal
    from keeperd.execution.wave_code import KNOWN_WAVE_ADDRESSES, WAVE_ADDRESS

    address = keeper_address(config) if config.keeper.mode == "liquidate" else None
    if address is None:
        return [], None
    try:
        code = read_code(await pool.request("eth_getCode", [address, "latest"]))
    except (RpcError, RpcUnavailable, ValueError) as exc:
        return [ConfigIssue(f"chains[{ci}].rpc_urls", f"the keeper's address's code could not "
                            f"be read ({exc}); run waits for it before sending",
                            "check the RPC endpoints")], None
    hold = refusal(address, code, frozenset(config.keeper.allowed_delegates), None)
    if hold is not None:
        return [ConfigIssue("keeper.allowed_delegates", hold.reason, hold.action)], None
    where = f"keeper {address} on chains[{ci}]"
    if code.delegate == WAVE_ADDRESS:
        return [], (f"{where}: delegated to KeeperWave ({WAVE_ADDRESS}): a block's "
                    "liquidations in one transaction")
    if code.delegate in KNOWN_WAVE_ADDRESSES:
        return [], (f"{where}: delegated to an earlier KeeperWave ({code.delegate}): one "
                    "liquidation a block until `keeperd wave delegate` moves it")
    if code.delegate is not None:
        return [], (f"{where}: delegated to {code.delegate} (keeper.allowed_delegates): one "
                    "transaction in flight at a time, one liquidation a block")
    return [], None


async def l1_fee_issues(chain: ChainConfig, ci: int, pool: RpcPool
                        ) -> tuple[list[ConfigIssue], list[ConfigIssue], str | None]:
    """Whether the chain prices the fees keeperd expects it to (chain/l1_fee.py), as `run`
    reads them: priced as an OP Stack chain, its GasPriceOracle must say what a
    liquidation-sized call pays, L1 data fee and operator fee (else an error: run would send
    nothing there); a chain keeperd does not know whose oracle answers, or a known one set to
    `none`, is a warning (its fee would go unpriced); what it charges now is the note.
    (errors, warnings, note)"""
    path = f"chains[{ci}].l1_data_fee"
    charges = l1_fee.charges_l1_fee(chain.chain_id, chain.l1_data_fee)
    if not charges and chain.l1_data_fee == "none":
        return [], [], None  # (a known OP Stack chain set so: warned offline)
    fee: int | Exception
    try:
        fee = await l1_fee.sample_fee(pool, chain.chain_id)
    except l1_fee.FeeUnread as exc:
        fee = exc
    size = len(l1_fee.SAMPLE_CALL)
    if charges and isinstance(fee, Exception):
        return [ConfigIssue(
            path, f"{chain.name} is priced as an OP Stack chain, and its GasPriceOracle "
            f"({l1_fee.GAS_PRICE_ORACLE}) did not say what a transaction pays ({fee}): "
            "keeperd would send no liquidation there",
            "check the RPC endpoints; if this chain is not an OP Stack chain, set "
            "l1_data_fee: none" + (" (on the devnet, `keeperd devnet l1-fee 20` places the "
                                   "oracle)" if chain.chain_id == DEFAULT_CHAIN_ID else "")
        )], [], None
    if charges and isinstance(fee, int):
        return [], [], (f"chains[{ci}] {chain.name}: the L1 data and operator fees are priced "
                        "into each liquidation from its GasPriceOracle "
                        f"({l1_fee.fee_text(fee)} now for a {size}-byte call)")
    if isinstance(fee, int) and fee > 0:
        return [], [ConfigIssue(
            path, f"{chain.name} (chain id {chain.chain_id}) answers as an OP Stack chain "
            f"(its GasPriceOracle prices a {size}-byte call at {l1_fee.fee_text(fee)}) but "
            "keeperd does not know it as one: its L1 data fee would not be priced",
            "set l1_data_fee: op-stack (or none if the chain charges no L1 data fee)")], None
    return [], [], None


def l1_fee_unpriced_warning(chain: ChainConfig, ci: int) -> ConfigIssue | None:
    """A chain keeperd knows as OP Stack set to `l1_data_fee: none` (no chain needed)."""
    reason = l1_fee.unpriced_reason(chain.chain_id, chain.l1_data_fee)
    if reason is None:
        return None
    return ConfigIssue(f"chains[{ci}].l1_data_fee", f"{chain.name}: {reason}",
                       "remove l1_data_fee (auto prices it)")


async def start_issues(config: Config, chain: ChainConfig, pool: RpcPool, metrics: Metrics,
                       store: IndexStore, only: Collection[int] | None = None
                       ) -> tuple[list[ConfigIssue], dict[int, Plugin]]:
    """Each protocol of the chain (of `only`, by index, when given) started as `keeperd
    run` starts it (its contracts read: an Aave addresses provider that answers like one,
    Morpho's markets that exist), into `store`. Code at an address was all that was
    checked: a wrong market id passed, and `run` then refused to start. Asked twice (one
    wrong answer is an endpoint's, not the config's). The issues, and the plug-ins started
    (by protocol index)."""
    issues: list[ConfigIssue] = []
    started: dict[int, Plugin] = {}
    for pi, proto in enumerate(config.protocols):
        if getattr(proto, "chain", None) != chain.name or (only is not None and pi not in only):
            continue
        error: Exception | None = None
        for _ in range(2):
            try:
                plugin = registry.create(proto, PluginContext(chain, pool, store, metrics))
                await plugin.start()
                started[pi], error = plugin, None
                break
            except Exception as exc:
                error = exc
        if isinstance(error, FieldProblem):  # (the field it names, and its fix)
            issues.append(ConfigIssue(f"protocols[{pi}].{error.field}",
                                      f"keeperd run would not start it: {error}"[:500],
                                      error.fix))
        elif error is not None:
            issues.append(ConfigIssue(
                f"protocols[{pi}]", f"keeperd run would not start it: "
                f"{type(error).__name__}: {error}"[:500],
                "check this protocol's addresses and ids against the chain (and the "
                "RPC endpoints: one may answer wrongly)"))
    return issues, started


def keeper_address(config: Config) -> str | None:
    """The keeper's address as `run` would have it (None when its key does not load: said by
    `local_issues`)."""
    source = config.keeper.key
    if isinstance(source, RemoteSignerKey):
        return source.address
    if source is None:
        return config.keeper.address
    try:
        return load_key(source).address
    except KeyLoadError:
        return None


async def liquidator_issues(config: Config, pool: RpcPool, started: dict[int, Plugin],
                            address: str | None = None) -> list[ConfigIssue]:
    """Each started protocol's liquidator confirms on the chain what its liquidations trust
    (`confirm`: the pool the keeper approves, a flash-liquidation contract, a vault), as
    `run` does before it sends anything; check-config sends nothing. A FlashLiquidator with
    no code passed check-config, and `run` refused to start (a by-hand trial). `address`:
    the keeper's, when known (else read from its key)."""
    if config.keeper.mode == "alert-only":
        return []
    issues: list[ConfigIssue] = []
    address = address or keeper_address(config)
    head = int(await pool.request("eth_blockNumber"), 16)
    for pi, plugin in started.items():
        liquidator = plugin.liquidator(config.keeper, address, None)
        if liquidator is None:
            continue  # (watched only)
        try:
            await liquidator.confirm(head)
        except StartRefused as exc:
            field, _, why = str(exc).partition(": ")
            issues.append(ConfigIssue(field if why else f"protocols[{pi}]", why or str(exc),
                                      "keeperd run refuses to start on it: fix the address, "
                                      "or deploy the contract it names"))
        except (RpcError, RpcUnavailable) as exc:  # (the endpoint's, said as such)
            issues.append(ConfigIssue(
                f"protocols[{pi}]", f"what its liquidations trust could not be confirmed: "
                f"{type(exc).__name__}: {exc}"[:500],
                "check the RPC endpoints (keeperd run asks the same at start)"))
    return issues


async def chain_holders(config: Config, chain: ChainConfig, pool: RpcPool,
                        started: dict[int, Plugin], warnings: list[ConfigIssue] | None,
                        indexed: Holders | None = None) -> Holders:
    """Each protocol of the chain (`started` by `start_issues`) read as `keeperd scan` reads
    it (its accounts indexed from `start_block`, every one read and evaluated at the head).
    A protocol that cannot be read is left out (and said): no account is called empty for
    want of reading it. `indexed` gets every account each protocol's index knows."""
    from keeperd.alerts.engine import holds_position

    holders: Holders = {}
    head = int(await pool.request("eth_blockNumber"), 16)
    for pi, plugin in started.items():
        proto = config.protocols[pi]
        try:
            await plugin.discover(head)
            view = plugin.evaluate(await plugin.read(head, None, set(), set()))
        except Exception as exc:  # reported; the account checks skip this protocol
            if warnings is not None:
                warnings.append(ConfigIssue(
                    f"protocols[{pi}]", f"its positions could not be read to check "
                    f"the watchlists: {type(exc).__name__}: {exc}", ""))
            continue
        holders[proto.name] = {
            a.lower() for i, a in enumerate(view.accounts)
            if holds_position(float(view.collateral_usd[i]), float(view.debt_usd[i]))}
        if indexed is not None:  # (every account its index knows: each held a position once;
            # the view leaves out what holds nothing now — Morpho's reader does)
            indexed[proto.name] = {a.lower() for a in plugin.accounts}
    return holders


def watchlist_warnings(config: Config, holders: Holders,
                       indexed: Holders | None = None) -> list[ConfigIssue]:
    """A watched account that no protocol its watchlist looks at holds a position for (no
    collateral, debt or perp margin): it can never alert, and is usually a typo. Only said
    when every one of those protocols was read: one that holds it is enough. One a
    protocol's index knows (`indexed`) held a position there and holds none now — liquidated,
    repaid or closed: said as that, not as a typo (a trial's check-config after a crash
    called its liquidated, correct addresses likely typos; the daemon did not)."""
    from keeperd.alerts.engine import account_keys

    held = {name: {k for a in accounts for k in account_keys(a)}
            for name, accounts in holders.items()}
    known = {name: {k for a in accounts for k in account_keys(a)}
             for name, accounts in (indexed or {}).items()}
    configured = {p.name for p in config.protocols}
    out: list[ConfigIssue] = []
    for wi, w in enumerate(config.alerts.watchlists):
        scope = configured if w.protocols is None else configured & set(w.protocols)
        if not scope <= held.keys():
            continue
        for ai, account in enumerate(w.accounts):
            if any(account.lower() in held[name] for name in scope):
                continue
            before = sorted(name for name in scope if account.lower() in known.get(name, ()))
            if before:
                out.append(ConfigIssue(
                    f"alerts.watchlists[{wi}].accounts[{ai}]",
                    f"{account} held a position on {', '.join(before)} and holds none now "
                    "(liquidated, repaid or closed): nothing to alert on until it opens one",
                    "nothing to fix; take it out of the watchlist if it is closed for good"))
            else:
                out.append(ConfigIssue(
                    f"alerts.watchlists[{wi}].accounts[{ai}]",
                    f"{account} holds no position in any protocol watchlist {w.name!r} looks "
                    f"at ({', '.join(sorted(scope)) or 'none is configured'}): it can never "
                    "alert",
                    "check the address (a typo reads as an empty account), or configure the "
                    "protocol it has its position on"))
    return out


def schema_report(versions: list[int] | None, where: str
                  ) -> tuple[list[str], list[ConfigIssue]]:
    """What check-config says of the state database's migrations, as read (`versions`: None
    for a database no keeperd has started on): the first start's one-way migration, which it
    did not say before an upgrade (trial 31), or the refusal of one a newer keeperd
    migrated."""
    if not versions:
        return [], []
    latest = NAMES[-1][0]
    ahead = sorted(set(versions) - {v for v, _ in NAMES})
    if ahead:
        problem, fix = ahead_said(ahead)
        return [], [ConfigIssue(where, f"{problem}, and keeperd run refuses it", fix)]
    if all(v in versions for v, _ in NAMES):
        return [], []
    return [f"storage: the database is at migration {max(versions)}; this keeperd migrates "
            f"it to {latest} at its first start (one way: an older keeperd must not run on "
            "it again — back it up first)"], []


async def sqlite_schema_issues(config: Config, checked: list[str] | None = None
                               ) -> list[ConfigIssue]:
    """The state file's migrations, read only, when it exists (without storage.url: with
    it, the shared database's are `storage_issues`')."""
    path = config.state_dir / STATE_FILE
    try:  # (a state directory of mode 0700, systemd's DynamicUser: not this user's to read)
        if config.storage.url is not None or not path.is_file():
            return []
        db = SqliteDatabase.open_read_only(path)
    except (OSError, sqlite3.Error) as exc:
        if checked is not None:
            checked.append(f"state_dir: {path} not read ({exc}): its migrations not checked "
                           "(run check-config as keeperd's user)")
        return []
    try:
        versions = await applied_read_only(db)
    except sqlite3.Error as exc:
        return [ConfigIssue("state_dir", f"cannot read the state file {path}: {exc}",
                            "check its permissions (keeperd's user reads and writes it)")]
    finally:
        await db.close()
    lines, ahead = schema_report(versions, "state_dir")
    if checked is not None:
        checked += lines
    return ahead


async def storage_issues(config: Config, checked: list[str] | None = None
                         ) -> list[ConfigIssue]:
    """With storage.url: PostgreSQL answers with these credentials and may hold the lease
    table (the connection keeperd's replicas will make, opened and closed); `checked` gets a
    line saying so, and who holds the leases (on success it said nothing of storage: a
    trial)."""
    storage = config.storage
    if storage.url is None:
        return []
    from keeperd.config import ConfigError
    from keeperd.storage.lease import Lease, redact_url, tls_hint, with_password

    try:
        password = storage.password()
    except ConfigError as exc:  # (its own issues: the variable named, and the fix)
        return list(exc.issues)
    except OSError as exc:
        return [ConfigIssue("storage.password_file", f"cannot read {storage.password_file}: "
                            f"{exc.strerror}", "point it at a file keeperd's user can read")]
    dsn = with_password(storage.connect_url, password)
    lease = Lease(dsn, "check-config",
                  length_s=storage.lease.length_s,
                  statement_timeout_s=storage.lease.statement_timeout_s)
    import asyncpg

    older_table = False
    try:
        await lease.connect(create=False)  # (nothing written: it reads a live database)
        rows, live = [], []
        try:
            rows = await lease.rows()
            live = await lease.live_elsewhere()
        except asyncpg.UndefinedTableError:  # (no replica has started on it yet)
            pass
        except asyncpg.UndefinedColumnError:  # (only an older keeperd's replicas so far)
            older_table = True
        db = await PostgresDatabase.connect(dsn, statement_timeout_s=storage.statement_timeout_s)
        try:
            versions = await applied_read_only(db)
        finally:
            await db.close()
    except Exception as exc:
        # (a parser's ValueError quotes the URL's pieces — a password typed in the port's
        # place among them: its type alone; the server's own refusals say what they say)
        said = (type(exc).__name__ if isinstance(exc, ValueError | OverflowError)
                and not isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError) else
                f"{type(exc).__name__}: {exc}")
        return [ConfigIssue("storage.url", f"PostgreSQL at {redact_url(storage.url)} refused: "
                            f"{said}{tls_hint(exc)}",
                            "check the host, the database, the user and its password (and "
                            "that the user may create tables)")]
    finally:
        await lease.close()
    if checked is not None:
        held = "; ".join(f"{r.identity} held by {r.holder} (epoch {r.epoch})" for r in rows
                         if r.expires_in_s > 0)
        checked.append(f"storage: PostgreSQL at {redact_url(storage.url)} answered; "
                       + (f"leases: {held}" if held else "no replica holds a lease now"))
        # (a live lease of a keeperd from before `mode` was written with it, or before the
        # table had the column)
        if any(mode is None for _, _, mode, _ in live) or (
                older_table and any(r.expires_in_s > 0 for r in rows)):
            checked.append("storage: the replica leading runs an older keeperd: see "
                           "docs/operations.md, Upgrade")
    lines, ahead = schema_report(versions, "storage.url")
    if checked is not None:
        checked += lines
    if ahead:
        return ahead
    # As `run` judges joining the replicas leading there (check-config said OK of a replica
    # run then refused: another mode, another key: a by-hand trial)
    from keeperd.storage.lease import identity_of, mismatch
    from keeperd.storage.shared_config import shared_config

    address = keeper_address(config) or config.keeper.address or "watch"
    refused = mismatch(identity_of(address, [c.chain_id for c in config.chains]), address,
                       config.keeper.mode, live, shared_config(config), starting=True)
    if refused is not None:
        where, _, why = refused.partition(": ")
        return [ConfigIssue(where, why, "keeperd run refuses to start beside that lease: "
                            "make this replica's config match the leader's (above)")]
    return []


async def venue_issues(config: Config, holders: Holders | None = None) -> list[ConfigIssue]:
    """Perp venues answer, and every watched account reads (an empty account is a warning
    sign of a typo, so it is reported too). `holders` gets each venue's non-empty accounts."""
    import aiohttp

    from keeperd.protocols.perps.http import VenueError
    from keeperd.protocols.perps.venues import read_accounts

    issues: list[ConfigIssue] = []
    async with aiohttp.ClientSession() as session:
        for venue in config.perp_venues:
            pi = config.protocols.index(venue)
            url_field = "api_url" if hasattr(venue, "api_url") else "indexer_url"
            try:
                read = await read_accounts(venue, session)
            except (VenueError, KeyError, ValueError, TypeError) as exc:
                issues.append(ConfigIssue(f"protocols[{pi}].{url_field}",
                                          f"{venue.name} did not answer usefully: {exc}",
                                          "check the URL (the public endpoint is the default) "
                                          "and that this machine may reach it"))
                continue
            accounts = read.accounts
            for unread in read.unread:  # (its answer does not read: the venue's fault)
                holder = unread.account.split("@", 1)[0].split("/", 1)[0]
                index = next((i for i, a in enumerate(venue.accounts)
                              if a.lower() == holder.lower()), None)
                issues.append(ConfigIssue(
                    f"protocols[{pi}].accounts[{index}]" if index is not None
                    else f"protocols[{pi}].{url_field}",
                    f"{venue.name}'s answer for {unread.account} does not read: "
                    f"{unread.field}: {unread.why}",
                    "the venue answered a number that cannot be; keeperd keeps such an "
                    "account's alerts as they were and raises venue_down: check the venue"))
            if holders is not None:
                # (an unread account is unknown, not empty: not said to be a typo)
                holders[venue.name] = {a.account.lower() for a in accounts
                                       if a.positions or a.account_value != 0} | {
                    u.account.lower() for u in read.unread}
            for account in accounts:
                if not account.positions and account.account_value == 0:
                    index = venue.accounts.index(account.account)
                    issues.append(ConfigIssue(
                        f"protocols[{pi}].accounts[{index}]",
                        f"{account.account} has no positions and no equity on {venue.name}",
                        "check the address (a typo reads as an empty account)"))
    return issues


def check_config(path: Path, online: bool = True,
                 warn: Callable[[ConfigIssue], None] | None = None,
                 checked: list[str] | None = None) -> Config:
    """Raise ConfigError with every problem found; return the config when it is sound.
    Warnings (online: watched accounts without a position) go to `warn`, or to stderr; what
    was found and checked on the chains (a line per protocol) to `checked`."""
    tree = read_config_tree(path)
    config, issues = validate_config(tree, str(path))
    if config is None:
        # (the key too, when its section is sound: one run tells every problem)
        keeper = keeper_of_tree(tree)
        told = {i.path for i in issues}
        issues += [i for i in key_issues(keeper) if keeper is not None
                   and not any(i.path == t or i.path.startswith(f"{t}.") for t in told)]
        raise ConfigError(str(path), issues)
    # (with unset variables the key and secret files are checked too; the chains are not:
    # their URLs may be what is unset)
    unset = {issue.path for issue in issues}
    issues += [i for i in local_issues(config) if i.path not in unset]
    issues += asyncio.run(sqlite_schema_issues(config, checked))
    warnings: list[ConfigIssue] = operator_route_warnings(config.alerts)
    warnings += metrics_exposure_warnings(config.metrics)
    warnings += unheard_warnings(config)
    warnings += mistyped_variables(tree)
    warnings += [w for ci, chain in enumerate(config.chains)
                 if (w := l1_fee_unpriced_warning(chain, ci)) is not None]
    if online and not unset:
        issues += asyncio.run(online_issues(config, warnings, checked))
    for w in warnings:
        if warn is not None:
            warn(w)
        else:
            print(f"{path}: warning: {w}", file=sys.stderr)
    if issues:
        raise ConfigError(str(path), issues)
    return config
