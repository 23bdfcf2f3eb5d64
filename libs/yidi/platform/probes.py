"""Is Postgres there, is Redis there, asked every few seconds whatever the traffic. With no
settlements nothing else asks: a Postgres down at night showed only as one warning (a cache
sweep), and a Redis down as nothing, until the morning's first requests. Each answer sets a
``yidi_*_reached_timestamp_seconds`` gauge, as the stages' lag samples set Kafka's
(YidiPostgresUnreachable, YidiRedisUnreachable); the services' own successful statements and cache
calls set them too."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from yidi.platform import db, metrics

log = logging.getLogger(__name__)

PROBE_SECONDS = 5.0


async def reach_every(seconds: float, reach: Callable[[], Awaitable[bool]], reached: Any, what: str) -> None:
    """Every ``seconds``: ``reach()``, bounded by ``seconds``; True sets ``reached`` (a gauge) to
    now. A failure is logged once until it answers again: the alert and the stages' own retries
    say the rest."""
    failing = False
    while True:
        try:
            async with asyncio.timeout(seconds):
                ok, why = bool(await reach()), "no answer"
        except Exception as exc:  # noqa: BLE001 - a cancellation is a BaseException and passes
            ok, why = False, repr(exc)
        if ok:
            reached.set(time.time())
        elif not failing:
            log.warning("%s did not answer (%s): probed again every %.0f s", what, why, seconds)
        failing = not ok
        await asyncio.sleep(seconds)


class PostgresProbe:
    """``SELECT true`` on a connection of its own, opened again after a failure. Not the service's
    pool: a pool whose connections all wait on a lock (a migration's, a DBA's) has Postgres there,
    and the probe must not wait its turn behind them and call it away."""

    def __init__(self, dsn: str, timeout: float = PROBE_SECONDS, application_name: str | None = None) -> None:
        self._dsn = dsn
        self._timeout = timeout
        # One the DSN names is the operator's, kept as the pool keeps it (a review, session 46).
        self._settings = ({"application_name": application_name}
                          if application_name and not db.names_its_application(dsn) else None)
        self._conn: asyncpg.Connection | None = None

    async def __call__(self) -> bool:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._dsn, timeout=self._timeout, server_settings=self._settings)
        try:
            return bool(await self._conn.fetchval("SELECT true"))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()


async def postgres_every(dsn: str, seconds: float = PROBE_SECONDS, application_name: str | None = None) -> None:
    """``PostgresProbe`` every ``seconds``; its connection shown as ``application_name`` in pg_stat_activity."""
    probe = PostgresProbe(dsn, seconds, application_name)
    try:
        await reach_every(seconds, probe, metrics.DB_REACHED, "Postgres")
    finally:
        probe.close()
