"""Senders: one configured provider account each (DESIGN §6), and their registry in Redis.

A sender document has the same shape everywhere — in Redis (secrets aside), in `--json` output, in the
admin API and in the files `smsfleet senders create|update --file` reads:

    {"id": "acme-smsc", "name": "ACME via SMSC", "gateway": "smsc", "accounts": ["acme"], "settings": {...},
     "verified_caller_ids": [], "verified_phones": [], "stop_words": ["STOP"],
     "add_to_global_suppress": false, "rate_limit": null}

Secrets (the settings marked secret in `kinds`, and the webhook token) are encrypted with Fernet when
SMSFLEET_SECRET_KEY is set, shown as `********` everywhere else, and kept when an update leaves them blank
or masked. The webhook token is never shown on its own: it is part of the sender's receiving URL, which is
what `senders show` and the admin print. It is generated (256 bits) at creation and by `rotate_token`; a
token given by a person must pass `weak_token`.

Ids and names: the id is the immutable key (routing keys, URLs); the name is what people read and edit:
1–100 characters of any script, unique ignoring case and surrounding spaces (`name_key`). A document
without an id gets one made from its name (`slug`: "Infobip main (RU)" -> `infobip-main-ru`, with a short
random suffix when that id is taken or the name has no letter to make it from). A stored document without
a name (written before names existed) reads as name = id. Uniqueness is enforced by the registry in one
optimistic transaction (WATCH/MULTI) over the sender hash and the name index `<ns>:senders:names`
(normalised name -> id), written together with the record and the version bump: of two concurrent writes
of one name, exactly one wins and the other gets `SenderConflict` on `name`. Records stored before the
index existed are indexed by the next write (their name: the stored one, else the id).

Change notification: every write bumps `<ns>:senders:version` and publishes the sender id on
`<ns>:senders:changed` in the same transaction. `SenderCache` (in every running process) reloads a
sender on that message, and compares the version every few seconds as a safety net for missed messages.
A stored record that does not decode (`UnreadableSender`) is skipped by the cache, logged once per
version of the record, and never stops it following.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import secrets
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

import msgspec
import redis.asyncio as aioredis
import structlog
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from redis.exceptions import RedisError, WatchError

from .contracts import InvalidJob, normalize_phone
from .kinds import KIND_SETTINGS, PATTERN_MESSAGES, KindSettings, secret_fields
from .topology import Names

__all__ = [
    "MASK",
    "MIN_TOKEN_DISTINCT",
    "MIN_TOKEN_LENGTH",
    "Cipher",
    "Sender",
    "SenderCache",
    "SenderConflict",
    "SenderError",
    "SenderRegistry",
    "UnreadableSender",
    "name_key",
    "new_token",
    "open_registry",
    "parse_sender",
    "receiving_url",
    "sender_doc",
    "slug",
    "weak_token",
]

MASK = "********"
_ENC_PREFIX = "fernet:"

log = structlog.get_logger("smsfleet.senders")

#: the rule of a person-chosen token (webhook or admin): long, and not made of a few characters repeated
MIN_TOKEN_LENGTH = 32
MIN_TOKEN_DISTINCT = 10
_URL_TOKEN = re.compile(r"[A-Za-z0-9._~-]{1,256}")

SenderId = Annotated[
    str,
    msgspec.Meta(
        # msgspec searches (re.search): `\A`/`\Z`, because `$` also matches before a final newline ("nl\n")
        pattern=r"\A[A-Za-z0-9_-]{1,64}\Z",
        description="letters, digits, - and _ (it is part of AMQP routing keys and URLs)",
    ),
]


class SenderError(ValueError):
    """A sender document is not acceptable. `field` names the offending field (`settings.login`...)."""

    def __init__(self, field: str, message: str, sender_id: str | None = None) -> None:
        where = f"sender {sender_id!r}: " if sender_id else ""
        super().__init__(f"{where}{field}: {message}" if field else f"{where}{message}")
        self.field = field
        self.message = message


class SenderConflict(SenderError):
    """The id or the name is another sender's (the API answers 409)."""


#: the longest name, in characters after stripping
MAX_NAME = 100
#: the suffix added to a generated id that is taken (or made of nothing): `-` and 6 hex digits
_SUFFIX_LEN = 7


def name_key(name: str) -> str:
    """The form of a name that uniqueness compares: surrounding spaces stripped, casefolded, NFKC-normalised
    (so "Infobip main (RU)" and "infobip MAIN (ru) " are one name, and so are composed and decomposed é)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold()).strip()


def _check_name(name: str) -> str:
    """`name` stripped, or SenderError on `name`."""
    name = name.strip()
    if not name:
        raise SenderError("name", "this field is required: 1 to 100 characters, any script")
    if len(name) > MAX_NAME:
        raise SenderError("name", f"use at most {MAX_NAME} characters (this one has {len(name)})")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise SenderError("name", "must be one line of text, without control characters")
    return name


#: Cyrillic letters (Russian, Ukrainian, Belarusian, Uzbek) in Latin letters, for ids made from names
_TRANSLIT = str.maketrans("абвгдеёзийклмнопрстуфыэіўғқҳґ", "abvgdeeziyklmnoprstufyeiugqhg", "ъь") | str.maketrans(
    {"ж": "zh", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch", "ю": "yu", "я": "ya", "ї": "yi", "є": "ye"}
)


def slug(name: str) -> str:
    """An id made from a name: lower-case ASCII letters and digits, `-` and `_` (Cyrillic transliterated,
    accents dropped, anything else a `-`), at most 64 characters; "" when nothing is left."""
    text = unicodedata.normalize("NFKD", name.casefold().translate(_TRANSLIT))
    text = text.encode("ascii", "ignore").decode()
    text = re.sub(r"[^a-z0-9_]+", "-", text).strip("-_")
    return text[:64].rstrip("-_")


def _suffixed(base: str) -> str:
    """`base` with a short random suffix: for a generated id that is taken, or empty."""
    base = base[: 64 - _SUFFIX_LEN].rstrip("-_") or "sender"
    return f"{base}-{secrets.token_hex(3)}"


class Sender(msgspec.Struct, frozen=True, kw_only=True):
    id: SenderId
    #: the seed's unique Name; a stored document without one reads as name = id
    name: str = ""
    gateway: str
    accounts: Annotated[list[str], msgspec.Meta(min_length=1)]
    settings: KindSettings
    verified_caller_ids: list[str] = []
    verified_phones: list[str] = []
    stop_words: list[str] = msgspec.field(default_factory=lambda: ["STOP"])
    add_to_global_suppress: bool = False
    rate_limit: Annotated[float, msgspec.Meta(gt=0)] | None = None
    webhook_token: str = ""
    #: links in the text are replaced by `$SMSFLEET_PUBLIC_URL/l/<code>`, and each click is an event
    shorten_links: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            msgspec.structs.force_setattr(self, "name", self.id)

    def __repr__(self) -> str:
        shown = (
            f"id={self.id!r}, name={self.name!r}, gateway={self.gateway!r}, accounts={self.accounts!r}, "
            f"settings={self.settings!r}"
        )
        return f"Sender({shown})"


class _Doc(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A sender as written by a person: settings still untyped. The id may be left out when a name is given."""

    id: SenderId | None = None
    name: str | None = None
    gateway: str
    accounts: Annotated[list[Annotated[str, msgspec.Meta(min_length=1)]], msgspec.Meta(min_length=1)]
    settings: dict[str, Any] = {}
    verified_caller_ids: list[str] = []
    verified_phones: list[str] = []
    stop_words: list[Annotated[str, msgspec.Meta(min_length=1)]] = msgspec.field(default_factory=lambda: ["STOP"])
    add_to_global_suppress: bool = False
    rate_limit: Annotated[float, msgspec.Meta(gt=0)] | None = None
    webhook_token: str = ""
    shorten_links: bool = False
    receiving_url: str | None = None  # shown in output; ignored on input so output can be fed back


class Cipher:
    """Fernet encryption of secrets at rest. Several comma-separated keys: the first encrypts, all decrypt."""

    def __init__(self, keys: str) -> None:
        try:
            self._fernet = MultiFernet([Fernet(k.strip()) for k in keys.split(",") if k.strip()])
        except ValueError:
            raise ValueError(
                "SMSFLEET_SECRET_KEY must be a Fernet key (32 url-safe base64-encoded bytes); make one with: "
                "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
            ) from None

    def encrypt(self, value: str) -> str:
        return _ENC_PREFIX + self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, value: str) -> str:
        try:
            return self._fernet.decrypt(value.removeprefix(_ENC_PREFIX).encode()).decode()
        except InvalidToken:
            raise SecretKeyError("a stored secret does not decrypt with SMSFLEET_SECRET_KEY") from None


class SecretKeyError(ValueError):
    """This process cannot read stored secrets: SMSFLEET_SECRET_KEY is missing or is not the key they need."""


class UnreadableSender(ValueError):
    """A sender record in Redis that does not decode. The message never quotes the record."""

    def __init__(self, sender_id: str, reason: str, record: bytes, *, key_problem: bool = False) -> None:
        super().__init__(f"sender {sender_id!r}: its stored record cannot be read: {reason}")
        self.sender_id = sender_id
        self.reason = reason
        #: the record may be fine: this process lacks the key (a configuration mistake, not a bad record)
        self.key_problem = key_problem
        #: tells one write of the record from the next (kept in memory, never logged)
        self.version = hashlib.blake2b(record, digest_size=16).digest()


def weak_token(token: str, *, url: bool = True) -> str | None:
    """Why `token` may not authenticate anything (too short, too few different characters, or, with `url`,
    characters a URL would mangle), or None when it will do. Never quotes the token."""
    if len(token) < MIN_TOKEN_LENGTH:
        return f"is {len(token)} characters long; use at least {MIN_TOKEN_LENGTH}"
    if len(set(token)) < MIN_TOKEN_DISTINCT:
        return (
            f"is made of {len(set(token))} different characters; use a random one with at least "
            f"{MIN_TOKEN_DISTINCT} different characters"
        )
    if url and not _URL_TOKEN.fullmatch(token):
        return "goes into the receiving URL: use letters, digits, -, _, . and ~ only, at most 256 of them"
    return None


def new_token() -> str:
    """A webhook token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def _field_of(exc: msgspec.ValidationError, prefix: str = "") -> tuple[str, str]:
    text = str(exc)
    message, _, path = text.partition(" - at `$")
    field = path.rstrip("`").lstrip(".")
    if "matching regex" in message and field == "id":
        message = "use 1 to 64 letters, digits, - or _ (the id is part of routing keys and URLs)"
    elif "matching regex" in message:
        message = next((said for p, said in PATTERN_MESSAGES.items() if repr(p)[1:-1] in message), message)
    if not field and message.startswith("Object missing required field `"):
        field = message.split("`")[1]
    if not field and "Object contains unknown field `" in message:
        field = message.split("`")[1]
    return (f"{prefix}{field}" if field else prefix.rstrip(".")), message


def _name_of(raw: _Doc, existing: Sender | None) -> str:
    if raw.name is not None:
        return _check_name(raw.name)
    if existing is not None:
        return existing.name
    if raw.id is not None:
        return raw.id
    raise SenderError("name", "this field is required: give a name (the id is made from it) or an id")


def parse_sender(
    doc: Mapping[str, Any], *, existing: Sender | None = None, default_region: str | None = None
) -> Sender:
    """Validate a sender document. Secrets left blank or masked keep their value from `existing`.

    The name is stripped; left out, it is `existing`'s, else the id. The id, left out, is made from the name
    (`slug`; `_suffixed` when that gives nothing): `SenderRegistry.create(..., id_given=False)` then adds a
    suffix to it, instead of refusing it, when it is taken.
    """
    if doc.get("id") == "":  # a blank id is no id: made from the name
        doc = {k: v for k, v in doc.items() if k != "id"}
    sender_id = doc.get("id") if isinstance(doc.get("id"), str) else None
    try:
        raw = msgspec.convert(doc, _Doc)
    except msgspec.ValidationError as exc:
        raise SenderError(*_field_of(exc), sender_id=sender_id) from None
    sender_name = _name_of(raw, existing)
    sender_id = raw.id or slug(sender_name) or _suffixed("")
    cls = KIND_SETTINGS.get(raw.gateway)
    if cls is None:
        raise SenderError("gateway", f"unknown gateway {raw.gateway!r}; known: {', '.join(KIND_SETTINGS)}", raw.id)
    values = {k: v for k, v in raw.settings.items() if v is not None and v != ""}
    if existing is not None and existing.gateway == raw.gateway:
        for name in secret_fields(cls):
            if values.get(name) in (None, MASK):
                old = getattr(existing.settings, name)
                if old is not None:
                    values[name] = old
    if any(v == MASK for v in values.values()):
        raise SenderError("settings", f"{MASK} stands for a hidden secret; give the real value", raw.id)
    try:
        settings = msgspec.convert(values, cls, strict=False)  # flags and forms give strings
    except msgspec.ValidationError as exc:
        raise SenderError(*_field_of(exc, "settings."), sender_id=raw.id) from None
    try:
        phones = [normalize_phone(p, default_region) for p in raw.verified_phones]
    except InvalidJob as exc:
        raise SenderError("verified_phones", exc.message, raw.id) from None
    token = raw.webhook_token
    if token and (existing is None or token != existing.webhook_token) and (problem := weak_token(token)):
        raise SenderError("webhook_token", f"the token {problem}; or leave it out to have one generated", raw.id)
    token = token or (existing.webhook_token if existing else "") or new_token()
    return Sender(
        id=sender_id,
        name=sender_name,
        gateway=raw.gateway,
        accounts=list(dict.fromkeys(raw.accounts)),
        settings=settings,
        verified_caller_ids=raw.verified_caller_ids,
        verified_phones=phones,
        stop_words=raw.stop_words,
        add_to_global_suppress=raw.add_to_global_suppress,
        rate_limit=raw.rate_limit,
        webhook_token=token,
        # the seed's Seven Tech form has the option among its settings: it means the same
        shorten_links=raw.shorten_links or bool(getattr(settings, "shorten_links", False)),
    )


def receiving_url(sender: Sender, public_url: str) -> str | None:
    """The SMS Receiving URL to give the provider (DESIGN §8), or None when the kind pushes nothing."""
    cls = type(sender.settings)
    if not cls.callbacks:
        return None
    base = f"{public_url.rstrip('/')}/smslistener/listen_type/sms_{sender.gateway}"
    return f"{base}?sender={sender.id}&token={sender.webhook_token}"


def sender_doc(
    sender: Sender, *, public_url: str | None = None, secrets_as: str = "mask", cipher: Cipher | None = None
) -> dict[str, Any]:
    """The sender document. `secrets_as`: `mask` for any output, `store` for Redis (encrypted with a key)."""
    doc: dict[str, Any] = msgspec.to_builtins(sender)
    settings = doc["settings"]
    for name in secret_fields(type(sender.settings)):
        value = settings.get(name)
        if value is None:
            continue
        if secrets_as == "mask":
            settings[name] = MASK
        elif cipher is not None:
            settings[name] = cipher.encrypt(value)
    if secrets_as == "mask":
        del doc["webhook_token"]
        if public_url is not None:
            doc["receiving_url"] = receiving_url(sender, public_url)
    elif secrets_as == "store" and cipher is not None and sender.webhook_token:
        doc["webhook_token"] = cipher.encrypt(sender.webhook_token)
    return doc


def _decrypted(value: Any, cipher: Cipher | None) -> Any:
    if not (isinstance(value, str) and value.startswith(_ENC_PREFIX)):
        return value
    if cipher is None:
        raise SecretKeyError("it has encrypted secrets but SMSFLEET_SECRET_KEY is not set")
    return cipher.decrypt(value)


def _decode_stored(sender_id: str, data: bytes | str, cipher: Cipher | None) -> Sender:
    """The sender stored under `sender_id`, or UnreadableSender (saying why in our words, never the record's)."""
    record = data.encode() if isinstance(data, str) else data
    try:
        doc = msgspec.json.decode(record)
        cls = KIND_SETTINGS[doc["gateway"]]
        settings = doc.pop("settings")
        for name in secret_fields(cls) & settings.keys():
            settings[name] = _decrypted(settings[name], cipher)
        doc["webhook_token"] = _decrypted(doc.get("webhook_token", ""), cipher)
        sender = msgspec.structs.replace(
            msgspec.convert({**doc, "settings": {}}, Sender), settings=msgspec.convert(settings, cls)
        )
    except SecretKeyError as exc:
        raise UnreadableSender(sender_id, str(exc), record, key_problem=True) from None
    except (msgspec.MsgspecError, LookupError, TypeError, AttributeError, ValueError) as exc:
        raise UnreadableSender(sender_id, f"not a sender document ({type(exc).__name__})", record) from None
    if sender.id != sender_id:
        raise UnreadableSender(sender_id, "the document is stored under another id", record)
    return sender


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class _Named(msgspec.Struct):
    name: str | None = None


_named = msgspec.json.Decoder(_Named)


def _stored_name(sender_id: str, record: bytes | str | None) -> str:
    """The name in a stored record: its own, else (no name, or a record that does not decode) the id."""
    try:
        name = _named.decode(record or b"").name
    except msgspec.MsgspecError:
        name = None
    return name.strip() if name and name.strip() else sender_id


class SenderRegistry:
    """CRUD of senders in the Redis hash `<ns>:senders`, with change notification, and their names in the
    index `<ns>:senders:names` (normalised name -> id), written in the same transaction as the record."""

    def __init__(self, redis: aioredis.Redis, names: Names, cipher: Cipher | None = None) -> None:
        self.redis = redis
        self.names = names
        self.cipher = cipher

    def _encode(self, sender: Sender) -> bytes:
        return msgspec.json.encode(sender_doc(sender, secrets_as="store", cipher=self.cipher))

    async def _names(self, r: Any) -> tuple[dict[str, str], dict[str, str], list[str]]:
        """The name index as it should be: (normalised name -> id as indexed, entries of records not indexed
        yet, indexed names of ids that have no record any more). `r`: the client, or a watching pipeline."""
        senders, index_key = self.names.senders_key, self.names.senders_names_key
        index = {_text(k): _text(v) for k, v in (await r.hgetall(index_key)).items()}
        ids = {_text(k) for k in await r.hkeys(senders)}
        gone = [k for k, v in index.items() if v not in ids]
        index = {k: v for k, v in index.items() if v in ids}
        todo = sorted(ids - set(index.values()))
        unindexed: dict[str, str] = {}
        for sender_id, record in zip(todo, await r.hmget(senders, todo) if todo else (), strict=True):
            key = name_key(_stored_name(sender_id, record))
            if key not in index:  # two old records named alike: the first keeps the name
                unindexed.setdefault(key, sender_id)
        return index, unindexed, gone

    async def name_owner(self, name: str) -> str | None:
        """The id of the sender that has `name` (ignoring case and surrounding spaces), None when it is free."""
        index, unindexed, _ = await self._names(self.redis)
        key = name_key(name)
        return index.get(key) or unindexed.get(key)

    async def _write(self, sender: Sender, *, create: bool, id_given: bool = True) -> Sender:
        """Store `sender` and claim its name (freeing the one it had) in one transaction, with the version
        bump and the change message. WATCH on the record hash and the name index: when a concurrent write gets
        in first, the transaction is not applied and is tried again on what that write left, so of two
        writes of one name exactly one wins. Some write succeeds in every round, so this ends."""
        senders, index_key = self.names.senders_key, self.names.senders_names_key
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(senders, index_key)
                    stored = await pipe.hget(senders, sender.id)
                    if create and stored is not None:
                        if id_given:
                            raise SenderConflict("id", f"a sender with id {sender.id!r} already exists")
                        sender = msgspec.structs.replace(sender, id=_suffixed(slug(sender.name)))
                        await pipe.reset()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                        continue
                    index, unindexed, gone = await self._names(pipe)
                    key = name_key(sender.name)
                    owner = index.get(key) or unindexed.get(key)
                    had = None if stored is None else name_key(_stored_name(sender.id, stored))
                    if owner not in (None, sender.id) and key != had:  # (`had`: two old records named alike)
                        raise SenderConflict(
                            "name", f"the name {sender.name!r} is taken by sender {owner!r} (case is ignored)"
                        )
                    claims: dict[Any, Any] = {k: v for k, v in unindexed.items() if v != sender.id}
                    if owner in (None, sender.id):
                        claims[key] = sender.id
                    freed = [k for k, v in index.items() if v == sender.id and k != key] + gone
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                    pipe.hset(senders, sender.id, self._encode(sender))
                    if freed:
                        pipe.hdel(index_key, *freed)
                    if claims:
                        pipe.hset(index_key, mapping=claims)
                    pipe.incr(self.names.senders_version_key)
                    pipe.publish(self.names.senders_channel, sender.id)
                    await pipe.execute()
                    return sender
                except WatchError:
                    continue

    async def create(self, sender: Sender, *, id_given: bool = True) -> Sender:
        """Store a new sender; `SenderConflict` when its id (or its name) is taken. With `id_given=False` (the
        id was made from the name), a taken id gets a short random suffix instead. Returns what was stored."""
        sender = await self._write(sender, create=True, id_given=id_given)
        log.info("sender.created", sender=sender.id, gateway=sender.gateway)
        return sender

    async def put(self, sender: Sender) -> Sender:
        """Create or replace; `SenderConflict` when the name is another sender's."""
        await self._write(sender, create=False)
        log.info("sender.saved", sender=sender.id, gateway=sender.gateway)
        return sender

    async def update(self, sender_id: str, patch: Mapping[str, Any], default_region: str | None = None) -> Sender:
        """Apply `patch` (any subset of the document; `settings` merged key by key) to an existing sender."""
        existing = await self.get(sender_id)
        if existing is None:
            raise SenderError("id", f"no sender with id {sender_id!r}")
        if patch.get("id", sender_id) != sender_id:
            raise SenderError("id", "the id of a sender cannot change; create a new sender instead")
        doc = sender_doc(existing, secrets_as="keep")
        gateway_changed = patch.get("gateway", existing.gateway) != existing.gateway
        settings = {} if gateway_changed else doc["settings"]
        settings.update(patch.get("settings") or {})
        doc.update({k: v for k, v in patch.items() if k not in ("settings", "receiving_url")})
        doc["settings"] = settings
        sender = parse_sender(doc, existing=existing, default_region=default_region)
        await self._write(sender, create=False)
        log.info("sender.updated", sender=sender.id, gateway=sender.gateway)
        return sender

    async def rotate_token(self, sender_id: str) -> Sender:
        """Give the sender a new webhook token. The old one stops working as soon as each process's cache
        has the change (the change message: at once; the version poll: within seconds)."""
        existing = await self.get(sender_id)
        if existing is None:
            raise SenderError("id", f"no sender with id {sender_id!r}")
        sender = msgspec.structs.replace(existing, webhook_token=new_token())
        await self._write(sender, create=False)
        log.info("sender.token_rotated", sender=sender.id, gateway=sender.gateway)
        return sender

    async def get(self, sender_id: str) -> Sender | None:
        """The sender, None when there is none; UnreadableSender when its record does not decode."""
        data = await self.redis.hget(self.names.senders_key, sender_id)
        return None if data is None else _decode_stored(sender_id, data, self.cipher)

    async def exists(self, sender_id: str) -> bool:
        return bool(await self.redis.hexists(self.names.senders_key, sender_id))

    async def list(self) -> list[Sender]:
        """Every sender, by id; UnreadableSender for the first record that does not decode."""
        senders, unreadable = await self.load()
        if unreadable:
            raise unreadable[0]
        return sorted(senders.values(), key=lambda s: s.id)

    async def load(self) -> tuple[dict[str, Sender], tuple[UnreadableSender, ...]]:
        """Every sender that decodes, by id, and why each other record does not."""
        senders: dict[str, Sender] = {}
        unreadable = []
        for key, data in (await self.redis.hgetall(self.names.senders_key)).items():
            try:
                sender = _decode_stored(_text(key), data, self.cipher)
            except UnreadableSender as exc:
                unreadable.append(exc)
            else:
                senders[sender.id] = sender
        return senders, tuple(sorted(unreadable, key=lambda e: e.sender_id))

    async def delete(self, sender_id: str) -> bool:
        """Delete the sender and free its name (in one transaction, as `_write`)."""
        senders, index_key = self.names.senders_key, self.names.senders_names_key
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(senders, index_key)
                    index = await pipe.hgetall(index_key)
                    freed = [k for k, v in index.items() if _text(v) == sender_id]
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                    pipe.hdel(senders, sender_id)
                    if freed:
                        pipe.hdel(index_key, *freed)
                    pipe.incr(self.names.senders_version_key)
                    pipe.publish(self.names.senders_channel, sender_id)
                    deleted, *_ = await pipe.execute()
                    break
                except WatchError:
                    continue
        if deleted:
            log.info("sender.deleted", sender=sender_id)
        return bool(deleted)

    async def version(self) -> int:
        return int(await self.redis.get(self.names.senders_version_key) or 0)


def open_registry(redis: aioredis.Redis, names: Names, secret_key: str | None) -> SenderRegistry:
    """The registry of `names`' senders on `redis`, its secrets encrypted with `secret_key`
    (SMSFLEET_SECRET_KEY; None or empty: stored as given). Raises ValueError for a key that is not a Fernet key.

    The one way every process opens it: the CLI, the admin, the workers (in a `SenderCache`), the receiver.
    """
    return SenderRegistry(redis, names, Cipher(secret_key) if secret_key else None)


class SenderCache:
    """An in-memory copy of the registry that follows changes while the process runs.

    `get` is a dict lookup. A background task listens on the change channel and reloads the named
    sender; every `poll_s` seconds it compares the version counter and reloads everything when a change
    was missed (a dropped pub/sub connection loses messages).

    A record that does not decode is skipped: the cache keeps the last good copy of that sender it had (a
    process that starts has none), logs `sender.unreadable` once per version of the record, and goes on
    following; the next good write of the sender is picked up as any other. `start` refuses only when this
    process cannot read the stored secrets at all (SMSFLEET_SECRET_KEY missing or wrong).
    """

    def __init__(self, registry: SenderRegistry, poll_s: float = 5.0) -> None:
        self.registry = registry
        self.poll_s = poll_s
        self._senders: dict[str, Sender] = {}
        self._unreadable: dict[str, bytes] = {}  # sender id -> version of its bad record, once logged
        self._version = -1
        self._task: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()

    def get(self, sender_id: str) -> Sender | None:
        return self._senders.get(sender_id)

    def all(self) -> Iterable[Sender]:
        return self._senders.values()

    def _skip(self, exc: UnreadableSender) -> None:
        if self._unreadable.get(exc.sender_id) == exc.version:
            return
        self._unreadable[exc.sender_id] = exc.version
        kept = "the last good copy" if exc.sender_id in self._senders else "nothing"
        log.error("sender.unreadable", sender=exc.sender_id[:100], reason=exc.reason, using=kept)

    async def reload(self) -> None:
        version = await self.registry.version()
        senders, unreadable = await self.registry.load()
        for exc in unreadable:
            self._skip(exc)
            if (kept := self._senders.get(exc.sender_id)) is not None:
                senders[exc.sender_id] = kept
        bad = {exc.sender_id for exc in unreadable}
        self._unreadable = {k: v for k, v in self._unreadable.items() if k in bad}
        self._senders = {sender_id: self._same(sender) for sender_id, sender in senders.items()}
        self._version = version
        self.changed.set()

    async def refresh(self, sender_id: str) -> None:
        try:
            sender = await self.registry.get(sender_id)
        except UnreadableSender as exc:
            self._skip(exc)
            return
        self._unreadable.pop(sender_id, None)
        if sender is None:
            self._senders.pop(sender_id, None)
        else:
            self._senders[sender_id] = self._same(sender)
        self.changed.set()

    def _same(self, sender: Sender) -> Sender:
        """The cached copy when `sender` is unchanged: what workers build on a sender (its gateway adapter, with
        a provider session or token) is kept by identity, and lasts as long as the sender does not change."""
        cached = self._senders.get(sender.id)
        return cached if cached == sender else sender

    async def start(self) -> None:
        _, unreadable = await self.registry.load()
        if key := next((exc for exc in unreadable if exc.key_problem), None):
            raise key
        await self.reload()
        self._task = asyncio.create_task(self._follow(), name="sender-cache")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        while True:
            try:
                async with self.registry.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.registry.names.senders_channel)
                    await self.reload()  # anything changed while (re)subscribing
                    while True:
                        msg = await pubsub.get_message(timeout=self.poll_s)
                        if msg is not None:
                            await self.refresh(_text(msg["data"]))
                        elif await self.registry.version() != self._version:
                            await self.reload()
            except (RedisError, OSError) as exc:
                log.warning("sender_cache.disconnected", error=str(exc))
                await asyncio.sleep(1.0)
            except Exception as exc:  # the follower must outlive anything one message or record brings
                log.error("sender_cache.error", error=type(exc).__name__)
                await asyncio.sleep(1.0)
