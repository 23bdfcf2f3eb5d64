"""``yidi-recover`` (yidi.platform.recover) on the real Kafka and Postgres: it moves a stopped
service's group back to where the restored database stood, with its mark, and refuses, changing
nothing, while an instance runs or when the records to apply again are gone from Kafka."""

from __future__ import annotations

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.structs import OffsetAndMetadata

from yidi.platform import progress, recover
from yidi.platform.db import create_pool, migrate
from yidi.platform.kafka import ensure_topics
from yidi.platform.recover import commit_offsets as _commit
from yidi.platform.topics import SETTLEMENT_PRICED

from tests.integration.kafka_io import committed as _committed
from tests.integration.kafka_io import produce

pytestmark = pytest.mark.integration


async def test_the_tool_moves_a_stopped_group_back_and_refuses_while_it_runs_or_records_are_gone(settings, capsys):
    s = settings.model_copy(update={"namespace": settings.namespace + "recover."})
    await ensure_topics(s)
    pool = await create_pool(s.database_url, size=1)
    try:
        await migrate(pool, "clearing", "services.clearing.migrations")
    finally:
        await pool.close()
    tp = TopicPartition(s.topic(SETTLEMENT_PRICED), 0)
    await produce(s.kafka_bootstrap, tp.topic, [str(i).encode() for i in range(10)])
    group = s.group("yidi-clearing-priced")
    # The group answered up to 10; the restored database holds the batches before 4.
    await _commit(s.kafka_bootstrap, group, {tp: OffsetAndMetadata(10, "")})
    conn = await asyncpg.connect(s.database_url)
    try:
        await conn.execute(progress.began(group, [(tp.topic, 0, 4)]).sql("clearing"))
    finally:
        await conn.close()

    # An instance still runs: refused, nothing changed.
    running = AIOKafkaConsumer(tp.topic, bootstrap_servers=s.kafka_bootstrap, group_id=group,
                               enable_auto_commit=False)
    await running.start()
    try:
        await running.getmany(timeout_ms=3000)
        assert await recover.run("clearing", True, s) == 2
        assert "REFUSED" in capsys.readouterr().out
    finally:
        await running.stop()
    assert await _committed(s.kafka_bootstrap, group, tp) == OffsetAndMetadata(10, "")

    # Stopped: the dry run says what it would do and does nothing; --apply moves the group.
    assert await recover.run("clearing", False, s) == 0
    said = capsys.readouterr().out
    assert f"moved   {group} {tp.topic}[0]: committed 10, database 4 -> 4, answered to 10" in said
    assert await _committed(s.kafka_bootstrap, group, tp) == OffsetAndMetadata(10, "")
    assert await recover.run("clearing", True, s) == 0
    assert await _committed(s.kafka_bootstrap, group, tp) == OffsetAndMetadata(4, progress.mark(10))

    # Run again (the service not started yet): the mark stays, the offset too.
    assert await recover.run("clearing", True, s) == 0
    assert await _committed(s.kafka_bootstrap, group, tp) == OffsetAndMetadata(4, progress.mark(10))

    # Records the database lacks deleted from Kafka (retention): refused, nothing changed.
    await _commit(s.kafka_bootstrap, group, {tp: OffsetAndMetadata(10, "")})
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_records({tp: RecordsToDelete(6)})
    finally:
        await admin.close()
    assert await recover.run("clearing", True, s) == 2
    assert "records 4 to 5 are no longer in Kafka" in capsys.readouterr().out
    assert await _committed(s.kafka_bootstrap, group, tp) == OffsetAndMetadata(10, "")
