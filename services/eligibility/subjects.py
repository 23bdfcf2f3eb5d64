"""Who a person is and where they are filed: Redis first, Postgres when Redis misses or is away."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from yidi.platform import metrics
from yidi.platform.cache import CacheUnavailable, VersionedCache
from yidi.platform.db import STATEMENT_SOURCE

from services.eligibility.repository import EligibilityRepository, Subject

# How long a write of changed subjects that did not reach Redis keeps trying to forget their old
# entries before the change is answered (Subjects.remember_many).
FORGET_WITHIN_S = 2.0
# Marks of stale entries (``Subjects.sweep``) read at a time, and how often each instance sweeps:
# another instance that reaches Redis drops an entry this one could not within about a second.
SWEEP_BATCH = 1000
SWEEP_EVERY_S = 1.0
MAX_SWEEPS = 100  # in one sweep_all (marks made as fast as they are dropped: the loop carries on)

log = logging.getLogger("yidi.eligibility.cache")


class Subjects:
    """Read-through cache of each person's insurance and filings, refreshed by events (write-through)."""

    def __init__(self, repo: EligibilityRepository, cache: VersionedCache) -> None:
        self._repo = repo
        self._cache = cache
        self._swept_after = 0  # the cache's losses of Redis up to which the marks were swept

    async def get_many(self, psn_nos: list[str]) -> dict[str, dict[str, Any]]:
        wanted = sorted(set(psn_nos))
        found: dict[str, dict[str, Any]] = {}
        losses = self._cache.losses
        if losses > self._swept_after:  # after a start, Redis found away, or marks it could not drop
            if not (self._cache.available() and await self.sweep_all()):
                # Entries another instance marked stale may still be in Redis (one that answers
                # reads and refuses writes: a demoted replica, maxmemory under noeviction): not read.
                return await self._fallback(wanted)
            self._swept_after = max(self._swept_after, losses)
        try:
            cached = await self._cache.get_many(wanted)
        except CacheUnavailable:
            return await self._fallback(wanted)
        misses = []
        for psn_no, entry in zip(wanted, cached, strict=True):
            if entry is None:
                misses.append(psn_no)
            else:
                found[psn_no] = entry[1]
        metrics.CACHE_LOOKUPS.labels("hit").inc(len(wanted) - len(misses))
        if misses:
            metrics.CACHE_LOOKUPS.labels("miss").inc(len(misses))
            loaded = await self._repo.subjects(misses)
            for psn_no, subject in loaded.items():
                found[psn_no] = subject[1]
            await self.remember_many(loaded)
        return found

    async def _fallback(self, wanted: list[str]) -> dict[str, dict[str, Any]]:
        metrics.CACHE_LOOKUPS.labels("fallback").inc(len(wanted))
        return {k: doc for k, (_, doc) in (await self._repo.subjects(wanted)).items()}

    async def remember_many(self, subjects: dict[str, Subject], *, changed: bool = False) -> None:
        """Write subjects through to the cache, in one round trip; a newer cached version wins.

        ``changed``: the subjects have just changed (a filing event, the person feed), so an entry
        Redis still holds is wrong now. When the write does not reach Redis, their entries are
        forgotten instead (``VersionedCache.forget``: deleted, with a tombstone of the change's
        version), trying for up to ``FORGET_WITHIN_S`` whatever the breaker says, before
        the caller goes on to answer: one instance's Redis time-out must not leave another
        instance reading the old entry until the TTL. If Redis cannot be reached for that long,
        the entries are marked stale in Postgres (``sweep``), still before the caller answers:
        an instance that reaches Redis drops them within about a second (``sweep_every``), and
        every instance before it reads Redis after its start or after finding Redis away
        (``sweep_all``). A restart loses nothing: the marks are in Postgres, not in this process."""
        try:
            await self._cache.put_many([(psn_no, version, doc) for psn_no, (version, doc) in subjects.items()])
        except CacheUnavailable:
            metrics.CACHE_LOOKUPS.labels("fallback").inc(len(subjects))
            if changed and not await self._cache.forget(
                    {psn_no: version for psn_no, (version, _) in subjects.items()}, within=FORGET_WITHIN_S):
                await self._repo.mark_stale(list(subjects))
                metrics.CACHE_STALE_MARKED.inc(len(subjects))

    async def remember(self, psn_no: str, subject: Subject) -> None:
        """A person's subject that has just changed (the person feed), written through."""
        await self.remember_many({psn_no: subject}, changed=True)

    async def sweep(self, *, wait: bool = False) -> tuple[int, bool]:
        """One sweep of the entries marked stale (``remember_many``; ``EligibilityRepository.
        sweep_stale``): (marks dropped, whether Redis could not be reached)."""
        try:
            dropped, unreachable, oldest = await self._repo.sweep_stale(
                SWEEP_BATCH, self._cache.ttl_seconds, self._cache.drop, wait=wait)
        except BaseException:
            metrics.CACHE_STALE_OLDEST.set(float("nan"))  # not known: no stale value for the alert
            raise
        metrics.CACHE_STALE_OLDEST.set(oldest)
        metrics.CACHE_SWEPT_AT.set(time.time())
        if unreachable:
            # Marked entries this instance cannot drop (Redis away, or refusing writes while it still
            # answers reads): its look-ups read Postgres until a sweep drops them (get_many).
            self._cache.losses += 1
        if dropped:
            log.info("%d cache entries marked stale dropped", dropped)
        return dropped, unreachable

    async def sweep_all(self) -> bool:
        """Sweep until no mark is left, waiting for other instances' sweeps: before this instance
        reads Redis after a start or an outage, so that it never serves an entry another instance
        marked meanwhile. False if Redis could not be reached; a failure of Postgres propagates
        (the batch is read again)."""
        for _ in range(MAX_SWEEPS):
            dropped, unreachable = await self.sweep(wait=True)
            if unreachable:
                return False
            if not dropped:
                return True
        return True  # marks made as fast as they go: the sweeps each second carry on


async def sweep_every(subjects: Subjects, seconds: float) -> None:
    """``Subjects.sweep`` every ``seconds`` (at once again after a full batch): entries another
    instance marked stale are dropped within about that. Logged when the sweeps stop reaching
    Redis or Postgres, and when they do again (not each second)."""
    STATEMENT_SOURCE.set("cache-sweep")  # a task of its own: its statements, in yidi_db_statement_seconds
    state = "ok"
    while True:
        dropped = 0
        try:
            dropped, unreachable = await subjects.sweep()
            now = "redis" if unreachable else "ok"
        except Exception as exc:  # noqa: BLE001 - a sweep missed is tried again (a cancellation passes: BaseException)
            now = "postgres"
            if state != now:
                log.warning("cache entries marked stale not swept: Postgres failed (%r)", exc)
        if now != state:
            if now == "redis":
                log.warning("cache entries marked stale not swept: Redis unreachable from here")
            elif now == "ok":
                log.info("cache entries marked stale swept again")
            state = now
        if dropped < SWEEP_BATCH:
            await asyncio.sleep(seconds)
