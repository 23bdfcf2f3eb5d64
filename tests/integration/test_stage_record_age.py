"""yidi_stage_record_age_seconds on the real Kafka: how late a stage reads, by the timestamp of
each batch's oldest record."""

from __future__ import annotations

import time

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from yidi.platform.kafka import Incoming, Outgoing, TransactionalStage, ensure_topics
from yidi.platform.topics import SETTLEMENT_ELIGIBLE, SETTLEMENT_PRICED

from tests.integration.waiting import until

pytestmark = pytest.mark.integration


def _count(stage: str, le: str) -> float:
    return REGISTRY.get_sample_value("yidi_stage_record_age_seconds_bucket", {"stage": stage, "le": le}) or 0.0


async def test_a_batch_s_oldest_record_gives_the_stage_s_age_once_per_batch(settings):
    """A record written 20 minutes ago (a backlog) is read 20 minutes late; one written now,
    at once. Each batch is observed once, by its oldest record."""
    s = settings.model_copy(update={"namespace": settings.namespace + "age."})
    await ensure_topics(s)
    handled: list[list[bytes]] = []

    async def forward(records: list[Incoming]) -> list[Outgoing]:
        handled.append([r.value for r in records])
        return [Outgoing(s.topic(SETTLEMENT_PRICED), r.value, key=r.key) for r in records]

    name = "age-test"
    stage = TransactionalStage(name, "test", s, [SETTLEMENT_ELIGIBLE], name, forward)
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        # settlement.eligible keeps the producer's time (CreateTime): the platform's own clock.
        await producer.send_and_wait(s.topic(SETTLEMENT_ELIGIBLE), b"late", key=b"p",
                                     timestamp_ms=int((time.time() - 1200) * 1000))
        await stage.start()
        await until(lambda: handled == [[b"late"]], timeout=30)
        assert (_count(name, "900.0"), _count(name, "3600.0")) == (0, 1)
        await producer.send_and_wait(s.topic(SETTLEMENT_ELIGIBLE), b"now", key=b"p")
        await until(lambda: len(handled) == 2, timeout=30)
        assert (_count(name, "5.0"), _count(name, "900.0"), _count(name, "3600.0")) == (1, 1, 2)
        assert stage.failure is None
    finally:
        await producer.stop()
        await stage.stop()
