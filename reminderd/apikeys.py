"""API keys: how they are made, stored and checked.

A key is `rk_` + 12 visible characters (its prefix: shown in `api-key list`, the logs and support
tickets) + `_` + 43 letters and digits of secret (43 * log2(62) > 256 bits from `secrets`): only
the two underscores separate its parts, so splitting it at `_` or double-clicking it never cuts
the secret. The database keeps the prefix
and the SHA-256 of the whole key, never the key: a fast hash is right for a key this random (no
dictionary to try), and it is compared with hmac.compare_digest, in constant time.

`KeyCache` keeps what it read of each prefix for `ttl_s` seconds, so a request costs no database
round trip for its key: a revoked key keeps working on a server for at most that long (the
staleness docs/api.md states). Unknown prefixes are remembered too, so a flood of made-up keys
does not become a flood of queries. Keys used are written to last_used_at in one statement every
few seconds (`flush_usage`), not one per request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import string
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .rows import ApiKey

PREFIX_LENGTH = 12
SECRET_LENGTH = 43
SECRET_ALPHABET = string.ascii_letters + string.digits  # no "_" (the separator) and no "-"
_KEY = re.compile(rf"(rk_[a-z2-7]{{{PREFIX_LENGTH}}})_([A-Za-z0-9]{{{SECRET_LENGTH}}})")
READ, WRITE = "read", "write"


@dataclass(frozen=True)
class NewKey:
    key: str  # shown once, never stored
    prefix: str
    key_hash: bytes


def generate() -> NewKey:
    prefix = "rk_" + base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()[:PREFIX_LENGTH]
    secret = "".join(secrets.choice(SECRET_ALPHABET) for _ in range(SECRET_LENGTH))
    key = f"{prefix}_{secret}"
    return NewKey(key, prefix, digest(key))


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def prefix_of(key: str) -> str | None:
    """The prefix of something shaped like a key, else None."""
    match = _KEY.fullmatch(key)
    return match[1] if match else None


def acting_for(prefix: str, name: str) -> str:
    """How the audit trail names what was done with a key (events.on_behalf_of): an API write's,
    a dashboard action's."""
    return f"{prefix} ({name})"


@dataclass(frozen=True)
class Caller:
    """Who a request acts as: its key's tenant (None for an operator key), and what it may do."""

    key_id: int
    prefix: str
    tenant_id: str | None
    scopes: tuple[str, ...]
    rate_limit: float | None
    name: str

    @property
    def may_write(self) -> bool:
        return WRITE in self.scopes

    @property
    def acting_for(self) -> str:
        return acting_for(self.prefix, self.name)


class KeyCache:
    """Verified keys by prefix, each for `ttl_s` seconds; at most `max_entries` remembered."""

    def __init__(self, load: Callable[[str], Awaitable[ApiKey | None]], *, ttl_s: float,
                 max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._load = load
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, ApiKey | None]] = OrderedDict()
        self._loading: dict[str, asyncio.Future[ApiKey | None]] = {}
        self._used: set[int] = set()

    async def caller(self, key: str) -> Caller | None:
        """The caller `key` authenticates, or None (unknown, wrong secret, revoked)."""
        prefix = prefix_of(key)
        if prefix is None:
            return None
        found = await self._lookup(prefix)
        if found is None or found.revoked_at is not None:
            return None
        if not hmac.compare_digest(found.key_hash, digest(key)):
            return None
        self._used.add(found.id)
        return Caller(found.id, found.prefix, found.tenant_id, found.scopes, found.rate_limit, found.name)

    async def _lookup(self, prefix: str) -> ApiKey | None:
        now = self._clock()
        entry = self._entries.get(prefix)
        if entry is not None and now - entry[0] < self._ttl_s:
            return entry[1]
        pending = self._loading.get(prefix)
        if pending is not None:  # another request is reading this prefix already
            return await asyncio.shield(pending)
        future: asyncio.Future[ApiKey | None] = asyncio.get_running_loop().create_future()
        self._loading[prefix] = future
        try:
            found = await self._load(prefix)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._loading[prefix]
        future.set_result(found)
        self._entries[prefix] = (self._clock(), found)
        self._entries.move_to_end(prefix)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return found

    def forget(self, prefix: str) -> None:
        self._entries.pop(prefix, None)

    def take_usage(self) -> list[int]:
        """The ids of the keys used since the last call."""
        used, self._used = sorted(self._used), set()
        return used
