"""yidi.platform.txnv2 and the transaction parts of fencing, without a broker: the features an
ApiVersions v3 answer finalizes, the back-off on CONCURRENT_TRANSACTIONS, and an abortable error
that arrives while the transaction is being aborted (the real broker: tests/integration/test_txnv2.py)."""

from __future__ import annotations

import asyncio
import io
from types import SimpleNamespace

from aiokafka.producer.transaction_manager import TransactionState
from aiokafka.protocol.types import CompactArray, Int16, Int32, TaggedFields, UnsignedVarInt32

from yidi.platform import fencing, txnv2


def _answer(features: list[tuple[str, int, int]] | None, api_keys: list[tuple[int, int, int]]) -> txnv2.ApiVersionsResponse_v3:
    """An ApiVersions v3 answer as the broker writes it, decoded (aiokafka's TaggedFields cannot
    encode one: it leaves out each field's size)."""
    tags = []
    if features is not None:
        tags.append((2, txnv2._FINALIZED_FEATURES.encode([(name, high, low, {}) for name, high, low in features])))
    tagged = UnsignedVarInt32.encode(len(tags)) + b"".join(
        UnsignedVarInt32.encode(tag) + UnsignedVarInt32.encode(len(raw)) + raw for tag, raw in tags)
    keys = CompactArray(("k", Int16), ("lo", Int16), ("hi", Int16), ("tags", TaggedFields))
    raw = Int16.encode(0) + keys.encode([(k, lo, hi, {}) for k, lo, hi in api_keys]) + Int32.encode(0) + tagged
    return txnv2.ApiVersionsResponse_v3.decode(io.BytesIO(raw))


def test_the_finalized_features_and_request_versions_of_an_api_versions_answer():
    answer = _answer([("metadata.version", 27, 1), ("transaction.version", 2, 0)], [(0, 3, 13), (26, 0, 5)])
    assert txnv2.finalized_features(answer) == {"metadata.version": 27, "transaction.version": 2}
    assert txnv2.max_versions(answer) == {0: 13, 26: 5}
    # A broker that finalizes nothing (before Kafka 2.7) has no tag 2.
    assert txnv2.finalized_features(_answer(None, [])) == {}


def test_concurrent_transactions_backs_off_from_2_ms_doubling_to_at_most_100():
    class Manager:
        pass

    m = Manager()
    assert [fencing.concurrent_backoff(m) for _ in range(8)] == [0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.1, 0.1]
    m.yidi_concurrent = 0  # what a request that gets through does
    assert fencing.concurrent_backoff(m) == 0.002


def test_an_abortable_error_during_an_abort_fails_the_offsets_only():
    async def run() -> None:
        m = txnv2.TransactionManagerV2("t", 60000)
        m.set_pid_and_epoch(1, 0)
        m.begin_transaction()
        offsets = m.add_offsets_to_txn({}, "g")
        m.aborting_transaction()
        waiter = m.wait_for_transaction_end()
        fencing._abortable(m, fencing.GenerationFenced("moved on"))
        # The abort goes on (the sender sends EndTxn): its state and waiter are untouched.
        assert m.state is TransactionState.ABORTING_TRANSACTION and not waiter.done()
        assert isinstance(offsets.exception(), fencing.GenerationFenced)
        # In a transaction still open, the same error makes it abortable.
        m.complete_transaction()
        m.begin_transaction()
        fencing._abortable(m, fencing.GenerationFenced("moved on"))
        assert m.state is TransactionState.ABORTABLE_ERROR

    asyncio.run(run())


def test_under_v2_a_partition_and_the_group_are_in_the_transaction_as_soon_as_used():
    async def run() -> None:
        from aiokafka import TopicPartition

        m = txnv2.TransactionManagerV2("t", 60000)
        m.set_pid_and_epoch(7, 3)
        m.begin_transaction()
        assert m.is_empty_transaction()
        m.maybe_add_partition_to_txn(TopicPartition("a", 0))
        assert not m.partitions_to_add() and not m.is_empty_transaction()  # nothing waits for AddPartitionsToTxn
        m.add_offsets_to_txn({}, "g")
        assert m.consumer_group_to_add() is None  # nor for AddOffsetsToTxn
        m.increment_sequence_number(TopicPartition("a", 0), 5)
        m.new_epoch(7, 4)
        assert (m.producer_id, m.producer_epoch) == (7, 4)
        assert m.sequence_number(TopicPartition("a", 0)) == 0

    asyncio.run(run())


def test_under_v1_a_refused_partition_leaves_the_added_ones_in_the_transaction_to_abort():
    """AddPartitionsToTxn refused for one topic (authorization) after another partition was added:
    the abort must end the transaction at the coordinator (EndTxn), or the next transaction joins it
    and commits the first one's records too. aiokafka's manager forgets the added partitions, so its
    abort looks empty and sends nothing."""
    async def run() -> None:
        from aiokafka import TopicPartition
        from aiokafka.errors import TopicAuthorizationFailedError
        from aiokafka.producer.transaction_manager import TransactionManager

        refused = TopicAuthorizationFailedError({"denied"})
        loop = asyncio.get_running_loop()
        for cls, ends_it in ((txnv2.TransactionManagerV1, True), (TransactionManager, False)):
            m = cls("t", 60000)
            waiting = SimpleNamespace(future=loop.create_future(), _drain_waiter=loop.create_future())
            waiting.failure = lambda exc, b=waiting: (b.future.set_exception(exc), b._drain_waiter.set_exception(exc))
            m.yidi_accumulator = SimpleNamespace(_batches={TopicPartition("denied", 0): [waiting]})
            m.set_pid_and_epoch(1, 0)
            m.begin_transaction()
            m.maybe_add_partition_to_txn(TopicPartition("ok", 0))
            m.partition_added(TopicPartition("ok", 0))  # its AddPartitionsToTxn went through
            m.maybe_add_partition_to_txn(TopicPartition("denied", 0))
            m.error_transaction(refused)
            assert m.state is TransactionState.ABORTABLE_ERROR
            assert m.wait_for_transaction_end().exception() is refused
            assert not m.partitions_to_add()  # the refused partition is in no transaction
            assert (not m.is_empty_transaction()) is ends_it, cls  # so the abort sends EndTxn (or not)
            # The refused partition's records, never sent, are failed and dropped (not sent by the abort).
            assert (waiting.future.done(), bool(m.yidi_accumulator._batches)) == (ends_it, not ends_it), cls

    asyncio.run(run())


def test_stages_speak_v2_where_the_cluster_has_it_and_send_their_offsets_after_the_handler():
    from yidi.platform.settings import Settings

    defaults = Settings(_env_prefix="YIDI_NOT_FROM_THE_SHELL_")
    assert defaults.kafka_transactions == "auto"
    assert defaults.kafka_offsets_during_handler is False
