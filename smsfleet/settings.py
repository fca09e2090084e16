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
from urllib.parse import unquote, urlsplit

import msgspec

__all__ = ["CONFIG_VARIABLE", "ConfigError", "QueueLimits", "SentinelUrl", "Settings", "amqp_urls", "redact_url"]


#: the variable naming the configuration file
CONFIG_VARIABLE = "SMSFLEET_CONFIG"


class ConfigError(ValueError):
    """A setting has a value we cannot use. The message names the variable."""


class QueueLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The queue arguments that come from configuration. Every process must declare the same values.

    The most messages a queue holds (`x-max-length`, with `x-overflow: reject-publish`: a publish to a full
    queue is refused, nothing is dropped); 0: unbounded. And, for a cluster, how many nodes hold a replica of
    each quorum queue and where its leader goes."""

    #: send, status, inbound and delay-tier queues (SMSFLEET_QUEUE_MAX_LENGTH)
    work: int = 1_000_000
    #: the dead queue (SMSFLEET_DEAD_QUEUE_MAX_LENGTH): larger, since nothing consumes it automatically
    dead: int = 10_000_000
    #: `x-quorum-initial-group-size` (SMSFLEET_QUORUM_GROUP_SIZE); 0: not declared, the broker's default
    #: (every node of the cluster)
    replicas: int = 0
    #: `x-queue-leader-locator` (SMSFLEET_QUEUE_LEADER_LOCATOR): `balanced` or `client-local`; "": not declared
    leader_locator: str = ""


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
    #: the most of a sender's rate its status rechecks may spend; sends have the rest, and any slot rechecks leave
    recheck_share: float = 0.2
    queue_limits: QueueLimits = QueueLimits()
    #: replicas that must have the idempotency claim before the provider is called (Redis WAIT); 0: none
    redis_wait_replicas: int = 0
    #: how long that WAIT may take; fewer replicas by then is a Redis error (the job goes back)
    redis_wait_timeout_ms: int = 1000

    @property
    def amqp_urls(self) -> tuple[str, ...]:
        """The broker nodes of SMSFLEET_AMQP_URL, in order (one for a single node)."""
        return amqp_urls(self.amqp_url)

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

        def whole(name: str, value: float) -> int:
            if not value.is_integer():
                raise ConfigError(f"{name} must be a whole number, not {value:g}")
            return int(value)

        locator = (get("SMSFLEET_QUEUE_LEADER_LOCATOR") or "").lower()
        if locator not in ("", "balanced", "client-local"):
            raise ConfigError(f"SMSFLEET_QUEUE_LEADER_LOCATOR must be balanced or client-local, not {locator!r}")
        limits = QueueLimits(
            work=count("SMSFLEET_QUEUE_MAX_LENGTH", d.queue_limits.work),
            dead=count("SMSFLEET_DEAD_QUEUE_MAX_LENGTH", d.queue_limits.dead),
            replicas=whole(
                "SMSFLEET_QUORUM_GROUP_SIZE", number("SMSFLEET_QUORUM_GROUP_SIZE", 0, "nodes", low=0, high=99)
            ),
            leader_locator=locator,
        )
        wait_replicas = number("SMSFLEET_REDIS_WAIT_REPLICAS", 0, "a number of replicas", low=0, high=99)
        wait_ms = number("SMSFLEET_REDIS_WAIT_TIMEOUT_MS", d.redis_wait_timeout_ms, "milliseconds", low=1, high=6e4)
        amqp_url = get("SMSFLEET_AMQP_URL") or d.amqp_url
        redis_url = get("SMSFLEET_REDIS_URL") or d.redis_url
        _check_amqp_urls(amqp_url)
        _check_redis_url(redis_url)

        def listed(name: str) -> tuple[str, ...]:
            return tuple(item.strip() for item in (get(name) or "").split(",") if item.strip())

        webhook_rate = number("SMSFLEET_WEBHOOK_RATE_LIMIT", d.webhook_rate_limit, "requests per second", low=0)
        recheck_share = number("SMSFLEET_RECHECK_SHARE", d.recheck_share, "a share of the rate", low=0.01, high=1)
        return cls(
            webhook_rapporto_ips=listed("SMSFLEET_WEBHOOK_RAPPORTO_IPS"),
            trusted_proxies=listed("SMSFLEET_TRUSTED_PROXIES"),
            webhook_rate_limit=webhook_rate,
            recheck_share=recheck_share,
            queue_limits=limits,
            status_horizon_s=status_horizon_s,
            rate_margin_s=margin_ms / 1000,
            amqp_url=amqp_url,
            redis_url=redis_url,
            redis_wait_replicas=whole("SMSFLEET_REDIS_WAIT_REPLICAS", wait_replicas),
            redis_wait_timeout_ms=whole("SMSFLEET_REDIS_WAIT_TIMEOUT_MS", wait_ms),
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
    """`amqp://user:secret@host/` -> `amqp://user:***@host/`; each URL of a comma-separated list, and the
    password of a Sentinel URL (`redis+sentinel://:secret@h1:26379,h2:26379/...`) too."""
    if "," in url and not url.startswith(SENTINEL_SCHEMES):
        return ",".join(redact_url(part) for part in url.split(","))
    url = re.sub(r"([?&]sentinel_password=)[^&]*", r"\1***", url)
    scheme, sep, rest = url.partition("://")
    userinfo, at, _ = rest.partition("/")[0].rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{rest[len(userinfo) + 1 :]}"


def amqp_urls(url: str) -> tuple[str, ...]:
    """`amqp://a/,amqp://b/` -> the nodes, in order."""
    return tuple(part.strip() for part in url.split(",") if part.strip())


SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")


class SentinelUrl(msgspec.Struct, frozen=True, kw_only=True):
    """`redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db][?sentinel_password=...]`:
    the Sentinels to ask, the service they watch, and what to connect to its primary with (the password is the
    Redis servers'; Sentinels that want one of their own get `sentinel_password`). `rediss+sentinel`: TLS."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False

    @classmethod
    def parse(cls, url: str) -> SentinelUrl:
        """Raises ConfigError (naming SMSFLEET_REDIS_URL, never the password) when `url` is not one."""
        scheme, _, rest = url.partition("://")
        netloc, _, path = rest.partition("/")
        path, _, query = path.partition("?")
        userinfo, _, hosts = netloc.rpartition("@")
        sentinels = []
        for item in hosts.split(","):
            host, _, port = item.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"SMSFLEET_REDIS_URL: {item.strip()!r} is not host:port (a Sentinel)")
            sentinels.append((host.strip("[]"), int(port)))
        service, _, db = path.strip("/").partition("/")
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", service) or not re.fullmatch(r"[0-9]{0,5}", db):
            raise ConfigError("SMSFLEET_REDIS_URL: a Sentinel URL ends with /<service name>[/<db number>]")
        user, _, password = userinfo.partition(":")
        options = dict(item.partition("=")[::2] for item in query.split("&") if item)
        return cls(
            sentinels=tuple(sentinels),
            service=service,
            db=int(db or 0),
            username=unquote(user) or None,
            password=unquote(password) or None,
            sentinel_password=unquote(options.get("sentinel_password", "")) or None,
            ssl=scheme == "rediss+sentinel",
        )


def _check_amqp_urls(url: str) -> None:
    nodes = amqp_urls(url)
    if not nodes:
        raise ConfigError("SMSFLEET_AMQP_URL is empty")
    for node in nodes:
        parts = urlsplit(node)
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:
            port_ok = False
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname or not port_ok:
            raise ConfigError(
                f"SMSFLEET_AMQP_URL: {redact_url(node)!r} is not an amqp:// or amqps:// URL with a host "
                "(several nodes: comma-separated)"
            )


def _check_redis_url(url: str) -> None:
    if url.startswith(SENTINEL_SCHEMES):
        SentinelUrl.parse(url)
        return
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"SMSFLEET_REDIS_URL: {redact_url(url)!r} is not a redis://, rediss://, unix:// or redis+sentinel:// URL"
        )


#: every variable `Settings` reads, and so (without the prefix, in lower case) every key a file may hold
VARIABLES = frozenset(
    {
        "SMSFLEET_AMQP_URL", "SMSFLEET_REDIS_URL", "SMSFLEET_NAMESPACE", "SMSFLEET_PUBLIC_URL",
        "SMSFLEET_SECRET_KEY", "SMSFLEET_LOG_FORMAT", "SMSFLEET_LOG_LEVEL", "SMSFLEET_DEFAULT_REGION",
        "PLAY_MOBILE_LIMIT_REQUESTS_PER_SEC", "SMSFLEET_STATUS_HORIZON_S", "SMSFLEET_RATE_MARGIN_MS",
        "SMSFLEET_QUEUE_MAX_LENGTH", "SMSFLEET_DEAD_QUEUE_MAX_LENGTH", "SMSFLEET_WEBHOOK_RAPPORTO_IPS",
        "SMSFLEET_TRUSTED_PROXIES", "SMSFLEET_WEBHOOK_RATE_LIMIT", "SMSFLEET_RECHECK_SHARE",
        "SMSFLEET_QUORUM_GROUP_SIZE", "SMSFLEET_QUEUE_LEADER_LOCATOR", "SMSFLEET_REDIS_WAIT_REPLICAS",
        "SMSFLEET_REDIS_WAIT_TIMEOUT_MS",
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
