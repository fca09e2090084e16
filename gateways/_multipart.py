"""Status of a message the provider split into parts, each with its own id (Devino's classic API, SMS Traffic).

Such a provider answers a send with one id per part, and reports each part on its own. The job has one state,
so the parts' reports are combined by one rule:

- the first part (in send order) whose state is final and not `delivered` decides: the message failed as that
  part did (`undelivered`, `expired`, `rejected` or `unknown`);
- else the message is `delivered` when every part is;
- else it is not final yet (None).

`segment_ids(ref)` gives every id of the message a lookup should follow. `StatusRef` carries one id today; a
`provider_ids` field (every id of the receipt) is read when present, so the adapters follow all parts as soon
as the status worker passes them (see the report that introduced this module).
"""

from __future__ import annotations

from collections.abc import Sequence

from smsfleet.contracts import State

from .base import Report, StatusRef

__all__ = ["combine", "segment_ids"]


def segment_ids(ref: StatusRef) -> tuple[str, ...]:
    """Every provider id of the message `ref` names, in send order; () when it names none."""
    ids = tuple(i for i in ref.provider_ids if i)
    if ids:
        return ids
    return (ref.provider_message_id,) if ref.provider_message_id else ()


def combine(parts: Sequence[Report], provider_message_id: str | None, job_id: str | None = None) -> Report:
    """One report for the whole message from its parts' reports (the rule in the module doc)."""
    raw = ",".join(p.raw_status for p in parts)
    failed = next((p for p in parts if p.state not in (None, State.DELIVERED)), None)
    at = max((p.at for p in parts if p.at is not None), default=None)  # the latest news of any part
    if failed is not None:
        state, error, at = failed.state, failed.error, failed.at
    elif parts and all(p.state is State.DELIVERED for p in parts):
        state, error = State.DELIVERED, None
    else:
        state, error = None, None
    return Report(
        provider_message_id=provider_message_id,
        state=state,
        job_id=job_id,
        at=at,
        error=error,
        raw_status=raw,
    )
