"""A feed whose records were deleted before it applied them (the topic's retention.ms), on the real
Kafka and FastStream's subscriber: said at ERROR and timestamped for YidiFeedRecordsDeleted, where
aiokafka went on from the first record retained with one INFO line (session 50)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from pydantic import BaseModel

from yidi.platform import metrics
from yidi.platform.feeds import feed
from yidi.platform.service import Service
from yidi.platform.topics import feed_group

from tests.integration.kafka_io import create_topics
from tests.integration.waiting import until

pytestmark = pytest.mark.integration


class Record(BaseModel):
    n: int


async def delete_before(settings, tp: TopicPartition, offset: int) -> None:
    """Delete ``tp``'s records before ``offset``, as the topic's retention would."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_records({tp: RecordsToDelete(before_offset=offset)})
    finally:
        await admin.close()


async def test_records_deleted_before_the_feed_applied_them_are_said_and_alerted(settings, caplog):
    topic = f"deletedfeed{uuid.uuid4().hex[:6]}"
    await create_topics(settings.kafka_bootstrap, settings.topic(topic))
    applied: list[int] = []

    async def apply(record: Record) -> None:
        applied.append(record.n)

    async def run_until(wanted: list[int], committed: int) -> None:
        """A feed of a service of its own (the same group each time), until it has applied ``wanted``
        and committed the offset after them."""
        service = Service("deletedtest", settings, migrations=None)
        feed(service, topic, Record, apply)
        group = settings.group(feed_group("deletedtest", topic))
        await service.broker.start()
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            await until(lambda: applied == wanted, timeout=30)
            for _ in range(100):  # its commit, acknowledged after the batch
                offsets = await admin.list_consumer_group_offsets(group)
                if [m.offset for m in offsets.values()] == [committed]:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"{group} did not commit {committed}: {offsets}")
        finally:
            await admin.close()
            await service.broker.stop()

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()

    async def send(*ns: int) -> TopicPartition:
        sent = [await producer.send_and_wait(settings.topic(topic), f'{{"n": {n}}}'.encode()) for n in ns]
        return TopicPartition(sent[0].topic, sent[0].partition)

    caplog.set_level(logging.INFO, logger="yidi.platform.feeds")
    moment = metrics.FEED_RECORDS_DELETED.labels(topic)
    try:
        tp = await send(0, 1)
        await run_until([0, 1], 2)
        assert moment._value.get() == 0
        await send(2, 3, 4)
        await delete_before(settings, tp, 4)  # 2 and 3, as retention would
        before = time.time()
        await run_until([0, 1, 4], 5)
        assert before <= moment._value.get() <= time.time()
        said = [r for r in caplog.records if "below its first record retained" in r.getMessage()]
        assert [r.levelno for r in said] == [logging.ERROR], said
        assert "is 2, below its first record retained, 4: the 2 records between were deleted" in said[0].getMessage()
        caplog.clear()
        await send(5)
        await run_until([0, 1, 4, 5], 6)  # its own commit since: nothing more to say
        assert not [r for r in caplog.records if "below its first record retained" in r.getMessage()]
    finally:
        await producer.stop()


async def test_records_deleted_under_a_running_feed_failing_on_a_batch_are_said(settings, caplog):
    # A feed failing on one batch (Postgres refusing it, a bug) NACKs it and reads it again from its
    # first offset; once retention deletes that offset, aiokafka goes on from the first record
    # retained with one INFO line, and no rebalance runs the assignment's check (the session-50
    # review). The batch that then begins past where the last one ended is checked.
    from yidi.platform.errors import TransientError

    topic = f"deletedrun{uuid.uuid4().hex[:6]}"
    await create_topics(settings.kafka_bootstrap, settings.topic(topic))
    applied: list[int] = []
    failing = asyncio.Event()
    failing.set()

    async def apply(record: Record) -> None:
        if record.n == 2 and failing.is_set():
            raise TransientError("Postgres refuses the batch")  # read again after a second, for ever
        applied.append(record.n)

    service = Service("deletedruntest", settings, migrations=None)
    feed(service, topic, Record, apply)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    caplog.set_level(logging.INFO, logger="yidi.platform.feeds")
    moment = metrics.FEED_RECORDS_DELETED.labels(topic)
    await service.broker.start()
    try:
        sent = [await producer.send_and_wait(settings.topic(topic), f'{{"n": {n}}}'.encode()) for n in (0, 1)]
        tp = TopicPartition(sent[0].topic, sent[0].partition)
        await until(lambda: applied == [0, 1], timeout=30)
        for n in (2, 3, 4):
            await producer.send_and_wait(settings.topic(topic), f'{{"n": {n}}}'.encode())
        await asyncio.sleep(1.5)  # failing on the batch of 2
        assert applied == [0, 1] and moment._value.get() == 0
        await delete_before(settings, tp, 4)  # 2 and 3, as retention would
        before = time.time()
        failing.clear()
        await until(lambda: applied == [0, 1, 4], timeout=30)
        assert before <= moment._value.get() <= time.time()
        said = [r for r in caplog.records if "below its first record retained" in r.getMessage()]
        assert [r.levelno for r in said] == [logging.ERROR], said
        assert "next offset after the last batch applied is 2, below its first record retained, 4" in said[0].getMessage()
    finally:
        await service.broker.stop()
        await producer.stop()
