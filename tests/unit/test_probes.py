"""The dependency probes: each answer sets its gauge to now, whatever the traffic; a probe that
fails or hangs leaves it where it was, so the gauge's age says how long the dependency has been away."""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg
import pytest
from prometheus_client import CollectorRegistry, Gauge

from yidi.platform import probes


async def _run(reach, seconds: float = 0.02, for_seconds: float = 0.15) -> float:
    """The gauge's value after probing for ``for_seconds``."""
    registry = CollectorRegistry()
    task = asyncio.create_task(probes.reach_every(seconds, reach, Gauge("reached", "test", registry=registry), "Thing"))
    await asyncio.sleep(for_seconds)
    task.cancel()
    return registry.get_sample_value("reached")


async def test_an_answer_sets_the_gauge_to_now():
    before = time.time()

    async def answers() -> bool:
        return True

    assert await _run(answers) >= before


async def test_a_probe_that_fails_hangs_or_says_no_leaves_the_gauge_and_is_logged_once(caplog):
    async def fails() -> bool:
        raise OSError("connection refused")

    async def hangs() -> bool:
        await asyncio.sleep(10)
        return True

    async def says_no() -> bool:
        return False

    with caplog.at_level(logging.WARNING, logger="yidi.platform.probes"):
        for reach in (fails, hangs, says_no):
            assert await _run(reach) == 0
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["Thing did not answer"] * 3


class _Connection:
    def __init__(self, fails: bool) -> None:
        self.fails, self.terminated = fails, False

    def is_closed(self) -> bool:
        return self.terminated

    async def fetchval(self, query: str) -> bool:
        if self.fails:
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")
        return True

    def terminate(self) -> None:
        self.terminated = True


async def test_a_query_that_fails_drops_the_connection_and_the_next_probe_opens_another(monkeypatch):
    # Its connection's server ended as the query started: that probe fails, and the next one
    # answers on a new connection rather than the dead one.
    opened = [_Connection(fails=True), _Connection(fails=False)]

    async def connect(dsn: str, timeout: float, **settings: object) -> _Connection:
        return opened.pop(0)

    monkeypatch.setattr(probes.asyncpg, "connect", connect)
    probe = probes.PostgresProbe("postgresql://x", timeout=1.0)
    with pytest.raises(asyncpg.exceptions.ConnectionDoesNotExistError):
        await probe()
    assert await probe() and opened == []
