"""The services' Postgres connections plan every run of a prepared statement for its own values
(Settings.db_plan_cache_mode): a generic plan kept from when a table was small scanned whole tables
on a fresh database (docs/BENCHMARKS.md, "Generic plans on a fresh database"). They run no parallel
plans (Settings.db_parallel_workers): workers forked for a batch's keyed statements cost CPU the
box lacks (docs/BENCHMARKS.md, "Parallel workers")."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from yidi.platform.db import create_pool, settings_pool
from yidi.platform.settings import Settings

pytestmark = pytest.mark.integration


async def plan_after_six_runs(dsn: str, mode: str) -> str:
    pool = await create_pool(dsn, size=1, plan_cache_mode=mode)
    try:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TEMP TABLE kept (msgid text PRIMARY KEY, body text)")
            await conn.execute("PREPARE read_kept(text) AS SELECT body FROM kept WHERE msgid = $1")
            for _ in range(6):  # after five, Postgres may switch a statement to its generic plan
                await conn.execute("EXECUTE read_kept('M1')")
            return "\n".join(r[0] for r in await conn.fetch("EXPLAIN EXECUTE read_kept('M1')"))
    finally:
        await pool.close()


async def test_each_run_is_planned_for_its_values_unless_set_otherwise(settings):
    default = Settings.model_fields["db_plan_cache_mode"].default
    assert default == "force_custom_plan"
    custom = await plan_after_six_runs(settings.database_url, default)
    assert "'M1'" in custom and "$1" not in custom
    generic = await plan_after_six_runs(settings.database_url, "auto")
    assert "$1" in generic, generic
    # "server" sends no plan_cache_mode: the test server's own default (auto) applies.
    assert "$1" in await plan_after_six_runs(settings.database_url, "server")


async def parallel_plan(dsn: str, workers: int | str, table: str) -> str:
    """``max_parallel_workers_per_gather`` and the plan of a scan of ``table`` that Postgres runs in
    parallel when allowed (parallel costs set to nothing), on a connection of a pool made with
    ``parallel_workers``."""
    pool = await create_pool(dsn, size=1, parallel_workers=workers)
    try:
        async with pool.acquire() as conn, conn.transaction():
            for setting in ("parallel_setup_cost", "parallel_tuple_cost", "min_parallel_table_scan_size"):
                await conn.execute(f"SET LOCAL {setting} = 0")
            shown = await conn.fetchval("SHOW max_parallel_workers_per_gather")
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN SELECT count(*) FROM {table} WHERE n % 7 = 0"))
            return f"{shown}\n{plan}"
    finally:
        await pool.close()


async def test_the_services_connections_run_no_parallel_plans_unless_set_otherwise(settings):
    default = Settings.model_fields["db_parallel_workers"].default
    assert default == 0
    table = f"parallel_{uuid.uuid4().hex[:12]}"  # not a temporary table: those are never scanned in parallel
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(f"CREATE TABLE {table} AS SELECT g AS n FROM generate_series(1, 50000) g")
        await conn.execute(f"ANALYZE {table}")
        serial = await parallel_plan(settings.database_url, default, table)
        assert serial.startswith("0\n") and "Gather" not in serial, serial
        allowed = await parallel_plan(settings.database_url, 2, table)
        assert allowed.startswith("2\n") and "Gather" in allowed, allowed
        # "server" sends no max_parallel_workers_per_gather: the server's own setting applies.
        server = await conn.fetchval("SHOW max_parallel_workers_per_gather")
        assert (await parallel_plan(settings.database_url, "server", table)).startswith(f"{server}\n")
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()


async def test_a_pool_made_from_the_settings_takes_both_and_its_size(settings):
    s = settings.model_copy(update={"db_plan_cache_mode": "force_generic_plan", "db_parallel_workers": 3,
                                    "db_pool_size": 3})
    pool = await settings_pool(s, size=1)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
            assert await conn.fetchval("SHOW max_parallel_workers_per_gather") == "3"
        assert pool.get_max_size() == 1
    finally:
        await pool.close()
    pool = await settings_pool(s)
    try:
        assert pool.get_max_size() == 3
    finally:
        await pool.close()


async def test_a_repositorys_transaction_reads_committed_whatever_the_databases_default(settings):
    # The stages' locking (lock, then read in a statement of its own) needs READ COMMITTED.
    from yidi.platform.db import Repository

    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1,
                                     server_settings={"default_transaction_isolation": "repeatable read"})
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW default_transaction_isolation") == "repeatable read"
        async with Repository(pool).transaction() as conn:
            assert await conn.fetchval("SHOW transaction_isolation") == "read committed"
    finally:
        await pool.close()
