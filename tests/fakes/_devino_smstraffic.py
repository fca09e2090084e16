"""The request record the Devino and SMS Traffic fakes share; their server and faults are `FakeProvider`'s
(tests/fakes/_base.py). Each handler records the request, then awaits `faults(request)`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["Seen"]


@dataclasses.dataclass
class Seen:
    """One request as the fake received it: query and form fields merged, or the JSON body."""

    method: str
    path: str
    params: dict[str, str]
    headers: Mapping[str, str]
    json: Any = None
