"""After a restore (yidi.platform.progress): a stage whose group yidi-recover moved back handles the
records answered before the restore again, publishing nothing, keeps the mark across a stop half-way,
and publishes as always from the mark on. On the real Kafka."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from yidi.platform import metrics, progress, replies
from yidi.platform.errors import BadData
from yidi.platform.kafka import Incoming, Outgoing, TransactionalStage, ensure_topics
from yidi.platform.recover import commit_offsets
from yidi.platform.topics import SETTLEMENT_ELIGIBLE, SETTLEMENT_REQUESTS, SETTLEMENT_RESULTS

from tests.integration.kafka_io import committed, produce, read_topic
from tests.integration.waiting import until

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("during_handler", [False, True], ids=["offsets-at-commit", "offsets-during-handler"])
async def test_records_answered_before_a_restore_are_handled_again_publishing_nothing_even_across_a_stop(
        settings, during_handler):
    s = settings.model_copy(update={"namespace": f"{settings.namespace}marks{int(during_handler)}.", "batch_linger_ms": 0,
                                    "kafka_offsets_during_handler": during_handler})
    await ensure_topics(s)
    tp = TopicPartition(s.topic(SETTLEMENT_REQUESTS), 0)
    await produce(s.kafka_bootstrap, tp.topic, [str(i).encode() for i in range(10)])
    # As yidi-recover leaves the group: moved back to 3, the records up to 7 answered before the restore.
    group = s.group("marks-test")
    await commit_offsets(s.kafka_bootstrap, group, {tp: OffsetAndMetadata(3, progress.mark(8))})

    handled: list[list[int]] = []
    stuck = asyncio.Event()

    async def forward(records: list[Incoming]) -> list[Outgoing]:
        handled.append([r.offset for r in records])
        if 5 in handled[-1] and not stuck.is_set():
            stuck.set()
            await asyncio.Event().wait()  # the first instance stops here, its batch not committed
        return [Outgoing(s.topic(SETTLEMENT_ELIGIBLE), r.value, key=r.key) for r in records]

    restored = metrics.STAGE_RESTORED.labels("marks-test", "redone")
    count_before = restored._value.get()
    first = TransactionalStage("marks-test", "test", s, [SETTLEMENT_REQUESTS], "marks-test", forward, max_records=2)
    await first.start()
    try:
        await until(stuck.is_set, timeout=30)
    finally:
        await first.stop()
    assert handled == [[3, 4], [5, 6]]
    # Stopped half-way: the batch below the mark carried it in its offset commit.
    assert await committed(s.kafka_bootstrap, group, tp) == OffsetAndMetadata(5, progress.mark(8))

    second = TransactionalStage("marks-test", "test", s, [SETTLEMENT_REQUESTS], "marks-test", forward, max_records=2)
    await second.start()
    try:
        async def all_committed() -> bool:
            return await committed(s.kafka_bootstrap, group, tp) == OffsetAndMetadata(10, "")

        await until(all_committed, timeout=30, poll=0.2)
        assert second._marks == {}
    finally:
        await second.stop()
    assert second.failure is None
    # Past the mark, commits carry no metadata (above): a later restore's mark is the only one there is.
    # 5 to 7 again, then the others; no batch holds records from both sides of the mark (a batch
    # fetched across it, [7, 8], is handled as two).
    assert [o for offsets in handled[2:] for o in offsets] == [5, 6, 7, 8, 9]
    assert all(max(offsets) < 8 or min(offsets) >= 8 for offsets in handled[2:]), handled
    assert restored._value.get() - count_before == 2 + 3
    published = await read_topic(s.kafka_bootstrap, s.topic(SETTLEMENT_ELIGIBLE), count=2, seconds=10)
    assert sorted(r.value for r in published) == [b"8", b"9"]


async def test_a_record_answered_before_a_restore_and_refused_now_is_dead_lettered_not_answered_again(settings):
    """Below the mark a record the database refuses now (BadData) was answered before, maybe settled:
    its dead letter goes out, so that ops see it, and its answer does not (the facility has one)."""
    s = settings.model_copy(update={"namespace": settings.namespace + "marksrefused.", "batch_linger_ms": 0})
    await ensure_topics(s)
    tp = TopicPartition(s.topic(SETTLEMENT_REQUESTS), 0)
    await produce(s.kafka_bootstrap, tp.topic, [orjson.dumps(
        {"msgid": f"H00000000001202612070000{i:04d}", "infno": "2207", "fixmedins_code": "H00000000001"})
        for i in range(4)])
    group = s.group("marks-refused-test")
    await commit_offsets(s.kafka_bootstrap, group, {tp: OffsetAndMetadata(0, progress.mark(3))})  # 0 to 2 answered before

    async def answer_each(records: list[Incoming]) -> list[Outgoing]:
        if any(r.offset == 1 for r in records):
            raise BadData("a value the database refuses now")
        return [replies.reply(s, SETTLEMENT_RESULTS, {"infcode": 0, "msgid": orjson.loads(r.value)["msgid"]}, facility="H00000000001",
                              request_ts_ms=r.timestamp_ms) for r in records]

    refused = metrics.STAGE_RESTORED.labels("marks-refused-test", "refused")
    refused_before = refused._value.get()
    stage = TransactionalStage("marks-refused-test", "test", s, [SETTLEMENT_REQUESTS], "marks-refused-test",
                               answer_each)
    await stage.start()
    try:
        async def all_committed() -> bool:
            return await committed(s.kafka_bootstrap, group, tp) == OffsetAndMetadata(4, "")

        await until(all_committed, timeout=30, poll=0.2)
    finally:
        await stage.stop()
    assert stage.failure is None
    assert refused._value.get() - refused_before == 1
    dead = await read_topic(s.kafka_bootstrap, s.topic(SETTLEMENT_REQUESTS) + ".dlq", count=1, seconds=10)
    assert [orjson.loads(r.value)["msgid"][-4:] for r in dead] == ["0001"]
    answered = await read_topic(s.kafka_bootstrap, s.topic(SETTLEMENT_RESULTS), count=1, seconds=10)
    assert [orjson.loads(r.value)["msgid"][-4:] for r in answered] == ["0003"]  # past the mark only


async def test_a_batch_of_several_partitions_publishes_only_what_is_past_each_partitions_mark(settings):
    """A fetched batch holds records of a partition still below its mark and of one without a mark:
    the first are handled apart, publishing nothing, the others as always."""
    s = settings.model_copy(update={"namespace": settings.namespace + "marksmixed.", "batch_linger_ms": 0})
    await ensure_topics(s)
    p0, p1 = TopicPartition(s.topic(SETTLEMENT_REQUESTS), 0), TopicPartition(s.topic(SETTLEMENT_REQUESTS), 1)
    await produce(s.kafka_bootstrap, p0.topic, [b"a0", b"a1", b"a2"], partition=0)
    await produce(s.kafka_bootstrap, p1.topic, [b"b0", b"b1"], partition=1)
    group = s.group("marks-mixed-test")
    await commit_offsets(s.kafka_bootstrap, group, {p0: OffsetAndMetadata(0, progress.mark(2))})
    handled: list[list[bytes]] = []

    async def forward(records: list[Incoming]) -> list[Outgoing]:
        handled.append([r.value for r in records])
        return [Outgoing(s.topic(SETTLEMENT_ELIGIBLE), r.value, key=r.key) for r in records]

    stage = TransactionalStage("marks-mixed-test", "test", s, [SETTLEMENT_REQUESTS], "marks-mixed-test", forward)
    await stage.start()
    try:
        async def all_committed() -> bool:
            return (await committed(s.kafka_bootstrap, group, p0) == OffsetAndMetadata(3, "")
                    and await committed(s.kafka_bootstrap, group, p1) == OffsetAndMetadata(2, ""))

        await until(all_committed, timeout=30, poll=0.2)
    finally:
        await stage.stop()
    assert stage.failure is None
    assert sorted(v for batch in handled for v in batch) == [b"a0", b"a1", b"a2", b"b0", b"b1"]
    # a0 and a1 never in a batch with a record past the mark.
    assert all(set(batch) <= {b"a0", b"a1"} or not set(batch) & {b"a0", b"a1"} for batch in handled), handled
    published = await read_topic(s.kafka_bootstrap, s.topic(SETTLEMENT_ELIGIBLE), count=3, seconds=10)
    assert sorted(r.value for r in published) == [b"a2", b"b0", b"b1"]


async def test_the_partitions_next_owner_after_a_rebalance_keeps_to_the_restore_mark(settings):
    """A second instance joins while the first handles records below the mark: the first's batch is
    dropped at the rebalance, and whichever instance owns the partition then reads the mark from the
    committed offset and publishes only what is past it, once."""
    s = settings.model_copy(update={"namespace": settings.namespace + "marksrebalance.", "batch_linger_ms": 0})
    await ensure_topics(s)
    tp = TopicPartition(s.topic(SETTLEMENT_REQUESTS), 0)
    await produce(s.kafka_bootstrap, tp.topic, [f"r{i}".encode() for i in range(6)])
    group = s.group("marks-rebalance-test")
    await commit_offsets(s.kafka_bootstrap, group, {tp: OffsetAndMetadata(0, progress.mark(3))})
    held = asyncio.Event()
    release = asyncio.Event()

    async def forward(records: list[Incoming]) -> list[Outgoing]:
        if not held.is_set():
            held.set()
            await release.wait()  # the first batch waits until the second instance has joined
        return [Outgoing(s.topic(SETTLEMENT_ELIGIBLE), r.value, key=r.key) for r in records]

    first = TransactionalStage("marks-rebalance-test", "test", s, [SETTLEMENT_REQUESTS], "marks-rebalance-test",
                               forward, max_records=2)
    second = TransactionalStage("marks-rebalance-test", "test", s.model_copy(update={"instance": "second"}),
                                [SETTLEMENT_REQUESTS], "marks-rebalance-test", forward, max_records=2)
    await first.start()
    try:
        await until(held.is_set, timeout=30)
        await second.start()
        try:
            await until(lambda: first._revocations > 0, timeout=30)
            release.set()

            async def all_committed() -> bool:
                return await committed(s.kafka_bootstrap, group, tp) == OffsetAndMetadata(6, "")

            await until(all_committed, timeout=60, poll=0.2)
        finally:
            await second.stop()
    finally:
        release.set()
        await first.stop()
    assert first.failure is None and second.failure is None
    published = await read_topic(s.kafka_bootstrap, s.topic(SETTLEMENT_ELIGIBLE), count=3, seconds=10)
    assert sorted(r.value for r in published) == [b"r3", b"r4", b"r5"]


async def test_after_a_restore_a_stages_batches_wait_for_the_feeds_those_it_redoes_too(settings):
    # Pricing priced new settlements with the backup's policies while its feeds were still applying
    # again what came after it, and a redone settlement priced before its region's catalogue was
    # applied again was refused, its row never written (reviews, session 49). The service gives
    # each stage the feeds' catch-up (Service._wait_for_feeds): here one that holds until released.
    from yidi.platform.catchup import FeedsCatchingUp

    s = settings.model_copy(update={"namespace": f"{settings.namespace}feedswait.", "batch_linger_ms": 0})
    await ensure_topics(s)
    tp = TopicPartition(s.topic(SETTLEMENT_REQUESTS), 0)
    await produce(s.kafka_bootstrap, tp.topic, [str(i).encode() for i in range(10)])
    await commit_offsets(s.kafka_bootstrap, s.group("feeds-wait"), {tp: OffsetAndMetadata(3, progress.mark(8))})
    handled: list[int] = []

    class Feeds:
        caught_up = False
        asked = 0

        async def check(self) -> None:
            self.asked += 1
            if not self.caught_up:
                raise FeedsCatchingUp("waiting for its feeds (test)")

    async def forward(records: list[Incoming]) -> list[Outgoing]:
        handled.extend(r.offset for r in records)
        return [Outgoing(s.topic(SETTLEMENT_ELIGIBLE), r.value, key=r.key) for r in records]

    feeds = Feeds()
    stage = TransactionalStage("feeds-wait", "test", s, [SETTLEMENT_REQUESTS], "feeds-wait", forward, max_records=2)
    stage.catch_up = feeds
    waited = metrics.STAGE_RETRIES.labels("feeds-wait", "FeedsCatchingUp")
    await stage.start()
    try:
        await until(lambda: feeds.asked >= 2 and waited._value.get() >= 2, timeout=30)
        assert handled == []  # nothing, handled again or not, until the feeds have caught up
        feeds.caught_up = True

        async def all_committed() -> bool:
            return await committed(s.kafka_bootstrap, s.group("feeds-wait"), tp) == OffsetAndMetadata(10, "")

        await until(all_committed, timeout=30, poll=0.2)
    finally:
        await stage.stop()
    assert stage.failure is None and handled == [3, 4, 5, 6, 7, 8, 9]
    published = await read_topic(s.kafka_bootstrap, s.topic(SETTLEMENT_ELIGIBLE), count=2, seconds=10)
    assert sorted(r.value for r in published) == [b"8", b"9"]
