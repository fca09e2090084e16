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
