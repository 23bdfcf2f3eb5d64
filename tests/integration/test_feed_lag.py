"""A feed's lag (yidi_feed_lag_records) on the real Kafka: what waits past the consumer's position,
to the last stable offset, transaction markers included."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from yidi.platform.lag import consumer_lag

from tests.integration.kafka_io import create_topics

pytestmark = pytest.mark.integration


async def test_the_lag_counts_what_waits_and_falls_to_zero_once_read_past_a_transaction(settings):
    topic = f"{settings.namespace}lag{uuid.uuid4().hex[:6]}"
    await create_topics(settings.kafka_bootstrap, topic)
    plain = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True)
    in_txn = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, transactional_id=f"{topic}-txn")
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=f"{topic}-group",
                                isolation_level="read_committed", auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await plain.start()
    await in_txn.start()
    await consumer.start()
    tp = TopicPartition(topic, 0)
    try:
        assert await consumer_lag(consumer) == 0  # nothing assigned
        consumer.assign([tp])
        for i in range(5):
            await plain.send_and_wait(topic, f"r{i}".encode())
        assert await consumer_lag(consumer) == 5
        async with in_txn.transaction():  # three more, in a transaction, and its marker
            for i in range(3):
                await in_txn.send(topic, f"t{i}".encode())
        read = 0
        for _ in range(20):  # at most 20 s
            read += sum(len(records) for records in (await consumer.getmany(timeout_ms=1000)).values())
            if read == 8:
                break
        assert read == 8
        await consumer.getmany(timeout_ms=200)  # the marker past the last record
        assert await consumer_lag(consumer) == 0
    finally:
        await consumer.stop()
        await in_txn.stop()
        await plain.stop()


async def test_a_feed_that_hangs_on_a_batch_shows_it_waiting_on_the_real_subscriber(settings):
    """The real FastStream subscriber of ``feed()``: while its handler holds a batch, the batch
    counts (aiokafka's position is already past it), and so does what arrives behind it."""
    import asyncio

    from prometheus_client import REGISTRY
    from pydantic import BaseModel

    from yidi.platform.feeds import feed
    from yidi.platform.service import Service

    from tests.integration.waiting import until

    class Record(BaseModel):
        n: int

    topic = f"lagfeed{uuid.uuid4().hex[:6]}"
    own = settings.model_copy(update={"lag_sample_seconds": 0.05})
    service = Service("lagtest", own, migrations=None)
    await create_topics(settings.kafka_bootstrap, own.topic(topic))
    release, applied = asyncio.Event(), []

    async def apply(record: Record) -> None:
        await release.wait()  # hangs, raising nothing
        applied.append(record.n)

    feed(service, topic, Record, apply)

    def lag() -> float | None:
        return REGISTRY.get_sample_value("yidi_feed_lag_records", {"feed": topic})

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True)
    await service.broker.start()
    await producer.start()
    sampler = asyncio.create_task(service.background[-1]())  # the feed's lag sampler (after the heartbeat)
    try:
        for n in range(3):
            await producer.send_and_wait(own.topic(topic), f'{{"n": {n}}}'.encode())
        await until(lambda: lag() == 3, timeout=20)  # held by the handler
        for n in range(3, 5):
            await producer.send_and_wait(own.topic(topic), f'{{"n": {n}}}'.encode())
        await until(lambda: lag() == 5, timeout=20)  # and waiting behind it
        release.set()
        await until(lambda: applied == [0, 1, 2, 3, 4] and lag() == 0, timeout=20)
    finally:
        sampler.cancel()
        await producer.stop()
        await service.broker.stop()
