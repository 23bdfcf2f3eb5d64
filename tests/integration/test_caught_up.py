"""``caught_up`` (what ``yidi-load --wait`` and the runbook's group check wait on) on the real
broker: a group short of records it can read is not caught up; once it has committed them, or when
all that is left past its offset is an aborted transaction's records and the markers, it is."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from tests.conftest import unique
from tests.integration.kafka_io import create_topics
from yidi.platform.lag import caught_up, wait_caught_up

pytestmark = pytest.mark.integration


async def _commit(bootstrap: str, group: str, tp: TopicPartition, offset: int) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(offset, "")})
    finally:
        await consumer.stop()


async def test_a_group_is_caught_up_once_nothing_it_can_read_is_left(settings):
    bootstrap = settings.kafka_bootstrap
    topic, group = unique("caught-up-"), unique("caught-up-group-")
    await create_topics(bootstrap, topic, shown=True)
    tp = TopicPartition(topic, 0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(topic, f"r{i}".encode(), partition=0)
    finally:
        await producer.stop()

    assert not await caught_up(bootstrap, group, topic)  # no offset committed: all three to read
    with pytest.raises(TimeoutError, match="still consuming"):
        await wait_caught_up(bootstrap, [(group, topic)], timeout=1)
    await _commit(bootstrap, group, tp, 2)
    assert not await caught_up(bootstrap, group, topic)  # one left
    await _commit(bootstrap, group, tp, 3)
    assert await caught_up(bootstrap, group, topic)
    await wait_caught_up(bootstrap, [(group, topic)], timeout=5)

    # Past its offset, only an aborted transaction's records and the markers: nothing it could read.
    txn = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=unique("caught-up-txn-"))
    await txn.start()
    try:
        await txn.begin_transaction()
        await txn.send_and_wait(topic, b"never", partition=0)
        await txn.abort_transaction()
    finally:
        await txn.stop()
    assert await caught_up(bootstrap, group, topic)

    # A committed record after them: to be read again.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"r3", partition=0)
    finally:
        await producer.stop()
    assert not await caught_up(bootstrap, group, topic)
