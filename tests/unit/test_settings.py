"""Settings read from the environment: numbers parsed and bounded, a clear error naming the variable."""

from __future__ import annotations

import pytest

from smsfleet.settings import ConfigError, Settings


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
