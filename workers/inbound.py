"""The suppression worker: consumes inbound SMS (`<ns>.inbound`) and applies stop words (DESIGN §7.6).

Every inbound SMS is published to engines as an `inbound.<sender>` event. When its text is one of the
sender's stop words — compared case-insensitively, ignoring surrounding whitespace and punctuation, in any
script (`Stop!`, ` stop `, `СТОП.`) — the number is added to the suppression list of every account
assigned to the sender, and to the global list when the sender has `add_to_global_suppress`; a
`suppression.added` event says which. The send worker reads the same sets, so the very next job for that
number ends `suppressed`.
"""

from __future__ import annotations

import unicodedata

import msgspec
import structlog
from aio_pika.abc import AbstractIncomingMessage

from smsfleet.contracts import InboundEvent, InboundMessage, SuppressionEvent, encode, now

from .consumer import QueueConsumer
from .runtime import Runtime

__all__ = ["InboundWorker", "is_stop_word", "normalize_word"]

log = structlog.get_logger("smsfleet.workers.inbound")

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


def is_stop_word(text: str, stop_words: list[str]) -> bool:
    word = normalize_word(text)
    return bool(word) and any(word == normalize_word(w) for w in stop_words)


class InboundWorker(QueueConsumer):
    role = "suppression"

    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt, rt.names.inbound_queue)

    async def handle(self, msg: AbstractIncomingMessage) -> None:
        await self.handle_sms(_decoder.decode(msg.body))
        await msg.ack()

    async def handle_sms(self, sms: InboundMessage) -> None:
        sender = self.rt.senders.get(sms.sender)
        if sender is not None and is_stop_word(sms.text, sender.stop_words):
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
