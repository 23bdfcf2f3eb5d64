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


async def test_the_operator_commands_drop_their_pool_after_the_bound(monkeypatch):
    # The operator commands (the outage status, the pending filings past the office's limit, the
    # stale-mark sweep) closed their pool unbounded: with Postgres frozen after their read, a
    # command hung for each connection's command timeout (a review, session 34; left then).
    from datetime import UTC, datetime

    from services.eligibility import status, sweep
    from services.filing import overdue
    from yidi.platform import db
    from yidi.platform.settings import Settings

    pools: list[_Pool] = []

    async def frozen_pool(settings, size, tool):
        assert tool in ("eligibility-sweep", "region-status", "filing-overdue")  # named in pg_stat_activity
        pools.append(_Pool(60))
        return pools[-1]

    class _Repository:
        def __init__(self, pool) -> None:
            pass

        async def all_outages(self, at):
            return []

        async def office_overdue_filings(self, before, insured):
            return []

    class _Cache:
        async def close(self) -> None:
            pass

    class _Subjects:
        def __init__(self, repo, cache) -> None:
            pass

        async def sweep_all(self) -> bool:
            return True

    monkeypatch.setattr(db.close_pool, "__defaults__", (0.2,))
    for module in (status, sweep, overdue):
        monkeypatch.setattr(module, "settings_pool", frozen_pool)
    monkeypatch.setattr(status, "EligibilityRepository", _Repository)
    monkeypatch.setattr(overdue, "FilingRepository", _Repository)
    monkeypatch.setattr(sweep, "subjects_cache", lambda settings: _Cache())
    monkeypatch.setattr(sweep, "Subjects", _Subjects)
    settings = Settings()
    # Each bounded by close_pool's 0.2 s (the frozen pools' close takes 60 s), not by its wait_for.
    await asyncio.wait_for(status.current(settings, datetime.now(UTC)), 5)
    await asyncio.wait_for(overdue.overdue_filings(settings, None), 5)
    await asyncio.wait_for(sweep.sweep(settings), 5)
    assert [(p.closed, p.terminated) for p in pools] == [(False, True)] * 3
