"""A job's delivery record as operators read it: `smsfleet status`, the admin's job page and `/api/jobs/<id>`."""

from __future__ import annotations

import json
from typing import Any

from smsfleet.contracts import FINAL_STATES

from .ledger import Ledger

__all__ = ["job_summary"]


async def job_summary(ledger: Ledger, job_id: str) -> dict[str, Any] | None:
    """{job_id, state, final, phase, gateway, provider_ids, attempt, sender, history}, or None when Redis has no
    record of the job (never sent, or older than the record's 7 days). `history`: the recorded transitions,
    oldest first ({state, at, source, detail})."""
    record, history = await ledger.get(job_id), await ledger.history(job_id)
    if not record:
        return None
    job = json.loads(record["job"]) if "job" in record else {}
    state = record.get("state")
    return {
        "job_id": job_id,
        "state": state,
        "final": record.get("phase") == "final" and state in FINAL_STATES,
        "phase": record.get("phase"),
        "gateway": record.get("gateway"),
        "provider_ids": [p for p in record.get("pid", "").split(",") if p],
        "attempt": int(record.get("attempt") or 1),
        "sender": job.get("sender"),
        "history": history,
    }
