"""Process configuration, read once at the edge (CLI, process start) and passed down: from the environment,
over an optional TOML file (`SMSFLEET_CONFIG`, or the CLI's `--config`).

The file holds the settings of the README's configuration table, named as the variables are without their
`SMSFLEET_` prefix, in lower case (`amqp_url`, `rate_margin_ms`, `trusted_proxies = ["10.0.0.0/8"]`), and
Play Mobile's limit under the seed's own name, `PLAY_MOBILE_LIMIT_REQUESTS_PER_SEC`. A variable set in the
environment wins over the file. An unknown key or a bad value is one error naming the file and the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

__all__ = ["CONFIG_VARIABLE", "ConfigError", "QueueLimits", "Settings", "redact_url"]


#: the variable naming the configuration file
CONFIG_VARIABLE = "SMSFLEET_CONFIG"


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
    def from_env(cls, env: Mapping[str, str] | None = None, *, config: str | Path | None = None) -> Settings:
        """The settings from `env` (default: the process environment) over the TOML file `config`, else the one
        `SMSFLEET_CONFIG` names, if any."""
        env = os.environ if env is None else env
        path = config or env.get(CONFIG_VARIABLE, "").strip()
        if not path:
            return cls._from_variables(env)
        from_file = _read_config(Path(path))
        try:
            cls._from_variables(from_file)  # the file alone first: an error then names the file and its key
        except ConfigError as exc:
            message = str(exc)
            for name in from_file:
                message = message.replace(name, _key_of(name))
            raise ConfigError(f"{path}: {message}") from None
        return cls._from_variables(from_file | {k: v for k, v in env.items() if v.strip()})

    @classmethod
    def _from_variables(cls, env: Mapping[str, str]) -> Settings:
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


#: every variable `Settings` reads, and so (without the prefix, in lower case) every key a file may hold
VARIABLES = frozenset(
    {
        "SMSFLEET_AMQP_URL", "SMSFLEET_REDIS_URL", "SMSFLEET_NAMESPACE", "SMSFLEET_PUBLIC_URL",
        "SMSFLEET_SECRET_KEY", "SMSFLEET_LOG_FORMAT", "SMSFLEET_LOG_LEVEL", "SMSFLEET_DEFAULT_REGION",
        "PLAY_MOBILE_LIMIT_REQUESTS_PER_SEC", "SMSFLEET_STATUS_HORIZON_S", "SMSFLEET_RATE_MARGIN_MS",
        "SMSFLEET_QUEUE_MAX_LENGTH", "SMSFLEET_DEAD_QUEUE_MAX_LENGTH", "SMSFLEET_WEBHOOK_RAPPORTO_IPS",
        "SMSFLEET_TRUSTED_PROXIES", "SMSFLEET_WEBHOOK_RATE_LIMIT",
    }
)  # fmt: skip


def _key_of(variable: str) -> str:
    return variable if variable.startswith("PLAY_MOBILE") else variable.removeprefix("SMSFLEET_").lower()


def _read_config(path: Path) -> dict[str, str]:
    """The file's settings as the variables they stand for, their values as the environment would hold them."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a TOML file: {exc}") from None
    known = {_key_of(v): v for v in VARIABLES}
    found = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{path}: unknown setting {key!r}; known: {', '.join(sorted(known))}")
        found[known[key]] = _as_text(path, key, value)
    return found


def _as_text(path: Path, key: str, value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list) and all(isinstance(item, str | int | float) for item in value):
        return ",".join(map(str, value))
    raise ConfigError(f"{path}: {key} must be a string, a number or a list of them, not {type(value).__name__}")
