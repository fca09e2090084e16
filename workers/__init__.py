"""Consumers: the send worker (one per gateway queue), the status worker, and what they share.

Others may use `run_workers`, `SendPolicy`, `SendWorker`, `StatusWorker`, `Runtime` and `RateLimiter`.
"""

from .inbound import InboundWorker
from .process import run_workers
from .ratelimit import RateLimiter, RateLimitWait
from .runtime import Runtime
from .send import SendPolicy, SendWorker
from .status import StatusWorker

__all__ = [
    "InboundWorker",
    "RateLimitWait",
    "RateLimiter",
    "Runtime",
    "SendPolicy",
    "SendWorker",
    "StatusWorker",
    "run_workers",
]
