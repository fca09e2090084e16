"""The checks a job passes before anything is sent (DESIGN §7.1), each a small callable with one job.

A check takes the job and its sender and returns None (pass) or a `Verdict`: the final state and why.
`run_checks` runs them in the order given (the send worker's `SendWorker.checks`: DESIGN §7.1's order); the
first verdict wins. Checks that need I/O get it injected.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import msgspec

from smsfleet.contracts import ErrorInfo, SendJob, State, now
from smsfleet.segments import count
from smsfleet.senders import Sender
from smsfleet.suppression import SuppressionStore

__all__ = [
    "SUPPRESSED",
    "Check",
    "Verdict",
    "account_assigned",
    "not_expired",
    "not_suppressed",
    "run_checks",
    "segments_within",
    "verified_caller_id",
    "verified_phone",
]


class Verdict(msgspec.Struct, frozen=True):
    state: State
    code: str
    message: str

    @property
    def error(self) -> ErrorInfo:
        return ErrorInfo(self.code, self.message)


Check = Callable[[SendJob, Sender], Awaitable[Verdict | None]]


async def account_assigned(job: SendJob, sender: Sender) -> Verdict | None:
    if job.account in sender.accounts:
        return None
    return Verdict(State.REJECTED, "account_not_assigned", f"account {job.account!r} may not use this sender")


def not_expired(clock: Callable[[], datetime] = now) -> Check:
    async def check(job: SendJob, sender: Sender) -> Verdict | None:
        if job.valid_until is None or job.valid_until > clock():
            return None
        return Verdict(State.EXPIRED, "expired", f"valid_until {job.valid_until.isoformat()} has passed")

    return check


SUPPRESSED = Verdict(State.SUPPRESSED, "suppressed", "the number is on a suppression list")


def not_suppressed(store: SuppressionStore) -> Check:
    async def check(job: SendJob, sender: Sender) -> Verdict | None:
        return SUPPRESSED if await store.is_suppressed(job.account, job.to) else None

    return check


async def verified_phone(job: SendJob, sender: Sender) -> Verdict | None:
    if not sender.verified_phones or job.to in sender.verified_phones:
        return None
    return Verdict(State.REJECTED, "phone_not_verified", "the sender only sends to its verified phones")


async def verified_caller_id(job: SendJob, sender: Sender) -> Verdict | None:
    if not job.originator or not sender.verified_caller_ids or job.originator in sender.verified_caller_ids:
        return None
    return Verdict(
        State.REJECTED,
        "caller_id_not_verified",
        f"caller ID {job.originator!r} is not verified for this sender",
    )


def segments_within(provider_max: int) -> Check:
    async def check(job: SendJob, sender: Sender) -> Verdict | None:
        limit = getattr(sender.settings, "max_parts", None) or provider_max
        parts = count(job.text).parts
        if parts <= limit:
            return None
        return Verdict(State.REJECTED, "too_many_parts", f"the text needs {parts} parts; the limit is {limit}")

    return check


async def run_checks(checks: Sequence[Check], job: SendJob, sender: Sender) -> Verdict | None:
    for check in checks:
        verdict = await check(job, sender)
        if verdict is not None:
            return verdict
    return None
