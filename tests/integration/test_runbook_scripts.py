"""The runbook's dead-letter scripts, as an operator pastes them, against the real broker: reading a
DLQ shows each dead letter's source, reason and a cut value or key; re-publishing sends the original
value, key and headers (without ours) back to the source topic and skips a cut one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.e2e.system import ROOT
from tests.integration.kafka_io import create_topics
from yidi.contracts.schemas import TOPIC_CONTRACTS
from yidi.platform.topics import OPTIONAL_FEEDS, PREPAYMENT_STATUS

pytestmark = pytest.mark.integration

RUNBOOK = (ROOT / "docs" / "runbook.md").read_text()


def script(usage: str) -> str:
    """The Python of the runbook's shell block whose first comment line starts with ``usage``."""
    for block in re.findall(r"<<'EOF'\n(.*?)\nEOF\n", RUNBOOK, re.S):
        if usage in block.split("\n", 1)[0]:
            return block
    raise AssertionError(f"no runbook script for {usage!r}")


def run(code: str, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, "-", *args], input=code, capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env=None if env is None else os.environ | env)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_the_runbook_reads_dead_letters_and_republishes_all_but_a_cut_one(settings):
    bootstrap = settings.kafka_bootstrap
    source = f"{settings.namespace}runbook{uuid.uuid4().hex[:6]}"
    dlq = source + ".dlq"
    await create_topics(bootstrap, source, dlq)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(dlq, b'{"policy": 1}', key=b"510100", headers=[
            ("x-origin", b"feed-1"), ("yidi-dlq-reason", b"R11: a ceiling below the line"),
            ("yidi-dlq-source", f"{source}/0/7".encode())])
        await producer.send_and_wait(dlq, b'{"policy": 1}', key=b"510100", headers=[  # the same, again: a feed
            ("x-origin", b"feed-1"), ("yidi-dlq-reason", b"R11: a ceiling below the line"),  # that crashed
            ("yidi-dlq-source", f"{source}/0/7".encode())])
        await producer.send_and_wait(dlq, b"x" * 100, key=b"510100", headers=[
            ("yidi-dlq-reason", b"too big"), ("yidi-dlq-source", f"{source}/0/8".encode()),
            ("yidi-dlq-truncated", b"600000")])
        await producer.send_and_wait(dlq, b'{"policy": 2}', key=b"k" * 1024, headers=[
            ("yidi-dlq-reason", b"R11"), ("yidi-dlq-source", f"{source}/0/9".encode()),
            ("yidi-dlq-key-truncated", b"2000000")])
    finally:
        await producer.stop()

    shown = run(script("# Usage: python - <dlq topic> [bootstrap]"), dlq, bootstrap)
    assert f"0/0 key=b'510100' source={source}/0/7\n  reason: R11: a ceiling below the line\n" in shown
    assert f"0/1 key=b'510100' source={source}/0/7 AGAIN, counted once\n" in shown
    assert f"0/2 key=b'510100' source={source}/0/8 TRUNCATED from 600000 bytes\n  reason: too big\n" in shown
    assert f"0/3 key=b'{'k' * 1024}' source={source}/0/9 KEY TRUNCATED from 2000000 bytes\n" in shown
    assert shown.endswith("       1  R11: a ceiling below the line\n       1  too big\n       1  R11\n")
    # The last one of each partition only (a flood: the newest, and their count by reason).
    last = run(script("# Usage: python - <dlq topic> [bootstrap]"), dlq, bootstrap, "1")
    assert "0/0 " not in last and f"0/3 key=b'{'k' * 1024}' source={source}/0/9" in last and last.endswith("       1  R11\n")

    republish = script("# Usage: python - <dlq topic> <partition>:<offset>")
    # The broker the operator's environment names (YIDI_KAFKA_BOOTSTRAP), as the services read it.
    assert 'BOOTSTRAP = os.environ.get("YIDI_KAFKA_BOOTSTRAP", "127.0.0.1:19092")' in republish
    done = run(republish, dlq, "0:0", "0:2", "0:3", env={"YIDI_KAFKA_BOOTSTRAP": bootstrap})
    assert done == (f"0:0 -> {source} key=b'510100'\n"
                    "0:2 is truncated, skipped: re-publish it from its yidi-dlq-source\n"
                    "0:3 is truncated, skipped: re-publish it from its yidi-dlq-source\n")

    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                isolation_level="read_committed")
    await consumer.start()
    try:
        got: list = []
        for _ in range(20):  # until the re-published one is in, then one more poll for any other
            polled = [r for batch in (await consumer.getmany(timeout_ms=1000)).values() for r in batch]
            got += polled
            if got and not polled:
                break
    finally:
        await consumer.stop()
    assert [(r.value, r.key, list(r.headers)) for r in got] == [(b'{"policy": 1}', b"510100", [("x-origin", b"feed-1")])]


async def test_the_runbook_lists_the_answers_moved_off_a_refused_reply_to(settings):
    bootstrap = settings.kafka_bootstrap
    shared = f"{settings.namespace}runbook{uuid.uuid4().hex[:6]}.results"
    await create_topics(bootstrap, shared)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(shared, b'{"msgid": "M1"}', key=b"H1")  # asked for here
        await producer.send_and_wait(shared, b'{"msgid": "M2"}', key=b"H2", headers=[
            ("yidi-reply-to-refused", b"gw.h2: the topic does not exist, and the broker does not create topics")])
    finally:
        await producer.stop()

    shown = run(script("# Usage: python - <moved answers' topic> [bootstrap]"), shared, bootstrap)
    assert "M1" not in shown
    assert "0/1 key=b'H2' gw.h2: the topic does not exist, and the broker does not create topics" in shown
    assert '{"msgid": "M2"}' in shown


@pytest.mark.parametrize("policy", ["record_shortfall", "refuse"])
def test_the_runbook_asks_the_broker_about_every_consumer_group_of_the_platform(settings, policy):
    # Pricing's group on clearing.prepayment-status exists under YIDI_PREPAYMENT_POLICY=refuse
    # alone: under the default it was listed, never caught up.
    code = script("# Usage: python - [bootstrap]; whether each consumer group")
    env = {k: v for k, v in os.environ.items() if k != "YIDI_PREPAYMENT_POLICY"} | {"YIDI_NAMESPACE": settings.namespace}
    if policy == "refuse":
        env["YIDI_PREPAYMENT_POLICY"] = "refuse"
    done = subprocess.run([sys.executable, "-", settings.kafka_bootstrap], input=code, capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    shown = {tuple(line.split()[:2]) for line in done.stdout.splitlines()}
    groups = {(settings.namespace + r.group, settings.namespace + topic)
              for topic, c in TOPIC_CONTRACTS.items() for r in c.readers
              if topic not in OPTIONAL_FEEDS or policy == "refuse"}
    assert shown == groups and len(groups) >= (13 if policy == "refuse" else 12)  # the stages' groups and the feeds'
    assert any(t == settings.namespace + PREPAYMENT_STATUS for _, t in shown) == (policy == "refuse")
    assert all(line.endswith(("caught up: True", "caught up: False")) for line in done.stdout.splitlines())
