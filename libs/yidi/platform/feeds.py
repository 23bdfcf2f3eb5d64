"""Consuming a reference feed with FastStream: validate, apply, dead-letter what cannot apply.

Feeds are applied at least once (upserts are idempotent), a batch at a time: offsets are
committed after the batch is in Postgres (``NACK_ON_ERROR``, one commit per batch instead of one
per record: loading a national day's persons was bound by those commits); a database that is
away is retried after a pause; a record that does not validate is dead-lettered with the reason
and never retried. A batch's dead letters are published once the batch is applied, just before
its commit, so a batch read again after a failure to apply does not dead-letter its records again
(one read again after they went out does: a crash, a shutdown past the graceful timeout, a commit
refused in a rebalance; a dead letter's ``yidi-dlq-source`` names the record).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from faststream import AckPolicy
from faststream.exceptions import NackMessage
from faststream.kafka import KafkaMessage
from pydantic import BaseModel, ValidationError

from yidi.contracts.common import explain
from yidi.platform import metrics, progress
from yidi.platform.db import record_progress as record_progress_in
from yidi.platform.db import check_progress, statements_for
from yidi.platform.errors import DatabaseWentBack, PermanentError, RaceLost, TransientError
from yidi.platform.jsonwire import loads
from yidi.platform.lag import consumer_lag, deleted_unread
from yidi.platform.replies import DEAD_LETTER_MAX_BYTES, DEAD_LETTER_MAX_KEY_BYTES
from yidi.platform.service import Service
from yidi.platform.topics import all_topic_specs, dlq, feed_group

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


async def readable_headers(message: Any, original: Callable[[Any], Awaitable[Any]]) -> Any:
    """FastStream's parser of the records, given header values it can decode. It decodes each as
    UTF-8: a null value (Kafka allows one) or one that is not UTF-8 raised, and the batch was left
    neither applied nor read again. Such a value is given to it with the bytes that are not UTF-8
    written as escapes; the records' values and keys are the feed's, unchanged."""
    records = message if isinstance(message, tuple) else (message,)
    if any(not _utf8(v) for r in records for _, v in r.headers):
        records = tuple(r if all(_utf8(v) for _, v in r.headers) else dataclasses.replace(
            r, headers=[(k, (v or b"").decode("utf-8", "backslashreplace").encode()) for k, v in r.headers])
            for r in records)
        message = records if isinstance(message, tuple) else records[0]
    return await original(message)


async def bodies_as_they_are(message: Any) -> Any:
    """FastStream's decoding of the records' bodies, which the feed does not use: it reads them itself
    (``loads``, where a record that is not JSON is dead-lettered). FastStream's own decoding raised on a
    record whose ``content-type`` header says JSON or text and whose body is not (GBK, a byte-order
    mark, a null value) before the feed saw it: the batch was read again at once, for ever, and each
    record was parsed twice."""
    return message.body


def _utf8(value: bytes | None) -> bool:
    if value is None:
        return False
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


@dataclasses.dataclass(frozen=True, slots=True)
class Sent:
    """Where and when a feed's record was published: its partition and offset, and its Kafka
    timestamp (``published_at``)."""

    partition: int
    offset: int
    at: datetime


def published_at(timestamp_ms: int | None) -> datetime:
    """A Kafka record's timestamp (its producer's time of sending), as an aware time; now for a
    record without one (message format v0)."""
    if not timestamp_ms or timestamp_ms <= 0:
        return datetime.now(UTC)
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC)


def _stale(result: Any) -> int:
    """How many records an apply function ignored as stale (it returns an int, or nothing)."""
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def feed(
    service: Service,
    topic: str,
    model: type[M],
    apply: Callable[[M], Awaitable[Any]],
    *,
    apply_many: Callable[[list[M]], Awaitable[Any]] | None = None,
    name: str | None = None,
    max_records: int = 500,
    check: Callable[[M], str | None] | None = None,
    published: bool = False,
) -> None:
    """Subscribe to ``topic`` in batches: each record validated (a record that does not is
    dead-lettered), the valid ones applied in order with ``apply_many`` (one call, e.g. one
    statement) or else ``apply`` one by one, then the batch acknowledged with one commit.
    ``apply`` and ``apply_many`` may return how many records they ignored as older than what is
    held (counted ``stale`` rather than ``applied``).
    A record ``apply`` refuses (``PermanentError``), or that ``check`` finds a reason to refuse
    (a judgement against now, which a model's validation is not), is dead-lettered; a transient
    failure NACKs the batch, which is read again (the upserts are idempotent). ``published``:
    ``apply`` and ``apply_many`` take each record with where and when it was published,
    ``(record, Sent)`` (its partition, offset and Kafka timestamp: its producer's time of sending,
    now for a record without one)."""
    feed_name = name or topic
    full_topic = service.topic(topic)

    async def dead_letter(refused: list[tuple[Any, Exception]]) -> None:
        """Publish the batch's refused records, once it is applied (a NACKed batch refuses them
        again), and count them once all are out. A publish the broker refuses (the DLQ not writable)
        NACKs the batch after a pause, as a failure to apply does: the batch is applied again."""
        if not refused:
            return
        try:
            for raw, exc in refused:
                # A validation error's text quotes the values (a person's name and identity card
                # number): its fields and messages only.
                reason = explain(exc) if isinstance(exc, ValidationError) else str(exc)[:2000]
                log.warning("%s: record %s/%s/%s refused: %s", feed_name, raw.topic, raw.partition, raw.offset, reason)
                value, headers = raw.value or b"", {
                    "yidi-dlq-reason": reason,
                    "yidi-dlq-source": f"{raw.topic}/{raw.partition}/{raw.offset}",
                }
                if len(value) > DEAD_LETTER_MAX_BYTES:  # as a stage's: the whole record is at its source
                    value, headers["yidi-dlq-truncated"] = value[:DEAD_LETTER_MAX_BYTES], str(len(value))
                key = raw.key
                if key is not None and len(key) > DEAD_LETTER_MAX_KEY_BYTES:  # a megabyte key, compressed
                    key, headers["yidi-dlq-key-truncated"] = key[:DEAD_LETTER_MAX_KEY_BYTES], str(len(key))
                await service.broker.publish(value, dlq(full_topic), key=key, headers=headers)
        except Exception:
            log.exception("%s: dead letters not published to %s; the batch is read again", feed_name, dlq(full_topic))
            await asyncio.sleep(5.0)
            raise
        metrics.REFDATA_RECORDS.labels(feed_name, "refused").inc(len(refused))
        metrics.DEAD_LETTERS.labels(full_topic).inc(len(refused))

    def given(raw: Any, record: M) -> Any:
        return (record, Sent(raw.partition, raw.offset, published_at(raw.timestamp))) if published else record

    async def apply_each(valid: list[tuple[Any, M]], refused: list[tuple[Any, Exception]]) -> tuple[int, int]:
        applied = stale = 0
        for raw, record in valid:
            try:
                stale += _stale(await apply(given(raw, record)))
                applied += 1
            except (ValidationError, ValueError, PermanentError) as exc:
                refused.append((raw, exc))
        return applied, stale

    # The batch in hand, once applied and its progress recorded: the offsets its acknowledgement
    # commits, each saying the database holds every record before it (``_commit_with_progress``).
    acknowledged: dict[TopicPartition, int] = {}
    # What this feed recorded per partition (progress.hold), or what the partition's committed offset
    # said at the service's start or when it first came (``look_up``): each batch is checked against it.
    group = service.settings.group(feed_group(service.name, topic))
    held = service.held.setdefault(group, {})
    # The partitions whose committed offsets this feed has read since the group last rebalanced (a
    # partition moves to another instance and back only through rebalances), and that generation.
    looked_up: set[TopicPartition] = set()
    generation: list[int | None] = [None]

    async def look_up(consumer: Any, batch: tuple[Any, ...]) -> None:
        """What the committed offsets of the batch's partitions new to this feed since the group's
        last rebalance say the database held (``applied-below``), as the check at start read them:
        a partition's first batch here (or back here, after another instance held it) is checked
        against it too, not only the later ones against what this feed recorded."""
        if (now := getattr(consumer._coordinator, "generation", None)) != generation[0]:
            looked_up.clear()
            generation[0] = now
        unseen = {TopicPartition(r.topic, r.partition) for r in batch} - looked_up
        if not unseen:
            return
        try:
            committed = await consumer._coordinator.fetch_committed_offsets(unseen)
        except KafkaError as exc:
            raise TransientError(f"committed offsets of {sorted(unseen)} not read: {exc!r}") from exc
        progress.hold_committed(held, {tp: committed.get(tp) for tp in unseen})
        looked_up.update(unseen)

    async def checked(consumer: Any, batch: tuple[Any, ...]) -> progress.Progress | None:
        """Where the batch ends (``progress.reached``), once the rows of its partitions are checked
        against what the feed holds, before it applies anything: a row below that, or gone, is a
        database that went back under it (``DatabaseWentBack``, and the service stops)."""
        if service.pool is None:
            return None
        await look_up(consumer, batch)
        reached = progress.reached(group, [(r.topic, r.partition, r.offset) for r in batch], held)
        await check_progress(service.pool, service.name, [reached])
        return reached

    async def record_progress(reached: progress.Progress | None) -> None:
        """Where the batch ends, in the service's ``stage_progress`` (yidi.platform.progress), once
        it is applied, in a statement of its own waited to disk: every record before it is in the
        database, and the feed's commit then says so. After a restore of the service's database the
        feed is moved back there and applies what the backup lacks; a database that lost the batch's
        writes (a Postgres that lost its last commits) lost this row after them, and the service's
        check at start sees it."""
        if reached is None or service.pool is None:
            return
        await record_progress_in(service.pool, service.name, reached)
        progress.hold(held, reached)
        acknowledged.update({TopicPartition(topic, partition): offset
                             for (topic, partition), offset in reached.below.items()})

    # Where each partition's next record is, after the last batch this feed applied on it (since its
    # group last rebalanced): a batch that begins past it, on a topic that is not compacted, had
    # records deleted under the running feed (a batch failing until retention took it: the NACK's
    # seek fell below the first record retained, and aiokafka went on from that record with one INFO
    # line). The assignment check cannot see those. The platform's publishers write the reference
    # topics without transactions; a region's producer that wrote in transactions leaves markers,
    # and one deleted with no record after it reads as a record deleted (said, wrongly, once).
    expected: dict[TopicPartition, int] = {}
    expected_generation: list[int | None] = [None]
    gapless = topic not in {spec.name for spec in all_topic_specs() if spec.compacted}

    async def deleted_under_it(consumer: Any, batch: tuple[Any, ...]) -> None:
        if (now := getattr(consumer._coordinator, "generation", None)) != expected_generation[0]:
            expected.clear()  # its partitions may have been another instance's meanwhile
            expected_generation[0] = now
        starts: dict[TopicPartition, int] = {}
        for r in batch:
            starts.setdefault(TopicPartition(r.topic, r.partition), r.offset)
        gaps = {tp: expected[tp] for tp, first in starts.items() if first > expected.get(tp, first)}
        if not gaps or not gapless:
            return
        try:
            retained = await asyncio.wait_for(consumer.beginning_offsets(sorted(gaps)), DELETED_CHECK_SECONDS)
        except Exception as exc:  # noqa: BLE001 - a check that cannot be made stops nothing
            log.warning("%s: a batch began past where the last one ended on %s, not checked against the first records "
                        "retained: %r", feed_name, sorted(gaps), exc)
            return
        for tp, at in sorted(gaps.items()):
            if at < retained.get(tp, -1):
                say_deleted(feed_name, tp, at, retained[tp], "next offset after the last batch applied")
                expected[tp] = retained[tp]  # said once: a batch failing after it is not news again

    def applied_to(batch: tuple[Any, ...]) -> None:
        for r in batch:
            expected[TopicPartition(r.topic, r.partition)] = r.offset + 1

    async def consume(msg: KafkaMessage) -> None:
        batch = msg.raw_message if isinstance(msg.raw_message, tuple) else (msg.raw_message,)
        with_progress(msg.consumer, acknowledged)
        acknowledged.clear()  # an earlier batch's, NACKed
        if hasattr(msg.consumer, "_coordinator"):  # not a test's fake
            await deleted_under_it(msg.consumer, batch)
        valid: list[tuple[Any, M]] = []
        refused: list[tuple[Any, Exception]] = []
        for raw in batch:
            try:
                record = model.model_validate(loads(raw.value or b""))
                if check is not None and (why := check(record)) is not None:
                    raise ValueError(why)
                valid.append((raw, record))
            except (ValidationError, ValueError, ArithmeticError) as exc:  # a data error: dead-lettered
                refused.append((raw, exc))
        try:
            reached = await checked(msg.consumer, batch)
            if apply_many is not None and len(valid) > 1:
                try:
                    applied, stale = len(valid), _stale(await apply_many([given(raw, record) for raw, record in valid]))
                except (ValidationError, ValueError, PermanentError):
                    # find the record at fault, apply the others
                    applied, stale = await apply_each(valid, refused)
            else:
                applied, stale = await apply_each(valid, refused)
            await record_progress(reached)
        except DatabaseWentBack as exc:
            service.went_back(exc)  # stops the service, said once at CRITICAL
            await asyncio.sleep(1.0)  # read again meanwhile, it would find the same
            # Not acknowledged (read again), without an ERROR and a traceback from FastStream each
            # time while the service stops, nor a count of a failing feed (YidiFeedFailing).
            raise NackMessage() from exc
        except Exception as exc:
            # Feeds upsert (ON CONFLICT), so instances never race on a key here: a RaceLost is a bug.
            if isinstance(exc, TransientError) and not isinstance(exc, RaceLost):
                await asyncio.sleep(1.0)  # then NACK: the batch is read again
                raise
            # A bug: keep the records (NACK) but do not spin on them; the log says what broke.
            log.exception("%s: unexpected failure applying a batch of %d", feed_name, len(valid))
            await asyncio.sleep(5.0)
            raise
        await dead_letter(sorted(refused, key=lambda r: (r[0].partition, r[0].offset)))
        applied_to(batch)
        metrics.REFDATA_RECORDS.labels(feed_name, "applied").inc(applied - stale)
        if stale:
            metrics.REFDATA_RECORDS.labels(feed_name, "stale").inc(stale)
            log.info("%s: %d record(s) older than the one held were ignored", feed_name, stale)

    service.feed_groups.add(group)
    metrics.FEED_RECORDS_DELETED.labels(feed_name)  # at 0 from the start: a later one is news
    subscriber = service.broker.subscriber(
        full_topic,
        group_id=group,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        auto_offset_reset="earliest",
        # Some feeds are written in transactions (clearing.prepayment-status): never apply an aborted one.
        isolation_level="read_committed",
        no_reply=True,
        batch=True,
        parser=readable_headers,
        decoder=bodies_as_they_are,
        max_records=max_records,
        listener=_DeletedUnread(feed_name, lambda: subscriber.consumer),
    )
    in_hand = [0]  # the batch the handler holds: aiokafka's position is already past it

    async def consume_counted(msg: KafkaMessage) -> None:
        in_hand[0] = len(msg.raw_message) if isinstance(msg.raw_message, tuple) else 1
        try:
            with statements_for(feed_name):
                await consume(msg)
        finally:
            in_hand[0] = 0

    subscriber(consume_counted)
    service.background.append(
        lambda: show_lag_every(feed_name, subscriber, service.settings.lag_sample_seconds, lambda: in_hand[0]))


class _DeletedUnread(ConsumerRebalanceListener):
    """As a feed is assigned partitions, say those whose committed offset is below the first record
    retained: the records between were deleted (the topic's ``retention.ms``) before the feed applied
    them, and the consumer goes on from the first one retained with one INFO line of aiokafka's.
    Their reference data is missing (a policy, a catalogue version, an outage window: pricing prices
    with the version before it). Said at ERROR and timestamped for ``YidiFeedRecordsDeleted``; a
    check that cannot be made (the broker away) stops nothing."""

    def __init__(self, feed_name: str, consumer: Callable[[], Any]) -> None:
        self.feed_name = feed_name
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        try:
            await asyncio.wait_for(self._check(set(assigned)), DELETED_CHECK_SECONDS)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - see the class
            log.warning("%s: committed offsets of %s not checked against the first records retained (records "
                        "deleted unapplied would go unsaid): %r", self.feed_name, sorted(assigned), exc)

    async def _check(self, assigned: set[TopicPartition]) -> None:
        consumer = self.consumer()
        if consumer is None or not assigned:
            return
        committed = await consumer._coordinator.fetch_committed_offsets(assigned)
        first = await consumer.beginning_offsets(sorted(assigned))
        for tp, at, retained in deleted_unread(committed, first):
            say_deleted(self.feed_name, tp, at, retained, f"committed offset for group {consumer._group_id}")


def say_deleted(feed_name: str, tp: TopicPartition, at: int, retained: int, what: str) -> None:
    """Records ``at`` to ``retained`` of ``tp`` were deleted before the feed applied them: said at
    ERROR and timestamped (``YidiFeedRecordsDeleted``)."""
    metrics.FEED_RECORDS_DELETED.labels(feed_name).set_to_current_time()
    log.error("%s: %s[%d]'s %s is %d, below its first record retained, %d: the %d records between were deleted "
              "before the feed applied them; read from offset %d (runbook, \"A feed's records were deleted before it "
              "applied them\")", feed_name, tp.topic, tp.partition, what, at, retained, retained - at, retained)


# How long an assignment waits for ``_DeletedUnread``'s check.
DELETED_CHECK_SECONDS = 5.0


def with_progress(consumer: Any, acknowledged: dict[TopicPartition, int]) -> None:
    """Make ``consumer``'s acknowledgements commit ``acknowledged`` (once, before its first batch is
    acknowledged)."""
    if getattr(consumer, "yidi_with_progress", False) or not hasattr(consumer, "_subscription"):
        return  # a test's fake, which commits nothing
    consumer.commit = functools.partial(_commit_with_progress, consumer.commit, consumer, acknowledged)
    consumer.yidi_with_progress = True


async def _commit_with_progress(commit: Callable[..., Awaitable[None]], consumer: Any,
                                acknowledged: dict[TopicPartition, int], offsets: Any = None) -> None:
    """A feed's acknowledgement (FastStream commits every position its consumer has consumed): the
    end of the batch just applied on each of its partitions still assigned, each saying so in its
    metadata (``progress.applied``), so that the service's check at start finds a database
    restored behind it (``recover.behind``). The others' positions are where they were committed
    (committed again, they would lose their metadata). Without a batch recorded (a service without
    a database), as FastStream would."""
    if offsets is None and acknowledged:
        subscription = consumer._subscription.subscription
        assigned = subscription.assignment.tps if subscription is not None and subscription.assignment else set()
        offsets = {tp: OffsetAndMetadata(end, progress.applied(end)) for tp, end in acknowledged.items()
                   if tp in assigned}
        acknowledged.clear()
        if not offsets:
            return  # revoked meanwhile: the partitions' new owner reads the batch again
    await commit(offsets)


async def show_lag_every(feed_name: str, subscriber: Any, seconds: float, in_hand: Callable[[], int]) -> None:
    """``yidi_feed_lag_records`` every ``seconds``: the batch the handler holds (``in_hand``) and
    what the feed's partitions hold past this instance's position (offsets, to the last stable
    one; 0 while the subscriber has no consumer or this instance no partition). A sample missed (a
    rebalance, the broker away) leaves the last value."""
    gauge = metrics.FEED_LAG.labels(feed_name)
    while True:
        consumer = subscriber.consumer  # FastStream's: made at the subscriber's start, None once stopped
        try:
            gauge.set(in_hand() + (await consumer_lag(consumer) if consumer is not None else 0))
        except Exception as exc:  # noqa: BLE001 - a cancellation is a BaseException and passes
            log.debug("%s: lag not sampled: %r", feed_name, exc)
        await asyncio.sleep(seconds)
