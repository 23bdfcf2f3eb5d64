"""Who a person is and where they are filed: Redis first, Postgres when Redis misses or is away."""

from __future__ import annotations

from typing import Any

from yidi.platform import metrics
from yidi.platform.cache import CacheUnavailable, VersionedCache

from services.eligibility.repository import EligibilityRepository, Subject


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

    async def remember_many(self, subjects: dict[str, Subject]) -> None:
        """``remember`` for many persons in one round trip."""
        try:
            await self._cache.put_many([(psn_no, version, doc) for psn_no, (version, doc) in subjects.items()])
        except CacheUnavailable:
            metrics.CACHE_LOOKUPS.labels("fallback").inc(len(subjects))

    async def remember(self, psn_no: str, subject: Subject) -> None:
        """Write a fresh subject through to the cache; a newer cached version wins."""
        try:
            await self._cache.put(psn_no, subject[0], subject[1])
        except CacheUnavailable:
            # Redis is away: the entry it holds may now be stale. The TTL bounds that, and the
            # breaker keeps reads on Postgres until Redis answers again.
            metrics.CACHE_LOOKUPS.labels("fallback").inc()
