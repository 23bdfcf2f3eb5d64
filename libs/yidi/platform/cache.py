"""Redis as a cache of versioned documents. Postgres is the truth; Redis down means slower, never wrong.

Each entry is stored as ``<version>|<json>``. A write never replaces a newer version (a Lua
compare-and-set), so a slow read-through that loaded an old document cannot overwrite what an
event wrote after it. When Redis does not answer, a short circuit breaker skips it so every
request does not wait for a timeout; callers then read Postgres. A write that could not reach
Redis leaves its key *dirty*: the first time Redis answers again, dirty keys are deleted
before anything is read, so an entry that missed an event is never served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

_PUT_IF_NEWER = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local v = tonumber(string.match(cur, '^(%d+)|'))
  if v and v > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'EX', tonumber(ARGV[3]))
return 1
"""


class CacheUnavailable(Exception):
    """Redis did not answer; read the truth instead."""


class VersionedCache:
    def __init__(self, url: str, *, ttl_seconds: int, prefix: str, breaker_seconds: float = 1.0) -> None:
        self._redis = aioredis.from_url(
            url, socket_timeout=0.25, socket_connect_timeout=0.25, retry_on_timeout=False
        )
        self._ttl = ttl_seconds
        self._prefix = prefix
        self._breaker_seconds = breaker_seconds
        self._down_until = 0.0
        self._dirty: set[str] = set()
        self._put = self._redis.register_script(_PUT_IF_NEWER)
        # Counts the times Redis was found away (1: the start): entries other instances marked
        # stale meanwhile are swept before the next read (``Subjects.get_many``).
        self.losses = 1

    def _key(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def _check_breaker(self) -> None:
        if not self.available():
            raise CacheUnavailable("redis marked down")

    def _trip(self, exc: Exception) -> CacheUnavailable:
        self.losses += 1
        if time.monotonic() >= self._down_until:
            log.warning("redis unavailable (%s); reading Postgres for %.1fs", exc, self._breaker_seconds)
        self._down_until = time.monotonic() + self._breaker_seconds
        return CacheUnavailable(str(exc))

    async def _heal(self) -> None:
        """Forget entries whose refresh was lost while Redis was away (before reading any)."""
        if self._dirty:
            dirty = list(self._dirty)
            await self._redis.delete(*[self._key(k) for k in dirty])
            self._dirty.difference_update(dirty)
            log.info("redis answers again: %d entries that missed an update dropped", len(dirty))

    async def get_many(self, keys: list[str]) -> list[tuple[int, Any] | None]:
        """The cached (version, document) of each key, None where absent."""
        self._check_breaker()
        try:
            await self._heal()
            raw = await self._redis.mget([self._key(k) for k in keys])
        except (RedisError, OSError) as exc:
            raise self._trip(exc) from exc
        out: list[tuple[int, Any] | None] = []
        for item in raw:
            if item is None:
                out.append(None)
                continue
            version, _, doc = item.partition(b"|")
            out.append((int(version), orjson.loads(doc)))
        return out

    async def put(self, key: str, version: int, document: Any) -> bool:
        """Store ``document`` unless a newer version is cached; True if stored."""
        try:
            self._check_breaker()
            await self._heal()
            return bool(await self._put(keys=[self._key(key)], args=[version, orjson.dumps(document), self._ttl]))
        except CacheUnavailable:
            self._dirty.add(key)
            raise
        except (RedisError, OSError) as exc:
            self._dirty.add(key)
            raise self._trip(exc) from exc

    async def put_many(self, entries: list[tuple[str, int, Any]]) -> list[bool]:
        """``put`` for each (key, version, document), in one round trip (a pipeline of the same
        compare-and-set); True where stored."""
        if not entries:
            return []
        try:
            self._check_breaker()
            await self._heal()
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, version, document in entries:
                    await self._put(keys=[self._key(key)], args=[version, orjson.dumps(document), self._ttl], client=pipe)
                return [bool(stored) for stored in await pipe.execute()]
        except CacheUnavailable:
            self._dirty.update(key for key, _, _ in entries)
            raise
        except (RedisError, OSError) as exc:
            self._dirty.update(key for key, _, _ in entries)
            raise self._trip(exc) from exc

    async def forget(self, keys: list[str], *, within: float) -> bool:
        """Delete ``keys``, trying for up to ``within`` seconds whatever the breaker says (after a
        write of changed documents that did not reach Redis). True once deleted; False if Redis
        could not be reached in time: the keys stay dirty and go the first time it answers."""
        deadline = time.monotonic() + within
        while True:
            try:
                await self._redis.delete(*[self._key(k) for k in keys])
            except (RedisError, OSError) as exc:
                if time.monotonic() + 0.1 >= deadline:
                    log.warning("redis unavailable (%s): %d changed entries left to drop when it answers", exc, len(keys))
                    return False
                await asyncio.sleep(0.1)
                continue
            self._dirty.difference_update(keys)
            return True

    async def drop(self, keys: list[str]) -> bool:
        """Delete ``keys`` in one attempt (a sweep of entries marked stale, tried again later):
        ``UNLINK``, which frees them off Redis's main thread. False if Redis could not be reached;
        a failure here does not open the breaker or log: the look-ups find out for themselves."""
        if not self.available():
            return False
        try:
            await self._heal()
            await self._redis.unlink(*[self._key(k) for k in keys])
        except (RedisError, OSError):
            return False
        self._dirty.difference_update(keys)
        return True

    def available(self) -> bool:
        """Whether the breaker lets Redis be tried."""
        return time.monotonic() >= self._down_until

    @property
    def ttl_seconds(self) -> int:
        return self._ttl

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._redis.aclose()
