"""Structured logging: JSON lines for machines, pretty lines on a terminal, secrets redacted.

Every line the process writes passes the redactor twice. Before rendering, a processor:
- values under secret-sounding keys (key, secret, token, password, authorization, ...) go;
- URLs anywhere in a string value are reduced to scheme, host and non-secret path segments;
- every string registered with `Redactor.add` (the keeper's key, bot tokens, webhook secrets
  and header values, the PostgreSQL password) is replaced wherever it appears, in any case.
After rendering, on the finished text: what the renderer formats itself (a traceback on the
console, an object's repr) holds no secret either.

The standard library's loggers (asyncio, aiohttp, apscheduler) go through the same pipeline
(`ProcessorFormatter` on the root logger), and so does a crashing process's last traceback
(sys.excepthook, threading.excepthook, sys.unraisablehook; asyncio's default exception handler
logs to the `asyncio` logger).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from types import TracebackType
from typing import Any, TextIO
from urllib.parse import parse_qsl, quote, urlsplit

import structlog

from keeperd.chain.rpc import redact_url, url_secrets

_SECRET_KEYS = re.compile(
    r"(^|_)(key|private_key|secret|token|password|passphrase|authorization|api_key|mnemonic)$",
    re.IGNORECASE)
# (no backslash: in a rendered JSON line, a URL ends before the escaped newline after it)
_URL = re.compile(r"\b(?:https?|wss?)://[^\s\"'<>()\[\],;\\]+", re.IGNORECASE)
REDACTED = "[redacted]"
# A registered secret shorter than this is replaced only where it stands alone as a word.
MIN_SECRET_CHARS = 8
_ALNUM = "A-Za-z0-9"
# Keys the renderer formats (an exception's frames) or structlog's stdlib bridge uses: left
# to the scrub of the rendered text.
_STRUCTURAL_KEYS = frozenset({"exc_info", "_record", "_from_structlog"})


def _written_forms(secret: str) -> set[str]:
    """How a secret shows up in text: as is, without 0x, URL-quoted (in a DSN), escaped in a
    JSON string or a repr."""
    forms = {secret, secret.removeprefix("0x"), quote(secret, safe=""),
             json.dumps(secret)[1:-1], repr(secret)[1:-1]}
    return {f for f in forms if f}


class Redactor:
    """The strings this process must never write, and the scrub that removes them."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        # The forms lower-cased: a text holding none of them is left without running the
        # pattern (a case-blind alternation costs ~6 us a line; this test ~1 us).
        self._lowered: tuple[str, ...] = ()

    def add(self, secret: str | None) -> None:
        """Never log this string, whatever its length, in any of its written forms and letter
        cases. One shorter than MIN_SECRET_CHARS is replaced only where it stands alone (not
        inside a longer word): replacing a 3-letter one everywhere would turn "loops" into
        "lo[redacted]" all over the logs. Every secret given is registered, a short number
        too (a PIN, a database password of six digits): what is not a secret — a webhook's
        `X-Priority: "1"` — is the caller's to leave out (`header_is_secret`; registering it
        broke every JSON line with a 1 in it, an audit)."""
        if not secret:
            return
        forms = _written_forms(secret) - self._secrets
        if not forms:
            return
        self._secrets |= forms
        # (a secret beyond ASCII: no test, the pattern always — str.lower's full case mapping
        # is not the pattern's case-blindness there)
        self._lowered = (tuple({f.lower() for f in self._secrets})
                         if all(f.isascii() for f in self._secrets) else ())
        # Longest first: where two overlap, the whole of the longer one goes.
        self._pattern = re.compile("|".join(
            re.escape(s) if len(s) >= MIN_SECRET_CHARS
            else rf"(?<![{_ALNUM}]){re.escape(s)}(?![{_ALNUM}])"
            for s in sorted(self._secrets, key=len, reverse=True)), re.IGNORECASE)

    def add_url(self, url: str | None) -> None:
        """Never log the secret parts of this URL (an RPC endpoint's or a venue's: a key in its
        path or query, its user and password) where a text gives them without the URL around
        them — an error that quotes the path it was asked. Its user and password always; the
        other parts when they look like a key (`_looks_like_a_key`): an endpoint's public path
        words ("polygon_amoy", a chain's name in every log line) are left as they are; a query
        value whose name says it is a secret (`apikey`), whatever it looks like."""
        if not url:
            return
        try:
            parts = urlsplit(url)
            user_info = [parts.username, parts.password]
        except ValueError:
            self.add(url)
            return
        for secret in user_info:
            self.add(secret)
        for name, value in parse_qsl(parts.query):
            if _QUERY_SECRET_NAME.search(name):
                self.add(value)
        for secret in url_secrets(url):
            if _looks_like_a_key(secret):
                self.add(secret)

    def scrub(self, text: str) -> str:
        return _URL.sub(lambda m: redact_url(m.group(0)), self.scrub_secrets(text))

    def scrub_secrets(self, text: str) -> str:
        """The registered secrets only, URLs left whole: for an alert's text, whose links
        (an explorer's transaction page) must stay links."""
        if self._pattern is None or not self._may_hold(text):
            return text
        return self._pattern.sub(REDACTED, text)

    def _may_hold(self, text: str) -> bool:
        if not self._lowered:
            return True
        low = text.lower()
        return any(form in low for form in self._lowered)

    def holds_secret(self, value: Any) -> bool:
        """Whether any string in `value` (a str, or dicts and lists of them) may hold a
        registered secret: cheap, so the alert engine scrubs only what needs it."""
        if self._pattern is None:
            return False
        if isinstance(value, str):
            return self._may_hold(value)
        if isinstance(value, dict):
            return any(self.holds_secret(v) for v in value.values())
        if isinstance(value, list | tuple):
            return any(self.holds_secret(v) for v in value)
        return False

    def scrub_alert(self, value: Any) -> Any:
        """An alert's fields (its summary, action, labels, details), every string in them
        scrubbed of the registered secrets, keys and other values as they are: the backstop
        behind every rule's own wording, so that no secret this process holds reaches a sink,
        the alert state or the outbox (a detail named `token` is a token's symbol here)."""
        if isinstance(value, str):
            return self.scrub_secrets(value)
        if isinstance(value, dict):
            return {k: self.scrub_alert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.scrub_alert(v) for v in value)
        return value

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: REDACTED if _SECRET_KEYS.search(str(k)) else self._value(v)
                    for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._value(v) for v in value)
        if isinstance(value, BaseException):
            return self.scrub(f"{type(value).__name__}: {value}")
        return value

    def __call__(self, _logger: Any, _method: str,
                 event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for k in list(event_dict):
            if _SECRET_KEYS.search(k):
                event_dict[k] = REDACTED
            elif k not in _STRUCTURAL_KEYS:
                event_dict[k] = self._value(event_dict[k])
        return event_dict


# A query parameter whose value is a secret by its name (`?apikey=`, `?access_token=`).
_QUERY_SECRET_NAME = re.compile(r"key|token|secret|auth|pass|sig", re.IGNORECASE)


def _looks_like_a_key(part: str) -> bool:
    """A URL's path segment or query value that is a provider's key rather than a word: 24
    characters or more, or 12 or more mixing letters and digits (Infura's, Alchemy's,
    QuickNode's and Ankr's keys are 32-64)."""
    if len(part) >= 24:
        return True
    return (len(part) >= 12 and any(c.isdigit() for c in part)
            and any(c.isalpha() for c in part))


class _ScrubRendered:
    """The last step, on the finished line: covers what the renderer formatted itself (the
    console's traceback, the repr of a value that is not a string)."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    def __call__(self, _logger: Any, _method: str, rendered: str) -> str:
        return self.redactor.scrub(rendered)


class _CurrentStderr:
    """Standard error as it is when a line is written, not when logging was set up: whoever
    replaces sys.stderr later (a test's capture, a daemonizing wrapper) gets the lines, and a
    closed predecessor is never written to."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


class _StdlibHandler(logging.Handler):
    """On the root logger: the standard library's records, formatted and scrubbed as ours."""

    def __init__(self, out: Any, redactor: Redactor) -> None:
        super().__init__()
        self.out = out
        self.redactor = redactor

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.out.write(self.format(record) + "\n")
            self.out.flush()
        except Exception:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        # logging's own report would print the record's raw message and arguments.
        exc = sys.exc_info()[1]
        with contextlib.suppress(Exception):
            self.out.write(self.redactor.scrub(
                f"logging error in {record.name}: {type(exc).__name__}: {exc}") + "\n")


ExcInfo = tuple[type[BaseException], BaseException | None, TracebackType | None]


def _last_words(event: str, exc_info: ExcInfo, **fields: Any) -> None:
    """A crash's traceback, logged (so redacted). Never raises: when a hook raises, Python
    prints the original traceback as it is."""
    try:
        structlog.get_logger("keeperd").critical(event, exc_info=exc_info, **fields)
    except Exception:
        with contextlib.suppress(Exception):
            print(f"keeperd: {event}: {exc_info[0].__name__} (traceback withheld: it could "
                  "not be logged, so not redacted)", file=sys.__stderr__)


def _excepthook(exc_type: type[BaseException], exc: BaseException,
                tb: TracebackType | None) -> None:
    _last_words("process.uncaught_exception", (exc_type, exc, tb))


def _threading_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is not SystemExit:
        _last_words("thread.uncaught_exception",
                    (args.exc_type, args.exc_value, args.exc_traceback),
                    thread=args.thread.name if args.thread is not None else None)


def _unraisablehook(unraisable: Any) -> None:  # (sys.UnraisableHookArgs)
    try:
        where = repr(unraisable.object)
    except Exception:
        where = "an object that cannot be shown"
    _last_words("process.unraisable_exception",
                (unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback),
                message=unraisable.err_msg or "Exception ignored in", object=where)


def _install_crash_hooks() -> None:
    """Take over the interpreter's printers of last tracebacks, unless someone (a debugger,
    pytest) has put their own there: those stay."""
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _excepthook
    if threading.excepthook is threading.__excepthook__:
        threading.excepthook = _threading_excepthook
    if sys.unraisablehook is sys.__unraisablehook__:
        sys.unraisablehook = _unraisablehook


def configure_logging(level: str = "info", fmt: str = "auto", redactor: Redactor | None = None,
                      stream: TextIO | None = None) -> Redactor:
    """Set up logging for the process (from the command line entry point; a second call
    replaces the first): structlog, the standard library's loggers, the crash hooks."""
    redactor = redactor or Redactor()
    out: Any = stream if stream is not None else _CurrentStderr()
    json_output = fmt == "json" or (fmt == "auto" and not out.isatty())
    threshold = getattr(logging, level.upper(), logging.INFO)
    prepare: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json_output:
        prepare.append(structlog.processors.format_exc_info)
    prepare.append(redactor)
    renderer = (structlog.processors.JSONRenderer() if json_output
                else structlog.dev.ConsoleRenderer())
    finish: list[Any] = [renderer, _ScrubRendered(redactor)]
    structlog.configure(
        processors=[*prepare, *finish],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )

    handler = _StdlibHandler(out, redactor)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *prepare],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *finish]))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    # Warnings and up, as Python printed them before: their info lines (aiohttp's, the
    # scheduler's "job executed") would drown ours.
    root.setLevel(max(threshold, logging.WARNING))
    logging.captureWarnings(True)
    _install_crash_hooks()
    return redactor
