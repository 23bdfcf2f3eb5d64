"""Locks taken by the statement that begins a transaction (``Repository.transaction(locks(...))``),
on the real Postgres: pricing's and clearing's settlement batches lock their persons with BEGIN,
in one round trip. The keys are person numbers from the gateways' messages, written into the
statement as escaped literals: the locks must be exactly those ``lock_keys`` takes with
parameters, whatever the keys hold, and a key can never be read as SQL."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from yidi.platform.db import Repository, lock_keys, locks
from yidi.platform.errors import BadData

pytestmark = pytest.mark.integration

KEYS = ["P1", "a'b", "back\\slash", "\\'", "x'); SELECT pg_sleep(30); --", "$$q$$", "全角’", "E'\\x41'"]


async def _held(conn: asyncpg.Connection) -> set[int]:
    """The advisory locks this connection's backend holds, as the bigint keys they were taken with."""
    rows = await conn.fetch("""SELECT classid::bigint AS hi, objid::bigint AS lo FROM pg_locks
                               WHERE locktype = 'advisory' AND pid = pg_backend_pid()""")
    return {((r["hi"] << 32) | r["lo"]) - (1 << 64 if r["hi"] >= 1 << 31 else 0) for r in rows}


async def _expected(conn: asyncpg.Connection, scope: str, keys: list[str], shared: str | None = None) -> set[int]:
    wanted = set(await conn.fetchval("SELECT array_agg(hashtext($1 || ':' || k)::bigint) FROM unnest($2::text[]) AS k",
                                     scope, keys))
    if shared is not None:
        wanted.add(await conn.fetchval("SELECT hashtext($1)::bigint", shared))
    return wanted


@pytest.mark.parametrize("conforming", ["on", "off"])
async def test_the_locks_begun_with_the_transaction_are_lock_keys_locks_whatever_the_keys_hold(settings, conforming):
    pool = await asyncpg.create_pool(settings.database_url, min_size=2, max_size=2,
                                     server_settings={"standard_conforming_strings": conforming})
    try:
        repo = Repository(pool)
        async with repo.transaction(locks("yidi-test", [k.encode() for k in KEYS], shared_first="yidi-test-shared")) as conn:
            assert await _held(conn) == await _expected(conn, "yidi-test", KEYS, "yidi-test-shared")
            assert await conn.fetchval("SELECT 1") == 1  # nothing the keys held ran as SQL
            # Another transaction waits for a person held (lock_keys, with parameters: the same key) ...
            async with pool.acquire() as other, other.transaction():
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(lock_keys(other, "yidi-test", ["x'); SELECT pg_sleep(30); --"]), 0.5)
            async with pool.acquire() as other, other.transaction():
                await asyncio.wait_for(lock_keys(other, "yidi-test", ["P2"]), 5)  # ... not for another
        # Committed: the locks are gone, and the connection is out of its transaction.
        async with pool.acquire() as conn:
            assert await _held(conn) == set() and not conn.is_in_transaction()
    finally:
        await pool.close()


async def test_a_transaction_begun_with_locks_commits_and_rolls_back(settings):
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        repo = Repository(pool)
        await pool.execute("CREATE TEMP TABLE IF NOT EXISTS t_locks (v text)")  # the one connection's
        async with repo.transaction(locks("yidi-test", ["P1"])) as conn:
            await conn.execute("INSERT INTO t_locks VALUES ('kept')")
        with pytest.raises(RuntimeError):
            async with repo.transaction(locks("yidi-test", ["P1"])) as conn:
                await conn.execute("INSERT INTO t_locks VALUES ('dropped')")
                raise RuntimeError("the batch failed")
        async with pool.acquire() as conn:
            assert [r["v"] for r in await conn.fetch("SELECT v FROM t_locks")] == ["kept"]
            assert not conn.is_in_transaction() and await _held(conn) == set()
        # A key Postgres cannot hold is the record's fault, as it was with parameters.
        with pytest.raises(BadData):
            async with repo.transaction(locks("yidi-test", ["P\x00"])):
                pass
        assert locks("yidi-test", [None, b""]) is None  # nothing to lock: a plain transaction
    finally:
        await pool.close()
