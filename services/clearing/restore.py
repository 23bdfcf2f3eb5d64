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

import asyncio
from importlib import resources

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from yidi.contracts.clearing import PeriodClosed
from yidi.platform.recover import Refused
from yidi.platform.settings import Settings
from yidi.platform.topics import CLEARING_PERIODS

from services.clearing.repository import SETTLEMENT_GROUP

# The migration that brought ``period_cuts``: run here if the backup is older than it (its
# statements are idempotent; the service's migrations record it at its start).
CUTS_MIGRATION = "014_period_cuts.sql"


# How long reading ``clearing.periods`` may take (a partition without a leader, the broker away).
READ_SECONDS = 60.0


async def published_closes(settings: Settings) -> dict[str, PeriodClosed]:
    """Every month's close on ``clearing.periods`` (committed records only), the latest of each month
    (a tombstone removes its month)."""
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
        # The latest record of each key, a tombstone removing it: read as compaction will leave the
        # topic, so that a record that is no month's close (an answer a gateway had sent here before
        # session 48) stops the tool only until a tombstone under its key, not until the cleaner runs.
        latest: dict[bytes, ConsumerRecord] = {}
        async with asyncio.timeout(READ_SECONDS):
            while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    for r in records:
                        if r.value is None:
                            latest.pop(r.key or b"", None)
                        else:
                            latest[r.key or b""] = r
        closes: dict[str, PeriodClosed] = {}
        for r in sorted(latest.values(), key=lambda r: (r.partition, r.offset)):
            try:
                close = PeriodClosed.model_validate_json(r.value)
            except ValidationError as exc:
                raise Refused(f"{topic}[{r.partition}] offset {r.offset} (key {(r.key or b'').decode(errors='replace')!r}) "
                              f"is not a month's close ({exc.errors()[0]['msg']}): nothing written, nothing moved; "
                              "a tombstone under its key removes it") from exc
            closes[close.setlym] = close
        return closes
    except TimeoutError as exc:
        raise Refused(f"{topic} could not be read to its end in {READ_SECONDS:.0f} s: nothing written, nothing "
                      "moved; run yidi-recover again") from exc
    finally:
        await consumer.stop()


async def _partition_ends(settings: Settings, closes: list[PeriodClosed]) -> dict[TopicPartition, int]:
    """The end offset of each partition the cuts of ``closes`` name that exists now."""
    named = sorted({TopicPartition(c.topic, c.partition) for close in closes for c in close.cut})
    if not named:
        return {}
    try:
        async with asyncio.timeout(READ_SECONDS):
            return await _ends(settings, named)
    except TimeoutError as exc:
        raise Refused(f"the ends of {', '.join(sorted({tp.topic for tp in named}))} could not be read in "
                      f"{READ_SECONDS:.0f} s: nothing written, nothing moved; run yidi-recover again") from exc


async def _ends(settings: Settings, named: list[TopicPartition]) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        topics = set(await admin.list_topics())
        present = sorted({tp.topic for tp in named if tp.topic in topics})
        partitions = {(t["topic"], p["partition"]) for t in (await admin.describe_topics(present) if present else [])
                      for p in t.get("partitions") or []}
    finally:
        await admin.close()
    existing = [tp for tp in named if (tp.topic, tp.partition) in partitions]
    if not existing:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(existing))
    finally:
        await consumer.stop()


async def restore_closes(settings: Settings, do_apply: bool) -> list[str]:
    """The months closed on ``clearing.periods`` that the restored database lacks, checked, one line
    each; with ``do_apply``, written into it with their cuts (``restored``). Run before the groups
    are moved: a refusal (``Refused``) changes nothing, and a failure half-way leaves the groups
    where they were (the service still refuses to start) and the months written, which a second
    run passes over."""
    closes = await published_closes(settings)
    conn = await asyncpg.connect(settings.database_url)
    try:
        have = {r["setlym"] for r in await conn.fetch("SELECT setlym FROM clearing.periods WHERE state = 'closed'")}
        latest = max(have, default=None)
        lacking = [close for month, close in sorted(closes.items()) if month not in have]
        if early := [c.setlym for c in lacking if latest is not None and c.setlym < latest]:
            raise Refused(f"{settings.topic(CLEARING_PERIODS)} has month(s) {', '.join(early)} closed, which the "
                          f"restored database lacks although it has {latest} closed (months close in order): is "
                          "the topic this database's? Nothing written, nothing moved")
        ends = await _partition_ends(settings, lacking)
        stood = {(r["topic"], r["kafka_partition"]): r["at"] for r in await conn.fetch(
            """SELECT topic, kafka_partition, GREATEST(reached, applied_below) AS at FROM clearing.stage_progress
               WHERE consumer_group = $1""", settings.group(SETTLEMENT_GROUP))}
        for close in lacking:
            for c in close.cut:
                tp = TopicPartition(c.topic, c.partition)
                if (at := stood.get((c.topic, c.partition))) is not None and c.offset < at:
                    # A close after the backup was made where the stage stood then, past where the
                    # backup has it: this cut counts the records of a topic since deleted and created
                    # again (its rows deleted and the partition read again, as the runbook says).
                    raise Refused(f"month {close.setlym}'s cut is at offset {c.offset} of {c.topic}[{c.partition}], "
                                  f"below where the restored database's settlement stage stood ({at}): it counts "
                                  "another topic of that name. Nothing written, nothing moved; publish a tombstone "
                                  f"for {close.setlym} on {settings.topic(CLEARING_PERIODS)} and run yidi-recover "
                                  "again (that month is then redone as before session 45: runbook, \"What it does "
                                  "not cover\")")
                if tp not in ends or c.offset > ends[tp]:
                    now = "no longer exists" if tp not in ends else f"ends at {ends[tp]}"
                    raise Refused(f"month {close.setlym}'s cut is at offset {c.offset} of {c.topic}[{c.partition}], "
                                  f"which {now}: the topic was deleted or emptied since the close, and its settlements "
                                  "cannot be handled again from Kafka. Nothing written, nothing moved; see the "
                                  "runbook, \"The same for any loss of Kafka's data\"")
        if do_apply and lacking and not await conn.fetchval("SELECT to_regclass('clearing.period_cuts') IS NOT NULL"):
            migration = resources.files("services.clearing.migrations").joinpath(CUTS_MIGRATION).read_text()
            await conn.execute(f"SET search_path TO clearing; {migration}; RESET search_path")
        lines = []
        for close in lacking:
            cut = ", ".join(f"{c.topic}[{c.partition}] {c.offset}" for c in close.cut) or "no settlement yet"
            lines.append(f"closed  month {close.setlym}, closed at {close.closed_at.isoformat()} after the backup; its "
                         f"settlements land by its cut ({cut}), and its run is handled again once they are")
            if do_apply:
                async with conn.transaction():
                    await conn.execute(
                        """INSERT INTO clearing.periods (setlym, state, closed_at) VALUES ($1, 'closed', $2)
                           ON CONFLICT (setlym) DO NOTHING""", close.setlym, close.closed_at)
                    await conn.executemany(
                        """INSERT INTO clearing.period_cuts (setlym, topic, kafka_partition, cut, restored)
                           VALUES ($1, $2, $3, $4, true)
                           ON CONFLICT DO NOTHING""", [(close.setlym, c.topic, c.partition, c.offset) for c in close.cut])
        return lines
    finally:
        await conn.close()
