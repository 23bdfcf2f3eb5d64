"""Kafka in the integration and e2e tests: topics made for a test, and what a topic holds read back."""

from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata
from aiokafka.protocol.metadata import MetadataRequest

from tests.integration.waiting import until


async def create_topics(bootstrap: str, *topics: str, partitions: int = 1, configs: dict[str, str] | None = None,
                        shown: bool = False, on_brokers: dict[int, list[int]] | None = None) -> None:
    """Create ``topics``, each with ``partitions`` partitions (replication 1) and ``configs``, or
    with ``on_brokers``'s partitions on its brokers (partition: the ids of the brokers holding its
    replicas). With ``shown``, return once the broker's metadata lists them all (it may lag a moment
    behind the creation, and a producer's first send to a topic not listed yet fails)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([
            NewTopic(t, partitions, 1, topic_configs=configs or {}) if on_brokers is None
            else NewTopic(t, -1, -1, replica_assignments=on_brokers, topic_configs=configs or {}) for t in topics])
        if shown:
            async def listed() -> bool:
                answer = await admin._client.send(admin._client.get_random_node(), MetadataRequest(list(topics)))
                return all(code == 0 for code, *_ in answer.topics)

            await until(listed, timeout=10, poll=0.1)
    finally:
        await admin.close()


async def read_topic(bootstrap: str, topic: str, *, count: int | None = None, seconds: float = 15.0,
                     idle_ms: int = 1500) -> list[Any]:
    """The records on ``topic`` (every partition) from its start, as a ``read_committed`` reader sees
    them: what committed transactions wrote, and what was written outside any.

    With ``count``: read until more than ``count`` arrived, or ``count`` and then nothing more for
    0.7 s (an extra record would show up by then), or ``seconds`` passed. Without: until a fetch
    waits ``idle_ms`` for nothing (or ``seconds`` passed)."""
    reader = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, isolation_level="read_committed",
                              auto_offset_reset="earliest", group_id=None, enable_auto_commit=False)
    await reader.start()
    try:
        seen: list[Any] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batch = await reader.getmany(timeout_ms=300 if count is not None else idle_ms)
            seen += [r for records in batch.values() for r in records]
            if count is None:
                if not batch:
                    break
            elif len(seen) > count:
                break
            elif len(seen) == count:
                seen += [r for records in (await reader.getmany(timeout_ms=700)).values() for r in records]
                break
        return seen
    finally:
        await reader.stop()


async def produce(bootstrap: str, topic: str, values: list[bytes], *, key: bytes = b"p", partition: int = 0) -> None:
    """Publish ``values`` to one partition of ``topic``, in order, each acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


async def committed(bootstrap: str, group: str, tp: TopicPartition) -> OffsetAndMetadata | None:
    """``group``'s committed offset of ``tp``, with its metadata (None: none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return (await admin.list_consumer_group_offsets(group, partitions=[tp])).get(tp)
    finally:
        await admin.close()
