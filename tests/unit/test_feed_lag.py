"""A feed's lag gauge, with a fake consumer: 0 before the subscriber has one, the backlog after,
and the last value kept while a sample fails."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from yidi.platform import feeds


class _Consumer:
    def __init__(self, ends: list[object]) -> None:
        self.ends = ends

    def assignment(self) -> set[str]:
        return {"tp"}

    async def end_offsets(self, partitions: list[str]) -> dict[str, int]:
        end = self.ends.pop(0) if self.ends else None
        if end is None:
            raise asyncio.CancelledError  # the test is over
        if isinstance(end, Exception):
            raise end
        return {"tp": end}

    async def position(self, tp: str) -> int:
        return 10


class _Subscriber:
    consumer = None


def _lag() -> float | None:
    return REGISTRY.get_sample_value("yidi_feed_lag_records", {"feed": "test.feed"})


async def test_the_gauge_follows_the_backlog_and_keeps_its_value_through_a_failed_sample(monkeypatch):
    seen: list[float | None] = []

    async def sleep(seconds: float) -> None:
        seen.append(_lag())
        if subscriber.consumer is None:
            subscriber.consumer = _Consumer([130, OSError("broker away"), 10])

    monkeypatch.setattr(feeds.asyncio, "sleep", sleep)
    subscriber, held = _Subscriber(), 0
    with pytest.raises(asyncio.CancelledError):
        await feeds.show_lag_every("test.feed", subscriber, 5.0, lambda: held)
    # no consumer yet (the batch in hand alone: none); 130 - 10; the failed sample keeps it; caught up
    assert seen == [0, 120, 120, 0]


async def test_the_batch_the_handler_holds_counts(monkeypatch):
    async def sleep(seconds: float) -> None:
        raise asyncio.CancelledError

    monkeypatch.setattr(feeds.asyncio, "sleep", sleep)
    subscriber = _Subscriber()
    subscriber.consumer = _Consumer([10])  # nothing past the position: aiokafka moved it past the batch
    with pytest.raises(asyncio.CancelledError):
        await feeds.show_lag_every("test.feed", subscriber, 5.0, lambda: 500)
    assert _lag() == 500


async def test_an_answer_from_the_broker_is_the_time_kafka_was_last_reached():
    import time

    from yidi.platform.lag import consumer_lag

    def reached() -> float | None:
        return REGISTRY.get_sample_value("yidi_kafka_reached_timestamp_seconds")

    class _Unassigned(_Consumer):
        def assignment(self) -> set[str]:
            return set()

    before = reached()
    assert await consumer_lag(_Unassigned([130])) == 0 and reached() == before  # nothing asked
    with pytest.raises(OSError):
        await consumer_lag(_Consumer([OSError("broker away")]))
    assert reached() == before  # no answer
    asked = time.time()
    assert await consumer_lag(_Consumer([130])) == 120
    assert reached() >= asked


@pytest.mark.parametrize("seconds", [0, -1, 61])
def test_the_lag_is_sampled_every_so_many_seconds_above_0_and_at_most_60(seconds):
    # 0 had every stage and feed ask the broker for offsets back to back; over a minute, the samples'
    # answers would be too rare for YidiKafkaUnreachable (2 minutes).
    from pydantic import ValidationError

    from yidi.platform.settings import Settings

    with pytest.raises(ValidationError, match="lag_sample_seconds"):
        Settings(lag_sample_seconds=seconds)
    assert Settings(lag_sample_seconds=0.5).lag_sample_seconds == 0.5
    assert Settings(lag_sample_seconds=60).lag_sample_seconds == 60


def test_deleted_unread_names_only_committed_offsets_below_the_first_record_retained():
    from aiokafka import TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    from yidi.platform.lag import deleted_unread

    a, b, c, d, e = (TopicPartition("t", p) for p in range(5))
    committed = {a: OffsetAndMetadata(2, ""), b: OffsetAndMetadata(4, ""), c: None, d: OffsetAndMetadata(-1, ""),
                 e: OffsetAndMetadata(9, "")}
    first = {a: 4, b: 4, c: 7, d: 3, e: 0}
    # a: 2 and 3 deleted; b: at its first; c: none committed (a read from the start, not this);
    # d: an invalid offset; e: past its first. A partition without a first offset is left out.
    assert deleted_unread(committed, first) == [(a, 2, 4)]
    assert deleted_unread({e: OffsetAndMetadata(1, "")}, {}) == []
