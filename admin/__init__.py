"""The operators' senders admin: a JSON API and a web page, served by `smsfleet admin` (never public).

    build_app(AdminConfig(token), settings) -> aiohttp Application     serve(config, settings, host, port)

`admin.command.add_admin` registers the command. The application is imported on first use, so the CLI,
which imports this package to build its parser, stays quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import AdminConfig

if TYPE_CHECKING:
    from .app import build_app, serve

__all__ = ["AdminConfig", "build_app", "serve"]


def __getattr__(name: str) -> Any:
    if name in ("build_app", "serve"):
        from . import app  # noqa: PLC0415 - aiohttp and Jinja2 only when the admin is used

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
