"""Cache entries no instance could clear are marked stale in Postgres and dropped by any instance
that reaches Redis, on the real Redis and Postgres.

A changed person whose entry could be neither rewritten nor deleted in Redis (unreachable from the
instance that made the change, for the 2 s it keeps trying) was kept dirty in that process only:
another instance that still reached Redis served the old entry until this one reached Redis again,
and if this one restarted first, until the TTL (300 s). A cancelled filing went on settling.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY

from services.eligibility import subjects as subjects_module
from services.eligibility.repository import EligibilityRepository
from services.eligibility.subjects import Subjects
from tests.conftest import unique
from tests.integration.waiting import until
from yidi.platform.cache import VersionedCache

pytestmark = pytest.mark.integration

UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens there


def _cache(url: str, settings) -> VersionedCache:
    return VersionedCache(url, ttl_seconds=60, prefix=f"{settings.namespace}stale-test:", breaker_seconds=0.2)


async def _marks(repo: EligibilityRepository) -> dict[str, object]:
    async with repo.transaction() as conn:
        return {r["psn_no"]: r["marked_at"] for r in await conn.fetch("SELECT * FROM eligibility.cache_stale")}


@pytest.fixture
def repo(eligibility_of_its_own) -> EligibilityRepository:
    return eligibility_of_its_own[1]


@pytest.fixture
def quick_forget(monkeypatch):
    monkeypatch.setattr(subjects_module, "FORGET_WITHIN_S", 0.3)


async def test_a_change_no_one_could_clear_is_dropped_by_another_instance_that_reaches_redis(
        settings, repo, quick_forget):
    reader = _cache(settings.redis_url, settings)  # another instance
    writer = _cache(UNREACHABLE, settings)  # this instance: Redis unreachable from here
    key = unique("P")
    try:
        await reader.put(key, 1, {"filings": ["F1"]})
        await Subjects(repo, writer).remember_many({key: (2, {"filings": []})}, changed=True)
        assert key in await _marks(repo)  # before the change is answered
        assert await reader.get_many([key]) == [(1, {"filings": ["F1"]})]  # still there, old
        before = time.time()
        assert await Subjects(repo, reader).sweep() == (1, False)  # its sweep, within a second
        assert REGISTRY.get_sample_value("yidi_eligibility_cache_sweep_timestamp_seconds") >= before
        assert REGISTRY.get_sample_value("yidi_eligibility_cache_stale_oldest_seconds") == 0
        assert await reader.get_many([key]) == [None]  # read through Postgres from now on
        assert await _marks(repo) == {}
    finally:
        await writer.close()
        await reader.close()


async def test_an_instance_drops_the_marked_entries_before_it_reads_redis_after_a_start_or_an_outage(settings, repo):
    cache = _cache(settings.redis_url, settings)
    old, later = unique("P"), unique("P")
    try:
        await cache.put(old, 1, {"filings": ["F1"]})
        await repo.mark_stale([old])  # by an instance cut off from Redis, while this one was stopping
        subjects = Subjects(repo, cache)  # started: its first look-up, before its first sweep each second
        unknown = {"filings": [], "person": None}  # read through Postgres (no such person here), not the old entry
        assert await subjects.get_many([old]) == {old: unknown}
        assert await _marks(repo) == {}
        # Redis found away, then back: the marks made meanwhile go before the next read.
        await cache.put(later, 1, {"filings": ["F1"]})
        await repo.mark_stale([later])
        cache._trip(OSError("a time-out"))  # noqa: SLF001 - as a failed look-up does
        await asyncio.sleep(0.25)  # the breaker lets Redis be tried again
        assert await subjects.get_many([later]) == {later: unknown}
        # Redis never lost meanwhile: no sweep before reading (the sweeps each second do it).
        await cache.put(later, 1, {"filings": ["F1"]})
        await repo.mark_stale([later])
        assert await subjects.get_many([later]) == {later: {"filings": ["F1"]}}
    finally:
        await cache.close()


async def test_a_sweep_that_cannot_reach_redis_keeps_the_marks(settings, repo):
    cut_off = _cache(UNREACHABLE, settings)
    key = unique("P")
    try:
        await repo.mark_stale([key])
        assert await Subjects(repo, cut_off).sweep() == (0, True)
        assert await Subjects(repo, cut_off).sweep_all() is False
        assert key in await _marks(repo)
    finally:
        await cut_off.close()


async def test_a_mark_made_again_while_a_sweep_holds_it_stays_for_the_next(settings, repo):
    # Marked again after the sweep locked it: the entry may have been written back in between (a
    # read-through of the older subject), so the new mark must outlive the sweep.
    key = unique("P")
    await repo.mark_stale([key])
    first = (await _marks(repo))[key]
    again: list[asyncio.Task] = []

    async def drop(keys: list[str]) -> bool:
        again.append(asyncio.create_task(repo.mark_stale([key])))
        await until(lambda: _waiting_for_a_row(repo), timeout=10)  # it waits for the sweep's lock
        return True

    assert (await repo.sweep_stale(10, 60, drop))[0] == 1
    await asyncio.wait_for(again[0], timeout=10)
    assert (await _marks(repo))[key] > first


async def test_marks_older_than_the_cache_ttl_go_without_touching_redis(settings, repo):
    expired, fresh = unique("P"), unique("P")
    await repo.mark_stale([expired, fresh])
    async with repo.transaction() as conn:
        await conn.execute("UPDATE eligibility.cache_stale SET marked_at = marked_at - interval '301 seconds' "
                           "WHERE psn_no = $1", expired)
    dropped: list[list[str]] = []

    async def drop(keys: list[str]) -> bool:
        dropped.append(keys)
        return True

    assert (await repo.sweep_stale(10, 300, drop))[0] == 1
    assert dropped == [[fresh]] and await _marks(repo) == {}


async def test_a_change_redis_took_is_not_marked(settings, repo):
    cache = _cache(settings.redis_url, settings)
    key = unique("P")
    try:
        await Subjects(repo, cache).remember_many({key: (2, {"filings": []})}, changed=True)
        assert await cache.get_many([key]) == [(2, {"filings": []})]
        assert await _marks(repo) == {}
    finally:
        await cache.close()


async def _waiting_for_a_row(repo: EligibilityRepository) -> bool:
    return bool(await repo._pool.fetchval(  # noqa: SLF001
        """SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
           WHERE a.datname = current_database() AND NOT l.granted AND l.locktype = 'transactionid'"""))
