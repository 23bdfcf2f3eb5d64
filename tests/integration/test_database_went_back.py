"""A database that goes back under a running service (a failover to a replica that was behind, a
restore while it ran) stops it at its next batch on a partition it had recorded, before anything of
that batch is committed (yidi.platform.progress, ``hold``); its check at the next start then
refuses until yidi-recover has run. On the real Kafka and Postgres."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import REGISTRY
from pydantic import BaseModel

from yidi.platform import db, progress, recover
from yidi.platform.errors import DatabaseWentBack
from yidi.platform.feeds import feed
from yidi.platform.kafka import Incoming, Outgoing, TransactionalStage, ensure_topics
from yidi.platform.service import Service
from yidi.platform.settings import Settings
from yidi.platform.topics import SETTLEMENT_PRICED

from tests.integration.kafka_io import committed, create_topics, produce
from tests.integration.waiting import until

pytestmark = pytest.mark.integration


async def _row(pool, group: str, tp: TopicPartition) -> int | None:
    return await pool.fetchval("SELECT applied_below FROM clearing.stage_progress WHERE consumer_group = $1 AND "
                               "topic = $2 AND kafka_partition = $3", group, tp.topic, tp.partition)


async def _go_back(pool, group: str, went: str) -> None:
    """What a failover to a replica that was behind, or a restore, leaves: the row of an earlier
    batch (``lowered``), or none (``deleted``: the database from before the group's first batch)."""
    if went == "deleted":
        await pool.execute("DELETE FROM clearing.stage_progress WHERE consumer_group = $1", group)
    else:
        await pool.execute("UPDATE clearing.stage_progress SET applied_below = 0 WHERE consumer_group = $1", group)


async def _committed_to(bootstrap: str, group: str, tp: TopicPartition, offset: int) -> None:
    async def there() -> bool:
        found = await committed(bootstrap, group, tp)
        return found is not None and found.offset == offset

    await until(there, timeout=30, poll=0.2)


@dataclass
class _Stages:
    """A stage of the test's own on clearing's schema: its settings, pool, partition and group, and
    a factory of its instances, each handling a batch in a transaction of its own (records its row)."""

    s: Settings
    pool: Any
    tp: TopicPartition
    group: str
    instance: Callable[[], TransactionalStage]


async def _stages(clearing_of_its_own: Any, name: str) -> _Stages:
    own, repo = clearing_of_its_own
    s = own.model_copy(update={"namespace": f"{own.namespace}{name}{uuid.uuid4().hex[:6]}.", "batch_linger_ms": 0})
    await ensure_topics(s)

    async def handle(records: list[Incoming]) -> list[Outgoing]:
        async with repo.transaction() as conn:
            await conn.execute("SELECT 1")
        return []

    def instance() -> TransactionalStage:
        stage = TransactionalStage(f"{name}-test", "clearing", s, [SETTLEMENT_PRICED], f"yidi-clearing-{name}",
                                   handle, max_records=1)
        stage.record_progress = functools.partial(db.record_progress, repo._pool, "clearing")  # as Service.add_stage
        return stage

    return _Stages(s, repo._pool, TopicPartition(s.topic(SETTLEMENT_PRICED), 0), s.group(f"yidi-clearing-{name}"),
                   instance)


@pytest.mark.parametrize(("went", "opens_transaction", "during_handler"), [
    ("lowered", True, True), ("deleted", True, False), ("lowered", False, True)],
    ids=["row-lowered", "row-deleted-offsets-at-commit", "row-lowered-no-transaction"])
async def test_a_running_stage_whose_database_went_back_stops_at_its_next_batch_and_commits_nothing_of_it(
        clearing_of_its_own, went, opens_transaction, during_handler):
    own, repo = clearing_of_its_own
    pool = repo._pool
    s = own.model_copy(update={"namespace": f"{own.namespace}wentback{uuid.uuid4().hex[:6]}.", "batch_linger_ms": 0,
                               "kafka_offsets_during_handler": during_handler})
    await ensure_topics(s)
    await pool.execute("CREATE TABLE IF NOT EXISTS clearing.went_back_writes (topic text, kafka_offset bigint)")
    tp = TopicPartition(s.topic(SETTLEMENT_PRICED), 0)
    group = s.group("yidi-clearing-wentback")
    handled: list[int] = []
    published: list[int] = []

    async def handle(records: list[Incoming]) -> list[Outgoing]:
        handled.extend(r.offset for r in records)
        if opens_transaction:
            async with repo.transaction() as conn:
                await conn.executemany("INSERT INTO clearing.went_back_writes VALUES ($1, $2)",
                                       [(r.topic, r.offset) for r in records])
        return [Outgoing(s.topic("wentback.out"), str(r.offset).encode(), b"k", on_commit=functools.partial(
            published.append, r.offset)) for r in records]

    await create_topics(s.kafka_bootstrap, s.topic("wentback.out"))
    stage = TransactionalStage("wentback-test", "clearing", s, [SETTLEMENT_PRICED], "yidi-clearing-wentback", handle,
                               max_records=1)
    stage.record_progress = functools.partial(db.record_progress, pool, "clearing")  # as Service.add_stage sets it
    await produce(s.kafka_bootstrap, tp.topic, [b"0", b"1"])
    await stage.start()
    try:
        await _committed_to(s.kafka_bootstrap, group, tp, 2)
        assert stage._held == {(tp.topic, 0): 1}  # what the second batch recorded
        assert await _row(pool, group, tp) == 1
        await _go_back(pool, group, went)
        await produce(s.kafka_bootstrap, tp.topic, [b"2"])
        assert stage.task is not None
        await until(lambda: stage.task is not None and stage.task.done(), timeout=30)
    finally:
        await stage.stop()
    assert isinstance(stage.failure, DatabaseWentBack), repr(stage.failure)
    holds = "no row of it" if went == "deleted" else "only the records before 0"
    assert (f"{group} {tp.topic}[0]: it holds {holds}; the service had seen it hold every record "
            "before 1" in str(stage.failure)), stage.failure
    assert handled == [0, 1, 2]
    assert published == [0, 1]  # nothing of the third batch
    found = await committed(s.kafka_bootstrap, group, tp)
    assert (found.offset, found.metadata) == (2, progress.applied(1))
    assert await _row(pool, group, tp) == (None if went == "deleted" else 0)  # not recorded over
    if opens_transaction:
        assert [r["kafka_offset"] for r in await pool.fetch(
            "SELECT kafka_offset FROM clearing.went_back_writes WHERE topic = $1 ORDER BY 1", tp.topic)] == [0, 1]
    # At its next start, the service refuses until yidi-recover has run.
    (line,) = await recover.behind(s, "clearing")
    assert line.startswith(f"{group} {tp.topic}[0]: its offset 2 was committed once the database held every record "
                           "before 1"), line


async def test_a_stage_that_holds_a_partition_again_after_another_instance_does_not_take_the_row_for_gone_back(
        clearing_of_its_own):
    """What an instance held stays at or below the row while the database is whole, however the
    partition moved meanwhile: another instance's batches only raised it."""
    stages = await _stages(clearing_of_its_own, "heldagain")
    s, pool, tp, group, instance = stages.s, stages.pool, stages.tp, stages.group, stages.instance
    first, second = instance(), instance()
    await produce(s.kafka_bootstrap, tp.topic, [b"0", b"1"])
    await first.start()
    try:
        await _committed_to(s.kafka_bootstrap, group, tp, 2)
    finally:
        await first.stop()
    held = dict(first._held)
    assert held == {(tp.topic, 0): 1}
    await second.start()
    try:
        await produce(s.kafka_bootstrap, tp.topic, [b"2", b"3"])
        await _committed_to(s.kafka_bootstrap, group, tp, 4)
    finally:
        await second.stop()
    assert second.failure is None
    assert second._held == {(tp.topic, 0): 3}  # from the committed offset as assigned (1), then its own batches
    assert await _row(pool, group, tp) == 3
    first = instance()
    first._held = held  # the first instance's memory, from before the partition moved
    await first.start()
    try:
        await produce(s.kafka_bootstrap, tp.topic, [b"4"])
        await _committed_to(s.kafka_bootstrap, group, tp, 5)
    finally:
        await first.stop()
    assert first.failure is None
    assert await _row(pool, group, tp) == 4


@pytest.mark.parametrize("went", ["lowered", "deleted"])
async def test_a_stage_that_never_recorded_a_partition_checks_its_first_batch_against_the_committed_offset(
        clearing_of_its_own, went):
    """An instance new to a partition (started, or assigned it by a rebalance) has recorded nothing of
    it: its first batch is checked against what the committed offset said the database held, read as
    the partition was assigned. Without that, the batch would record its row over the gone-back one,
    commit with it, and leave nothing that says what was lost."""
    stages = await _stages(clearing_of_its_own, "newinst")
    s, pool, tp, group, instance = stages.s, stages.pool, stages.tp, stages.group, stages.instance
    first = instance()
    await produce(s.kafka_bootstrap, tp.topic, [b"0", b"1", b"2"])
    await first.start()
    try:
        await _committed_to(s.kafka_bootstrap, group, tp, 3)
    finally:
        await first.stop()
    await _go_back(pool, group, went)
    second = instance()
    await second.start()
    try:
        await produce(s.kafka_bootstrap, tp.topic, [b"3"])
        await until(lambda: second.task is not None and second.task.done(), timeout=30)
    finally:
        await second.stop()
    assert isinstance(second.failure, DatabaseWentBack), repr(second.failure)
    assert "the service had seen it hold every record before 2" in str(second.failure)
    found = await committed(s.kafka_bootstrap, group, tp)
    assert (found.offset, found.metadata) == (3, progress.applied(2))
    assert await _row(pool, group, tp) == (None if went == "deleted" else 0)


@pytest.mark.parametrize("dropped", ["TABLE clearing.stage_progress", "FUNCTION clearing.stage_progress_went_back"])
async def test_a_database_without_what_the_migrations_made_stops_a_running_stage_as_gone_back(
        clearing_of_its_own, dropped):
    """A backup from before the migrations restored under the running stage, or another database."""
    stages = await _stages(clearing_of_its_own, "nottable")
    s, pool, tp, group, stage = stages.s, stages.pool, stages.tp, stages.group, stages.instance()
    await produce(s.kafka_bootstrap, tp.topic, [b"0"])
    await stage.start()
    try:
        await _committed_to(s.kafka_bootstrap, group, tp, 1)
        await pool.execute(f"DROP {dropped}")
        await produce(s.kafka_bootstrap, tp.topic, [b"1"])
        await until(lambda: stage.task is not None and stage.task.done(), timeout=30)
    finally:
        await stage.stop()
    assert isinstance(stage.failure, DatabaseWentBack), repr(stage.failure)
    assert "it has no clearing.stage_progress as this version's migrations made it" in str(stage.failure)
    assert (await committed(s.kafka_bootstrap, group, tp)).offset == 1


class Record(BaseModel):
    n: int


async def _feed_service(clearing_of_its_own: Any, name: str) -> tuple[Settings, Any, str, TopicPartition, str]:
    """A feed topic of the test's own beside clearing's schema: (its settings, the pool, the topic's
    name, its partition, its feed's group)."""
    own, repo = clearing_of_its_own
    s = own.model_copy(update={"namespace": f"{own.namespace}{name}{uuid.uuid4().hex[:6]}."})
    topic = name
    await create_topics(s.kafka_bootstrap, s.topic(topic))
    return s, repo._pool, topic, TopicPartition(s.topic(topic), 0), s.group(f"yidi-clearing-feed-{topic}")


def _with_feed(s: Settings, pool: Any, topic: str, apply: Callable[[Record], Awaitable[None]]) -> Service:
    service = Service("clearing", s, migrations=None)
    service.pool = pool  # as its lifespan opens it
    feed(service, topic, Record, apply)
    return service


async def test_a_feed_whose_database_went_back_stops_its_service_and_acknowledges_nothing_more(
        clearing_of_its_own, caplog):
    s, pool, topic, tp, group = await _feed_service(clearing_of_its_own, "wentbackfeed")
    applied: list[int] = []

    async def apply(record: Record) -> None:
        applied.append(record.n)

    service = _with_feed(s, pool, topic, apply)
    await produce(s.kafka_bootstrap, tp.topic, [f'{{"n": {n}}}'.encode() for n in range(3)])
    await service.broker.start()
    faststreams = logging.getLogger("faststream.access.kafka")  # not propagated: caplog's handler too
    faststreams.addHandler(caplog.handler)
    try:
        await _committed_to(s.kafka_bootstrap, group, tp, 3)
        assert await _row(pool, group, tp) == 3
        await pool.execute("UPDATE clearing.stage_progress SET applied_below = 1 WHERE consumer_group = $1", group)
        with caplog.at_level(logging.ERROR, logger="yidi.platform.service"):
            await produce(s.kafka_bootstrap, tp.topic, [b'{"n": 3}'])
            await until(lambda: service.exit_code == 2, timeout=30)
            # Until the service has stopped (here: the test stops it), the batch is read again
            # about each second, found the same, and not acknowledged: said once, at CRITICAL.
            await asyncio.sleep(2.5)
    finally:
        faststreams.removeHandler(caplog.handler)
        await service.broker.stop()
    assert applied == [0, 1, 2]  # the batch of 3 is checked before it is applied: not applied
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.levelno != logging.CRITICAL] == []
    (said,) = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert (f"{group} {tp.topic}[0]: it holds only the records before 1; the service had seen it hold every "
            "record before 3" in said), said
    assert "yidi-recover clearing" in said
    found = await committed(s.kafka_bootstrap, group, tp)
    assert (found.offset, found.metadata) == (3, progress.applied(3))  # the batch of 3 not acknowledged
    assert await _row(pool, group, tp) == 1
    (line,) = await recover.behind(s, "clearing")
    assert "once the database held every record before 3; the database holds only those before 1" in line, line

    # Another instance of the service, new to the partition, checks its first batch against the
    # committed offset's metadata.
    applied.clear()
    again = _with_feed(s, pool, topic, apply)
    await again.broker.start()
    try:
        with caplog.at_level(logging.CRITICAL, logger="yidi.platform.service"):
            await until(lambda: again.exit_code == 2, timeout=30)
    finally:
        await again.broker.stop()
    assert applied == []  # checked before it applies
    assert (await committed(s.kafka_bootstrap, group, tp)).offset == 3
    assert await _row(pool, group, tp) == 1


async def test_a_service_holds_what_its_committed_offsets_said_at_start_and_checks_it_while_nothing_comes(
        clearing_of_its_own, caplog):
    """The check at start fills what the service's stages and feeds hold; the service checks it every
    few seconds, so a partition without traffic finds a database that went back too."""
    own, repo = clearing_of_its_own
    pool = repo._pool
    s = own.model_copy(update={"namespace": f"{own.namespace}quiet{uuid.uuid4().hex[:6]}.", "metrics_port": 0})
    await ensure_topics(s)
    tp = TopicPartition(s.topic(SETTLEMENT_PRICED), 0)
    await produce(s.kafka_bootstrap, tp.topic, [b"x"] * 3)
    group = s.group("yidi-clearing-priced")
    await db.record_progress(pool, "clearing", progress.began(group, [(tp.topic, 0, 2)]))
    await recover.commit_offsets(s.kafka_bootstrap, group, {tp: OffsetAndMetadata(3, progress.applied(2))})

    def statements(source: str) -> float:
        return REGISTRY.get_sample_value("yidi_db_statement_seconds_count", {"service": "clearing", "source": source}) or 0

    counted = {source: statements(source) for source in ("start-check", "progress-check")}
    service = Service("clearing", s, migrations="services.clearing.migrations")
    async with service._lifespan():
        assert service.held == {group: {(tp.topic, 0): 2}}
        assert service._check_held_every in service.background
        checking = asyncio.create_task(service._check_held_every(0.05))
        await asyncio.sleep(0.3)
        assert not checking.done() and service.exit_code == 0  # the database is whole
        # Each check's statements under its own source, not "other" with the migrations (a review,
        # session 46: the check's errors read as start-up noise).
        assert statements("start-check") > counted["start-check"]
        assert statements("progress-check") >= counted["progress-check"] + 3
        await pool.execute("UPDATE clearing.stage_progress SET applied_below = 1 WHERE consumer_group = $1", group)
        with caplog.at_level(logging.CRITICAL, logger="yidi.platform.service"):
            await asyncio.wait_for(checking, 10)
    assert service.exit_code == 2
    (said,) = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert f"{group} {tp.topic}[0]: it holds only the records before 1; the service had seen it hold" in said


async def test_a_feed_that_gets_a_partition_back_after_another_instance_checks_against_the_newer_offset(
        clearing_of_its_own, caplog):
    """A partition moves between feed instances only through rebalances: after one, a feed reads the
    committed offsets of its partitions again, so what another instance recorded meanwhile is held
    too (with only its own older value, a database gone back between the two would be recorded over)."""
    s, pool, topic, tp, group = await _feed_service(clearing_of_its_own, "backfeed")
    applied: list[int] = []

    async def apply(record: Record) -> None:
        applied.append(record.n)

    first, second = _with_feed(s, pool, topic, apply), _with_feed(s, pool, topic, apply)
    await produce(s.kafka_bootstrap, tp.topic, [f'{{"n": {n}}}'.encode() for n in range(3)])
    await first.broker.start()
    try:
        await _committed_to(s.kafka_bootstrap, group, tp, 3)
    finally:
        await first.broker.stop()
    await second.broker.start()
    try:
        await produce(s.kafka_bootstrap, tp.topic, [f'{{"n": {n}}}'.encode() for n in range(3, 6)])
        await _committed_to(s.kafka_bootstrap, group, tp, 6)
    finally:
        await second.broker.stop()
    assert first.held == {group: {(tp.topic, 0): 3}}
    await pool.execute("UPDATE clearing.stage_progress SET applied_below = 4 WHERE consumer_group = $1", group)
    applied.clear()
    await first.broker.start()  # the same feed, back in the group
    try:
        with caplog.at_level(logging.CRITICAL, logger="yidi.platform.service"):
            await produce(s.kafka_bootstrap, tp.topic, [b'{"n": 6}'])
            await until(lambda: first.exit_code == 2, timeout=30)
    finally:
        await first.broker.stop()
    assert applied == []
    (said,) = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert "it holds only the records before 4; the service had seen it hold every record before 6" in said, said
    assert await _row(pool, group, tp) == 4


async def test_a_months_run_whose_batch_transaction_was_lost_after_its_close_is_found_gone_back(
        clearing_of_its_own):
    """Clearing-admin's run of a month commits the month's close in a transaction of its own, then
    the batch's. A Postgres that lost only the later one (a failover to a replica that was behind)
    holds what the close alone left: the partition's row must be below what the stage holds then,
    or nothing shows the month's run lost. The close records one record less, and checks."""
    import orjson

    from services.clearing.admin import ClearingAdminHandler

    settings, repo = clearing_of_its_own
    group, tp = f"yidi-clearing-admin-{uuid.uuid4().hex[:6]}", (settings.topic("clearing.requests"), 0)
    pool, row = repo._pool, functools.partial(_row, repo._pool, group, TopicPartition(*tp))

    def run(month: str) -> Incoming:
        body = {"type": "run_month", "reqid": f"R-{uuid.uuid4().hex}", "setlym": month}
        return Incoming(tp[0], tp[1], 3, body["reqid"].encode(), orjson.dumps(body), 0)

    # A whole run: its close, then the batch's transaction, which records where the batch began.
    whole = progress.Progress(group, {tp: 3})
    with progress.batch(whole):
        (answer,) = [o for o in await ClearingAdminHandler(settings, repo)([run("202509")])
                     if o.topic == settings.topic("clearing.results")]
    assert orjson.loads(answer.value)["ok"], answer.value
    assert whole.recorded and await row() == 3

    # The next batch's close, its own transaction committed; the batch's transaction then lost.
    lost = progress.Progress(group, {tp: 7}, held={tp: 3})
    with progress.batch(lost):
        assert await repo.close_month("202510", run("202510").key.decode()) is None
    assert await pool.fetchval("SELECT state FROM clearing.periods WHERE setlym = '202510'") == "closed"
    assert not lost.recorded and await row() == 6  # every record before the one before the batch's first
    # The stage had seen the batch's row committed on the primary: the database went back.
    with pytest.raises(DatabaseWentBack, match=r"it holds only the records before 6; the service had seen it hold "
                                               r"every record before 7"):
        await db.check_progress(pool, "clearing", [progress.Progress(group, {}, held={tp: 7})])

    # The close checks too: on a database that went back it closes nothing.
    await pool.execute("UPDATE clearing.stage_progress SET applied_below = 2 WHERE consumer_group = $1", group)
    with progress.batch(progress.Progress(group, {tp: 8}, held={tp: 6})), pytest.raises(DatabaseWentBack):
        await repo.close_month("202511", run("202511").key.decode())
    assert await pool.fetchval("SELECT count(*) FROM clearing.periods WHERE setlym = '202511'") == 0
    assert await row() == 2
