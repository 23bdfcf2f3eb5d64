"""Kafka plumbing: topic creation, plain producers, and the transactional stage.

A *stage* consumes a batch, hands it to a plain async handler, then publishes the handler's
output and commits the consumed offsets in one Kafka transaction. Downstream consumers read
committed messages only, so a stage that dies at any point is replayed from its last committed
batch and nothing it produced twice is ever seen: that, plus handlers idempotent by ``msgid``
in Postgres, is how every request is answered exactly once. FastStream has no transaction API
(ag2ai/faststream#2512), so the stage drives aiokafka directly; FastStream runs the feeds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    IllegalOperation,
    KafkaError,
    MessageSizeTooLargeError,
    ProducerFenced,
    RecordListTooLargeError,
)
from aiokafka.producer import sender as _aiokafka_sender
from aiokafka.producer.transaction_manager import TransactionState
from aiokafka.structs import OffsetAndMetadata

from yidi.contracts.common import LATEST_TIMESTAMP_MS
from yidi.domain.values import value
from yidi.platform import fencing, metrics, progress, records, txnv2
from yidi.platform.errors import BadData, FatalError, RaceLost, TransientError
from yidi.platform.faults import armed, crash_point
from yidi.platform.lag import WaitClock, deleted_unread, partition_lag
from yidi.platform.reply_topics import ReplyTopicRefused, ReplyTopics, is_answer, to_moved_topic
from yidi.platform.settings import Settings
from yidi.platform.topics import GROUPS_WITHOUT_PROGRESS, all_topic_specs

log = logging.getLogger(__name__)

# A transaction that begins right after the previous one's EndTxn is told CONCURRENT_TRANSACTIONS by
# AddPartitionsToTxn until the coordinator has written the previous one's markers (a few ms on one
# broker); aiokafka then waits a fixed 20 ms (``BACKOFF_OVERRIDE``, whatever retry_backoff_ms says)
# before asking again, a large part of a hop's budget at low rates. Ask again sooner: the request
# is cheap and idempotent (v2's requests start from the same wait and double it: fencing.py).
_aiokafka_sender.BACKOFF_OVERRIDE = fencing.CONCURRENT_TRANSACTIONS_BACKOFF


# Errors a broker refuses a record batch with that no retry can change (the topic's limits).
PERMANENT_REFUSALS = (MessageSizeTooLargeError, RecordListTooLargeError)

class OutputRefused(BadData):
    """An output Kafka refuses for good for its size (the client's limit, or the topic's
    max.message.bytes): every retry would be refused the same way. ``answer``: it was (or may have
    been: the refused topic unknown) an answer on a gateway's reply topic."""

    def __init__(self, message: str, *, answer: bool) -> None:
        super().__init__(message)
        self.answer = answer


# How the reason of a record a stage cannot process (``BadData``) begins.
CANNOT_PROCESS = "cannot be processed"


@value
class Incoming:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int
    headers: tuple[tuple[str, bytes | None], ...] = ()  # a header value may be null


def _now_ms() -> int:
    return int(time.time() * 1000)


@value
class Answered:
    """Marks an outgoing message as the answer to a gateway request, for the latency metric."""

    request_ts_ms: int
    infno: str
    err_code: str


@value
class Outgoing:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    answered: Answered | None = None
    # An answer on a gateway's reply_to: the moved answers' topic of its kind of request, where it is
    # published instead if the broker refuses ``topic`` for good (yidi.platform.reply_topics), and
    # why it was (set when it was moved there).
    fallback: str | None = None
    refused: str | None = None
    # Run once the batch's transaction has committed, not when the handler made the message (a batch
    # is handled again after a failed commit): a filing or clearing request's result counted once.
    on_commit: Callable[[], None] | None = None


Handler = Callable[[list[Incoming]], Awaitable[list[Outgoing]]]

TOPIC_ALREADY_EXISTS = 36  # Kafka's error code in a CreateTopics answer


async def ensure_topics(settings: Settings) -> list[str]:
    """Create every platform topic that is missing (with its partitions); return the created names."""
    return await ensure_platform_topics(settings.kafka_bootstrap, settings.namespace)


async def ensure_platform_topics(bootstrap: str, namespace: str = "") -> list[str]:
    """``ensure_topics`` for a tool without the services' settings (yidi-load): a topic the broker
    auto-created on a first write would have the broker's default partitions and no compaction.
    A platform topic that exists with other partitions than its spec is logged: it works, but
    per-person order and the number of instances that share it are not what docs/topics.md says."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing, present, configured = [], {}, {}
        for spec in all_topic_specs():
            name = f"{namespace}{spec.name}"
            if name in existing:
                present[name] = spec.partitions
                if spec.configs():
                    configured[name] = spec.configs()
                continue
            missing.append(NewTopic(name, spec.partitions, 1, topic_configs=spec.configs()))
        if missing:
            response = await admin.create_topics(missing)
            # The broker answers per topic (aiokafka raises nothing): one another process created
            # first is fine; any other error would leave the topic to the broker's auto-creation.
            failed = [f"{name}: {rest[0] if rest and rest[0] else f'error {code}'}"
                      for name, code, *rest in response.topic_errors if code not in (0, TOPIC_ALREADY_EXISTS)]
            if failed:
                raise FatalError("platform topics could not be created: " + "; ".join(failed))
        if configured:
            for name, problems in (await configs_off_spec(admin, configured)).items():
                for key, have, want in problems:
                    log.warning("topic %s has %s=%s, its spec %s (created by another tool, by the broker's "
                                "auto-creation, or before its spec set it?): see docs/runbook.md, \"Topics\"",
                                name, key, have, want)
        if present:
            for topic in await admin.describe_topics(list(present)):
                found = len(topic.get("partitions") or [])
                if topic.get("error_code", 0) == 0 and found != present[topic["topic"]]:
                    log.warning("topic %s has %d partitions, its spec %d (created by another tool or by the "
                                "broker's auto-creation?): see docs/runbook.md, \"Topics\"",
                                topic["topic"], found, present[topic["topic"]])
        return [t.name for t in missing]
    finally:
        await admin.close()


async def topic_configs(admin: AIOKafkaAdminClient, names: list[str], keys: list[str]) -> dict[str, dict[str, str]]:
    """The values of ``keys`` in each existing topic's config (a topic the broker cannot describe is left out)."""
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, dict.fromkeys(keys)) for name in names]
    return {name: {e[0]: e[1] or "" for e in entries}
            for response in await admin.describe_configs(resources)
            for error_code, _, _, name, entries in response.resources if error_code == 0}


def compacted(policy: str) -> bool:
    return "compact" in policy.split(",")


def on_spec(key: str, have: str, want: str) -> bool:
    """A topic config as its spec wants it: compaction among the cleanup policies, a compaction lag
    at least the spec's (an operator may keep records longer), any other the spec's value."""
    if key == "cleanup.policy":
        return compacted(have)
    if key == "min.compaction.lag.ms":
        return have.isdigit() and int(have) >= int(want)
    return have == want


async def configs_off_spec(admin: AIOKafkaAdminClient,
                           wanted: dict[str, dict[str, str]]) -> dict[str, list[tuple[str, str, str]]]:
    """For each topic of ``wanted`` (its spec's configs, ``TopicSpec.configs``), each config it has
    otherwise, as (key, its value, the spec's); topics on their spec are left out. A
    feed not compacted would have its records deleted after the retention (a rebuild would miss
    them); settlement.requests under CreateTime times answers from the gateways' clocks."""
    keys = sorted({key for configs in wanted.values() for key in configs})
    found = await topic_configs(admin, list(wanted), keys)
    problems: dict[str, list[tuple[str, str, str]]] = {}
    for name, configs in wanted.items():
        if name not in found:
            continue
        for key, want in configs.items():
            have = found[name].get(key, "")
            if not on_spec(key, have, want):
                problems.setdefault(name, []).append((key, have, want))
    return problems


async def delete_namespace_topics(bootstrap: str, *prefixes: str) -> list[str]:
    """Delete every topic whose name starts with one of ``prefixes`` (a test or bench namespace,
    e.g. ``"t1a2b3c4."``); return their names. An empty prefix is refused: it would name them all."""
    if not prefixes or not all(prefixes):
        raise ValueError("a namespace prefix is required")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(prefixes)]
        if topics:
            await admin.delete_topics(topics)
        return topics
    finally:
        await admin.close()


# How long a stopping stage waits for each of its Kafka clients to stop.
CLIENT_STOP_SECONDS = 4.0


def make_producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    options: dict[str, object] = {"bootstrap_servers": settings.kafka_bootstrap, "acks": "all", "linger_ms": 1}
    options.update(overrides)
    return AIOKafkaProducer(**options)  # type: ignore[arg-type]


@dataclass
class LingerGate:
    """Whether a stage's next batch should linger (``YIDI_BATCH_LINGER_MS``): only while lingering
    pays. A linger pays when records arrive during it, so that fewer, fuller transactions carry
    them; one that adds nothing only delays the records in hand. Where a stage's records come one
    at a time a little further apart than its cycle (eligibility at 100/s on the bench box: batches
    of 1.01 records, the wait about 4 ms of its 10.6 ms hop), its lingers add nothing, and it stops
    waiting (docs/BENCHMARKS.md, "Lingering only while it adds records").

    ``yielded`` is a moving average of the records each linger added (``weight`` 0.2). Below
    ``min_yield`` the stage goes on without lingering: after 14 lingers in a row that added nothing
    from the start, 7 after a linger that added one. Every ``probe_every``-th batch lingers anyway,
    so a rate that has risen is seen again (a probe that adds a record opens the gate). A stage
    whose lingers add a record every other time keeps lingering; one whose lingers add one every
    third or fourth time (pricing and clearing at 100/s) meets such runs now and then and lingers
    part of the time. That is the setting measured best: a slower average (weight 0.05), which
    keeps those stages lingering, gave p50 and p99 at 100/s no lower, and a higher threshold (0.2),
    which shuts them more often, left p99 where it was (docs/BENCHMARKS.md).
    ``yidi_stage_lingers_total`` counts the batches that lingered and those that skipped."""

    min_yield: float = 0.05
    probe_every: int = 20
    weight: float = 0.2
    yielded: float = 1.0
    _skipped: int = field(default=0, init=False)

    def wanted(self) -> bool:
        if self.yielded >= self.min_yield:
            return True
        self._skipped += 1
        if self._skipped >= self.probe_every:
            self._skipped = 0
            return True
        return False

    def lingered(self, added: int) -> None:
        self.yielded += self.weight * (added - self.yielded)


def _answers_to_moved_topic(handler: Handler) -> Handler:
    """``handler`` with every answer on a gateway's reply topic moved to its kind's moved answers' topic
    (``reply_topics.to_moved_topic``: an answer larger than the reply topic takes); a refusal
    stays one (``yidi_refusal``), marked as moved already (``yidi_moved``)."""

    async def moved(rs: list[Incoming]) -> list[Outgoing]:
        return to_moved_topic(await handler(rs), "too_large")

    moved.yidi_refusal = getattr(handler, "yidi_refusal", False)  # type: ignore[attr-defined]
    moved.yidi_moved = True  # type: ignore[attr-defined]
    return moved


@dataclass
class TransactionalStage:
    """Consume → handle → (publish + commit offsets) in one transaction, batch by batch."""

    name: str
    service: str
    settings: Settings
    topics: Sequence[str]
    group_id: str
    handler: Handler
    max_records: int = 500
    max_backoff: float = 5.0
    # A batch that loses the same race to another instance this many times running is a bug, not
    # a race (the retry finds the winner's record and takes the idempotent path).
    max_races: int = 3
    # What a record the stage cannot process (``BadData``: the database refuses a value, or an output
    # is too large for Kafka) becomes: by default a dead letter and, when its msgid can be
    # recovered, an INTERNAL_ERROR answer (``replies.broken``).
    refuse: Callable[[Incoming, str], list[Outgoing]] | None = None
    _consumer: AIOKafkaConsumer | None = field(default=None, init=False)
    _producer: AIOKafkaProducer | None = field(default=None, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _stopping: bool = field(default=False, init=False)
    failure: BaseException | None = field(default=None, init=False)
    _latency_children: dict[tuple[str, str], Any] = field(default_factory=dict, init=False)
    _last_commit: float = field(default=0.0, init=False)
    _linger: LingerGate = field(default_factory=LingerGate, init=False)
    _in_hand: int = field(default=0, init=False)  # records fetched and not yet committed (or dropped)
    _in_hand_since: float = field(default=0.0, init=False)  # time.monotonic() when they were taken
    _lag_task: asyncio.Task[None] | None = field(default=None, init=False)
    # The consumer's group generation and member id when the batch in hand was fetched: its
    # offsets are committed under that membership or not at all (fencing.py).
    _membership: tuple[int, str] = field(default=(-1, ""), init=False)
    # The Kafka transaction protocol the producer speaks (txnv2.enable): 1, or 2 (KIP-890).
    transaction_version: int = field(default=0, init=False)
    # With kafka_offsets_during_handler under v2: the transaction of the batch being handled, begun as
    # the handler starts, its offsets sent alongside it.
    _opened: _Opened | None = field(default=None, init=False)
    # How many times the group has begun to rebalance (``_Revocations``), now and when the batch in
    # hand was fetched: a batch fetched before a rebalance began is not tried again after a failure,
    # nor committed from a transaction opened during its handler; one whose handler has returned
    # commits under the generation it was fetched in, which the coordinator refuses once the
    # group has moved on (fencing.py).
    _revocations: int = field(default=0, init=False)
    _fetched_at_revocation: int = field(default=0, init=False)
    # The gateways' reply topics the broker refuses, whose answers go to their moved answers' topic instead.
    _reply_topics: ReplyTopics = field(init=False)
    # After a restore of the service's database (yidi.platform.progress): per partition, the offset
    # below which records were answered before it (handled again, nothing published), read from the
    # committed offset's metadata before the partition's first batch; and the partitions read so.
    _marks: dict[TopicPartition, int] = field(default_factory=dict, init=False)
    _marks_known: set[TopicPartition] = field(default_factory=set, init=False)
    # Set by the stage's service (``Service.add_stage``): records the progress of a batch whose
    # handler opened no transaction that did (every record refused before Postgres, say), before
    # its offsets commit. Each offset committed then says in its metadata where its batch began,
    # and the service's check at start finds a database restored behind it (yidi.platform.recover).
    record_progress: Callable[[progress.Progress], Awaitable[None]] | None = None
    # Set after a restore (``Service._wait_for_feeds``, or the service's own wiring; yidi.platform.catchup):
    # its ``check`` raises FeedsCatchingUp (a TransientError: the batch waits) until the service's
    # feeds have applied again what the restored database lacked; asked before every batch,
    # handled again or not, until they have (then it passes at once).
    catch_up: Any = None
    # What this instance recorded in ``stage_progress`` per partition (progress.hold), or what its
    # committed offset said as it was assigned (``_learn_marks``), kept across assignments (a row
    # never goes back, so it stays at or below the row): each batch's statement
    # that records its row first checks the row still holds that, and a database that went back
    # under the running stage stops it (DatabaseWentBack).
    _held: dict[tuple[str, int], int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._reply_topics = ReplyTopics(self.name)
        metrics.STAGE_READ_FROM_START.labels(self.name)  # at 0 from the start: a later read is an increase
        for outcome in ("redone", "refused"):
            metrics.STAGE_RESTORED.labels(self.name, outcome)

    async def start(self) -> None:
        s = self.settings
        fencing.install()  # before the consumer exists: its offset fetches wait for stable offsets
        txnv2.install()  # a refused record batch makes its transaction abortable (and v2 where enabled)
        records.install()  # a record whose header name is not UTF-8 is read, not a stop at every start
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            group_id=s.group(self.group_id),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=self.max_records,
            # A read_committed fetch parked at the broker returns as soon as the upstream transaction's
            # markers move the last stable offset, so a long wait adds no latency (measured with
            # loadtest.traced); a short one only adds empty fetches, ~100/s per stage at 10 ms, CPU
            # that a small box then lacks elsewhere.
            fetch_max_wait_ms=200,
        )
        self._consumer.subscribe([s.topic(t) for t in self.topics], listener=_Revocations(self))
        # The transactional id is stable per stage and instance: a restarted instance fences its
        # predecessor and aborts whatever transaction it left open.
        self._producer = make_producer(
            s,
            transactional_id=f"{s.namespace}yidi-{self.name}-{s.instance}",
            transaction_timeout_ms=s.kafka_transaction_timeout_ms,
            enable_idempotence=True,
            linger_ms=0,
            # A transaction that follows the last one closely is told CONCURRENT_TRANSACTIONS
            # until the broker has written the last one's markers; the default 100 ms back-off
            # then dominates latency at low rates (bare pipeline p99 321 → 110 ms at 100/s).
            retry_backoff_ms=10,
            # A batch of 500 passed-on messages (1–3 KB each) goes out in a few record batches
            # instead of one per 16 KB (aiokafka's default): fewer requests for broker and client.
            max_batch_size=512 * 1024,
        )
        await self._producer.start()
        self.transaction_version = await txnv2.enable(self._producer, s.kafka_transactions)
        log.info("stage %s: Kafka transactions v%d%s", self.name, self.transaction_version,
                 ", offsets sent while the handler runs" if self._offsets_during_handler() else "")
        if s.kafka_offsets_during_handler and self.transaction_version != 2:
            log.warning("stage %s: YIDI_KAFKA_OFFSETS_DURING_HANDLER applies to transactions v2 only: ignored",
                        self.name)
        await self._consumer.start()
        # Several instances of a stage share its consumer group: each batch's offsets are
        # committed under the group generation it was fetched in, so an instance the group has
        # moved on from (a zombie) cannot commit outputs for partitions another one now owns.
        self._producer._txn_manager.yidi_membership = lambda: self._membership
        self._task = asyncio.create_task(self._run(), name=f"stage-{self.name}")
        self._lag_task = asyncio.create_task(self._sample_lag(), name=f"stage-{self.name}-lag")

    async def _read_from_start(self, assigned: set[TopicPartition]) -> None:
        """Say which of the partitions just assigned the stage will read from their first record
        although that record is older than ``READ_FROM_START_AGE_S`` (no committed offset for its
        group: ``auto_offset_reset`` earliest). Its group was deleted or reset, and what it had
        handled is handled again; or its offsets expired (no member past the broker's
        ``offsets.retention.minutes``), and it reads what came while it was away (runbook, "A stage
        read its partitions from the start"): said, timestamped, alerted on, not stopped. A
        partition whose first records are younger is a group's first (a new deployment, a
        partition's first records in a batch a rebalance took before its commit), and one of a
        compacted topic keeps its records for good and is read whole by a new deployment: said at
        INFO."""
        consumer = self._consumer
        if consumer is None or not assigned:
            return
        committed = await consumer._coordinator.fetch_committed_offsets(set(assigned))
        self._learn_marks(set(assigned), committed)
        missing = sorted(tp for tp in assigned if committed.get(tp) is None)
        first = await consumer.beginning_offsets(sorted(assigned))
        for tp, at, retained in deleted_unread(committed, first):
            # Its records from the committed offset on were deleted (the topic's retention.ms)
            # before the stage handled them: never answered, never in the ledger (a review, session
            # 49): said, timestamped and alerted as a read from the start is.
            metrics.STAGE_READ_FROM_START.labels(self.name).set_to_current_time()
            log.error("stage %s: %s[%d]'s committed offset for group %s is %d, below its first record retained, "
                      "%d: the %d records between were deleted before the stage handled them (never answered); "
                      "read from offset %d (runbook, \"A stage read its partitions from the start\")", self.name,
                      tp.topic, tp.partition, self.settings.group(self.group_id), at, retained, retained - at,
                      retained)
        if not missing:
            return
        end = await consumer.end_offsets(missing)
        held = [tp for tp in missing if end[tp] > first[tp]]
        oldest = await consumer.offsets_for_times({tp: 0 for tp in held}) if held else {}
        now_ms = time.time() * 1000
        for tp in held:
            found = oldest.get(tp)
            age_s = (now_ms - found.timestamp) / 1000 if found is not None else 0.0
            said = (f"stage {self.name}: {tp.topic}[{tp.partition}] has no committed offset for group "
                    f"{self.settings.group(self.group_id)} and holds {end[tp] - first[tp]} records, the first "
                    f"{age_s:.0f} s old: read from offset {first[tp]}")
            if age_s < READ_FROM_START_AGE_S or tp.topic in _compacted_topics(self.settings):
                log.info("%s", said)
                continue
            metrics.STAGE_READ_FROM_START.labels(self.name).set_to_current_time()
            log.warning("%s. Its group was deleted or reset (what it had handled is handled again) or its offsets "
                        "expired (what came while it was away is read) (runbook, \"A stage read its partitions from "
                        "the start\")", said)

    async def _sample_lag(self) -> None:
        """``yidi_stage_lag_records`` every ``lag_sample_seconds``: what the stage's partitions hold
        that it has not committed. It grows while the stage is stuck or falls behind, whatever the
        stage's own loop is doing (docs/runbook.md, YidiStageStalled)."""
        gauge, waited, clock = metrics.STAGE_LAG.labels(self.name), metrics.STAGE_WAITING.labels(self.name), WaitClock()
        while not self._stopping:
            await asyncio.sleep(self.settings.lag_sample_seconds)
            consumer = self._consumer
            try:
                lags = await partition_lag(consumer) if consumer is not None else {}
                clock.sample(lags, time.monotonic())
                gauge.set(sum(behind for behind, _ in lags.values()) + self._in_hand)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a sample missed (rebalance, broker away) is not a failure
                # What waited at the last sample waits on: a missed sample does not hide it.
                log.debug("stage %s: lag not sampled: %r", self.name, exc)
            now = time.monotonic()
            waited.set(clock.longest(now, now - self._in_hand_since if self._in_hand else 0.0))

    async def stop(self) -> None:
        self._stopping = True
        if self._lag_task:
            self._lag_task.cancel()
        if self._task:
            task = self._task
            task.cancel()
            # Bounded too: a batch cancelled mid-commit aborts its transaction, and with Kafka away
            # the abort waits for the broker for ever (a transactional producer's batches never
            # expire). Cancelled again, it leaves the transaction to the broker's timeout, or to
            # fencing by the next start; the batch is read again.
            done, _ = await asyncio.wait([task], timeout=CLIENT_STOP_SECONDS)
            if not done:
                log.warning("stage %s: its batch did not end within %g s of the stop (Kafka unreachable?); left to "
                            "the broker's timeouts", self.name, CLIENT_STOP_SECONDS)
                task.cancel()
                done, _ = await asyncio.wait([task], timeout=CLIENT_STOP_SECONDS)
            if done and not task.cancelled():
                task.exception()  # retrieved: already logged in _run
        for kind, client in (("consumer", self._consumer), ("producer", self._producer)):
            if client is None:
                continue
            try:
                # Bounded: with Kafka away, leaving the group and flushing wait out their request
                # timeouts (40 s each), and a stop then outlasted any supervisor's grace period.
                # What is left is the broker's to settle: the group's session times out, an open
                # transaction is aborted (or fenced by the next start), the batch is read again.
                await asyncio.wait_for(client.stop(), CLIENT_STOP_SECONDS)
            except TimeoutError:
                log.warning("stage %s: its Kafka %s did not stop within %g s (Kafka unreachable?); left to the "
                            "broker's timeouts", self.name, kind, CLIENT_STOP_SECONDS)

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def _run(self) -> None:
        assert self._consumer is not None
        try:
            while not self._stopping:
                batch = await self._consumer.getmany(timeout_ms=500, max_records=self.max_records)
                self._membership = fencing.membership(self._consumer)
                self._fetched_at_revocation = self._revocations
                records = self._incoming(batch)
                # A batch that is not full waits until ``batch_linger_ms`` after the last commit and
                # takes what arrived meanwhile. Without it, at low rates every stage commits a
                # transaction per record or two, and those transactions (three broker round trips
                # under v2, five under v1, and the markers) kept the 2-core box busy at 100
                # settlements/s (docs/BENCHMARKS.md, linger). It lingers only while lingering adds
                # records (LingerGate).
                linger = self.settings.batch_linger_ms / 1000 - (time.monotonic() - self._last_commit)
                if records and linger > 0 and len(records) < self.max_records and self._linger_wanted():
                    await asyncio.sleep(linger)
                    more = self._incoming(
                        await self._consumer.getmany(timeout_ms=0, max_records=self.max_records - len(records)))
                    if fencing.membership(self._consumer) == self._membership:
                        self._linger.lingered(len(more))
                        records += more
                    else:
                        # The group rebalanced during the wait. The first part would be refused
                        # at commit under its old generation: drop it (the new assignment reads
                        # its partitions again from the committed offsets). What came since is the
                        # new assignment's: rewind it, to be read with the next batch.
                        metrics.STAGE_RETRIES.labels(self.name, "Rebalanced").inc()
                        self._rewind(more)
                        records = []
                if records:
                    self._in_hand, self._in_hand_since = len(records), time.monotonic()
                    self._observe_age(records)
                    try:
                        await self._handle_in_order(records)
                    finally:
                        self._in_hand = 0
                    self._last_commit = time.monotonic()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.failure = exc
            log.exception("stage %s stopped", self.name)
            raise

    async def _handle_in_order(self, records: list[Incoming]) -> bool:
        """Handle a batch fetched: after a restore, its records answered before it (below their
        partition's mark) first, in a batch of their own that publishes nothing, then the others."""
        if not await self._know_marks(records):
            return False  # stopping: the records are read again by whoever owns them next
        if not self._marks:
            return await self._handle_until_committed(records)
        below = [self._below_mark(r) for r in records]
        if all(below) or not any(below):
            return await self._handle_until_committed(records)
        # A partition's records come in order: those below its mark before the others.
        return (await self._handle_until_committed([r for r, b in zip(records, below, strict=True) if b])
                and await self._handle_until_committed([r for r, b in zip(records, below, strict=True) if not b]))

    def _below_mark(self, r: Incoming) -> bool:
        mark = self._marks.get(TopicPartition(r.topic, r.partition))
        return mark is not None and r.offset < mark

    async def _know_marks(self, records: list[Incoming]) -> bool:
        """Read the marks of the batch's partitions not read since they were assigned (the
        assignment's own check reads them, unless it failed): no record is handled before its
        partition's mark is known. Kafka away: tried again every second; False once the stage
        stops before they could be read (the batch is not handled)."""
        unknown = {TopicPartition(r.topic, r.partition) for r in records} - self._marks_known
        if not unknown:
            return True
        while not self._stopping and self._consumer is not None:
            try:
                self._learn_marks(unknown, await self._consumer._coordinator.fetch_committed_offsets(unknown))
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Kafka away: the batch waits for its marks
                metrics.STAGE_RETRIES.labels(self.name, type(exc).__name__).inc()
                log.warning("stage %s: committed offsets of %s not read (%r); tried again in 1 s", self.name,
                            sorted(unknown), exc)
                await asyncio.sleep(1.0)
        return False

    def _learn_marks(self, partitions: set[TopicPartition], committed: dict[TopicPartition, Any]) -> None:
        # What the rows held when the offsets were committed: checked from the first batch on.
        progress.hold_committed(self._held, {tp: committed.get(tp) for tp in partitions})
        for tp in partitions:
            found = committed.get(tp)
            mark = progress.answered_to(getattr(found, "metadata", None))
            if mark is not None and found is not None and found.offset < mark:
                if self._marks.get(tp) != mark:
                    log.warning("stage %s: %s[%d]: the records from offset %d to %d were answered before the service's "
                                "database was restored: handled again, publishing nothing", self.name, tp.topic,
                                tp.partition, found.offset, mark - 1)
                self._marks[tp] = mark
            else:
                self._marks.pop(tp, None)
            self._marks_known.add(tp)

    def _assigned_anew(self) -> None:
        """A new assignment: every partition's mark is read again before its first batch."""
        self._marks_known.clear()
        self._marks.clear()

    def _with_metadata(self, offsets: dict[TopicPartition, int], batch: progress.Progress | None
                       ) -> dict[TopicPartition, Any]:
        """The offsets to commit, each with its metadata: still below its partition's mark, the mark
        (a stage stopped half-way through keeps it for the next owner), alone, as the versions
        before this one wrote and read it; otherwise where its batch began, which the database
        holds by the time they commit (``_recorded``)."""
        vouched = batch.below if batch is not None and self.record_progress is not None else {}
        if not vouched and not self._marks:
            return dict(offsets)
        with_metadata: dict[TopicPartition, Any] = {}
        for tp, o in offsets.items():
            mark = self._marks.get(tp)
            began = vouched.get((tp.topic, tp.partition))
            said = (progress.mark(mark) if mark is not None and o < mark
                    else progress.applied(began) if began is not None else "")
            with_metadata[tp] = OffsetAndMetadata(o, said) if said else o
        return with_metadata

    async def _recorded(self, batch: progress.Progress | None) -> None:
        """The batch's progress in the database before its offsets commit: recorded by its handler's
        transactions, or else here."""
        if batch is None:
            return
        if not batch.recorded and self.record_progress is not None:
            await self.record_progress(batch)
        progress.hold(self._held, batch)

    def _restored(self, handler: Handler, outgoing: list[Outgoing]) -> list[Outgoing]:
        """What a batch answered before the restore publishes now: nothing (its answers, passed-on
        records and dead letters are on their topics), unless it is refused now (``_isolate``): the
        record was answered before, maybe settled, and what it did is not in the database now.
        Its dead letter goes out (not its answer: the facility has one) and the log says so."""
        if not getattr(handler, "yidi_refusal", False):
            return []
        log.error("stage %s: a record answered before the database was restored is refused now; its dead letter "
                  "is published, not its answer: compare what it was answered with the ledger (runbook, \"Restoring "
                  "a service's database\")", self.name)
        return [o for o in outgoing if o.topic.endswith(".dlq")]

    def _committed_to(self, offsets: dict[TopicPartition, int], restored: Handler | None, count: int) -> None:
        """After a commit: count a batch handled again after a restore (``restored``: its handler),
        and drop the marks passed."""
        if restored is not None:
            refused = getattr(restored, "yidi_refusal", False)
            metrics.STAGE_RESTORED.labels(self.name, "refused" if refused else "redone").inc(count)
        for tp, o in offsets.items():
            if (m := self._marks.get(tp)) is not None and o >= m:
                del self._marks[tp]
                log.info("stage %s: %s[%d]: past the records answered before the restore; from offset %d as always",
                         self.name, tp.topic, tp.partition, m)

    def _progress(self, records: list[Incoming], group: str) -> progress.Progress | None:
        if self.group_id in GROUPS_WITHOUT_PROGRESS:
            return None  # its handler keeps nothing in Postgres (a cache sweep's transaction would record it)
        return progress.began(group, [(r.topic, r.partition, r.offset) for r in records], self._held)

    async def _handle_until_committed(self, records: list[Incoming], handler: Handler | None = None) -> bool:
        """Handle ``records`` and commit their outputs and offsets; False when the batch was dropped
        instead (the group moved on: the partitions' owner reads the records again)."""
        delay, races, moved = 0.1, 0, False
        handler = handler or self.handler
        while True:
            started = time.perf_counter()
            try:
                if not self._member():
                    # Fetched while between memberships: refused at commit anyway; skip the work.
                    raise fencing.GenerationFenced(f"batch fetched outside the group ({self._membership})")
                if self._rebalanced():
                    # A retry (or _isolate's second half) after the group began to rebalance: refused
                    # at commit anyway, and with the offsets sent during the handler they would make
                    # the new owner wait.
                    raise fencing.GenerationFenced("the group began to rebalance since the batch was fetched")
                outgoing = await self._handle_and_commit(records, handler)
            except ProducerFenced as exc:
                # A newer instance took over; or the coordinator aborted the transaction on its
                # timeout (a long Kafka outage; with the offsets sent during the handler, also a
                # handler that outlasted it).
                why = "the batch outlasted" if self._offsets_during_handler() else "a long Kafka outage outlasted"
                raise FatalError(f"stage {self.name}: fenced by a newer instance, or {why} the transaction "
                                 "timeout") from exc
            except fencing.GenerationFenced as exc:
                # The group rebalanced since this batch was fetched: its transaction is aborted.
                # A rebalance gives every member a new assignment whose positions restart from
                # the committed offsets, so the records are read again by whichever instance
                # owns them now, this one included.
                metrics.STAGE_RETRIES.labels(self.name, "GenerationFenced").inc()
                log.warning("stage %s: %s; batch of %d left to the partitions' owner", self.name, exc, len(records))
                return False
            except RaceLost as exc:
                if self._left_behind():
                    metrics.STAGE_RETRIES.labels(self.name, "GenerationFenced").inc()
                    log.warning("stage %s: %s, and the group has moved on; batch of %d left to the partitions' "
                                "owner", self.name, exc, len(records))
                    return False
                races += 1
                if races > self.max_races:
                    raise FatalError(f"stage {self.name}: {exc}, again after {self.max_races} retries") from exc
                metrics.STAGE_RETRIES.labels(self.name, "RaceLost").inc()
                log.warning("stage %s: %s; batch of %d retried", self.name, exc, len(records))
                await asyncio.sleep(0.1)  # the winner has committed (the violation says so): look again
                continue
            except BadData as exc:
                if getattr(handler, "yidi_refusal", False):
                    if isinstance(exc, OutputRefused) and exc.answer and not getattr(handler, "yidi_moved", False):
                        # The refusal's answer too large for the gateway's reply topic (a topic of
                        # small records): once more on its moved answers' topic, as _isolate moves
                        # the stage's own answers, rather than stop the stage at every start.
                        log.warning("stage %s: %s; the refusal sent again with its answer on its moved answers' topic",
                                    self.name, exc)
                        handler = _answers_to_moved_topic(handler)
                        continue
                    raise FatalError(f"stage {self.name}: refusing a record failed: {exc}") from exc
                return await self._isolate(records, exc, handler)
            except (TransientError, KafkaError, OSError) as exc:
                races = 0
                reason = type(exc).__name__
                metrics.STAGE_RETRIES.labels(self.name, reason).inc()
                if isinstance(exc, ReplyTopicRefused) and not moved:
                    # Nothing to wait for: the retry moves the refused answers (yidi.platform.reply_topics).
                    moved = True
                    log.warning("stage %s: %s, batch of %d retried", self.name, exc, len(records))
                    continue
                log.warning("stage %s: %s, batch of %d retried in %.1fs", self.name, exc, len(records), delay)
                await asyncio.sleep(delay)
                delay = min(self.max_backoff, delay * 2)
                continue
            now_ms = time.time() * 1000
            metrics.STAGE_BATCH_SECONDS.labels(self.name).observe(time.perf_counter() - started)
            metrics.STAGE_BATCH_SIZE.labels(self.name).observe(len(records))
            metrics.STAGE_RECORDS.labels(self.name).inc(len(records))
            answered: dict[tuple[str, str], int] = {}
            for out in outgoing:
                if out.on_commit is not None:
                    out.on_commit()
                if out.refused:
                    metrics.REPLY_TOPIC_REFUSED.labels(self.name, out.refused).inc()
                if out.answered:
                    a = out.answered
                    key = (a.infno, a.err_code)
                    answered[key] = answered.get(key, 0) + 1
                    self._latency(a.infno, a.err_code).observe(max(0.0, (now_ms - a.request_ts_ms) / 1000))
            for (infno, err_code), count in answered.items():
                metrics.ANSWERS.labels(self.service, infno, err_code).inc(count)
            return True

    async def _isolate(self, records: list[Incoming], exc: BadData, handler: Handler) -> bool:
        """The database refused a value of this batch, or an output was too large for a Kafka record:
        halve the batch until the record at fault is alone, and refuse that record (its batch-mates
        are handled, in order, in batches of their own). Without this, one bad value stops the
        stage for everybody: the batch would fail the same way after every restart.

        An output the broker refused for its size may be an answer larger than the gateway's reply
        topic takes: the record alone is handled once more with its answers on their shared answer
        topic (``reply_topics.to_moved_topic``) before it is refused. Its handler's work is
        committed by then (a ledger row, say): refused, it would be answered "nothing was settled"."""
        metrics.STAGE_RETRIES.labels(self.name, "BadData").inc()
        if len(records) > 1:
            log.warning("stage %s: %s; batch of %d halved to find the record at fault", self.name, exc, len(records))
            half = len(records) // 2
            # The second half only after the first is committed: if the group moved on meanwhile,
            # the rest is the new owner's to read again, in order.
            return (await self._handle_until_committed(records[:half])
                    and await self._handle_until_committed(records[half:]))
        record = records[0]
        if isinstance(exc, OutputRefused) and exc.answer and handler is self.handler:
            log.warning("stage %s: %s; %s/%d/%d handled again with its answers on their moved answers' topic",
                        self.name, exc, record.topic, record.partition, record.offset)
            return await self._handle_until_committed(records, _answers_to_moved_topic(self.handler))
        reason = f"{CANNOT_PROCESS}: {exc}"
        log.error("stage %s: %s/%d/%d %s", self.name, record.topic, record.partition, record.offset, reason)
        if self.refuse is not None:
            refuse = self.refuse
        else:
            from yidi.platform import replies  # replies builds on this module

            def refuse(r: Incoming, why: str) -> list[Outgoing]:
                return replies.broken(self.settings, r, why, "The platform could not record this request; nothing "
                                      "was settled. Correct the request or settle in cash, and report it.")

        async def refused(rs: list[Incoming]) -> list[Outgoing]:
            return refuse(rs[0], reason)

        refused.yidi_refusal = True  # type: ignore[attr-defined]

        return await self._handle_until_committed(records, refused)

    def _rewind(self, records: list[Incoming]) -> None:
        """Move each partition still assigned back to the first of ``records`` (read them again)."""
        assert self._consumer is not None
        first: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            first[tp] = min(first.get(tp, r.offset), r.offset)
        assigned = self._consumer.assignment()
        for tp, offset in first.items():
            if tp in assigned:
                self._consumer.seek(tp, offset)

    def _linger_wanted(self) -> bool:
        wanted = self._linger.wanted() if self.settings.batch_linger_gate else True
        metrics.STAGE_LINGERS.labels(self.name, "lingered" if wanted else "skipped").inc()
        return wanted

    def _member(self) -> bool:
        """Whether the batch in hand was fetched as a member of the group (aiokafka resets the
        membership to generation -1 when a heartbeat learns that the group moved on; the broker
        would take a commit under it unchecked)."""
        generation, member_id = self._membership
        return generation >= 0 and bool(member_id)

    def _left_behind(self) -> bool:
        """Whether the group has moved on since the batch in hand was fetched."""
        return self._consumer is not None and fencing.membership(self._consumer) != self._membership

    @staticmethod
    def _incoming(batch: dict[TopicPartition, list[Any]]) -> list[Incoming]:
        # A record with a null value (a producer's "delete", a tombstone) is read as an empty one:
        # not JSON, so dead-lettered, and the stage goes on. As None it raised TypeError in every
        # stage's refusal path (len(), re.search), and the process stopped on it at every start.
        return [
            Incoming(r.topic, r.partition, r.offset, r.key, b"" if r.value is None else r.value,
                     r.timestamp if 0 <= r.timestamp < LATEST_TIMESTAMP_MS else _now_ms(), tuple(r.headers or ()))
            for tp_records in batch.values()
            for r in tp_records
        ]

    def _observe_age(self, records: list[Incoming]) -> None:
        """``yidi_stage_record_age_seconds``: the batch's oldest record, by its timestamp (the
        broker's for settlement.requests, LogAppendTime; the producer's clock for the others)."""
        oldest_ms = min(r.timestamp_ms for r in records)
        metrics.STAGE_RECORD_AGE.labels(self.name).observe(max(0.0, time.time() - oldest_ms / 1000))

    def _latency(self, infno: str, err_code: str) -> Any:
        """The latency histogram's child for an answer (looked up once per label set)."""
        outcome = "ok" if err_code == "ok" else "error"
        child = self._latency_children.get((infno, outcome))
        if child is None:
            child = self._latency_children[(infno, outcome)] = metrics.SETTLEMENT_LATENCY.labels(
                self.service, infno, outcome)
        return child

    async def _handle_and_commit(self, records: list[Incoming], handler: Handler) -> list[Outgoing]:
        """Run the handler, then publish its outputs and commit the batch's offsets in one Kafka
        transaction, begun once the handler has returned: no transaction is open while it runs.

        With ``kafka_offsets_during_handler`` under transactions v2, the transaction begins, and its
        offsets go to the group coordinator, while the handler runs: they are known from the fetch,
        and the TxnOffsetCommit is then off the batch's critical path. Offsets an open transaction
        holds make the partitions' next owner wait (require_stable), so a rebalance meanwhile aborts
        the transaction at once (``_Revocations``) and the batch is left to the new owner."""
        offsets: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
        group = self.settings.group(self.group_id)
        restored = bool(self._marks) and all(self._below_mark(r) for r in records)
        if self.catch_up is not None:
            await self.catch_up.check()
        batch = self._progress(records, group)
        committed = self._with_metadata(offsets, batch)
        if not self._offsets_during_handler():
            with progress.batch(batch), progress.restored(restored):
                outgoing = await handler(records)
                await self._recorded(batch)
            crash_point(self.name, "after-handler")  # the handler's Postgres work is committed
            producer = self._producer
            assert producer is not None
            outgoing = self._restored(handler, outgoing) if restored else await self._route(producer, outgoing)
            await producer.begin_transaction()
            await self._commit(producer, outgoing, committed, group, None)
            self._committed_to(offsets, handler if restored else None, len(records))
            return outgoing
        producer = self._producer
        assert producer is not None
        await producer.begin_transaction()
        if self._rebalanced():  # while the producer waited: the listener had no transaction to abort
            await _abort_if_open(producer)
            raise fencing.GenerationFenced("the group began to rebalance since the batch was fetched")
        opened = self._opened = _Opened(producer, asyncio.ensure_future(
            producer.send_offsets_to_transaction(committed, group)))
        try:
            try:
                with progress.batch(batch), progress.restored(restored):
                    outgoing = await handler(records)
                    await self._recorded(batch)
                crash_point(self.name, "after-handler")  # the handler's Postgres work is committed
                outgoing = self._restored(handler, outgoing) if restored else await self._route(producer, outgoing)
            except BaseException:
                await self._abandon(opened)
                raise
            if opened.revoked:
                await self._abandon(opened)
                raise fencing.GenerationFenced("the group rebalanced while the batch was handled; its transaction "
                                               "was aborted")
            opened.committing = True
            await self._commit(producer, outgoing, committed, group, opened.offsets_sent)
        finally:
            self._opened = None
        self._committed_to(offsets, handler if restored else None, len(records))
        return outgoing

    def _offsets_during_handler(self) -> bool:
        return self.transaction_version == 2 and self.settings.kafka_offsets_during_handler

    def _rebalanced(self) -> bool:
        return self._revocations != self._fetched_at_revocation

    async def _route(self, producer: AIOKafkaProducer, outgoing: list[Outgoing]) -> list[Outgoing]:
        """Answers to a reply topic the broker refuses for good, or on a partition without a leader,
        moved to their moved answers' topic."""
        def partition_of(o: Outgoing) -> int:  # as the producer's send will choose it
            return producer._partition(o.topic, None, o.key, None, o.key, None)  # noqa: SLF001

        return await self._reply_topics.route(producer.client, outgoing, partition_of)

    async def _abandon(self, opened: _Opened) -> None:
        try:
            await opened.abort()
        except asyncio.CancelledError:
            # Stopping: let the abort reach the broker before the producer stops, or the
            # transaction would hold its offsets until it timed out.
            await opened.aborted()
            raise
        except Exception as exc:
            if opened.producer._txn_manager.is_fatal_error():
                raise self._fatal(exc) from exc
            raise

    async def _commit(self, producer: AIOKafkaProducer, outgoing: list[Outgoing], offsets: dict[TopicPartition, Any],
                      group: str, offsets_sent: asyncio.Future[Any] | None) -> None:
        """Publish ``outgoing`` and commit the transaction, with ``offsets`` (or, when they were sent
        already, once ``offsets_sent`` is done: the broker adds both to the transaction through one
        queue, and of two adds of one transaction queued together it fails the first)."""
        sends: list[asyncio.Future[Any]] = []
        try:
            if offsets_sent is not None:
                await asyncio.shield(offsets_sent)  # a stop does not cancel it half-way
            for o in outgoing:
                try:
                    sends.append(await producer.send(o.topic, o.value, key=o.key, headers=list(o.headers) or None))
                except MessageSizeTooLargeError as exc:
                    # Every retry would fail the same way: the record whose output it is is refused.
                    raise OutputRefused(f"an output of {len(o.value)} bytes for {o.topic} is larger than a Kafka "
                                        f"record may be ({exc})", answer=_answer_topic(o.topic, outgoing)) from exc
            if offsets_sent is None:
                await producer.send_offsets_to_transaction(offsets, group)
            if armed(self.name, "before-kafka-commit"):
                await producer.flush()  # the records reach the broker, uncommitted
                crash_point(self.name, "before-kafka-commit")
            await producer.commit_transaction()
        except BaseException as exc:
            for f in sends:
                f.add_done_callback(txnv2.retrieved)  # the exception goes up once, as ``exc``
            if offsets_sent is not None:
                offsets_sent.add_done_callback(txnv2.retrieved)
            txn_manager = producer._txn_manager
            if txn_manager.is_fatal_error() and isinstance(exc, Exception):
                raise self._fatal(exc) from exc
            # A send (or the offsets) after the transaction turned abortable meanwhile (the broker
            # refused to add a partition while later records waited for their topic's metadata) is
            # told only "not in transaction": the error that made it abortable is the transaction's.
            cause = _abortable_cause(producer) if isinstance(exc, IllegalOperation) else None
            # Not committed (or refused at commit: a refused record batch, yidi.platform.txnv2): end
            # the transaction, so that the batch is tried again in a new one. A commit under way
            # when the stage is cancelled goes on.
            await _abort_if_open(producer)
            if self._reply_topics.learn(cause or exc, outgoing):
                # A reply topic the broker would not let us write: the retry publishes its answers
                # on their moved answers' topic (yidi.platform.reply_topics).
                raise ReplyTopicRefused(f"the broker refused a reply topic ({cause or exc!r}); its answers go to "
                                        "the moved answers' topic") from exc
            if cause is not None:
                raise TransientError(f"the transaction could only be aborted: {cause!r}") from cause
            refused = getattr(exc, "refused", None)
            if isinstance(refused, PERMANENT_REFUSALS):
                # Every retry would be refused the same way: the record whose output it is is refused.
                topic = getattr(refused, "yidi_topic", None)  # yidi.platform.txnv2
                raise OutputRefused(f"the broker refused an output for good ({refused!r})",
                                    answer=topic is None or _answer_topic(topic, outgoing)) from exc
            raise
        await asyncio.gather(*sends)  # settled by the commit; surfaces any per-record error

    def _fatal(self, exc: BaseException) -> BaseException:
        """What a failure that left the producer unusable becomes: ProducerFenced as it is (a newer
        instance took over), anything else FatalError (the process exits; a restart gets a new one)."""
        if isinstance(exc, ProducerFenced):
            return exc
        return FatalError(f"stage {self.name}: the Kafka producer failed for good: {exc!r}")


def _compacted_topics(settings: Settings) -> set[str]:
    return {settings.topic(spec.name) for spec in all_topic_specs() if spec.compacted}


# How long a rebalance waits for the check of the partitions assigned (``_read_from_start``), and
# how old a partition's first record must be for reading it from the start to be news.
OFFSETS_CHECK_SECONDS = 5.0
READ_FROM_START_AGE_S = 600.0


def _answer_topic(topic: str, outgoing: list[Outgoing]) -> bool:
    """Whether ``topic`` is a gateway's reply topic among ``outgoing`` (an answer with a moved answers' topic)."""
    return any(o.topic == topic and is_answer(o) for o in outgoing)


def _abortable_cause(producer: AIOKafkaProducer) -> BaseException | None:
    """The error that put the producer's open transaction in an abortable error, if it is in one."""
    txn_manager = producer._txn_manager
    if txn_manager.state != TransactionState.ABORTABLE_ERROR:
        return None
    waiter = txn_manager._transaction_waiter
    return waiter.exception() if waiter.done() and not waiter.cancelled() else None


async def _abort_if_open(producer: AIOKafkaProducer) -> None:
    """End the producer's transaction, if one is open (or can only be aborted)."""
    if producer._txn_manager.state in (TransactionState.IN_TRANSACTION, TransactionState.ABORTABLE_ERROR):
        await producer.abort_transaction()


class _Opened:
    """A transaction begun before its batch's handler ran (``kafka_offsets_during_handler`` under
    transactions v2), with its offsets sent."""

    def __init__(self, producer: AIOKafkaProducer, offsets_sent: asyncio.Future[Any]) -> None:
        self.producer = producer
        self.offsets_sent = offsets_sent
        self.revoked = False  # the group rebalanced before the commit began: the transaction is aborted
        self.committing = False  # the outputs are being published: the commit is left to finish
        self._aborted: asyncio.Future[None] | None = None

    def abort(self) -> Awaitable[None]:
        """Abort the transaction (once, whoever asks first: the stage or the rebalance). Raises what
        made the producer unusable, if it is."""
        if self._aborted is None:
            self._aborted = asyncio.ensure_future(self._abort())
            self._aborted.add_done_callback(txnv2.retrieved)  # whoever awaits it gets the exception
        return asyncio.shield(self._aborted)

    async def aborted(self) -> None:
        """Wait until the abort under way has ended (whatever its outcome)."""
        if self._aborted is not None:
            await asyncio.wait([self._aborted], timeout=10)

    async def _abort(self) -> None:
        await asyncio.wait([self.offsets_sent])
        txnv2.retrieved(self.offsets_sent)  # refused offsets (GenerationFenced) leave it abortable
        txn_manager = self.producer._txn_manager
        if txn_manager.is_fatal_error():
            # Fenced by a newer instance, or failed for good: nothing to abort, and the stage must stop.
            waiter = txn_manager._transaction_waiter
            raise (waiter.exception() if waiter.done() and not waiter.cancelled() else None) or KafkaError(
                "the transactional producer failed for good")
        await _abort_if_open(self.producer)


class _Revocations(ConsumerRebalanceListener):
    """Before the consumer rejoins its group: abort the transaction a batch holds open while its
    handler runs (``kafka_offsets_during_handler`` under transactions v2). Its offsets would
    otherwise make the new owner of those partitions wait until the batch's handler ends (or, if
    this instance is stuck, until the transaction times out); the batch could not be committed under
    the old generation anyway (fencing.py)."""

    def __init__(self, stage: TransactionalStage) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.stage._revocations += 1
        opened = self.stage._opened
        if opened is None or opened.committing:
            return  # a commit under way ends in a few round trips: the new owner waits that long
        opened.revoked = True
        log.info("stage %s: the group rebalances; the open transaction of the batch in hand is aborted",
                 self.stage.name)
        try:
            await opened.abort()
        except Exception as exc:  # noqa: BLE001 - the stage raises it, once, when its handler returns
            log.debug("stage %s: abort at rebalance failed: %r", self.stage.name, exc)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.stage._assigned_anew()
        try:
            await asyncio.wait_for(self.stage._read_from_start(set(assigned)), OFFSETS_CHECK_SECONDS)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a check that could not be made stops nothing
            log.warning("stage %s: committed offsets of %s not checked (a read from the start, or records deleted "
                        "unhandled, would go unsaid): %r", self.stage.name, sorted(assigned), exc)
