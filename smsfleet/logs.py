"""structlog set-up: JSON in production, console in development, and no secret in any line.

`Redactor` is a processor: values of secret-looking keys become `***`; in every string, secret-looking
`key=value` pairs (query strings, headers, JSON) and URL passwords are masked, and anything that looks like a
phone number keeps only its last 4 digits (set `phones=False` to keep them). `configure` sends the standard
library's records (aiohttp's, aio-pika's) through the same processors, so no logger escapes it.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["Redactor", "configure", "redact_text"]

MASK = "***"
#: keys that are secrets whatever their spelling; any key containing a SECRET_PARTS word is one too
SECRET_KEYS = frozenset({"pass", "psw", "pwd", "passwd", "auth", "sig", "signature"})
SECRET_PARTS = ("password", "secret", "token", "key", "auth", "credential", "cookie")
#: keys that contain a secret word but name no secret
PLAIN_KEYS = frozenset({"routing_key", "idempotency_key"})

_HIDDEN_NAME = r"[\w.\-]*(?:pass|psw|pwd|secret|token|key|auth|credential|signature|cookie)[\w.\-]*"
#: `name=value`, `name: value`, `"name": "value"` where name looks secret; an `Authorization: Bearer x` too
_SECRET_PAIR = re.compile(
    rf"""(?ix)
    (?P<name>["']?\b{_HIDDEN_NAME}["']?\s*[=:]\s*["']?)
    (?:(?:bearer|basic|digest|token)\s+)?
    (?P<value>[^\s&;,"'<>)}}\]]+)
    """
)
_URL_PASSWORD = re.compile(r"(?P<user>//[^/\s:@]*:)[^@\s/]+@")
#: 10 to 15 digits written as phone numbers are: `79161234567`, `+79161234567`, `%2B79161234567` (in a URL),
#: `+7 916 123-45-67`, `8 (916) 123-45-67`, `+7+916+123+45+67`; not part of a longer number, of a `-`-joined
#: id (`job-1234567890`), of a date-time's `12:50` or of a decimal
_SEP = r"(?:[ +\-]|%20)?"
_PHONE = re.compile(
    r"(?<![0-9.\-])(?:"
    r"(?:\+|%2[bB])?[0-9]{10,15}"
    rf"|(?:(?:\+|%2[bB])?[0-9]{{1,3}}{_SEP})?(?:\([0-9]{{3,5}}\)|[0-9]{{3,5}}){_SEP}[0-9]{{2,4}}{_SEP}[0-9]{{2,4}}"
    rf"(?:{_SEP}[0-9]{{2,4}})?"
    r")(?![0-9]|[:.][0-9])"
)


def _mask_phone(match: re.Match[str]) -> str:
    digits = re.sub(r"[^0-9]", "", re.sub(r"%2[0bB]", " ", match.group()))
    return "…" + digits[-4:] if 10 <= len(digits) <= 15 else match.group()


def redact_text(text: str, *, phones: bool = True) -> str:
    """`text` with secret-looking pairs and URL passwords masked, and phone numbers cut to their last 4 digits.

    Most log values are short words and ids: the regular expressions run only on text that could hold what
    they look for (a separator; ten digits), which keeps a log line's redaction at a few microseconds."""
    if "=" in text or ":" in text:
        text = _SECRET_PAIR.sub(lambda m: m.group("name") + MASK, text)
        text = _URL_PASSWORD.sub(lambda m: m.group("user") + MASK + "@", text)
    if phones and len(text) >= 10 and sum(map(str.isdigit, text)) >= 10:
        text = _PHONE.sub(_mask_phone, text)
    return text


@functools.lru_cache(maxsize=1024)  # a process logs a few dozen keys, millions of times
def is_id_key(key: object) -> bool:
    """Keys that name ids (`job_id`, `provider_message_id`): their values are ours or a provider's, never a
    phone number, however many digits they have (an SMSC id has ten)."""
    name = str(key).lower()
    return name == "id" or name.endswith(("_id", "_ids"))


@functools.lru_cache(maxsize=1024)
def is_secret_key(key: object) -> bool:
    name = str(key).lower().replace("-", "_")
    if name in PLAIN_KEYS:
        return False
    return name in SECRET_KEYS or any(part in name for part in SECRET_PARTS)


class _Stderr:
    """Whatever `sys.stderr` is at the time of writing (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class Redactor:
    """A structlog processor that hides secrets (by key and by shape) and phone numbers (by shape)."""

    def __init__(self, *, phones: bool = True) -> None:
        self.phones = phones

    def _clean(self, value: Any, *, phones: bool = True) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value  # counts, durations, ids as numbers: phones are strings in smsfleet
        if isinstance(value, dict):
            return {k: MASK if is_secret_key(k) else self._clean(v, phones=not is_id_key(k)) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._clean(v, phones=phones) for v in value]
        if isinstance(value, bytes | bytearray):
            value = bytes(value).decode("utf-8", "replace")
        # anything else (a URL object, an exception) is rendered as text anyway: redact that text
        return redact_text(value if isinstance(value, str) else str(value), phones=self.phones and phones)

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event.items():
            if key in ("exc_info", "_record", "_from_structlog"):
                continue  # rendered (and so redacted) by later processors, or structlog's own bookkeeping
            event[key] = MASK if is_secret_key(key) else self._clean(value, phones=not is_id_key(key))
        return event


def _without_message(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event.pop("message", None)  # the formatted record again, as `event` already has it
    return event


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one root handler `configure` installs (and replaces when called again)."""


def configure(fmt: str = "console", level: str = "info", *, redact_phones: bool = True) -> None:
    """Configure structlog, and the standard library's logging of libraries, once, at process start."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    redactor = Redactor(phones=redact_phones)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            redactor,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,  # configure() may come after first use (tests, embedding)
    )
    # libraries log through the standard library: the same redaction and renderer, one event per record
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.stdlib.ExtraAdder(),
            _without_message,
            structlog.processors.format_exc_info,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            redactor,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
    )
    handler = _OurHandler(_Stderr())
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OurHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    # libraries' chatter starts at warning; aiohttp's server and access loggers follow our level
    root.setLevel(max(numeric, logging.WARNING))
    for name in ("aiohttp.access", "aiohttp.server", "aiohttp.web"):
        logging.getLogger(name).setLevel(numeric)
