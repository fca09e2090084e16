"""Commands that run the fleet's moving parts (publish, workers, ...), registered onto the main parser."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["register_all"]


def register_all() -> list[Callable[[Any], None]]:
    return []
