"""Several broker addresses and the Sentinel URL: what the settings accept, what logs show, how a connection
moves between nodes."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import SSLConnection

from smsfleet.connect import connect_amqp, redis_client
from smsfleet.settings import ConfigError, SentinelUrl, Settings, redact_url


def test_a_list_of_nodes_and_a_sentinel_url_are_read() -> None:
    env = {
        "SMSFLEET_AMQP_URL": "amqp://u:p@a:5672/, amqps://u:p@b/",
        "SMSFLEET_REDIS_URL": "redis+sentinel://:pw-s3cret@s1:26379,s2:26380/mymaster/2?sentinel_password=sp-s3cret",
        "SMSFLEET_QUORUM_GROUP_SIZE": "3",
        "SMSFLEET_QUEUE_LEADER_LOCATOR": "Balanced",
        "SMSFLEET_REDIS_WAIT_REPLICAS": "1",
    }
    settings = Settings.from_env(env)
    assert settings.amqp_urls == ("amqp://u:p@a:5672/", "amqps://u:p@b/")
    assert (settings.queue_limits.replicas, settings.queue_limits.leader_locator) == (3, "balanced")
    assert (settings.redis_wait_replicas, settings.redis_wait_timeout_ms) == (1, 1000)
    parsed = SentinelUrl.parse(settings.redis_url)
    assert parsed.sentinels == (("s1", 26379), ("s2", 26380))
    assert (parsed.service, parsed.db) == ("mymaster", 2)
    assert (parsed.password, parsed.sentinel_password) == ("pw-s3cret", "sp-s3cret")
    shown = repr(settings)
    assert "p@" not in shown
    assert "s3cret" not in shown


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("SMSFLEET_AMQP_URL", "amqp://u:secret@a/,http://b/", "'http://b/' is not an amqp://"),
        ("SMSFLEET_AMQP_URL", "amqp://u:secret@a:99999/", "'amqp://u:***@a:99999/' is not"),
        ("SMSFLEET_REDIS_URL", "redis+sentinel://:secret@s1/mymaster", "'s1' is not host:port"),
        ("SMSFLEET_REDIS_URL", "redis+sentinel://:secret@s1:26379/", "ends with /<service name>"),
        ("SMSFLEET_REDIS_URL", "http://u:secret@r/", "is not a redis://"),
        ("SMSFLEET_REDIS_WAIT_REPLICAS", "1.5", "SMSFLEET_REDIS_WAIT_REPLICAS must be a whole number"),
        ("SMSFLEET_QUEUE_LEADER_LOCATOR", "random", "must be balanced or client-local"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable_without_the_secret(name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({name: value})
    message = str(error.value)
    assert says in message
    assert name in message
    assert "secret" not in message
    assert "\n" not in message


def test_every_url_of_a_list_is_redacted() -> None:
    assert redact_url("amqp://u:a@x/,amqp://v:b@y:1/") == "amqp://u:***@x/,amqp://v:***@y:1/"
    assert redact_url("redis+sentinel://:pw@s1:1,s2:2/m/0?sentinel_password=sp") == (
        "redis+sentinel://:***@s1:1,s2:2/m/0?sentinel_password=***"
    )
    assert redact_url("redis://r:6379/0") == "redis://r:6379/0"


@pytest.mark.cluster
async def test_the_first_node_that_answers_then_the_next(cluster: object, amqp_url: str, redis_url: str) -> None:
    nodes = amqp_url.split(",")
    connection = await connect_amqp(",".join(["amqp://guest:guest@127.0.0.1:1/", *nodes[:2]]))
    try:
        assert str(connection.url.port) == nodes[0].split(":")[-1].strip("/")  # the dead first one skipped
        moved = [str(u.port) for u in connection.nodes]
        assert moved == [nodes[0].split(":")[-1].strip("/"), nodes[1].split(":")[-1].strip("/"), "1"]
    finally:
        await connection.close()
    client = redis_client(redis_url)
    try:
        assert (await client.info("replication"))["role"] == "master"  # the Sentinels named the primary
    finally:
        await client.aclose()


@pytest.mark.parametrize(("scheme", "tls"), [("redis+sentinel", False), ("rediss+sentinel", True)])
async def test_a_sentinel_url_connects_to_the_primary_over_tls_when_it_says_so(scheme: str, tls: bool) -> None:
    client = redis_client(f"{scheme}://s1:26379/mymaster/0")
    try:
        assert isinstance(client.connection_pool.make_connection(), SSLConnection) is tls
    finally:
        await client.aclose()
