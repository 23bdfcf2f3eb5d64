"""Ops see Postgres and Redis apart from the handlers: each statement of a service's pool is timed
and its failures counted by error class, and each call of the cache to Redis is timed by outcome,
on the real servers."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from prometheus_client import REGISTRY

from yidi.platform.cache import CacheUnavailable, VersionedCache
from yidi.platform.db import STATEMENT_SOURCE, Purge, Repository, create_pool, statements_for

from tests.conftest import unique

pytestmark = pytest.mark.integration


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _until_logged(statements: int, service: str, before: float, source: str = "other") -> None:
    """asyncpg calls its query loggers soon after the statement: until they ran."""
    for _ in range(100):
        if _sample("yidi_db_statement_seconds_count", service=service, source=source) >= before + statements:
            return
        await asyncio.sleep(0.01)


async def test_a_services_statements_are_timed_and_their_failures_counted_by_error_class(settings):
    service = f"svc_{uuid.uuid4().hex[:8]}"
    pool = await create_pool(settings.database_url, size=1, service=service)
    try:
        async with pool.acquire() as conn:
            count = _sample("yidi_db_statement_seconds_count", service=service, source="other")
            await conn.execute("SELECT pg_sleep(0.05)")
            await conn.fetchval("SELECT $1::int", 7)
            with pytest.raises(asyncpg.UndefinedTableError):
                await conn.fetch("SELECT * FROM no_such_table_here")
            await _until_logged(3, service, count)
        assert _sample("yidi_db_statement_seconds_count", service=service, source="other") == count + 3
        assert _sample("yidi_db_statement_seconds_sum", service=service, source="other") >= 0.05  # the sleep
        assert _sample("yidi_db_statement_seconds_bucket", service=service, source="other", le="0.02") <= count + 2
        assert _sample("yidi_db_statement_errors_total", service=service, source="other",
                       error="UndefinedTableError") == 1
    finally:
        await pool.close()


async def test_each_statement_is_counted_for_what_it_ran_for_a_stage_a_feed_a_sampler(settings):
    """``statements_for``: the statements of a block and of the tasks it starts (a stage's task, as
    Service starts it) under its source; the rest under "other"; a failure counted under its source."""
    service = f"svc_{uuid.uuid4().hex[:8]}"
    pool = await create_pool(settings.database_url, size=2, service=service)

    def counts() -> dict[str, float]:
        return {source: _sample("yidi_db_statement_seconds_count", service=service, source=source)
                for source in ("pricing", "refdata.policies", "other")}

    async def a_stages_loop() -> None:
        for _ in range(3):
            await pool.fetchval("SELECT 1")

    try:
        with statements_for("pricing"):
            stage = asyncio.create_task(a_stages_loop())  # the task keeps the source it started with
        await stage
        with statements_for("refdata.policies"):
            await pool.fetchval("SELECT 2")
            with pytest.raises(asyncpg.UndefinedTableError):
                await pool.fetch("SELECT * FROM no_such_table_here")
        await pool.fetchval("SELECT 3")
        await _until_logged(1, service, 0)
        await _until_logged(2, service, 0, "refdata.policies")
        assert counts() == {"pricing": 3, "refdata.policies": 2, "other": 1}
        assert _sample("yidi_db_statement_errors_total", service=service, source="refdata.policies",
                       error="UndefinedTableError") == 1
        assert STATEMENT_SOURCE.get() == "other"  # the blocks set it back
    finally:
        await pool.close()


async def test_a_stages_purge_is_counted_apart_from_its_batches(settings):
    """Pricing's and filing's purge of old rows runs in a task the stage starts after a batch: its
    bulk DELETEs (in transactions of their own) are not the batch's statements."""
    service = f"svc_{uuid.uuid4().hex[:8]}"
    pool = await create_pool(settings.database_url, size=2, service=service)
    forgot = asyncio.Event()

    async def forget(conn) -> int:
        await conn.fetchval("SELECT 0")
        forgot.set()
        return 0

    try:
        purge = Purge("pricing", Repository(pool), forget)
        with statements_for("pricing"):
            await pool.fetchval("SELECT 1")  # the batch
            purge.due()
        await asyncio.wait_for(forgot.wait(), 10)
        await _until_logged(3, service, 0, "pricing-purge")  # BEGIN, the DELETE, COMMIT
        assert _sample("yidi_db_statement_seconds_count", service=service, source="pricing") == 1
        assert _sample("yidi_db_statement_seconds_count", service=service, source="pricing-purge") == 3
    finally:
        await pool.close()


async def test_a_pool_without_a_service_is_not_timed(settings):
    before = sum(s.value for m in REGISTRY.collect() if m.name == "yidi_db_statement_seconds"
                 for s in m.samples if s.name.endswith("_count"))
    pool = await create_pool(settings.database_url, size=1)
    try:
        assert await pool.fetchval("SELECT 1") == 1
        await asyncio.sleep(0.05)
    finally:
        await pool.close()
    after = sum(s.value for m in REGISTRY.collect() if m.name == "yidi_db_statement_seconds"
                for s in m.samples if s.name.endswith("_count"))
    assert after == before


async def test_the_caches_calls_to_redis_are_timed_by_operation_and_outcome(settings):
    cache = VersionedCache(settings.redis_url, ttl_seconds=60, prefix=settings.namespace)
    key = unique("k")
    ok = {op: _sample("yidi_redis_seconds_count", operation=op, outcome="ok") for op in ("get", "put", "forget")}
    try:
        await cache.put(key, 1, {"v": 1})
        await cache.get_many([key])
        assert await cache.forget({key: 2}, within=1.0)
    finally:
        await cache.close()
    assert {op: _sample("yidi_redis_seconds_count", operation=op, outcome="ok") - n for op, n in ok.items()} == \
        {"get": 1, "put": 1, "forget": 1}

    away = VersionedCache("redis://127.0.0.1:1/0", ttl_seconds=60, prefix=settings.namespace)
    failed = _sample("yidi_redis_seconds_count", operation="get", outcome="error")
    try:
        with pytest.raises(CacheUnavailable):
            await away.get_many([key])
        with pytest.raises(CacheUnavailable):
            await away.get_many([key])  # the breaker is open: no call made, none counted
    finally:
        await away.close()
    assert _sample("yidi_redis_seconds_count", operation="get", outcome="error") == failed + 1


async def test_the_postgres_probe_has_a_connection_of_its_own_and_opens_it_again_after_a_failure(settings):
    from yidi.platform.probes import PostgresProbe

    probe = PostgresProbe(settings.database_url, timeout=5.0)
    pool = await create_pool(settings.database_url, size=1)
    holder = await asyncpg.connect(settings.database_url)
    try:
        assert await probe()
        # The service's pool all taken (its one connection waiting on a lock): Postgres is there.
        table = f"t_{uuid.uuid4().hex[:8]}"
        await holder.execute(f"CREATE TABLE {table} (k int)")
        await holder.execute("BEGIN")
        await holder.execute(f"LOCK TABLE {table}")
        waiting = asyncio.create_task(pool.fetch(f"SELECT * FROM {table}"))
        await asyncio.sleep(0.2)
        assert not waiting.done() and await probe()
        await holder.execute("ROLLBACK")
        await waiting
        await holder.execute(f"DROP TABLE {table}")
        # Its connection killed (a Postgres restart, a DBA): Postgres is answered again on another.
        # Whether the next probe fails first depends on when the server's goodbye arrives: before
        # it, the probe sees its connection closed and opens another at once; as its query starts,
        # the query fails ("connection is closed", or asyncpg's InternalClientError) and the probe
        # after opens another (a clean-clone run met the first; tests/unit/test_probes.py pins the
        # second).
        old = probe._conn.get_server_pid()
        assert await holder.fetchval("SELECT pg_terminate_backend($1, 5000)", old)
        try:
            answered = await probe()
        except Exception:  # noqa: BLE001 - any: the probe takes any failure as "no answer"
            answered = await probe()
        assert answered and probe._conn.get_server_pid() != old
    finally:
        probe.close()
        await holder.close()
        await pool.close()
    away = PostgresProbe("postgresql://yidi@127.0.0.1:1/none", timeout=1.0)
    with pytest.raises(OSError):
        await away()


async def test_a_services_connections_and_its_probes_are_named_after_it_in_pg_stat_activity(settings):
    # Who holds the lock a stage waits for, whose connections fill max_connections: a DBA reads
    # pg_stat_activity, where every connection was "" before.
    from yidi.platform.db import settings_pool
    from yidi.platform.probes import PostgresProbe

    named = settings.model_copy(update={"instance": "box-7"})
    pool = await settings_pool(named, size=1, service="pricing")
    probe = PostgresProbe(settings.database_url, timeout=5.0, application_name="yidi-pricing-probe@box-7")
    try:
        assert await pool.fetchval("SHOW application_name") == "yidi-pricing@box-7"
        assert await probe()
        assert await probe._conn.fetchval("SHOW application_name") == "yidi-pricing-probe@box-7"
        unnamed = await settings_pool(named, size=1)  # a pool of neither a service nor a tool: Postgres's default
        try:
            assert await unnamed.fetchval("SHOW application_name") == ""
        finally:
            await unnamed.close()
        # One the operator's YIDI_DATABASE_URL names is theirs: kept.
        sep = "&" if "?" in settings.database_url else "?"
        own = await settings_pool(named, size=1, service="pricing", dsn=f"{settings.database_url}{sep}application_name=ops")
        ops_probe = PostgresProbe(f"{settings.database_url}{sep}application_name=ops", timeout=5.0,
                                  application_name="yidi-pricing-probe@box-7")
        try:
            assert await own.fetchval("SHOW application_name") == "ops"
            assert await ops_probe()  # the probe too (a review, session 46: it named itself over the URL's)
            assert await ops_probe._conn.fetchval("SHOW application_name") == "ops"
        finally:
            ops_probe.close()
            await own.close()
        # Past Postgres's 63 bytes, a pod's name keeps its end: the hashes that tell its replicas apart.
        pod = settings.model_copy(update={"instance": "yidi-clearing-settlement-eu-production-5c7d8f9b6-x2k9q"})
        long = await settings_pool(pod, size=1, service="clearing")
        try:
            shown = await long.fetchval("SHOW application_name")
            assert shown == "yidi-clearing@~learing-settlement-eu-production-5c7d8f9b6-x2k9q" and len(shown) == 63, shown
        finally:
            await long.close()
    finally:
        probe.close()
        await pool.close()
