"""Clearing's batch locks, taken in one statement, keep their meaning on the real Postgres.

A settlement batch takes the periods lock shared and its persons' locks in one round trip
(``ClearingRepository.lock_batch``). Batches of other persons run side by side; a batch of the
same person waits; a month's clearing (the periods lock exclusive) waits for every batch in flight.
"""

from __future__ import annotations

import asyncio

import pytest

from services.clearing.repository import ClearingRepository
from yidi.platform.db import create_pool, migrate

pytestmark = pytest.mark.integration


async def _blocked(task: asyncio.Task) -> bool:
    """Whether ``task`` is still waiting after a moment."""
    await asyncio.sleep(0.3)
    return not task.done()


async def test_a_batch_holds_its_persons_and_the_periods_shared(settings):
    pool = await create_pool(settings.database_url, size=4)
    try:
        await migrate(pool, "clearing", "services.clearing.migrations")
        repo = ClearingRepository(pool)
        async with repo.transaction() as first:
            await repo.lock_batch(first, [b"P-LOCK-1", b"P-LOCK-2"])
            closed, rows = await repo.batch_reads(first, ["no-such-msgid"], ["no-such-setl"])
            assert rows == [] and isinstance(closed, set)

            async def batch(keys: list[bytes]) -> None:
                async with repo.transaction() as conn:
                    await repo.lock_batch(conn, keys)

            async def month() -> None:
                async with repo.transaction() as conn:
                    await repo.closed_periods(conn)

            # Another person: runs at once, beside the first batch (the periods lock is shared).
            await asyncio.wait_for(batch([b"P-LOCK-3"]), timeout=5)
            same_person = asyncio.create_task(batch([b"P-LOCK-2"]))
            clearing_a_month = asyncio.create_task(month())
            assert await _blocked(same_person)
            assert await _blocked(clearing_a_month)
        # The first batch committed: both go on.
        await asyncio.wait_for(asyncio.gather(same_person, clearing_a_month), timeout=5)
    finally:
        await pool.close()
