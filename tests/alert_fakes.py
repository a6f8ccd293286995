"""Local stand-ins for the chat platforms keeperd posts to, speaking their documented wire
formats (success bodies, error bodies, rate-limit answers). This machine cannot reach them.

- Telegram Bot API sendMessage: https://core.telegram.org/bots/api#sendmessage and
  #making-requests ({"ok": false, "error_code", "description", "parameters": {"retry_after"}});
  HTML parse mode accepts only its listed tags, balanced; text is 1-4096 characters.
- Slack incoming webhooks: 200 "ok"; errors as plain-text codes (invalid_payload, no_service);
  429 with Retry-After.
- Discord execute webhook: content up to 2000 characters; 429 with a JSON body carrying
  retry_after in seconds (and a Retry-After header); ?wait=true answers with the message.
- keeperd's own signed webhook, in a thread (`Webhook`), for tests whose keeperd is a process.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiohttp import web

TELEGRAM_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span",
                 "tg-spoiler", "a", "code", "pre", "blockquote", "tg-emoji"}


class _TelegramHtml(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.error: str | None = None
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in TELEGRAM_TAGS:
            self.error = f"Unsupported start tag \"{tag}\""
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.error = f"Unmatched end tag \"{tag}\""

    def handle_data(self, data: str) -> None:
        self.text += data


def parse_telegram_html(text: str) -> tuple[str | None, str]:
    """(error, visible text) the way Telegram would see it."""
    parser = _TelegramHtml()
    parser.feed(text)
    parser.close()
    if parser.stack and parser.error is None:
        parser.error = f"Can't find end tag corresponding to start tag \"{parser.stack[-1]}\""
    return parser.error, parser.text


@dataclass
class Recorder:
    """Requests received, and scripted answers to give before the normal one."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    script: list[Callable[[], web.Response]] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)

    def next_scripted(self) -> web.Response | None:
        return self.script.pop(0)() if self.script else None


def telegram_app(token: str, rec: Recorder) -> web.Application:
    async def send_message(request: web.Request) -> web.Response:
        if request.match_info["token"] != token:
            return web.json_response({"ok": False, "error_code": 401,
                                      "description": "Unauthorized"}, status=401)
        body = await request.json()
        rec.requests.append({"body": body, "at": time.monotonic()})
        scripted = rec.next_scripted()
        if scripted is not None:
            return scripted
        if str(body.get("chat_id")) != "-1001234567890":
            return web.json_response({"ok": False, "error_code": 400,
                                      "description": "Bad Request: chat not found"}, status=400)
        refused, visible = telegram_refusal(body)
        if refused is not None:
            return refused
        rec.accepted.append(body)
        return web.json_response({"ok": True, "result": {
            "message_id": len(rec.accepted), "date": int(time.time()),
            "chat": {"id": body["chat_id"], "type": "supergroup"}, "text": visible}})

    app = web.Application()
    app.router.add_post("/bot{token}/sendMessage", send_message)
    return app


def telegram_refusal(body: dict[str, Any]) -> tuple[web.Response | None, str]:
    """What Telegram says of a message's text (None: accepted), and its visible text: HTML
    entities must parse and balance, and the visible text be 1-4096 characters. Every path
    that accepts a message — scripted ones included — goes through it."""
    text = body.get("text", "")
    if body.get("parse_mode") == "HTML":
        error, visible = parse_telegram_html(text)
        if error:
            return web.json_response({"ok": False, "error_code": 400, "description":
                                      f"Bad Request: can't parse entities: {error}"},
                                     status=400), visible
    else:
        visible = text
    if not 1 <= len(visible) <= 4096:
        return web.json_response({"ok": False, "error_code": 400,
                                  "description": "Bad Request: message is too long"},
                                 status=400), visible
    return None, visible


def telegram_429(retry_after: int) -> Callable[[], web.Response]:
    return lambda: web.json_response(
        {"ok": False, "error_code": 429,
         "description": f"Too Many Requests: retry after {retry_after}",
         "parameters": {"retry_after": retry_after}}, status=429)


def webhook_app(rec: Recorder, *,
                before_answer: Callable[[], Awaitable[None]] | None = None) -> web.Application:
    """`before_answer`: awaited once a request is read (a receiver slow to answer)."""
    async def hook(request: web.Request) -> web.Response:
        raw = await request.read()
        entry = {"raw": raw, "headers": dict(request.headers), "at": time.monotonic()}
        rec.requests.append(entry)
        if before_answer is not None:
            await before_answer()
        scripted = rec.next_scripted()
        if scripted is not None:
            return scripted
        entry["body"] = json.loads(raw)
        rec.accepted.append(entry)
        return web.json_response({"received": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    return app


def webhook_watchlist(hook: str, accounts: list[str], **levels: float) -> dict[str, Any]:
    """A config's `alerts`: one route to the signed webhook served at `hook` (its secret
    `${WEBHOOK_SECRET}`), and a watchlist `desk` of `accounts` on it (`levels`: warn,
    critical)."""
    return {"routes": [{"name": "ops", "sinks": [
        {"kind": "webhook", "url": f"{hook}/hook", "secret": "${WEBHOOK_SECRET}"}]}],
        "watchlists": [{"name": "desk", "accounts": accounts, **levels, "route": "ops"}]}


def slack_app(rec: Recorder) -> web.Application:
    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        rec.requests.append({"body": body, "at": time.monotonic()})
        scripted = rec.next_scripted()
        if scripted is not None:
            return scripted
        if not isinstance(body.get("text"), str) or not body["text"]:
            return web.Response(status=400, text="invalid_payload")
        rec.accepted.append(body)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/services/T000/B000/{secret}", hook)
    return app


def discord_app(rec: Recorder) -> web.Application:
    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        rec.requests.append({"body": body, "query": dict(request.query),
                             "at": time.monotonic()})
        scripted = rec.next_scripted()
        if scripted is not None:
            return scripted
        if len(body.get("content", "")) > 2000:
            return web.json_response({"message": "Invalid Form Body", "code": 50035,
                                      "errors": {"content": {"_errors": [{
                                          "code": "BASE_TYPE_MAX_LENGTH",
                                          "message": "Must be 2000 or fewer in length."}]}}},
                                     status=400)
        rec.accepted.append(body)
        if request.query.get("wait") == "true":
            return web.json_response({"id": str(len(rec.accepted)), "content": body["content"]})
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/api/webhooks/{id}/{token}", hook)
    return app


def discord_429(retry_after: float, header_s: int | None = None
                ) -> Callable[[], web.Response]:
    """Discord's 429: the precise wait in the JSON body, a whole-second Retry-After header
    (rounded up, or `header_s` to tell the two apart in a test)."""
    header = str(header_s if header_s is not None else int(retry_after) + 1)
    return lambda: web.json_response(
        {"message": "You are being rate limited.", "retry_after": retry_after,
         "global": False}, status=429, headers={"Retry-After": header})


def status(code: int, text: str = "") -> Callable[[], web.Response]:
    return lambda: web.Response(status=code, text=text or f"status {code}")


class Webhook:
    """A webhook receiver on loopback, in a thread (the keeperd under test is a process, and
    may stall its own event loop): every POST in `posts` as (monotonic arrival, its
    Idempotency-Key, the status answered); the accepted ones in `received` as (key, body).
    `retry_after_first`: each notification's first delivery is answered 429 with that
    Retry-After, the next one taken; otherwise every POST is answered 200."""

    def __init__(self, retry_after_first: int | None = None) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.posts: list[tuple[float, str, int]] = []
        received, posts = self.received, self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                key = self.headers["Idempotency-Key"]
                refuse = (retry_after_first is not None
                          and all(k != key for _, k, _ in posts))
                posts.append((time.monotonic(), key, 429 if refuse else 200))
                if not refuse:
                    received.append((key, json.loads(body)))
                self.send_response(429 if refuse else 200)
                if refuse:
                    self.send_header("Retry-After", str(retry_after_first))
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
