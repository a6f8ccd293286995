"""`keeperd status`: what the daemon is doing, read from its state directory.

Works whether the daemon runs or not: the daemon rewrites status.json every few seconds
(liveness, readiness, heads, accounts); the SQLite database holds the index and the journal.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, get_args

from keeperd.config import (
    Config,
    ConfigIssue,
    KeeperConfig,
    KeeperMode,
    _substitute,
    parse_config,
    read_config_tree,
)
from keeperd.storage.db import STATE_FILE, SqliteDatabase
from keeperd.storage.summary import summarize
from keeperd.text import clip

_NO_CHAIN = {"name": "status", "chain_id": 1, "rpc_urls": ["http://127.0.0.1:1"]}
_MODES = get_args(KeeperMode)
_DEFAULT_MODE = str(KeeperConfig.model_fields["mode"].default)
UNKNOWN_MODE = "unknown"  # the file's keeper.mode, unresolved in this shell (or not a mode)
STALE_AFTER_S = 60.0  # a status.json older than this is not a running daemon's


def status_config(path: str | Path) -> tuple[Config, str]:
    """The config as `keeperd status` needs it — where the state is — without the secrets a
    running daemon needs (alert tokens, webhook secrets, the key, provider keys in RPC URLs):
    the operator asking what the daemon does may not hold them. Returns the config and the
    keeper mode the file says (the running daemon's own comes from status.json).

    The mode is read on its own — its ${ENV} filled in, checked against the modes — never by
    validating a `keeper` section: that would demand the key (or address) `liquidate` and
    `dry-run` need, which status does not use. A mode this shell cannot resolve (a variable
    only the daemon's environment has) is `unknown`, not an error: the state is still read."""
    path = Path(path)
    data = read_config_tree(path)  # (as `run` reads it: a key written twice refused)
    if not isinstance(data, dict):
        return parse_config(data, str(path)), UNKNOWN_MODE  # (says what is wrong)
    # Only where the state is: the chains, protocols, alerts and key (and the variables they
    # name, provider keys in RPC URLs among them) do not matter to reading it.
    reduced = {"state_dir": data.get("state_dir"), "chains": [_NO_CHAIN],
               "keeper": {"mode": "alert-only"},
               **({"storage": data["storage"]} if "storage" in data else {})}
    return parse_config(reduced, str(path)), file_mode(data.get("keeper"))


def file_mode(keeper: Any, env: dict[str, str] | None = None) -> str:
    """The mode a config's `keeper` section says, with this environment's variables (by
    default the process's): one of the keeper modes, or `unknown`."""
    if not isinstance(keeper, dict) or keeper.get("mode") is None:
        return _DEFAULT_MODE
    issues: list[ConfigIssue] = []
    mode = _substitute(keeper["mode"], "keeper.mode", dict(os.environ) if env is None else env,
                       issues)
    if mode is None and not issues:  # `${KEEPERD_MODE:-}` unset: the field's default
        return _DEFAULT_MODE
    return mode if not issues and mode in _MODES else UNKNOWN_MODE


def pid_running(pid: int) -> bool:
    """Whether a process with this pid exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def daemon_state(status: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """What status.json says of the daemon. Only a running daemon (its pid exists, the file
    fresh) is ready, alive or doing something; a stopped or killed one left the file with its
    last words, kept apart under `last_report` (with the mode it ran in)."""
    now = time.time() if now is None else now
    pid = status.get("pid")
    age = now - float(status.get("updated_at", 0))
    exists = isinstance(pid, int) and pid > 0 and pid_running(pid)
    if exists and age < STALE_AFTER_S:
        return {"running": True, "pid": pid, "status_age_s": round(age, 1),
                "mode": status.get("mode"), "ready": status.get("ready"),
                "alive": status.get("alive"), "status": status.get("status"),
                "detail": status.get("detail"),
                "restart_pending": status.get("restart_pending")}
    note = (f"pid {pid} exists but has not written status.json for {age:,.0f} s: hung, or "
            "the pid is another process's now" if exists
            else f"last status.json {age:,.0f} s ago, from pid {pid}")
    return {"running": False, "ready": False, "alive": False, "note": note,
            "last_report": {"pid": pid, "age_s": round(age, 1), "mode": status.get("mode"),
                            "ready": status.get("ready"), "alive": status.get("alive"),
                            "status": status.get("status")}}


def collect(config: Config, config_mode: str | None = None) -> dict[str, Any]:
    """`mode` is the running daemon's (`mode_source` daemon) or else the config's as this
    shell reads it (`mode_source` config); a stopped daemon's is its `last_report`'s."""
    state = config.state_dir
    config_mode = config_mode or config.keeper.mode
    out: dict[str, Any] = {"state_dir": str(state), "mode": config_mode, "mode_source": "config",
                           "config_mode": config_mode}
    status_file = state / "status.json"
    if status_file.is_file():
        daemon = out["daemon"] = daemon_state(json.loads(status_file.read_text()))
        if daemon["running"] and daemon.get("mode"):
            out["mode"], out["mode_source"] = daemon["mode"], "daemon"
    else:
        note = "no status.json: never started here"
        if not state.is_absolute():
            # (config/devnet.yaml's `.devnet/keeperd-state`: asked from another directory,
            # a running daemon looked as if it had never started)
            note += (f" — state_dir {state} is relative, read from {Path.cwd()}: run this "
                     "from the directory keeperd runs in, or set KEEPERD_STATE_DIR")
        out["daemon"] = {"running": False, "ready": False, "alive": False, "note": note}
    db_path = state / STATE_FILE
    if db_path.is_file():
        out.update(_run(_local_summary(db_path)))
    if config.storage.url is not None:
        shared = _shared(config)
        if "replicas_error" in shared:
            # The journal and the alerts live on PostgreSQL: the local file's empty tables
            # read as "none yet", "0 pending" during an outage that hid 114 liquidations
            # (a by-hand trial). Unknown, said as such.
            for key in SHARED_KEYS:
                out.pop(key, None)
            out["shared_unknown"] = True
        out.update(shared)
    return out


# What `summarize` reads from the tables that live on PostgreSQL when storage.url is set.
SHARED_KEYS = ("liquidations", "by_protocol", "last_liquidations", "alerts_firing", "outbox",
               "breakers", "holdings")


def _run(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run a read to its end from plain code, or from code that a loop runs (a test, a web
    handler): then on a thread of its own, with a loop of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _local_summary(path: Path) -> dict[str, Any]:
    """The embedded database's summary (`storage/summary.py`, the same as PostgreSQL's)."""
    db = SqliteDatabase.open_read_only(path)
    try:
        return await summarize(db)
    finally:
        await db.close()


def _shared(config: Config) -> dict[str, Any]:
    """With storage.url the journal and the lease are on PostgreSQL: read them there."""
    from keeperd.storage.admin import StorageError, shared_status

    try:
        return _run(shared_status(config))
    except (StorageError, OSError) as exc:
        return {"replicas_error": str(exc)}


def _counts(counts: dict[str, int]) -> str:
    """{'included': 46, 'dry_run': 3} -> 'included 46, dry_run 3' (most first)."""
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def _usd(value: float) -> str:
    return f"${value:,.2f}"


def _mode_line(info: dict[str, Any]) -> str:
    """The mode and whose it is: the running daemon's, or this shell's reading of the config
    (beside the mode a stopped daemon last ran in, when status.json recorded it)."""
    d = info["daemon"]
    mode, config_mode = info["mode"], info.get("config_mode")
    if d.get("running") and info.get("mode_source") == "daemon":
        if config_mode == UNKNOWN_MODE:
            return (f"{mode} (running; the config file's keeper.mode does not resolve to a "
                    "mode with this shell's environment)")
        if config_mode and config_mode != mode:
            return (f"{mode} (running; the config file, with this shell's environment, says "
                    f"{config_mode}: a variable the daemon had may be unset here)")
        role = ((d.get("detail") or {}).get("replica") or {}).get("role")
        if role == "standby" and mode != "alert-only":
            # (a standby said "doing liquidate", though it sends nothing: a by-hand trial)
            return f"{mode} once leading (the running daemon's; a standby sends nothing)"
        return f"{mode} (the running daemon's)"
    if mode == UNKNOWN_MODE:
        text = ("unknown (the config's keeper.mode does not resolve to a mode with this "
                "shell's environment)")
    else:
        text = f"{mode} (the config's, read with this shell's environment)"
    last = (d.get("last_report") or {}).get("mode")
    if last:
        text += (f"; the daemon last seen here ran in {last}" if last != mode
                 else "; the daemon last seen here ran in it too")
    return text


def restart_line(pending: dict[str, Any], now: float | None = None) -> str:
    """What a reload read that waits for a restart (`restart_pending.py`), with the check of
    the protocols it changed: the reload's log line was the only word of it (a trial)."""
    now = time.time() if now is None else now
    age = max(0.0, now - float(pending.get("since") or now))
    changes = pending.get("changes") or []
    text = (f"{', '.join(pending.get('sections') or [])} changed in the file "
            f"(reloaded {age / 60:,.0f} min ago"
            + (f": {clip('; '.join(changes), 200)}" if changes else "") + ")")
    check = pending.get("check")
    if check == "would fail":
        text += (" — a restart WOULD FAIL: " + clip(" | ".join(pending.get("problems") or []),
                                                    400)
                 + "; correct the file and reload")
    elif check == "ok":
        text += f" — checked, a restart would start them; {pending.get('fix')}"
    else:
        text += f" — {check}; {pending.get('fix')}"
    return text


def render(info: dict[str, Any]) -> str:
    d = info["daemon"]
    lines = [f"state directory  {info['state_dir']}", f"mode             {_mode_line(info)}"]
    if d.get("running"):
        detail = d.get("detail") if isinstance(d.get("detail"), dict) else {}
        # (why not ready, as /readyz says it: status said "NOT ready" alone, a trial)
        why = "; ".join(f"{name}: {v['why']}" for name, v in detail.items()
                        if isinstance(v, dict) and v.get("why"))
        if isinstance(detail.get("starting"), str):  # (a start under way: what it waits for)
            why = detail["starting"]
        lines.append(f"daemon           running (pid {d['pid']}), "
                     f"{'ready' if d.get('ready') else 'NOT ready'}"
                     + (f" ({clip(why, 200)})" if why and not d.get("ready") else "")
                     + f", {'alive' if d.get('alive') else 'NOT alive'}")
        lines.append(f"doing            {d.get('status')}")
        if isinstance(d.get("restart_pending"), dict):
            lines.append(f"restart pending  {restart_line(d['restart_pending'])}")
    else:
        lines.append("daemon           not running" + (f" ({d['note']})" if "note" in d else ""))
    for protocol, idx in info.get("index", {}).items():
        lines.append(f"index            {protocol}: {idx['accounts']} accounts up to block "
                     f"{idx['indexed_block']}")
    for r in info.get("replicas", []):
        state = (f"lease expires in {r['expires_in_s']} s" if r["expires_in_s"] > 0
                 else f"lease EXPIRED {-r['expires_in_s']} s ago: no replica acts")
        lines.append(f"replicas         {r['identity']}: leader {r['holder']} (epoch "
                     f"{r['epoch']}), {state}")
    if "replicas_error" in info:
        lines.append(f"replicas         unknown: {info['replicas_error']}")
    if info.get("shared_unknown"):
        lines.append("liquidations     unknown (PostgreSQL unreachable: the journal is there)")
        lines.append("alerts           unknown (PostgreSQL unreachable: the alert state and "
                     "outbox are there)")
    role = ((d.get("detail") or {}).get("replica") or {}).get("role") if d.get("running") \
        else None
    if role:
        lines.append(f"this replica     {role}")
    if "liquidations" in info:
        lines.append(f"liquidations     {_counts(info['liquidations']) or 'none yet'}")
        for protocol, p in info.get("by_protocol", {}).items():
            # (a takeover's row realises its gas only: what it gains is booked on the unwind
            # that closes its position, which `latest` does not list)
            extra = (f", {p['housekeeping']} housekeeping (unwinds: a takeover's gain is "
                     "realised there)" if p["housekeeping"] else "")
            lines.append(f"  {protocol}: {_counts(p['liquidations']) or 'none'}; "
                         f"{p['accounts_liquidated']} accounts liquidated, realised P&L "
                         f"{_usd(p['realised_pnl_usd'])}{extra}")
        if info.get("last_liquidations"):
            lines.append("  latest         status            protocol     account"
                         "                                     pair          expected profit"
                         " realised (net of fees)")
        for row in info.get("last_liquidations", []):
            realised = row.get("realised_profit_usd")
            lines.append(f"                 {row['status']:<17} {row['protocol']:<12} "
                         f"{row['account']:<43} {row['collateral']}/{row['debt']:<12} "
                         f"{_usd(row['expected_profit_usd']):>15}"
                         f"  {'-' if realised is None else _usd(realised):>21}"
                         + (f" (won by {row['winner']})" if row["winner"] else ""))
    if info.get("holdings"):
        # (what the keeper's own liquidations left it holding — Curie's takeovers until
        # unwound: a protocol is removed from the config only once nothing is held there;
        # no line when nothing is: alert-only reads none, and "nothing" would say it did)
        held: dict[str, list[str]] = {}
        for h in info["holdings"]:
            held.setdefault(h["protocol"], []).append(f"{h['holding']} (block {h['block']})")
        lines.append("keeper holds     " + "; ".join(f"{p}: {', '.join(v)}"
                                                     for p, v in held.items()))
    if "breakers" in info:
        paused = [f"{b['asset']} on {'every chain' if b['chain'] == '*' else b['chain']} "
                  f"({'by hand: ' if b['manual'] else ''}"
                  f"{clip(b['reason'], 160)})" for b in info["breakers"]]
        lines.append("assets paused    " + ("; ".join(paused) + " — its liquidations are held "
                                            "(keeperd breaker list)" if paused else "none"))
    firing = info.get("alerts_firing")
    if firing is not None:
        by_rule: dict[str, int] = {}
        for a in firing:
            by_rule[f"{a['rule']}/{a['severity']}"] = by_rule.get(
                f"{a['rule']}/{a['severity']}", 0) + 1
        lines.append(f"alerts firing    {_counts(by_rule) or 'none'}")
    if "outbox" in info:
        o = info["outbox"]
        wait = f", oldest waiting {o['oldest_pending_s']} s" if o["oldest_pending_s"] else ""
        lines.append(f"alert outbox     {o['pending']} pending{wait}, {o['dead']} dead "
                     f"(keeperd alerts retry), {o['delivered']} delivered")
    return "\n".join(lines)
