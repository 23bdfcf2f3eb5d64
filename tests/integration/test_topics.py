"""Platform topics get their specs (partitions, compaction) whoever writes first, on the real Kafka."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from yidi.platform.errors import FatalError
from yidi.platform.kafka import delete_namespace_topics, ensure_platform_topics
from yidi.platform.topics import (REFDATA_PERSONS, SETTLEMENT_PARTITIONS, SETTLEMENT_PRICED, SETTLEMENT_REQUESTS,
                                  all_topic_specs)
from yidi.refdata.loader import load

from tests.integration.waiting import until

pytestmark = pytest.mark.integration
SPECS = {spec.name: spec for spec in all_topic_specs()}
DEMO_REFDATA = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "refdata.json"


async def _listed(admin: AIOKafkaAdminClient, topic: str, *, present: bool = True) -> bool:
    """Whether the broker's metadata lists ``topic`` (a moment after it is created or deleted)."""
    return (topic in await admin.list_topics()) is present


async def _is(config: Awaitable[str], value: str) -> bool:
    """Whether a topic's config reads ``value`` (the broker's metadata shows a change a moment
    after the controller took it)."""
    return await config == value


async def _config(admin: AIOKafkaAdminClient, topic: str, key: str) -> str:
    [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {key: None})])
    [(_, _, _, _, entries)] = response.resources
    return dict((e[0], e[1]) for e in entries)[key]


async def _cleanup_policy(admin: AIOKafkaAdminClient, topic: str) -> str:
    [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": None})])
    [(_, _, _, _, entries)] = response.resources
    return dict((e[0], e[1]) for e in entries)["cleanup.policy"]


async def test_yidi_load_before_any_service_creates_the_feeds_compacted(settings):
    namespace = f"t{uuid.uuid4().hex[:8]}."
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        counts = await load(str(DEMO_REFDATA), bootstrap=settings.kafka_bootstrap, namespace=namespace)
        assert counts["persons"] > 0
        # Auto-created by the first write, the feed would be "delete" (its records gone after retention).
        assert await _cleanup_policy(admin, namespace + REFDATA_PERSONS) == "compact"
        # And no record of it is replaced by a later one before it is a week old (a stop followed by
        # a resume would be read as nothing by a stage that was down or behind).
        assert await _config(admin, namespace + REFDATA_PERSONS, "min.compaction.lag.ms") == str(7 * 24 * 3600 * 1000)
        [meta] = await admin.describe_topics([namespace + REFDATA_PERSONS])
        assert len(meta["partitions"]) > 0
    finally:
        await admin.close()
        await delete_namespace_topics(settings.kafka_bootstrap, namespace)


async def test_a_platform_topic_with_other_partitions_than_its_spec_is_logged(settings, caplog):
    namespace = f"t{uuid.uuid4().hex[:8]}."
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(namespace + SETTLEMENT_PRICED, 2, 1)])
        await until(lambda: _listed(admin, namespace + SETTLEMENT_PRICED), timeout=5, poll=0.05)
        with caplog.at_level(logging.WARNING, logger="yidi.platform.kafka"):
            created = await ensure_platform_topics(settings.kafka_bootstrap, namespace)
        assert namespace + SETTLEMENT_PRICED not in created and namespace + REFDATA_PERSONS in created
        assert [r.getMessage() for r in caplog.records if "partitions" in r.getMessage()] == [
            f"topic {namespace}{SETTLEMENT_PRICED} has 2 partitions, its spec {SETTLEMENT_PARTITIONS} (created by "
            "another tool or by the broker's auto-creation?): see docs/runbook.md, \"Topics\""]
        # Run again: nothing missing, the same warning only.
        assert await ensure_platform_topics(settings.kafka_bootstrap, namespace) == []
    finally:
        await admin.close()
        await delete_namespace_topics(settings.kafka_bootstrap, namespace)


async def test_a_feed_topic_that_is_not_compacted_is_logged(settings, caplog):
    namespace = f"t{uuid.uuid4().hex[:8]}."
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        # As a broker's auto-creation makes it: the spec's partitions, the default cleanup.policy.
        await admin.create_topics([NewTopic(namespace + REFDATA_PERSONS, SPECS[REFDATA_PERSONS].partitions, 1)])
        await until(lambda: _listed(admin, namespace + REFDATA_PERSONS), timeout=5, poll=0.05)
        with caplog.at_level(logging.WARNING, logger="yidi.platform.kafka"):
            await ensure_platform_topics(settings.kafka_bootstrap, namespace)
        assert [r.getMessage() for r in caplog.records if "cleanup.policy" in r.getMessage()] == [
            f"topic {namespace}{REFDATA_PERSONS} has cleanup.policy=delete, its spec compact (created by another "
            "tool, by the broker's auto-creation, or before its spec set it?): see docs/runbook.md, \"Topics\""]
    finally:
        await admin.close()
        await delete_namespace_topics(settings.kafka_bootstrap, namespace)


async def test_a_topic_the_broker_refuses_to_create_stops_the_caller(settings):
    """The broker answers CreateTopics per topic and aiokafka raises nothing: an error other than
    'already exists' used to be taken for success, and the topic left to auto-creation."""
    with pytest.raises(FatalError, match="could not be created") as raised:
        await ensure_platform_topics(settings.kafka_bootstrap, "bad/namespace.")
    assert "bad/namespace.settlement.requests" in str(raised.value)


async def test_yidi_topics_checks_compacts_and_deletes_by_exact_name(settings, capsys):
    from yidi.platform import topics_cli

    namespace = f"t{uuid.uuid4().hex[:8]}."
    bootstrap = settings.kafka_bootstrap
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(namespace + REFDATA_PERSONS, SPECS[REFDATA_PERSONS].partitions, 1,
                                            topic_configs={"retention.ms": "123456789"}),
                                   NewTopic(namespace + REFDATA_PERSONS + ".dlq", 1, 1)])
        await until(lambda: _listed(admin, namespace + REFDATA_PERSONS), timeout=5, poll=0.05)
        lines = {line.split()[0]: line for line in await topics_cli.check(bootstrap, namespace)}
        assert lines[namespace + REFDATA_PERSONS].endswith(
            "cleanup.policy=delete, spec compact; min.compaction.lag.ms=0, spec 604800000")
        assert lines[namespace + SETTLEMENT_PRICED].endswith("created")
        await topics_cli.compact(bootstrap, namespace, REFDATA_PERSONS)
        await until(lambda: _is(_cleanup_policy(admin, namespace + REFDATA_PERSONS), "compact"), timeout=5, poll=0.05)
        assert await _cleanup_policy(admin, namespace + REFDATA_PERSONS) == "compact"
        assert await _config(admin, namespace + REFDATA_PERSONS, "min.compaction.lag.ms") == "604800000"
        # The topic's other override stays (AlterConfigs replaces them all unless sent again).
        assert await _config(admin, namespace + REFDATA_PERSONS, "retention.ms") == "123456789"
        lines = await topics_cli.check(bootstrap, namespace)
        assert all(line.endswith("ok") for line in lines), lines
        # A longer compaction lag than the spec's is on spec, and configuring the topic keeps it;
        # "compact,delete" is set back to compaction alone (it would drop persons after retention).
        [response] = await admin.alter_configs([ConfigResource(
            ConfigResourceType.TOPIC, namespace + REFDATA_PERSONS,
            {"cleanup.policy": "compact,delete", "retention.ms": "123456789", "min.compaction.lag.ms": "999999999"})])
        assert response.resources[0][0] == 0, response
        await until(lambda: _is(_config(admin, namespace + REFDATA_PERSONS, "min.compaction.lag.ms"), "999999999"),
                    timeout=5, poll=0.05)
        assert (await topics_cli.configure(bootstrap, namespace, REFDATA_PERSONS)).endswith(
            "cleanup.policy=compact, min.compaction.lag.ms=999999999")
        assert await _config(admin, namespace + REFDATA_PERSONS, "min.compaction.lag.ms") == "999999999"
        await until(lambda: _is(_cleanup_policy(admin, namespace + REFDATA_PERSONS), "compact"), timeout=5, poll=0.05)
        lines = await topics_cli.check(bootstrap, namespace)
        assert all(line.endswith("ok") for line in lines), lines
        # delete takes the exact name: the feed's dead letters stay.
        await topics_cli.delete(bootstrap, namespace, REFDATA_PERSONS)
        await until(lambda: _listed(admin, namespace + REFDATA_PERSONS, present=False), timeout=5, poll=0.05)
        left = await admin.list_topics()
        assert namespace + REFDATA_PERSONS not in left and namespace + REFDATA_PERSONS + ".dlq" in left
        with pytest.raises(SystemExit, match="not a platform topic"):
            await topics_cli.delete(bootstrap, namespace, "no.such.topic")
    finally:
        await admin.close()
        await delete_namespace_topics(bootstrap, namespace)


async def _timestamp_type(admin: AIOKafkaAdminClient, topic: str) -> str:
    [response] = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, {"message.timestamp.type": None})])
    return dict((e[0], e[1]) for e in response.resources[0][4])["message.timestamp.type"]


async def test_settlement_requests_carry_the_brokers_time_whatever_the_gateways_clock_says(settings):
    """A gateway's clock an hour behind (or its outbox sent late) gave the answer's refmsg_time and
    the latency metric an hour: the topic is created under LogAppendTime, so the record's time is
    when it reached the platform."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    namespace = f"t{uuid.uuid4().hex[:8]}."
    topic = namespace + SETTLEMENT_REQUESTS
    await ensure_platform_topics(settings.kafka_bootstrap, namespace)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest",
                                group_id=None, enable_auto_commit=False)
    await admin.start()
    await producer.start()
    await consumer.start()
    try:
        assert await _timestamp_type(admin, topic) == "LogAppendTime"
        assert await _timestamp_type(admin, namespace + SETTLEMENT_PRICED) == "CreateTime"  # the stages' own
        hour_ago = int(time.time() * 1000) - 3_600_000
        sent = await producer.send_and_wait(topic, b"{}", key=b"p", timestamp_ms=hour_ago)
        record = await asyncio.wait_for(consumer.getone(), 10)
        assert (record.offset, record.partition) == (sent.offset, sent.partition)
        assert abs(record.timestamp - time.time() * 1000) < 60_000 and record.timestamp_type == 1
    finally:
        await consumer.stop()
        await producer.stop()
        await admin.close()
        await delete_namespace_topics(settings.kafka_bootstrap, namespace)


async def test_settlement_requests_under_create_time_are_logged_listed_and_configured(settings, caplog):
    from yidi.platform import topics_cli

    namespace = f"t{uuid.uuid4().hex[:8]}."
    topic = namespace + SETTLEMENT_REQUESTS
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        # As a version before this spec created it: the broker's default, CreateTime.
        await admin.create_topics([NewTopic(topic, SETTLEMENT_PARTITIONS, 1, topic_configs={"retention.ms": "123456789"})])
        await until(lambda: _listed(admin, topic), timeout=5, poll=0.05)
        with caplog.at_level(logging.WARNING, logger="yidi.platform.kafka"):
            await ensure_platform_topics(settings.kafka_bootstrap, namespace)
        assert [r.getMessage() for r in caplog.records if "timestamp" in r.getMessage()] == [
            f"topic {topic} has message.timestamp.type=CreateTime, its spec LogAppendTime (created by another "
            "tool, by the broker's auto-creation, or before its spec set it?): see docs/runbook.md, \"Topics\""]
        lines = {line.split()[0]: line for line in await topics_cli.check(settings.kafka_bootstrap, namespace)}
        assert lines[topic].endswith("message.timestamp.type=CreateTime, spec LogAppendTime")
        assert await topics_cli.configure(settings.kafka_bootstrap, namespace, SETTLEMENT_REQUESTS) == \
            f"{topic}: message.timestamp.type=LogAppendTime"
        await until(lambda: _is(_timestamp_type(admin, topic), "LogAppendTime"), timeout=5, poll=0.05)
        assert await _timestamp_type(admin, topic) == "LogAppendTime"
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": None})])
        assert response.resources[0][4][0][1] == "123456789"  # its other override kept
        lines = await topics_cli.check(settings.kafka_bootstrap, namespace)
        assert all(line.endswith(("ok", "created")) for line in lines), lines
        with pytest.raises(SystemExit, match="sets no config"):
            await topics_cli.configure(settings.kafka_bootstrap, namespace, SETTLEMENT_PRICED)
    finally:
        await admin.close()
        await delete_namespace_topics(settings.kafka_bootstrap, namespace)
