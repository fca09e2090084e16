"""The admin on the real Redis: the JSON API, auth on every route, CSRF, the form page without a browser,
and that what it writes reaches a running process without a restart."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer
from cryptography.fernet import Fernet

import cli
from admin import AdminConfig, build_app, serve
from smsfleet.kinds import KIND_SETTINGS, KINDS, fields
from smsfleet.senders import MASK, Cipher, SenderCache, SenderRegistry
from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.samples import SECRET, sample_sender, sample_settings

TOKEN = "test-admin-token-0123456789-abcdefgh"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PUBLIC_URL = "http://hooks.test"

Client = TestClient


@pytest.fixture
def admin_settings(redis_url: str, namespace: str) -> Settings:
    return Settings(redis_url=redis_url, namespace=namespace, public_url=PUBLIC_URL)


@pytest.fixture
async def client(admin_settings: Settings, redis: aioredis.Redis) -> AsyncIterator[Client]:
    async with TestClient(TestServer(build_app(AdminConfig(token=TOKEN), admin_settings))) as c:
        yield c


@pytest.fixture
def registry(redis: aioredis.Redis, names: Names) -> SenderRegistry:
    return SenderRegistry(redis, names)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def create(client: Client, doc: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/api/senders", json=doc, headers=AUTH)
    body = await resp.json()
    assert resp.status == 201, body
    return dict(body)


# -- auth ----------------------------------------------------------------------------------------------


async def test_every_route_refuses_requests_without_the_token(client: Client, registry: SenderRegistry) -> None:
    await create(client, sample_sender("smsc", "s1"))
    paths: set[tuple[str, str]] = set()
    for route in client.app.router.routes() if client.app else ():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or f"{info.get('prefix')}/admin.css"
        path = re.sub(r"\{id[^}]*\}", "s1", path).replace("{kind}", "smsc")
        paths.add((route.method, path))
    paths.add(("GET", "/no/such/page"))
    assert len(paths) >= 17, paths
    wrong = [{}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {TOKEN}x"}, basic("admin", "nope"),
             basic("root", TOKEN), {"Authorization": TOKEN}, {"Authorization": "Basic !!!"}]  # fmt: skip
    for method, path in sorted(paths):
        if method == "HEAD":
            continue
        for headers in wrong:
            resp = await client.request(method, path, headers=headers, json={"id": "evil"})
            assert resp.status == 401, (method, path, headers, resp.status)
            assert "WWW-Authenticate" in resp.headers
            assert "acme" not in await resp.text()  # nothing of the sender leaks
    assert [s.id for s in await registry.list()] == ["s1"]  # nothing written, nothing deleted


async def test_api_answers_401_in_json_and_the_page_asks_the_browser_for_basic_auth(client: Client) -> None:
    resp = await client.get("/api/senders")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
    assert "error" in await resp.json()
    resp = await client.get("/senders")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic ")
    assert "Set-Cookie" not in resp.headers


async def test_bearer_and_basic_admin_with_the_token_are_accepted(client: Client) -> None:
    for headers in (AUTH, {"Authorization": f"bearer  {TOKEN}"}, basic("admin", TOKEN)):
        resp = await client.get("/api/senders", headers=headers)
        assert resp.status == 200, headers
    resp = await client.get("/static/admin.css", headers=basic("admin", TOKEN))
    assert resp.status == 200


@pytest.mark.parametrize(
    ("token", "needle"),
    [
        ("aaaaaaaaaaaaaaaa", "16 characters long; use at least 32"),  # the token of issue 15 that passed
        ("x" * 31, "31 characters long; use at least 32"),
        ("a" * 64, "made of 1 different characters"),
        ("abcabcabcabcabcabcabcabcabcabcabcabc", "made of 3 different characters"),
        ("123456789123456789123456789123456789", "made of 9 different characters"),
    ],
)
def test_a_short_or_low_entropy_admin_token_is_refused_without_showing_it(token: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as err:
        AdminConfig.from_env({"SMSFLEET_ADMIN_TOKEN": token})
    assert token not in str(err.value)
    assert "token_urlsafe(32)" in str(err.value)  # how to make a good one


def test_the_config_has_no_default_and_never_shows_the_token() -> None:
    with pytest.raises(ValueError, match="SMSFLEET_ADMIN_TOKEN is not set"):
        AdminConfig.from_env({})
    assert AdminConfig.from_env({"SMSFLEET_ADMIN_TOKEN": "Gx2-kP9_qLm4ZrT7vWb1NcY8sDf3HjA6"}).user == "admin"  # 32
    config = AdminConfig.from_env({"SMSFLEET_ADMIN_TOKEN": f" {TOKEN} "})
    assert config.token == TOKEN
    assert TOKEN not in repr(config)


# -- senders: every operation ------------------------------------------------------------------------


async def test_create_get_list_replace_patch_delete(client: Client, registry: SenderRegistry) -> None:
    doc = sample_sender("infobip", "acme-infobip", verified_caller_ids=["ACME"], stop_words=["STOP", "СТОП"])
    resp = await client.post("/api/senders", json=doc, headers=AUTH)
    assert resp.status == 201
    assert resp.headers["Location"] == "/api/senders/acme-infobip"
    created = await resp.json()
    assert created["settings"]["api_token"] == MASK
    stored = await registry.get("acme-infobip")
    assert stored is not None
    assert created["receiving_url"] == (
        f"{PUBLIC_URL}/smslistener/listen_type/sms_infobip?sender=acme-infobip&token={stored.webhook_token}"
    )
    assert "webhook_token" not in created

    resp = await client.get("/api/senders/acme-infobip", headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == created

    await create(client, sample_sender("playmobile", "acme-pm"))
    resp = await client.get("/api/senders", headers=AUTH)
    listed = (await resp.json())["senders"]
    assert [s["id"] for s in listed] == ["acme-infobip", "acme-pm"]
    assert listed[0] == created

    # PUT: the whole document; the masked secret and the token are kept; receiving_url may be sent back
    replaced = {**created, "accounts": ["acme"], "verified_caller_ids": []}
    resp = await client.put("/api/senders/acme-infobip", json=replaced, headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert (await resp.json()) == replaced
    after = await registry.get("acme-infobip")
    assert after is not None
    assert after.settings == stored.settings
    assert after.webhook_token == stored.webhook_token
    assert after.accounts == ["acme"]

    # PUT replaces: what is left out gets its default
    resp = await client.put(
        "/api/senders/acme-infobip",
        json={"gateway": "infobip", "accounts": ["acme"], "settings": {"url": "https://other.test"}},
        headers=AUTH,
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["stop_words"] == ["STOP"]
    assert body["settings"] == {"url": "https://other.test", "api_token": MASK}

    # PATCH: only what is given; settings merged key by key
    resp = await client.patch(
        "/api/senders/acme-infobip", json={"settings": {"api_token": "new-token"}, "rate_limit": 5}, headers=AUTH
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["settings"] == {"url": "https://other.test", "api_token": MASK}
    assert body["rate_limit"] == 5
    patched = await registry.get("acme-infobip")
    assert patched is not None
    assert patched.settings.api_token == "new-token"  # type: ignore[attr-defined]

    resp = await client.delete("/api/senders/acme-infobip", headers=AUTH)
    assert resp.status == 204
    assert await registry.get("acme-infobip") is None
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        resp = await client.request(method, "/api/senders/acme-infobip", json={}, headers=AUTH)
        assert resp.status == 404, method
        assert "no sender" in (await resp.json())["error"]


async def test_a_taken_id_is_a_409_on_the_id_field(client: Client) -> None:
    await create(client, sample_sender("smsc", "dup"))
    resp = await client.post("/api/senders", json=sample_sender("mts", "dup"), headers=AUTH)
    assert resp.status == 409
    assert "already exists" in (await resp.json())["errors"]["id"]


async def test_the_id_cannot_change(client: Client) -> None:
    await create(client, sample_sender("smsc", "keep"))
    for method in ("PUT", "PATCH"):
        resp = await client.request(method, "/api/senders/keep", json={"id": "other"}, headers=AUTH)
        assert resp.status == 422
        assert "cannot change" in (await resp.json())["errors"]["id"]


# -- names ---------------------------------------------------------------------------------------------------


def unnamed(kind: str, **extra: Any) -> dict[str, Any]:
    """A sender document without an id (it is made from the name)."""
    return {k: v for k, v in sample_sender(kind, **extra).items() if k != "id"}


async def test_names_are_unique_ignoring_case_editable_and_in_every_answer(
    client: Client, registry: SenderRegistry
) -> None:
    doc = unnamed("infobip")
    resp = await client.post("/api/senders", json={**doc, "name": " Infobip main (RU) "}, headers=AUTH)
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert (body["id"], body["name"]) == ("infobip-main-ru", "Infobip main (RU)")  # the id made from the name
    assert resp.headers["Location"] == "/api/senders/infobip-main-ru"

    # taken, in other letters: 409 naming the field
    resp = await client.post("/api/senders", json={**doc, "id": "other", "name": "infobip MAIN (ru)"}, headers=AUTH)
    assert resp.status == 409
    taken = "the name 'infobip MAIN (ru)' is taken by sender 'infobip-main-ru' (case is ignored)"
    assert await resp.json() == {"errors": {"name": taken}}
    await create(client, {**doc, "id": "other", "name": "Other"})
    for method in ("PUT", "PATCH"):
        resp = await client.request(
            method, "/api/senders/other", json={**doc, "name": "infobip MAIN (ru)"}, headers=AUTH
        )
        assert resp.status == 409, method
        assert await resp.json() == {"errors": {"name": taken}}

    # PATCH renames (the id stays); PUT without a name keeps it
    resp = await client.patch("/api/senders/infobip-main-ru", json={"name": "Инфобип, основной"}, headers=AUTH)
    assert ((await resp.json())["id"], (await resp.json())["name"]) == ("infobip-main-ru", "Инфобип, основной")
    resp = await client.put("/api/senders/infobip-main-ru", json=doc, headers=AUTH)
    assert (resp.status, (await resp.json())["name"]) == (200, "Инфобип, основной")
    listed = (await (await client.get("/api/senders", headers=AUTH)).json())["senders"]
    assert [(s["id"], s["name"]) for s in listed] == [("infobip-main-ru", "Инфобип, основной"), ("other", "Other")]

    # the old name is free again; its id is taken, so the new one has a suffix
    again = await create(client, {**doc, "name": "Infobip main (RU)"})
    assert re.fullmatch(r"infobip-main-ru-[0-9a-f]{6}", again["id"])
    # delete frees a name
    assert (await client.delete("/api/senders/other", headers=AUTH)).status == 204
    assert (await create(client, {**doc, "name": "OTHER"}))["id"] == "other"
    assert len(await registry.list()) == 3


async def test_a_sender_given_only_an_id_is_named_after_it(client: Client) -> None:
    created = await create(client, sample_sender("smsc", "acme-smsc"))
    assert created["name"] == "acme-smsc"
    resp = await client.post("/api/senders", json=sample_sender("mts", "x", name="ACME-SMSC"), headers=AUTH)
    assert resp.status == 409
    assert list((await resp.json())["errors"]) == ["name"]


# -- validation, per field -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "errors"),
    [
        (
            {"gateway": "infobip", "accounts": [], "settings": {}},
            {
                "name": "this field is required",
                "accounts": "assign at least one account",
                "settings.url": "this field is required",
                "settings.api_token": "this field is required",
            },
        ),
        ({"id": "x", "accounts": ["a"]}, {"gateway": "choose the delivery service (gateway)"}),
        ({"id": "x", "gateway": "nope", "accounts": ["a"]}, {"gateway": "unknown gateway 'nope'"}),
        ({**sample_sender("smsc"), "id": "bad id!"}, {"id": "use 1 to 64 letters, digits, - or _"}),
        (sample_sender("smsc", settings={**sample_settings("smsc"), "await_delivery_s": "soon"}),
         {"settings.await_delivery_s": "enter a whole number"}),
        (sample_sender("smsc", settings={**sample_settings("smsc"), "await_delivery_s": -1}),
         {"settings.await_delivery_s": "must be a whole number at least 1"}),
        (sample_sender("sandbox", settings={"failure_rate": 2}), {"settings.failure_rate": "must be at most 1"}),
        (sample_sender("smsc", settings={**sample_settings("smsc"), "colour": "red"}),
         {"settings.colour": "not a setting of this gateway"}),
        (sample_sender("devino", settings={"url": "https://d.test"}),
         {"settings": "devino needs api_key, or login and password"}),
        (sample_sender("smsc", verified_phones=["not a phone"]), {"verified_phones": "phone 'not a phone'"}),
        (sample_sender("smsc", stop_words=["STOP", ""]), {"stop_words": "must not be empty"}),
        (sample_sender("smsc", rate_limit=0), {"rate_limit": "must be above 0"}),
        (sample_sender("smsc", accounts="acme"), {"accounts": "must be a list"}),
        (sample_sender("smsc", colour="red"), {"colour": "unknown field"}),
        (sample_sender("smsc", name=" "), {"name": "this field is required"}),
        (sample_sender("smsc", name="x" * 101), {"name": "use at most 100 characters (this one has 101)"}),
        (sample_sender("smsc", name="a\nb"), {"name": "must be one line of text"}),
        (sample_sender("smsc", settings={**sample_settings("smsc"), "password": MASK}),
         {"settings": "******** stands for a hidden secret"}),
        ([sample_sender("smsc")], {"document": "expected a sender object"}),
    ],
)  # fmt: skip
async def test_validation_errors_come_back_per_field(
    client: Client, registry: SenderRegistry, doc: Any, errors: dict[str, str]
) -> None:
    resp = await client.post("/api/senders", json=doc, headers=AUTH)
    assert resp.status == 422, await resp.text()
    got = (await resp.json())["errors"]
    assert set(got) == set(errors), got
    for field, start in errors.items():
        assert got[field].startswith(start), (field, got[field])
    assert await registry.list() == []


async def test_a_body_that_is_not_json_is_refused(client: Client) -> None:
    resp = await client.post("/api/senders", data="{nope", headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status == 400
    assert "not valid JSON" in (await resp.json())["error"]
    resp = await client.post("/api/senders", data="id=x", headers={**AUTH, "Content-Type": "text/plain"})
    assert resp.status == 415
    resp = await client.post("/api/senders", data=b"x" * 300_000, headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status == 413


async def test_an_edit_is_validated_per_field_too(client: Client) -> None:
    await create(client, sample_sender("infobip", "ib"))
    resp = await client.put("/api/senders/ib", json={"gateway": "infobip", "accounts": []}, headers=AUTH)
    assert resp.status == 422
    # the stored api_token is kept, so only the url and the accounts are missing
    assert set((await resp.json())["errors"]) == {"accounts", "settings.url"}
    resp = await client.put("/api/senders/ib", json={"gateway": "mts", "accounts": ["a"]}, headers=AUTH)
    assert set((await resp.json())["errors"]) == {"settings.login", "settings.password"}  # secrets of another kind
    resp = await client.patch("/api/senders/ib", json={"settings": {"colour": "red"}}, headers=AUTH)
    assert resp.status == 422
    assert await resp.json() == {"errors": {"settings.colour": "not a setting of this gateway"}}


# -- secrets --------------------------------------------------------------------------------------------


async def test_secrets_are_write_only_for_every_kind(
    admin_settings: Settings, redis: aioredis.Redis, names: Names
) -> None:
    key = Fernet.generate_key().decode()
    settings = msgspec.structs.replace(admin_settings, secret_key=key)
    registry = SenderRegistry(redis, names, Cipher(key))
    async with TestClient(TestServer(build_app(AdminConfig(token=TOKEN), settings))) as client:
        answers = []
        for kind in KINDS:
            resp = await client.post("/api/senders", json=sample_sender(kind), headers=AUTH)
            assert resp.status == 201
            answers.append(await resp.text())
            resp = await client.get(f"/api/senders/{kind}-1", headers=AUTH)
            answers.append(await resp.text())
            resp = await client.put(f"/api/senders/{kind}-1", json=await resp.json(), headers=AUTH)  # masks back
            assert resp.status == 200, await resp.text()
            answers.append(await resp.text())
            resp = await client.patch(f"/api/senders/{kind}-1", json={"accounts": ["x"]}, headers=AUTH)
            answers.append(await resp.text())
            answers.append(await (await client.get(f"/senders/{kind}-1/edit", headers=AUTH)).text())
        answers.append(await (await client.get("/api/senders", headers=AUTH)).text())
        answers.append(await (await client.get("/senders", headers=AUTH)).text())
    assert not [a for a in answers if SECRET in a]
    assert not [v for v in (await redis.hgetall(names.senders_key)).values() if SECRET.encode() in v]
    for kind in KINDS:  # the masked secrets sent back kept their values
        sender = await registry.get(f"{kind}-1")
        assert sender is not None
        assert sender.accounts == ["x"]
        for spec in fields(KIND_SETTINGS[kind]):
            if spec.secret and spec.name in sample_settings(kind):
                assert getattr(sender.settings, spec.name) == sample_settings(kind)[spec.name]


# -- gateways: one source of truth --------------------------------------------------------------------


async def test_gateways_are_the_kinds_and_their_typed_fields(client: Client) -> None:
    resp = await client.get("/api/gateways", headers=AUTH)
    gateways = (await resp.json())["gateways"]
    assert [g["kind"] for g in gateways] == list(KINDS)
    for g in gateways:
        cls = KIND_SETTINGS[g["kind"]]
        assert g["title"] == cls.title
        assert g["callbacks"] == cls.callbacks
        assert g["fields"] == [msgspec.to_builtins(f) for f in fields(cls)]
    resp = await client.get("/api/gateways/infobip", headers=AUTH)
    infobip = await resp.json()
    assert [(f["name"], f["required"], f["secret"]) for f in infobip["fields"]] == [
        ("url", True, False),
        ("api_token", True, True),
    ]
    resp = await client.get("/api/gateways/nope", headers=AUTH)
    assert resp.status == 404


# -- changes reach running processes ----------------------------------------------------------------------


async def test_a_running_cache_follows_changes_made_here_without_restart(
    client: Client, registry: SenderRegistry
) -> None:
    cache = SenderCache(registry, poll_s=30)  # the poll is far away: only the change message can do it

    async def until(check: Any) -> None:
        for _ in range(200):
            if check():
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the cache did not follow")

    await cache.start()
    try:
        await asyncio.sleep(0.1)  # subscribed
        await create(client, sample_sender("smsc", "live"))
        await until(lambda: cache.get("live") is not None)
        await client.patch("/api/senders/live", json={"accounts": ["new-account"]}, headers=AUTH)
        await until(lambda: (s := cache.get("live")) is not None and s.accounts == ["new-account"])
        await client.delete("/api/senders/live", headers=AUTH)
        await until(lambda: cache.get("live") is None)
    finally:
        await cache.stop()


# -- CSRF ----------------------------------------------------------------------------------------------------


async def test_cross_site_requests_are_refused(client: Client, registry: SenderRegistry) -> None:
    doc = sample_sender("smsc", "csrf")
    for headers in ({"Origin": "https://evil.test"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site"}):  # fmt: skip
        resp = await client.post("/api/senders", json=doc, headers={**AUTH, **headers})
        assert resp.status == 403, headers
        resp = await client.post("/senders/new", data={"id": "csrf"}, headers={**basic("admin", TOKEN), **headers})
        assert resp.status == 403, headers
    assert await registry.list() == []
    host = f"http://{client.host}:{client.port}"
    resp = await client.post(
        "/api/senders", json=doc, headers={**AUTH, "Origin": host, "Sec-Fetch-Site": "same-origin"}
    )
    assert resp.status == 201


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def test_a_form_post_needs_the_token_bound_to_the_cookie(client: Client, registry: SenderRegistry) -> None:
    page = basic("admin", TOKEN)
    form = {
        "name": "F1",
        "id": "f1",
        "accounts": "acme",
        "gateway": "mts",
        "settings.login": "l",
        "settings.password": "p",
    }
    resp = await client.post("/senders/new", data=form, headers=page)  # no cookie, no token
    assert resp.status == 403
    assert "Reload the page" in await resp.text()
    resp = await client.get("/senders/new", headers=page)
    assert "SameSite=Strict" in resp.headers["Set-Cookie"]
    assert "HttpOnly" in resp.headers["Set-Cookie"]
    token = csrf_of(await resp.text())
    resp = await client.post("/senders/new", data={**form, "csrf_token": "0" * 64}, headers=page)
    assert resp.status == 403
    async with ClientSession() as other:  # a token is bound to its cookie: it does not work with another
        resp = await other.post(
            f"http://{client.host}:{client.port}/senders/new", data={**form, "csrf_token": token}, headers=page
        )
        assert resp.status == 403
    assert await registry.list() == []
    resp = await client.post("/senders/new", data={**form, "csrf_token": token}, headers=page, allow_redirects=False)
    assert resp.status == 303
    assert [s.id for s in await registry.list()] == ["f1"]


# -- the page, without a browser ---------------------------------------------------------------------------


async def test_the_form_page_creates_edits_and_deletes(client: Client, registry: SenderRegistry) -> None:
    page = basic("admin", TOKEN)
    resp = await client.get("/", headers=page)
    assert "No senders yet" in await resp.text()
    token = csrf_of(await (await client.get("/senders/new?gateway=infobip", headers=page)).text())

    form = {"csrf_token": token, "name": "Infobip (ACME)", "id": "ib", "accounts": "acme, acme-promo",
            "gateway": "infobip", "shown_gateway": "infobip", "settings.url": "", "settings.api_token": "tok",
            "verified_caller_ids": "ACME", "callbacks_section": "1", "stop_words": "STOP, СТОП",
            "add_to_global_suppress": "true", "rate_limit": "fast"}  # fmt: skip
    resp = await client.post("/senders/new", data=form, headers=page)
    assert resp.status == 422
    html = await resp.text()
    assert 'id="e-f-infobip-url"' in html
    assert re.search(r'id="e-f-infobip-url"><span class="visually-hidden">Error: </span>This field is required', html)
    assert 'id="e-rate_limit"' in html
    assert 'value="tok"' not in html  # a typed secret is never sent back
    assert 'value="acme, acme-promo"' in html  # everything else is

    resp = await client.post(
        "/senders/new", data={**form, "settings.url": "https://ib.test", "rate_limit": "7.5"}, headers=page
    )
    assert resp.status == 200  # after the redirect
    assert str(resp.url).endswith("/senders/ib/edit?created=1")
    html = await resp.text()
    sender = await registry.get("ib")
    assert sender is not None
    assert sender.accounts == ["acme", "acme-promo"]
    assert sender.stop_words == ["STOP", "СТОП"]
    assert sender.add_to_global_suppress
    assert sender.rate_limit == 7.5
    assert f"sms_infobip?sender=ib&amp;token={sender.webhook_token}" in html
    assert "Sender created." in html

    edit = {**form, "csrf_token": csrf_of(html), "settings.url": "https://ib2.test", "settings.api_token": "",
            "rate_limit": "", "accounts": "acme"}  # fmt: skip
    resp = await client.post("/senders/ib/edit", data=edit, headers=page)
    assert str(resp.url).endswith("/senders/ib/edit?saved=1")
    after = await registry.get("ib")
    assert after is not None
    assert after.settings.api_token == "tok"  # type: ignore[attr-defined]  # blank keeps the secret
    assert after.settings.url == "https://ib2.test"  # type: ignore[attr-defined]
    assert after.rate_limit is None
    assert after.webhook_token == sender.webhook_token

    resp = await client.post("/senders/ib/delete", data={"csrf_token": csrf_of(html)}, headers=page)
    assert resp.status == 200
    assert "Delete sender <code>ib</code>?" in await resp.text()  # no script to ask: the page asks
    assert await registry.get("ib") is not None
    resp = await client.post("/senders/ib/delete", data={"csrf_token": csrf_of(html), "confirmed": "yes"}, headers=page)
    assert str(resp.url).endswith("/senders?deleted=ib")
    assert "Sender ib deleted." in await resp.text()
    assert await registry.get("ib") is None
    resp = await client.get("/senders/ib/edit", headers=page)
    assert resp.status == 404


async def test_without_script_changing_the_gateway_posts_back_for_its_fields(client: Client) -> None:
    page = basic("admin", TOKEN)
    html = await (await client.get("/senders/new", headers=page)).text()
    assert re.search(r'<fieldset class="card gateway" id="gw-infobip" data-gateway="infobip" hidden disabled>', html)
    form = {"csrf_token": csrf_of(html), "action": "switch", "id": "x", "accounts": "a", "gateway": "seventech",
            "shown_gateway": "", "stop_words": "STOP"}  # fmt: skip
    resp = await client.post("/senders/new", data=form, headers=page)
    assert resp.status == 200
    html = await resp.text()
    assert re.search(r'id="gw-seventech" data-gateway="seventech">', html)  # shown, enabled
    assert re.search(r'id="gw-infobip" data-gateway="infobip" hidden disabled>', html)
    assert 'id="f-seventech-shorten_links"' in html
    assert 'id="f-shorten_links"' in html  # the sender option, for every kind
    assert "This field is required" not in html  # switching is not saving


async def test_the_page_lists_id_and_name_and_edits_the_name(client: Client, registry: SenderRegistry) -> None:
    page = basic("admin", TOKEN)
    html = await (await client.get("/senders/new", headers=page)).text()
    assert re.search(r'<input id="f-name" name="name" type="text" value=""[^>]* required aria-required="true"', html)
    assert re.search(r'<input id="f-id" name="id" type="text" value=""', html)  # optional
    form = {"csrf_token": csrf_of(html), "name": "Рассылка АКМЕ", "id": "", "accounts": "acme", "gateway": "mts",
            "shown_gateway": "mts", "settings.login": "l", "settings.password": "p"}  # fmt: skip
    resp = await client.post("/senders/new", data=form, headers=page)
    assert str(resp.url).endswith("/senders/rassylka-akme/edit?created=1")  # the id made from the name
    html = await resp.text()
    assert "<h1>Рассылка АКМЕ</h1>" in html
    assert re.search(r'<input id="f-id" name="id" type="text" value="rassylka-akme"[^>]* readonly', html)

    # the list: the ID on the left is the link to the edit page, then the Name; Edit and Delete on the right
    await create(client, sample_sender("smsc", "acme-smsc"))
    html = await (await client.get("/senders", headers=page)).text()
    head = re.findall(r'<th scope="col"[^>]*>(.*?)</th>', html)
    assert head[:3] == ["ID", "Name", "Gateway"]
    assert "Actions" in head[-1]
    row = re.search(r'<tr data-sender="rassylka-akme">(.*?)</tr>', html, re.DOTALL)
    assert row is not None
    cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row.group(1), re.DOTALL)
    assert cells[0] == '<a class="sender-id" href="/senders/rassylka-akme/edit">rassylka-akme</a>'
    assert cells[1] == "Рассылка АКМЕ"
    assert "/senders/rassylka-akme/delete" in cells[-1]
    assert re.search(r'<td class="sender-name">acme-smsc</td>', html)  # no name given: named after its id

    # a taken name, on create and on edit: 409, the message next to the Name field, what was typed kept
    resp = await client.post("/senders/new", data={**form, "name": "рассылка акме "}, headers=page)
    assert resp.status == 409
    html = await resp.text()
    assert 'id="e-name"><span class="visually-hidden">Error: </span>The name &#39;рассылка акме&#39; is taken' in html
    assert 'value="рассылка акме"' in html
    edit = {**form, "csrf_token": csrf_of(html), "name": "ACME-smsc"}
    resp = await client.post("/senders/rassylka-akme/edit", data=edit, headers=page)
    assert resp.status == 409
    assert "is taken by sender &#39;acme-smsc&#39;" in await resp.text()
    resp = await client.post("/senders/rassylka-akme/edit", data={**edit, "name": "ACME news"}, headers=page)
    assert str(resp.url).endswith("/senders/rassylka-akme/edit?saved=1")
    renamed = await registry.get("rassylka-akme")
    assert renamed is not None
    assert renamed.name == "ACME news"
    resp = await client.post("/senders/rassylka-akme/edit", data={**edit, "name": " "}, headers=page)
    assert resp.status == 422
    assert 'id="e-name"' in await resp.text()


async def test_advanced_settings_are_in_a_collapsed_section_after_the_others(client: Client) -> None:
    page = basic("admin", TOKEN)
    html = await (await client.get("/senders/new?gateway=smsc", headers=page)).text()
    fieldset = re.search(r'<fieldset class="card gateway" id="gw-smsc".*?</fieldset>', html, re.DOTALL)
    assert fieldset is not None
    basic_part, _, advanced_part = fieldset.group(0).partition('<details class="advanced">')
    assert "<summary>Advanced</summary>" in advanced_part
    specs = fields(KIND_SETTINGS["smsc"])
    assert [f.name for f in specs if f.advanced] == ["base_url"]
    for f in specs:
        assert (f'id="f-smsc-{f.name}"' in advanced_part) is f.advanced, f.name
        assert (f'id="f-smsc-{f.name}"' in basic_part) is not f.advanced, f.name
    for kind in KINDS:  # every kind: its advanced fields, and only those, in the section
        gw = re.search(rf'<fieldset class="card gateway" id="gw-{kind}".*?</fieldset>', html, re.DOTALL)
        assert gw is not None
        inside = "".join(re.findall(r"<details.*?</details>", gw.group(0), re.DOTALL))
        for f in fields(KIND_SETTINGS[kind]):
            assert (f'id="f-{kind}-{f.name}"' in inside) is f.advanced, (kind, f.name)

    # a mistake in an advanced field opens the section
    form = {"csrf_token": csrf_of(html), "name": "S", "accounts": "acme", "gateway": "smsc", "shown_gateway": "smsc",
            "settings.login": "l", "settings.password": "p", "settings.base_url": "not a url"}  # fmt: skip
    resp = await client.post("/senders/new", data=form, headers=page)
    assert resp.status == 422
    html = await resp.text()
    assert '<details class="advanced" open>' in html
    assert 'id="e-f-smsc-base_url"' in html


async def test_pages_send_security_headers(client: Client) -> None:
    for path in ("/senders", "/api/senders", "/senders/new"):
        resp = await client.get(path, headers=AUTH)
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Cache-Control"] == "no-store"


# -- the command -------------------------------------------------------------------------------------------


def test_the_command_refuses_to_start_without_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SMSFLEET_ADMIN_TOKEN", raising=False)
    assert cli.main(["admin"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("smsfleet: error: SMSFLEET_ADMIN_TOKEN is not set")
    for weak in ("short", "a" * 40):
        monkeypatch.setenv("SMSFLEET_ADMIN_TOKEN", weak)
        assert cli.main(["admin"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("smsfleet: error: SMSFLEET_ADMIN_TOKEN ")
        assert err.count("\n") == 1
        assert weak not in err


def test_the_command_says_in_one_line_what_stops_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], redis_url: str, namespace: str
) -> None:
    monkeypatch.setenv("SMSFLEET_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("SMSFLEET_NAMESPACE", namespace)
    monkeypatch.setenv("SMSFLEET_SECRET_KEY", "not-a-key")
    assert cli.main(["admin"]) == 2
    assert "SMSFLEET_SECRET_KEY must be a Fernet key" in capsys.readouterr().err
    monkeypatch.delenv("SMSFLEET_SECRET_KEY")
    monkeypatch.setenv("SMSFLEET_REDIS_URL", "redis://127.0.0.1:1/0")
    assert cli.main(["admin"]) == 1
    assert capsys.readouterr().err.startswith("smsfleet: cannot reach Redis")
    monkeypatch.setenv("SMSFLEET_REDIS_URL", redis_url)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert cli.main(["admin", "--port", str(taken.getsockname()[1])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("smsfleet: error: cannot listen on 127.0.0.1:")
    assert err.count("\n") == 1


async def test_serve_listens_on_loopback_and_stops(admin_settings: Settings, redis: aioredis.Redis) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stop = asyncio.Event()
    task = asyncio.create_task(serve(AdminConfig(token=TOKEN), admin_settings, "127.0.0.1", port, stop))
    try:
        async with ClientSession() as http:
            for _ in range(100):
                try:
                    resp = await http.get(f"http://127.0.0.1:{port}/api/senders", headers=AUTH)
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            assert resp.status == 200
            assert await resp.json() == {"senders": [], "unreadable": {}}
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


# -- tokens, identifiers and unreadable records -----------------------------------------------------------


async def test_rotate_token_gives_a_new_receiving_url_and_running_caches_drop_the_old(
    client: Client, registry: SenderRegistry
) -> None:
    created = await create(client, sample_sender("rapporto", "rp"))
    assert created["receiving_url"].startswith(f"{PUBLIC_URL}/smslistener/listen_type/sms_rapporto?sender=rp&token=")
    cache = SenderCache(registry, poll_s=30)  # only the change message can do it
    await cache.start()
    try:
        await asyncio.sleep(0.1)  # subscribed
        resp = await client.post("/api/senders/rp/rotate-token", json={}, headers=AUTH)
        assert resp.status == 200, await resp.text()
        rotated = await resp.json()
        stored = await registry.get("rp")
        assert stored is not None
        assert rotated["receiving_url"] == (
            f"{PUBLIC_URL}/smslistener/listen_type/sms_rapporto?sender=rp&token={stored.webhook_token}"
        )
        assert rotated["receiving_url"] != created["receiving_url"]
        assert "webhook_token" not in rotated
        assert rotated["settings"]["password"] == MASK
        for _ in range(200):
            if (s := cache.get("rp")) is not None and s.webhook_token == stored.webhook_token:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the cache kept the old token")
    finally:
        await cache.stop()
    resp = await client.post("/api/senders/nobody/rotate-token", json={}, headers=AUTH)
    assert resp.status == 404
    resp = await client.post("/api/senders/rp/rotate-token", headers=AUTH)  # a form could send this: refused
    assert resp.status == 415
    resp = await client.post("/api/senders/rp/rotate-token", json={})
    assert resp.status == 401


@pytest.mark.parametrize(
    ("token", "needle"),
    [("t0k", "3 characters long; use at least 32"), ("ab" * 20, "made of 2 different characters")],
)
async def test_a_weak_webhook_token_is_refused_on_its_field(
    client: Client, registry: SenderRegistry, token: str, needle: str
) -> None:
    resp = await client.post("/api/senders", json=sample_sender("infobip", webhook_token=token), headers=AUTH)
    assert resp.status == 422
    errors = (await resp.json())["errors"]
    assert list(errors) == ["webhook_token"]
    assert needle in errors["webhook_token"]
    assert token not in errors["webhook_token"]
    await create(client, sample_sender("infobip"))
    resp = await client.patch("/api/senders/infobip-1", json={"webhook_token": token}, headers=AUTH)
    assert resp.status == 422
    assert list((await resp.json())["errors"]) == ["webhook_token"]
    good = "Gx2-kP9_qLm4ZrT7vWb1NcY8sDf3HjA6"
    resp = await client.patch("/api/senders/infobip-1", json={"webhook_token": good}, headers=AUTH)
    assert resp.status == 200
    assert (await resp.json())["receiving_url"].endswith(f"&token={good}")


async def test_an_id_with_a_final_newline_is_refused(client: Client, registry: SenderRegistry) -> None:
    """Issue 15, item 6: `"nl\\n"` was stored, then could be neither edited nor deleted through the API."""
    resp = await client.post("/api/senders", json=sample_sender("smsc", "nl\n"), headers=AUTH)
    assert resp.status == 422
    assert list((await resp.json())["errors"]) == ["id"]
    assert await registry.list() == []


async def test_an_unreadable_record_is_reported_and_the_others_still_listed(
    client: Client, registry: SenderRegistry, redis: aioredis.Redis, names: Names
) -> None:
    await create(client, sample_sender("smsc", "good"))
    await redis.hset(names.senders_key, "broken", b"GARBAGE-CONTENT")
    resp = await client.get("/api/senders", headers=AUTH)
    body = await resp.json()
    assert [s["id"] for s in body["senders"]] == ["good"]
    assert body["unreadable"] == {"broken": "not a sender document (DecodeError)"}
    resp = await client.get("/api/senders/broken", headers=AUTH)
    assert resp.status == 500
    assert "GARBAGE" not in await resp.text()
    html = await (await client.get("/senders", headers=basic("admin", TOKEN))).text()
    assert "Stored senders that cannot be read" in html
    assert 'data-sender="good"' in html
    resp = await client.delete("/api/senders/broken", headers=AUTH)
    assert resp.status == 204


async def test_the_page_rotates_the_token(client: Client, registry: SenderRegistry) -> None:
    await create(client, sample_sender("infobip", "ib"))
    before = await registry.get("ib")
    assert before is not None
    page = basic("admin", TOKEN)
    html = await (await client.get("/senders/ib/edit", headers=page)).text()
    assert 'action="/senders/ib/rotate-token"' in html
    resp = await client.post("/senders/ib/rotate-token", data={"csrf_token": csrf_of(html)}, headers=page)
    assert str(resp.url).endswith("/senders/ib/edit?rotated=1")
    after = await registry.get("ib")
    assert after is not None
    assert after.webhook_token != before.webhook_token
    html = await resp.text()
    assert f"sender=ib&amp;token={after.webhook_token}" in html
    assert "New webhook token" in html
    resp = await client.post("/senders/ib/rotate-token", data={}, headers=page)  # no CSRF token
    assert resp.status == 403
