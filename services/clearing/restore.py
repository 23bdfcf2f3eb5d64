"""Clearing's part of ``yidi-recover clearing``: the months closed after the backup, written into the
restored database with their cuts before the service handles anything again.

After a restore the settlement stage and the month runs (``clearing-admin``) handle their records
again side by side, each from where the backup has it. A month's run and the settlements around
its close would meet in whichever order the two stages reach them: a settlement entered before the
close but handled again after its redone close would land in the next month (the month's published
statement had it: cleared twice), and one entered after the close but handled again before it would
land in the closed month (in no published statement: never cleared).

Each close publishes its cut on ``clearing.periods`` (``PeriodClosed``): where the settlement stage
stood on each partition. Written into the restored database (``clearing.periods`` closed, its
statements not yet totalled, and ``clearing.period_cuts``), a settlement handled again lands by its
record's offset against the cut (``repository.Cleared``), as it did the first time, and the month's
redone run totals it only once the settlement stage has passed the cut again
(``ClearingRepository.short_of_cut``).
"""

from __future__ import annotations

from datetime import datetime
from importlib import resources

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import ValidationError

from yidi.contracts.clearing import PeriodClosed
from yidi.platform.recover import Refused
from yidi.platform.settings import Settings
from yidi.platform.topics import CLEARING_PERIODS

# The migration that brought ``period_cuts``: run here if the backup is older than it (its
# statements are idempotent; the service's migrations record it at its start).
CUTS_MIGRATION = "014_period_cuts.sql"


async def published_closes(settings: Settings) -> dict[str, PeriodClosed]:
    """Every month's close on ``clearing.periods`` (committed records only), the latest of each month."""
    topic = settings.topic(CLEARING_PERIODS)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        if topic not in await admin.list_topics():  # no month closed since the topic came
            return {}
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [TopicPartition(topic, p["partition"]) for p in sorted(described["partitions"], key=lambda p: p["partition"])]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)  # the stable end under read_committed
        closes: dict[str, PeriodClosed] = {}
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for r in records:
                    if r.value is None:
                        continue
                    try:
                        close = PeriodClosed.model_validate_json(r.value)
                    except ValidationError as exc:
                        raise Refused(f"{topic}[{r.partition}] offset {r.offset} is not a month's close "
                                      f"({exc.errors()[0]['msg']}): nothing written") from exc
                    closes[close.setlym] = close
        return closes
    finally:
        await consumer.stop()


async def restore_closes(settings: Settings, do_apply: bool) -> list[str]:
    """Write into the restored database each month closed on ``clearing.periods`` that it lacks,
    with its cut (``do_apply``); what it writes, or would, one line per month."""
    closes = await published_closes(settings)
    conn = await asyncpg.connect(settings.database_url)
    try:
        if not await conn.fetchval("SELECT to_regclass('clearing.period_cuts') IS NOT NULL") and closes and do_apply:
            migration = resources.files("services.clearing.migrations").joinpath(CUTS_MIGRATION).read_text()
            await conn.execute(f"SET search_path TO clearing; {migration}; RESET search_path")
        have = {r["setlym"] for r in await conn.fetch("SELECT setlym FROM clearing.periods WHERE state = 'closed'")}
        lines = []
        for month, close in sorted(closes.items()):
            if month in have:
                continue
            cut = ", ".join(f"{c.topic}[{c.partition}] {c.offset}" for c in close.cut) or "no settlement yet"
            lines.append(f"closed  month {month}, closed at {close.closed_at} after the backup; its settlements "
                         f"land by its cut ({cut}), and its run is handled again once they are")
            if do_apply:
                async with conn.transaction():
                    await conn.execute(
                        """INSERT INTO clearing.periods (setlym, state, closed_at) VALUES ($1, 'closed', $2)
                           ON CONFLICT (setlym) DO NOTHING""", month, datetime.fromisoformat(close.closed_at))
                    await conn.executemany(
                        """INSERT INTO clearing.period_cuts (setlym, topic, kafka_partition, cut) VALUES ($1, $2, $3, $4)
                           ON CONFLICT DO NOTHING""", [(month, c.topic, c.partition, c.offset) for c in close.cut])
        return lines
    finally:
        await conn.close()
