"""The aiohttp receiver of provider callbacks: `build_app(Receiver(settings))`, or `serve(settings, ...)`."""

from .app import MAX_BODY, Receiver, build_app
from .serve import serve

__all__ = ["MAX_BODY", "Receiver", "build_app", "serve"]
