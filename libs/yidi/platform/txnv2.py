"""Kafka transactions v2 (KIP-890 part 2) for aiokafka 0.14's transactional producer.

Under the transaction protocol v1, which is all aiokafka 0.14 speaks, a transaction that writes
records and commits consumer offsets costs the client five requests, each waited for in turn:
AddPartitionsToTxn, Produce, AddOffsetsToTxn, TxnOffsetCommit, EndTxn. Under v2 (Kafka 4.0+,
when the cluster finalizes the feature ``transaction.version`` at 2 or more) a Produce v12
adds its partition to the transaction itself, and so does TxnOffsetCommit v5 for the group's
offsets: the client sends Produce, then TxnOffsetCommit once the records are written (or, with a
stage's ``kafka_offsets_during_handler``, the offsets first, while its handler runs), then EndTxn v5. The
coordinator bumps the producer epoch at every EndTxn and returns the new one, with which the next
transaction's records start again at sequence 0.

``enable(producer)``, called once the producer has started, asks the transaction coordinator
which features the cluster has finalized (ApiVersions v3) and switches the producer to v2 when
``transaction.version`` >= 2. The choice holds for the producer's life: a cluster upgraded to
v2 later is used by producers started after it. ``install()`` puts the v2 request handlers in
place (once, process-wide); a producer that was not switched keeps speaking v1 through them.

``install()`` also makes the producer look up its transaction and group coordinators again after
a retriable error (a broker restarting closes the connection under the look-up), where aiokafka
stops the producer's sender for good. And it closes a gap aiokafka leaves under both versions: a
record batch the broker refused for good (an error that is not retriable) failed its send
futures, yet the commit that followed committed the transaction, offsets included, without it. A
refused batch now makes the transaction abortable, as the Java client does: the commit raises and
the caller aborts.

The request classes follow Kafka's message definitions (clients/src/main/resources/common/message:
ApiVersionsRequest/Response.json v3, ProduceRequest/Response.json v12, EndTxnRequest/Response.json
v5, TxnOffsetCommitRequest.json v5) and the Java client's TransactionManager; the integration
tests (tests/integration/test_txnv2.py) check them against the real broker.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
from typing import Any

import aiokafka.producer.message_accumulator as _accumulator_module
import aiokafka.producer.sender as _sender_module
from aiokafka import errors as Errors
from aiokafka.client import CoordinationType
from aiokafka.producer.transaction_manager import (
    NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID,
    PidAndEpoch,
    TransactionManager,
    TransactionResult,
)
from aiokafka.producer.transaction_manager import TransactionState as _TransactionState
from aiokafka.protocol.api import Request, RequestStruct, Response, ResponseHeader_v0
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactBytes,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)
from aiokafka.util import create_future

from yidi.platform import fencing

log = logging.getLogger(__name__)

TRANSACTION_VERSION = "transaction.version"
CONCURRENT_TRANSACTIONS = 51
INVALID_PRODUCER_EPOCH = 47
TRANSACTION_ABORTABLE = 120
# The request versions v2 needs: Produce, EndTxn, TxnOffsetCommit.
V2_VERSIONS = {0: 12, 26: 5, 28: 5}


class TransactionAbortable(Errors.KafkaError):
    """The broker refused this transaction's work; it can only be aborted (and tried again).
    ``refused`` is the error a refused record batch failed with, if that was the cause."""

    retriable = False

    def __init__(self, message: str, refused: BaseException | None = None) -> None:
        super().__init__(message)
        self.refused = refused
        self.__cause__ = refused


# ApiVersions v3: the finalized features ---------------------------------------------------------


class ApiVersionsResponse_v3(Response):
    API_KEY = 18
    API_VERSION = 3
    SCHEMA = Schema(
        ("error_code", Int16),
        ("api_keys", CompactArray(("api_key", Int16), ("min_version", Int16), ("max_version", Int16),
                                  ("tags", TaggedFields))),
        ("throttle_time_ms", Int32),
        ("tags", TaggedFields),
    )


_FINALIZED_FEATURES = CompactArray(
    ("name", CompactString("utf-8")), ("max_version_level", Int16), ("min_version_level", Int16), ("tags", TaggedFields))
_FINALIZED_FEATURES_TAG = 2


class ApiVersionsRequest_v3(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 18
    API_VERSION = 3
    RESPONSE_TYPE = ApiVersionsResponse_v3
    SCHEMA = Schema(
        ("client_software_name", CompactString("utf-8")),
        ("client_software_version", CompactString("utf-8")),
        ("tags", TaggedFields),
    )

    def parse_response_header(self, read_buffer: io.BytesIO | bytes) -> Any:
        # An ApiVersions response always has a v0 header (no tagged fields), whatever its version.
        return ResponseHeader_v0.decode(read_buffer)


class FeaturesRequest(Request[ApiVersionsRequest_v3]):
    API_KEY = 18

    def build(self, request_struct_class: type[ApiVersionsRequest_v3]) -> ApiVersionsRequest_v3:
        return request_struct_class("yidi", "1", {})


def max_versions(response: ApiVersionsResponse_v3) -> dict[int, int]:
    """API key -> the highest version the broker takes."""
    return {key: high for key, _low, high, _ in response.api_keys}


def finalized_features(response: ApiVersionsResponse_v3) -> dict[str, int]:
    """Feature name -> finalized (max) version level, from an ApiVersions v3 response."""
    if response.error_code:
        raise Errors.for_code(response.error_code)()
    raw = response.tags.get(_FINALIZED_FEATURES_TAG)
    if raw is None:
        return {}
    return {name: level for name, level, _min, _ in _FINALIZED_FEATURES.decode(io.BytesIO(raw)) or []}


# Produce v12 -----------------------------------------------------------------------------------


class ProduceResponse_v12(Response):
    API_KEY = 0
    API_VERSION = 12
    SCHEMA = Schema(
        ("topics", CompactArray(
            ("topic", CompactString("utf-8")),
            ("partitions", CompactArray(
                ("partition", Int32),
                ("error_code", Int16),
                ("offset", Int64),
                ("timestamp", Int64),
                ("log_start_offset", Int64),
                ("record_errors", CompactArray(("batch_index", Int32), ("message", CompactString("utf-8")),
                                               ("tags", TaggedFields))),
                ("error_message", CompactString("utf-8")),
                ("tags", TaggedFields),  # 0: the current leader, when it moved
            )),
            ("tags", TaggedFields),
        )),
        ("throttle_time_ms", Int32),
        ("tags", TaggedFields),  # 0: the endpoints of the leaders named above
    )


class ProduceRequest_v12(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 0
    API_VERSION = 12
    RESPONSE_TYPE = ProduceResponse_v12
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("required_acks", Int16),
        ("timeout", Int32),
        ("topics", CompactArray(
            ("topic", CompactString("utf-8")),
            ("partitions", CompactArray(("partition", Int32), ("messages", CompactBytes), ("tags", TaggedFields))),
            ("tags", TaggedFields),
        )),
        ("tags", TaggedFields),
    )


class ProduceRequestV2(Request[ProduceRequest_v12]):
    """A transactional produce that adds its partitions to the transaction (v12 and up only)."""

    API_KEY = 0

    def __init__(self, transactional_id: str, required_acks: int, timeout: int,
                 topics: list[tuple[str, list[tuple[int, bytes]]]]) -> None:
        self._args = (transactional_id, required_acks, timeout, topics)

    @property
    def required_acks(self) -> int:
        return self._args[1]

    def build(self, request_struct_class: type[ProduceRequest_v12]) -> ProduceRequest_v12:
        transactional_id, acks, timeout, topics = self._args
        return request_struct_class(
            transactional_id, acks, timeout,
            [(topic, [(p, data, {}) for p, data in partitions], {}) for topic, partitions in topics], {})


class _V8View:
    """A v12 produce response as aiokafka's handler reads a v8 one (tagged fields dropped)."""

    API_VERSION = 8

    def __init__(self, resp: ProduceResponse_v12) -> None:
        self.topics = [(topic, [p[:7] for p in partitions]) for topic, partitions, _ in resp.topics]


# EndTxn v5 -------------------------------------------------------------------------------------


class EndTxnResponse_v5(Response):
    API_KEY = 26
    API_VERSION = 5
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("tags", TaggedFields),
    )


class EndTxnRequest_v5(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 26
    API_VERSION = 5
    RESPONSE_TYPE = EndTxnResponse_v5
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("transaction_result", Boolean),
        ("tags", TaggedFields),
    )


class EndTxnRequestV2(Request[EndTxnRequest_v5]):
    API_KEY = 26

    def __init__(self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool) -> None:
        self._args = (transactional_id, producer_id, producer_epoch, commit)

    def build(self, request_struct_class: type[EndTxnRequest_v5]) -> EndTxnRequest_v5:
        return request_struct_class(*self._args, {})


# The transaction manager -----------------------------------------------------------------------


class TransactionManagerV2(TransactionManager):
    """aiokafka's transaction manager under the v2 protocol (``enable`` switches a producer's to it).

    - A partition is in the transaction as soon as a record is sent to it: its Produce (v12) adds
      it at the broker, so nothing waits for an AddPartitionsToTxn.
    - The group is in the transaction as soon as offsets are sent: TxnOffsetCommit (v5) adds it.
    - ``new_epoch`` takes the producer id and epoch an EndTxn v5 returns; the next transaction's
      records start again at sequence 0.
    - An abortable error keeps what the transaction has touched, so that the abort ends it at the
      coordinator (EndTxn); aiokafka forgets it and would send no EndTxn."""

    def maybe_add_partition_to_txn(self, tp: Any) -> None:
        if self.transactional_id is None:
            return
        assert self.is_in_transaction()
        self._txn_partitions.add(tp)

    def add_offsets_to_txn(self, offsets: Any, group_id: str) -> Any:
        fut = super().add_offsets_to_txn(offsets, group_id)
        self._txn_consumer_group = group_id
        return fut

    def error_transaction(self, exc: Exception) -> None:
        fencing._abortable(self, exc)

    def new_epoch(self, producer_id: int, producer_epoch: int) -> None:
        self._pid_and_epoch = PidAndEpoch(producer_id, producer_epoch)
        self._sequence_numbers.clear()
        self.yidi_sequence_gap = False


class TransactionManagerV1(TransactionManager):
    """aiokafka's transaction manager under the v1 protocol, but an abortable error (the broker
    refused an authorization: a topic in AddPartitionsToTxn, the group) keeps the partitions the
    transaction has already added, so that the abort ends it at the coordinator (EndTxn).
    aiokafka forgets them: the abort then sends nothing, the transaction stays open at the
    coordinator, and the next one joins it and commits its records too (an answer written twice,
    seen with a reply topic the platform may not write: tests/integration/test_reply_topics.py).
    Partitions still waiting to be added are in no transaction: their records (never sent, muted
    while waiting) are failed and dropped, or the abort would send them outside any transaction,
    and the sequence numbers they took would make the next transaction's batches out of order."""

    yidi_accumulator: Any = None  # the producer's, set by ``enable``

    def error_transaction(self, exc: Exception) -> None:
        never_added = set(self._pending_txn_partitions)
        self._pending_txn_partitions.clear()
        if self.yidi_accumulator is not None:
            for tp in never_added:
                for batch in self.yidi_accumulator._batches.pop(tp, ()):
                    batch.failure(exc)
                    for fut in (batch.future, batch._drain_waiter):
                        fut.add_done_callback(retrieved)  # the commit raises ``exc`` once
        fencing._abortable(self, exc)


def retrieved(fut: Any) -> None:
    """A done callback: the future's exception counts as retrieved (it is raised elsewhere, once)."""
    if not fut.cancelled():
        fut.exception()


def _use_v1(producer: Any) -> None:
    producer._txn_manager.__class__ = TransactionManagerV1
    producer._txn_manager.yidi_accumulator = producer._message_accumulator


def uses_v2(txn_manager: Any) -> bool:
    return isinstance(txn_manager, TransactionManagerV2)


async def enable(producer: Any, wanted: str = "auto") -> int:
    """Switch a started transactional ``producer`` to the v2 protocol when the cluster has it and
    ``wanted`` is "auto"; returns the protocol version the producer now speaks (1 or 2)."""
    txn_manager = producer._txn_manager
    if txn_manager is None or txn_manager.transactional_id is None:
        raise ValueError("not a transactional producer")
    if wanted == "v1":
        _use_v1(producer)
        return 1
    install()
    sender = producer._sender
    node_id = await sender._find_coordinator(CoordinationType.TRANSACTION, txn_manager.transactional_id)
    response = await producer.client.send(node_id, FeaturesRequest())
    level = finalized_features(response).get(TRANSACTION_VERSION, 0)
    versions = max_versions(response)
    if level < 2 or any(versions.get(key, -1) < v for key, v in V2_VERSIONS.items()):
        log.info("transactional id %s: the cluster's transaction.version is %d (requests %s): protocol v1",
                 txn_manager.transactional_id, level, {k: versions.get(k) for k in V2_VERSIONS})
        _use_v1(producer)
        return 1
    assert txn_manager.state == _TransactionState.READY, txn_manager.state
    txn_manager.__class__ = TransactionManagerV2
    return 2


# Sender handlers -------------------------------------------------------------------------------


class _ProduceHandler(_sender_module.SendProduceReqHandler):
    """Produce v12 under v2; under both, a batch refused for good makes the transaction abortable."""

    def create_request(self) -> Any:
        txn_manager = self._sender._txn_manager
        if not uses_v2(txn_manager):
            return super().create_request()
        topics: dict[str, list[tuple[int, bytes]]] = {}
        for tp, batch in self._batches.items():
            topics.setdefault(tp.topic, []).append((tp.partition, batch.get_data_buffer()))
        return ProduceRequestV2(txn_manager.transactional_id, self._sender._acks, self._sender._request_timeout_ms,
                                list(topics.items()))

    def _can_retry(self, error: Any, batch: Any) -> bool:
        # Under v2 the broker answers CONCURRENT_TRANSACTIONS when the previous transaction's markers
        # kept it from adding the partition for its whole retry window: send the batch again.
        return isinstance(error, Errors.ConcurrentTransactions) or super()._can_retry(error, batch)

    def handle_response(self, response: Any) -> Any:
        if isinstance(response, ProduceResponse_v12):
            response = _V8View(response)
        return super().handle_response(response)


def _failure(fut: Any) -> BaseException | None:
    return fut.exception() if fut.done() and not fut.cancelled() else None


_aiokafka_append_batch = _accumulator_module.MessageAccumulator._append_batch


def _append_batch(self: Any, builder: Any, tp: Any) -> Any:
    """aiokafka's, and a transactional batch that fails, wherever it fails (the broker refused it,
    or the accumulator gave up waiting for its partition's leader), is noted for the commit."""
    batch = _aiokafka_append_batch(self, builder, tp)
    txn_manager = self._txn_manager
    if txn_manager is not None and txn_manager.transactional_id is not None:
        batch.future.add_done_callback(functools.partial(_batch_done, txn_manager, tp.topic))
    return batch


def _batch_done(txn_manager: Any, topic: str, fut: Any) -> None:
    # Runs before whatever waits for the batch resumes (its callback was added first): the commit
    # (_do_txn_commit) and the offsets (_do_txn_offset_commit) see it.
    exc = _failure(fut)
    if exc is None:
        return
    try:
        exc.yidi_topic = topic  # type: ignore[attr-defined]  # which topic refused it (kafka.OutputRefused)
    except AttributeError:
        pass
    # Its records took sequence numbers that were never written: the producer's next transaction
    # needs a new epoch (v2: every EndTxn gives one; v1: _EndTxnHandler asks for one).
    txn_manager.yidi_sequence_gap = True
    if txn_manager.state in (_TransactionState.IN_TRANSACTION, _TransactionState.COMMITTING_TRANSACTION):
        if getattr(txn_manager, "yidi_refused", None) is None:
            txn_manager.yidi_refused = exc


class _EndTxnHandler(_sender_module.EndTxnHandler):
    """EndTxn v5 under v2: the answer carries the producer's next epoch."""

    def create_request(self) -> Any:
        txn_manager = self._sender._txn_manager
        if not uses_v2(txn_manager):
            return super().create_request()
        return EndTxnRequestV2(txn_manager.transactional_id, txn_manager.producer_id, txn_manager.producer_epoch,
                               bool(self._commit_result))

    def handle_response(self, resp: Any) -> Any:
        txn_manager = self._sender._txn_manager
        if resp.error_code == 0:
            txn_manager.yidi_concurrent = 0
        if resp.API_VERSION < 5:
            result = super().handle_response(resp)
            if resp.error_code == 0 and getattr(txn_manager, "yidi_sequence_gap", False):
                _new_producer_epoch(txn_manager)
            return result
        if resp.error_code == 0:
            if resp.producer_id != -1:
                txn_manager.new_epoch(resp.producer_id, resp.producer_epoch)
            txn_manager.complete_transaction()
            return None
        if resp.error_code == CONCURRENT_TRANSACTIONS:
            # The same request again (the same epoch), as Kafka asks.
            return fencing.concurrent_backoff(txn_manager)
        if resp.error_code in (fencing.PRODUCER_FENCED, INVALID_PRODUCER_EPOCH):
            raise Errors.ProducerFenced()
        if resp.error_code == TRANSACTION_ABORTABLE and self._commit_result == TransactionResult.COMMIT:
            _abortable(txn_manager, TransactionAbortable("the coordinator refused the commit: abort"))
            return None
        return super().handle_response(resp)


def _new_producer_epoch(txn_manager: Any) -> None:
    """Under v1, after the abort of a transaction whose batch failed: the sequence numbers its
    records took were never written, and the broker would refuse every later batch of those
    partitions (OUT_OF_ORDER_SEQUENCE_NUMBER). Ask for the producer id again, as the Java client
    does: InitProducerId bumps the epoch, and sequences start again at 0. The sender sends it
    before anything else; the next transaction begins once it is answered."""
    txn_manager.state = _TransactionState.UNINITIALIZED
    txn_manager._pid_and_epoch = PidAndEpoch(NO_PRODUCER_ID, NO_PRODUCER_EPOCH)
    txn_manager._pid_waiter = create_future()
    txn_manager._sequence_numbers.clear()
    txn_manager.yidi_sequence_gap = False


def _abortable(txn_manager: Any, exc: Exception) -> None:
    """The open (or committing) transaction can only be aborted; the commit raises ``exc``."""
    if txn_manager.state == _TransactionState.ABORTING_TRANSACTION:
        return
    txn_manager._transition_to(_TransactionState.ABORTABLE_ERROR)
    waiter = txn_manager._transaction_waiter
    if waiter is not None and not waiter.done():
        waiter.set_exception(exc)


async def _do_txn_commit(self: Any, commit_result: Any) -> None:
    """aiokafka's, but a transaction with a refused batch is not committed: it becomes abortable
    (the caller's commit raises, and the caller aborts)."""
    accumulator = self._message_accumulator
    # The batches this commit waits for (aiokafka's flush_for_commit waits for the same ones);
    # those that ended before it were noted as they failed (_ProduceHandler).
    futures = [b.future for batches in accumulator._batches.values() for b in batches]
    futures += [b.future for b in accumulator._pending_batches]
    await accumulator.flush_for_commit()
    txn_manager = self._txn_manager
    refused = getattr(txn_manager, "yidi_refused", None) or next(
        (exc for exc in map(_failure, futures) if exc is not None), None)
    txn_manager.yidi_refused = None
    if refused is not None and commit_result == TransactionResult.COMMIT:
        _abortable(txn_manager, TransactionAbortable(f"a record batch was refused ({refused!r}): abort", refused))
        return
    if txn_manager.is_empty_transaction():
        txn_manager.complete_transaction()
        return
    node_id = await self._find_coordinator(CoordinationType.TRANSACTION, txn_manager.transactional_id)
    await _sender_module.EndTxnHandler(self, commit_result).do(node_id)


_aiokafka_txn_offset_commit = _sender_module.Sender._do_txn_offset_commit


async def _do_txn_offset_commit(self: Any, offsets: Any, group_id: str) -> Any:
    """Under v2, the offsets go once the transaction's records have been written. The broker adds
    both to the transaction through one queue per coordinator, and of two adds of one transaction
    queued together it fails the first (NETWORK_EXCEPTION, which the client sees as a retriable
    NOT_ENOUGH_REPLICAS or COORDINATOR_LOAD_IN_PROGRESS and sends again after its back-off)."""
    txn_manager = self._txn_manager
    if uses_v2(txn_manager):
        accumulator = self._message_accumulator
        futures = [b.future for batches in accumulator._batches.values() for b in batches]
        futures += [b.future for b in accumulator._pending_batches]
        if futures:
            await asyncio.wait(futures)
        refused = getattr(txn_manager, "yidi_refused", None)
        if refused is not None:
            # The transaction can only be aborted: its offsets are not added to it at all (a
            # TxnOffsetCommit after the coordinator timed the transaction out would be fenced, where
            # the abort recovers).
            fencing._abortable(txn_manager, TransactionAbortable(
                f"a record batch was refused ({refused!r}): abort", refused))
            return None
    return await _aiokafka_txn_offset_commit(self, offsets, group_id)


_aiokafka_find_coordinator = _sender_module.Sender._find_coordinator


async def _find_coordinator(self: Any, coordinator_type: Any, coordinator_key: str) -> Any:
    """aiokafka's, but a look-up that fails with a retriable error is tried again. aiokafka retries
    a coordinator not available, a node not ready and a timeout, and takes any other error as
    final: the sender stops, and the producer with it. A broker restarting (a rolling upgrade)
    closes the connection under the look-up that follows its NOT_COORDINATOR answers
    (KafkaConnectionError), and a broker still loading its transactions may answer
    COORDINATOR_LOAD_IN_PROGRESS: both are retriable, and both stopped every stage that was
    committing at that moment (tests/e2e/test_dependency_restarts.py)."""
    backoff = self._retry_backoff
    while True:
        try:
            return await _aiokafka_find_coordinator(self, coordinator_type, coordinator_key)
        except Errors.KafkaError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, Errors.KafkaError) and cause.retriable):
                raise
            # aiokafka has logged "FindCoordinator Request failed" at ERROR just before: expected here.
            log.warning("finding the %s coordinator failed (%r); trying again in %.2fs",
                        coordinator_type.name.lower(), cause, backoff)
            await self.client.force_metadata_update()
            await asyncio.sleep(backoff)
            backoff = min(1.0, backoff * 2)  # a broker restarting takes seconds: not a try every 10 ms


_installed = False


def install() -> None:
    """Use the v2-aware produce and EndTxn handlers in this process, and the coordinator look-up
    that retries what is retriable (idempotent)."""
    global _installed
    if _installed:
        return
    fencing.install()  # its TxnOffsetCommit handler sends v5 (no AddOffsetsToTxn) under v2
    _sender_module.SendProduceReqHandler = _ProduceHandler  # type: ignore[misc]
    _accumulator_module.MessageAccumulator._append_batch = _append_batch  # type: ignore[method-assign]
    _sender_module.EndTxnHandler = _EndTxnHandler  # type: ignore[misc]
    _sender_module.Sender._do_txn_commit = _do_txn_commit  # type: ignore[method-assign]
    _sender_module.Sender._do_txn_offset_commit = _do_txn_offset_commit  # type: ignore[method-assign]
    _sender_module.Sender._find_coordinator = _find_coordinator  # type: ignore[method-assign]
    _installed = True
