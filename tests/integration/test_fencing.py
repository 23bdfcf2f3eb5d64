"""Several instances of a stage in one consumer group, on the real Kafka (fencing.py, KIP-447):
offsets a transaction holds are waited for, and a batch fetched before a rebalance is never
committed by the instance the group has moved on from."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from yidi.platform import fencing
from yidi.platform.kafka import Incoming, Outgoing, TransactionalStage

from tests.integration.kafka_io import create_topics
from tests.integration.protocols import PROTOCOLS
from tests.integration.waiting import until

pytestmark = pytest.mark.integration


class _TwoInstances:
    """Two instances ``a`` and ``b`` of one stage (``in`` → ``out``, 6 partitions) in one consumer
    group, a producer for ``in`` and a read_committed reader of ``out``."""

    def __init__(self, s, name: str, handler, max_records: int) -> None:
        self.s = s
        self.stages = {
            i: TransactionalStage(f"{name}-{i}", "test", s.model_copy(update={"instance": i}), ["in"], name,
                                  handler(i), max_records=max_records)
            for i in ("a", "b")
        }
        self.producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
        self.reader = AIOKafkaConsumer(s.topic("out"), bootstrap_servers=s.kafka_bootstrap,
                                       isolation_level="read_committed", auto_offset_reset="earliest")

    async def __aenter__(self) -> _TwoInstances:
        await create_topics(self.s.kafka_bootstrap, self.s.topic("in"), partitions=6)
        await create_topics(self.s.kafka_bootstrap, self.s.topic("out"))
        await self.producer.start()
        await self.reader.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.reader.stop()
        await self.producer.stop()
        for stage in self.stages.values():
            await stage.stop()

    async def send(self, values: list[bytes], first: int = 0) -> None:
        for i, value in enumerate(values, start=first):
            await self.producer.send(self.s.topic("in"), value, partition=i % 6)
        await self.producer.flush()

    async def passed_on(self, expected: int) -> list[bytes]:
        """What the stages committed to ``out``: until ``expected`` values, then 1 s more (anything
        more would be a duplicate)."""
        seen: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(seen) < expected and time.monotonic() < deadline:
            for records in (await self.reader.getmany(timeout_ms=500)).values():
                seen += [r.value for r in records]
        await asyncio.sleep(1.0)
        for records in (await self.reader.getmany(timeout_ms=1000)).values():
            seen += [r.value for r in records]
        return seen


async def test_a_consumer_waits_for_the_offsets_an_open_transaction_holds(settings):
    fencing.install()
    topic, group = f"{settings.namespace}fence.stable", f"{settings.namespace}fence.stable.g"
    await create_topics(settings.kafka_bootstrap, topic)
    plain = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    txn = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, transactional_id=f"{group}.tx")
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap, group_id=group,
                                enable_auto_commit=False, auto_offset_reset="earliest", isolation_level="read_committed")
    await plain.start()
    await txn.start()
    try:
        for i in range(5):
            await plain.send_and_wait(topic, str(i).encode())
        # A transaction commits offset 3 for the group, and stays open.
        await txn.begin_transaction()
        await txn.send_offsets_to_transaction({TopicPartition(topic, 0): 3}, group)
        await consumer.start()
        # Without require_stable the consumer would read the committed offset as missing and
        # start from the earliest record; it waits instead.
        early = await consumer.getmany(timeout_ms=1500)
        assert not any(early.values())
        await txn.commit_transaction()
        got: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(got) < 2 and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got += [r.value for r in records]
        assert got == [b"3", b"4"]
    finally:
        await consumer.stop()
        await txn.stop()
        await plain.stop()


@PROTOCOLS
async def test_a_batch_fetched_before_a_rebalance_is_aborted_and_handled_once_by_the_new_owner(settings, transactions,
                                                                                               during):
    # With the offsets sent during the handler, a's transaction is open while its handler stalls:
    # the rebalance aborts it, or b would wait for those offsets until the transaction timed out.
    tag = uuid.uuid4().hex[:6]
    s = settings.model_copy(update={"namespace": f"{settings.namespace}fence{tag}.", "batch_linger_ms": 0.0,
                                    "kafka_transactions": transactions, "kafka_offsets_during_handler": during})
    release = asyncio.Event()
    handled: dict[str, list[bytes]] = {"a": [], "b": []}

    def handler(instance: str):
        async def handle(records: list[Incoming]) -> list[Outgoing]:
            if instance == "a" and not handled["a"]:
                handled["a"].append(b"")  # a's first batch stalls until b has joined and taken partitions
                await release.wait()
            handled[instance] += [r.value for r in records]
            return [Outgoing(s.topic("out"), r.value) for r in records]
        return handle

    sent = [f"r{i}".encode() for i in range(120)]
    async with _TwoInstances(s, "fence", handler, max_records=50) as two:
        try:
            await two.stages["a"].start()
            assert two.stages["a"].transaction_version == (1 if transactions == "v1" else 2)
            await two.send(sent)
            await until(lambda: bool(handled["a"]))  # a holds a batch, fetched in generation 1
            fenced_before = _fenced()
            await two.stages["b"].start()  # the group rebalances: some of a's partitions go to b
            await until(lambda: len(handled["b"]) > 0)
            release.set()  # a's stalled batch now tries to commit under generation 1: refused
            await until(lambda: _fenced() > fenced_before)
            assert sorted(await two.passed_on(len(sent))) == sorted(sent)  # every record passed on once
            assert two.stages["a"].failure is None and two.stages["b"].failure is None
        finally:
            release.set()


@PROTOCOLS
async def test_a_rebalance_during_the_linger_loses_and_duplicates_nothing(settings, transactions, during):
    # The stage waits (linger) after a commit; the group rebalances meanwhile. The lingering batch
    # is dropped and what its second fetch brought is rewound; the new assignment reads it all again.
    tag = uuid.uuid4().hex[:6]
    s = settings.model_copy(update={"namespace": f"{settings.namespace}linger{tag}.", "batch_linger_ms": 6000.0,
                                    "kafka_transactions": transactions, "kafka_offsets_during_handler": during})
    batches: dict[str, int] = {"a": 0, "b": 0}

    def handler(instance: str):
        async def handle(records: list[Incoming]) -> list[Outgoing]:
            batches[instance] += 1
            return [Outgoing(s.topic("out"), r.value) for r in records]
        return handle

    sent = [f"r{i}".encode() for i in range(60)]
    async with _TwoInstances(s, "linger", handler, max_records=500) as two:
        noticed_before = _noticed("linger-a")  # the counters are the process's: earlier cases counted too
        await two.stages["a"].start()
        assert two.stages["a"].transaction_version == (1 if transactions == "v1" else 2)
        await two.send(sent[:1])
        await until(lambda: batches["a"] == 1)  # committed: a now lingers 6 s before its next batch
        await two.send(sent[1:30], first=1)
        await asyncio.sleep(0.5)  # a holds these, lingering
        await two.stages["b"].start()  # the rebalance completes during a's linger
        await two.send(sent[30:], first=30)
        assert sorted(await two.passed_on(len(sent))) == sorted(sent)  # nothing lost, nothing twice
        assert batches["b"] > 0
        # a noticed the rebalance, during its linger (its batch dropped and rewound) or at commit.
        assert _noticed("linger-a") > noticed_before
        assert two.stages["a"].failure is None and two.stages["b"].failure is None


def _noticed(stage: str) -> float:
    from yidi.platform import metrics

    return sum(metrics.STAGE_RETRIES.labels(stage, reason)._value.get() for reason in ("Rebalanced", "GenerationFenced"))


def _fenced() -> float:
    from yidi.platform import metrics

    return sum(metrics.STAGE_RETRIES.labels(f"fence-{n}", "GenerationFenced")._value.get() for n in ("a", "b"))
