"""`smsfleet senders` and `smsfleet gateways` as an operator uses them, on the real Redis."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import redis as sync_redis
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from cli import main
from smsfleet.kinds import KINDS
from tests.samples import SECRET, sample_sender


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, redis_url: str, amqp_url: str, namespace: str) -> str:
    monkeypatch.setenv("SMSFLEET_REDIS_URL", redis_url)
    monkeypatch.setenv("SMSFLEET_AMQP_URL", amqp_url)
    monkeypatch.setenv("SMSFLEET_NAMESPACE", namespace)
    monkeypatch.setenv("SMSFLEET_PUBLIC_URL", "https://hooks.example.com")
    monkeypatch.setenv("SMSFLEET_SECRET_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("SMSFLEET_LOG_LEVEL", "debug")  # so that a leak into any log line is seen
    return namespace


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_kind_through_its_whole_life_without_showing_a_secret(
    env: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, redis: aioredis.Redis
) -> None:
    del redis  # only for the clean-up of the namespace's keys
    seen = []
    for kind in KINDS:
        path = tmp_path / f"{kind}.json"
        path.write_text(json.dumps(sample_sender(kind)))
        seen.append(run(capsys, "senders", "create", "--file", str(path)))
        seen.append(run(capsys, "senders", "show", f"{kind}-1"))
        seen.append(run(capsys, "senders", "show", f"{kind}-1", "--json"))
        seen.append(run(capsys, "senders", "update", f"{kind}-1", "--account", "acme", "--account", "new"))
    seen.append(run(capsys, "senders", "list"))
    seen.append(code_list := run(capsys, "senders", "list", "--json"))
    assert {s["id"] for s in json.loads(code_list[1])} == {f"{k}-1" for k in KINDS}
    assert all(s["accounts"] == ["acme", "new"] for s in json.loads(code_list[1]))
    seen.extend(run(capsys, "senders", "delete", f"{kind}-1") for kind in KINDS)
    assert [code for code, _, _ in seen] == [0] * len(seen)
    assert any("sender.created" in err for _, _, err in seen), "logs were expected on stderr"
    for _, out, err in seen:
        assert SECRET not in out
        assert SECRET not in err


def test_flags_create_with_receiving_url_and_secret_kept_in_redis_encrypted(
    env: str, capsys: pytest.CaptureFixture[str], redis_url: str, redis: aioredis.Redis
) -> None:
    del redis  # only for the clean-up of the namespace's keys
    code, out, _ = run(
        capsys,
        "senders",
        "create",
        "acme-ib",
        "--gateway",
        "infobip",
        "--account",
        "acme",
        "--set",
        "url=https://xyz.api.infobip.com",
        "--set",
        f"api_token={SECRET}",
        "--stop-word",
        "STOP",
        "--stop-word",
        "СТОП",
        "--global-suppress",
        "--shorten-links",
        "--json",
    )
    assert code == 0, out
    doc = json.loads(out)[0]
    assert doc["settings"]["api_token"] == "********"
    assert doc["stop_words"] == ["STOP", "СТОП"]
    assert doc["add_to_global_suppress"] is True
    assert doc["shorten_links"] is True
    assert doc["receiving_url"].startswith(
        "https://hooks.example.com/smslistener/listen_type/sms_infobip?sender=acme-ib&token="
    )
    code, out, _ = run(capsys, "senders", "show", "acme-ib")
    assert doc["receiving_url"] in out
    assert "shorten links in messages" in out

    client = sync_redis.Redis.from_url(redis_url)
    try:
        raw = client.hget(f"{env}:senders", "acme-ib")
    finally:
        client.close()
    assert raw is not None
    assert SECRET.encode() not in raw


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["senders", "create", "x", "--gateway", "smsc", "--account", "a", "--set", "login=l"], "password"),
        (["senders", "create", "x", "--gateway", "nope", "--account", "a"], "invalid choice"),
        (
            ["senders", "create", "x", "--gateway", "smsc", "--set", "login=l", "--set", "password=p"],
            "accounts",
        ),
        (["senders", "create", "bad.id", "--gateway", "smsc", "--account", "a"], "letters, digits"),
        (["senders", "create", "--gateway", "smsc", "--account", "a"], "give an ID or --name"),
        (["senders", "create", "x", "--name", " ", "--gateway", "sandbox", "--account", "a"], "name: this field"),
        (["senders", "create", "--name", "x" * 101, "--gateway", "sandbox", "--account", "a"], "at most 100"),
        (["senders", "create", "x", "--gateway", "smsc", "--account", "a", "--set", "oops"], "key=value"),
        (["senders", "show", "missing"], "no sender"),
        (["senders", "delete", "missing"], "no sender"),
        (["senders", "update", "missing", "--account", "a"], "no sender"),
        (["senders", "frobnicate"], "invalid choice"),
        (["gateways", "nope"], "unknown gateway"),
    ],
)
def test_user_mistakes_get_one_line_and_status_2(
    env: str, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_duplicate_id_and_malformed_files(
    env: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, redis: aioredis.Redis
) -> None:
    del redis  # only for the clean-up of the namespace's keys
    good = tmp_path / "senders.toml"
    good.write_text(
        '[[senders]]\nid = "a"\ngateway = "mts"\naccounts = ["acme"]\n'
        '[senders.settings]\nlogin = "l"\npassword = "p"\n'
        '[[senders]]\nid = "b"\ngateway = "sandbox"\naccounts = ["acme"]\n'
    )
    assert run(capsys, "senders", "create", "--file", str(good))[0] == 0
    code, _, err = run(capsys, "senders", "create", "--file", str(good))
    assert (code, "already exists" in err) == (2, True)
    for name, text, needle in [
        ("broken.json", "{not json", "not valid JSON"),
        ("broken.toml", "[[senders]\nid=", "not valid TOML"),
        ("empty.json", "[]", "holds no sender"),
        ("scalar.json", "42", "expected a sender object"),
        ("twice.json", json.dumps([sample_sender("mts", "z"), sample_sender("mts", "z")]), "appears twice"),
    ]:
        path = tmp_path / name
        path.write_text(text)
        code, _, err = run(capsys, "senders", "create", "--file", str(path))
        assert code == 2, name
        assert needle in err, (name, err)
        assert len(err.strip().splitlines()) == 1
    assert run(capsys, "senders", "create", "--file", str(tmp_path / "absent.json"))[0] == 2


def test_gateways_lists_all_kinds_with_their_settings(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "gateways", "--json")
    rows = json.loads(out)
    assert code == 0
    assert [r["kind"] for r in rows] == list(KINDS)
    smsc = next(r for r in rows if r["kind"] == "smsc")
    assert {(s["name"], s["required"], s["secret"]) for s in smsc["settings"]} >= {
        ("login", True, False),
        ("password", True, True),
        ("await_delivery_s", False, False),
    }
    code, out, _ = run(capsys, "gateways")
    assert code == 0
    assert "playmobile" in out
    assert "user_id*" in out


def test_unreachable_redis_says_how_to_start_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SMSFLEET_REDIS_URL", "redis://:pw@127.0.0.1:1/0")
    code, _, err = run(capsys, "senders", "list")
    assert code == 1
    assert "cannot reach Redis" in err
    assert "redis-server" in err
    assert "pw" not in err


def test_topology_declare(env: str, capsys: pytest.CaptureFixture[str], amqp: object) -> None:
    code, out, _ = run(capsys, "topology", "declare")
    assert code == 0
    assert env in out


def test_rotate_token_prints_the_new_receiving_url_and_the_old_token_is_gone(
    env: str, capsys: pytest.CaptureFixture[str], redis: aioredis.Redis
) -> None:
    del redis  # clean-up
    assert run(capsys, "senders", "create", "rp", "--gateway", "rapporto", "--account", "acme", "--set",
               "service_id=1", "--set", f"password={SECRET}", "--set", "url=https://rapporto.test")[0] == 0  # fmt: skip
    old = json.loads(run(capsys, "senders", "show", "rp", "--json")[1])["receiving_url"]
    assert old.startswith("https://hooks.example.com/smslistener/listen_type/sms_rapporto?sender=rp&token=")
    code, out, err = run(capsys, "senders", "rotate-token", "rp")
    assert code == 0, err
    new = json.loads(run(capsys, "senders", "show", "rp", "--json")[1])["receiving_url"]
    assert new != old
    assert len(new.partition("&token=")[2]) == 43
    assert new in out.replace("\n", "")
    assert old.partition("&token=")[2] not in out + err
    assert "old one stops working" in out
    assert SECRET not in out + err
    code, out, _ = run(capsys, "senders", "rotate-token", "rp", "--json")
    assert (code, json.loads(out)["id"]) == (0, "rp")
    assert json.loads(out)["receiving_url"] not in (old, new)
    code, _, err = run(capsys, "senders", "rotate-token", "nobody")
    assert (code, err.strip()) == (2, "smsfleet: error: no sender with id 'nobody'")


@pytest.mark.parametrize(
    ("token", "needle"),
    [("short", "5 characters long; use at least 32"), ("a" * 40, "made of 1 different characters")],
)
def test_a_weak_webhook_token_in_a_file_is_refused_in_one_line(
    env: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, token: str, needle: str
) -> None:
    path = tmp_path / "weak.json"
    path.write_text(json.dumps(sample_sender("infobip", webhook_token=token)))
    code, _, err = run(capsys, "senders", "create", "--file", str(path))
    assert code == 2
    assert err.startswith("smsfleet: error: sender 'infobip-1': webhook_token: the token ")
    assert needle in err
    assert err.count("\n") == 1
    assert token not in err


def test_markup_in_names_prints_literally(
    env: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, redis: aioredis.Redis
) -> None:
    """Issue 15, item 9: an account named `[/bold]` crashed `senders list` and `show` (Rich markup)."""
    del redis  # clean-up
    accounts = ["[/bold]", "[red]x", ":thumbs_up:", "[link=http://evil.test]y"]
    doc = sample_sender("infobip", "marked", accounts=accounts, verified_caller_ids=["[b]ACME"], stop_words=["[i]"])
    path = tmp_path / "marked.json"
    path.write_text(json.dumps(doc))
    code, out, err = run(capsys, "senders", "create", "--file", str(path))
    assert code == 0, err
    for argv in (["senders", "list"], ["senders", "show", "marked"]):
        code, out, err = run(capsys, *argv)
        assert code == 0, err
        for text in [*accounts, "[b]ACME"]:
            assert text in out, (argv, text, out)
    assert "[i]" in run(capsys, "senders", "show", "marked")[1]


def test_an_unreadable_record_is_named_listed_around_and_deletable(
    env: str, capsys: pytest.CaptureFixture[str], redis_url: str
) -> None:

    assert run(capsys, "senders", "create", "ok", "--gateway", "sandbox", "--account", "a")[0] == 0
    client = sync_redis.Redis.from_url(redis_url)
    try:
        client.hset(f"{env}:senders", "broken", b"GARBAGE-CONTENT")
        code, out, err = run(capsys, "senders", "list", "--json")
        assert (code, [s["id"] for s in json.loads(out)]) == (0, ["ok"])
        warning = "smsfleet: warning: sender 'broken': its stored record cannot be read: not a sender document"
        assert err == f"{warning} (DecodeError)\n"
        code, _, err = run(capsys, "senders", "show", "broken")
        assert code == 2
        assert err.count("\n") == 1
        assert "GARBAGE" not in err
        assert run(capsys, "senders", "delete", "broken")[0] == 0
        assert not client.hexists(f"{env}:senders", "broken")
    finally:
        client.delete(f"{env}:senders", f"{env}:senders:version", f"{env}:senders:names")
        client.close()


def test_names_from_the_command_line(env: str, capsys: pytest.CaptureFixture[str], redis: aioredis.Redis) -> None:
    del redis  # clean-up
    code, out, err = run(capsys, "senders", "create", "--name", "Infobip main (RU)", "--gateway", "sandbox",
                         "--account", "acme")  # fmt: skip
    assert code == 0, err
    assert "created sender infobip-main-ru 'Infobip main (RU)' (sandbox)" in out
    assert run(capsys, "senders", "create", "old-style", "--gateway", "sandbox", "--account", "acme")[0] == 0
    code, out, _ = run(capsys, "senders", "show", "infobip-main-ru")
    assert re.search(r"^name +Infobip main \(RU\) *$", out, re.MULTILINE), out
    code, out, _ = run(capsys, "senders", "list")
    header = out.splitlines()[1]
    assert header.index("id") < header.index("name") < header.index("gateway"), out
    assert re.search(r"infobip-main-ru +. Infobip main \(RU\) +. sandbox", out), out
    assert re.search(r"old-style +. old-style +. sandbox", out), out  # no name given: named after the id

    # a taken name, in other letters: one line naming the field, exit 2, nothing created
    code, _, err = run(capsys, "senders", "create", "other", "--name", "infobip MAIN (ru) ", "--gateway", "sandbox",
                       "--account", "acme")  # fmt: skip
    assert code == 2
    assert err == (
        "smsfleet: error: name: the name 'infobip MAIN (ru)' is taken by sender 'infobip-main-ru' (case is ignored)\n"
    )
    code, out, _ = run(capsys, "senders", "list", "--json")
    assert [(s["id"], s["name"]) for s in json.loads(out)] == [
        ("infobip-main-ru", "Infobip main (RU)"),
        ("old-style", "old-style"),
    ]

    # renamed with --name; the id stays; the old name is free again
    code, out, err = run(capsys, "senders", "update", "infobip-main-ru", "--name", "Рассылка АКМЕ", "--json")
    assert code == 0, err
    assert (json.loads(out)[0]["id"], json.loads(out)[0]["name"]) == ("infobip-main-ru", "Рассылка АКМЕ")
    code, _, err = run(capsys, "senders", "update", "old-style", "--name", "рассылка акме")
    assert code == 2
    assert "name: the name 'рассылка акме' is taken by sender 'infobip-main-ru'" in err
    assert err.count("\n") == 1
    code, out, err = run(capsys, "senders", "create", "--name", "Infobip main (RU)", "--gateway", "sandbox",
                         "--account", "acme", "--json")  # fmt: skip
    assert code == 0, err
    assert re.fullmatch(r"infobip-main-ru-[0-9a-f]{6}", json.loads(out)[0]["id"])  # that id was taken
