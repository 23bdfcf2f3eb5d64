"""Locks taken with the query that begins a transaction (``Repository.transaction(locks(...))``),
on the real Postgres: pricing's and clearing's settlement batches lock their persons with BEGIN,
in one round trip. That query takes no parameters, so the lock keys are computed here, as
Postgres's ``hashtext`` of the same texts ``pg_advisory_xact_lock(hashtext(scope || ':' || key))``
hashed: the statement holds integers only, never a person number."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import asyncpg
import pytest

from yidi.platform.db import Locks, Repository, hashtext, lock_keys, locks
from yidi.platform.errors import BadData

pytestmark = pytest.mark.integration

KEYS = ["P1", "a'b", "back\\slash", "\\'", "x'); SELECT pg_sleep(30); --", "$$q$$", "全角’", "13100000000000000001😀"]


async def test_hashtext_here_is_the_servers(settings):
    rnd = random.Random(20261205)
    alphabet = "abcXYZ0123456789'\\\"$;-— 全角’é😀\t\n"
    texts = ["", "a", "yidi-clearing-periods", *KEYS] + [
        "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(0, 60))) for _ in range(2000)]
    conn = await asyncpg.connect(settings.database_url)
    try:
        server = {r["t"]: r["h"] for r in await conn.fetch("SELECT t, hashtext(t) AS h FROM unnest($1::text[]) AS t",
                                                              texts)}
    finally:
        await conn.close()
    assert {t: hashtext(t) for t in texts} == server


async def _held(conn: asyncpg.Connection) -> dict[int, str]:
    """The advisory locks this connection's backend holds: their bigint keys, and their modes."""
    rows = await conn.fetch("""SELECT classid::bigint AS hi, objid::bigint AS lo, mode FROM pg_locks
                               WHERE locktype = 'advisory' AND pid = pg_backend_pid()""")
    return {((r["hi"] << 32) | r["lo"]) - (1 << 64 if r["hi"] >= 1 << 31 else 0): r["mode"] for r in rows}


async def test_the_locks_begun_with_the_transaction_are_the_servers_hashtext_locks(settings):
    pool = await asyncpg.create_pool(settings.database_url, min_size=2, max_size=2)
    try:
        repo = Repository(pool)
        async with repo.transaction(locks("yidi-test", [k.encode() for k in KEYS], shared_first="yidi-test-shared")) as conn:
            expected = {k: "ExclusiveLock" for k in await conn.fetchval(
                "SELECT array_agg(hashtext($1 || ':' || k)::bigint) FROM unnest($2::text[]) AS k", "yidi-test", KEYS)}
            expected[await conn.fetchval("SELECT hashtext($1)::bigint", "yidi-test-shared")] = "ShareLock"
            assert await _held(conn) == expected
            # Another transaction waits for a person held (lock_keys: the same key) ...
            async with pool.acquire() as other, other.transaction():
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(lock_keys(other, "yidi-test", ["x'); SELECT pg_sleep(30); --"]), 0.5)
            async with pool.acquire() as other, other.transaction():
                await asyncio.wait_for(lock_keys(other, "yidi-test", ["P2"]), 5)  # ... not for another
                # and takes the shared lock beside it, but not exclusively.
                await asyncio.wait_for(other.execute("SELECT pg_advisory_xact_lock_shared(hashtext('yidi-test-shared'))"), 5)
        async with pool.acquire() as conn:
            assert await _held(conn) == {}
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def _one_connection(settings, table: str) -> AsyncIterator[tuple[Repository, asyncpg.Pool, list[str]]]:
    """A Repository on a pool of one connection with a temp table ``table`` (v text) of that
    connection's, and what the loop's exception handler reports meanwhile: the pool rolls back a
    connection released inside a transaction too, but says so there, and the transaction must end
    before that."""
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    reported: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context["message"]))
    try:
        await pool.execute(f"CREATE TEMP TABLE IF NOT EXISTS {table} (v text)")
        yield Repository(pool), pool, reported
    finally:
        loop.set_exception_handler(None)
        await pool.close()


async def _one_kept_one_dropped(repo: Repository, table: str, locked: Locks | None) -> None:
    """A batch that commits ('kept'), then one that fails ('dropped')."""
    async with repo.transaction(locked) as conn:
        await conn.execute(f"INSERT INTO {table} VALUES ('kept')")
    with pytest.raises(RuntimeError):
        async with repo.transaction(locked) as conn:
            await conn.execute(f"INSERT INTO {table} VALUES ('dropped')")
            raise RuntimeError("the batch failed")


async def test_a_transaction_begun_with_locks_commits_and_rolls_back_itself(settings):
    async with _one_connection(settings, "t_locks") as (repo, pool, reported):
        await _one_kept_one_dropped(repo, "t_locks", locks("yidi-test", ["P1"]))
        # Cancelled while waiting for a lock another transaction holds.
        async with _other(settings) as holder:
            await holder.execute("BEGIN; SELECT pg_advisory_xact_lock(hashtext('yidi-test:P9'))")
            waiting = asyncio.ensure_future(repo.transaction(locks("yidi-test", ["P9"])).__aenter__())
            await asyncio.sleep(0.3)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await holder.execute("ROLLBACK")
        async with pool.acquire() as conn:
            assert [r["v"] for r in await conn.fetch("SELECT v FROM t_locks")] == ["kept"]
            assert await _held(conn) == {}
        assert not [m for m in reported if "active transaction" in m], reported
        # A key Postgres cannot hold is the record's fault, as it was when Postgres hashed it.
        with pytest.raises(BadData):
            locks("yidi-test", ["P\x00"])
        assert locks("yidi-test", [None, b""]) is None  # nothing to lock: a plain transaction


async def test_a_transaction_without_locks_commits_and_rolls_back_itself(settings):
    # Begun and committed by Repository.transaction as the one with locks (session 39): a failing
    # batch, and one cancelled mid-statement, leave nothing written and no transaction open when
    # the connection goes back to the pool.
    async with _one_connection(settings, "t_plain") as (repo, pool, reported):
        await _one_kept_one_dropped(repo, "t_plain", None)

        async def slow() -> None:
            async with repo.transaction() as conn:
                await conn.execute("INSERT INTO t_plain VALUES ('cancelled')")
                await conn.execute("SELECT pg_sleep(10)")

        running = asyncio.ensure_future(slow())
        await asyncio.sleep(0.3)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        async with pool.acquire() as conn:
            assert [r["v"] for r in await conn.fetch("SELECT v FROM t_plain")] == ["kept"]
            assert not conn.is_in_transaction()
        assert not [m for m in reported if "active transaction" in m], reported


class _other:
    """A connection of its own (not the pool's one)."""

    def __init__(self, settings) -> None:
        self.dsn = settings.database_url

    async def __aenter__(self) -> asyncpg.Connection:
        self.conn = await asyncpg.connect(self.dsn)
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.close()
