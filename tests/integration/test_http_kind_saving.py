"""Saving senders of the `http` kind and of its presets, on the real Redis: the CLI exits 2 and the admin API
answers 422 naming the field for a mapping that cannot work or a preset without its URL; a stored preset
sender written with the former `base_url` still reads, as `url`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import redis as sync_redis
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from admin import AdminConfig, build_app
from cli import main
from smsfleet.senders import SenderRegistry
from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.fakes.json_sms import HTTP_SETTINGS

TOKEN = "test-admin-token-0123456789-abcdefgh"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
URL = "https://sms.example.com/api/send"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, redis_url: str, amqp_url: str, namespace: str) -> str:
    monkeypatch.setenv("SMSFLEET_REDIS_URL", redis_url)
    monkeypatch.setenv("SMSFLEET_AMQP_URL", amqp_url)
    monkeypatch.setenv("SMSFLEET_NAMESPACE", namespace)
    return namespace


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_creates_an_http_sender_from_flags_and_refuses_bad_mappings(
    env: str, capsys: pytest.CaptureFixture[str], redis: aioredis.Redis
) -> None:
    del redis  # only for the clean-up of the namespace's keys
    flags = ["senders", "create", "acme-http", "--gateway", "http", "--account", "acme", "--set", f"url={URL}",
             "--set", "encoding=json", "--set", "login=acme", "--set", "login_at=json:auth.login",
             "--set", "password=pw-1", "--set", "password_at=json:auth.password",
             "--set", "to_at=json:messages.0.to", "--set", "text_at=json:messages.0.text",
             "--set", "success_id_pointer=/result/id"]  # fmt: skip
    for bad, field in [
        ("success_id_pointer=result.id", "settings.success_id_pointer"),
        ("to_at=cookie:to", "settings.to_at"),
        ("text_at=form:text", "settings.text_at"),
    ]:
        code, _, err = run(capsys, *flags, "--set", bad)
        assert code == 2, err
        assert field in err
        assert len(err.strip().splitlines()) == 1
    code, out, err = run(capsys, *flags, "--json")
    assert code == 0, err
    [saved] = json.loads(out)
    assert saved["settings"]["password"] == "********"
    assert saved["settings"]["to_at"] == "json:messages.0.to"


def test_cli_refuses_a_preset_without_its_url(
    env: str, capsys: pytest.CaptureFixture[str], redis: aioredis.Redis
) -> None:
    del redis
    args = ["senders", "create", "sm", "--gateway", "skymedia", "--account", "acme", "--set", "login=a",
            "--set", "password=p"]  # fmt: skip
    code, _, err = run(capsys, *args)
    assert code == 2
    assert "settings.url: required" in err
    assert run(capsys, *args, "--set", "url=https://sms.example.com/get/")[0] == 0


def test_a_stored_base_url_reads_as_url_and_is_saved_as_url(
    env: str, capsys: pytest.CaptureFixture[str], redis_url: str, redis: aioredis.Redis, names: Names
) -> None:
    del redis  # only for the clean-up of the namespace's keys
    old = {"login": "a", "password": "p", "client_id": "c", "base_url": "https://sms.example.com/s"}
    record = {"id": "old", "gateway": "sbermobile", "accounts": ["acme"], "settings": old, "webhook_token": "t" * 43}
    with sync_redis.Redis.from_url(redis_url) as r:
        r.hset(names.senders_key, "old", json.dumps(record))
        code, out, err = run(capsys, "senders", "show", "old", "--json")
        assert code == 0, err
        assert json.loads(out)["settings"]["url"] == "https://sms.example.com/s"
        code, out, err = run(capsys, "senders", "update", "old", "--account", "acme", "--json")
        assert code == 0, err
        shown = {"login": "a", "password": "********", "client_id": "c", "url": "https://sms.example.com/s"}
        assert json.loads(out)[0]["settings"] == shown
        stored = json.loads(r.hget(names.senders_key, "old") or b"{}")
    assert stored["settings"]["url"] == "https://sms.example.com/s"
    assert "base_url" not in stored["settings"]


@pytest.fixture
async def client(redis_url: str, namespace: str, redis: aioredis.Redis) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    settings = Settings(redis_url=redis_url, namespace=namespace, public_url="http://hooks.test")
    async with TestClient(TestServer(build_app(AdminConfig(token=TOKEN), settings))) as c:
        yield c


@pytest.mark.parametrize(
    ("gateway", "settings", "errors"),
    [
        ("skymedia", {"login": "a", "password": "p"}, {"settings.url": "this field is required"}),
        ("http", HTTP_SETTINGS | {"url": URL, "login": "a", "password": "p", "success_id_pointer": "id"},
         {"settings.success_id_pointer": "'id' is not a JSON pointer"}),
        ("http", HTTP_SETTINGS | {"url": URL, "login": "a", "password": "p", "success_regex": "(?P<ref>\\d+)",
                                  "success_id_pointer": None}, {"settings.success_regex": "unknown named group"}),
        ("http", HTTP_SETTINGS | {"url": URL, "login": "a", "password": "p", "to_at": "cookie:to"},
         {"settings.to_at": "'cookie' is not a place"}),
    ],
)  # fmt: skip
async def test_the_admin_api_answers_422_naming_the_field(
    client: TestClient,  # type: ignore[type-arg]
    *,
    redis: aioredis.Redis,
    names: Names,
    gateway: str,
    settings: dict[str, object],
    errors: dict[str, str],
) -> None:
    doc = {"id": "s1", "gateway": gateway, "accounts": ["acme"], "settings": settings}
    resp = await client.post("/api/senders", json=doc, headers=AUTH)
    assert resp.status == 422, await resp.text()
    got = (await resp.json())["errors"]
    assert set(got) == set(errors), got
    for field, start in errors.items():
        assert got[field].startswith(start), (field, got[field])
    assert await SenderRegistry(redis, names).list() == []


async def test_the_admin_api_saves_a_json_provider(client: TestClient) -> None:  # type: ignore[type-arg]
    doc = {"id": "s1", "gateway": "http", "accounts": ["acme"],
           "settings": HTTP_SETTINGS | {"url": URL, "login": "a", "password": "p"}}  # fmt: skip
    resp = await client.post("/api/senders", json=doc, headers=AUTH)
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["settings"]["states"]["delivered"] == "delivered"
    assert body["receiving_url"].startswith("http://hooks.test/smslistener/listen_type/sms_http?sender=s1&token=")
