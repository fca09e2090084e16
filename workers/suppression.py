"""The suppression worker: consumes inbound SMS (`<ns>.inbound`) and applies stop words (DESIGN §7.6).

Every inbound SMS is published to engines as an `inbound.<sender>` event. When it asks to stop (`is_stop_word`:
its text is one of the sender's stop words or starts with one as its first word — compared case-insensitively,
ignoring surrounding whitespace and punctuation, in any script: `Stop!`, ` stop `, `СТОП.`, `STOP ACME`,
`Стоп, спасибо` — or the provider flagged it with one), the number is added to the suppression list of every account
assigned to the sender, and to the global list when the sender has `add_to_global_suppress`; a
`suppression.added` event says which. The send worker reads the same sets, so the very next job for that
number ends `suppressed`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import msgspec
import structlog
from aio_pika.abc import AbstractIncomingMessage

from smsfleet.contracts import InboundEvent, InboundMessage, SuppressionEvent, encode, now

from .consumer import QueueConsumer, ack
from .runtime import Runtime

__all__ = ["SuppressionWorker", "is_stop_word", "normalize_word"]

log = structlog.get_logger("smsfleet.workers.suppression")

_decoder = msgspec.json.Decoder(InboundMessage)


def _is_edge(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch)[0] in "PSZC"


def normalize_word(text: str) -> str:
    """Casefolded, without surrounding whitespace and punctuation, inner whitespace collapsed."""
    start, end = 0, len(text)
    while start < end and _is_edge(text[start]):
        start += 1
    while end > start and _is_edge(text[end - 1]):
        end -= 1
    return " ".join(text[start:end].split()).casefold()


def is_stop_word(text: str, stop_words: Sequence[str], keyword: str | None = None) -> bool:
    """Whether an SMS asks to stop: ignoring case, punctuation and surrounding space, the text is a stop word or
    starts with one as its first word(s) ("STOP", "Stop!", "STOP ACME", "Стоп, спасибо"), or the provider
    flagged it with one (Infobip's `keyword`). A word that merely begins like one ("STOPPED", "stopka") or a
    stop word later in the text ("Don't stop") is no stop: a subscriber who wants out writes it first."""
    said, flagged = normalize_word(text), normalize_word(keyword or "")
    for stop in filter(None, map(normalize_word, stop_words)):
        if stop in (said, flagged):
            return True
        if said.startswith(stop) and not said[len(stop)].isalnum():
            return True
    return False


class SuppressionWorker(QueueConsumer):
    role = "suppression"

    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt, rt.names.inbound_queue)

    async def handle(self, msg: AbstractIncomingMessage) -> None:
        await self.handle_sms(_decoder.decode(msg.body))
        await ack(msg)

    async def handle_sms(self, sms: InboundMessage) -> None:
        sender = self.rt.senders.get(sms.sender)
        if sender is not None and is_stop_word(sms.text, sender.stop_words, sms.keyword):
            accounts: list[str | None] = [*sender.accounts]
            if sender.add_to_global_suppress:
                accounts.append(None)
            await self.rt.suppression.add([sms.from_], accounts)
            event = SuppressionEvent(
                number=sms.from_, accounts=sender.accounts, global_=sender.add_to_global_suppress,
                sender=sender.id, inbound_id=sms.id, at=now(),
            )  # fmt: skip
            await self.rt.publish(self.rt.names.events_exchange, encode(event), event.routing_key, mandatory=False)
            log.info("suppression.added", sender=sender.id, accounts=len(sender.accounts))
        inbound = InboundEvent(
            id=sms.id, sender=sms.sender, gateway=sms.gateway, from_=sms.from_, to=sms.to, text=sms.text,
            at=sms.at, provider_message_id=sms.provider_message_id,
        )  # fmt: skip
        await self.rt.publish(self.rt.names.events_exchange, encode(inbound), inbound.routing_key, mandatory=False)
