"""The one place where an HTTP exchange with a provider is turned into the error tree.

Every adapter calls `request()`; it answers with the status, headers and body of any reply the provider
gave, or raises:

- `Permanent("bad_url")` when the configured endpoint is not a URL;
- `Transient("connect")` when nothing reached the provider (refused, DNS, connect timeout);
- `Ambiguous("timeout" | "reset")` when the request may have reached it but no full reply came back;
- `RateLimited("http.429")` with the provider's Retry-After;
- `Transient("http.5xx")` for server errors (pass `server_errors_are_replies=True` to read them yourself).

Anything else (2xx, 4xx) is the adapter's to interpret: providers put their error codes in very different
places. Messages name the provider and the failure, never a URL (URLs may carry credentials).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import msgspec

from .errors import Ambiguous, Permanent, RateLimited, Transient

__all__ = ["Reply", "request", "retry_after"]


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
    **kwargs: Any,
) -> Reply:
    """One HTTP request to a provider, its failures mapped onto the error tree (see the module doc)."""
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
