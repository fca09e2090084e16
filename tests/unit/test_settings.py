"""Settings read from the environment: numbers parsed and bounded, a clear error naming the variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cli import main
from smsfleet import settings as settings_module
from smsfleet.settings import VARIABLES, ConfigError, Settings


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert (settings.play_mobile_rate, settings.status_horizon_s, settings.rate_margin_s) == (49.0, 259200.0, 0.03)


def test_numbers_are_read_in_their_units() -> None:
    env = {
        "PLAY_MOBILE_LIMIT_REQUESTS_PER_SEC": "20",
        "SMSFLEET_STATUS_HORIZON_S": "60",
        "SMSFLEET_RATE_MARGIN_MS": "15",
    }
    settings = Settings.from_env(env)
    assert (settings.play_mobile_rate, settings.status_horizon_s, settings.rate_margin_s) == (20.0, 60.0, 0.015)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PLAY_MOBILE_LIMIT_REQUESTS_PER_SEC", "fast"),
        ("PLAY_MOBILE_LIMIT_REQUESTS_PER_SEC", "0"),
        ("SMSFLEET_STATUS_HORIZON_S", "-5"),
        ("SMSFLEET_RATE_MARGIN_MS", "1000"),
        ("SMSFLEET_RATE_MARGIN_MS", "nan"),
    ],
)
def test_a_bad_number_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_queue_bounds_default_and_read() -> None:
    limits = Settings.from_env({}).queue_limits
    assert (limits.work, limits.dead) == (1_000_000, 10_000_000)
    env = {"SMSFLEET_QUEUE_MAX_LENGTH": "0", "SMSFLEET_DEAD_QUEUE_MAX_LENGTH": "5_000"}
    limits = Settings.from_env(env).queue_limits
    assert (limits.work, limits.dead) == (0, 5000)


@pytest.mark.parametrize("value", ["-1", "1.5", "many", "1e6"])
@pytest.mark.parametrize("name", ["SMSFLEET_QUEUE_MAX_LENGTH", "SMSFLEET_DEAD_QUEUE_MAX_LENGTH"])
def test_a_bad_queue_bound_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{name} must be a whole number"):
        Settings.from_env({name: value})


@pytest.mark.parametrize("namespace", ["tëst", "a.b", "a b", "x" * 65, "١٢"])
def test_a_namespace_is_ascii_letters_digits_dash_underscore(namespace: str) -> None:
    with pytest.raises(ConfigError, match="SMSFLEET_NAMESPACE"):
        Settings.from_env({"SMSFLEET_NAMESPACE": namespace})


CONFIG = """
amqp_url = "amqp://u:p@rabbit:5672/"
namespace = "acme"
rate_margin_ms = 15
trusted_proxies = ["10.0.0.0/8", "192.168.0.0/16"]
PLAY_MOBILE_LIMIT_REQUESTS_PER_SEC = 20
"""


def test_a_configuration_file_under_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "smsfleet.toml"
    path.write_text(CONFIG)
    settings = Settings.from_env({"SMSFLEET_CONFIG": str(path), "SMSFLEET_NAMESPACE": "from-env"})
    assert settings.amqp_url == "amqp://u:p@rabbit:5672/"
    assert settings.namespace == "from-env"  # the environment wins
    assert (settings.rate_margin_s, settings.play_mobile_rate) == (0.015, 20)
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.168.0.0/16")
    assert Settings.from_env({}, config=path).namespace == "acme"  # `--config`


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("amqp_uri = 'x'", "unknown setting 'amqp_uri'"),
        ("rate_margin_ms = 'soon'", "rate_margin_ms must be milliseconds"),
        ("[senders]\nid = 'x'", "unknown setting 'senders'"),
        ("namespace = {a = 1}", "namespace must be a string"),
        ("namespace = ", "not a TOML file"),
    ],
)
def test_a_bad_configuration_file_is_one_error_naming_the_file_and_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "smsfleet.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        Settings.from_env({"SMSFLEET_CONFIG": str(path)})
    assert str(caught.value).startswith(str(path))


def test_a_missing_configuration_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Settings.from_env({}, config=tmp_path / "nowhere.toml")


def test_the_file_knows_every_variable_settings_reads() -> None:
    source = Path(settings_module.__file__).read_text(encoding="utf-8")
    read = set(re.findall(r'(?:get|number|count|listed)\("((?:SMSFLEET|PLAY_MOBILE)_[A-Z_]+)"', source))
    assert read == VARIABLES


def test_the_cli_takes_a_config_file_and_names_a_bad_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "smsfleet.toml"
    path.write_text("log_format = 'xml'\n")
    assert main(["--config", str(path), "gateways"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{path}: log_format must be json or console" in err
    path.write_text("log_format = 'json'\n")
    assert main(["--config", str(path), "gateways"]) == 0
