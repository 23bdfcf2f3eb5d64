"""The versioned cache on the real Redis server: newer versions win, lost writes are healed."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from yidi.platform.cache import _PUT_IF_NEWER, CacheUnavailable, VersionedCache

from tests.conftest import unique

pytestmark = pytest.mark.integration


async def test_an_older_version_never_replaces_a_newer_one(settings):
    cache = VersionedCache(settings.redis_url, ttl_seconds=60, prefix=settings.namespace)
    key = unique("k")
    try:
        assert await cache.put(key, 5, {"v": 5})
        assert not await cache.put(key, 4, {"v": 4})  # a slow read-through arriving late
        assert await cache.get_many([key]) == [(5, {"v": 5})]
    finally:
        await cache.close()


async def test_a_write_lost_while_redis_was_unreachable_is_never_served_afterwards(settings):
    cache = VersionedCache(settings.redis_url, ttl_seconds=60, prefix=settings.namespace, breaker_seconds=0.2)
    key = unique("k")
    reachable = cache._redis  # noqa: SLF001 - swapped to cut and restore the link
    try:
        await cache.put(key, 1, {"filed": True})
        cache._redis = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)  # noqa: SLF001
        cache._put = cache._redis.register_script("return 0")  # noqa: SLF001
        with pytest.raises(CacheUnavailable):
            await cache.put(key, 2, {"filed": False})  # the event that cancels the filing
        await cache._redis.aclose()  # noqa: SLF001
        cache._redis, cache._put = reachable, reachable.register_script(_PUT_IF_NEWER)  # noqa: SLF001
        await asyncio.sleep(0.3)  # the breaker lets Redis be tried again
        assert await cache.get_many([key]) == [None]  # the stale {"filed": True} is gone
    finally:
        await cache.close()


async def test_put_many_is_the_same_compare_and_set_in_one_round_trip(settings):
    cache = VersionedCache(settings.redis_url, ttl_seconds=60, prefix=settings.namespace)
    newer, fresh = unique("k"), unique("k")
    try:
        assert await cache.put(newer, 5, {"v": 5})
        await cache._redis.script_flush()  # noqa: SLF001 - the pipeline must load the script again
        assert await cache.put_many([(newer, 4, {"v": 4}), (fresh, 1, {"v": 1})]) == [False, True]
        assert await cache.get_many([newer, fresh]) == [(5, {"v": 5}), (1, {"v": 1})]
        assert await cache.put_many([]) == []
    finally:
        await cache.close()


async def test_put_many_that_cannot_reach_redis_marks_its_keys_dirty(settings):
    cache = VersionedCache(settings.redis_url, ttl_seconds=60, prefix=settings.namespace, breaker_seconds=0.2)
    key = unique("k")
    reachable = cache._redis  # noqa: SLF001
    try:
        await cache.put(key, 1, {"filed": True})
        cache._redis = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)  # noqa: SLF001
        cache._put = cache._redis.register_script(_PUT_IF_NEWER)  # noqa: SLF001
        with pytest.raises(CacheUnavailable):
            await cache.put_many([(key, 2, {"filed": False})])
        await cache._redis.aclose()  # noqa: SLF001
        cache._redis, cache._put = reachable, reachable.register_script(_PUT_IF_NEWER)  # noqa: SLF001
        await asyncio.sleep(0.3)
        assert await cache.get_many([key]) == [None]
    finally:
        await cache.close()


async def test_a_change_one_instance_could_not_write_is_deleted_before_it_is_answered(settings):
    """One instance's Redis time-out (its breaker then open for a second) used to leave the old
    entry in Redis, served to every other instance until the TTL, after the change was answered."""
    from services.eligibility.subjects import Subjects

    writer = VersionedCache(settings.redis_url, ttl_seconds=60, prefix=settings.namespace, breaker_seconds=30)
    reader = VersionedCache(settings.redis_url, ttl_seconds=60, prefix=settings.namespace)
    key = unique("P")
    try:
        await reader.put(key, 1, {"filings": ["F1"]})
        writer._down_until = time.monotonic() + 30  # noqa: SLF001 - its breaker open, as after a time-out of its own
        subjects = Subjects(repo=None, cache=writer)  # type: ignore[arg-type]
        await subjects.remember_many({key: (2, {"filings": []})}, changed=True)  # the filing was cancelled
        assert await reader.get_many([key]) == [None]  # the other instance reads Postgres, not the old entry
        # a read-through of a person who did not change leaves the cache alone when it cannot write
        await reader.put(key, 2, {"filings": []})
        await subjects.remember_many({key: (2, {"filings": []})})
        assert await reader.get_many([key]) == [(2, {"filings": []})]
    finally:
        await writer.close()
        await reader.close()


async def test_a_key_forgotten_as_of_a_version_refuses_older_writes_until_its_ttl(settings):
    cache = VersionedCache(settings.redis_url, ttl_seconds=1, prefix=settings.namespace)
    kept, gone = unique("k"), unique("k")
    try:
        assert await cache.put_many([(kept, 7, {"v": 7}), (gone, 5, {"v": 5})]) == [True, True]
        assert await cache.forget({kept: 7, gone: 7}, within=1)
        # an entry as new as the version forgotten is current: kept; an older one goes
        assert await cache.get_many([kept, gone]) == [(7, {"v": 7}), None]
        assert not await cache.put(gone, 6, {"v": 6})  # read before the change: refused
        assert await cache.put(gone, 7, {"v": 7})  # read after it: taken
        assert await cache.drop({gone: 9})  # a tombstone only rises
        assert await cache.drop({gone: 8})
        assert not await cache.put(gone, 8, {"v": 8})
        assert await cache._redis.ttl(f"gone:{settings.namespace}{gone}") > 0  # noqa: SLF001 - expires with the entries
        await asyncio.sleep(1.2)
        assert await cache.put(gone, 1, {"v": 1})  # the TTL past, nothing to refuse it
    finally:
        await cache.close()


async def test_a_dirty_key_is_forgotten_as_of_the_version_that_did_not_reach_redis(settings):
    cache = VersionedCache(settings.redis_url, ttl_seconds=60, prefix=settings.namespace, breaker_seconds=0.2)
    key = unique("k")
    try:
        await cache.put(key, 1, {"filed": True})
        cache._trip(OSError("a time-out"))  # noqa: SLF001 - the breaker open, as after a failed call
        with pytest.raises(CacheUnavailable):
            await cache.put(key, 2, {"filed": False})
        await asyncio.sleep(0.3)
        assert await cache.get_many([key]) == [None]  # healed before reading
        assert not await cache.put(key, 1, {"filed": True})  # a read-through from before the change
        assert await cache.put(key, 2, {"filed": False})
    finally:
        await cache.close()


def test_tombstones_cannot_share_the_entries_keys():
    with pytest.raises(ValueError, match="overlaps"):
        VersionedCache("redis://127.0.0.1:1/0", ttl_seconds=1, prefix="a:", gone_prefix="a:gone:")


async def test_values_that_are_not_versions_give_way(settings):
    """An entry or a tombstone Redis holds that does not start with a version (written by hand,
    say) neither refuses a write nor survives a forget."""
    cache = VersionedCache(settings.redis_url, ttl_seconds=60, prefix=settings.namespace)
    key = unique("k")
    entry, gone = f"{settings.namespace}{key}", f"gone:{settings.namespace}{key}"
    try:
        await cache._redis.set(entry, b"abc")  # noqa: SLF001
        await cache._redis.set(gone, b"abc")  # noqa: SLF001
        assert await cache.put(key, 1, {"v": 1})
        await cache._redis.set(entry, b"abc")  # noqa: SLF001
        assert await cache.drop({key: 1})
        assert await cache.get_many([key]) == [None]
        assert int(await cache._redis.get(gone)) == 1  # noqa: SLF001
        # Nor is read as an entry: its look-up raised ValueError, and the stage stopped on the person
        # at every start until the key was deleted (a review, session 35). A miss, then written over.
        for junk in (b"abc", b"3|not json", b"|"):
            await cache._redis.set(entry, junk)  # noqa: SLF001
            assert await cache.get_many([key, unique("k")]) == [None, None]
        assert await cache.put(key, 2, {"v": 2}) and await cache.get_many([key]) == [(2, {"v": 2})]
    finally:
        await cache.close()
