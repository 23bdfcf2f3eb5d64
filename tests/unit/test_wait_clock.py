"""The wait behind yidi_stage_waiting_seconds: how long records have waited on a partition whose
position does not move, from samples of each partition's lag and position."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError

from yidi.platform.lag import WaitClock, partition_lag

A, B = TopicPartition("t", 0), TopicPartition("t", 1)


def test_a_partition_with_records_behind_and_its_position_still_has_waited_since_the_first_such_sample():
    clock = WaitClock()
    clock.sample({A: (3, 10), B: (0, 7)}, now=100.0)
    assert clock.longest(100.0) == 0.0
    clock.sample({A: (5, 10), B: (0, 7)}, now=105.0)
    assert clock.longest(105.0) == 5.0
    clock.sample({A: (9, 10), B: (0, 7)}, now=110.0)
    assert clock.longest(112.0) == 12.0


def test_a_partition_that_moves_or_empties_has_not_waited():
    clock = WaitClock()
    clock.sample({A: (3, 10)}, now=100.0)
    clock.sample({A: (3, 10)}, now=105.0)
    assert clock.longest(105.0) == 5.0
    clock.sample({A: (40, 11)}, now=110.0)  # it moved, however far behind: falling behind, not stuck
    assert clock.longest(110.0) == 0.0
    clock.sample({A: (40, 11)}, now=115.0)
    assert clock.longest(115.0) == 5.0
    clock.sample({A: (0, 51)}, now=120.0)
    assert clock.longest(120.0) == 0.0
    clock.sample({A: (1, 51)}, now=125.0)  # behind again at the position it caught up at: a new wait
    assert clock.longest(125.0) == 0.0


def test_the_longest_wait_is_the_worst_partition_or_the_batch_in_hand():
    clock = WaitClock()
    clock.sample({A: (1, 10), B: (1, 20)}, now=100.0)
    clock.sample({A: (1, 10), B: (2, 21)}, now=130.0)
    assert clock.longest(130.0) == 30.0  # A waited; B moved
    assert clock.longest(130.0, in_hand=45.0) == 45.0
    clock.sample({B: (2, 21)}, now=140.0)  # A revoked: its wait is another instance's now
    assert clock.longest(140.0) == 10.0
    clock.sample({}, now=150.0)
    assert clock.longest(150.0) == 0.0


def test_a_position_moved_back_is_no_progress():
    """A batch rewound or dropped at a rebalance is read again from an earlier offset: its records
    wait on."""
    clock = WaitClock()
    clock.sample({A: (3, 10)}, now=100.0)
    clock.sample({A: (5, 8)}, now=105.0)
    assert clock.longest(105.0) == 5.0


class _Consumer:
    """What partition_lag asks of aiokafka's consumer; ``end_offsets`` as the broker answers it."""

    def __init__(self, end_offsets, cached):
        self._end_offsets, self._cached = end_offsets, cached

    def assignment(self):
        return {A, B}

    async def end_offsets(self, partitions):
        return await self._end_offsets(partitions)

    def last_stable_offset(self, tp):
        return self._cached[tp]

    async def position(self, tp):
        return {A: 10, B: 20}[tp]


def test_the_end_offsets_the_broker_does_not_give_are_the_consumers_own_fetches():
    """No partition's end offset comes (the broker away, or slow past the sample's timeout): the
    sample takes the last stable offsets the consumer's fetches brought, so a partition stuck with
    records behind still shows, and so do the others."""

    async def answered(partitions):
        return {A: 12, B: 20}

    async def leaderless(partitions):
        raise KafkaTimeoutError()

    async def slow(partitions):
        await asyncio.sleep(60)

    cached = {A: 15, B: None}  # B: no fetch has brought one yet
    assert asyncio.run(partition_lag(_Consumer(answered, cached))) == {A: (2, 10), B: (0, 20)}
    assert asyncio.run(partition_lag(_Consumer(leaderless, cached))) == {A: (5, 10), B: (0, 20)}
    assert asyncio.run(partition_lag(_Consumer(slow, cached), ends_timeout=0.05)) == {A: (5, 10), B: (0, 20)}


def test_a_partition_without_a_leader_does_not_hide_the_others_nor_read_as_kafka_unreachable():
    """Its broker down, one partition's end offset fails or never comes; the others' leaders answer.
    Asked together, the whole ask failed: every partition fell back on the fetches' offsets and
    yidi_kafka_reached_timestamp_seconds went stale, firing YidiKafkaUnreachable for the job, which
    holds back the YidiStageWaiting that names the partition."""
    from yidi.platform import metrics

    def reached() -> float:
        return metrics.KAFKA_REACHED._value.get()  # noqa: SLF001

    async def a_leaderless(partitions):
        if A in partitions:
            raise KafkaTimeoutError()
        return {tp: 30 for tp in partitions}

    async def a_slow(partitions):
        if A in partitions:
            await asyncio.sleep(60)
        return {tp: 30 for tp in partitions}

    async def a_left_out(partitions):  # an answer without the partition (aiokafka drops some errors)
        return {tp: 30 for tp in partitions if tp != A}

    async def none_answers(partitions):
        raise KafkaTimeoutError()

    cached = {A: 15, B: 25}  # the fetches' last stable offsets
    for ends in (a_leaderless, a_slow, a_left_out):
        metrics.KAFKA_REACHED.set(0)
        assert asyncio.run(partition_lag(_Consumer(ends, cached), ends_timeout=0.05)) == {A: (5, 10), B: (10, 20)}
        assert reached() > 0, ends.__name__  # B's leader answered
    metrics.KAFKA_REACHED.set(0)
    assert asyncio.run(partition_lag(_Consumer(none_answers, cached))) == {A: (5, 10), B: (5, 20)}
    assert reached() == 0
