"""`smsfleet suppress` on the real Redis: numbers normalised, per account or global, bulk from a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from cli import main


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, redis_url: str, namespace: str) -> str:
    monkeypatch.setenv("SMSFLEET_REDIS_URL", redis_url)
    monkeypatch.setenv("SMSFLEET_NAMESPACE", namespace)
    monkeypatch.setenv("SMSFLEET_DEFAULT_REGION", "RU")
    return namespace


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_add_check_list_remove(
    env: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, redis: aioredis.Redis
) -> None:
    del redis  # clean-up of the namespace's keys
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("# opted out\n+7 916 123-45-67\n89160000001\n\n")
    assert run(capsys, "suppress", "add", "--account", "acme", "--file", str(numbers), "--json")[1] == '{"added": 2}\n'
    assert run(capsys, "suppress", "add", "--global", "+79169999999")[0] == 0
    code, out, _ = run(capsys, "suppress", "list", "--account", "acme", "--json")
    assert json.loads(out) == ["+79160000001", "+79161234567"]
    assert run(capsys, "suppress", "check", "--account", "acme", "+79161234567", "+79169999999")[0] == 0
    code, out, _ = run(capsys, "suppress", "check", "--account", "other", "+79161234567", "--json")
    assert (code, json.loads(out)) == (1, {"+79161234567": False})
    assert run(capsys, "suppress", "remove", "--account", "acme", "89161234567")[1] == "removed: 1\n"
    assert json.loads(run(capsys, "suppress", "list", "--account", "acme", "--json")[1]) == ["+79160000001"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["suppress", "add", "+79161234567"], "--account"),
        (["suppress", "add", "--account", "a"], "at least one number"),
        (["suppress", "add", "--account", "a", "hello"], "not parseable"),
        (["suppress", "add", "--account", "a", "--file", "/nonexistent"], "cannot read"),
    ],
)
def test_mistakes(env: str, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1
