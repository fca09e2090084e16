"""The one place where an HTTP exchange with a provider is turned into the error tree.

Every adapter calls `request()`; it answers with the status, headers and body of any reply the provider
gave, or raises:

- `Permanent("bad_url")` when the configured endpoint is not a URL;
- `Transient("connect")` when nothing reached the provider (refused, DNS, connect timeout);
- `Ambiguous("timeout" | "reset")` when the request may have reached it but no full reply came back;
- `RateLimited("http.429")` with the provider's Retry-After;
- `Transient("http.5xx")` for server errors (pass `server_errors_are_replies=True` to read them yourself).

aiohttp sends an idempotent request (GET, PUT...) a second time by itself when a kept-alive connection
drops before the reply. For a provider whose send is a GET that is a second SMS, so such sends pass
`resend=False`: the drop becomes `Ambiguous("reset")` instead, and the request goes on a fresh connection
(`Connection: close`), so that a stale pooled connection cannot make a send that never left look ambiguous.

Anything else (2xx, 4xx) is the adapter's to interpret: providers put their error codes in very different
places. Messages name the provider and the failure, never a URL (URLs may carry credentials).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp
import msgspec

from .errors import Ambiguous, Permanent, RateLimited, Transient

__all__ = ["FORM", "Reply", "request", "retry_after"]

FORM = "application/x-www-form-urlencoded"


class Reply(msgspec.Struct, frozen=True):
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return msgspec.json.decode(self.body)
        except msgspec.DecodeError:
            return None


class _SentThenLost(aiohttp.ClientError):
    """The connection dropped after the request went out: aiohttp must not send it again."""


async def _no_resend(req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
    try:
        return await handler(req)
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
        raise  # nothing was sent: Transient below
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        raise _SentThenLost(type(exc).__name__) from None


def retry_after(headers: Mapping[str, str], default: float) -> float:
    value = headers.get("Retry-After", "").strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        return default


async def request(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    provider: str,
    timeout_s: float,
    server_errors_are_replies: bool = False,
    resend: bool = True,
    **kwargs: Any,
) -> Reply:
    """One HTTP request to a provider, its failures mapped onto the error tree (see the module doc)."""
    if isinstance(form := kwargs.get("data"), Mapping):  # aiohttp's FormData makes the same body for 3x the CPU
        kwargs["data"] = urlencode(form).encode()
        kwargs["headers"] = {"Content-Type": FORM, **kwargs.get("headers", {})}
    if not resend:
        kwargs["middlewares"] = (_no_resend,)
        kwargs["headers"] = {**kwargs.get("headers", {}), "Connection": "close"}
    try:
        async with http.request(method, url, timeout=aiohttp.ClientTimeout(total=timeout_s), **kwargs) as resp:
            reply = Reply(resp.status, dict(resp.headers), await resp.read())
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError):
        raise Permanent("bad_url", f"the {provider} endpoint is not a valid URL; check the sender's settings") from None
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        raise Transient("connect", f"cannot connect to {provider} ({type(exc).__name__})") from None
    except TimeoutError:
        raise Ambiguous("timeout", f"no reply from {provider} within {timeout_s:g} s") from None
    except aiohttp.ClientError as exc:
        raise Ambiguous("reset", f"connection to {provider} lost after sending ({type(exc).__name__})") from None
    if reply.status == 429:
        wait = retry_after(reply.headers, 60.0)
        raise RateLimited("http.429", f"{provider} asks to slow down", retry_after=wait)
    if reply.status >= 500 and not server_errors_are_replies:
        raise Transient(f"http.{reply.status}", f"{provider} answered HTTP {reply.status}")
    return reply
