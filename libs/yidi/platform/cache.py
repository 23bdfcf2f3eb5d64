"""Redis as a cache of versioned documents. Postgres is the truth; Redis down means slower, never wrong.

Each entry is stored as ``<version>|<json>``. A write never replaces a newer version (a Lua
compare-and-set), so a slow read-through that loaded an old document cannot overwrite what an
event wrote after it. An entry is never simply deleted: it is *forgotten* (``forget``, ``drop``),
which deletes it only if older than the version the caller names and leaves a *tombstone* of that
version (``<gone prefix><key>`` = ``<version>``, with the entries' TTL) that the compare-and-set
also respects. So a read-through that read Postgres before a change and writes after the change's
entry was forgotten cannot put the old document back. When Redis does not answer, a short circuit
breaker skips it so every request does not wait for a timeout; callers then read Postgres. A write
that could not reach Redis leaves its key *dirty* with its version: the first time Redis answers
again, dirty keys are forgotten before anything is read, so an entry that missed an event is never
served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from yidi.platform import metrics

log = logging.getLogger(__name__)

# KEYS: the entry, its tombstone; ARGV: version, document, TTL. Refused (0) when the entry
# holds a newer version or a tombstone says the key was forgotten at a newer one.
_PUT_IF_NEWER = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local v = tonumber(string.match(cur, '^(%d+)|'))
  if v and v > tonumber(ARGV[1]) then return 0 end
end
local gone = tonumber(redis.call('GET', KEYS[2]))
if gone and gone > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'EX', tonumber(ARGV[3]))
return 1
"""

# KEYS: the entry, its tombstone; ARGV: version, TTL. Deletes the entry unless it holds that
# version or a newer one (then it is current), and raises the tombstone to that version.
_FORGET_OLDER = """
local v = tonumber(ARGV[1])
local cur = redis.call('GET', KEYS[1])
if cur then
  local held = tonumber(string.match(cur, '^(%d+)|'))
  if not held or held < v then redis.call('UNLINK', KEYS[1]) end
end
local gone = tonumber(redis.call('GET', KEYS[2]))
if not gone or gone < v then redis.call('SET', KEYS[2], ARGV[1], 'EX', tonumber(ARGV[2])) end
return 1
"""


@contextlib.contextmanager
def _timed(operation: str) -> Iterator[None]:
    """One call's round trip to Redis, in ``yidi_redis_seconds`` (``ok`` unless it raised)."""
    started = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
        metrics.REDIS_REACHED.set(time.time())  # Redis answered (YidiRedisUnreachable)
    finally:
        metrics.REDIS_SECONDS.labels(operation, outcome).observe(time.perf_counter() - started)


class CacheUnavailable(Exception):
    """Redis did not answer; read the truth instead."""


class VersionedCache:
    def __init__(self, url: str, *, ttl_seconds: int, prefix: str, breaker_seconds: float = 1.0,
                 gone_prefix: str | None = None) -> None:
        # Tombstones under a prefix no entry key starts with (any key may follow ``prefix``).
        self._gone_prefix = f"gone:{prefix}" if gone_prefix is None else gone_prefix
        if self._gone_prefix.startswith(prefix) or prefix.startswith(self._gone_prefix):
            raise ValueError(f"tombstone prefix {self._gone_prefix!r} overlaps the entries' {prefix!r}")
        self._redis = aioredis.from_url(
            url, socket_timeout=0.25, socket_connect_timeout=0.25, retry_on_timeout=False
        )
        self._ttl = ttl_seconds
        self._prefix = prefix
        self._breaker_seconds = breaker_seconds
        self._down_until = 0.0
        self._dirty: dict[str, int] = {}  # key -> the newest version whose write did not reach Redis
        self._put = self._redis.register_script(_PUT_IF_NEWER)
        self._forget = self._redis.register_script(_FORGET_OLDER)
        # Counts the times Redis was found away (1: the start): entries other instances marked
        # stale meanwhile are swept before the next read (``Subjects.get_many``).
        self.losses = 1

    def _key(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def _keys(self, key: str) -> list[str]:
        """The entry's key and its tombstone's, the two keys both scripts take."""
        return [self._key(key), f"{self._gone_prefix}{key}"]

    def _check_breaker(self) -> None:
        if not self.available():
            raise CacheUnavailable("redis marked down")

    def _trip(self, exc: Exception) -> CacheUnavailable:
        self.losses += 1
        if time.monotonic() >= self._down_until:
            log.warning("redis unavailable (%s); reading Postgres for %.1fs", exc, self._breaker_seconds)
        self._down_until = time.monotonic() + self._breaker_seconds
        return CacheUnavailable(str(exc))

    def _mark_dirty(self, entries: Iterable[tuple[str, int]]) -> None:
        for key, version in entries:
            self._dirty[key] = max(version, self._dirty.get(key, 0))

    def _clean(self, entries: dict[str, int]) -> None:
        """Dirty marks up to the versions just forgotten go (a newer one added meanwhile stays)."""
        for key, version in entries.items():
            if key in self._dirty and self._dirty[key] <= version:
                del self._dirty[key]

    async def _forget_older(self, entries: dict[str, int]) -> None:
        """Forget each key as of its version (``_FORGET_OLDER``), in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, version in entries.items():
                await self._forget(keys=self._keys(key), args=[version, self._ttl], client=pipe)
            with _timed("forget"):
                await pipe.execute()

    async def _heal(self) -> None:
        """Forget entries whose refresh was lost while Redis was away (before reading any)."""
        if self._dirty:
            dirty = dict(self._dirty)
            await self._forget_older(dirty)
            self._clean(dirty)
            log.info("redis answers again: %d entries that missed an update dropped", len(dirty))

    async def get_many(self, keys: list[str]) -> list[tuple[int, Any] | None]:
        """The cached (version, document) of each key, None where absent."""
        self._check_breaker()
        try:
            await self._heal()
            with _timed("get"):
                raw = await self._redis.mget([self._key(k) for k in keys])
        except (RedisError, OSError) as exc:
            raise self._trip(exc) from exc
        out: list[tuple[int, Any] | None] = []
        for item in raw:
            if item is None:
                out.append(None)
                continue
            version, _, doc = item.partition(b"|")
            try:
                out.append((int(version), orjson.loads(doc)))
            except ValueError:  # not an entry of ours (written by hand, say): a miss, as the scripts take it
                out.append(None)
        return out

    async def put(self, key: str, version: int, document: Any) -> bool:
        """Store ``document`` unless a newer version is cached or was forgotten; True if stored."""
        return (await self.put_many([(key, version, document)]))[0]

    async def put_many(self, entries: list[tuple[str, int, Any]]) -> list[bool]:
        """Store each (key, version, document) unless a newer version is cached or was forgotten
        (the compare-and-set), in one round trip; True where stored."""
        if not entries:
            return []
        try:
            self._check_breaker()
            await self._heal()
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, version, document in entries:
                    await self._put(keys=self._keys(key), args=[version, orjson.dumps(document), self._ttl], client=pipe)
                with _timed("put"):
                    stored = await pipe.execute()
                return [bool(s) for s in stored]
        except CacheUnavailable:
            self._mark_dirty((key, version) for key, version, _ in entries)
            raise
        except (RedisError, OSError) as exc:
            self._mark_dirty((key, version) for key, version, _ in entries)
            raise self._trip(exc) from exc

    async def forget(self, entries: dict[str, int], *, within: float) -> bool:
        """Forget each key as of its version (its entry deleted unless as new, a tombstone of the
        version left), trying for up to ``within`` seconds whatever the breaker says (after a write
        of changed documents that did not reach Redis). True once done; False if Redis could not
        be reached in time: the keys stay dirty and are forgotten the first time it answers."""
        deadline = time.monotonic() + within
        while True:
            try:
                await self._forget_older(entries)
            except (RedisError, OSError) as exc:
                if time.monotonic() + 0.1 >= deadline:
                    log.warning("redis unavailable (%s): %d changed entries left to drop when it answers", exc, len(entries))
                    return False
                await asyncio.sleep(0.1)
                continue
            self._clean(entries)
            return True

    async def drop(self, entries: dict[str, int]) -> bool:
        """Forget each key as of its version in one attempt (a sweep of entries marked stale, tried
        again later). False if Redis could not be reached, and the breaker opens: the sweep holds
        the marks' locks while it tries, and an instance that Redis times out for (a blackhole)
        swept on every batch, so that the instances that reach Redis, which skip locked marks,
        seldom dropped them (an entry marked stale served for 10 s and more)."""
        if not self.available():
            return False
        try:
            await self._heal()
            await self._forget_older(entries)
        except (RedisError, OSError) as exc:
            self._trip(exc)
            return False
        self._clean(entries)
        return True

    def available(self) -> bool:
        """Whether the breaker lets Redis be tried."""
        return time.monotonic() >= self._down_until

    @property
    def ttl_seconds(self) -> int:
        return self._ttl

    async def ping(self) -> bool:
        """Whether Redis answers now, whatever the breaker says (eligibility's probe, ``probes.reach_every``)."""
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._redis.aclose()
