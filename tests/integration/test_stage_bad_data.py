"""A value the database refuses does not stop a stage: on the real Postgres and Kafka, the stage
halves the batch until the record at fault is alone, refuses it (dead letter, and an answer when
its msgid can be recovered), and handles its batch-mates once each, in order."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from yidi.platform import metrics
from yidi.platform.db import Repository, create_pool
from yidi.platform.kafka import Incoming, Outgoing, TransactionalStage, ensure_topics
from yidi.platform.topics import SETTLEMENT_ELIGIBLE, SETTLEMENT_REQUESTS, dlq, moved_answers

from tests.integration.kafka_io import create_topics, read_topic
from tests.integration.protocols import PROTOCOLS
from tests.integration.waiting import until

pytestmark = pytest.mark.integration


async def _read(settings, topic: str, count: int) -> list:
    return await read_topic(settings.kafka_bootstrap, settings.topic(topic), count=count, seconds=10)


async def test_a_value_the_database_refuses_is_refused_alone_and_its_batch_mates_go_on(settings):
    s = settings.model_copy(update={"namespace": settings.namespace + f"bad{uuid.uuid4().hex[:6]}.",
                                    "batch_linger_ms": 500.0,
                                    "kafka_transaction_timeout_ms": 300_000})  # the setting reaches the producer
    await ensure_topics(s)
    pool = await create_pool(s.database_url, size=2)
    table = f"bad_data_{uuid.uuid4().hex[:8]}"
    await pool.execute(f"CREATE TABLE {table} (n int PRIMARY KEY, v numeric(4, 2) NOT NULL)")
    repo = Repository(pool)
    handled: list[list[int]] = []

    async def record_all(records: list[Incoming]) -> list[Outgoing]:
        rows = [orjson.loads(r.value) for r in records]
        handled.append([row["n"] for row in rows])
        async with repo.transaction() as conn:
            await conn.executemany(f"INSERT INTO {table} (n, v) VALUES ($1, $2::numeric)",
                                   [(row["n"], row["v"]) for row in rows])
        return [Outgoing(s.topic(SETTLEMENT_ELIGIBLE), r.value, key=r.key) for r in records]

    # n = 3 overflows numeric(4, 2): NumericValueOutOfRange, on every retry of any batch holding it.
    values = [{"n": n, "v": "12345.00" if n == 3 else f"{n}.00", "msgid": f"M{n}"} for n in range(1, 7)]
    stage = TransactionalStage("bad-data-test", "test", s, [SETTLEMENT_REQUESTS], "bad-data-test", record_all)
    retries = metrics.STAGE_RETRIES.labels("bad-data-test", "BadData")
    before = retries._value.get()
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        # One partition (one key), sent before the stage starts: they arrive as one batch.
        for v in values:
            await producer.send_and_wait(s.topic(SETTLEMENT_REQUESTS), orjson.dumps(v), key=b"one-person")
        await stage.start()
        assert stage._producer._txn_manager.transaction_timeout_ms == s.kafka_transaction_timeout_ms  # type: ignore[union-attr]
        await until(lambda: sum(len(b) for b in handled if 3 not in b) == 5)
        assert handled[0] == [1, 2, 3, 4, 5, 6]  # the whole batch first, then halves: [1, 2, 3] ...
        passed = await _read(s, SETTLEMENT_ELIGIBLE, 5)
        assert [orjson.loads(r.value)["n"] for r in passed] == [1, 2, 4, 5, 6]  # once each, in order
        dead = await _read(s, dlq(SETTLEMENT_REQUESTS), 1)
        assert [orjson.loads(r.value)["n"] for r in dead] == [3]
        assert b"NumericValueOutOfRange" in dict(dead[0].headers)["yidi-dlq-reason"]
        answers = await _read(s, "settlement.results", 1)
        assert [(a["msgid"], a["err_code"]) for a in map(lambda r: orjson.loads(r.value), answers)] == [
            ("M3", "INTERNAL_ERROR")]
        assert sorted(await pool.fetchval(f"SELECT array_agg(n) FROM {table}")) == [1, 2, 4, 5, 6]
        assert stage.failure is None and not stage.task.done()
        assert retries._value.get() - before >= 2  # [1..6] and [1, 2, 3] at least, then [3] alone
    finally:
        await producer.stop()
        await stage.stop()
        await pool.execute(f"DROP TABLE {table}")
        await pool.close()


async def test_an_output_too_large_for_a_kafka_record_is_refused_alone(settings):
    s = settings.model_copy(update={"namespace": settings.namespace + f"big{uuid.uuid4().hex[:6]}.",
                                    "batch_linger_ms": 500.0})
    await ensure_topics(s)

    async def inflate_the_second(records: list[Incoming]) -> list[Outgoing]:
        # The 2nd record's output is 2 MiB: aiokafka refuses it at send (max_request_size 1 MiB).
        return [Outgoing(s.topic(SETTLEMENT_ELIGIBLE), r.value * (2 * 1024 * 1024 if r.value == b"2" else 1), key=r.key)
                for r in records]

    stage = TransactionalStage("big-output-test", "test", s, [SETTLEMENT_REQUESTS], "big-output-test", inflate_the_second)
    await _the_second_is_refused_alone(s, stage, b"larger than a Kafka record")


@asynccontextmanager
async def _four_requests_through(s, stage: TransactionalStage, key: bytes) -> AsyncIterator[None]:
    """Requests b"1" to b"4" of one ``key`` published, then ``stage`` started (they arrive as one
    batch); the stage stopped after."""
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for v in (b"1", b"2", b"3", b"4"):
            await producer.send_and_wait(s.topic(SETTLEMENT_REQUESTS), v, key=key)
        await stage.start()
        yield
    finally:
        await producer.stop()
        await stage.stop()


async def _the_second_is_refused_alone(s, stage: TransactionalStage, reason: bytes, version: int | None = None) -> None:
    """Four requests of one person through ``stage``, whose handler makes the second one's output one
    Kafka will not take: the other three pass on, the second goes to the dead letters with ``reason``,
    and the stage goes on (under transaction protocol ``version``, when given)."""
    async with _four_requests_through(s, stage, b"one-person"):
        if version is not None:
            assert stage.transaction_version == version
        passed = await _read(s, SETTLEMENT_ELIGIBLE, 3)
        assert [r.value for r in passed] == [b"1", b"3", b"4"]
        dead = await _read(s, dlq(SETTLEMENT_REQUESTS), 1)
        assert [r.value for r in dead] == [b"2"]
        assert reason in dict(dead[0].headers)["yidi-dlq-reason"]
        assert stage.failure is None and not stage.task.done()


@PROTOCOLS
async def test_an_output_the_broker_refuses_for_good_is_refused_alone(settings, transactions, during):
    """An output under the client's limit but over the topic's (max.message.bytes): the broker refuses
    its record batch. The transaction is aborted, not committed without it (yidi.platform.txnv2), and
    the stage halves the batch until the record is alone and refuses it."""
    s = settings.model_copy(update={"namespace": settings.namespace + f"refused{uuid.uuid4().hex[:6]}.",
                                    "batch_linger_ms": 500.0, "kafka_transactions": transactions,
                                    "kafka_offsets_during_handler": during})
    # The output topic is created with the limit (a limit altered later reaches the log a moment after).
    await create_topics(s.kafka_bootstrap, s.topic(SETTLEMENT_ELIGIBLE), partitions=6,
                        configs={"max.message.bytes": "20000"})
    await ensure_topics(s)

    handled: list[list[bytes]] = []

    async def inflate_the_second(records: list[Incoming]) -> list[Outgoing]:
        handled.append([r.value for r in records])
        return [Outgoing(s.topic(SETTLEMENT_ELIGIBLE), r.value * (100_000 if r.value == b"2" else 1), key=r.key)
                for r in records]

    stage = TransactionalStage("refused-output-test", "test", s, [SETTLEMENT_REQUESTS], "refused-output-test",
                               inflate_the_second)
    await _the_second_is_refused_alone(s, stage, b"refused an output for good", 1 if transactions == "v1" else 2)
    # Not an answer: refused once isolated, not handled again to move answers it does not have.
    assert handled.count([b"2"]) == 1, handled


@PROTOCOLS
async def test_an_answer_larger_than_its_reply_topic_takes_goes_to_the_moved_answers_topic_once(settings, transactions, during):
    """A gateway's reply topic whose max.message.bytes is below one answer: the broker refuses it
    after the handler committed its work (clearing: the ledger row). The record is not refused
    ("nothing was settled", while it was): its answer alone goes to the moved answers' topic, with the
    header saying why, and the stage goes on."""
    from yidi.platform.kafka import Answered
    from yidi.platform.reply_topics import HEADER

    s = settings.model_copy(update={"namespace": settings.namespace + f"toolarge{uuid.uuid4().hex[:6]}.",
                                    "batch_linger_ms": 500.0, "kafka_transactions": transactions,
                                    "kafka_offsets_during_handler": during})
    reply_to = s.topic("gw.small.replies")
    await create_topics(s.kafka_bootstrap, reply_to, configs={"max.message.bytes": "20000"})
    await ensure_topics(s)
    async def answer_each(records: list[Incoming]) -> list[Outgoing]:
        return [Outgoing(reply_to, orjson.dumps({"msgid": r.value.decode(), "pad": "x" * (100_000 if r.value == b"2" else 1)}),
                         key=r.key, fallback=s.topic(moved_answers("settlement.results")),
                         answered=Answered(infno="2207", err_code="ok", request_ts_ms=0))
                for r in records]

    moved = metrics.REPLY_TOPIC_REFUSED.labels("too-large-test", "too_large")
    before = moved._value.get()
    stage = TransactionalStage("too-large-test", "test", s, [SETTLEMENT_REQUESTS], "too-large-test", answer_each)
    async with _four_requests_through(s, stage, b"one-facility"):
        assert [orjson.loads(r.value)["msgid"] for r in await _read(s, "gw.small.replies", 3)] == ["1", "3", "4"]
        (shared,) = await _read(s, moved_answers("settlement.results"), 1)
        assert orjson.loads(shared.value)["msgid"] == "2"
        assert b"larger than the topic takes" in dict(shared.headers)[HEADER]
        assert await _read(s, dlq(SETTLEMENT_REQUESTS), 1) == []  # not refused
        assert moved._value.get() - before == 1
        assert stage.failure is None and not stage.task.done()


@PROTOCOLS
async def test_a_refusal_larger_than_its_reply_topic_takes_goes_to_the_moved_answers_topic(settings, transactions, during):
    """A request the stage must refuse (a value the database refuses), whose gateway's reply topic
    takes records smaller than the refusal's answer: the refusal's answer went to that topic, the
    broker refused it, and the stage stopped ("refusing a record failed") at every start, for every
    facility of the partition (a review, session 36). It goes to the moved answers' topic now, as the
    stage's own answers do, and the stage goes on."""
    from yidi.platform.errors import BadData
    from yidi.platform.reply_topics import HEADER

    s = settings.model_copy(update={"namespace": settings.namespace + f"refsmall{uuid.uuid4().hex[:6]}.",
                                    "batch_linger_ms": 500.0, "kafka_transactions": transactions,
                                    "kafka_offsets_during_handler": during})
    # Below the refusal's INTERNAL_ERROR answer (about 400 bytes), above an answer of one byte.
    await create_topics(s.kafka_bootstrap, s.topic("gw.tiny.replies"), configs={"max.message.bytes": "200"})
    await ensure_topics(s)

    async def refuse_the_second(records: list[Incoming]) -> list[Outgoing]:
        if any(orjson.loads(r.value)["msgid"] == "M2" for r in records):
            raise BadData("NumericValueOutOfRangeError: numeric field overflow")
        return [Outgoing(s.topic("gw.tiny.replies"), b"1", key=r.key, fallback=s.topic(moved_answers("settlement.results")))
                for r in records]

    stage = TransactionalStage("refusal-small-test", "test", s, [SETTLEMENT_REQUESTS], "refusal-small-test",
                               refuse_the_second)
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for n in (1, 2, 3):
            request = {"msgid": f"M{n}", "infno": "2207", "reply_to": "gw.tiny.replies", "fixmedins_code": "H1"}
            await producer.send_and_wait(s.topic(SETTLEMENT_REQUESTS), orjson.dumps(request), key=b"one-facility")
        await stage.start()
        assert [r.value for r in await _read(s, "gw.tiny.replies", 2)] == [b"1", b"1"]  # M1 and M3
        (shared,) = await _read(s, moved_answers("settlement.results"), 1)
        assert (orjson.loads(shared.value)["msgid"], orjson.loads(shared.value)["err_code"]) == ("M2", "INTERNAL_ERROR")
        assert b"larger than the topic takes" in dict(shared.headers)[HEADER]
        assert [orjson.loads(r.value)["msgid"] for r in await _read(s, dlq(SETTLEMENT_REQUESTS), 1)] == ["M2"]
        assert stage.failure is None and not stage.task.done()
    finally:
        await producer.stop()
        await stage.stop()
