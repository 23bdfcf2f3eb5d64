"""Every offset a stage or a feed commits says where its batch began, once the service's database
holds that (yidi.platform.progress), and ``recover.behind`` finds a database that stands behind
them: one restored without yidi-recover, which a service then refuses to start on (the e2e restore
test starts the four). On the real Kafka and Postgres."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata
from pydantic import BaseModel

from yidi.platform import db, progress, recover
from yidi.platform.feeds import feed
from yidi.platform.kafka import Incoming, Outgoing, TransactionalStage, ensure_topics
from yidi.platform.service import Service
from yidi.platform.topics import SETTLEMENT_PRICED

from tests.integration.kafka_io import committed, create_topics, produce
from tests.integration.waiting import until

pytestmark = pytest.mark.integration


async def _row(pool, group: str, tp: TopicPartition) -> int | None:
    return await pool.fetchval("SELECT applied_below FROM clearing.stage_progress WHERE consumer_group = $1 AND "
                               "topic = $2 AND kafka_partition = $3", group, tp.topic, tp.partition)


async def _set_row(pool, group: str, tp: TopicPartition, applied_below: int | None) -> None:
    """As a backup restored over the database leaves it: the row of an earlier batch, or none."""
    if applied_below is None:
        await pool.execute("DELETE FROM clearing.stage_progress WHERE consumer_group = $1", group)
    else:
        await pool.execute("UPDATE clearing.stage_progress SET applied_below = $2 WHERE consumer_group = $1",
                           group, applied_below)


@pytest.mark.parametrize("during_handler", [False, True], ids=["offsets-at-commit", "offsets-during-handler"])
async def test_a_stage_commits_where_each_batch_began_and_a_database_behind_that_is_found(
        clearing_of_its_own, during_handler):
    own, repo = clearing_of_its_own
    pool = repo._pool
    s = own.model_copy(update={"namespace": f"{own.namespace}behind{uuid.uuid4().hex[:6]}.", "batch_linger_ms": 0,
                               "kafka_offsets_during_handler": during_handler})
    await ensure_topics(s)
    tp = TopicPartition(s.topic(SETTLEMENT_PRICED), 0)
    await produce(s.kafka_bootstrap, tp.topic, [str(i).encode() for i in range(6)])
    group = s.group("yidi-clearing-behindtest")
    handled: list[list[int]] = []

    async def handle(records: list[Incoming]) -> list[Outgoing]:
        handled.append([r.offset for r in records])
        if records[0].offset != 2:  # the batch of 2 and 3 opens no transaction (all refused before Postgres, say)
            async with repo.transaction() as conn:
                await conn.execute("SELECT 1")
        return []

    own_statements: list[tuple[dict, int]] = []

    async def record_progress(batch: progress.Progress) -> None:
        # With the group's committed offset when it is recorded: the row comes before the batch's
        # commit (the earlier batch's may not show yet: -1, its transaction's markers still on the way).
        found = await committed(s.kafka_bootstrap, group, tp)
        own_statements.append((dict(batch.below), found.offset if found is not None else -1))
        await db.record_progress(pool, "clearing", batch)

    stage = TransactionalStage("behind-test", "clearing", s, [SETTLEMENT_PRICED], "yidi-clearing-behindtest", handle,
                               max_records=2)
    stage.record_progress = record_progress  # as Service.add_stage sets it
    await stage.start()
    try:
        async def all_committed() -> bool:
            found = await committed(s.kafka_bootstrap, group, tp)
            return found is not None and found.offset == 6

        await until(all_committed, timeout=30, poll=0.2)
    finally:
        await stage.stop()
    assert stage.failure is None
    assert stage._offsets_during_handler() == during_handler  # transactions v2 where asked (the local stack's)
    assert handled == [[0, 1], [2, 3], [4, 5]]
    # Only the batch without a transaction recorded its progress in a statement of its own, before
    # its offsets were committed.
    assert [below for below, _ in own_statements] == [{(tp.topic, 0): 2}]
    assert own_statements[0][1] in (-1, 2), own_statements  # not 4, the batch's own
    assert (await committed(s.kafka_bootstrap, group, tp)).metadata == progress.applied(4)
    assert await _row(pool, group, tp) == 4
    assert await recover.behind(s, "clearing") == []

    # A late transaction of an instance the group moved on from does not take the row back.
    await db.record_progress(pool, "clearing", progress.began(group, [(tp.topic, 0, 2)]))
    assert await _row(pool, group, tp) == 4

    await _set_row(pool, group, tp, 2)
    assert await recover.behind(s, "clearing") == [
        f"{group} {tp.topic}[0]: its offset 6 was committed once the database held every record before 4; the "
        "database holds only those before 2"]
    await _set_row(pool, group, tp, None)
    (line,) = await recover.behind(s, "clearing")
    assert line.endswith("the database has no row of it")
    # Another namespace's groups (the same database may hold test namespaces beside it) are not read.
    assert await recover.behind(s.model_copy(update={"namespace": s.namespace + "other."}), "clearing") == []


class Record(BaseModel):
    n: int


async def test_a_feed_commits_where_each_batch_ends_once_applied_and_a_database_behind_that_is_found(
        clearing_of_its_own):
    """The real FastStream subscriber of ``feed()``: its row says where its batch ends once the batch
    is applied, and its acknowledgements carry it."""
    own, repo = clearing_of_its_own
    pool = repo._pool
    s = own.model_copy(update={"namespace": f"{own.namespace}feedbehind{uuid.uuid4().hex[:6]}."})
    topic = "behindfeed"
    await create_topics(s.kafka_bootstrap, s.topic(topic))
    service = Service("clearing", s, migrations=None)
    service.pool = pool  # as its lifespan opens it
    applied: list[int] = []
    rows_while_applying: dict[int, int | None] = {}
    release = asyncio.Event()

    async def apply(record: Record) -> None:
        applied.append(record.n)
        rows_while_applying[record.n] = await _row(pool, group, tp)
        if record.n == 2:
            await release.wait()  # the first batch is 0 to 2; what comes meanwhile is the next one

    feed(service, topic, Record, apply)
    tp = TopicPartition(s.topic(topic), 0)
    group = s.group("yidi-clearing-feed-behindfeed")
    await produce(s.kafka_bootstrap, tp.topic, [f'{{"n": {n}}}'.encode() for n in range(3)])
    await service.broker.start()
    try:
        await until(lambda: applied == [0, 1, 2], timeout=30)
        await produce(s.kafka_bootstrap, tp.topic, [f'{{"n": {n}}}'.encode() for n in range(3, 5)])
        release.set()

        async def all_committed() -> bool:
            found = await committed(s.kafka_bootstrap, group, tp)
            return found is not None and found.offset == 5

        await until(all_committed, timeout=30, poll=0.2)
    finally:
        await service.broker.stop()
    assert applied == [0, 1, 2, 3, 4]
    # A feed records where its batch ends, once applied: not while it applies.
    assert rows_while_applying[2] is None and rows_while_applying[3] == 3
    assert await _row(pool, group, tp) == 5
    assert (await committed(s.kafka_bootstrap, group, tp)).metadata == progress.applied(5)
    assert await recover.behind(s, "clearing") == []
    await _set_row(pool, group, tp, 3)
    assert await recover.behind(s, "clearing") == [
        f"{group} {tp.topic}[0]: its offset 5 was committed once the database held every record before 5; the "
        "database holds only those before 3"]


async def test_an_offset_committed_by_hand_says_nothing_and_is_not_checked(clearing_of_its_own):
    """The runbook's hand procedures (kafka-consumer-groups --reset-offsets) commit without metadata:
    such an offset is not held against the database."""
    own, repo = clearing_of_its_own
    s = own.model_copy(update={"namespace": f"{own.namespace}byhand{uuid.uuid4().hex[:6]}."})
    tp = TopicPartition(s.topic("byhand"), 0)
    await create_topics(s.kafka_bootstrap, tp.topic)
    await produce(s.kafka_bootstrap, tp.topic, [b"x"] * 3)
    group = s.group("yidi-clearing-byhand")
    await recover.commit_offsets(s.kafka_bootstrap, group, {tp: OffsetAndMetadata(3, "")})
    assert await recover.behind(s, "clearing") == []
    await recover.commit_offsets(s.kafka_bootstrap, group, {
        tp: OffsetAndMetadata(3, progress.applied(2))})
    (line,) = await recover.behind(s, "clearing")
    assert line.endswith("the database has no row of it")


async def test_a_service_checks_before_its_migrations_so_a_backup_without_the_table_stays_without_it(
        clearing_of_its_own):
    """A backup from before ``stage_progress`` restored under offsets that say something: the service
    refuses before its migrations run, so the table stays missing and yidi-recover refuses the
    database (rather than taking a table created just now for the backup's time)."""
    own, repo = clearing_of_its_own
    pool = repo._pool
    s = own.model_copy(update={"namespace": f"{own.namespace}notable{uuid.uuid4().hex[:6]}.", "metrics_port": 0})
    await ensure_topics(s)
    tp = TopicPartition(s.topic(SETTLEMENT_PRICED), 0)
    await produce(s.kafka_bootstrap, tp.topic, [b"x"] * 3)
    await recover.commit_offsets(s.kafka_bootstrap, s.group("yidi-clearing-priced"),
                                 {tp: OffsetAndMetadata(3, progress.applied(2))})
    await pool.execute("DROP TABLE clearing.stage_progress")  # as a backup from before the upgrade holds it
    await pool.execute("DELETE FROM clearing.schema_migrations WHERE version = $1", recover.MIGRATION)
    migrated = await pool.fetchval("SELECT count(*) FROM clearing.schema_migrations")

    service = Service("clearing", s, migrations="services.clearing.migrations")
    with pytest.raises(recover.DatabaseBehind) as refused:
        async with service._lifespan():
            pass
    (line,) = refused.value.args[0]
    assert "the database has no clearing.stage_progress at all" in line, line
    assert await pool.fetchval("SELECT to_regclass('clearing.stage_progress')") is None
    assert await pool.fetchval("SELECT count(*) FROM clearing.schema_migrations") == migrated
    with pytest.raises(recover.Refused, match="backed up before"):
        await recover.make_plan(s, "clearing")
