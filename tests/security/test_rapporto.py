"""Rapporto's bare URL, tried as an attacker would: from 127.0.0.1, without credentials.

A forged STOP suppresses nobody (nothing reaches the inbound queue), a forged report carries no job id and no
sender, and the answer does not tell a caller whether a provider id is ours. The per-sender URL with its
token, and the bare URL from an allowed network, still work for the real Rapporto.
"""

from __future__ import annotations

import aio_pika
import pytest
import redis.asyncio as aioredis

from smsfleet.settings import Settings
from smsfleet.topology import Names
from tests.samples import sample_sender
from webhooks import Options, Receiver
from workers.ledger import Ledger

from .conftest import BARE, RAPPORTO, create, drain, path_of, receiving, settings_with

STOP = f"{BARE}?clientId=79161234567&message=STOP&shortNumber=svc-17"
RAPPORTO_NET = "203.0.113.0/24"
PROXY = "10.0.0.0/8"


async def test_a_forged_stop_is_refused_and_nothing_is_published(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractConnection
) -> None:
    await create(redis, names, RAPPORTO)
    async with receiving(Receiver(settings)) as client:  # no SMSFLEET_WEBHOOK_RAPPORTO_IPS: the default
        for request in (
            client.get(f"{BARE}?clientId=79161234567&message=STOP"),
            client.get(STOP),
            client.post(BARE, data={"clientId": "79161234567", "message": "STOP"}),
            client.post(BARE, json={"sourceAddr": "79161234567", "transactionId": "1", "message": "STOP"}),
            # X-Forwarded-For is believed from no one when no proxy is trusted
            client.get(STOP, headers={"X-Forwarded-For": "203.0.113.5"}),
        ):
            assert (await request).status == 403
    assert await drain(amqp, names.inbound_queue) == []
    assert await drain(amqp, names.status_queue) == []


async def test_an_allow_list_is_checked_against_the_real_client_behind_a_trusted_proxy(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractConnection
) -> None:
    await create(redis, names, RAPPORTO)
    receiver = Receiver(
        settings_with(settings, webhook_rapporto_ips=(RAPPORTO_NET,)),
        options=Options(trusted_proxies=("127.0.0.1/32", PROXY)),
    )
    async with receiving(receiver) as client:
        # the proxy appends the address it saw; a forged left-most hop is not looked at
        refused = {"X-Forwarded-For": "203.0.113.5, 198.51.100.9"}
        allowed = {"X-Forwarded-For": "198.51.100.9, 203.0.113.5, 10.1.2.3"}
        assert (await client.get(STOP, headers=refused)).status == 403
        assert (await client.get(STOP)).status == 403  # the proxy itself is no Rapporto address
        assert (await client.get(STOP, headers=allowed)).status == 204
    [sms] = await drain(amqp, names.inbound_queue)
    assert (sms["sender"], sms["from"], sms["text"]) == ("r1", "+79161234567", "STOP")

    async with receiving(Receiver(settings_with(settings, webhook_rapporto_ips=(RAPPORTO_NET,)))) as client:
        # no trusted proxy: the direct peer (127.0.0.1) is the client, whatever the header says
        assert (await client.get(STOP, headers={"X-Forwarded-For": "203.0.113.5"})).status == 403
    assert await drain(amqp, names.inbound_queue) == []


async def test_an_allowed_inbound_sms_is_credited_by_short_number_never_to_the_first_sender(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractConnection
) -> None:
    await create(redis, names, {**RAPPORTO, "id": "r0", "settings": {**RAPPORTO["settings"], "service_id": "svc-1"}})
    await create(redis, names, RAPPORTO)
    receiver = Receiver(settings_with(settings, webhook_rapporto_ips=("127.0.0.1",)))
    async with receiving(receiver) as client:
        assert (await client.get(STOP)).status == 204  # shortNumber svc-17: r1, although r0 comes first
        unknown = STOP.replace("svc-17", "svc-99")
        assert (await client.get(unknown)).status == 403  # two Rapporto senders, neither named: refused
    [sms] = await drain(amqp, names.inbound_queue)
    assert sms["sender"] == "r1"


async def test_a_forged_report_carries_no_job_id_and_gets_the_same_answer_for_any_id(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractConnection
) -> None:
    await create(redis, names, RAPPORTO)
    await redis.set(Ledger(redis, names).pid_key("r1", "777000111"), "victim-job")  # a provider id of ours
    async with receiving(Receiver(settings)) as client:
        answers = set()
        for pid in ("777000111", "404404404"):
            reply = await client.get(f"{BARE}?transactionId={pid}&status=5&partnerMsgId=victim-job")
            answers.add((reply.status, await reply.text(), reply.content_type))
        assert answers == {(200, "OK", "text/plain")}
    reports = await drain(amqp, names.status_queue)
    assert [r["provider_message_id"] for r in reports] == ["777000111", "404404404"]
    for report in reports:
        assert report.get("job_id") is None
        assert report["sender"] is None
    assert await drain(amqp, names.inbound_queue) == []


async def test_the_per_sender_url_authenticates_and_names_the_sender(
    settings: Settings, names: Names, redis: aioredis.Redis, amqp: aio_pika.abc.AbstractConnection
) -> None:
    sender = await create(redis, names, RAPPORTO)
    other = await create(redis, names, sample_sender("smsc"))
    url = path_of(sender)  # what `senders show` prints
    assert url.startswith(f"{BARE}?sender=r1&token=")
    async with receiving(Receiver(settings)) as client:
        for bad in (
            f"{BARE}?sender=r1&token=" + "x" * len(sender.webhook_token),
            f"{BARE}?sender=r1",
            f"{BARE}?token={sender.webhook_token}",
            f"{BARE}?sender={other.id}&token={other.webhook_token}",  # another kind's token
        ):
            assert (await client.get(f"{bad}&clientId=79161234567&message=STOP")).status == 401, bad
        assert (await client.get(f"{url}&clientId=79161234567&message=STOP")).status == 204
        assert (await client.get(f"{url}&transactionId=5&status=2&partnerMsgId=job-1")).status == 200
    [sms] = await drain(amqp, names.inbound_queue)
    assert sms["sender"] == "r1"
    [report] = await drain(amqp, names.status_queue)
    assert (report["sender"], report["job_id"], report["provider_message_id"]) == ("r1", "job-1", "5")


@pytest.mark.parametrize("ips", [("not-an-address",), ("10.0.0.0/33",)])
def test_a_bad_allow_list_fails_at_start(settings: Settings, ips: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="SMSFLEET_WEBHOOK_RAPPORTO_IPS"):
        Receiver(settings, rapporto_ips=ips)
