"""The receiver's front door: who the client is, how fast it may call, and how much of its noise is logged.

    Options.of(settings)      SMSFLEET_TRUSTED_PROXIES, SMSFLEET_WEBHOOK_RATE_LIMIT (read once, at start)
    client_address(...)       the peer, or behind a trusted proxy the right-most X-Forwarded-For hop not a proxy
    RateLimiter.wait(client)  a token bucket per client address: 0, or the seconds until the next request
    QuietLog.allow(client)    at most N log lines per client a minute; the rest are counted in one summary line

Per-client state is bounded (least recently seen clients are forgotten first), so a flood from many
addresses cannot grow the process.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import msgspec
import structlog
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from smsfleet.settings import ConfigError, Settings

__all__ = [
    "Network",
    "Options",
    "QuietLog",
    "QuietServerErrors",
    "RateLimiter",
    "client_address",
    "networks",
    "within",
]

log = structlog.get_logger("smsfleet.webhooks")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_CLIENTS = 10_000
DEFAULT_RATE = 200.0  # requests a second per client address: generous for a provider, which batches reports


class Options(msgspec.Struct, frozen=True, kw_only=True):
    """The receiver's own settings, taken from `smsfleet.settings.Settings`."""

    #: networks of the reverse proxies in front of the receiver: only their X-Forwarded-For is believed
    trusted_proxies: tuple[str, ...] = ()
    #: requests per second one client address may make (a burst of as many is allowed); 0: no limit
    rate_limit: float = DEFAULT_RATE
    #: rejected requests logged per client address a minute; the others are counted in one summary line
    log_per_minute: int = 20

    @classmethod
    def of(cls, settings: Settings) -> Options:
        """From the settings (SMSFLEET_TRUSTED_PROXIES, SMSFLEET_WEBHOOK_RATE_LIMIT); a bad network fails at
        start, naming its variable."""
        networks(settings.trusted_proxies, "SMSFLEET_TRUSTED_PROXIES")
        return cls(trusted_proxies=settings.trusted_proxies, rate_limit=settings.webhook_rate_limit)


def networks(items: Iterable[str], variable: str) -> tuple[Network, ...]:
    """Addresses or networks (`203.0.113.7`, `10.0.0.0/8`, `2001:db8::/32`); ConfigError naming `variable`."""
    try:
        return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items)
    except ValueError as exc:
        raise ConfigError(f"{variable} must list addresses or networks separated by commas: {exc}") from None


def within(address: str | None, nets: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in net for net in nets)


def client_address(peer: str | None, forwarded: Iterable[str], trusted: tuple[Network, ...]) -> str:
    """The caller's address: the direct peer, unless the peer is a trusted proxy; then the right-most
    X-Forwarded-For hop that is not itself a trusted proxy (hops further left were written by the client,
    who can write anything)."""
    peer = peer or "unknown"
    if not trusted or not within(peer, trusted):
        return peer
    found = peer
    for header in reversed(list(forwarded)):
        for hop in reversed(header.split(",")):
            try:
                found = str(ipaddress.ip_address(hop.strip()))
            except ValueError:
                return found  # unreadable: believe nothing written further left
            if not within(found, trusted):
                return found
    return found


class RateLimiter:
    """A token bucket per client: `rate` requests a second, in bursts of up to `rate` (at least 1)."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)

    def wait(self, client: str) -> float:
        """0 when `client` may make a request now (and it is counted), else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now, burst = self.clock(), max(self.rate, 1.0)
        tokens, at = self._buckets.pop(client, (burst, now))
        tokens = min(burst, tokens + (now - at) * self.rate)
        allowed = tokens >= 1
        self._buckets[client] = (tokens - 1 if allowed else tokens, now)
        while len(self._buckets) > MAX_CLIENTS:
            self._buckets.popitem(last=False)
        return 0.0 if allowed else (1 - tokens) / self.rate


class QuietLog:
    """Whether to log one more line about `client`: yes for the first `per_minute` in a minute; then no, and
    when that minute is over, one summary line (`request.rejections_unlogged`) with how many were not."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()  # client -> (minute started, lines)

    def allow(self, client: str) -> bool:
        now = self.clock()
        started, count = self._seen.pop(client, (now, 0))
        if now - started >= 60:
            if count > self.per_minute:
                log.warning("request.rejections_unlogged", client=client, count=count - self.per_minute)
            started, count = now, 0
        self._seen[client] = (started, count + 1)
        while len(self._seen) > MAX_CLIENTS:
            self._seen.popitem(last=False)
        return count < self.per_minute


class QuietServerErrors(logging.Filter):
    """aiohttp logs every malformed HTTP request it refuses (a bad request line, a URL over 8,190 bytes, a
    broken chunked or compressed body) as an error with a traceback that quotes the request. This filter
    turns each into one line without the quote or the traceback, within a per-client budget."""

    def __init__(self, quiet: QuietLog) -> None:
        super().__init__()
        self.quiet = quiet

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, RequestPayloadError):
            return False  # a broken body read again after the answer: the request already had its line
        if not isinstance(exc, HttpProcessingError):
            return True
        client = str(record.args[0]) if isinstance(record.args, tuple) and record.args else "unknown"
        if not self.quiet.allow(client):
            return False
        record.msg, record.args, record.exc_info, record.exc_text = "http.bad_request", (), None, None
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.client, record.error = client, type(exc).__name__
        return True
