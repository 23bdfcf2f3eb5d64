"""A feed's dead letters on the real Kafka, through the real FastStream subscriber of ``feed()``:
a batch read again after a failure does not dead-letter its bad records again."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import REGISTRY
from pydantic import BaseModel

from yidi.platform.errors import PermanentError, TransientError
from yidi.platform.feeds import feed
from yidi.platform.service import Service
from yidi.platform.topics import dlq

from tests.integration.kafka_io import create_topics, read_topic
from tests.integration.waiting import until

pytestmark = pytest.mark.integration


class Record(BaseModel):
    n: int


def _refused(feed_name: str) -> float:
    return REGISTRY.get_sample_value("yidi_refdata_records_total", {"feed": feed_name, "outcome": "refused"}) or 0.0


async def _fed(service: Service, topic: str, applied: list[int], *, refused: int) -> None:
    """Run ``topic``'s feed until it has applied the records ``applied`` (their ``n``, in order) and
    refused ``refused`` more."""
    got: list[int] = []

    async def apply(record: Record) -> None:
        got.append(record.n)

    feed(service, topic, Record, apply)
    refused_before = _refused(topic)
    await service.broker.start()
    try:
        await until(lambda: got == applied and _refused(topic) == refused_before + refused, timeout=30)
    finally:
        await service.broker.stop()


async def _one_batch(settings, topic: str, *values: bytes) -> str:
    """``values`` on a new one-partition topic (and its DLQ), all sent before a subscriber starts:
    its first fetch takes them as one batch. The topic's full name."""
    full = settings.topic(topic)
    await create_topics(settings.kafka_bootstrap, full, dlq(full))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(full, value, key=b"k")
    finally:
        await producer.stop()
    return full


async def test_a_batch_read_again_after_a_failure_dead_letters_its_bad_records_once(settings):
    """One batch: a record ``apply`` refuses, one that does not validate, and good ones; the first
    attempt to apply fails as the database would (``TransientError``), so the batch is NACKed and
    read again. Each bad record is dead-lettered once, after the batch applied, in offset order
    (the refusal by ``apply`` comes first, though found after the validation's); before, each
    attempt published them."""
    topic = f"dlfeed{uuid.uuid4().hex[:6]}"
    service = Service("dltest", settings, migrations=None)
    full = await _one_batch(settings, topic, b'{"n": 2}', b'{"n": "not a number"}', b'{"n": 1}', b'{"n": 3}')
    attempts, applied = [0], []

    async def apply(record: Record) -> None:
        attempts[0] += 1
        if attempts[0] == 1:
            raise TransientError("the database is away")
        if record.n == 2:
            raise PermanentError("two is refused")
        applied.append(record.n)

    feed(service, topic, Record, apply)
    refused_before = _refused(topic)
    await service.broker.start()
    try:
        await until(lambda: applied == [1, 3], timeout=30)
        await until(lambda: _refused(topic) == refused_before + 2, timeout=10)
    finally:
        await service.broker.stop()
    assert attempts[0] >= 4, "the batch was not read again after the failure"

    dead = [(r.value, dict(r.headers)) for r in await read_topic(settings.kafka_bootstrap, dlq(full))]
    assert [(value, headers["yidi-dlq-source"]) for value, headers in dead] == [
        (b'{"n": 2}', f"{full}/0/0".encode()),
        (b'{"n": "not a number"}', f"{full}/0/1".encode()),
    ]
    assert b"two is refused" in dead[0][1]["yidi-dlq-reason"]


async def test_a_dead_letter_the_broker_refuses_reads_the_batch_again_and_counts_each_once(settings):
    """``apply_many`` refuses the batch for one record, so each is applied alone and that one is
    refused; publishing the second dead letter then fails once (the DLQ not writable): the batch is
    read again after a pause and applied again, and its dead letters go out again, counted once
    (the first is on the DLQ twice: its ``yidi-dlq-source`` tells them apart; before, it counted
    three)."""
    topic = f"dlpub{uuid.uuid4().hex[:6]}"
    service = Service("dlpub", settings, migrations=None)
    full = await _one_batch(settings, topic, b'{"n": 1}', b'{"n": 2}', b"not json", b'{"n": 3}')
    many_calls, applied = [0], []

    async def apply(record: Record) -> None:
        if record.n == 2:
            raise PermanentError("two is refused")
        applied.append(record.n)

    async def apply_many(records: list[Record]) -> None:
        many_calls[0] += 1
        if any(r.n == 2 for r in records):
            raise PermanentError("the batch holds a two")
        applied.extend(r.n for r in records)

    feed(service, topic, Record, apply, apply_many=apply_many)
    publish, failed = service.broker.publish, []

    async def refused_once(*args, **kwargs):
        failed.append(args)
        if len(failed) == 2:
            raise KafkaError("topic authorization failed")  # what the broker answers a DLQ not writable
        return await publish(*args, **kwargs)

    service.broker.publish = refused_once
    refused_before = _refused(topic)
    await service.broker.start()
    try:
        await until(lambda: many_calls[0] == 2 and applied == [1, 3, 1, 3] and len(failed) == 4, timeout=30)
    finally:
        await service.broker.stop()
    assert _refused(topic) == refused_before + 2
    dead = [(r.value, dict(r.headers)) for r in await read_topic(settings.kafka_bootstrap, dlq(full))]
    assert [(value, headers["yidi-dlq-source"]) for value, headers in dead] == [
        (b'{"n": 2}', f"{full}/0/1".encode()),
        (b'{"n": 2}', f"{full}/0/1".encode()),
        (b"not json", f"{full}/0/2".encode()),
    ]


async def test_records_with_null_or_undecodable_header_values_and_a_megabyte_key_are_read(settings):
    """FastStream's parser decodes header values as UTF-8: a null value or a GBK one raised, and the
    batch was left neither applied nor read again. A record refused with a key of megabytes (gzip
    carries it in kilobytes) made a dead letter too large for Kafka, and the feed read its batch
    again for ever. Both on the real broker (a review, session 34)."""
    topic = f"dlhdr{uuid.uuid4().hex[:6]}"
    service = Service("dlhdr", settings, migrations=None)
    full = settings.topic(topic)
    await create_topics(settings.kafka_bootstrap, full, dlq(full))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, compression_type="gzip",
                                max_request_size=8 << 20)
    await producer.start()
    try:
        await producer.send_and_wait(full, b'{"n": 1}', key=b"k", headers=[("trace", None)])
        await producer.send_and_wait(full, b'{"n": 2}', key=b"k", headers=[("opter", "张三".encode("gbk"))])
        await producer.send_and_wait(full, b'{"n": "x"}', key=b"k" * 2_000_000)
        await producer.send_and_wait(full, b'{"n": 3}', key=b"k")
    finally:
        await producer.stop()
    await _fed(service, topic, [1, 2, 3], refused=1)
    (dead,) = await read_topic(settings.kafka_bootstrap, dlq(full))
    assert dead.value == b'{"n": "x"}' and dead.key == b"k" * 1024
    assert dict(dead.headers)["yidi-dlq-key-truncated"] == b"2000000"


async def test_a_record_whose_content_type_says_json_and_whose_body_is_not_is_dead_lettered(settings):
    """FastStream decodes a body itself, before the feed's code, when its ``content-type`` header says
    JSON or text: a GBK body, a byte-order mark or a null value raised there, and the batch was read
    again at once, for ever, while every later record of the partition waited (a review, session 35)."""
    topic = f"dlctype{uuid.uuid4().hex[:6]}"
    service = Service("dlctype", settings, migrations=None)
    full = settings.topic(topic)
    await create_topics(settings.kafka_bootstrap, full, dlq(full))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    json_type = [("content-type", b"application/json; charset=GBK")]
    try:
        await producer.send_and_wait(full, '{"n": 1, "name": "张三"}'.encode("gbk"), key=b"k", headers=json_type)
        await producer.send_and_wait(full, b'\xef\xbb\xbf{"n": 2}', key=b"k", headers=json_type)
        await producer.send_and_wait(full, None, key=b"k", headers=json_type)
        await producer.send_and_wait(full, "张三".encode("gbk"), key=b"k", headers=[("content-type", b"text/plain")])
        await producer.send_and_wait(full, b'{"n": 3}', key=b"k", headers=json_type)
    finally:
        await producer.stop()
    await _fed(service, topic, [3], refused=4)
    dead = await read_topic(settings.kafka_bootstrap, dlq(full))
    assert [dict(r.headers)["yidi-dlq-source"] for r in dead] == [f"{full}/0/{n}".encode() for n in range(4)]
    assert all(dict(r.headers)["yidi-dlq-reason"] for r in dead)


async def test_a_refused_person_records_values_are_not_in_the_log_nor_the_reason(settings, caplog):
    """pydantic's text of a validation error quotes the values beside each field: a person record
    refused for one field wrote the person's name and identity card number into the service's log,
    and into the dead letter's reason. The reason now names the fields and what is wrong with them;
    the record itself is in the dead letter, as a dead letter's purpose is."""
    import logging

    import orjson

    from yidi.contracts.refdata import PersonRecord

    topic = f"dlpii{uuid.uuid4().hex[:6]}"
    service = Service("dlpii", settings, migrations=None)
    person = {"psn_no": "P1", "psn_name": "张三丰", "certno": 110101199003077731, "insuplc_admdvs": "110000",
              "insutype": "310"}  # the number not a string, and no psn_type
    full = await _one_batch(settings, topic, orjson.dumps(person))
    async def apply(record: PersonRecord) -> None:
        raise AssertionError(f"{record.psn_no} applied")

    feed(service, topic, PersonRecord, apply)
    refused_before = _refused(topic)
    with caplog.at_level(logging.INFO):
        await service.broker.start()
        try:
            await until(lambda: _refused(topic) == refused_before + 1, timeout=30)
        finally:
            await service.broker.stop()
    (dead,) = await read_topic(settings.kafka_bootstrap, dlq(full))
    reason = dict(dead.headers)["yidi-dlq-reason"].decode()
    assert reason == "certno: Input should be a valid string; psn_type: Field required"
    assert orjson.loads(dead.value) == person
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusals and all(reason in m for m in refusals)
    assert not any("110101199003077731" in r.getMessage() or "张三丰" in r.getMessage() for r in caplog.records)
