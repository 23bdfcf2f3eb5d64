"""One broker of a two-broker cluster down, on real brokers: the partitions it led have no leader.
A stage's or feed's lag sample still has the other partitions' end offsets from their leader, so
the process does not read as cut off from Kafka (``YidiKafkaUnreachable``, which holds back
``YidiStageWaiting``), and the leaderless partition's records waiting still show, from the
consumer's own fetches."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.conftest import unique
from tests.integration import strict_broker
from tests.integration.waiting import until
from yidi.platform import metrics
from yidi.platform.lag import partition_lag

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two_brokers(tmp_path_factory):
    """A cluster of two brokers (the strict broker and a second node): (the first's address, the second's)."""
    if (why := strict_broker.available()) is not None:
        pytest.fail(why)  # the local stack's jars and Java: make test installs them
    with strict_broker.strict_broker(tmp_path_factory.mktemp("two-brokers"), nodes=2) as first:
        yield first, next(b for b in strict_broker.PROCESSES if b != first and b.startswith("127.0.0.1:"))


async def test_a_partition_whose_broker_is_down_leaves_the_others_sampled_and_kafka_reached(two_brokers):
    first, second = two_brokers
    topic = unique("broker-down-")
    led_by_first, led_by_second = TopicPartition(topic, 0), TopicPartition(topic, 1)
    admin = AIOKafkaAdminClient(bootstrap_servers=first)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, -1, -1, replica_assignments={0: [1], 1: [2]})])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=first, acks="all")
    consumer = AIOKafkaConsumer(bootstrap_servers=first, group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    try:
        async def send(partition: int, count: int) -> None:
            for i in range(count):
                await producer.send_and_wait(topic, f"r{i}".encode(), partition=partition)

        await until(lambda: _listed(producer, topic), timeout=20, poll=0.2)
        await send(0, 5)
        await send(1, 5)
        consumer.assign([led_by_first, led_by_second])
        # A record of each partition handed over (position 1), and each one's last stable offset (5)
        # brought by the fetches; then the fetches stop, so that what the sample takes from the
        # broker and what it takes from the fetches differ.
        handed: set[TopicPartition] = set()
        for _ in range(100):
            handed |= {tp for tp, records in (await consumer.getmany(timeout_ms=200, max_records=1)).items() if records}
            if handed == {led_by_first, led_by_second}:
                break
            for tp in handed:
                consumer.pause(tp)
        consumer.pause(led_by_first, led_by_second)
        positions = {tp: await consumer.position(tp) for tp in (led_by_first, led_by_second)}
        assert [consumer.last_stable_offset(tp) for tp in (led_by_first, led_by_second)] == [5, 5]
        await send(0, 3)  # its leader answers 8 now; the fetches said 5

        strict_broker.stop(strict_broker.PROCESSES[second])  # its broker down: partition 1 has no leader
        metrics.KAFKA_REACHED.set(0)
        lags = await partition_lag(consumer, ends_timeout=3.0)
        assert lags == {led_by_first: (8 - positions[led_by_first], positions[led_by_first]),
                        led_by_second: (5 - positions[led_by_second], positions[led_by_second])}
        assert metrics.KAFKA_REACHED._value.get() > 0  # noqa: SLF001 - the first broker answered
    finally:
        await consumer.stop()
        await producer.stop()


async def _listed(producer: AIOKafkaProducer, topic: str) -> bool:
    partitions = await producer.partitions_for(topic)
    return partitions == {0, 1}


async def test_with_no_broker_answering_the_sample_reads_as_kafka_unreachable(two_brokers):
    """The other side: nothing answers (the first broker frozen), so the gauge is not set."""
    first, _ = two_brokers
    topic = unique("nothing-answers-")
    admin = AIOKafkaAdminClient(bootstrap_servers=first)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, -1, -1, replica_assignments={0: [1]})])
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=first, group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest",
                                request_timeout_ms=2000)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        await until(lambda: _known(consumer, topic), timeout=20, poll=0.2)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        assert await consumer.position(tp) == 0  # known before the broker freezes
        metrics.KAFKA_REACHED.set(0)
        with strict_broker.frozen(first):
            lags = await asyncio.wait_for(partition_lag(consumer, ends_timeout=1.0), 30)
        assert lags == {tp: (0, 0)}
        assert metrics.KAFKA_REACHED._value.get() == 0  # noqa: SLF001
    finally:
        await consumer.stop()


async def _known(consumer: AIOKafkaConsumer, topic: str) -> bool:
    await consumer._client.force_metadata_update()  # noqa: SLF001
    return consumer.partitions_for_topic(topic) == {0}
