"""The gateway client's bookkeeping of answers, against a fake producer and consumer (no Kafka)."""

import asyncio
import logging
import types

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaError

from yidi.client import gateway
from yidi.client.gateway import GatewayClient, GatewayTimeout, PublishTimeout


class FakeProducer:
    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.stopped = False

    async def send(self, topic, value, key=None, timestamp_ms=None):
        if self.error is not None:
            raise self.error
        self.sent.append((topic, value, key))
        acknowledged = asyncio.get_running_loop().create_future()
        acknowledged.set_result(None)
        return acknowledged

    async def stop(self) -> None:
        self.stopped = True


class FakeConsumer:
    """Hands out what is queued as getmany batches: an answer's bytes, or an exception to raise."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
        self.stopped = False

    async def getmany(self, timeout_ms=0):
        try:
            item = await asyncio.wait_for(self.queue.get(), timeout_ms / 1000)
        except TimeoutError:
            return {}
        if isinstance(item, BaseException):
            raise item
        return {"tp": [types.SimpleNamespace(value=item, timestamp=0)]}

    async def stop(self) -> None:
        self.stopped = True


def started(**kwargs) -> GatewayClient:
    """A client as start() leaves it, on fakes."""
    client = GatewayClient("fake:0", **kwargs)
    client._producer, client._consumer = FakeProducer(), FakeConsumer()
    client._reader = asyncio.create_task(client._read())
    return client


def settlement(msgid: str) -> dict:
    return {"msgid": msgid, "input": {"data": {"psn_no": "P1"}}}


async def test_an_on_answer_callback_that_raises_is_logged_and_its_answer_still_matched(caplog):
    # A callback that raised ended the reader: its answer's request and every later one timed out,
    # "are the services running?" (a review, session 36).
    def on_answer(answer, _timestamp):
        if answer["msgid"] == "M1":
            raise KeyError("the gateway's own bookkeeping")

    client = started(on_answer=on_answer)
    first, second = await client.send(settlement("M1")), await client.send(settlement("M2"))
    client._consumer.queue.put_nowait(orjson.dumps({"msgid": "M1", "infcode": 0}))
    client._consumer.queue.put_nowait(orjson.dumps({"msgid": "M2", "infcode": 0}))
    with caplog.at_level(logging.ERROR, logger="yidi.client.gateway"):
        answers = await asyncio.wait_for(asyncio.gather(first, second), 2.0)
    assert [a["msgid"] for a in answers] == ["M1", "M2"]
    assert any("on_answer failed" in r.getMessage() and "M1" in r.getMessage() for r in caplog.records)
    await client.stop()


async def test_a_reader_that_failed_fails_the_calls_rather_than_time_them_out():
    # A Kafka error ended the reader silently: waiting calls and every later one timed out with
    # "are the services running?" (a review, session 36).
    client = started()
    waiting = await client.send(settlement("M1"))
    client._consumer.queue.put_nowait(KafkaConnectionError("broker gone"))
    with pytest.raises(Exception, match="broker gone") as failed:
        await asyncio.wait_for(waiting, 2.0)
    assert isinstance(failed.value, gateway.ReaderStopped)
    assert isinstance(failed.value.__cause__, KafkaConnectionError)
    with pytest.raises(gateway.ReaderStopped, match="broker gone"):
        await client.call(settlement("M2"), timeout=2.0)
    assert [orjson.loads(value)["msgid"] for _, value, _ in client._producer.sent] == ["M1"]  # M2 not published
    await client.stop()


async def test_stop_stops_the_consumer_and_the_producer_after_the_reader_failed():
    # stop() raised the reader's exception again and left the consumer and the producer running
    # (a review, session 36).
    client = started()
    client._consumer.queue.put_nowait(KafkaError("fetch failed"))
    await asyncio.sleep(0.05)
    await client.stop()
    assert client._consumer.stopped and client._producer.stopped


async def test_calls_timed_out_or_failed_leave_nothing_waiting():
    # A timed-out call left its cancelled future in _waiting for ever, a failed publish too, and a
    # publish timeout an empty list under its msgid (a review, session 36).
    client = started(send_timeout=0.05)
    with pytest.raises(GatewayTimeout):
        await client.call(settlement("T1"), timeout=0.05)

    client._producer.error = KafkaError("message too large")
    with pytest.raises(KafkaError):
        await client.call(settlement("T2"), timeout=1.0)

    async def never_acknowledged(topic, value, key=None, timestamp_ms=None):
        return asyncio.get_running_loop().create_future()
    client._producer.send = never_acknowledged
    with pytest.raises(PublishTimeout):
        await client.send(settlement("T3"))
    assert dict(client._waiting) == {}

    # A call given up on leaves the others waiting on its msgid as they were.
    client._producer = FakeProducer()
    kept = await client.send(settlement("M1"))
    with pytest.raises(GatewayTimeout):
        await client.call(settlement("M1"), timeout=0.05)
    assert client._waiting["M1"] == [kept]
    client._consumer.queue.put_nowait(orjson.dumps({"msgid": "M1", "infcode": 0}))
    assert (await asyncio.wait_for(kept, 2.0))["msgid"] == "M1"
    assert dict(client._waiting) == {}
    await client.stop()


async def test_a_settlement_request_names_the_clients_reply_topic():
    # The client read its reply topic but sent the request as given: without reply_to it was
    # answered on settlement.results, and the call timed out (a review, session 36).
    client = GatewayClient("fake:0", reply_to="gw7.results", namespace="ns.")
    client._producer = FakeProducer()
    request = settlement("M1")
    await client.send(request)
    ((topic, value, _key),) = client._producer.sent
    assert (topic, orjson.loads(value)["reply_to"]) == ("ns.settlement.requests", "gw7.results")
    assert "reply_to" not in request  # the caller's dict is left as it was

    # One naming a topic is sent as it is: a reply_to the platform refuses (the e2e tests send
    # forbidden ones) is answered on the shared topic, settlement.results.
    await client.send(settlement("M2") | {"reply_to": "."})
    assert orjson.loads(client._producer.sent[1][1])["reply_to"] == "."

    # Correlated by reqid, a request's reply_to is its sender's to choose (the e2e tests send forbidden ones).
    filings = GatewayClient("fake:0", request_topic="filing.requests", reply_to="filing.results", correlate_by="reqid")
    filings._producer = FakeProducer()
    await filings.send({"reqid": "F1", "psn_no": "P1", "reply_to": "settlement.priced"})
    await filings.send({"reqid": "F2", "psn_no": "P1"})
    assert [orjson.loads(v).get("reply_to") for _, v, _ in filings._producer.sent] == ["settlement.priced", None]



async def test_an_answer_that_cannot_be_read_fails_its_request_rather_than_time_it_out(caplog):
    # An answer that was not JSON, or JSON but not an object, was dropped without a word: its
    # request waited out the timeout and the CLI asked whether the services were running (left in
    # session 36). The id is read from the bytes; the request fails with them, the reader goes on.
    client = started()
    first, second, third = [await client.send(settlement(m)) for m in ("M1", "M2", "M3")]
    client._consumer.queue.put_nowait(b'{"msgid": "M1", "infcode": 0, "output": {"setl')
    client._consumer.queue.put_nowait(orjson.dumps([{"msgid": "M2", "infcode": 0}]))
    client._consumer.queue.put_nowait(b"\xff\xfe not even text")  # no id: only said
    client._consumer.queue.put_nowait(None)  # a tombstone: only said (it raised TypeError and ended the reader)
    client._consumer.queue.put_nowait(orjson.dumps({"msgid": "M3", "infcode": 0}))
    with caplog.at_level(logging.WARNING, logger="yidi.client.gateway"):
        with pytest.raises(gateway.MalformedAnswer, match="the answer to msgid M1 .* is not a JSON object") as bad:
            await asyncio.wait_for(first, 2.0)
        assert bad.value.raw.startswith(b'{"msgid": "M1"')
        with pytest.raises(gateway.MalformedAnswer, match="msgid M2"):
            await asyncio.wait_for(second, 2.0)
        assert (await asyncio.wait_for(third, 2.0))["msgid"] == "M3"
    said = [r.getMessage() for r in caplog.records]
    assert any("not a JSON object" in m and "no msgid found" in m for m in said)
    assert client.answer_counts["M1"] == 1 and client.answer_counts["M2"] == 1
    await client.stop()


async def test_a_request_naming_another_reply_to_times_out_saying_where_its_answer_went():
    # CONTRACT.md's WE1 names settlement.results; a client reading its own topic waited there and
    # said "are the services running?" (a review, session 46). Empty, like absent, names the client's.
    client = started(reply_to="gw.H1.results")
    with pytest.raises(GatewayTimeout, match="names reply_to 'settlement.results', which this client does not read"):
        await client.call(settlement("M1") | {"reply_to": "settlement.results"}, timeout=0.05)
    with pytest.raises(GatewayTimeout, match="are the services running"):
        await client.call(settlement("M2") | {"reply_to": ""}, timeout=0.05)
    assert [orjson.loads(value)["reply_to"] for _, value, _ in client._producer.sent] == [
        "settlement.results", "gw.H1.results"]
    await client.stop()
