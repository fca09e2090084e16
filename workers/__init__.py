"""Consumers: the send worker (one per gateway queue), the status worker, the suppression worker, and what
they share (`consumer.QueueConsumer`: ack policy, draining, Redis pauses).

Others may use `run_workers`, `SendPolicy`, `SendWorker`, `StatusWorker`, `SuppressionWorker`, `Runtime` and
`RateLimiter`.
"""

from .process import run_workers
from .ratelimit import RateLimiter, RateLimitWait
from .runtime import Runtime
from .send import SendPolicy, SendWorker
from .status import StatusWorker
from .suppression import SuppressionWorker

__all__ = [
    "RateLimitWait",
    "RateLimiter",
    "Runtime",
    "SendPolicy",
    "SendWorker",
    "StatusWorker",
    "SuppressionWorker",
    "run_workers",
]
