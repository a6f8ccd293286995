"""Structured logging: JSON lines for machines, pretty lines on a terminal, secrets redacted.

Redaction happens in a structlog processor, so it covers every log call in the process:
- values under secret-sounding keys (key, secret, token, password, authorization, ...);
- URLs anywhere in a string value are reduced to scheme, host and non-secret path segments;
- every string registered with `Redactor.add` (the keeper's private key, bot tokens, webhook
  secrets, loaded at start) is replaced wherever it appears, in any case.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from keeperd.chain.rpc import redact_url

_SECRET_KEYS = re.compile(
    r"(^|_)(key|private_key|secret|token|password|passphrase|authorization|api_key|mnemonic)$",
    re.IGNORECASE)
_URL = re.compile(r"\b(?:https?|wss?)://[^\s\"'<>()\[\],;]+", re.IGNORECASE)
REDACTED = "[redacted]"


class Redactor:
    def __init__(self) -> None:
        self._secrets: list[str] = []

    def add(self, secret: str | None) -> None:
        """Never log this string (also without a 0x prefix, and in any letter case)."""
        if not secret or len(secret) < 6:
            return
        variants = {secret, secret.removeprefix("0x")}
        for v in variants:
            if len(v) >= 6 and v not in self._secrets:
                self._secrets.append(v)
        self._secrets.sort(key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for s in self._secrets:
            if s.lower() in text.lower():
                text = re.sub(re.escape(s), REDACTED, text, flags=re.IGNORECASE)
        return _URL.sub(lambda m: redact_url(m.group(0)), text)

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
            else:
                event_dict[k] = self._value(event_dict[k])
        return event_dict


class _ScrubExceptions:
    """Runs after exceptions are rendered to text, so tracebacks are scrubbed too."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    def __call__(self, _logger: Any, _method: str,
                 event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if isinstance(event_dict.get("exception"), str):
            event_dict["exception"] = self.redactor.scrub(event_dict["exception"])
        return event_dict


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


def configure_logging(level: str = "info", fmt: str = "auto", redactor: Redactor | None = None,
                      stream: TextIO | None = None) -> Redactor:
    """Set up structlog for the process (call once, from the command line entry point)."""
    redactor = redactor or Redactor()
    out: Any = stream if stream is not None else _CurrentStderr()
    json_output = fmt == "json" or (fmt == "auto" and not out.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redactor,
    ]
    if json_output:
        processors += [structlog.processors.format_exc_info, _ScrubExceptions(redactor),
                       structlog.processors.JSONRenderer()]
    else:
        processors += [_ScrubExceptions(redactor), structlog.dev.ConsoleRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    return redactor
