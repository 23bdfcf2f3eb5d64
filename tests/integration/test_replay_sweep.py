"""The bench's last check against real Kafka: every request a namespace holds, every answer it holds."""

from __future__ import annotations

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from loadtest.replay import sweep
from yidi.contracts.envelope import DEFAULT_REPLY_TO
from yidi.platform.kafka import ensure_topics
from yidi.platform.topics import SETTLEMENT_REQUESTS

pytestmark = pytest.mark.integration


def _request(msgid: str) -> bytes:
    return orjson.dumps({"infno": "2207", "msgid": msgid, "input": {"data": {"psn_no": "P1"}}})


def _answer(msgid: str, setl_id: str = "S1") -> bytes:
    return orjson.dumps({"msgid": msgid, "infno": "2207", "infcode": 0, "err_code": None, "respond_time": setl_id,
                         "output": {"setlinfo": {"setl_id": setl_id, "fund_pay_sumamt": "1.00"}}})


async def _publish(bootstrap: str, namespace: str, requests: list[bytes], answers: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in requests:
            await producer.send(f"{namespace}{SETTLEMENT_REQUESTS}", value, key=b"P1")
        for value in answers:
            await producer.send(f"{namespace}{DEFAULT_REPLY_TO}", value, key=b"H1")
        await producer.flush()
    finally:
        await producer.stop()


async def test_the_sweep_counts_every_publish_and_every_answer_of_a_namespace(settings):
    s = settings.model_copy(update={"namespace": f"{settings.namespace}sweep."})
    await ensure_topics(s)
    # M1 sent twice and answered twice alike; M2 answered once too often (late); M3 never answered;
    # M4 answered twice, the second time another settlement; a request with no readable msgid owes
    # nothing; a malformed one whose msgid can be read does.
    await _publish(
        s.kafka_bootstrap, s.namespace,
        [_request("M1"), _request("M1"), _request("M2"), _request("M3"), _request("M4"), _request("M4"),
         b'{"infno": "2207", "input": ', b'{"msgid": "M5", "infno": "2207", "input": {'],
        [_answer("M1"), _answer("M1"), _answer("M2"), _answer("M2"), _answer("M4", "S4"), _answer("M4", "S9"),
         _answer("M5")],
    )
    check = await sweep(s.kafka_bootstrap, s.namespace)
    assert (check.sends, check.answers) == (7, 7)
    assert check.missing == {"M3": 1} and check.duplicated == {"M2": 1} and check.inconsistent == {"M4": 1}
    assert not check.ok

    clean = settings.model_copy(update={"namespace": f"{settings.namespace}sweep2."})
    await ensure_topics(clean)
    await _publish(s.kafka_bootstrap, clean.namespace, [_request("M1"), _request("M1")], [_answer("M1"), _answer("M1")])
    assert (await sweep(s.kafka_bootstrap, clean.namespace)).ok
