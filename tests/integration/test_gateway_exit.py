"""``yidi-gateway``'s exit status tells a request nobody answered (3) from one refused (1): `make
run` stops with a message on the first, while the demo's refusal on purpose is expected. And the
gateway client gives up on a publish Kafka does not acknowledge."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import pytest

from yidi.client import gateway
from yidi.client.gateway import GatewayClient, PublishTimeout
from yidi.platform.kafka import ensure_platform_topics, ensure_topics
from yidi.platform.settings import Settings

from tests.e2e.requests import we1
from tests.e2e.system import ROOT
from tests.integration import strict_broker

pytestmark = pytest.mark.integration


async def test_a_request_nobody_answers_exits_3(settings):
    # Topics of their own (under the session's namespace, deleted with it), and no service reading them.
    namespace = f"{settings.namespace}noone{uuid.uuid4().hex[:6]}."
    await ensure_topics(Settings(kafka_bootstrap=settings.kafka_bootstrap, namespace=namespace))
    done = subprocess.run(
        [sys.executable, "-m", "yidi.client.cli", "--bootstrap", settings.kafka_bootstrap, "--namespace", namespace,
         "--timeout", "1", "--summary", "send", "deploy/demo/requests/01-we1-langfang-retiree-beijing.json"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert done.returncode == 3, done.stderr
    assert "no answer to" in done.stderr


def test_a_client_that_fails_exits_4_not_1_which_means_refused(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "yidi.client.cli", "--timeout", "1", "send", str(tmp_path / "absent.json")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert done.returncode == 4, done.stderr
    assert "FileNotFoundError" in done.stderr


async def test_a_publish_kafka_does_not_acknowledge_times_out_and_the_client_stops(tmp_path, monkeypatch):
    # The client's producer is idempotent, and aiokafka's idempotent producer never gives up on a
    # record: with the broker away (here frozen, as a hung or partitioned broker is), a publish
    # would hold send() and call() for ever, and stop() after them.
    if why := strict_broker.available():
        pytest.fail(why)  # the local stack's jars are there wherever these tests run
    monkeypatch.setattr(gateway, "STOP_SECONDS", 1.0)
    with strict_broker.strict_broker(tmp_path) as bootstrap:
        await ensure_platform_topics(bootstrap)
        client = GatewayClient(bootstrap, send_timeout=2.0)
        await client.start()
        stopped = False
        try:
            await asyncio.wait_for(client.send(we1()), 15)  # acknowledged while the broker answers
            with strict_broker.frozen(bootstrap):
                late = we1()
                # Bounded by send_timeout (2 s), not by the wait_for: that would raise TimeoutError.
                with pytest.raises(PublishTimeout, match="may still be written"):
                    await asyncio.wait_for(client.send(late), 15)
                assert not client._waiting.get(late["msgid"])  # no answer is waited for
                await asyncio.wait_for(client.stop(), 15)  # bounded by STOP_SECONDS; it hung before
                stopped = True
        finally:
            if not stopped:
                await client.stop()


async def test_an_answer_that_is_json_but_no_object_is_passed_over_and_the_next_is_read(settings):
    # "[1]" on the reply topic ended the client's reader (AttributeError): every later call timed out
    # (a review, session 35).
    from aiokafka import AIOKafkaProducer

    namespace = f"{settings.namespace}json{uuid.uuid4().hex[:6]}."
    await ensure_topics(Settings(kafka_bootstrap=settings.kafka_bootstrap, namespace=namespace))
    async with GatewayClient(settings.kafka_bootstrap, namespace=namespace) as client:
        answered = await client.send_raw(b"{}", correlation="M1")  # nobody reads the requests here
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            for value in (b"[1]", b"1", b'"text"', b'{"msgid": "M1", "infcode": 0}'):
                await producer.send_and_wait(f"{namespace}settlement.results", value)
        finally:
            await producer.stop()
        assert await asyncio.wait_for(answered, 15) == {"msgid": "M1", "infcode": 0}
