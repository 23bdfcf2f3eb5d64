"""Cache entries no instance could clear are marked stale in Postgres and dropped by any instance
that reaches Redis, on the real Redis and Postgres.

A changed person whose entry could be neither rewritten nor deleted in Redis (unreachable from the
instance that made the change, for the 2 s it keeps trying) was kept dirty in that process only:
another instance that still reached Redis served the old entry until this one reached Redis again,
and if this one restarted first, until the TTL (300 s). A cancelled filing went on settling.
"""

from __future__ import annotations

import pytest

from services.eligibility import subjects as subjects_module
from services.eligibility.subjects import Subjects
from tests.conftest import unique
from yidi.platform.cache import VersionedCache

pytestmark = pytest.mark.integration

UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens there


def _cache(url: str, settings) -> VersionedCache:
    return VersionedCache(url, ttl_seconds=60, prefix=f"{settings.namespace}stale-test:", breaker_seconds=0.2)


async def _marked(repo, key: str) -> bool:
    return key in {p for p, _ in await repo.stale_marks(10_000)}


@pytest.fixture
def quick_forget(monkeypatch):
    monkeypatch.setattr(subjects_module, "FORGET_WITHIN_S", 0.3)


async def test_a_change_no_one_could_clear_is_dropped_by_another_instance_that_reaches_redis(
        settings, eligibility_repo, quick_forget):
    reader = _cache(settings.redis_url, settings)  # another instance, or this one restarted
    writer = _cache(UNREACHABLE, settings)  # this instance: Redis unreachable from here
    key = unique("P")
    try:
        await reader.put(key, 1, {"filings": ["F1"]})
        await Subjects(eligibility_repo, writer).remember_many({key: (2, {"filings": []})}, changed=True)
        assert await _marked(eligibility_repo, key)  # before the change is answered
        assert await reader.get_many([key]) == [(1, {"filings": ["F1"]})]  # still there, old
        assert await Subjects(eligibility_repo, reader).sweep() >= 1
        assert await reader.get_many([key]) == [None]  # read through Postgres from now on
        assert not await _marked(eligibility_repo, key)
    finally:
        await writer.close()
        await reader.close()


async def test_a_sweep_that_cannot_reach_redis_keeps_the_marks(settings, eligibility_repo):
    cut_off = _cache(UNREACHABLE, settings)
    key = unique("P")
    try:
        await eligibility_repo.mark_stale([key])
        assert await Subjects(eligibility_repo, cut_off).sweep() == 0
        assert await _marked(eligibility_repo, key)
    finally:
        await eligibility_repo.unmark_stale([m for m in await eligibility_repo.stale_marks(10_000) if m[0] == key])
        await cut_off.close()


async def test_a_mark_made_again_while_a_sweep_runs_stays_for_the_next(settings, eligibility_repo):
    # Marked again after the sweep read it: the entry may have been written back in between (a
    # read-through of the older subject), so the newer mark must not go with the older one.
    key = unique("P")
    await eligibility_repo.mark_stale([key])
    read = [m for m in await eligibility_repo.stale_marks(10_000) if m[0] == key]
    await eligibility_repo.mark_stale([key])
    await eligibility_repo.unmark_stale(read)
    (again,) = [m for m in await eligibility_repo.stale_marks(10_000) if m[0] == key]
    assert again[1] > read[0][1]
    await eligibility_repo.unmark_stale([again])
    assert not await _marked(eligibility_repo, key)


async def test_a_change_redis_took_is_not_marked(settings, eligibility_repo):
    cache = _cache(settings.redis_url, settings)
    key = unique("P")
    try:
        await Subjects(eligibility_repo, cache).remember_many({key: (2, {"filings": []})}, changed=True)
        assert await cache.get_many([key]) == [(2, {"filings": []})]
        assert not await _marked(eligibility_repo, key)
    finally:
        await cache.close()
