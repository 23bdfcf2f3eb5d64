"""Kafka transactions v2 (KIP-890, yidi.platform.txnv2) against the real broker: commits, aborts,
the epoch the coordinator bumps at every EndTxn, sequences that start again, fencing, and a record
batch the broker refuses (under both protocol versions)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import CoordinationType
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    InvalidRequestError,
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    ProducerFenced,
)
from aiokafka.producer.transaction_manager import TransactionState

from yidi.platform import txnv2
from yidi.platform.kafka import Incoming, Outgoing, TransactionalStage

from tests.integration.kafka_io import create_topics, read_topic

pytestmark = pytest.mark.integration


async def _producer(bootstrap: str, txn_id: str, wanted: str) -> tuple[AIOKafkaProducer, int]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=txn_id, enable_idempotence=True,
                                acks="all", retry_backoff_ms=10)
    await producer.start()
    version = await txnv2.enable(producer, wanted)
    return producer, version


async def _committed(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    """The values a read_committed reader sees on ``topic`` (all partitions), sorted."""
    return sorted(r.value for r in await read_topic(bootstrap, topic, count=expected))


async def test_the_local_broker_finalizes_transaction_version_2(v2_cluster):
    producer = AIOKafkaProducer(bootstrap_servers=v2_cluster, transactional_id=f"f-{uuid.uuid4().hex}")
    await producer.start()
    try:
        node = await producer._sender._find_coordinator(CoordinationType.TRANSACTION, producer._txn_manager.transactional_id)
        features = txnv2.finalized_features(await producer.client.send(node, txnv2.FeaturesRequest()))
        assert features[txnv2.TRANSACTION_VERSION] >= 2
        assert "metadata.version" in features
        # Switching needs the producer switched explicitly: a plain start speaks v1.
        assert not txnv2.uses_v2(producer._txn_manager)
    finally:
        await producer.stop()


async def test_commits_and_aborts_under_v2_bump_the_epoch_and_restart_sequences(settings, v2_cluster):
    topic, group = f"{settings.namespace}txn2-{uuid.uuid4().hex[:8]}", f"{settings.namespace}g-{uuid.uuid4().hex[:8]}"
    await create_topics(v2_cluster, topic, partitions=2)
    producer, version = await _producer(v2_cluster, f"t-{uuid.uuid4().hex}", "auto")
    try:
        assert version == 2 and txnv2.uses_v2(producer._txn_manager)
        txn = producer._txn_manager
        pid, epoch = txn.producer_id, txn.producer_epoch
        expected: list[bytes] = []
        for n in range(6):
            commit = n != 3  # the fourth is aborted
            await producer.begin_transaction()
            # Several records per partition per transaction: a sequence that did not start again at
            # 0 after the epoch bump is refused (OUT_OF_ORDER_SEQUENCE_NUMBER) from the second one on.
            futures = [await producer.send(topic, f"{n}-{i}".encode(), partition=i % 2) for i in range(4)]
            await producer.send_offsets_to_transaction({TopicPartition(topic, 0): 10 * (n + 1)}, group)
            if commit:
                await producer.commit_transaction()
                expected += [f"{n}-{i}".encode() for i in range(4)]
            else:
                await producer.abort_transaction()
            for f in futures:
                assert (await f).offset >= 0
            # The coordinator bumped the epoch (same producer id) at the EndTxn: one per transaction.
            assert (txn.producer_id, txn.producer_epoch) == (pid, epoch + n + 1)
            assert txn.sequence_number(TopicPartition(topic, 0)) == 0
        assert await _committed(v2_cluster, topic, len(expected)) == sorted(expected)
        # The offsets of the last committed transaction are the group's.
        admin = AIOKafkaAdminClient(bootstrap_servers=v2_cluster)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        assert offsets[TopicPartition(topic, 0)].offset == 60
        # An empty transaction sends no EndTxn (a v2 coordinator refuses to commit one) and keeps the epoch.
        await producer.begin_transaction()
        await producer.commit_transaction()
        assert txn.producer_epoch == epoch + 6
    finally:
        await producer.stop()


@pytest.mark.parametrize("wanted", ["v1", "auto"])
async def test_a_newer_producer_with_the_same_transactional_id_fences_the_older(settings, v2_cluster, wanted):
    topic = f"{settings.namespace}fence-{uuid.uuid4().hex[:8]}"
    await create_topics(v2_cluster, topic)
    txn_id = f"t-{uuid.uuid4().hex}"
    old, _ = await _producer(v2_cluster, txn_id, wanted)
    try:
        await old.begin_transaction()
        await old.send(topic, b"zombie")
        await old.flush()
        new, _ = await _producer(v2_cluster, txn_id, wanted)  # aborts the old one's open transaction
        try:
            with pytest.raises(ProducerFenced):
                await old.commit_transaction()
            assert old._txn_manager.is_fatal_error()
            async with new.transaction():
                await new.send(topic, b"new")
        finally:
            await new.stop()
    finally:
        await old.stop()
    assert await _committed(v2_cluster, topic, 1) == [b"new"]


@pytest.mark.parametrize("wanted", ["v1", "auto"])
async def test_a_batch_the_broker_refuses_makes_the_transaction_abortable(settings, v2_cluster, wanted):
    """aiokafka alone would commit the transaction without the refused batch (its send future
    failed, the commit went on): here the commit raises, the abort ends the transaction, and
    nothing of it is read, the batch that was accepted included."""
    small = f"{settings.namespace}small-{uuid.uuid4().hex[:8]}"
    other = f"{settings.namespace}other-{uuid.uuid4().hex[:8]}"
    await create_topics(v2_cluster, small, configs={"max.message.bytes": "2000"})
    await create_topics(v2_cluster, other)
    producer, version = await _producer(v2_cluster, f"t-{uuid.uuid4().hex}", wanted)
    try:
        assert version == (2 if wanted == "auto" else 1)
        txnv2.install()
        await producer.begin_transaction()
        accepted = await producer.send(other, b"accepted")
        refused = await producer.send(small, b"x" * 5000)  # under the client's limit, over the topic's
        with pytest.raises(txnv2.TransactionAbortable) as raised:
            await producer.commit_transaction()
        assert isinstance(raised.value.refused, MessageSizeTooLargeError)
        assert producer._txn_manager.state is TransactionState.ABORTABLE_ERROR
        await producer.abort_transaction()
        assert (await accepted).offset >= 0
        with pytest.raises(KafkaError):
            await refused
        # The producer goes on, to the partition of the refused batch too: the sequence numbers its
        # records took were never written, and a new epoch starts them again (v1: InitProducerId;
        # v2: the abort's EndTxn), or the broker would refuse every later batch there.
        for n in range(3):
            async with producer.transaction():
                await producer.send(other, f"next-{n}".encode())
                await producer.send(small, f"small-{n}".encode())
    finally:
        await producer.stop()
    assert await _committed(v2_cluster, other, 3) == [b"next-0", b"next-1", b"next-2"]
    assert await _committed(v2_cluster, small, 3) == [b"small-0", b"small-1", b"small-2"]


@pytest.mark.parametrize("wanted", ["v1", "auto"])
async def test_a_batch_the_client_gives_up_on_makes_the_transaction_abortable(settings, v2_cluster, wanted):
    """A batch whose partition has no known leader for longer than the request timeout is failed by
    aiokafka's accumulator itself, not by a produce response: its transaction is not committed either."""
    ok = f"{settings.namespace}ok-{uuid.uuid4().hex[:8]}"
    leaderless = f"{settings.namespace}leaderless-{uuid.uuid4().hex[:8]}"
    await create_topics(v2_cluster, ok, leaderless)
    producer = AIOKafkaProducer(bootstrap_servers=v2_cluster, transactional_id=f"t-{uuid.uuid4().hex}",
                                enable_idempotence=True, acks="all", retry_backoff_ms=10, request_timeout_ms=1500)
    await producer.start()
    try:
        txnv2.install()
        await txnv2.enable(producer, wanted)
        await producer.client._wait_on_metadata(leaderless)
        cluster = producer.client.cluster
        leader_for_partition = cluster.leader_for_partition
        cluster.leader_for_partition = lambda tp: None if tp.topic == leaderless else leader_for_partition(tp)
        group = f"{settings.namespace}g-{uuid.uuid4().hex[:8]}"
        await producer.begin_transaction()
        await producer.send(ok, b"accepted")
        lost = await producer.send(leaderless, b"lost")
        with pytest.raises(KafkaError):
            await lost  # expires after the request timeout
        with pytest.raises(KafkaError):
            await producer.send_offsets_to_transaction({TopicPartition(ok, 0): 7}, group)
            await producer.commit_transaction()
        await producer.abort_transaction()
        cluster.leader_for_partition = leader_for_partition
        async with producer.transaction():
            await producer.send(ok, b"next")
            await producer.send(leaderless, b"found")
    finally:
        await producer.stop()
    assert await _committed(v2_cluster, ok, 1) == [b"next"]
    assert await _committed(v2_cluster, leaderless, 1) == [b"found"]


@pytest.mark.parametrize("wanted", ["v1", "auto"])
@pytest.mark.parametrize("lost", [KafkaConnectionError, CoordinatorLoadInProgressError], ids=["connection-closed", "loading"])
async def test_a_transaction_coordinator_look_up_that_fails_retriably_is_tried_again(settings, v2_cluster, wanted, lost):
    """A broker restarting (a rolling upgrade) answers NOT_COORDINATOR as it shuts down, and the
    producer's next look-up of its coordinator meets the connection closing; starting, it may
    answer that it is still loading its transactions. aiokafka 0.14 took either as final: its
    sender stopped, and every stage committing at that moment stopped its process. Here the
    look-up fails twice so, as the broker's would, and the transaction goes through."""
    topic = f"{settings.namespace}coord-{uuid.uuid4().hex[:8]}"
    await create_topics(v2_cluster, topic)
    producer, _ = await _producer(v2_cluster, f"t-{uuid.uuid4().hex}", wanted)
    try:
        txnv2.install()
        lookup, failures = producer.client.coordinator_lookup, [lost("Connection at 127.0.0.1 closed"), lost()]

        async def through_a_restart(*args):
            if failures:
                raise failures.pop()
            return await lookup(*args)

        producer.client.coordinator_lookup = through_a_restart
        producer._sender._coordinator_dead(CoordinationType.TRANSACTION)  # as a NOT_COORDINATOR answer does
        async with producer.transaction():
            await producer.send(topic, b"after the restart")
        assert failures == []
    finally:
        await producer.stop()
    assert await _committed(v2_cluster, topic, 1) == [b"after the restart"]


async def test_a_coordinator_look_up_that_fails_for_good_still_fails_the_transaction(settings, v2_cluster):
    """The retry is for retriable errors only: one that is not (here the broker's INVALID_REQUEST)
    ends the producer's sender as before, and the commit says so at once."""
    topic = f"{settings.namespace}coord-{uuid.uuid4().hex[:8]}"
    await create_topics(v2_cluster, topic)
    producer, _ = await _producer(v2_cluster, f"t-{uuid.uuid4().hex}", "auto")
    try:
        txnv2.install()

        async def refused(*args):
            raise InvalidRequestError()

        producer.client.coordinator_lookup = refused
        producer._sender._coordinator_dead(CoordinationType.TRANSACTION)
        with pytest.raises(KafkaError):
            async with asyncio.timeout(10):
                async with producer.transaction():
                    await producer.send(topic, b"never")
    finally:
        await producer.stop()


@pytest.mark.parametrize("during", [False, True], ids=["offsets-after-the-handler", "offsets-during-handler"])
async def test_a_v2_stage_opens_its_transaction_once_its_handler_has_returned(settings, v2_cluster, during):
    """Unless told to send its offsets while the handler runs, a stage's producer has no transaction
    open while its handler runs (so an instance killed there leaves no offsets pending for the
    partitions' next owner, docs/architecture.md §4)."""
    s = settings.model_copy(update={"namespace": f"{settings.namespace}open{uuid.uuid4().hex[:6]}.",
                                    "kafka_transactions": "auto", "kafka_offsets_during_handler": during})
    await create_topics(v2_cluster, s.topic("in"), s.topic("out"))
    seen: list[TransactionState] = []
    stage: TransactionalStage

    async def handle(records: list[Incoming]) -> list[Outgoing]:
        await asyncio.sleep(0.2)  # a handler that takes its time
        seen.append(stage._producer._txn_manager.state)
        return [Outgoing(s.topic("out"), r.value) for r in records]

    stage = TransactionalStage("open", "test", s, ["in"], "open", handle, max_records=10)
    producer = AIOKafkaProducer(bootstrap_servers=v2_cluster, acks="all")
    await producer.start()
    try:
        await stage.start()
        assert stage.transaction_version == 2
        for i in range(3):
            await producer.send_and_wait(s.topic("in"), f"r{i}".encode())
        assert await _committed(v2_cluster, s.topic("out"), 3) == [b"r0", b"r1", b"r2"]
    finally:
        await producer.stop()
        await stage.stop()
    assert seen and stage.failure is None
    if during:
        assert set(seen) == {TransactionState.IN_TRANSACTION}
    else:
        assert set(seen) == {TransactionState.READY}
