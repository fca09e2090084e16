"""The admin application: `build_app(config, settings)`, and `serve` to run it.

Middlewares, outermost first: security headers (CSP without inline script or style; fetch to this origin
only, where the test-send page polls the API; no caching of pages and answers, no framing) -> errors as
JSON or as a page -> authentication -> CSRF. Its routes: the overview (`/`, `admin.overview`), senders
(`admin.pages`, `admin.api`), job lookup and test sends (`admin.jobs`), the dead queue (`admin.dead`).
The registry it writes to is the kernel's `SenderRegistry`: every change bumps the version and is
published on the change channel, so running workers follow it without a restart.
RabbitMQ is connected on first use (`admin.broker`): the sender pages work without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import jinja2
import structlog
from aiohttp import hdrs, web
from redis.exceptions import RedisError

from smsfleet import connect
from smsfleet.senders import open_registry
from smsfleet.settings import Settings
from smsfleet.signals import stop_on_signals
from smsfleet.topology import Names

from . import api, dead, jobs, overview, pages
from .broker import Broker
from .config import AdminConfig
from .context import BROKER, GUARD, REDIS, REGISTRY, SETTINGS, TEMPLATES
from .errors import Invalid, Problem, is_api
from .security import Guard, Handler

__all__ = ["MAX_BODY", "build_app", "serve"]

log = structlog.get_logger("smsfleet.admin")

HERE = Path(__file__).parent
MAX_BODY = 256 * 1024
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects, and aiohttp's own 404/405 when no page took them
        _secure(request, exc)
        raise
    _secure(request, response)
    return response


def _secure(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(_SECURITY_HEADERS)
    if not request.path.startswith("/static/"):
        response.headers[hdrs.CACHE_CONTROL] = "no-store"


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Problems (and aiohttp's own 4xx) become `{"error": ...}` on the API and an error page elsewhere."""
    try:
        return await handler(request)
    except Problem as exc:
        return _problem(request, exc.status, exc.message, exc.headers)
    except Invalid as exc:
        if is_api(request):
            return api.json_response({"errors": exc.errors}, status=422)
        return _problem(request, 422, "; ".join(exc.errors.values()))
    except RedisError as exc:
        log.error("admin.redis_unavailable", error=str(exc))
        return _problem(request, 503, "Redis, where senders are kept, cannot be reached. Try again shortly.")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _problem(request, exc.status, exc.reason, {k: v for k, v in exc.headers.items() if k == hdrs.ALLOW})


def _problem(request: web.Request, status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    if is_api(request):
        response = api.json_response({"error": message}, status=status)
    else:
        response = pages.render(request, "error.html", status=status, forms=False, message=message)
    response.headers.update(headers or {})
    return response


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda x: "—" if x is None else f"{x * 100:.1f} %"
    return env


def build_app(config: AdminConfig, settings: Settings) -> web.Application:
    """The admin for the senders of `settings.namespace`. Raises ValueError for a bad SMSFLEET_SECRET_KEY."""
    client = connect.redis_client(settings.redis_url, socket_timeout=5, socket_connect_timeout=3)  # connects on use
    registry = open_registry(client, Names(settings.namespace), settings.secret_key)
    guard = Guard(config)
    app = web.Application(
        middlewares=[security_headers, errors, guard.require_auth, guard.require_same_origin],
        client_max_size=MAX_BODY,
    )
    app[SETTINGS] = settings
    app[GUARD] = guard
    app[TEMPLATES] = _templates()
    app[BROKER] = broker = Broker(settings.amqp_url)

    async def redis_client(app: web.Application) -> AsyncIterator[None]:
        app[REGISTRY] = registry
        app[REDIS] = client
        yield
        await broker.close()
        await client.aclose()

    app.cleanup_ctx.append(redis_client)
    api.add_routes(app)
    pages.add_routes(app)
    overview.add_routes(app)
    jobs.add_routes(app)
    dead.add_routes(app)
    app.router.add_static("/static", HERE / "static")
    return app


async def serve(
    config: AdminConfig, settings: Settings, host: str, port: int, stop: asyncio.Event | None = None
) -> None:
    """Run the admin until SIGTERM/SIGINT (or `stop`)."""
    stop = stop_on_signals(stop or asyncio.Event())
    runner = web.AppRunner(build_app(config, settings), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    log.info("admin.listening", url=f"http://{_netloc(host, port)}/")
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        log.info("admin.stopped")


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
