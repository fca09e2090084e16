"""The public receiver of provider callbacks (DESIGN §8): validate, publish with confirms, then answer.

    GET|POST /smslistener/listen_type/sms_<kind>?sender=<id>&token=<token>   every kind that pushes
    GET|POST /smslistener/listen_type/sms_rapporto                          Rapporto (the seed's exact path)
    GET /l/<code>  a shortened link (smsfleet.links): 302 to it, and a `click.<sender>` event
    GET /healthz   the process is up         GET /readyz   the broker connection is open
    (/metrics is not here: `serve(..., metrics_port=...)` serves it on a port of its own)

A callback is authenticated (the sender's token, compared in constant time; an unknown sender and a bad
token get the same 401), parsed by the sender's gateway adapter, and each delivery report or inbound SMS
is published to `<ns>.internal` (`report.<kind>` / `inbound.<kind>`) with publisher confirms. Only then
does the provider get the reply it expects. When the broker cannot take the messages (down, a nack from a
full queue after a few seconds of publishing it again, a return), the answer is a 503 with Retry-After, so
the provider retries: never a 200 for something not stored.

Rapporto's bare URL carries no token, so nothing on it is believed that a stranger could write:
- a delivery report goes on with no sender and no job id; the status worker matches it only through the
  provider ids we recorded, sender by sender. Every report gets the same answer, ours or not (no oracle);
- an inbound SMS (a STOP suppresses a number) is taken only from the networks in
  SMSFLEET_WEBHOOK_RAPPORTO_IPS (none configured: refused), and credited to the one Rapporto sender whose
  service id is the SMS's `to`, or to the only Rapporto sender; never to "the first".
The per-sender form `…/sms_rapporto?sender=<id>&token=<token>` authenticates like every other kind.

Bad input gets a 4xx and is never published; nothing a client sends makes this answer 5xx except an
unavailable broker. Each rejected request is one log line, within a per-client budget (`guard.QuietLog`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
import uuid
from collections.abc import Iterable
from typing import Any

import aio_pika
import aiohttp
import aiormq
import msgspec
import redis.asyncio as aioredis
import structlog
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from redis.exceptions import RedisError

from gateways import Callback, CallbackRequest, Gateway, gateway_class
from smsfleet import metrics
from smsfleet.connect import connect_amqp, redis_client
from smsfleet.contracts import ClickEvent, InboundMessage, ReportMessage, encode, normalize_phone, now
from smsfleet.kinds import KIND_SETTINGS
from smsfleet.links import Shortener
from smsfleet.senders import Sender, SenderCache, open_registry
from smsfleet.settings import Settings
from smsfleet.topology import Names, declare, publish_json

from .guard import Options, QuietLog, QuietServerErrors, RateLimiter, client_address, networks, within

__all__ = ["MAX_BODY", "SERVER_OPTIONS", "Receiver", "build_app"]

log = structlog.get_logger("smsfleet.webhooks")

MAX_BODY = 256 * 1024
PUSH_KINDS = tuple(kind for kind, cls in KIND_SETTINGS.items() if cls.callbacks)
PROBES = frozenset({"/healthz", "/readyz"})
CONFIGURE_RAPPORTO = (
    "inbound SMS on the bare Rapporto URL are refused: list Rapporto's networks in "
    "SMSFLEET_WEBHOOK_RAPPORTO_IPS, or give Rapporto the sender's URL (smsfleet senders show)"
)

#: what an AppRunner of the receiver takes: no access log of aiohttp's (ours has no query string)
SERVER_OPTIONS: dict[str, Any] = {"access_log": None}


class Unavailable(Exception):
    pass


class Rejected(Exception):
    """A request answered with a 4xx (or a 503): `reason` goes to the log and, unless `public`, to the caller."""

    def __init__(self, status: int, reason: str, *, public: str | None = None, retry_after: float = 0) -> None:
        super().__init__(reason)
        self.status, self.reason, self.public, self.retry_after = status, reason, public or reason, retry_after

    def response(self) -> web.Response:
        headers = {"Retry-After": str(max(1, math.ceil(self.retry_after)))} if self.retry_after else None
        return web.json_response({"error": self.public}, status=self.status, headers=headers)


class Receiver:
    """The receiver's state: one broker channel with confirms, a Redis client, the sender cache, and the
    per-client rate limiter and log budget."""

    def __init__(
        self, settings: Settings, *, rapporto_ips: Iterable[str] | None = None, options: Options | None = None
    ) -> None:
        self.settings = settings
        self.options = options or Options.of(settings)
        self.names = Names(settings.namespace)
        ips = settings.webhook_rapporto_ips if rapporto_ips is None else rapporto_ips
        self.rapporto_nets = networks(ips, "SMSFLEET_WEBHOOK_RAPPORTO_IPS")
        self.trusted_proxies = networks(self.options.trusted_proxies, "SMSFLEET_TRUSTED_PROXIES")
        self.limiter = RateLimiter(self.options.rate_limit)
        self.quiet = QuietLog(self.options.log_per_minute)
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None
        self.redis: aioredis.Redis | None = None
        self.senders: SenderCache | None = None
        self.http: aiohttp.ClientSession | None = None
        self.links: Shortener | None = None
        self._adapters: dict[str, tuple[Sender, Gateway[Any]]] = {}

    async def start(self, _: web.Application | None = None) -> None:
        """Connect; a start that fails or is cancelled (a stop while the broker does not answer) closes what it
        opened, since aiohttp calls `stop` only after a whole start."""
        try:
            self.redis = redis_client(self.settings.redis_url, socket_timeout=5)
            self.senders = SenderCache(open_registry(self.redis, self.names, self.settings.secret_key))
            await self.senders.start()
            self.http = aiohttp.ClientSession()  # adapters want one; parsing callbacks makes no request
            self.connection = await connect_amqp(self.settings.amqp_url)
            self.channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
            async with self.connection.channel() as setup:  # not on self.channel: see workers.runtime
                await declare(setup, self.names, self.settings.queue_limits)
            self.links = Shortener(self.redis, self.names, self.settings.public_url)
        except BaseException:
            await self.stop()
            raise

    async def stop(self, _: web.Application | None = None) -> None:
        if self.connection is not None:
            await self.connection.close()
        if self.senders is not None:
            await self.senders.stop()
        if self.http is not None:
            await self.http.close()
        if self.redis is not None:
            await self.redis.aclose()

    @property
    def ready(self) -> bool:
        """The broker connection and the publishing channel are open (after a reconnect, both again)."""
        connected = self.connection is not None and not self.connection.is_closed
        return connected and self.channel is not None and not self.channel.is_closed

    def client(self, request: web.Request) -> str:
        return client_address(request.remote, request.headers.getall("X-Forwarded-For", ()), self.trusted_proxies)

    def adapter(self, sender: Sender) -> Gateway[Any]:
        assert self.http is not None
        cached = self._adapters.get(sender.id)
        if cached is None or cached[0] is not sender:
            cached = self._adapters[sender.id] = (sender, gateway_class(sender.gateway)(sender.settings, self.http))
        return cached[1]

    def parser(self, kind: str) -> Gateway[Any]:
        """The kind's adapter with no sender's settings (blank ones): parsing a callback needs none."""
        assert self.http is not None
        cls = KIND_SETTINGS[kind]
        # every text setting blank, the optional ones too, so that a rule asking for one of them (Rapporto's
        # password or key) holds; the values are not validated: they are never used
        blank = cls(**{f.name: "" for f in msgspec.structs.fields(cls) if f.required or f.default is None})
        return gateway_class(kind)(blank, self.http)

    async def publish(self, bodies: list[tuple[str, bytes]]) -> None:
        """Publish with confirms; Unavailable when the broker does not take them (a nack or a return too).

        A nacked message is published again at once on a channel of its own, then, while that is nacked too,
        after a pause, for up to `NACKED_RETRY_S` in all: a provider is better served by a late 200 than by a
        503 it may retry only hours later. After a node's loss, RabbitMQ 3.10 nacks a channel's publishes to a
        quorum queue for 4 to 7 s when that channel first published to the queue before its new leader was
        elected (as the channel restored right after a reconnect does), while a new channel is confirmed from
        about 1 s on. A nack means the broker did not keep the message, so publishing it again stores it once
        (a full queue nacks every channel, and still gets its 503, later)."""
        if self.channel is None or not self.ready:
            raise Unavailable("broker connection is down")
        pending = bodies
        for pause in (*NACKED_RETRY_S, None):
            outcomes = await _publish_all(self.channel, self.names.internal_exchange, pending)
            if any(_nacked(o) for o in outcomes) and all(o is None or _nacked(o) for o in outcomes):
                nacked = [item for item, o in zip(pending, outcomes, strict=True) if o is not None]
                pending, outcomes = nacked, await self._publish_on_new_channel(nacked)
            errors = [o for o in outcomes if o is not None]
            if not errors:
                return
            if pause is None or not all(map(_nacked, errors)):
                raise _unavailable(next((e for e in errors if not _nacked(e)), errors[0]))
            await asyncio.sleep(pause)
            pending = [item for item, o in zip(pending, outcomes, strict=True) if o is not None]

    async def _publish_on_new_channel(self, bodies: list[tuple[str, bytes]]) -> list[BaseException | None]:
        """`bodies` published on a confirming channel opened for them (and closed after): the outcome of each."""
        assert self.connection is not None
        try:
            async with self.connection.channel(publisher_confirms=True, on_return_raises=True) as channel:
                return await _publish_all(channel, self.names.internal_exchange, bodies)
        except Exception as exc:  # the channel could not be opened (or closed): nothing was published on it
            return [exc] * len(bodies)


#: pauses before a nacked message is published again (6.2 s in all, within a provider's usual 10-s timeout)
NACKED_RETRY_S = (0.2, 0.4, 0.8, 1.6, 3.2)
#: the longest a publish waits for the broker's confirm
PUBLISH_TIMEOUT_S = 5.0


async def _publish_all(
    channel: AbstractChannel, exchange: str, bodies: list[tuple[str, bytes]]
) -> list[BaseException | None]:
    """Publish `(routing_key, body)` pairs, persistent and mandatory, with confirms, in one write (`publish_json`):
    the outcome of each, within `PUBLISH_TIMEOUT_S` in all (`publish_json` waits for a robust channel whose
    connection was lost to be restored: the provider gets its 503 instead)."""
    try:
        async with asyncio.timeout(PUBLISH_TIMEOUT_S):
            outcomes = await asyncio.gather(
                *(publish_json(channel, exchange, b, k, confirm_timeout_s=PUBLISH_TIMEOUT_S) for k, b in bodies),
                return_exceptions=True,
            )
    except TimeoutError as exc:
        return [exc] * len(bodies)
    return [o if isinstance(o, BaseException) else None for o in outcomes]


def _unavailable(exc: BaseException) -> BaseException:
    """What a publish failure is to a caller: the broker did not take it (Unavailable), or a bug (itself)."""
    if isinstance(exc, aio_pika.exceptions.AMQPError | TimeoutError | ConnectionError | RuntimeError):
        return Unavailable(f"{type(exc).__name__}: {exc}"[:200])
    return exc


def _nacked(outcome: object) -> bool:
    """A publish the broker refused to keep (Basic.Nack): not one it returned as unroutable."""
    return isinstance(outcome, aio_pika.exceptions.DeliveryError) and isinstance(outcome.frame, aiormq.spec.Basic.Nack)


RECEIVER = web.AppKey("receiver", Receiver)


async def callback(request: web.Request) -> web.StreamResponse:
    receiver = request.app[RECEIVER]
    kind = request.match_info["kind"]
    if kind not in PUSH_KINDS:
        raise Rejected(404, f"no callbacks for {kind[:40]!r}")
    assert receiver.senders is not None
    if KIND_SETTINGS[kind].pushes_on_fixed_path and "sender" not in request.query and "token" not in request.query:
        return await _fixed_path(request, receiver, kind)
    sender_id, token = request.query.get("sender", ""), request.query.get("token", "")
    found = receiver.senders.get(sender_id)
    expected = found.webhook_token if found is not None and found.gateway == kind else uuid.uuid4().hex
    if not token or not hmac.compare_digest(token.encode(), expected.encode()) or found is None:
        raise Rejected(401, "unknown sender or bad token")
    parsed = _parse(receiver.adapter(found), request, await request.read())
    await _publish(receiver, kind, parsed, found.id, [found.id] * len(parsed.inbound))
    return _reply(parsed)


async def _fixed_path(request: web.Request, receiver: Receiver, kind: str) -> web.StreamResponse:
    """A call to the kind's fixed URL (Rapporto's): no sender, no token (see the module doc)."""
    client = receiver.client(request)
    if receiver.rapporto_nets and not within(client, receiver.rapporto_nets):
        raise Rejected(403, "not an address in SMSFLEET_WEBHOOK_RAPPORTO_IPS", public="not accepted")
    parsed = _parse(receiver.parser(kind), request, await request.read())
    credited: list[str] = []
    if parsed.inbound:
        if not receiver.rapporto_nets:
            raise Rejected(403, CONFIGURE_RAPPORTO, public="not accepted")
        for sms in parsed.inbound:
            sender = _sender_for(receiver, kind, sms.to)
            if sender is None:
                raise Rejected(403, "no single Rapporto sender for this short number", public="not accepted")
            credited.append(sender.id)
    await _publish(receiver, kind, parsed, None, credited)
    return _reply(parsed)


def _sender_for(receiver: Receiver, kind: str, to: str) -> Sender | None:
    """The sender of `kind` whose service id (or short number) is `to`, else the only sender of `kind`."""
    assert receiver.senders is not None
    of_kind = [s for s in receiver.senders.all() if s.gateway == kind]
    to = to.strip()
    named = [s for s in of_kind if to and to in _service_numbers(s)]
    if len(named) == 1:
        return named[0]
    return of_kind[0] if not named and len(of_kind) == 1 else None


def _service_numbers(sender: Sender) -> set[str]:
    field = type(sender.settings).service_number_field
    number = str(getattr(sender.settings, field, "") or "").strip() if field else ""
    return {number} if number else set()


def _parse(adapter: Gateway[Any], request: web.Request, body: bytes) -> Callback:
    query = {k: v for k, v in request.query.items() if k not in ("sender", "token")}
    raw = CallbackRequest(method=request.method, query=query, headers=dict(request.headers), body=body)
    try:
        return adapter.parse_callback(raw)
    except ValueError as exc:
        raise Rejected(400, str(exc)[:300]) from None
    except Exception as exc:  # a parser bug or a body nested 100,000 deep: the request's problem, no traceback
        raise Rejected(400, f"unreadable callback ({type(exc).__name__})", public="unreadable callback") from None


async def _publish(
    receiver: Receiver, kind: str, parsed: Callback, sender: str | None, inbound_senders: list[str]
) -> None:
    """Each report and inbound SMS to the broker, or Rejected(503). `sender` None: the bare Rapporto URL,
    where no caller-supplied job id is passed on either."""
    received = now()
    bodies = []
    for report in parsed.reports:
        msg = ReportMessage(
            gateway=kind, sender=sender, provider_message_id=report.provider_message_id,
            job_id=report.job_id if sender is not None else None, state=report.state,
            at=report.at, error=report.error, raw_status=report.raw_status, received_at=received, to=report.to,
        )  # fmt: skip
        bodies.append((f"report.{kind}", encode(msg)))
    for sms, credited in zip(parsed.inbound, inbound_senders, strict=True):
        try:
            phone = normalize_phone(sms.from_, receiver.settings.default_region)
        except ValueError:
            phone = sms.from_
        msg_in = InboundMessage(
            id=uuid.uuid4().hex, gateway=kind, sender=credited, from_=phone, to=sms.to, text=sms.text,
            provider_message_id=sms.provider_message_id, at=sms.at or received, keyword=sms.keyword,
        )  # fmt: skip
        bodies.append((f"inbound.{kind}", encode(msg_in)))
    try:
        await receiver.publish(bodies)
    except Unavailable as exc:
        raise Rejected(503, f"not stored: {exc}", public="try again later", retry_after=30) from None
    log.info("callback.stored", gateway=kind, sender=sender, reports=len(parsed.reports), inbound=len(parsed.inbound))


def _reply(parsed: Callback) -> web.Response:
    return web.Response(status=parsed.reply_status, text=parsed.reply_body, content_type=parsed.reply_content_type)


async def click(request: web.Request) -> web.StreamResponse:
    """A shortened link (`smsfleet.links`): a 302 to where it points, and a `click.<sender>` event. The reader is
    sent on even when the event cannot be published (logged): a click is not worth a broken link."""
    receiver = request.app[RECEIVER]
    assert receiver.links is not None
    code = request.match_info["code"]
    try:
        link = await receiver.links.resolve(code)
    except (RedisError, OSError) as exc:
        raise Rejected(
            503, f"links unavailable: {type(exc).__name__}", public="try again later", retry_after=5
        ) from None
    if link is None:
        raise Rejected(404, "no such link", public="no such link")
    event = ClickEvent(job_id=link.job_id, sender=link.sender, url=link.url, code=code, at=now())
    try:
        assert receiver.channel is not None
        await publish_json(
            receiver.channel, receiver.names.events_exchange, encode(event), event.routing_key,
            mandatory=False, confirm_timeout_s=PUBLISH_TIMEOUT_S,
        )  # fmt: skip
    except (aio_pika.exceptions.AMQPError, TimeoutError, ConnectionError, RuntimeError, AssertionError) as exc:
        log.warning("click.not_published", sender=link.sender, error=type(exc).__name__)
    raise web.HTTPFound(link.url)


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    receiver = request.app[RECEIVER]
    if receiver.ready:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "broker unavailable"}, status=503)


#: what reading a request can raise when the request is malformed: a broken gzip/deflate/br stream, a bad
#: charset, undecodable text, a body nested too deep
MALFORMED = (
    HttpProcessingError,
    RequestPayloadError,
    aiohttp.ClientError,
    UnicodeError,
    LookupError,
    ValueError,
    RecursionError,
)


@web.middleware
async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
    """The per-client rate limit; every way a request fails becomes a 4xx (503 for the broker) and one log
    line, within the client's log budget; nothing a client sends becomes a 5xx or a traceback."""
    receiver = request.app[RECEIVER]
    client = receiver.client(request)
    started = time.monotonic()
    error: BaseException | None = None
    try:
        if request.path not in PROBES and (wait := receiver.limiter.wait(client)):
            raise Rejected(429, "too many requests", retry_after=wait)
        response: web.StreamResponse = await handler(request)
    except Rejected as exc:
        response, reason = exc.response(), exc.reason
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        _rejected(receiver, request, client, exc.status, exc.reason)
        raise
    except MALFORMED as exc:
        response, reason = web.json_response({"error": "bad request"}, status=400), type(exc).__name__
    except Exception as exc:  # a bug of ours: still the client's 400, with the traceback once in the log
        response, reason, error = web.json_response({"error": "bad request"}, status=400), type(exc).__name__, exc
    else:
        log.debug("request.served", client=client, method=request.method[:16], path=request.path[:200],
                  status=response.status, ms=round((time.monotonic() - started) * 1000, 1))  # fmt: skip
        return response
    _rejected(receiver, request, client, response.status, reason, error=error)
    return response


def _rejected(
    receiver: Receiver,
    request: web.Request,
    client: str,
    status: int,
    reason: str,
    *,
    error: BaseException | None = None,
) -> None:
    if not receiver.quiet.allow(client):
        return
    level = log.warning if status >= 500 or error is not None else log.info
    level("request.rejected", client=client, method=request.method[:16], path=request.path[:200],
          status=status, reason=reason, exc_info=error)  # fmt: skip


@web.middleware
async def count_callbacks(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every callback answer, by gateway and HTTP status (the metric of provider traffic)."""
    status = 500
    try:
        response: web.StreamResponse = await handler(request)
        status = response.status
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        kind = request.match_info.get("kind")
        if kind in KIND_SETTINGS:
            metrics.CALLBACKS.labels(kind, str(status)).inc()
    return response


def quiet_aiohttp() -> None:
    """aiohttp's error log of malformed HTTP: one line each, no quote, no traceback (once per process)."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, QuietServerErrors) for f in server_log.filters):
        server_log.addFilter(QuietServerErrors(QuietLog(20)))


def build_app(receiver: Receiver) -> web.Application:
    quiet_aiohttp()
    app = web.Application(client_max_size=MAX_BODY, middlewares=[count_callbacks, guard])
    app[RECEIVER] = receiver
    app.router.add_route("GET", "/smslistener/listen_type/sms_{kind}", callback)
    app.router.add_route("POST", "/smslistener/listen_type/sms_{kind}", callback)
    app.router.add_get("/l/{code}", click)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.on_startup.append(receiver.start)
    app.on_cleanup.append(receiver.stop)
    return app
