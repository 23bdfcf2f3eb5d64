"""Platform topics get their specs (partitions, compaction) whoever writes first, on the real Kafka."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from yidi.platform.kafka import delete_namespace_topics, ensure_platform_topics
from yidi.platform.topics import REFDATA_PERSONS, SETTLEMENT_PARTITIONS, SETTLEMENT_PRICED
from yidi.refdata.loader import load

pytestmark = pytest.mark.integration
DEMO_REFDATA = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "refdata.json"


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
        for _ in range(100):  # the broker's metadata lists a new topic a moment after it is created
            if namespace + SETTLEMENT_PRICED in await admin.list_topics():
                break
            await asyncio.sleep(0.05)
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
