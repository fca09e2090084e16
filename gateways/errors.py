"""What can go wrong when talking to a provider, as one small tree.

    GatewayError
     ├── Permanent        the provider refused this message for good        -> `rejected`, never retried
     ├── Transient        it did not take it, and trying later may work      -> delayed retry, then `failed`
     │    └── RateLimited(retry_after)   the provider asked us to slow down  -> the sender is slowed too
     └── Ambiguous        it may have taken it (timeout after sending, reset) -> reconcile, or the policy

Adapters translate their provider's codes into this tree in one place; workers branch on these classes
only. Messages never contain credentials: adapters build them from codes and provider texts.
"""

from __future__ import annotations

__all__ = ["Ambiguous", "GatewayError", "Permanent", "RateLimited", "Transient"]


class GatewayError(Exception):
    """`code` is short and stable (e.g. `smsc.7`, `http.503`); `message` is for humans."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message or code


class Permanent(GatewayError):
    pass


class Transient(GatewayError):
    pass


class RateLimited(Transient):
    def __init__(self, code: str, message: str = "", retry_after: float = 1.0) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after


class Ambiguous(GatewayError):
    pass
