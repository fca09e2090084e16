"""Job lookup and the test send.

    GET  /jobs?id=ID                  -> /jobs/ID (the overview's search box)
    GET  /jobs/{id}                   a job's history as `smsfleet status` shows it (`workers.lookup`)
    GET  /api/jobs/{id}               the same as JSON; 404 `{"error"}` when Redis has no record of it
                                      (with ?queued=1, the caller just queued it: 200, state "queued")
    GET  /senders/{id}/test           the test-send form; with ?job=JOB, that job's states as they arrive
                                      (static/watch.js polls /api/jobs/JOB; without a script, reload)
    POST /senders/{id}/test           publish the test job (CSRF), then 303 to ?job=JOB
    POST /api/senders/{id}/test       {"to", "text"} -> 202 {"job_id", "status_url"}

A test job is an ordinary send job (`build_test_job`): id `test-<random>`, the sender's first account,
`meta` `{"test_send": "admin"}` (`"cli"` from the command line), published to the send exchange with
confirms by `producers.Publisher`. Its number must be one of the sender's verified phones when it has some
(else any number). `smsfleet send-test` builds it with the same function.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from aiohttp import web

from producers import Publisher, PublishError
from smsfleet.contracts import InvalidJob, SendJob, normalize_phone
from smsfleet.senders import Sender
from smsfleet.topology import Names
from workers.ledger import Ledger
from workers.lookup import job_summary

from .api import json_response
from .broker import BROKER_ERRORS
from .context import BROKER, REDIS, SETTINGS, sender_or_404
from .errors import Invalid, Problem
from .pages import ID, render

__all__ = ["DEFAULT_TEXT", "TEXT_MAX", "add_routes", "build_test_job"]

JOB = "{job:.{1,400}}"
TEXT_MAX = 1600
DEFAULT_TEXT = "smsfleet test message"


def build_test_job(sender: Sender, to: str, text: str, default_region: str | None, origin: str) -> SendJob:
    """The job of a test send to `to`; `Invalid` ({"to"|"text": why}) when it cannot be sent."""
    errors: dict[str, str] = {}
    if not text.strip():
        errors["text"] = "this field is required"
    elif len(text) > TEXT_MAX:
        errors["text"] = f"at most {TEXT_MAX} characters"
    number = ""
    try:
        number = normalize_phone(to.strip(), default_region)
    except InvalidJob as exc:
        errors["to"] = "this field is required" if not to.strip() else exc.message
    if number and sender.verified_phones and number not in sender.verified_phones:
        errors["to"] = f"the sender only sends to its verified phones: {', '.join(sender.verified_phones)}"
    if errors:
        raise Invalid(errors)
    return SendJob(
        id=f"test-{uuid.uuid4().hex[:16]}", sender=sender.id, account=sender.accounts[0], to=number, text=text,
        meta={"test_send": origin},
    )  # fmt: skip


async def _publish(request: web.Request, sender: Sender, job: SendJob) -> None:
    names = Names(request.app[SETTINGS].namespace)
    connection = await request.app[BROKER].connection()
    try:
        async with Publisher(connection, names, lambda s: sender.gateway if s == sender.id else None) as publisher:
            await publisher.publish(job)
    except PublishError as exc:
        raise Problem(503, f"The test job was not queued: {exc.message}") from None
    except BROKER_ERRORS as exc:
        raise Problem(503, f"The test job was not queued: RabbitMQ {type(exc).__name__}") from None


async def _summary(request: web.Request, job_id: str) -> dict[str, Any] | None:
    names = Names(request.app[SETTINGS].namespace)
    return await job_summary(Ledger(request.app[REDIS], names), job_id)


# -- job lookup -------------------------------------------------------------------------------------------


async def search(request: web.Request) -> web.StreamResponse:
    job_id = request.query.get("id", "").strip()
    if not job_id:
        raise web.HTTPSeeOther("/")
    raise web.HTTPSeeOther(f"/jobs/{quote(job_id, safe='')}")


async def job_page(request: web.Request) -> web.StreamResponse:
    job_id = request.match_info["job"]
    summary = await _summary(request, job_id)
    if summary is None:
        raise Problem(404, f"No record of job {job_id!r}: never sent, or older than 7 days.")
    return render(request, "job.html", job=summary, forms=False)


def _queued(job_id: str) -> dict[str, Any]:
    """A job just queued: no record until a worker takes it."""
    return {"job_id": job_id, "state": "queued", "final": False, "phase": None, "gateway": None,
            "provider_ids": [], "attempt": 1, "sender": None, "history": []}  # fmt: skip


async def api_job(request: web.Request) -> web.StreamResponse:
    job_id = request.match_info["job"]
    summary = await _summary(request, job_id)
    if summary is None and request.query.get("queued") == "1":
        summary = _queued(job_id)
    if summary is None:
        raise Problem(404, f"no record of job {job_id!r} (never sent, or older than 7 days)")
    return json_response(summary)


# -- test send --------------------------------------------------------------------------------------------


async def _sender(request: web.Request) -> Sender:
    return await sender_or_404(
        request, missing="There is no sender {id!r}.", unreadable="{error}. Delete the sender and create it again."
    )


def _test_page(
    request: web.Request, sender: Sender, *, status: int = 200, values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None, job: dict[str, Any] | None = None,
) -> web.Response:  # fmt: skip
    values = values or {"to": sender.verified_phones[0] if sender.verified_phones else "", "text": DEFAULT_TEXT}
    return render(request, "test.html", status=status, sender=sender, values=values, errors=errors or {}, job=job)


async def test_form(request: web.Request) -> web.StreamResponse:
    sender = await _sender(request)
    job_id = request.query.get("job")
    job = (await _summary(request, job_id) or _queued(job_id) | {"sender": sender.id}) if job_id else None
    return _test_page(request, sender, job=job)


async def test_send(request: web.Request) -> web.StreamResponse:
    sender = await _sender(request)
    data = await request.post()
    values = {k: v if isinstance(v := data.get(k), str) else "" for k in ("to", "text")}
    try:
        job = build_test_job(sender, values["to"], values["text"], request.app[SETTINGS].default_region, "admin")
    except Invalid as exc:
        return _test_page(request, sender, status=422, values=values, errors=exc.errors)
    await _publish(request, sender, job)
    raise web.HTTPSeeOther(f"/senders/{sender.id}/test?job={quote(job.id, safe='')}")


async def api_test_send(request: web.Request) -> web.StreamResponse:
    sender = await _sender(request)
    try:
        body = await request.json()
    except ValueError as exc:
        raise Problem(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Invalid({"document": 'expected an object: {"to": ..., "text": ...}'})
    bad = {k: "expected a string" for k in ("to", "text") if not isinstance(body.get(k, ""), str)}
    if bad:
        raise Invalid(bad)
    region = request.app[SETTINGS].default_region
    job = build_test_job(sender, body.get("to", ""), body.get("text", ""), region, "admin")
    await _publish(request, sender, job)
    status_url = f"/api/jobs/{quote(job.id, safe='')}"
    return json_response({"job_id": job.id, "status_url": status_url}, status=202, headers={"Location": status_url})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/jobs", search)
    app.router.add_get(f"/jobs/{JOB}", job_page)
    app.router.add_get(f"/api/jobs/{JOB}", api_job)
    app.router.add_get(f"/senders/{ID}/test", test_form)
    app.router.add_post(f"/senders/{ID}/test", test_send)
    app.router.add_post(f"/api/senders/{ID}/test", api_test_send)
