"""Provider adapters: one module per gateway kind, all behind `gateways.base.Gateway`.

`gateway_class(kind)` imports the kind's module on first use and returns its adapter class, so a worker
for one gateway never imports the other fourteen.
"""

from __future__ import annotations

import importlib

from smsfleet.kinds import KINDS

from .base import Callback, CallbackRequest, Gateway, Inbound, Outgoing, Receipt, Report, StatusRef
from .errors import Ambiguous, GatewayError, Permanent, RateLimited, Transient

__all__ = [
    "Ambiguous",
    "Callback",
    "CallbackRequest",
    "Gateway",
    "GatewayError",
    "Inbound",
    "Outgoing",
    "Permanent",
    "RateLimited",
    "Receipt",
    "Report",
    "StatusRef",
    "Transient",
    "available",
    "gateway_class",
]


def gateway_class(kind: str) -> type[Gateway]:  # type: ignore[type-arg]
    """The adapter class for `kind`. Raises LookupError for an unknown or not yet implemented kind."""
    if kind not in KINDS:
        raise LookupError(f"unknown gateway kind {kind!r}; known: {', '.join(KINDS)}")
    try:
        module = importlib.import_module(f"{__name__}.{kind}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{kind}":
            raise
        raise LookupError(f"gateway {kind!r} is not implemented yet") from None
    cls: type[Gateway] = module.GATEWAY  # type: ignore[type-arg]
    return cls


def available() -> dict[str, type[Gateway]]:  # type: ignore[type-arg]
    """Every kind whose adapter is implemented, by kind."""
    found = {}
    for kind in KINDS:
        try:
            found[kind] = gateway_class(kind)
        except LookupError:
            continue
    return found
