"""A stopping service closes its database pool within a bound: a Postgres that does not answer
(a network partition, a frozen host) held each connection's goodbye for up to its command timeout,
and the service outlived its supervisor's grace period."""

from __future__ import annotations

import asyncio
import time

from yidi.platform.db import close_pool


class _Pool:
    def __init__(self, close_takes: float) -> None:
        self.close_takes = close_takes
        self.closed = self.terminated = False

    async def close(self) -> None:
        await asyncio.sleep(self.close_takes)
        self.closed = True

    def terminate(self) -> None:
        self.terminated = True


async def test_a_pool_that_closes_in_time_is_closed_gracefully():
    pool = _Pool(0.01)
    await close_pool(pool, 1.0)  # type: ignore[arg-type]
    assert (pool.closed, pool.terminated) == (True, False)


async def test_a_pool_whose_server_does_not_answer_is_dropped_after_the_bound(caplog):
    pool = _Pool(60)
    started = time.monotonic()
    await close_pool(pool, 0.2)  # type: ignore[arg-type]
    assert time.monotonic() - started < 2
    assert (pool.closed, pool.terminated) == (False, True)
    assert "did not close within 0.2 s" in caplog.text
