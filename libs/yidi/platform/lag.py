"""Has a consumer group read everything on a topic? Exact even past transaction markers.

A topic written in transactions holds control markers that take offsets but are never
delivered, so "committed == end offset" can stay one short forever. Where the committed offset
is behind the end, this reads from it with ``read_committed``: no record means caught up.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from yidi.platform import metrics


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic`` as the broker knows them now (none: no such topic), in order."""
    partitions = consumer.partitions_for_topic(topic) or set()
    if not partitions:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - first look at a new topic
        partitions = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(partitions)]


async def partition_lag(consumer: AIOKafkaConsumer, *, position_timeout: float = 2.0,
                        ends_timeout: float = 5.0) -> dict[TopicPartition, tuple[int, int]]:
    """Each assigned partition's records past the consumer's position, up to its last stable offset
    (a ``read_committed`` consumer's end offset), and that position: ``{tp: (behind, position)}``;
    empty with no partition assigned. An answer from the broker sets
    ``yidi_kafka_reached_timestamp_seconds``.

    Each partition's end offset is asked of the broker on its own, all at once: asked together, one
    partition without a leader (its broker down) made the whole ask fail, after aiokafka's 40 s of
    retries, so every stage of the process read as cut off from Kafka (``YidiKafkaUnreachable``,
    which holds back ``YidiStageWaiting``) while the others' leaders answered. A partition whose
    end offset does not come within ``ends_timeout`` takes the last stable offset the consumer's own
    fetches brought instead, so that its records waiting still show (``yidi_stage_waiting_seconds``)."""
    partitions = list(consumer.assignment())
    if not partitions:
        return {}

    async def end_offset(tp: TopicPartition) -> int | None:
        return (await asyncio.wait_for(consumer.end_offsets([tp]), ends_timeout)).get(tp)

    answers = await asyncio.gather(*(end_offset(tp) for tp in partitions), return_exceptions=True)
    ends: dict[TopicPartition, int | None] = {}
    for tp, answer in zip(partitions, answers):
        if isinstance(answer, BaseException) and not isinstance(answer, (TimeoutError, KafkaError)):
            raise answer
        # No answer in time, or one without the partition: the fetches' last stable offset.
        ends[tp] = answer if isinstance(answer, int) else consumer.last_stable_offset(tp)
    if not all(isinstance(answer, BaseException) for answer in answers):
        metrics.KAFKA_REACHED.set(time.time())  # a broker answered (YidiKafkaUnreachable)
    lags = {}
    for tp in partitions:
        position = await asyncio.wait_for(consumer.position(tp), position_timeout)
        end = ends.get(tp)
        lags[tp] = (max(0, end - position) if end is not None and end >= 0 else 0, position)
    return lags


def deleted_unread(committed: dict[TopicPartition, Any], first: dict[TopicPartition, int]) -> list[tuple[TopicPartition, int, int]]:
    """The partitions whose committed offset is below their first record retained, each with both:
    ``[(tp, committed, first)]``, in order. Their records between were deleted (the topic's
    ``retention.ms``, or ``kafka-delete-records``) before the group read them, and the consumer goes
    on from the first one retained (``auto_offset_reset`` earliest) with one INFO line of
    aiokafka's. ``committed`` maps a partition to its ``OffsetAndMetadata`` (or None: no committed
    offset, not this case)."""
    below = []
    for tp in sorted(committed):
        at = committed[tp].offset if committed[tp] is not None else -1
        if 0 <= at < first.get(tp, -1):
            below.append((tp, at, first[tp]))
    return below


async def consumer_lag(consumer: AIOKafkaConsumer, *, position_timeout: float = 2.0) -> int:
    """Records on the consumer's assigned partitions past its position (``partition_lag``, summed);
    0 with no partition assigned."""
    return sum(behind for behind, _ in (await partition_lag(consumer, position_timeout=position_timeout)).values())


class WaitClock:
    """How long records have waited on a consumer without its position moving, from samples of
    ``partition_lag``: a partition with records behind whose position is where the last sample
    found it (or behind it) has waited since the first sample that found it there. A partition that moves, or
    has nothing behind, has not waited. ``longest`` is the longest such wait among the partitions
    of the last sample (0 when none), or ``in_hand`` seconds when longer: the age of a batch
    fetched (the position past it) and not yet done."""

    def __init__(self) -> None:
        self._since: dict[TopicPartition, tuple[int, float]] = {}

    def sample(self, lags: dict[TopicPartition, tuple[int, int]], now: float) -> None:
        since = {}
        for tp, (behind, position) in lags.items():
            if behind <= 0:
                continue
            seen = self._since.get(tp)
            # Moved back (a batch rewound, or dropped at a rebalance, to be read again) is no progress.
            since[tp] = seen if seen is not None and position <= seen[0] else (position, now)
        self._since = since

    def longest(self, now: float, in_hand: float = 0.0) -> float:
        return max([in_hand] + [now - at for _, at in self._since.values()])


async def caught_up(bootstrap: str, group: str, topic: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed", fetch_max_wait_ms=100)
    await admin.start()
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        if not tps:
            return True
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        ends = await consumer.end_offsets(tps)
        behind = []
        for tp in tps:
            meta = committed.get(tp)
            offset = meta.offset if meta is not None and meta.offset >= 0 else 0
            if offset < ends[tp]:
                behind.append((tp, offset))
        if not behind:
            return True
        consumer.assign([tp for tp, _ in behind])
        for tp, offset in behind:
            consumer.seek(tp, offset)
        records = await consumer.getmany(timeout_ms=500)
        return not any(records.values())
    finally:
        await consumer.stop()
        await admin.close()


async def wait_caught_up(bootstrap: str, pairs: list[tuple[str, str]], *, timeout: float = 60.0) -> None:
    """Wait until every (group, topic) pair has consumed all it can see; raise TimeoutError if not."""
    deadline = time.monotonic() + timeout
    while True:
        pending = [pair for pair in pairs if not await caught_up(bootstrap, *pair)]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"still consuming: {pending}")
        await asyncio.sleep(0.3)
