"""The aiohttp receiver of provider callbacks: `build_app(Receiver(settings))`, or `serve(settings, ...)`."""

from .app import MAX_BODY, SERVER_OPTIONS, Receiver, build_app
from .guard import Options
from .serve import serve

__all__ = ["MAX_BODY", "SERVER_OPTIONS", "Options", "Receiver", "build_app", "serve"]
