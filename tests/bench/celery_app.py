"""The Celery side of the Celery peer benchmark (`celery_peer`): SMS sending as a team would write it with Celery.

    celery -A tests.bench.celery_app worker --pool prefork --concurrency C --prefetch-multiplier 1 -Q <queue>

One task per SMS: it POSTs SMSC's send form (`login`, `psw`, `fmt=3`, `charset`, `phones`, `mes`) with a
`requests.Session` of its pool process, parses the JSON reply, and raises on an error reply or an HTTP failure
for `autoretry_for` to retry with backoff. Late acks, a worker lost = the message rejected (and redelivered), a
prefetch of one, no result backend (fire-and-forget sends). Remote control is off so that a worker uses no queue
or exchange but its own.

This module imports only what such a worker needs (no bench code), so that its pool processes are the size a
team's would be. Its configuration comes from the environment, read once at import (`Config.from_env`); the
bench sets it for each worker it starts (`Config.env`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Self

import requests
from celery import Celery, signals

__all__ = ["CONFIG", "READY", "SETTINGS", "TASK", "Config", "app", "make_app"]

TASK = "smsfleet_bench.send_sms"
#: the delivery settings under test
SETTINGS: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "task_ignore_result": True,
}
#: a team's retry policy: transport errors and SMSC error replies, exponential backoff with jitter
RETRY: dict[str, Any] = {"retry_backoff": True, "retry_backoff_max": 60, "retry_jitter": True, "max_retries": 5}
READY, RETRYING = "celery-peer: worker ready", "celery-peer: retrying"  # printed to the worker's log
_ENV = "CELERY_PEER_"


@dataclasses.dataclass(frozen=True)
class Config:
    broker: str = "amqp://guest:guest@127.0.0.1:5672/"
    queue: str = "celery"
    smsc_url: str = ""
    smsc_login: str = ""
    smsc_password: str = ""

    @classmethod
    def from_env(cls) -> Self:
        fields = (f.name for f in dataclasses.fields(cls))
        return cls(**{name: os.environ[_ENV + name.upper()] for name in fields if _ENV + name.upper() in os.environ})

    def env(self) -> dict[str, str]:
        return {_ENV + name.upper(): value for name, value in dataclasses.asdict(self).items()}


CONFIG = Config.from_env()


class SmscError(Exception):
    """SMSC answered `{"error": ..., "error_code": N}`."""


@functools.cache
def http() -> requests.Session:
    """This pool process's Session (made on its first task, after the fork), so connections are kept alive."""
    return requests.Session()


def send_sms(job: dict[str, Any]) -> int:
    """POST the job to SMSC's send.php; SMSC's message id. Raises for Celery to retry."""
    form = {"login": CONFIG.smsc_login, "psw": CONFIG.smsc_password, "fmt": "3", "charset": "utf-8",
            "phones": job["to"], "mes": job["text"]}  # fmt: skip
    response = http().post(CONFIG.smsc_url + "/sys/send.php", data=form, timeout=(5, 30))
    response.raise_for_status()
    reply = response.json()
    if "error" in reply:
        raise SmscError(reply)
    return int(reply["id"])


# for the bench: when the worker is ready, and why a task was retried (Celery logs that at INFO only);
# Celery sends what a worker prints to its log
def _announce_ready(**_: object) -> None:
    print(READY, flush=True)


def _report_retry(request: Any, reason: object, **_: object) -> None:
    print(f"{RETRYING} {request.id}: {reason!r}", flush=True)


def make_app(config: Config) -> Celery:
    app = Celery("smsfleet_celery_peer", broker=config.broker)
    app.conf.update(SETTINGS, task_default_queue=config.queue, worker_enable_remote_control=False,
                    broker_connection_retry_on_startup=True)  # fmt: skip
    app.task(name=TASK, autoretry_for=(requests.RequestException, SmscError), **RETRY)(send_sms)
    signals.worker_ready.connect(_announce_ready, weak=False)
    signals.task_retry.connect(_report_retry, weak=False)
    return app


app = make_app(CONFIG)
