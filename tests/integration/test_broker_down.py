"""One broker of a two-broker cluster down, on real brokers: the partitions it led have no leader.
A stage's or feed's lag sample still has the other partitions' end offsets from their leader, so
the process does not read as cut off from Kafka (``YidiKafkaUnreachable``, which holds back
``YidiStageWaiting``), and the leaderless partition's records waiting still show, from the
consumer's own fetches."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.conftest import unique
from tests.integration import strict_broker
from tests.integration.kafka_io import create_topics
from tests.integration.waiting import until
from yidi.platform import metrics
from yidi.platform.lag import partition_lag

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    """The strict broker, its cluster's internal topics (groups' offsets, transactions' state)
    made on it first; each test adds the broker it stops (node 2, node 3), so that only the topics
    a test puts there are on that one."""
    if (why := strict_broker.available()) is not None:
        pytest.fail(why)  # the local stack's jars and Java: make test installs them
    with strict_broker.strict_broker(tmp_path_factory.mktemp("strict")) as first:
        asyncio.run(_internal_topics(first))
        yield first


async def _internal_topics(bootstrap: str) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id="warm")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id="warm")
    await consumer.start()  # finds its group's coordinator: __consumer_offsets
    await producer.start()  # its transactional id's: __transaction_state
    await consumer.stop()
    await producer.stop()


async def test_a_partition_whose_broker_is_down_leaves_the_others_sampled_and_kafka_reached(strict, tmp_path):
    with strict_broker.second_broker(strict, tmp_path, node_id=2) as second:
        await _sampled_with_a_broker_down(strict, second)


async def _sampled_with_a_broker_down(first: str, second: str) -> None:
    topic = unique("broker-down-")
    led_by_first, led_by_second = TopicPartition(topic, 0), TopicPartition(topic, 1)
    await create_topics(first, topic, on_brokers={0: [1], 1: [2]})
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


async def test_with_no_broker_answering_the_sample_reads_as_kafka_unreachable(strict):
    """The other side: nothing answers (the broker frozen), so the gauge is not set."""
    first = strict
    topic = unique("nothing-answers-")
    await create_topics(first, topic, on_brokers={0: [1]})
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


async def test_an_answer_to_a_reply_topic_whose_broker_is_down_moves_and_the_batch_goes_on(strict, settings, tmp_path):
    """A gateway's reply topic of one replica per partition, the broker of one partition down: the
    answers on that partition go to the moved answers' topic with the reason, the answers on its
    other partition and to other topics where they were asked; the broker back, answers go to the
    gateway's topic again within seconds. Before, the stage retried the batch until the broker came
    back, every facility's answers with it."""
    import uuid

    import orjson
    from aiokafka.partitioner import murmur2

    from tests.integration.kafka_io import read_topic
    from yidi.platform.kafka import Incoming, Outgoing, TransactionalStage, ensure_topics
    from yidi.platform.replies import reply
    from yidi.platform.topics import SETTLEMENT_REQUESTS, SETTLEMENT_RESULTS, moved_answers

    s = settings.model_copy(update={"kafka_bootstrap": strict, "batch_linger_ms": 300.0,
                                    "namespace": settings.namespace + f"bd{uuid.uuid4().hex[:6]}."})
    await ensure_topics(s)
    await create_topics(strict, s.topic("gw.ok"), shown=True)
    # Answers are keyed by facility: one facility whose answers go to partition 0 (the first broker),
    # one to partition 1 (the broker stopped), as the producer's partitioner puts them.
    on = {p: next(f"H{i}" for i in range(100) if (murmur2(f"H{i}".encode()) & 0x7FFFFFFF) % 2 == p) for p in (0, 1)}

    async def answer_each(records: list[Incoming]) -> list[Outgoing]:
        return [reply(s, (request := orjson.loads(r.value))["reply_to"], {"msgid": request["msgid"], "infno": "2207",
                                                                            "err_code": None},
                      facility=request["facility"], request_ts_ms=r.timestamp_ms) for r in records]

    name = f"broker-down-{uuid.uuid4().hex[:6]}"
    stage = TransactionalStage(name, "test", s, [SETTLEMENT_REQUESTS], name, answer_each)
    producer = AIOKafkaProducer(bootstrap_servers=strict, acks="all", linger_ms=50)
    await producer.start()

    async def ask(asked: dict[str, tuple[str, str]]) -> None:
        """One key: one partition, so that the requests are read in one batch."""
        await asyncio.gather(*[await producer.send(s.topic(SETTLEMENT_REQUESTS),
                                                   orjson.dumps({"msgid": m, "reply_to": t, "facility": f}),
                                                   key=b"one-person") for m, (t, f) in asked.items()])

    async def read(topic: str, count: int, seconds: float = 15.0) -> list[str]:
        return sorted(orjson.loads(r.value)["msgid"]
                      for r in await read_topic(strict, s.topic(topic), count=count, seconds=seconds))

    try:
        await stage.start()
        await ask({"M0": ("gw.ok", on[0])})
        assert await read("gw.ok", 1) == ["M0"]
        with strict_broker.second_broker(strict, tmp_path, node_id=3) as third:
            await create_topics(strict, s.topic("gw.down"), on_brokers={0: [1], 1: [3]})
            await ask({"M1": ("gw.down", on[1])})
            assert await read("gw.down", 1) == ["M1"]  # while its broker is up
            # Stopped as an operator does (a controlled shutdown: the partition's leader is taken away
            # first, and the stage's producer learns it when its connection to the broker closes).
            await asyncio.to_thread(strict_broker.stop, strict_broker.PROCESSES[third])
            await ask({"M2": ("gw.down", on[1]), "M3": ("gw.ok", on[1]), "M4": ("gw.down", on[0])})
            moved = await read_topic(strict, s.topic(moved_answers(SETTLEMENT_RESULTS)), count=1, seconds=60)
            assert [orjson.loads(r.value)["msgid"] for r in moved] == ["M2"]
            assert dict(moved[0].headers)["yidi-reply-to-refused"] == (
                f"{s.topic('gw.down')}: the topic's partition for this answer has no leader (its brokers are down)").encode()
            assert await read("gw.ok", 2) == ["M0", "M3"]
            assert await read("gw.down", 1) == ["M4"]  # on the first broker's partition (M1's cannot be read now)
            assert stage.failure is None and not stage.task.done()
            assert metrics.REPLY_TOPIC_REFUSED.labels(name, "no_leader")._value.get() == 1  # noqa: SLF001

            # The broker back: the stage's producer asks for the leaders again within seconds (its
            # metadata was otherwise refreshed every 5 minutes), and the answers go to the gateway.
            await asyncio.to_thread(strict_broker.start_again, third)
            back = ["M1", "M4"]
            for i in range(60):
                await ask({f"B{i}": ("gw.down", on[1])})
                if f"B{i}" in await read("gw.down", len(back) + 1, seconds=2):
                    back.append(f"B{i}")
                    break
            assert len(back) == 3 and int(back[-1][1:]) < 30, back  # within the first batches after it came back
    finally:
        await stage.stop()
        await producer.stop()
