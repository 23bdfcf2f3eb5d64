"""The services' Postgres connections plan every run of a prepared statement for its own values
(Settings.db_plan_cache_mode): a generic plan kept from when a table was small scanned whole tables
on a fresh database (docs/BENCHMARKS.md, "Generic plans on a fresh database")."""

from __future__ import annotations

import pytest

from yidi.platform.db import create_pool
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
    # "server" sends nothing: the test server's own default (auto) applies.
    assert "$1" in await plan_after_six_runs(settings.database_url, "server")
