"""structlog set-up: JSON in production, console in development, and no secret in any line.

`redact` is a processor: values of secret-looking keys become `***`, and anything that looks like a phone
number keeps only its last 4 digits (set `phones=False` to keep them).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["Redactor", "configure"]

SECRET_KEYS = frozenset(
    {
        "password",
        "psw",
        "pass",
        "pwd",
        "api_key",
        "apikey",
        "api_token",
        "token",
        "secret",
        "secret_key",
        "authorization",
        "webhook_token",
    }
)
_PHONE = re.compile(r"(?<![\w.:-])\+?\d{10,15}(?![\w.:-])")


def _mask_phone(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "…" + digits[-4:]


class _Stderr:
    """Whatever `sys.stderr` is at the time of writing (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class Redactor:
    """A structlog processor that hides secrets (by key) and phone numbers (by shape)."""

    def __init__(self, *, phones: bool = True) -> None:
        self.phones = phones

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return _PHONE.sub(_mask_phone, value) if self.phones else value
        if isinstance(value, dict):
            return {k: "***" if str(k).lower() in SECRET_KEYS else self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        return value

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event.items():
            event[key] = "***" if key.lower() in SECRET_KEYS else self._clean(value)
        return event


def configure(fmt: str = "console", level: str = "info", *, redact_phones: bool = True) -> None:
    """Configure structlog (and stdlib logging of libraries) once, at process start."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            Redactor(phones=redact_phones),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,  # configure() may come after first use (tests, embedding)
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(name)s %(message)s")
