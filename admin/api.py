"""The JSON API. Senders are the documents of DESIGN §6, as `smsfleet senders show --json` prints them.

    GET    /api/senders          {"senders": [sender, ...], "unreadable": {id: why, ...}}  (secrets masked;
                                 with receiving_url; `unreadable`: stored records that do not decode)
    POST   /api/senders          create: 201 + the sender; 409 when the id or the name is taken (an id left
                                 out is made from the name, with a short suffix when that id is taken)
    GET    /api/senders/{id}     the sender
    PUT    /api/senders/{id}     replace it with the document (secrets left out, blank or masked are kept; so is
                                 a name left out); 409 when the name is another sender's
    PATCH  /api/senders/{id}     change the fields given (settings merged key by key); 409 as PUT
    DELETE /api/senders/{id}     204
    POST   /api/senders/{id}/rotate-token   a new webhook token: the sender, with its new receiving_url (the old
                                 token stops working as soon as running processes pick up the change)
    GET    /api/gateways         {"gateways": [{kind, title, callbacks, fields: [...]}, ...]}
    GET    /api/gateways/{kind}  one kind

A document that fails validation gets 422 `{"errors": {"<field>": "<message>", ...}}` keyed by the
document's paths (`name`, `settings.login`, `webhook_token`: a token given in a document must be at least
32 characters, at least 10 of them different); a taken id or name gets 409 in the same shape (`{"errors":
{"name": "the name 'X' is taken by sender 'x' (case is ignored)"}}`); anything else that goes wrong gets
`{"error": "<message>"}`. Every POST, PUT and PATCH is `Content-Type: application/json` (rotate-token:
`{}`; see `admin.security`). Secrets are write-only: answers show them as `********`. Every write reaches
running workers through the registry's change notification.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from aiohttp import web

from smsfleet.kinds import KIND_SETTINGS, fields
from smsfleet.senders import Sender, SenderConflict, SenderError, sender_doc

from .context import REGISTRY, SETTINGS, sender_or_404
from .errors import Invalid, Problem
from .validation import invalid, validate

__all__ = ["add_routes", "gateway_doc", "json_response"]

ID = "{id:[A-Za-z0-9_-]{1,64}}"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=lambda d: json.dumps(d, ensure_ascii=False))


def gateway_doc(kind: str) -> dict[str, Any]:
    cls = KIND_SETTINGS[kind]
    specs = [msgspec.to_builtins(f) for f in fields(cls)]
    return {"kind": kind, "title": cls.title, "callbacks": cls.callbacks, "fields": specs}


def _doc(request: web.Request, sender: Sender) -> dict[str, Any]:
    return sender_doc(sender, public_url=request.app[SETTINGS].public_url)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise Problem(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Invalid({"document": "expected a sender object"})
    return body


def _conflict(exc: SenderConflict) -> web.Response:
    """409: the id or the name is another sender's, said on that field."""
    return json_response({"errors": invalid(exc).errors}, status=409)


async def _existing(request: web.Request) -> Sender:
    return await sender_or_404(
        request, missing="no sender with id {id!r}", unreadable="{error}; delete the sender and create it again"
    )


async def list_senders(request: web.Request) -> web.StreamResponse:
    senders, unreadable = await request.app[REGISTRY].load()
    return json_response(
        {
            "senders": [_doc(request, senders[i]) for i in sorted(senders)],
            "unreadable": {exc.sender_id: exc.reason for exc in unreadable},
        }
    )


async def get_sender(request: web.Request) -> web.StreamResponse:
    return json_response(_doc(request, await _existing(request)))


async def create_sender(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    sender = validate(body, default_region=request.app[SETTINGS].default_region)
    try:
        sender = await request.app[REGISTRY].create(sender, id_given=bool(body.get("id")))
    except SenderConflict as exc:
        return _conflict(exc)
    return json_response(_doc(request, sender), status=201, headers={"Location": f"/api/senders/{sender.id}"})


async def replace_sender(request: web.Request) -> web.StreamResponse:
    existing = await _existing(request)
    body = await _body(request)
    body.setdefault("id", existing.id)
    if body["id"] != existing.id:
        raise Invalid({"id": "the id of a sender cannot change; create a new sender instead"})
    body.pop("receiving_url", None)  # shown in answers, so an answer can be sent back
    sender = validate(body, existing=existing, default_region=request.app[SETTINGS].default_region)
    try:
        await request.app[REGISTRY].put(sender)
    except SenderConflict as exc:
        return _conflict(exc)
    return json_response(_doc(request, sender))


async def patch_sender(request: web.Request) -> web.StreamResponse:
    existing = await _existing(request)
    body = await _body(request)
    try:
        sender = await request.app[REGISTRY].update(existing.id, body, request.app[SETTINGS].default_region)
    except SenderConflict as exc:
        return _conflict(exc)
    except SenderError as exc:
        raise invalid(exc) from None
    return json_response(_doc(request, sender))


async def rotate_token(request: web.Request) -> web.StreamResponse:
    existing = await _existing(request)
    return json_response(_doc(request, await request.app[REGISTRY].rotate_token(existing.id)))


async def delete_sender(request: web.Request) -> web.StreamResponse:
    sender_id = request.match_info["id"]
    if not await request.app[REGISTRY].delete(sender_id):
        raise Problem(404, f"no sender with id {sender_id!r}")
    return web.Response(status=204)


async def list_gateways(request: web.Request) -> web.StreamResponse:
    return json_response({"gateways": [gateway_doc(kind) for kind in KIND_SETTINGS]})


async def get_gateway(request: web.Request) -> web.StreamResponse:
    kind = request.match_info["kind"]
    if kind not in KIND_SETTINGS:
        raise Problem(404, f"unknown gateway {kind!r}; known: {', '.join(KIND_SETTINGS)}")
    return json_response(gateway_doc(kind))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/senders", list_senders)
    app.router.add_post("/api/senders", create_sender)
    app.router.add_get(f"/api/senders/{ID}", get_sender)
    app.router.add_put(f"/api/senders/{ID}", replace_sender)
    app.router.add_patch(f"/api/senders/{ID}", patch_sender)
    app.router.add_delete(f"/api/senders/{ID}", delete_sender)
    app.router.add_post(f"/api/senders/{ID}/rotate-token", rotate_token)
    app.router.add_get("/api/gateways", list_gateways)
    app.router.add_get("/api/gateways/{kind}", get_gateway)
