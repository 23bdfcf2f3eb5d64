"""A stage commits a batch only under a group membership the broker can check (fencing.py)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.producer.transaction_manager import TransactionState

from yidi.platform.kafka import Incoming, TransactionalStage
from yidi.platform.settings import Settings


class _Coordinator:
    def __init__(self, generation: int, member_id: str) -> None:
        self.generation, self.member_id = generation, member_id


class _Consumer:
    def __init__(self, generation: int, member_id: str) -> None:
        self._coordinator = _Coordinator(generation, member_id)


def _racing_stage(calls: list[int], consumer: _Consumer):
    from yidi.platform.errors import RaceLost

    async def handler(records):
        calls.append(len(records))
        raise RaceLost("pricing.requests_pkey already holds this record")

    stage = TransactionalStage("t", "test", Settings(), ["in"], "g", handler)
    stage._consumer = consumer
    stage._membership = (3, "m")
    return stage


async def test_a_race_lost_again_and_again_is_a_bug_and_stops_the_stage():
    from yidi.platform.errors import FatalError

    calls: list[int] = []
    stage = _racing_stage(calls, _Consumer(3, "m"))
    with pytest.raises(FatalError, match="again after 3 retries"):
        await stage._handle_until_committed([Incoming("in", 0, 5, b"k", b"v", 0)])
    assert len(calls) == 4  # the first try and three retries


async def test_a_race_lost_after_the_group_moved_on_leaves_the_batch_to_the_new_owner():
    calls: list[int] = []
    consumer = _Consumer(3, "m")
    stage = _racing_stage(calls, consumer)
    consumer._coordinator.generation = 4  # rebalanced since the batch was fetched
    await stage._handle_until_committed([Incoming("in", 0, 5, b"k", b"v", 0)])
    assert len(calls) == 1


@pytest.mark.parametrize("membership", [(-1, ""), (3, ""), (-1, "member-1")])
async def test_a_batch_fetched_outside_the_group_is_neither_handled_nor_committed(membership):
    # aiokafka resets the membership to (-1, "") when a heartbeat learns that the group moved on;
    # the broker would take a commit under it unchecked, so the stage drops the batch itself.
    calls: list[int] = []
    stage = _racing_stage(calls, _Consumer(*membership))
    stage._membership = membership
    stage._producer = object()  # any use of the producer would fail the test
    await stage._handle_until_committed([Incoming("in", 0, 5, b"k", b"v", 0)])
    assert calls == []


async def test_isolating_a_bad_record_stops_when_a_half_was_left_to_the_new_owner():
    # The group moved on while the first half was handled: the rest is the new owner's to read
    # again, in order; handling it here would record later records before earlier ones.
    from yidi.platform.errors import BadData

    stage = _racing_stage([], _Consumer(3, "m"))
    calls: list[list[int]] = []

    async def handle(records, handler=None):
        calls.append([r.offset for r in records])
        return False  # dropped: the group rebalanced

    stage._handle_until_committed = handle
    records = [Incoming("in", 0, n, b"k", b"v", 0) for n in range(4)]
    assert await stage._isolate(records, BadData("numeric field overflow"), stage.handler) is False
    assert calls == [[0, 1]]


class _TxnManager:
    def __init__(self) -> None:
        self.state = TransactionState.IN_TRANSACTION

    def is_fatal_error(self) -> bool:
        return False


class _Producer:
    """Counts aborts; an abort takes a loop turn, as the EndTxn round trip would."""

    def __init__(self) -> None:
        self._txn_manager = _TxnManager()
        self.aborts = 0

    async def abort_transaction(self) -> None:
        self.aborts += 1
        await asyncio.sleep(0)
        self._txn_manager.state = TransactionState.READY


def _opened_stage():
    from yidi.platform.kafka import _Opened

    stage = TransactionalStage("t", "test", Settings(), ["in"], "g", None)  # type: ignore[arg-type]
    producer = _Producer()
    offsets_sent = asyncio.get_running_loop().create_future()
    offsets_sent.set_result(None)
    stage._opened = _Opened(producer, offsets_sent)  # type: ignore[arg-type]
    return stage, producer


async def test_a_rebalance_aborts_the_open_transaction_of_the_batch_in_hand_once():
    from yidi.platform.kafka import _Revocations

    stage, producer = _opened_stage()
    opened = stage._opened
    await _Revocations(stage).on_partitions_revoked(set())
    assert opened.revoked and producer.aborts == 1
    await opened.abort()  # the stage, its handler done, ends the same transaction: no second abort
    assert producer.aborts == 1


async def test_a_rebalance_leaves_a_commit_under_way_alone():
    from yidi.platform.kafka import _Revocations

    stage, producer = _opened_stage()
    stage._opened.committing = True
    await _Revocations(stage).on_partitions_revoked(set())
    assert not stage._opened.revoked and producer.aborts == 0
    stage._opened = None  # no batch in hand (v1, or between batches): nothing to do
    await _Revocations(stage).on_partitions_revoked(set())
    assert producer.aborts == 0


async def test_a_retry_after_the_group_began_to_rebalance_drops_the_batch():
    # The handler failed; before its retry the group began to rebalance (the listener ran with no
    # transaction open). The batch would be refused at commit, and with the offsets sent during the
    # handler (v2), sent with the retry's transaction, they would make the new owner wait: it is dropped.
    from yidi.platform.errors import TransientError
    from yidi.platform.kafka import _Revocations

    calls: list[int] = []
    stage = TransactionalStage("t", "test", Settings(), ["in"], "g", None)  # type: ignore[arg-type]

    async def handler(records):
        calls.append(len(records))
        if len(calls) == 1:
            await _Revocations(stage).on_partitions_revoked(set())
            raise TransientError("Postgres away")
        return []

    stage.handler = handler
    stage._consumer = _Consumer(3, "m")
    stage._membership = (3, "m")
    assert await stage._handle_until_committed([Incoming("in", 0, 5, b"k", b"v", 0)]) is False
    assert calls == [1]


async def test_a_producer_failed_for_good_is_not_hidden_by_the_abort():
    from aiokafka.errors import ProducerFenced

    stage, producer = _opened_stage()
    producer._txn_manager.state = TransactionState.FATAL_ERROR
    producer._txn_manager._transaction_waiter = asyncio.get_running_loop().create_future()
    producer._txn_manager._transaction_waiter.set_exception(ProducerFenced())
    producer._txn_manager.is_fatal_error = lambda: True
    with pytest.raises(ProducerFenced):
        await stage._abandon(stage._opened)
    assert producer.aborts == 0


async def test_a_stop_with_kafka_away_ends_within_its_bound(monkeypatch, caplog):
    # Leaving the group and flushing wait out their request timeouts (40 s each) when Kafka is away:
    # a stop then outlasted a supervisor's grace period (docker-compose's 20 s) and was killed.
    import time

    import yidi.platform.kafka as kafka

    class Hanging:
        stopped = False

        async def stop(self) -> None:
            await asyncio.sleep(60)
            self.stopped = True

    async def handler(records):
        return []

    monkeypatch.setattr(kafka, "CLIENT_STOP_SECONDS", 0.2)
    stage = TransactionalStage("stop-test", "test", Settings(namespace="t."), ["in"], "stop-test", handler)
    stage._consumer, stage._producer = Hanging(), Hanging()  # type: ignore[assignment]
    started = time.monotonic()
    await stage.stop()
    assert time.monotonic() - started < 2
    assert "did not stop within 0.2 s" in caplog.text


async def test_a_stop_while_a_batch_aborts_its_transaction_with_kafka_away_ends_within_its_bound(monkeypatch, caplog):
    # A batch cancelled mid-commit aborts its transaction (_commit), and with Kafka away the abort
    # waits for the broker for ever: the stop waited with it, past any supervisor's grace period,
    # and a service stopping itself (another stage failed) stayed up doing nothing.
    import time

    import yidi.platform.kafka as kafka

    class Stopped:
        async def stop(self) -> None:
            return None

    async def handler(records):
        return []

    async def committing() -> None:
        try:
            await asyncio.sleep(60)  # the commit, waiting for the broker
        except asyncio.CancelledError:
            await asyncio.sleep(60)  # the abort, waiting for the broker too
            raise

    monkeypatch.setattr(kafka, "CLIENT_STOP_SECONDS", 0.2)
    stage = TransactionalStage("stop-test", "test", Settings(namespace="t."), ["in"], "stop-test", handler)
    stage._consumer, stage._producer = Stopped(), Stopped()  # type: ignore[assignment]
    stage._task = asyncio.create_task(committing())
    await asyncio.sleep(0)
    started = time.monotonic()
    await stage.stop()
    assert time.monotonic() - started < 2
    assert stage._task.done()
    assert "its batch did not end within 0.2 s" in caplog.text
