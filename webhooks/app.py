"""The public receiver of provider callbacks (DESIGN §8): validate, publish with confirms, then answer.

    GET|POST /smslistener/listen_type/sms_<kind>?sender=<id>&token=<token>   every kind that pushes
    GET|POST /smslistener/listen_type/sms_rapporto                          Rapporto (the seed's exact path)
    GET /healthz   the process is up         GET /readyz   the broker connection is open

A callback is authenticated (the sender's token, compared in constant time; an unknown sender and a bad
token get the same 401), parsed by the sender's gateway adapter, and each delivery report or inbound SMS
is published to `<ns>.internal` (`report.<kind>` / `inbound.<kind>`) with publisher confirms. Only then
does the provider get the reply it expects. When the broker cannot take the messages, the answer is a 503
with Retry-After, so the provider retries: never a 200 for something not stored.

Rapporto's URL carries no token: a Rapporto report is accepted only when it names a message we sent (its
id is in the provider-id map). Restrict the path to Rapporto's addresses at the ingress as well
(`SMSFLEET_WEBHOOK_RAPPORTO_IPS` lists the allowed client addresses; empty allows any).

Bad input gets a 4xx and is never published; nothing a provider sends makes this answer 5xx except an
unavailable broker.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import uuid
from typing import Any

import aio_pika
import aiohttp
import msgspec
import redis.asyncio as aioredis
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aiohttp import web

from gateways import CallbackRequest, Gateway, gateway_class
from smsfleet import metrics
from smsfleet.contracts import InboundMessage, ReportMessage, encode, normalize_phone, now
from smsfleet.kinds import KIND_SETTINGS
from smsfleet.senders import Cipher, Sender, SenderCache, SenderRegistry
from smsfleet.settings import Settings
from smsfleet.topology import Names, declare, message

__all__ = ["MAX_BODY", "Receiver", "build_app"]

log = structlog.get_logger("smsfleet.webhooks")

MAX_BODY = 256 * 1024
PUSH_KINDS = tuple(kind for kind, cls in KIND_SETTINGS.items() if cls.callbacks)


class Unavailable(Exception):
    pass


class Receiver:
    """The receiver's state: one broker channel with confirms, a Redis client, the sender cache."""

    def __init__(self, settings: Settings, *, rapporto_ips: tuple[str, ...] = ()) -> None:
        self.settings = settings
        self.names = Names(settings.namespace)
        self.rapporto_nets = [ipaddress.ip_network(ip, strict=False) for ip in rapporto_ips]
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None
        self.exchange: AbstractExchange | None = None
        self.redis: aioredis.Redis | None = None
        self.senders: SenderCache | None = None
        self.http: aiohttp.ClientSession | None = None
        self._adapters: dict[str, tuple[Sender, Gateway[Any]]] = {}

    async def start(self, _: web.Application | None = None) -> None:
        self.redis = aioredis.Redis.from_url(self.settings.redis_url, socket_timeout=5)
        cipher = Cipher(self.settings.secret_key) if self.settings.secret_key else None
        self.senders = SenderCache(SenderRegistry(self.redis, self.names, cipher))
        await self.senders.start()
        self.http = aiohttp.ClientSession()  # adapters want one; parsing callbacks makes no request
        self.connection = await aio_pika.connect_robust(self.settings.amqp_url)
        self.channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare(self.channel, self.names)
        self.exchange = await self.channel.get_exchange(self.names.internal_exchange, ensure=False)

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

    def adapter(self, sender: Sender) -> Gateway[Any]:
        assert self.http is not None
        cached = self._adapters.get(sender.id)
        if cached is None or cached[0] is not sender:
            cached = self._adapters[sender.id] = (sender, gateway_class(sender.gateway)(sender.settings, self.http))
        return cached[1]

    async def publish(self, bodies: list[tuple[str, bytes]]) -> None:
        """Publish with confirms; Unavailable when the broker does not take them."""
        if self.exchange is None or not self.ready:
            raise Unavailable("broker connection is down")
        try:
            await asyncio.gather(
                *(
                    self.exchange.publish(message(body), routing_key=key, mandatory=True, timeout=5)
                    for key, body in bodies
                )
            )
        except (aio_pika.exceptions.AMQPError, TimeoutError, ConnectionError, RuntimeError) as exc:
            raise Unavailable(str(exc)) from None


RECEIVER = web.AppKey("receiver", Receiver)


def _unauthorized() -> web.Response:
    return web.json_response({"error": "unknown sender or bad token"}, status=401)


async def callback(request: web.Request) -> web.StreamResponse:  # noqa: PLR0911 - one answer per way to fail
    receiver = request.app[RECEIVER]
    kind = request.match_info["kind"]
    if kind not in PUSH_KINDS:
        return web.json_response({"error": f"no callbacks for {kind!r}"}, status=404)
    assert receiver.senders is not None
    if kind == "rapporto":
        sender = _rapporto_sender(receiver, request)
        if sender is None:
            return web.json_response({"error": "not accepted"}, status=403)
    else:
        sender_id, token = request.query.get("sender", ""), request.query.get("token", "")
        found = receiver.senders.get(sender_id)
        expected = found.webhook_token if found is not None and found.gateway == kind else uuid.uuid4().hex
        if not token or not hmac.compare_digest(token.encode(), expected.encode()) or found is None:
            return _unauthorized()
        sender = found
    body = await request.read()
    query = {k: v for k, v in request.query.items() if k not in ("sender", "token")}
    raw = CallbackRequest(method=request.method, query=query, headers=dict(request.headers), body=body)
    try:
        parsed = receiver.adapter(sender).parse_callback(raw)
    except ValueError as exc:
        return web.json_response({"error": str(exc)[:300]}, status=400)
    except Exception:  # a parser bug must not become a 5xx the provider retries forever
        log.exception("callback.parse_failed", gateway=kind, sender=sender.id)
        return web.json_response({"error": "unreadable callback"}, status=400)
    received = now()
    bodies = []
    for report in parsed.reports:
        if kind == "rapporto" and not await _known(receiver, kind, report.provider_message_id):
            return web.json_response({"error": "unknown message id"}, status=400)  # Rapporto retries on 400
        msg = ReportMessage(
            gateway=kind, sender=None if kind == "rapporto" else sender.id,
            provider_message_id=report.provider_message_id, job_id=report.job_id, state=report.state,
            at=report.at, error=report.error, raw_status=report.raw_status, received_at=received,
        )  # fmt: skip
        bodies.append((f"report.{kind}", encode(msg)))
    for sms in parsed.inbound:
        try:
            phone = normalize_phone(sms.from_, receiver.settings.default_region)
        except ValueError:
            phone = sms.from_
        msg_in = InboundMessage(
            id=uuid.uuid4().hex, gateway=kind, sender=sender.id, from_=phone, to=sms.to, text=sms.text,
            provider_message_id=sms.provider_message_id, at=sms.at or received,
        )  # fmt: skip
        bodies.append((f"inbound.{kind}", encode(msg_in)))
    try:
        await receiver.publish(bodies)
    except Unavailable as exc:
        log.warning("callback.not_stored", gateway=kind, error=str(exc))
        return web.json_response({"error": "try again later"}, status=503, headers={"Retry-After": "30"})
    log.info(
        "callback.stored", gateway=kind, sender=sender.id, reports=len(parsed.reports), inbound=len(parsed.inbound)
    )
    return web.Response(status=parsed.reply_status, text=parsed.reply_body, content_type=parsed.reply_content_type)


def _rapporto_sender(receiver: Receiver, request: web.Request) -> Sender | None:
    if receiver.rapporto_nets:
        try:
            address = ipaddress.ip_address(request.remote or "")
        except ValueError:
            return None
        if not any(address in net for net in receiver.rapporto_nets):
            return None
    assert receiver.senders is not None
    return next((s for s in receiver.senders.all() if s.gateway == "rapporto"), None)


async def _known(receiver: Receiver, kind: str, provider_id: str | None) -> bool:
    if not provider_id or receiver.redis is None:
        return False
    return bool(await receiver.redis.exists(receiver.names.redis_key("pid", kind, provider_id)))


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    receiver = request.app[RECEIVER]
    if receiver.ready:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "broker unavailable"}, status=503)


@web.middleware
async def no_tracebacks(request: web.Request, handler: Any) -> web.StreamResponse:
    """Anything unexpected while reading a request is the request's problem: 400, logged, no traceback out."""
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException:
        raise
    except (aiohttp.ClientError, UnicodeDecodeError, msgspec.DecodeError, ValueError) as exc:
        log.info("callback.bad_request", error=type(exc).__name__)
        return web.json_response({"error": "bad request"}, status=400)
    return response


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


def build_app(receiver: Receiver) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[count_callbacks, no_tracebacks])
    app[RECEIVER] = receiver
    app.router.add_route("GET", "/smslistener/listen_type/sms_{kind}", callback)
    app.router.add_route("POST", "/smslistener/listen_type/sms_{kind}", callback)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics.metrics_handler)
    app.on_startup.append(receiver.start)
    app.on_cleanup.append(receiver.stop)
    return app
