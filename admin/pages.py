"""The senders web page: server-rendered HTML that works without JavaScript; a small script only helps.

    GET  /                       the overview (`admin.overview`)
    GET  /senders                the list: ID (on the left, a link to edit), Name, gateway, accounts...; Edit and
                                 Delete per row, on the right
    GET  /senders/new            the create form (?gateway=KIND chooses the gateway)
    POST /senders/new            create; or, with action=switch, the form again for the chosen gateway
    GET  /senders/{id}/edit      the edit form, with the sender's SMS Receiving URL
    POST /senders/{id}/edit      save; or action=switch as above
    POST /senders/{id}/rotate-token   a new webhook token; back to the edit page, with the new receiving URL
    GET  /senders/{id}/delete    "delete this sender?"
    POST /senders/{id}/delete    delete when confirmed=yes (the script asks first), else the question page

Every POST carries the CSRF token (see `admin.security`). After a change the browser is sent on (303) to
a page that says what happened, so reloading it changes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from smsfleet.kinds import KIND_SETTINGS
from smsfleet.senders import Sender, SenderConflict, receiving_url

from .context import GUARD, REGISTRY, SETTINGS, TEMPLATES, sender_or_404
from .errors import Invalid, Problem
from .forms import SenderForm
from .security import CSRF_FIELD
from .validation import invalid, validate

__all__ = ["add_routes", "render"]

ID = "{id:[A-Za-z0-9_-]{1,64}}"
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # fullmatch: `$` would let a final newline through


def render(
    request: web.Request, template: str, *, status: int = 200, forms: bool = True, **context: Any
) -> web.Response:
    """A page. With `forms`, the CSRF token its forms need (and the cookie it is bound to, when new)."""
    guard = request.app[GUARD]
    nonce, new = guard.nonce(request) if forms else ("", False)
    token = guard.csrf_token(nonce) if forms else ""
    html = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(csrf_field=CSRF_FIELD, csrf_token=token, path=request.path, **context)
    )
    response = web.Response(text=html, status=status, content_type="text/html")
    if new:
        guard.set_nonce_cookie(request, response, nonce)
    return response


@dataclass(frozen=True)
class SenderRow:
    id: str
    name: str
    gateway: str
    title: str
    accounts: list[str]
    caller_ids: list[str]
    stop_words: list[str] | None  # None: the gateway pushes nothing, so stop words do not apply

    @classmethod
    def of(cls, s: Sender) -> SenderRow:
        kind = KIND_SETTINGS[s.gateway]
        words = s.stop_words if kind.callbacks else None
        return cls(s.id, s.name, s.gateway, kind.title, s.accounts, s.verified_caller_ids, words)


async def _sender(request: web.Request) -> Sender:
    return await sender_or_404(
        request,
        missing="There is no sender {id!r}. It may have been deleted.",
        unreadable="{error}. Delete the sender and create it again.",
    )


async def list_senders(request: web.Request) -> web.StreamResponse:
    senders, unreadable = await request.app[REGISTRY].load()
    deleted = request.query.get("deleted", "")
    notice = f"Sender {deleted} deleted." if _ID.fullmatch(deleted) else None
    rows = [SenderRow.of(senders[i]) for i in sorted(senders)]
    return render(request, "senders.html", senders=rows, notice=notice, unreadable=[str(e) for e in unreadable])


def _form_page(
    request: web.Request,
    form: SenderForm,
    *,
    sender: Sender | None = None,
    status: int = 200,
    notice: str | None = None,
) -> web.Response:
    url = receiving_url(sender, request.app[SETTINGS].public_url) if sender is not None else None
    title = f"Edit {sender.name if sender else form.editing}" if form.editing else "Create sender"
    return render(
        request, "form.html", status=status, form=form, sender=sender, receiving_url=url, notice=notice, title=title
    )


async def new_form(request: web.Request) -> web.StreamResponse:
    gateway = request.query.get("gateway", "")
    return _form_page(request, SenderForm(gateway=gateway if gateway in KIND_SETTINGS else ""))


async def create(request: web.Request) -> web.StreamResponse:
    data = await request.post()
    form = SenderForm.from_post(data, previous=_shown(data))
    if data.get("action") == "switch":
        return _form_page(request, form)
    settings = request.app[SETTINGS]
    try:
        sender = validate(form.to_doc(), default_region=settings.default_region)
    except Invalid as exc:
        form.errors = {**form.input_errors(), **exc.errors}
        return _form_page(request, form, status=422)
    try:
        sender = await request.app[REGISTRY].create(sender, id_given=bool(form.values.get("id")))
    except SenderConflict as exc:  # the id or the name is taken
        form.errors = invalid(exc).errors
        return _form_page(request, form, status=409)
    raise web.HTTPSeeOther(f"/senders/{sender.id}/edit?created=1")


async def edit_form(request: web.Request) -> web.StreamResponse:
    sender = await _sender(request)
    notice = None
    if "created" in request.query:
        notice = "Sender created."
    elif "saved" in request.query:
        notice = "Changes saved. Running workers use them within seconds."
    elif "rotated" in request.query:
        notice = (
            "New webhook token. Give the provider the new SMS Receiving URL below: the old one stops working "
            "within seconds."
        )
    return _form_page(request, SenderForm.for_sender(sender), sender=sender, notice=notice)


async def save(request: web.Request) -> web.StreamResponse:
    existing = await _sender(request)
    data = await request.post()
    form = SenderForm.from_post(data, editing=existing, previous=_shown(data))
    if data.get("action") == "switch":
        return _form_page(request, form, sender=existing)
    settings = request.app[SETTINGS]
    try:
        sender = validate(form.to_doc(), existing=existing, default_region=settings.default_region)
    except Invalid as exc:
        form.errors = {**form.input_errors(), **exc.errors}
        return _form_page(request, form, sender=existing, status=422)
    try:
        await request.app[REGISTRY].put(sender)
    except SenderConflict as exc:  # the name is another sender's
        form.errors = invalid(exc).errors
        return _form_page(request, form, sender=existing, status=409)
    raise web.HTTPSeeOther(f"/senders/{sender.id}/edit?saved=1")


async def rotate_token(request: web.Request) -> web.StreamResponse:
    sender = await _sender(request)
    await request.app[REGISTRY].rotate_token(sender.id)
    raise web.HTTPSeeOther(f"/senders/{sender.id}/edit?rotated=1")


async def confirm_delete(request: web.Request) -> web.StreamResponse:
    return render(request, "delete.html", sender=SenderRow.of(await _sender(request)))


async def delete(request: web.Request) -> web.StreamResponse:
    data = await request.post()
    if data.get("confirmed") != "yes":
        return await confirm_delete(request)
    sender_id = request.match_info["id"]
    if not await request.app[REGISTRY].delete(sender_id):
        raise Problem(404, f"There is no sender {sender_id!r}. It may have been deleted already.")
    raise web.HTTPSeeOther(f"/senders?deleted={sender_id}")


def _shown(data: Any) -> str | None:
    shown = data.get("shown_gateway")
    return shown if isinstance(shown, str) else None


def add_routes(app: web.Application) -> None:
    app.router.add_get("/senders", list_senders)
    app.router.add_get("/senders/new", new_form)
    app.router.add_post("/senders/new", create)
    app.router.add_get(f"/senders/{ID}/edit", edit_form)
    app.router.add_post(f"/senders/{ID}/edit", save)
    app.router.add_post(f"/senders/{ID}/rotate-token", rotate_token)
    app.router.add_get(f"/senders/{ID}/delete", confirm_delete)
    app.router.add_post(f"/senders/{ID}/delete", delete)
