"""Who a person is and where they are filed: Redis first, Postgres when Redis misses or is away."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from yidi.platform import metrics
from yidi.platform.cache import CacheUnavailable, VersionedCache

from services.eligibility.repository import EligibilityRepository, Subject

# How long a write of changed subjects that did not reach Redis keeps trying to delete their old
# entries before the change is answered (Subjects.remember_many).
FORGET_WITHIN_S = 2.0
# Marks of stale entries (``Subjects.sweep``) read at a time, and how often each instance sweeps:
# another instance that reaches Redis drops an entry this one could not within about a second.
SWEEP_BATCH = 1000
SWEEP_EVERY_S = 1.0

log = logging.getLogger("yidi.eligibility.cache")


class Subjects:
    """Read-through cache of each person's insurance and filings, refreshed by events (write-through)."""

    def __init__(self, repo: EligibilityRepository, cache: VersionedCache) -> None:
        self._repo = repo
        self._cache = cache

    async def get_many(self, psn_nos: list[str]) -> dict[str, dict[str, Any]]:
        wanted = sorted(set(psn_nos))
        found: dict[str, dict[str, Any]] = {}
        try:
            cached = await self._cache.get_many(wanted)
        except CacheUnavailable:
            metrics.CACHE_LOOKUPS.labels("fallback").inc(len(wanted))
            return {k: doc for k, (_, doc) in (await self._repo.subjects(wanted)).items()}
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

    async def remember_many(self, subjects: dict[str, Subject], *, changed: bool = False) -> None:
        """Write subjects through to the cache, in one round trip; a newer cached version wins.

        ``changed``: the subjects have just changed (a filing event, the person feed), so an entry
        Redis still holds is wrong now. When the write does not reach Redis, their entries are
        deleted instead, trying for up to ``FORGET_WITHIN_S`` whatever the breaker says, before
        the caller goes on to answer: one instance's Redis time-out must not leave another
        instance reading the old entry until the TTL. If Redis cannot be reached for that long,
        the entries are marked stale in Postgres (``sweep``), still before the caller answers:
        every instance deletes them once it reaches Redis (another that reaches it now, at
        once), and this one also the first time Redis answers it again. A restart loses nothing:
        the marks are in Postgres, not in this process."""
        try:
            await self._cache.put_many([(psn_no, version, doc) for psn_no, (version, doc) in subjects.items()])
        except CacheUnavailable:
            metrics.CACHE_LOOKUPS.labels("fallback").inc(len(subjects))
            if changed and not await self._cache.forget(list(subjects), within=FORGET_WITHIN_S):
                await self._repo.mark_stale(list(subjects))
                metrics.CACHE_STALE_MARKED.inc(len(subjects))

    async def remember(self, psn_no: str, subject: Subject) -> None:
        """A person's subject that has just changed (the person feed), written through."""
        await self.remember_many({psn_no: subject}, changed=True)

    async def sweep(self) -> int:
        """Delete from Redis the entries marked stale (``remember_many``), then their marks; how many
        were dropped (none while Redis cannot be reached: they wait for the next sweep)."""
        marks = await self._repo.stale_marks(SWEEP_BATCH)
        metrics.CACHE_STALE.set(len(marks))
        if not marks or not await self._cache.drop([p for p, _ in marks]):
            return 0
        await self._repo.unmark_stale(marks)
        metrics.CACHE_STALE.set(0)  # (a full batch: the next sweep, at once, reads what is left)
        log.info("%d cache entries marked stale dropped", len(marks))
        return len(marks)


async def sweep_every(subjects: Subjects, seconds: float) -> None:
    """``Subjects.sweep`` every ``seconds``, at once again after a full batch. A sweep that fails
    (Postgres away) is logged once until one succeeds."""
    failing = False
    while True:
        dropped = 0
        try:
            dropped = await subjects.sweep()
            failing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a sweep missed is tried again
            if not failing:
                log.warning("cache entries marked stale not swept: %r", exc)
            failing = True
        if dropped < SWEEP_BATCH:
            await asyncio.sleep(seconds)
