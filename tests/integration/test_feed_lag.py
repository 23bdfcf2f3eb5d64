"""A feed's lag (yidi_feed_lag_records) on the real Kafka: what waits past the consumer's position,
to the last stable offset, transaction markers included."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from yidi.platform.lag import consumer_lag

pytestmark = pytest.mark.integration


async def test_the_lag_counts_what_waits_and_falls_to_zero_once_read_past_a_transaction(settings):
    topic = f"{settings.namespace}lag{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
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
        while read < 8:
            read += sum(len(records) for records in (await consumer.getmany(timeout_ms=1000)).values())
        await consumer.getmany(timeout_ms=200)  # the marker past the last record
        assert await consumer_lag(consumer) == 0
    finally:
        await consumer.stop()
        await in_txn.stop()
        await plain.stop()
