"""The sandbox gateway: a product feature that sends nothing and behaves like a well-run provider.

`send` waits `latency_ms`, fails with `Transient("sandbox.simulated")` for a random share `failure_rate` of
attempts, and otherwise accepts the message as `sbx-<hash of the job id>`. `status` delivers a fixed share
`delivered_rate` of job ids, chosen by hash, so a job always gets the same outcome however often it is asked.
`parse_callback` takes reports posted by hand, e.g. in a demo:
`{"id": "sbx-…", "state": "delivered"}` or a list of them (`job_id` may be given instead of or besides `id`),
and inbound SMS as `{"from": "+7916…", "to": "…", "text": "STOP"}`.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

import msgspec

from smsfleet.contracts import ErrorInfo, State
from smsfleet.kinds import SandboxSettings

from .base import Callback, CallbackRequest, Gateway, Inbound, Outgoing, Receipt, Report, StatusRef
from .errors import Transient

__all__ = ["GATEWAY", "SandboxGateway"]

_random = random.Random()


def _digest(job_id: str) -> bytes:
    return hashlib.sha256(job_id.encode()).digest()


def _provider_id(job_id: str) -> str:
    return f"sbx-{_digest(job_id).hex()[:12]}"


class SandboxGateway(Gateway[SandboxSettings]):
    kind = "sandbox"
    settings_type = SandboxSettings
    default_rate = 1000.0
    max_parts = 10
    has_status = True

    async def send(self, message: Outgoing) -> Receipt:
        await asyncio.sleep(self.settings.latency_ms / 1000)
        if _random.random() < self.settings.failure_rate:
            raise Transient("sandbox.simulated", "simulated transient failure")
        return Receipt(provider_message_id=_provider_id(message.job_id), parts=message.parts)

    async def status(self, ref: StatusRef) -> Report:
        share = int.from_bytes(_digest(ref.job_id)[8:16], "big") / 2**64  # uniform in [0, 1)
        delivered = share < self.settings.delivered_rate
        return Report(
            provider_message_id=ref.provider_message_id or _provider_id(ref.job_id),
            job_id=ref.job_id,
            state=State.DELIVERED if delivered else State.UNDELIVERED,
            error=None if delivered else ErrorInfo("sandbox.undelivered", "simulated undelivered"),
            raw_status="delivered" if delivered else "undelivered",
        )

    def parse_callback(self, request: CallbackRequest) -> Callback:
        try:
            data: Any = msgspec.json.decode(request.body)
        except msgspec.DecodeError:
            raise ValueError("sandbox callback is not JSON") from None
        items = data if isinstance(data, list) else [data]
        reports, inbound = [], []
        for item in items:
            if isinstance(item, dict) and {"from", "text"} <= item.keys():
                inbound.append(_inbound(item))
                continue
            if not isinstance(item, dict) or not (item.get("id") or item.get("job_id")):
                raise ValueError('sandbox callback needs {"id" or "job_id", "state"} or {"from", "text"} objects')
            try:
                state = State(str(item.get("state")))
            except ValueError:
                raise ValueError(f"unknown state {item.get('state')!r}") from None
            pid, job_id = item.get("id"), item.get("job_id")
            reports.append(
                Report(
                    provider_message_id=str(pid) if pid else None,
                    job_id=str(job_id) if job_id else None,
                    state=state if state.final else None,  # `accepted`: nothing new
                    raw_status=state.value,
                )
            )
        return Callback(reports=reports, inbound=inbound)


def _inbound(item: dict[str, Any]) -> Inbound:
    sender, text = item["from"], item["text"]
    if not isinstance(sender, str) or not isinstance(text, str):
        raise ValueError("inbound from and text must be strings")
    return Inbound(from_=sender, to=str(item.get("to") or ""), text=text, provider_message_id=item.get("id"))


GATEWAY = SandboxGateway
