"""Process configuration, read once from the environment at the edge (CLI, process start) and passed down."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

import msgspec

__all__ = ["ConfigError", "QueueLimits", "Settings", "redact_url"]


class ConfigError(ValueError):
    """A setting has a value we cannot use. The message names the variable."""


class QueueLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The most messages a queue holds (`x-max-length`, with `x-overflow: reject-publish`: a publish to a full
    queue is refused, nothing is dropped); 0: unbounded. Every process must declare the same values."""

    #: send, status, inbound and delay-tier queues (SMSFLEET_QUEUE_MAX_LENGTH)
    work: int = 1_000_000
    #: the dead queue (SMSFLEET_DEAD_QUEUE_MAX_LENGTH): larger, since nothing consumes it automatically
    dead: int = 10_000_000


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    amqp_url: str = "amqp://guest:guest@localhost:5672/"
    redis_url: str = "redis://localhost:6379/0"
    namespace: str = "smsfleet"
    public_url: str = "http://localhost:8080"
    #: SMSFLEET_PUBLIC_URL was given: providers can reach it, so it may go out with messages as their report URL
    public_url_set: bool = False
    secret_key: str | None = msgspec.field(default=None)
    log_format: str = "console"
    log_level: str | None = None  # None: info for services, warning for one-shot commands
    default_region: str | None = None
    play_mobile_rate: float = 49.0
    status_horizon_s: float = 72 * 3600.0
    #: how far apart in time the fleet-wide rate limiter keeps slots beyond 1/rate (see `workers.ratelimit`)
    rate_margin_s: float = 0.03
    webhook_rapporto_ips: tuple[str, ...] = ()
    #: networks of the reverse proxies in front of the receiver: only their X-Forwarded-For is believed
    trusted_proxies: tuple[str, ...] = ()
    #: requests per second one client address may make to the receiver; 0: no limit
    webhook_rate_limit: float = 200.0
    queue_limits: QueueLimits = QueueLimits()

    @property
    def default_rates(self) -> dict[str, float]:
        """Per-gateway default rates set by configuration rather than by the adapter."""
        return {"playmobile": self.play_mobile_rate}

    def __repr__(self) -> str:  # never show the secret key or URL passwords
        return (
            f"Settings(amqp_url={redact_url(self.amqp_url)!r}, redis_url={redact_url(self.redis_url)!r}, "
            f"namespace={self.namespace!r}, secret_key={'set' if self.secret_key else 'unset'})"
        )

    __str__ = __repr__

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()

        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(name, "").strip()
            return value or default

        log_format = get("SMSFLEET_LOG_FORMAT", "console")
        if log_format not in ("json", "console"):
            raise ConfigError(f"SMSFLEET_LOG_FORMAT must be json or console, not {log_format!r}")
        namespace = get("SMSFLEET_NAMESPACE", "smsfleet") or "smsfleet"
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", namespace):
            raise ConfigError(f"SMSFLEET_NAMESPACE may hold 1 to 64 letters, digits, - and _ only, not {namespace!r}")

        def number(name: str, default: float, what: str, *, low: float, high: float = float("inf")) -> float:
            text = get(name) or str(default)
            try:
                value = float(text)
            except ValueError:
                raise ConfigError(f"{name} must be {what}, not {text!r}") from None
            if not low <= value <= high:
                raise ConfigError(f"{name} must be {what} from {low:g} to {high:g}, not {text!r}")
            return value

        play_mobile_rate = number("PLAY_MOBILE_LIMIT_REQUESTS_PER_SEC", 49, "a number", low=1e-3)
        status_horizon_s = number("SMSFLEET_STATUS_HORIZON_S", d.status_horizon_s, "a number of seconds", low=1)
        margin_ms = number("SMSFLEET_RATE_MARGIN_MS", d.rate_margin_s * 1000, "milliseconds", low=0, high=500)

        def count(name: str, default: int) -> int:
            text = (get(name) or str(default)).replace("_", "")
            if not re.fullmatch(r"[0-9]{1,15}", text):
                raise ConfigError(f"{name} must be a whole number of messages (0: unbounded), not {text!r}")
            return int(text)

        limits = QueueLimits(
            work=count("SMSFLEET_QUEUE_MAX_LENGTH", d.queue_limits.work),
            dead=count("SMSFLEET_DEAD_QUEUE_MAX_LENGTH", d.queue_limits.dead),
        )

        def listed(name: str) -> tuple[str, ...]:
            return tuple(item.strip() for item in (get(name) or "").split(",") if item.strip())

        webhook_rate = number("SMSFLEET_WEBHOOK_RATE_LIMIT", d.webhook_rate_limit, "requests per second", low=0)
        return cls(
            webhook_rapporto_ips=listed("SMSFLEET_WEBHOOK_RAPPORTO_IPS"),
            trusted_proxies=listed("SMSFLEET_TRUSTED_PROXIES"),
            webhook_rate_limit=webhook_rate,
            queue_limits=limits,
            status_horizon_s=status_horizon_s,
            rate_margin_s=margin_ms / 1000,
            amqp_url=get("SMSFLEET_AMQP_URL") or d.amqp_url,
            redis_url=get("SMSFLEET_REDIS_URL") or d.redis_url,
            namespace=namespace,
            public_url=(get("SMSFLEET_PUBLIC_URL") or d.public_url).rstrip("/"),
            public_url_set=bool(get("SMSFLEET_PUBLIC_URL")),
            secret_key=get("SMSFLEET_SECRET_KEY"),
            log_format=log_format,
            log_level=(get("SMSFLEET_LOG_LEVEL") or "").lower() or None,
            default_region=(get("SMSFLEET_DEFAULT_REGION") or "").upper() or None,
            play_mobile_rate=play_mobile_rate,
        )


def redact_url(url: str) -> str:
    """`amqp://user:secret@host/` -> `amqp://user:***@host/`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
