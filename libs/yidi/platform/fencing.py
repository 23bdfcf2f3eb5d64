"""Offsets committed in a transaction under the consumer's group generation (KIP-447).

aiokafka 0.14 sends a transaction's offsets with TxnOffsetCommit v0 (group id only) and reads
committed offsets with OffsetFetch v1–v3. Both leave a window when a stage runs as several
instances in one consumer group:

- a *zombie* (an instance the group has moved on from: paused, partitioned, too slow) can still
  commit outputs and offsets for partitions that now belong to another instance;
- a new owner can read a partition's committed offset while the old owner's transaction, with a
  newer offset, is still completing, and process those records a second time.

This module closes both with the requests Kafka made for it (KIP-447):

- ``TxnOffsetCommit`` v3 carries the consumer's generation and member id; the group coordinator
  refuses a commit from an older generation (``ILLEGAL_GENERATION``, ``UNKNOWN_MEMBER_ID``), the
  transaction is aborted, and nothing the zombie produced is ever read (``read_committed``);
- ``OffsetFetch`` v7 with ``require_stable``: while a transaction holding offsets for a partition is
  open, the coordinator answers ``UNSTABLE_OFFSET_COMMIT`` and the consumer asks again.

``install()`` puts them in place of aiokafka's (once, process-wide); a producer whose
``_txn_manager.yidi_membership`` is set commits under the membership it returns (a producer
without it commits as aiokafka does). The request classes follow
Kafka's message definitions (clients/src/main/resources/common/message/TxnOffsetCommitRequest.json,
OffsetFetchRequest.json) for the versions named; tests/integration/test_fencing.py checks them
against the real broker.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

import aiokafka.consumer.group_coordinator as _coordinator_module
import aiokafka.producer.sender as _sender_module
from aiokafka import errors as Errors
from aiokafka.producer.transaction_manager import TransactionState as _TransactionState
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)

log = logging.getLogger(__name__)

UNSTABLE_OFFSET_COMMIT = 88
CONCURRENT_TRANSACTIONS = 51
TRANSACTION_ABORTABLE = 120
PRODUCER_FENCED = 90  # aiokafka 0.14 knows 47 (INVALID_PRODUCER_EPOCH) only
# The first wait after CONCURRENT_TRANSACTIONS (v1's AddPartitionsToTxn waits this long every time:
# yidi.platform.kafka).
CONCURRENT_TRANSACTIONS_BACKOFF = 0.002


def concurrent_backoff(txn_manager: Any) -> float:
    """How long to wait before asking again after CONCURRENT_TRANSACTIONS: the previous transaction's
    markers are still being written, which takes a few ms on a broker in health; 2 ms, doubling
    while it lasts (a broker that cannot write them is not asked 500 times a second), at most 100 ms.
    A request that gets through sets ``txn_manager.yidi_concurrent`` back to 0."""
    n = getattr(txn_manager, "yidi_concurrent", 0)
    txn_manager.yidi_concurrent = n + 1
    return min(0.1, CONCURRENT_TRANSACTIONS_BACKOFF * 2 ** n)
# TxnOffsetCommit errors that mean the batch's generation is no longer the group's (Kafka's codes).
GROUP_MOVED_ON = {22: "ILLEGAL_GENERATION", 25: "UNKNOWN_MEMBER_ID", 27: "REBALANCE_IN_PROGRESS",
                  69: "GROUP_ID_NOT_FOUND", 82: "FENCED_INSTANCE_ID"}
# OffsetFetch errors that mean the coordinator moved: find it again, then retry.
COORDINATOR_MOVED = {15: "COORDINATOR_NOT_AVAILABLE", 16: "NOT_COORDINATOR"}


class GenerationFenced(Errors.KafkaError):
    """The group has moved on: this instance's batch must not be committed (abort, and re-read
    what the rebalance assigns)."""

    retriable = False


# TxnOffsetCommit v3 ---------------------------------------------------------------------------


class TxnOffsetCommitResponse_v3(Response):
    API_KEY = 28
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(("partition_index", Int32), ("error_code", Int16), ("tags", TaggedFields))),
            ("tags", TaggedFields),
        )),
        ("tags", TaggedFields),
    )


class TxnOffsetCommitRequest_v3(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 28
    API_VERSION = 3
    RESPONSE_TYPE = TxnOffsetCommitResponse_v3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("group_id", CompactString("utf-8")),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("generation_id", Int32),
        ("member_id", CompactString("utf-8")),
        ("group_instance_id", CompactString("utf-8")),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(
                ("partition_index", Int32),
                ("committed_offset", Int64),
                ("committed_leader_epoch", Int32),
                ("committed_metadata", CompactString("utf-8")),
                ("tags", TaggedFields),
            )),
            ("tags", TaggedFields),
        )),
        ("tags", TaggedFields),
    )


class TxnOffsetCommitResponse_v5(TxnOffsetCommitResponse_v3):
    API_VERSION = 5


class TxnOffsetCommitRequest_v5(TxnOffsetCommitRequest_v3):
    """v3 on the wire; under the transaction protocol v2 it also adds the group to the transaction."""

    API_VERSION = 5
    RESPONSE_TYPE = TxnOffsetCommitResponse_v5


class GenerationTxnOffsetCommitRequest(Request[TxnOffsetCommitRequest_v3]):
    API_KEY = 28

    def __init__(self, transactional_id: str, group_id: str, producer_id: int, producer_epoch: int,
                 generation_id: int, member_id: str, topics: list[tuple[str, list[tuple[int, int, str]]]]) -> None:
        self._args = (transactional_id, group_id, producer_id, producer_epoch, generation_id, member_id, topics)

    def build(self, request_struct_class: type[TxnOffsetCommitRequest_v3]) -> TxnOffsetCommitRequest_v3:
        transactional_id, group_id, producer_id, producer_epoch, generation_id, member_id, topics = self._args
        return request_struct_class(
            transactional_id, group_id, producer_id, producer_epoch, generation_id, member_id, None,
            [(topic, [(p, offset, -1, metadata, {}) for p, offset, metadata in partitions], {})
             for topic, partitions in topics],
            {},
        )


class GenerationTxnOffsetCommitRequestV5(GenerationTxnOffsetCommitRequest):
    """The same as v5, for the transaction protocol v2 (yidi.platform.txnv2)."""


# aiokafka takes a request's versions from its one generic base: this one has its parent's.
GenerationTxnOffsetCommitRequestV5._CLASSES = (TxnOffsetCommitRequest_v5,)  # type: ignore[assignment]


class _GenerationTxnOffsetCommitHandler(_sender_module.TxnOffsetCommitHandler):
    """aiokafka's handler, sending v3 with the bound consumer's generation when there is one
    (v5 under the transaction protocol v2, with or without one)."""

    def create_request(self) -> Any:
        txn_manager = self._sender._txn_manager
        membership = getattr(txn_manager, "yidi_membership", None)
        v2 = txn_manager.__class__.__name__ == "TransactionManagerV2"
        if membership is None and not v2:
            return super().create_request()
        # No membership: -1 and "" ask the coordinator not to check the generation.
        generation_id, member_id = membership() if membership is not None else (-1, "")
        request_class = GenerationTxnOffsetCommitRequestV5 if v2 else GenerationTxnOffsetCommitRequest
        by_topic: dict[str, list[tuple[int, int, str]]] = collections.defaultdict(list)
        for tp, offset in sorted(self._offsets.items()):
            by_topic[tp.topic].append((tp.partition, offset.offset, offset.metadata))
        return request_class(
            txn_manager.transactional_id, self._group_id, txn_manager.producer_id, txn_manager.producer_epoch,
            generation_id, member_id, list(by_topic.items()),
        )

    def handle_response(self, resp: Any) -> Any:
        if resp.API_VERSION < 3:
            return super().handle_response(resp)
        for topic, partitions, _ in resp.topics:
            for partition, error_code, _ in partitions:
                if error_code == CONCURRENT_TRANSACTIONS:
                    # Under the transaction protocol v2 the previous transaction's markers are still
                    # being written: the same request again, soon.
                    return concurrent_backoff(self._sender._txn_manager)
                if error_code == PRODUCER_FENCED:
                    raise Errors.ProducerFenced()
                if error_code == TRANSACTION_ABORTABLE:
                    _abortable(self._sender._txn_manager,
                               Errors.KafkaError(f"offsets for {topic}-{partition} refused: TRANSACTION_ABORTABLE"))
                    return None
                if error_code in GROUP_MOVED_ON:
                    # The group has moved on: the transaction can only be aborted.
                    _abortable(self._sender._txn_manager,
                               GenerationFenced(f"offsets for {topic}-{partition} refused: {GROUP_MOVED_ON[error_code]}"))
                    return None
        self._sender._txn_manager.yidi_concurrent = 0
        # Everything else as aiokafka handles it (v0 responses have the same shape, tags aside).
        return super().handle_response(_V0View(resp))


def _abortable(txn_manager: Any, exc: Exception) -> None:
    """Put the open transaction in an abortable error, failing the offsets' future with ``exc``.

    Not ``txn_manager.error_transaction``: that also forgets the partitions the transaction has
    written to, so the abort that follows sends no EndTxn (aiokafka takes it for an empty
    transaction) and the broker keeps the transaction open; the *next* transaction then joins it
    and its commit commits the refused batch's records as well (seen in
    tests/integration/test_fencing.py before this was written).

    A transaction already being aborted stays so: only the offsets' future fails (the abort goes
    on and ends the transaction at the coordinator, as the Java client does)."""
    for _, _, fut in txn_manager._pending_txn_offsets:
        if not fut.done():
            fut.set_exception(exc)
    txn_manager._pending_txn_offsets.clear()
    if txn_manager.state == _TransactionState.ABORTING_TRANSACTION:
        return
    txn_manager._transition_to(_TransactionState.ABORTABLE_ERROR)
    waiter = txn_manager._transaction_waiter
    if not waiter.done():
        waiter.set_exception(exc)
        waiter.exception()  # the stage learns of it from the offsets' future; the abort replaces this waiter


class _V0View:
    """A v3 response seen as a v0 one (``errors``: topics of (partition, error_code))."""

    API_VERSION = 0

    def __init__(self, resp: Any) -> None:
        self.errors = [(topic, [(p, e) for p, e, _ in partitions]) for topic, partitions, _ in resp.topics]


# OffsetFetch v7 with require_stable ----------------------------------------------------------


class OffsetFetchResponse_v7(Response):
    API_KEY = 9
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(
                ("partition_index", Int32),
                ("committed_offset", Int64),
                ("committed_leader_epoch", Int32),
                ("metadata", CompactString("utf-8")),
                ("error_code", Int16),
                ("tags", TaggedFields),
            )),
            ("tags", TaggedFields),
        )),
        ("error_code", Int16),
        ("tags", TaggedFields),
    )


class OffsetFetchRequest_v7(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 7
    RESPONSE_TYPE = OffsetFetchResponse_v7
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        ("topics", CompactArray(("name", CompactString("utf-8")), ("partition_indexes", CompactArray(Int32)),
                                ("tags", TaggedFields))),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


class StableOffsetFetchRequest(Request[OffsetFetchRequest_v7]):
    API_KEY = 9

    def __init__(self, group_id: str, partitions: list[tuple[str, list[int]]]) -> None:
        self._group_id, self._partitions = group_id, partitions

    def build(self, request_struct_class: type[OffsetFetchRequest_v7]) -> OffsetFetchRequest_v7:
        return request_struct_class(self._group_id, [(t, ps, {}) for t, ps in self._partitions], True, {})


class _StableView:
    """An OffsetFetch v7 response as aiokafka's coordinator reads v1–v3 ones; an unstable offset
    becomes a retriable error, so the coordinator asks again after its back-off."""

    def __init__(self, resp: Any) -> None:
        if resp.error_code:
            raise Errors.for_code(resp.error_code)()
        self.topics = []
        for topic, partitions, _ in resp.topics:
            rows = []
            for p, offset, _epoch, metadata, error_code, _ in partitions:
                if error_code == UNSTABLE_OFFSET_COMMIT:
                    raise UnstableOffsetCommit(f"{topic}-{p} has a transaction in flight")
                rows.append((p, offset, metadata or "", error_code))
            self.topics.append((topic, rows))


class UnstableOffsetCommit(Errors.KafkaError):
    retriable = True


_last_said: dict[str, float] = {}


def _say_waiting(group_id: str, exc: Exception) -> None:
    """A warning every 5 s at most per group while offsets are unstable (it can last up to the
    transaction timeout when the instance that opened the transaction does not come back)."""
    now = time.monotonic()
    if now - _last_said.get(group_id, 0.0) >= 5.0:
        _last_said[group_id] = now
        log.warning("group %s: waiting for a transaction in flight to end before reading offsets (%s)", group_id, exc)


_installed = False


def install() -> None:
    """Use the generation-checked offset commit and the stable offset fetch in this process."""
    global _installed
    if _installed:
        return
    _sender_module.TxnOffsetCommitHandler = _GenerationTxnOffsetCommitHandler  # type: ignore[misc]
    # The coordinator builds ``OffsetFetchRequest(group_id, partitions)``: the stable one has that shape.
    _coordinator_module.OffsetFetchRequest = StableOffsetFetchRequest  # type: ignore[misc,assignment]
    original_send = _coordinator_module.GroupCoordinator._send_req

    async def _send_req(self: Any, request: Any) -> Any:
        response = await original_send(self, request)
        if not isinstance(request, StableOffsetFetchRequest):
            return response
        if response.error_code in COORDINATOR_MOVED:
            self.coordinator_dead()
        try:
            return _StableView(response)
        except UnstableOffsetCommit as exc:
            _say_waiting(self.group_id, exc)
            raise

    _coordinator_module.GroupCoordinator._send_req = _send_req  # type: ignore[method-assign]
    _installed = True


def membership(consumer: Any) -> tuple[int, str]:
    """``consumer``'s group generation and member id as they are now. A producer commits under the
    membership its ``_txn_manager.yidi_membership()`` returns (the stage sets it per batch)."""
    coordinator = consumer._coordinator
    return coordinator.generation, coordinator.member_id
