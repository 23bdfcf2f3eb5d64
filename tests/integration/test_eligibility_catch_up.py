"""After a restore, eligibility answers nobody until its feeds have applied again what the restored
database lacked (yidi.platform.catchup), on the real Kafka and Postgres.

Its settlement stage keeps nothing in the database and is not moved back: before, it answered at
once from the backup's copies, and a person whose insurance stopped after the backup still counted
until the persons feed had caught up.
"""

from __future__ import annotations

import uuid

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from services.eligibility.handlers import EligibilityHandler
from yidi.platform import progress, recover
from yidi.platform.catchup import CatchUp, FeedsCatchingUp
from yidi.platform.kafka import Incoming

from tests.integration.kafka_io import create_topics, produce

pytestmark = pytest.mark.integration


async def test_the_marks_yidi_recover_left_are_read_at_start(eligibility_of_its_own):
    own, _ = eligibility_of_its_own
    s = own.model_copy(update={"namespace": f"{own.namespace}catchup{uuid.uuid4().hex[:6]}."})
    tp = TopicPartition(s.topic("refdata.persons"), 0)
    await create_topics(s.kafka_bootstrap, tp.topic)
    await produce(s.kafka_bootstrap, tp.topic, [b"x"] * 9)
    feed, other = s.group("yidi-eligibility-feed-refdata.persons"), s.group("yidi-eligibility-feed-other")
    await recover.commit_offsets(s.kafka_bootstrap, feed, {tp: OffsetAndMetadata(4, progress.mark(9))})
    await recover.commit_offsets(s.kafka_bootstrap, other, {tp: OffsetAndMetadata(9, "")})  # no restore
    marks: dict[str, dict[tuple[str, int], int]] = {}
    assert await recover.behind(s, "eligibility", marks=marks) == []
    assert marks == {feed: {(tp.topic, 0): 9}}


async def test_a_batch_waits_until_the_feeds_hold_every_record_below_their_marks(eligibility_of_its_own):
    own, repo = eligibility_of_its_own
    pool = repo._pool
    persons, filings = own.group("yidi-eligibility-feed-refdata.persons"), own.group("yidi-eligibility-feed-filing.events")
    gate = CatchUp(lambda: pool, "eligibility", {persons: {("p", 0): 9, ("p", 1): 3}, filings: {("f", 0): 5}})
    # The real handler; a record it refuses as malformed (a dead letter) without reading anything else.
    handler = EligibilityHandler(own, repo, None, gate.check)  # type: ignore[arg-type]
    record = Incoming(own.topic("settlement.requests"), 0, 0, b"k", b"{}", 0)
    with pytest.raises(FeedsCatchingUp, match=r"3 partition\(s\): .*filing.events f\[0\] at nothing of 5"):
        await handler([record])
    # A feed's row holds where its batch ended; a stage's (the filings stage) where its batch began
    # and, since session 45, where it ended.
    await pool.execute(
        """INSERT INTO eligibility.stage_progress (consumer_group, topic, kafka_partition, applied_below, reached)
           VALUES ($1, 'p', 0, 9, NULL), ($1, 'p', 1, 2, NULL), ($2, 'f', 0, 4, 5)""", persons, filings)
    with pytest.raises(FeedsCatchingUp, match=r"1 partition\(s\): .*refdata.persons p\[1\] at 2 of 3"):
        await handler([record])
    assert gate.waiting
    await pool.execute("UPDATE eligibility.stage_progress SET applied_below = 3 WHERE topic = 'p' AND kafka_partition = 1")
    assert [o.topic for o in await handler([record])] == [own.topic("settlement.requests.dlq")]
    assert not gate.waiting
    await pool.execute("DELETE FROM eligibility.stage_progress")  # once caught up, never asked again
    assert len(await handler([record])) == 1


async def test_the_wait_is_bounded_and_says_what_had_not_caught_up(eligibility_of_its_own, caplog):
    own, repo = eligibility_of_its_own
    now = [100.0]
    persons = own.group("yidi-eligibility-feed-refdata.persons")
    gate = CatchUp(lambda: repo._pool, "eligibility", {persons: {("p", 0): 9}}, give_up_seconds=60,
                   clock=lambda: now[0])
    with pytest.raises(FeedsCatchingUp):
        await gate.check()
    now[0] += 59
    with pytest.raises(FeedsCatchingUp):
        await gate.check()
    now[0] += 1  # a row that stays below its mark (its last records compacted away, say)
    await gate.check()
    assert not gate.waiting
    assert "answering although its feeds have not applied again" in caplog.text and "p[0] at nothing of 9" in caplog.text


async def test_without_a_restore_nothing_waits(eligibility_of_its_own):
    own, repo = eligibility_of_its_own
    gate = CatchUp(lambda: repo._pool, "eligibility", {own.group("yidi-eligibility-feed-x"): {}})
    assert not gate.waiting
    await gate.check()
