"""Link shortening: the seed's "Shorten links in messages", for every sender that turns it on.

Each link in a job's text (found by linkify-it, the link finder of markdown-it: `https://…`, and bare
domains such as `acme.ru/sale` or `магазин.рф`; e-mail addresses are left alone) becomes
`$SMSFLEET_PUBLIC_URL/l/<code>`. The receiver answers that URL with a 302 to the link, and publishes a
`click.<sender>` event. Segments are counted on the shortened text, so a long link can save a part.

    <ns>:links:key      the namespace's secret for codes: random, made once (no TTL)
    <ns>:link:<code>    JSON {url, job_id, sender}: TTL 30 days

A code is 10 characters of base62 HMAC-SHA256(secret, job id, position, link): unguessable without the
secret (about 59 bits), and the same on every attempt of a job, so a redelivery writes the same keys again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

import msgspec
import redis.asyncio as aioredis
from linkify_it import LinkifyIt

from .contracts import SendJob
from .topology import Names

__all__ = ["CODE_LENGTH", "LINK_TTL_S", "Link", "Shortener", "find_links"]

LINK_TTL_S = 30 * 24 * 3600
CODE_LENGTH = 10
_ALPHABET = string.digits + string.ascii_letters
_FINDER = LinkifyIt()  # building it compiles its patterns: once per process


class Link(msgspec.Struct, frozen=True):
    url: str
    job_id: str
    sender: str


def find_links(text: str) -> list[tuple[int, int, str]]:
    """The links in `text`: (start, end, the URL to send the reader to), in order; no e-mail addresses."""
    if not _FINDER.test(text):
        return []
    return [(m.index, m.last_index, m.url) for m in _FINDER.match(text) or () if m.schema != "mailto:"]


def _code(key: bytes, job_id: str, position: int, url: str) -> str:
    digest = hmac.new(key, f"{job_id}\x1f{position}\x1f{url}".encode(), hashlib.sha256).digest()
    number, code = int.from_bytes(digest[:8], "big"), []
    for _ in range(CODE_LENGTH):
        number, digit = divmod(number, len(_ALPHABET))
        code.append(_ALPHABET[digit])
    return "".join(code)


class Shortener:
    """Shortens the links of jobs (send worker) and resolves codes (receiver), against one namespace's Redis."""

    def __init__(self, redis: aioredis.Redis, names: Names, public_url: str) -> None:
        self.redis = redis
        self.names = names
        self.base = public_url.rstrip("/") + "/l/"
        self._key: bytes | None = None

    async def secret(self) -> bytes:
        if self._key is None:
            key = self.names.redis_key("links", "key")
            await self.redis.set(key, secrets.token_hex(32), nx=True)
            stored = await self.redis.get(key)
            self._key = stored if isinstance(stored, bytes) else str(stored).encode()
        return self._key

    async def shorten(self, job: SendJob) -> SendJob:
        """`job` with each link of its text replaced by a short one (the same job when it has none)."""
        found = find_links(job.text)
        if not found:
            return job
        key = await self.secret()
        parts, last = [], 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for position, (start, end, url) in enumerate(found):
                code = _code(key, job.id, position, url)
                link = msgspec.json.encode(Link(url, job.id, job.sender))
                pipe.set(self.names.redis_key("link", code), link, ex=LINK_TTL_S)
                parts += [job.text[last:start], self.base + code]
                last = end
            await pipe.execute()
        return msgspec.structs.replace(job, text="".join([*parts, job.text[last:]]))

    async def resolve(self, code: str) -> Link | None:
        if len(code) != CODE_LENGTH or not all(ch in _ALPHABET for ch in code):
            return None
        raw = await self.redis.get(self.names.redis_key("link", code))
        return None if raw is None else msgspec.json.decode(raw, type=Link)
