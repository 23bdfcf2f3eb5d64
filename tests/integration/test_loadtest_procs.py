"""A load test's processes get the settings it is given (``--env``), never the shell's ``YIDI_*``
ones, and its report says which Kafka transaction protocol each stage spoke: a run is what it says."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from loadtest.procs import Processes, bench_database, not_passed_on, own_database, transaction_versions
from yidi.platform.db import execute_alone

pytestmark = pytest.mark.integration


async def test_env_given_reaches_the_stage_and_the_shells_yidi_settings_do_not(settings, v2_cluster, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setenv("YIDI_KAFKA_TRANSACTIONS", "v1")  # as in `YIDI_KAFKA_TRANSACTIONS=v1 make bench`
    assert "YIDI_KAFKA_TRANSACTIONS" in not_passed_on()
    # A namespace of its own: a bare hop consumes whatever its source topic holds.
    own = settings.model_copy(update={"namespace": f"{settings.namespace}procs{uuid.uuid4().hex[:6]}."})
    procs = Processes(own, tmp_path / "logs")
    procs.start_reference("eligible", None)  # the code's default: v2 where the cluster has it
    procs.start_reference("priced", {"YIDI_KAFKA_TRANSACTIONS": "v1"})
    try:
        await procs.wait_ready()
    finally:
        codes = procs.stop_all()
    assert codes == {"ref-eligible": 0, "ref-priced": 0}
    assert transaction_versions(tmp_path / "logs") == {"ref-eligible": 2, "ref-priced": 1}


async def database_exists(settings, name: str) -> bool:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


async def test_a_load_test_gets_a_database_of_its_own_dropped_after_it_unless_kept(settings):
    tag = "T" + uuid.uuid4().hex[:6]
    async with own_database(settings, tag) as own:
        assert own.database_url.endswith(f"/{bench_database(tag)}") and own.namespace == settings.namespace
        conn = await asyncpg.connect(own.database_url)
        try:
            assert await conn.fetchval("SELECT current_database()") == bench_database(tag)
            assert await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = 'clearing'") == 0
        finally:
            await conn.close()
    assert not await database_exists(settings, bench_database(tag))
    kept = "K" + uuid.uuid4().hex[:6]
    try:
        async with own_database(settings, kept, keep=True):
            pass
        assert await database_exists(settings, bench_database(kept))
    finally:
        await execute_alone(settings.database_url, f'DROP DATABASE IF EXISTS "{bench_database(kept)}" WITH (FORCE)')


async def test_a_load_test_records_the_postgres_settings_its_figures_depend_on(settings):
    from loadtest.procs import POSTGRES_SETTINGS, postgres_settings

    got = await postgres_settings(settings.database_url)
    assert got is not None and list(got) == list(POSTGRES_SETTINGS)
    conn = await asyncpg.connect(settings.database_url)
    try:
        assert got["random_page_cost"] == await conn.fetchval("SHOW random_page_cost")
        assert got["server_version"] == await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    assert await postgres_settings("postgresql://yidi@127.0.0.1:1/yidi") is None  # nothing listens there

