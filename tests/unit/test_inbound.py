"""What subscribers and providers really send: stop words as subscribers write them, the provider's own flag
(Infobip's `keyword`), callback forms that public integrations of the same providers handle (Play Mobile's XML
inbound SMS, Infobip reports keyed on `groupName`), and an empty callback (answered, not refused)."""

from __future__ import annotations

import pytest

from gateways import CallbackRequest, Inbound
from gateways.infobip import InfobipGateway
from gateways.playmobile import PlaymobileGateway
from smsfleet.contracts import State
from smsfleet.kinds import InfobipSettings, PlaymobileSettings
from workers.suppression import is_stop_word

DEFAULT = ["STOP"]
RUSSIAN = ["STOP", "СТОП", "Отписаться"]

#: real-world replies: (text, stop words, a stop?)
REPLIES = [
    ("STOP", DEFAULT, True),
    ("stop", DEFAULT, True),
    ("Stop!", DEFAULT, True),
    ("  STOP.  ", DEFAULT, True),
    ("STOP ACME", DEFAULT, True),  # the keyword, then the brand, as short codes ask
    ("stop please", DEFAULT, True),
    ("Stop, thanks", DEFAULT, True),
    ("STOP\nSent from my phone", DEFAULT, True),
    ("Стоп", RUSSIAN, True),
    ("стоп, спасибо", RUSSIAN, True),
    ("СТОП!!!", RUSSIAN, True),
    ("отписаться от рассылки", RUSSIAN, True),
    ("«Стоп»", RUSSIAN, True),
    # not a stop: the word is not what the message says first, or it is another word
    ("Don't stop", DEFAULT, False),
    ("Please don't STOP sending", DEFAULT, False),
    ("STOPPED?", DEFAULT, False),  # a question about a stopped delivery, not a request
    ("stopwatch", DEFAULT, False),
    ("Стопка", RUSSIAN, False),
    ("Когда стоп?", RUSSIAN, False),
    ("", DEFAULT, False),
    ("!!!", DEFAULT, False),
    ("YES", DEFAULT, False),
]


@pytest.mark.parametrize(("text", "words", "stop"), REPLIES)
def test_replies_as_subscribers_write_them(text: str, words: list[str], stop: bool) -> None:
    assert is_stop_word(text, words) is stop


def test_the_providers_keyword_flags_a_stop() -> None:
    assert is_stop_word("whatever follows", DEFAULT, keyword="Stop")
    assert not is_stop_word("whatever follows", DEFAULT, keyword="INFO")
    assert not is_stop_word("hello", ["", "  "])  # blank stop words match nothing


def infobip() -> InfobipGateway:
    return InfobipGateway(InfobipSettings(url="https://x.api.infobip.com", api_token="t"), None)  # type: ignore[arg-type]


def push(body: bytes) -> CallbackRequest:
    return CallbackRequest(method="POST", query={}, headers={"Content-Type": "application/json"}, body=body)


def test_infobip_inbound_carries_its_keyword() -> None:
    body = b'{"results": [{"messageId": "m1", "from": "79161234567", "to": "447491163443", "text": "STOP ACME",'
    body += b' "cleanText": "ACME", "keyword": "STOP", "receivedAt": "2026-12-06T10:00:00.000+0000"}]}'
    [sms] = infobip().parse_callback(push(body)).inbound
    assert sms == Inbound(
        from_="+79161234567", to="+447491163443", text="STOP ACME", provider_message_id="m1", at=sms.at, keyword="STOP"
    )


def test_infobip_reports_keyed_on_group_name() -> None:
    body = b'{"results": [{"messageId": "m1", "to": "79161234567", "status": {"groupName": "DELIVERED", "id": 5}},'
    body += b' {"messageId": "m2", "status": {"groupName": "rejected", "name": "REJECTED_NETWORK"}}]}'
    first, second = infobip().parse_callback(push(body)).reports
    assert (first.state, first.to) == (State.DELIVERED, "+79161234567")
    assert second.state is State.REJECTED
    with pytest.raises(ValueError, match="groupName"):
        infobip().parse_callback(push(b'{"results": [{"messageId": "m3", "status": {"groupName": "SOMETHING"}}]}'))


def playmobile() -> PlaymobileGateway:
    return PlaymobileGateway(PlaymobileSettings(user_id="u", password="p"), None)  # type: ignore[arg-type]


PLAYMOBILE_INBOUND = """<?xml version="1.0" encoding="UTF-8"?>
<sms-request>
  <message id="2876410" msisdn="998901234567" submit-date="2026-12-06 10:00:00">
    <content type="text/plain">STOP</content>
  </message>
  <message id="2876411" msisdn="998907654321" submit-date="2026-12-06 10:00:05">
    <content type="text/plain">Стоп, спасибо</content>
  </message>
</sms-request>""".encode()


def test_playmobile_inbound_sms_come_as_xml() -> None:
    headers = {"Content-Type": "application/xml; charset=UTF-8"}
    callback = playmobile().parse_callback(
        CallbackRequest(method="POST", query={}, headers=headers, body=PLAYMOBILE_INBOUND)
    )
    assert [(sms.from_, sms.text, sms.provider_message_id) for sms in callback.inbound] == [
        ("+998901234567", "STOP", "2876410"),
        ("+998907654321", "Стоп, спасибо", "2876411"),
    ]
    assert callback.inbound[0].at is not None
    assert callback.reply_status == 200
    assert all(is_stop_word(sms.text, RUSSIAN) for sms in callback.inbound)


@pytest.mark.parametrize(
    "body",
    [
        b"<sms-request><message id='1'><content>STOP</content></message></sms-request>",  # no msisdn
        b"<other/>",
        b"<sms-request><message",
        b'<!DOCTYPE x [<!ENTITY a "aaaa">]><sms-request><message msisdn="1"><content>&a;</content></message>'
        b"</sms-request>",
    ],
)
def test_playmobile_xml_that_is_not_an_sms_request_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError, match="playmobile"):
        playmobile().parse_callback(CallbackRequest(method="POST", query={}, headers={}, body=body))


@pytest.mark.parametrize("body", [b'{"messages": []}', b"[]"])
def test_a_callback_with_no_messages_is_answered(body: bytes) -> None:
    callback = playmobile().parse_callback(push(body))
    assert (callback.reports, callback.inbound, callback.reply_status) == ([], (), 200)
