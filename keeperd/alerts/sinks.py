"""Where alerts go: Telegram, a signed JSON webhook, Slack, Discord, Prometheus Alertmanager.

Each sink turns one outbox entry (one alert, or a group) into the platform's requests and
classifies the answer: accepted, try again later (with the platform's own `retry_after` when it
gives one), or refused for good (a bad token, an unknown chat: retrying cannot help). Multi-part
messages report how many parts were accepted, so a retry never re-sends a part.

Error strings never carry a URL's secret parts: the Telegram token sits in the request path and
Slack/Discord webhook URLs are themselves credentials.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from keeperd import __version__
from keeperd.alerts.render import Markup, render_parts, title
from keeperd.chain.rpc import redact_url
from keeperd.config import (
    AlertmanagerSinkConfig,
    DiscordSinkConfig,
    SinkConfig,
    SlackSinkConfig,
    TelegramSinkConfig,
    WebhookSinkConfig,
    webhook_secret_problem,
)
from keeperd.iokit import classify_http, loads_shallow, parse_retry_after, read_bounded
from keeperd.logs import MIN_SECRET_CHARS

SINK_ANSWER_BYTES = 64 * 1024
TELEGRAM_LIMIT = 4096  # characters of text per sendMessage, after entity parsing
DISCORD_LIMIT = 2000
SLACK_LIMIT = 4000  # Slack truncates a message's text beyond 40,000; it advises 4,000
USER_AGENT = f"keeperd/{__version__}"


@dataclass(frozen=True)
class Delivery:
    ok: bool
    parts_done: int = 0  # of a multi-part message, how many the platform accepted
    retry_after: float | None = None  # the platform said when to come back
    permanent: bool = False  # refused for good: dead-letter now
    refused: bool = False  # refused (401/403/404...): retried for outbox.refused_retry_s
    error: str = ""


class SinkError(Exception):
    pass


def read_secret(inline: str | None, path: Path | None, what: str) -> str:
    if inline is not None:
        return inline
    assert path is not None
    from keeperd.keys import SecretError, check_secret_file

    try:  # (what `check-config` checks: present, readable, private, not empty)
        check_secret_file(path, f"{what}_file")
        value = path.read_text().strip()
    except SecretError as exc:
        raise SinkError(f"{what}_file {path}: {exc}" + (f"; fix: {exc.fix}" if exc.fix else "")
                        ) from None
    except OSError as exc:
        raise SinkError(f"{what}_file {path}: cannot read it ({exc.strerror})") from None
    return value


class Sink(Protocol):
    kind: str
    group: bool
    secrets: tuple[str, ...]  # for the log redactor

    async def send(self, session: aiohttp.ClientSession, alerts: list[dict[str, Any]],
                   idempotency_key: str, start_part: int = 0) -> Delivery: ...


def _retry_after_header(headers: Any) -> float | None:
    return parse_retry_after(headers.get("Retry-After") if headers is not None else None)


def _classify(status: int, text: str, retry_after: float | None, parts_done: int) -> Delivery:
    snippet = text[:200].replace("\n", " ")
    outcome = classify_http(status)
    if outcome == "ok":
        return Delivery(True, parts_done + 1)
    if outcome == "rate_limited":
        return Delivery(False, parts_done, retry_after=retry_after or 1.0,
                        error=f"HTTP 429 rate limited: {snippet}")
    if outcome == "transient":
        return Delivery(False, parts_done, error=f"HTTP {status}: {snippet}")
    if outcome == "refused":
        return Delivery(False, parts_done, refused=True, error=f"HTTP {status}: {snippet}")
    return Delivery(False, parts_done, permanent=True, error=f"HTTP {status}: {snippet}")


def _transport_error(exc: BaseException, parts_done: int) -> Delivery:
    # aiohttp's messages can hold the URL; keep only what is safe.
    detail = str(exc)
    if "://" in detail:
        detail = " ".join(redact_url(w) if "://" in w else w for w in detail.split())
    return Delivery(False, parts_done, error=f"{type(exc).__name__}: {detail}"[:300])


async def _post(session: aiohttp.ClientSession, url: str, *, timeout_s: float, parts_done: int,
                json_body: Any = None, data: bytes | None = None,
                headers: dict[str, str] | None = None,
                parse_retry: Any = None) -> Delivery:
    try:
        # (never to where a redirect points: the signature and tokens are for this URL)
        async with session.post(url, json=json_body, data=data, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=timeout_s),
                                allow_redirects=False) as resp:
            # A receiver's answer matters for its first words (an error, a retry_after):
            # 64 kB of it, whatever it sends.
            text = (await read_bounded(resp, SINK_ANSWER_BYTES, truncate=True)).decode(
                "utf-8", "replace")
            retry = _retry_after_header(resp.headers)
            if resp.status == 429 and parse_retry is not None:
                retry = parse_retry(text) or retry
            return _classify(resp.status, text, retry, parts_done)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return _transport_error(exc, parts_done)


async def _send_parts(parts: list[str], start_part: int, post_one: Any) -> Delivery:
    """Each part in turn from `start_part`; a failure says how many the platform accepted, so
    the retry starts at the first one it did not. An exception of any kind is a failure of
    the part it was raised in: raised out of here, the parts accepted before it were lost
    from the count, and the retry sent them again (a review)."""
    done = start_part
    for part in parts[start_part:]:
        try:
            result: Delivery = await post_one(part, done)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return _transport_error(exc, done)  # (its text too: URLs masked)
        if not result.ok:
            return result
        done = result.parts_done
    return Delivery(True, done)


class TelegramSink:
    """Bot API sendMessage, HTML parse mode (https://core.telegram.org/bots/api#sendmessage)."""

    kind = "telegram"

    def __init__(self, config: TelegramSinkConfig) -> None:
        self.config = config
        self.group = True if config.group is None else config.group
        token = read_secret(config.bot_token, config.bot_token_file, "bot_token")
        self._url = f"{config.api_url.rstrip('/')}/bot{token}/sendMessage"
        self.secrets: tuple[str, ...] = (token,)

    @staticmethod
    def _retry_after(text: str) -> float | None:
        try:
            return parse_retry_after(loads_shallow(text)["parameters"]["retry_after"])
        except Exception:  # (a body that does not say when: `[1]`, a string, too deep)
            return None

    async def send(self, session: aiohttp.ClientSession, alerts: list[dict[str, Any]],
                   idempotency_key: str, start_part: int = 0) -> Delivery:
        parts = render_parts(alerts, "html", TELEGRAM_LIMIT)

        async def post_one(text: str, done: int) -> Delivery:
            body: dict[str, Any] = {"chat_id": self.config.chat_id, "text": text,
                                    "parse_mode": "HTML", "disable_web_page_preview": True}
            if self.config.message_thread_id is not None:
                body["message_thread_id"] = self.config.message_thread_id
            return await _post(session, self._url, json_body=body, timeout_s=self.config.timeout_s,
                               parts_done=done, parse_retry=self._retry_after,
                               headers={"User-Agent": USER_AGENT})

        return await _send_parts(parts, start_part, post_one)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The X-Keeperd-Signature value: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "t.body")>."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, body: bytes, header: str, *, tolerance_s: float = 300,
           now: float | None = None) -> bool:
    """What a receiver does: recompute, compare in constant time, refuse old timestamps.
    Any malformed input (no header, no timestamp, a signature that is not plain ASCII)
    is a refusal, never an exception: a receiver must not crash on what a stranger sends."""
    try:
        fields = dict(item.strip().split("=", 1) for item in str(header).split(","))
        timestamp = int(fields["t"])
        given = fields.get("v1", "").encode("ascii")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeEncodeError):
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1].encode("ascii")
    return hmac.compare_digest(expected, given)


def webhook_body(alerts: list[dict[str, Any]], idempotency_key: str) -> dict[str, Any]:
    """One alert: its fields at the top level. A group: the shared fields, and `alerts`."""
    first = alerts[0]
    if len(alerts) == 1:
        body = dict(first)
    else:
        body = {k: first[k] for k in ("status", "kind", "rule", "severity")}
        body["summary"] = f"{title(alerts)}: " + "; ".join(a["summary"] for a in alerts[:5]) + (
            f"; and {len(alerts) - 5} more" if len(alerts) > 5 else "")
    body["alerts"] = alerts
    body["group_size"] = len(alerts)
    body["idempotency_key"] = idempotency_key
    body["version"] = 1
    return body


# A header whose name says it carries a credential (X-Api-Key, Authorization, X-Auth-Token,
# Cookie, X-Hub-Signature).
_CREDENTIAL_HEADER = re.compile(r"authorization|cookie|key|token|secret|auth|sig|pass|pin|"
                                r"session|access|otp|bearer|jwt|priv|credential",
                                re.IGNORECASE)


def header_is_secret(name: str, value: str) -> bool:
    """Whether a configured header's value is registered with the log redactor: its name
    says a credential (`X-PIN: 4821` too), or it is as long as one (MIN_SECRET_CHARS; the
    name cannot tell every key from a label). Every value was (an audit): `X-Priority: "1"`
    rewrote every standalone 1 and true of every log line, and the JSON lines no longer
    parsed."""
    return bool(_CREDENTIAL_HEADER.search(name)) or len(value) >= MIN_SECRET_CHARS


class WebhookSink:
    kind = "webhook"

    def __init__(self, config: WebhookSinkConfig) -> None:
        self.config = config
        self.group = bool(config.group)
        self._secret = read_secret(config.secret, config.secret_file, "secret")
        # (an inline secret was checked at load; a file's is read only now)
        problem = webhook_secret_problem(self._secret)
        if problem:
            raise SinkError(f"secret_file {config.secret_file}: {problem}")
        self.secrets: tuple[str, ...] = (self._secret, *(
            value for name, value in config.headers.items() if header_is_secret(name, value)))

    async def send(self, session: aiohttp.ClientSession, alerts: list[dict[str, Any]],
                   idempotency_key: str, start_part: int = 0) -> Delivery:
        body = json.dumps(webhook_body(alerts, idempotency_key), separators=(",", ":"),
                          default=str).encode()
        # Keeperd's own headers last: nothing configured can replace the signature.
        headers = {"User-Agent": USER_AGENT, **self.config.headers,
                   "Content-Type": "application/json", "Idempotency-Key": idempotency_key,
                   "X-Keeperd-Signature": sign(self._secret, body, int(time.time()))}
        return await _post(session, self.config.url, data=body, headers=headers,
                           timeout_s=self.config.timeout_s, parts_done=0)


class _ChatWebhookSink:
    """Slack and Discord incoming webhooks: the URL is the credential."""

    kind = ""
    markup: Markup = "plain"
    limit = 2000

    def __init__(self, config: SlackSinkConfig | DiscordSinkConfig) -> None:
        self.config = config
        self.group = True if config.group is None else config.group
        self._url = read_secret(config.webhook_url, config.webhook_url_file, "webhook_url")
        self.secrets: tuple[str, ...] = (self._url,)

    def body(self, text: str) -> dict[str, Any]:
        raise NotImplementedError

    def url(self) -> str:
        return self._url

    @staticmethod
    def _retry_after(text: str) -> float | None:
        try:
            return parse_retry_after(loads_shallow(text)["retry_after"])
        except Exception:  # (a body that does not say when: `[1]`, a string, too deep)
            return None

    async def send(self, session: aiohttp.ClientSession, alerts: list[dict[str, Any]],
                   idempotency_key: str, start_part: int = 0) -> Delivery:
        parts = render_parts(alerts, self.markup, self.limit)

        async def post_one(text: str, done: int) -> Delivery:
            return await _post(session, self.url(), json_body=self.body(text),
                               timeout_s=self.config.timeout_s, parts_done=done,
                               parse_retry=self._retry_after,
                               headers={"User-Agent": USER_AGENT})

        return await _send_parts(parts, start_part, post_one)


class SlackSink(_ChatWebhookSink):
    kind = "slack"
    markup: Markup = "slack"
    limit = SLACK_LIMIT

    def body(self, text: str) -> dict[str, Any]:
        return {"text": text, "unfurl_links": False}


class DiscordSink(_ChatWebhookSink):
    kind = "discord"
    markup: Markup = "discord"
    limit = DISCORD_LIMIT

    def body(self, text: str) -> dict[str, Any]:
        # No @everyone / role pings from alert text.
        return {"content": text, "allowed_mentions": {"parse": []}}

    def url(self) -> str:
        return self._url + ("&" if "?" in self._url else "?") + "wait=true"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def alertmanager_alert(alert: dict[str, Any], now: float) -> dict[str, Any]:
    labels = {"alertname": f"keeperd_{alert['rule']}", "severity": alert["severity"],
              "source": "keeperd", **{k: str(v) for k, v in alert["labels"].items()}}
    if alert.get("kind") == "event":
        # (each event its own alert: Alertmanager merges alerts of one label set, and an
        # account's four liquidations read as one, the last's figures — a trial)
        labels["event_id"] = str(alert.get("fingerprint"))
    annotations = {"summary": alert["summary"]}
    if alert.get("action"):
        annotations["description"] = alert["action"]
    if alert.get("inhibited_by"):
        annotations["inhibited_by"] = "; ".join(alert["inhibited_by"])
    for key in ("health_factor", "debt_usd", "collateral_usd", "tx_hash"):
        value = alert.get("details", {}).get(key)
        if value is not None:
            annotations[key] = str(value)
    out = {"labels": labels, "annotations": annotations,
           "startsAt": _iso(alert.get("starts_at") or now)}
    if alert["status"] == "resolved":
        out["endsAt"] = _iso(now)
    link = alert.get("details", {}).get("explorer_url")
    if link:
        out["generatorURL"] = link
    return out


class AlertmanagerSink:
    """POST /api/v2/alerts (Alertmanager's OpenAPI v2). Alertmanager groups, dedups and
    routes by itself, so keeperd sends each alert on its own and re-sends firing ones."""

    kind = "alertmanager"

    def __init__(self, config: AlertmanagerSinkConfig) -> None:
        self.config = config
        self.group = False
        self._headers = {"User-Agent": USER_AGENT}
        self.secrets: tuple[str, ...] = ()
        if config.bearer_token is not None or config.bearer_token_file is not None:
            token = read_secret(config.bearer_token, config.bearer_token_file, "bearer_token")
            self._headers["Authorization"] = f"Bearer {token}"
            self.secrets = (token,)
        # Each firing alert's severity as last posted: `severity` is a label, so a change
        # is another alert to Alertmanager, and the old one is ended with it (an escalated
        # position stayed firing at warning beside its critical, its old figures, until
        # resolve_timeout — a trial). In memory: after a restart the old ends by timeout.
        self._severity: dict[str, str] = {}

    async def send(self, session: aiohttp.ClientSession, alerts: list[dict[str, Any]],
                   idempotency_key: str, start_part: int = 0) -> Delivery:
        now = time.time()
        body, posted = [], {}
        for a in alerts:
            fingerprint = str(a.get("fingerprint"))
            before = self._severity.get(fingerprint)
            if before is not None and before != a["severity"]:
                body.append(alertmanager_alert({**a, "severity": before,
                                                "status": "resolved"}, now))
            if a.get("kind") != "event":
                posted[fingerprint] = None if a["status"] == "resolved" else a["severity"]
            body.append(alertmanager_alert(a, now))
        result = await _post(session, self.config.url.rstrip("/") + "/api/v2/alerts",
                             json_body=body, headers=self._headers,
                             timeout_s=self.config.timeout_s, parts_done=0)
        if result.ok:  # (a retry of a failed post ends the old severity then)
            for fingerprint, severity in posted.items():
                if severity is None:
                    self._severity.pop(fingerprint, None)
                else:
                    self._severity[fingerprint] = severity
        return result


# A sink's config `kind` -> the sink that speaks its platform.
SINKS: dict[str, Callable[[Any], Sink]] = {
    "telegram": TelegramSink, "webhook": WebhookSink, "slack": SlackSink,
    "discord": DiscordSink, "alertmanager": AlertmanagerSink}


def make_sink(config: SinkConfig) -> Sink:
    return SINKS[config.kind](config)

