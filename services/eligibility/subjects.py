"""Who a person is and where they are filed: Redis first, Postgres when Redis misses or is away."""

from __future__ import annotations

from typing import Any

from yidi.platform import metrics
from yidi.platform.cache import CacheUnavailable, VersionedCache

from services.eligibility.repository import EligibilityRepository, Subject

# How long a write of changed subjects that did not reach Redis keeps trying to delete their old
# entries before the change is answered (Subjects.remember_many).
FORGET_WITHIN_S = 2.0


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
        the other instances most likely cannot reach it either (they read Postgres), and the
        entries are deleted the first time Redis answers this instance again."""
        try:
            await self._cache.put_many([(psn_no, version, doc) for psn_no, (version, doc) in subjects.items()])
        except CacheUnavailable:
            metrics.CACHE_LOOKUPS.labels("fallback").inc(len(subjects))
            if changed:
                await self._cache.forget(list(subjects), within=FORGET_WITHIN_S)

    async def remember(self, psn_no: str, subject: Subject) -> None:
        """A person's subject that has just changed (the person feed), written through."""
        await self.remember_many({psn_no: subject}, changed=True)
