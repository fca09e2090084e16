"""Who may use the admin, and that a change comes from the admin's own page.

Authentication, on every route (static files and unknown paths included): `Authorization: Bearer <token>`
for programs, or HTTP Basic with user `admin` and the token as password, which browsers ask for and
remember by themselves. Both are compared in constant time. There is no default token.

Cross-site request forgery, on every POST, PUT, PATCH and DELETE:

- a request that says where it comes from (`Sec-Fetch-Site`, `Origin`) must come from this origin;
- the JSON API takes `application/json` bodies only: a page on another site cannot send those with an
  HTML form, nor from a script without a CORS preflight, which the admin never grants;
- HTML forms carry a token, the HMAC of a random nonce that lives in a `SameSite=Strict`, `HttpOnly`
  cookie (a signed double submit): another site can neither read the token nor make one for a nonce.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import structlog
from aiohttp import hdrs, web

from .config import AdminConfig
from .errors import Problem, is_api

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "Guard"]

log = structlog.get_logger("smsfleet.admin")

CSRF_COOKIE = "smsfleet_admin_csrf"
CSRF_FIELD = "csrf_token"
REALM = "smsfleet admin"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_NONCE = re.compile(r"[A-Za-z0-9_-]{32,128}")  # fullmatch: `$` would let a final newline through

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Guard:
    """Checks credentials and CSRF tokens; holds nothing a response could leak."""

    def __init__(self, config: AdminConfig) -> None:
        self._user = config.user.encode()
        self._token = config.token.encode()
        self._csrf_key = hmac.new(self._token, b"smsfleet-admin-csrf", hashlib.sha256).digest()

    def authenticated(self, authorization: str | None) -> bool:
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer":
            return hmac.compare_digest(credentials.encode(), self._token)
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True)
            except (binascii.Error, ValueError):
                return False
            user, _, password = decoded.partition(b":")
            user_ok = hmac.compare_digest(user, self._user)
            return hmac.compare_digest(password, self._token) and user_ok
        return False

    # -- CSRF ------------------------------------------------------------------------------------------

    @staticmethod
    def nonce(request: web.Request) -> tuple[str, bool]:
        """The request's CSRF nonce from its cookie, or a new one (then True: the response must set it)."""
        nonce = request.cookies.get(CSRF_COOKIE, "")
        if _NONCE.fullmatch(nonce):
            return nonce, False
        return secrets.token_urlsafe(32), True

    def csrf_token(self, nonce: str) -> str:
        return hmac.new(self._csrf_key, nonce.encode(), hashlib.sha256).hexdigest()

    def csrf_valid(self, nonce: str | None, token: str | None) -> bool:
        if not nonce or not token or not _NONCE.fullmatch(nonce):
            return False
        return hmac.compare_digest(self.csrf_token(nonce), token)

    @staticmethod
    def set_nonce_cookie(request: web.Request, response: web.StreamResponse, nonce: str) -> None:
        response.set_cookie(CSRF_COOKIE, nonce, path="/", httponly=True, samesite="Strict", secure=request.secure)

    # -- middlewares -----------------------------------------------------------------------------------

    @web.middleware
    async def require_auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        authorization = request.headers.get(hdrs.AUTHORIZATION)
        if self.authenticated(authorization):
            return await handler(request)
        if authorization:
            log.warning("admin.auth_failed", path=request.path, remote=request.remote)
        if is_api(request):
            challenge = f'Bearer realm="{REALM}"'
            message = "authentication required: Authorization: Bearer $SMSFLEET_ADMIN_TOKEN"
        else:
            challenge = f'Basic realm="{REALM}", charset="UTF-8"'
            message = "Sign in as admin, with the admin token (SMSFLEET_ADMIN_TOKEN) as the password."
        raise Problem(401, message, {hdrs.WWW_AUTHENTICATE: challenge})

    @web.middleware
    async def require_same_origin(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in SAFE_METHODS:
            return await handler(request)
        site = request.headers.get("Sec-Fetch-Site")
        origin = request.headers.get(hdrs.ORIGIN)
        if (site is not None and site not in ("same-origin", "none")) or (
            origin is not None and urlsplit(origin).netloc != request.host
        ):
            log.warning("admin.cross_site_refused", path=request.path, origin=origin, site=site)
            raise Problem(403, "cross-site requests are refused")
        if is_api(request):
            if request.method != "DELETE" and request.content_type != "application/json":
                raise Problem(415, "send the sender document as JSON (Content-Type: application/json)")
            return await handler(request)
        form = await request.post()  # cached: the handler reads it again
        token = form.get(CSRF_FIELD)
        if not self.csrf_valid(request.cookies.get(CSRF_COOKIE), token if isinstance(token, str) else None):
            raise Problem(403, "This form has expired or was sent from another site. Reload the page and try again.")
        return await handler(request)
