"""The dead queue `<ns>.dead` on a page and in the API, through `smsfleet.deadletters` (the rules: how a
message is read and left in place, where a requeue sends it, what it keeps) — as `smsfleet dead` does.

    GET  /dead[?reason=R]          the messages with their reasons, and the count per reason
    GET  /dead/{id}                one message: reason, headers, body
    POST /dead/requeue             id=ID | reason=R | all=yes: back to its queue, with its original id (CSRF)
    POST /dead/purge               the same selection, and confirmed=yes (the script asks first; without
                                   it, a page asks); without confirmed=yes, the question page
    GET  /api/dead                 {"total", "read", "by_reason", "messages": [...]}
    GET  /api/dead/{id}            [message, ...] (a job dead-lettered twice has two)
    POST /api/dead/requeue         {"ids": [...], "reason": R, "all": true} -> {"requeued", "duplicates", "failed"}
    POST /api/dead/purge           the same and "confirm": true -> {"deleted"}
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from smsfleet.deadletters import DeadQueue, DeadQueueMissing, Requeued, Selection
from smsfleet.topology import Names

from .api import json_response
from .broker import BROKER_ERRORS
from .context import BROKER, SETTINGS
from .errors import Invalid, Problem
from .pages import render

__all__ = ["LIST_LIMIT", "add_routes"]

#: messages the list reads at most (`smsfleet dead list`'s default)
LIST_LIMIT = 1000
LETTER = "{letter:.{1,400}}"


@contextlib.asynccontextmanager
async def _dead_queue(request: web.Request) -> AsyncIterator[DeadQueue]:
    connection = await request.app[BROKER].connection()
    try:
        yield DeadQueue(connection, Names(request.app[SETTINGS].namespace))
    except DeadQueueMissing as exc:
        raise Problem(503, str(exc)) from None
    except BROKER_ERRORS as exc:
        raise Problem(503, f"RabbitMQ failed the request: {type(exc).__name__}. Try again.") from None


def _selection(ids: list[str], reason: str | None, everything: bool) -> Selection:
    try:
        return Selection(frozenset(i for i in ids if i), reason or None, everything)
    except ValueError as exc:
        raise Invalid({"selection": str(exc)}) from None


def _result(result: Requeued) -> dict[str, Any]:
    return {
        "requeued": result.requeued,
        "duplicates": result.duplicates,
        "failed": [{"id": i, "error": why} for i, why in result.failed],
        "unread": result.unread,
    }


# -- the page ---------------------------------------------------------------------------------------------


async def list_page(request: web.Request) -> web.StreamResponse:
    reason = request.query.get("reason") or None
    async with _dead_queue(request) as dead:
        listing = await dead.listing(LIST_LIMIT)
    letters = [x for x in listing.letters if reason is None or x.reason == reason]
    notice = None
    if "requeued" in request.query:
        notice = f"Requeued {request.query.get('requeued')} message(s)."
        if request.query.get("failed", "0") != "0":
            notice += f" {request.query['failed']} could not be requeued and stay here."
    elif "purged" in request.query:
        notice = f"Deleted {request.query.get('purged')} message(s)."
    return render(request, "dead.html", listing=listing, letters=letters, reason=reason, notice=notice)


async def letter_page(request: web.Request) -> web.StreamResponse:
    letter_id = request.match_info["letter"]
    async with _dead_queue(request) as dead:
        found = await dead.find(letter_id)
    if not found:
        raise Problem(404, f"No message {letter_id!r} in the dead queue (requeued or purged already?).")
    return render(request, "dead_letter.html", letter_id=letter_id, letters=[x.details() for x in found])


def _form_selection(data: Any) -> tuple[Selection, dict[str, str]]:
    """The selection of a page's form, and the fields that made it (for the question page)."""
    fields = {k: v for k in ("id", "reason", "all") if isinstance(v := data.get(k), str) and v}
    return _selection([fields.get("id", "")], fields.get("reason"), fields.get("all") == "yes"), fields


async def requeue(request: web.Request) -> web.StreamResponse:
    selection, _ = _form_selection(await request.post())
    async with _dead_queue(request) as dead:
        result = await dead.requeue(selection)
    raise web.HTTPSeeOther(f"/dead?requeued={len(result.requeued)}&failed={len(result.failed)}")


async def purge(request: web.Request) -> web.StreamResponse:
    data = await request.post()
    selection, fields = _form_selection(data)
    if data.get("confirmed") != "yes":
        return render(request, "dead_purge.html", fields=fields, what=_describe(selection))
    async with _dead_queue(request) as dead:
        deleted = await dead.purge(selection)
    raise web.HTTPSeeOther(f"/dead?purged={deleted}")


def _describe(selection: Selection) -> str:
    if selection.everything:
        return "every message in the dead queue"
    parts = [f"message {i}" for i in sorted(selection.ids)]
    if selection.reason:
        parts.append(f"the messages parked for {selection.reason}")
    return " and ".join(parts)


# -- the API ----------------------------------------------------------------------------------------------


async def _body(request: web.Request) -> tuple[Selection, dict[str, Any]]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise Problem(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Invalid({"document": 'expected an object: {"ids": [...], "reason": ..., "all": ...}'})
    ids, reason, everything = body.get("ids", []), body.get("reason"), body.get("all", False)
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise Invalid({"ids": "expected a list of message ids"})
    if reason is not None and not isinstance(reason, str):
        raise Invalid({"reason": "expected a string"})
    if not isinstance(everything, bool):
        raise Invalid({"all": "expected true or false"})
    return _selection(ids, reason, everything), body


async def api_list(request: web.Request) -> web.StreamResponse:
    async with _dead_queue(request) as dead:
        listing = await dead.listing(LIST_LIMIT)
    return json_response(
        {
            "total": listing.total,
            "read": len(listing.letters),
            "by_reason": listing.by_reason,
            "messages": [x.summary() for x in listing.letters],
        }
    )


async def api_letter(request: web.Request) -> web.StreamResponse:
    letter_id = request.match_info["letter"]
    async with _dead_queue(request) as dead:
        found = await dead.find(letter_id)
    if not found:
        raise Problem(404, f"no message {letter_id!r} in the dead queue")
    return json_response([x.details() for x in found])


async def api_requeue(request: web.Request) -> web.StreamResponse:
    selection, _ = await _body(request)
    async with _dead_queue(request) as dead:
        result = await dead.requeue(selection)
    return json_response(_result(result), status=200 if not result.failed else 502)


async def api_purge(request: web.Request) -> web.StreamResponse:
    selection, body = await _body(request)
    if body.get("confirm") is not True:
        raise Invalid({"confirm": 'purging deletes messages for good: send "confirm": true'})
    async with _dead_queue(request) as dead:
        deleted = await dead.purge(selection)
    return json_response({"deleted": deleted})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/dead", list_page)
    app.router.add_post("/dead/requeue", requeue)
    app.router.add_post("/dead/purge", purge)
    app.router.add_get(f"/dead/{LETTER}", letter_page)
    app.router.add_get("/api/dead", api_list)
    app.router.add_post("/api/dead/requeue", api_requeue)
    app.router.add_post("/api/dead/purge", api_purge)
    app.router.add_get(f"/api/dead/{LETTER}", api_letter)
