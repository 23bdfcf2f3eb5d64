"""A gateway's reply_to that the broker refuses does not hold a stage: on a real broker that creates
no topics and authorizes (as production brokers are set), the answers to a reply topic that does not
exist, that the platform may not write, or may not even see go to the moved answers' topic of their
kind (not the shared answer topic other gateways read) with the reason in a header, each once; the
other answers of the same batch go where they were asked; and once the refusal is forgotten
(REMEMBERED_SECONDS) a topic created meanwhile gets its answers."""

from __future__ import annotations

import asyncio
import os
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from yidi.platform import metrics, reply_topics
from yidi.platform.kafka import Incoming, Outgoing, TransactionalStage, ensure_topics
from yidi.platform.replies import reply
from yidi.platform.topics import (
    CLEARING_REQUESTS,
    CLEARING_RESULTS,
    FILING_REQUESTS,
    FILING_RESULTS,
    SETTLEMENT_REQUESTS,
    SETTLEMENT_RESULTS,
    moved_answers,
)

from tests.e2e.system import System
from tests.integration import strict_broker
from tests.integration.kafka_io import create_topics, read_topic
from tests.integration.protocols import PROTOCOLS
from tests.integration.waiting import until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def strict(tmp_path_factory) -> str:
    why = strict_broker.available()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    with strict_broker.strict_broker(tmp_path_factory.mktemp("strict-broker")) as bootstrap:
        yield bootstrap


async def _read(s, topic: str, count: int, seconds: float = 15.0) -> list:
    return await read_topic(s.kafka_bootstrap, s.topic(topic), count=count, seconds=seconds)


def _refused(stage: str, reason: str) -> float:
    return metrics.REPLY_TOPIC_REFUSED.labels(stage, reason)._value.get()


@PROTOCOLS
async def test_answers_to_a_reply_topic_the_broker_refuses_go_to_the_moved_answers_topic(settings, strict, transactions,
                                                                                    during, monkeypatch):
    s = settings.model_copy(update={"kafka_bootstrap": strict, "batch_linger_ms": 300.0,
                                    "kafka_transactions": transactions, "kafka_offsets_during_handler": during,
                                    "namespace": settings.namespace + f"rt{uuid.uuid4().hex[:6]}."})
    await ensure_topics(s)
    await create_topics(strict, *[s.topic(t) for t in ("gw.ok", "gw.denied", "gw.hidden", "gw.later-denied",
                                                "gw.new-denied", "side.one", "side.two")], shown=True)
    # gw.denied (and the two others named so): the platform may see it (Describe) but not write it;
    # gw.hidden: not even see it.
    for denied in ("gw.denied", "gw.later-denied", "gw.new-denied"):
        await strict_broker.acl(strict, s.topic(denied), strict_broker.OPERATION_DESCRIBE, strict_broker.ALLOW)
    await strict_broker.acl(strict, s.topic("gw.hidden"), strict_broker.OPERATION_ALL, strict_broker.DENY)

    async def answer_each(records: list[Incoming]) -> list[Outgoing]:
        """An answer to each request; a request "to" side.* is an output of the platform's own, to a
        topic the stage's producer has not written before (its send waits for the metadata)."""
        out = []
        for r in records:
            request = orjson.loads(r.value)
            if request["reply_to"].startswith("side."):
                out.append(Outgoing(s.topic(request["reply_to"]), r.value, key=b"side"))
                continue
            out.append(reply(s, request["reply_to"], {"msgid": request["msgid"], "infno": "2207", "err_code": None},
                             facility="H1", request_ts_ms=r.timestamp_ms))
        return out

    # A refusal is remembered for 4 s here (60 s in service), so the test sees it forgotten.
    monkeypatch.setattr(reply_topics, "REMEMBERED_SECONDS", 4.0)
    name = f"reply-topics-{transactions}{'-during' if during else ''}"  # metrics per stage name: one per case
    stage = TransactionalStage(name, "test", s, [SETTLEMENT_REQUESTS], name, answer_each)
    producer = AIOKafkaProducer(bootstrap_servers=strict, acks="all", linger_ms=50)
    await producer.start()

    async def ask(asked: dict[str, str]) -> None:
        """One request per msgid, one key: one partition, read by the stage in one batch."""
        sent = [await producer.send(s.topic(SETTLEMENT_REQUESTS), orjson.dumps({"msgid": m, "reply_to": t}),
                                    key=b"one-person") for m, t in asked.items()]
        await asyncio.gather(*sent)

    def msgids(records: list) -> list[str]:
        return sorted(orjson.loads(r.value)["msgid"] for r in records)

    before = {reason: _refused(name, reason) for reason in ("unknown", "unauthorized")}
    try:
        await ask({"M1": "gw.ok", "M2": "gw.missing", "M3": "gw.denied", "M4": "gw.hidden", "M5": "gw.ok"})
        await stage.start()
        assert stage.transaction_version == (1 if transactions == "v1" else 2)
        # Without the look-up, the missing topic alone held the batch for the producer's request
        # timeout (40 s) on every try: longer than the read waits.
        shared = await _read(s, moved_answers(SETTLEMENT_RESULTS), 3)
        asked_ok = await _read(s, "gw.ok", 2)
        assert msgids(asked_ok) == ["M1", "M5"]
        assert not any(k == reply_topics.HEADER for r in asked_ok for k, _ in r.headers)
        why = {orjson.loads(r.value)["msgid"]: dict(r.headers)[reply_topics.HEADER].decode() for r in shared}
        assert sorted(why) == ["M2", "M3", "M4"]
        assert why["M2"] == f"{s.topic('gw.missing')}: the topic does not exist, and the broker does not create topics"
        assert why["M3"] == f"{s.topic('gw.denied')}: the broker does not let the platform write to it"
        assert why["M4"] == f"{s.topic('gw.hidden')}: the broker does not let the platform write to it"
        assert all(r.key == b"H1" for r in shared)
        assert stage.failure is None and not stage.task.done()
        assert _refused(name, "unknown") - before["unknown"] == 1
        assert _refused(name, "unauthorized") - before["unauthorized"] == 2

        # gw.ok's partition joins the transaction first (the side output's send waits for metadata
        # meanwhile), the refused one after it. The abort must end that transaction at the
        # coordinator, or the retry joins it and commits the first try's M7 and S1 as well (aiokafka
        # under v1 forgot the partitions it had added, so its abort sent no EndTxn).
        await ask({"M7": "gw.ok", "S1": "side.one", "M8": "gw.later-denied"})
        assert msgids(await _read(s, moved_answers(SETTLEMENT_RESULTS), 4)) == ["M2", "M3", "M4", "M8"]
        assert msgids(await _read(s, "gw.ok", 3)) == ["M1", "M5", "M7"]
        assert msgids(await _read(s, "side.one", 1)) == ["S1"]
        # The refusal arrives while a later output still waits for its topic's metadata: that send
        # is told only "not in transaction" (IllegalOperation), which stopped the stage under v1.
        await ask({"M9": "gw.new-denied", "S2": "side.two", "M10": "gw.ok"})
        assert msgids(await _read(s, moved_answers(SETTLEMENT_RESULTS), 5)) == ["M2", "M3", "M4", "M8", "M9"]
        assert msgids(await _read(s, "gw.ok", 4)) == ["M1", "M10", "M5", "M7"]
        assert msgids(await _read(s, "side.two", 1)) == ["S2"]
        assert stage.failure is None and not stage.task.done()
        # Each refused write cost one retry of its batch, and nothing else did (an abort that left
        # records behind showed up as OutOfOrderSequenceNumber on the next try, TransactionAbortable).
        retried = {sample.labels["reason"]: sample.value for sample in metrics.STAGE_RETRIES.collect()[0].samples
                   if sample.name.endswith("_total") and sample.labels["stage"] == name}
        assert retried == {"ReplyTopicRefused": 3.0}

        # The refusal is remembered for a while, then the broker is asked again: a topic created
        # meanwhile gets its answers.
        await create_topics(strict, s.topic("gw.missing"), shown=True)
        await until(lambda: stage._reply_topics.refusal(s.topic("gw.missing")) is None, timeout=10)
        await ask({"M6": "gw.missing"})
        assert msgids(await _read(s, "gw.missing", 1)) == ["M6"]
        assert len(await _read(s, moved_answers(SETTLEMENT_RESULTS), 5)) == 5  # nothing more moved
    finally:
        await producer.stop()
        await stage.stop()
        await asyncio.sleep(0)


async def test_filing_and_clearing_answer_on_their_moved_answers_topics_when_the_reply_to_is_refused(settings, strict,
                                                                                               tmp_path):
    """The services as processes on the strict broker: a filing accepted (answered by eligibility once
    applied), a filing refused by filing itself, a filing request that does not validate (refused by
    its reqid), and a clearing query, each asking for its answer on a topic nobody created, are
    answered on platform.moved.filing.results and platform.moved.clearing.results."""
    s = settings.model_copy(update={"kafka_bootstrap": strict,
                                    "namespace": settings.namespace + f"rs{uuid.uuid4().hex[:6]}."})
    await ensure_topics(s)
    system = System(s, tmp_path)
    for service in ("filing", "eligibility", "clearing"):
        system.start(service)
    producer = AIOKafkaProducer(bootstrap_servers=strict, acks="all")
    await producer.start()
    try:
        await system.wait_ready("filing", "eligibility", "clearing")
        tag = uuid.uuid4().hex[:8]
        sent = {
            FILING_REQUESTS: [{"action": "add", "reqid": f"F0-{tag}", "psn_no": f"P{tag}", "insutype": "310",
                               "insuplc_admdvs": "110000", "filed_admdvs": "310000", "category": "retiree_resettled",
                               "begndate": "2020-01-01", "decl_source": "import", "reply_to": "gw.nobody"},
                              {"action": "history", "reqid": f"F1-{tag}", "filing_id": "F-nobody", "psn_no": "P1",
                               "reply_to": "gw.nobody"},
                              {"action": "history", "reqid": f"F2-{tag}", "reply_to": "gw.nobody"}],  # no psn_no
            CLEARING_REQUESTS: [{"type": "query_prepayment", "reqid": f"C1-{tag}", "insuplc_admdvs": "110000",
                                 "mdtrtarea_admvs": "310000", "reply_to": "gw.nobody"}],
        }
        for topic, requests in sent.items():
            for request in requests:
                await producer.send_and_wait(s.topic(topic), orjson.dumps(request), key=request["reqid"].encode())
        filed = await _read(s, moved_answers(FILING_RESULTS), 3, seconds=30)
        cleared = await _read(s, moved_answers(CLEARING_RESULTS), 1, seconds=30)
        expected = f"{s.topic('gw.nobody')}: the topic does not exist, and the broker does not create topics".encode()
        assert sorted(orjson.loads(r.value)["reqid"] for r in filed) == [f"F0-{tag}", f"F1-{tag}", f"F2-{tag}"]
        assert [orjson.loads(r.value)["accepted"] for r in filed if orjson.loads(r.value)["reqid"] == f"F0-{tag}"] == [True]
        assert [orjson.loads(r.value)["reqid"] for r in cleared] == [f"C1-{tag}"]
        assert all(dict(r.headers)[reply_topics.HEADER] == expected for r in filed + cleared)
        assert system.metric("filing", "yidi_reply_topic_refused_total", stage="filing", reason="unknown") == 2
        assert system.metric("eligibility", "yidi_reply_topic_refused_total", stage="eligibility-filings",
                             reason="unknown") == 1
        assert system.metric("clearing", "yidi_reply_topic_refused_total", stage="clearing-admin",
                             reason="unknown") == 1
    finally:
        await producer.stop()
        system.stop_all()
