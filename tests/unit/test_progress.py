"""Where a batch began (yidi.platform.progress) and what yidi-recover makes of it (yidi.platform.recover)."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from yidi.platform import progress
from yidi.platform.recover import describe, plan

T0, T1 = TopicPartition("settlement.priced", 0), TopicPartition("settlement.priced", 1)


def test_a_batch_records_each_partitions_first_offset_and_its_end_in_partition_order():
    began = progress.began("yidi-pricing-eligible",
                           [("settlement.eligible", 2, 41), ("settlement.eligible", 0, 7), ("settlement.eligible", 2, 40)])
    assert began.below == {("settlement.eligible", 2): 40, ("settlement.eligible", 0): 7}
    assert began.ends == {("settlement.eligible", 2): 42, ("settlement.eligible", 0): 8}
    assert began.sql("pricing") == (
        'INSERT INTO "pricing".stage_progress AS p (consumer_group, topic, kafka_partition, applied_below, reached) '
        "VALUES ('yidi-pricing-eligible', 'settlement.eligible', 0, 7, 8), "
        "('yidi-pricing-eligible', 'settlement.eligible', 2, 40, 42) "
        "ON CONFLICT (consumer_group, topic, kafka_partition) DO UPDATE "
        "SET applied_below = GREATEST(p.applied_below, EXCLUDED.applied_below), "
        "reached = GREATEST(p.reached, EXCLUDED.reached), updated_at = now()")


def test_a_batch_checks_the_rows_its_stage_held_first_and_keeps_what_it_recorded_once_recorded():
    held: dict[tuple[str, int], int] = {}
    first = progress.began("g", [("t", 0, 7), ("t", 1, 3)], held)
    assert first.held == {} and first.sql("s").startswith("INSERT")  # nothing held yet: nothing checked
    progress.hold(held, first)
    assert held == {}  # not recorded (its transaction did not commit): not held
    first.recorded = True
    progress.hold(held, first)
    assert held == {("t", 0): 7, ("t", 1): 3}
    # The next batch checks the partitions it reads that the stage held, and only those.
    second = progress.began("g", [("t", 0, 9), ("t", 2, 0)], held)
    assert second.held == {("t", 0): 7}
    check, upsert = second.sql("s").split("; ")
    assert check == (
        """SELECT "s".stage_progress_went_back('g', e.topic, e.kafka_partition, p.applied_below, e.held) """
        "FROM (VALUES ('t', 0, 7::bigint)) AS e (topic, kafka_partition, held) "
        """LEFT JOIN "s".stage_progress AS p ON p.consumer_group = 'g' AND p.topic = e.topic """
        "AND p.kafka_partition = e.kafka_partition WHERE p.applied_below IS NULL OR p.applied_below < e.held")
    assert upsert.startswith('INSERT INTO "s".stage_progress') and "('g', 't', 2, 0, 1)" in upsert
    # A feed's batch too; and what is held never goes back (a batch read again after a NACK).
    again = progress.reached("g", [("t", 0, 4)], held)
    assert again.held == {("t", 0): 7} and again.below == {("t", 0): 5}
    again.recorded = True
    progress.hold(held, again)
    assert held[("t", 0)] == 7


def test_a_transaction_another_of_the_batch_follows_records_one_record_less_with_the_same_check():
    batch = progress.Progress("g", {("t", 0): 0, ("t", 1): 5}, held={("t", 1): 3})
    before = batch.before_last()
    assert (before.below, before.held, before.recorded) == ({("t", 1): 4}, {("t", 1): 3}, False)
    assert before.sql("clearing").startswith(batch.check_sql("clearing") + "; INSERT INTO")
    # Where the batch ends is the last transaction's to record (NULL: ``reached`` left as it is).
    assert "('g', 't', 1, 4, NULL::bigint)" in before.sql("clearing")
    assert "'t', 0" not in before.sql("clearing").split("INSERT")[1]


def test_only_names_of_kafkas_topic_characters_are_written_in():
    assert "('t1.yidi-x_y', 't', 0, 1, 2)" in progress.began("t1.yidi-x_y", [("t", 0, 1)]).sql("s")
    for name in ("it's", "g\x00", "a b", "g\\", ""):
        with pytest.raises(ValueError, match="cannot be recorded"):
            progress.began(name, [("t", 0, 1)]).sql("s")
    assert progress.began("g", []).sql("s") == ""


def test_the_mark_reads_back_and_nothing_else_reads_as_one():
    assert progress.answered_to(progress.mark(4711)) == 4711
    for other in ("", None, "skipped by hand", "yidi-restore answered-to=", "yidi-restore answered-to=12x",
                  " yidi-restore answered-to=12"):
        assert progress.answered_to(other) is None


def test_what_the_database_held_reads_back_and_nothing_else_reads_as_it():
    assert progress.applied_below(progress.applied(120)) == 120
    assert progress.answered_to(progress.applied(120)) is None
    assert progress.applied_below(progress.mark(130)) is None  # yidi-recover's, and a stage's below a mark
    for other in ("", None, "skipped by hand", "yidi-progress applied-below=", "yidi-progress applied-below=1x",
                  " yidi-progress applied-below=12", "yidi-progress applied-below=12; yidi-restore answered-to=13"):
        assert progress.applied_below(other) is None


def test_a_feeds_batch_records_where_each_partition_ends():
    reached = progress.reached("g", [("t", 1, 7), ("t", 0, 3), ("t", 1, 5)])
    assert reached.below == {("t", 1): 8, ("t", 0): 4}


def om(offset: int, metadata: str = "") -> OffsetAndMetadata:
    return OffsetAndMetadata(offset, metadata)


def test_a_group_behind_its_answers_is_moved_back_with_the_answered_offset_as_its_mark():
    (move,) = plan("g", {T0: 100}, {T0: om(130)}, {T0: 0})
    assert (move.to, move.answered_to, move.problem) == (100, 130, "")
    assert "30 record(s) handled again, publishing nothing" in describe(move)


def test_a_database_at_or_ahead_of_the_commit_is_left_as_it_is():
    # Ahead: its last batch's Postgres commit landed and its Kafka commit did not (a crash): the
    # stage handles that batch again as after any crash.
    moves = plan("g", {T0: 130, T1: 90}, {T0: om(130), T1: om(80)}, {T0: 0, T1: 0})
    assert [(m.to, m.answered_to) for m in moves] == [(None, None), (None, None)]


def test_a_second_restore_before_the_first_recovery_ended_keeps_the_first_mark():
    (move,) = plan("g", {T0: 50}, {T0: om(100, progress.mark(130))}, {T0: 0})
    assert (move.to, move.answered_to) == (50, 130)


def test_a_partition_the_database_has_no_batch_of_starts_from_its_first_record():
    moves = plan("g", {T0: 100}, {T0: om(130), T1: om(20)}, {T0: 0, T1: 5})
    assert [(m.tp, m.to, m.answered_to) for m in moves] == [(T0, 100, 130), (T1, 5, 20)]


def test_a_group_the_database_has_nothing_of_is_read_again_from_its_first_records():
    # A quiet stage (month runs, fundings) whose first batch since the upgrade came after the
    # backup: what came after the backup is applied again; what the database holds is passed over.
    moves = plan("yidi-clearing-requests", {}, {T0: om(130), T1: om(3)}, {T0: 0, T1: 2})
    assert [(m.tp, m.to, m.answered_to) for m in moves] == [(T0, 0, 130), (T1, 2, 3)]


def test_a_partition_without_a_row_starts_shortly_before_the_backup_and_is_refused_if_those_records_are_gone():
    moves = plan("yidi-clearing-requests", {}, {T0: om(130), T1: om(40)}, {T0: 0, T1: 30}, since={T0: 120, T1: 25})
    assert [(m.tp, m.to, m.answered_to, m.applied_below) for m in moves[:1]] == [(T0, 120, 130, None)]
    assert moves[1].to is None and moves[1].problem.startswith("records 25 to 29 are no longer in Kafka")
    assert "database no row" in describe(moves[0])


def test_a_partition_without_a_row_goes_back_to_what_its_committed_offset_claims_when_that_is_earlier():
    # Clearing-admin lagged past the margin at the backup, then ran a month from offset 40 and
    # committed 42 saying the database held every record before 40: the backup, which has no row
    # of the group, lacks that run. Shortly before the backup is 42 (nothing since): moved to 40.
    claims = {T0: om(42, progress.applied(40)), T1: om(9, progress.applied(8))}
    moves = plan("yidi-clearing-requests", {}, claims, {T0: 0, T1: 0}, since={T0: 42, T1: 5})
    assert [(m.tp, m.to, m.answered_to) for m in moves] == [(T0, 40, 42), (T1, 5, 9)]
    assert "from where its committed offset says the database held every record" in describe(moves[0])


def test_a_row_past_its_partitions_end_is_of_a_topic_created_again_since_the_backup_and_is_refused():
    # The backup's row counts the old topic's records; the new one has 120, handled since: kept,
    # the tool would skip them all ("the database holds every batch answered").
    moves = plan("g", {T0: 5000, T1: 120}, {T0: om(100), T1: om(130)}, {T0: 0, T1: 0}, end={T0: 120, T1: 140})
    assert moves[0].to is None and moves[0].problem.startswith("the database's row is past the partition's end (120)")
    assert (moves[1].to, moves[1].answered_to, moves[1].problem) == (120, 130, "")  # at its end is possible


def test_a_feed_without_a_committed_offset_is_moved_without_asking():
    (move,) = plan("yidi-pricing-feed-refdata.policies", {T0: 7}, {T0: None}, {T0: 0}, answers=False)
    assert (move.to, move.answered_to, move.problem) == (7, None, "")
    assert "a feed, which answers no one" in move.why


def test_a_stage_that_keeps_nothing_in_its_database_is_left_as_it_is():
    (move,) = plan("yidi-eligibility-requests", {T0: 5}, {T0: om(130)}, {T0: 0}, records_progress=False)
    assert move.to is None and not move.problem and "keeps nothing" in move.why


def test_records_gone_from_kafka_are_refused():
    (move,) = plan("g", {T0: 100}, {T0: om(130)}, {T0: 120})
    assert move.to is None and move.problem.startswith("records 100 to 119 are no longer in Kafka")
    assert describe(move).startswith("REFUSED")


def test_a_partition_without_a_committed_offset_is_refused_unless_it_may_be_answered_again():
    (refused,) = plan("g", {T0: 100}, {T0: None}, {T0: 0})
    assert refused.to is None and refused.problem.startswith("no committed offset")
    (move,) = plan("g", {T0: 100}, {T0: None}, {T0: 0}, answer_again=True)
    assert (move.to, move.answered_to, move.problem) == (100, None, "")


async def test_the_tool_says_when_postgres_cannot_be_reached_and_exits_2(capsys):
    from yidi.platform.recover import run
    from yidi.platform.settings import Settings

    unreachable = Settings(database_url="postgresql://yidi@127.0.0.1:1/yidi", kafka_bootstrap="127.0.0.1:1")
    assert await run("clearing", True, unreachable) == 2
    assert "unreachable" in capsys.readouterr().err


async def test_a_services_own_part_of_a_restore_runs_before_any_move_and_a_refusal_moves_nothing(monkeypatch, capsys):
    from yidi.platform import recover
    from yidi.platform.settings import Settings

    calls: list[str] = []
    move = recover.Move("g", T0, 130, 120, to=120, answered_to=130, why="handled again")

    async def plan_(settings, service, *, answer_again=False):
        return [move]

    async def apply_(settings, moves):
        calls.append("moves")

    async def refusing(settings, do_apply):
        calls.append(f"own part, apply={do_apply}")
        raise recover.Refused("a close the tool will not write")

    async def writing(settings, do_apply):
        calls.append(f"own part, apply={do_apply}")
        return ["closed  month 202510"]

    monkeypatch.setattr(recover, "make_plan", plan_)
    monkeypatch.setattr(recover, "apply", apply_)
    monkeypatch.setattr(recover, "_own_part", lambda service: refusing)
    assert await recover.run("clearing", True, Settings()) == 2
    assert calls == ["own part, apply=True"] and "a close the tool will not write" in capsys.readouterr().err
    calls.clear()
    monkeypatch.setattr(recover, "_own_part", lambda service: writing)
    assert await recover.run("clearing", True, Settings()) == 0
    assert calls == ["own part, apply=True", "moves"]


class _Assignment:
    def __init__(self, tps: set[TopicPartition]) -> None:
        self.tps = tps


class _Consumer:
    """As much of aiokafka's consumer as a feed's acknowledgement reads: what is assigned, and commit."""

    def __init__(self, assigned: set[TopicPartition]) -> None:
        self._subscription = type("State", (), {"subscription": type("Sub", (), {"assignment": _Assignment(assigned)})})
        self.commits: list[object] = []

    async def commit(self, offsets: object = None) -> None:
        self.commits.append(offsets)


async def test_a_feeds_acknowledgement_commits_the_batchs_partitions_still_assigned_each_with_its_end():
    from yidi.platform.feeds import with_progress

    consumer = _Consumer({T0})
    acknowledged = {T0: 10, T1: 20}  # T1 was revoked while the batch was applied
    with_progress(consumer, acknowledged)
    with_progress(consumer, acknowledged)  # once only
    await consumer.commit()
    assert consumer.commits == [{T0: OffsetAndMetadata(10, progress.applied(10))}]
    assert acknowledged == {}
    # Nothing recorded (a service without a database): as FastStream would, every position consumed.
    await consumer.commit()
    assert consumer.commits[-1] is None
    # Offsets given are committed as they are.
    await consumer.commit({T1: 3})
    assert consumer.commits[-1] == {T1: 3}


def test_a_stages_offsets_say_where_the_batch_began_or_below_a_mark_carry_the_mark_alone():
    """Alone, as the versions before 2026-12-07 session 42 read a mark (the whole metadata): one of
    them taking the partition half-way through a recovery still publishes nothing below it."""
    from yidi.platform.kafka import TransactionalStage
    from yidi.platform.settings import Settings

    async def record(batch: progress.Progress) -> None:
        batch.recorded = True

    stage = TransactionalStage("t", "test", Settings(), ["in"], "g", None)  # type: ignore[arg-type]
    batch = progress.began("g", [(T0.topic, 0, 5), (T1.topic, 1, 3)])
    assert stage._with_metadata({T0: 7, T1: 4}, batch) == {T0: 7, T1: 4}  # no database to vouch for it
    stage.record_progress = record
    assert stage._with_metadata({T0: 7, T1: 4}, batch) == {
        T0: OffsetAndMetadata(7, progress.applied(5)), T1: OffsetAndMetadata(4, progress.applied(3))}
    stage._marks = {T0: 8}
    assert stage._with_metadata({T0: 7, T1: 4}, batch) == {
        T0: OffsetAndMetadata(7, progress.mark(8)), T1: OffsetAndMetadata(4, progress.applied(3))}
    assert stage._with_metadata({T0: 8}, batch) == {T0: OffsetAndMetadata(8, progress.applied(5))}  # past it


async def test_a_stage_that_found_its_database_gone_back_stops_its_service_with_status_2_whatever_else_failed(caplog):
    """Service._watch_stages: a stage's DatabaseWentBack, itself or under the failure of its Kafka
    transaction's abort, exits with status 2 and says so at CRITICAL; another stage's failure at the
    same moment does not lower it to 1."""
    import asyncio
    import logging

    from yidi.platform.errors import DatabaseWentBack, FatalError
    from yidi.platform.service import Service
    from yidi.platform.settings import Settings

    async def fail(exc: BaseException) -> None:
        raise exc

    def aborted_after_it() -> FatalError:
        try:
            try:
                raise DatabaseWentBack("the database went back under the running service: g t[0]: it holds no row of it")
            except DatabaseWentBack:
                raise FatalError("stage s: the Kafka producer failed for good")  # noqa: B904 - as _abandon does
        except FatalError as exc:
            return exc

    for failures in ([aborted_after_it()], [RuntimeError("a bug"), aborted_after_it()],
                     [aborted_after_it(), RuntimeError("a bug")]):
        service = Service("clearing", Settings(), migrations=None)
        tasks = [asyncio.create_task(fail(exc)) for exc in failures]
        await asyncio.gather(*tasks, return_exceptions=True)
        service.stages = [type("Stage", (), {"task": t})() for t in tasks]  # type: ignore[misc]
        caplog.clear()
        with caplog.at_level(logging.CRITICAL, logger="yidi.platform.service"):
            await service._watch_stages()
        assert service.exit_code == 2, failures
        (said,) = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
        assert said.startswith("clearing: the database went back under the running service: g t[0]: it holds no "
                               "row of it. Was the database restored while the service ran"), said
        assert "`yidi-recover clearing`" in said
    plain = Service("clearing", Settings(), migrations=None)
    task = asyncio.create_task(fail(RuntimeError("a bug")))
    await asyncio.gather(task, return_exceptions=True)
    plain.stages = [type("Stage", (), {"task": task})()]  # type: ignore[misc]
    await plain._watch_stages()
    assert plain.exit_code == 1


async def test_the_services_periodic_check_says_once_when_it_has_not_run_for_six_rounds(caplog):
    """Postgres away (TransientError), or a check slower than three rounds: said at WARNING after
    six rounds in a row, once, and that it runs again; a round that runs starts the count again."""
    import asyncio
    import logging

    from yidi.platform.errors import DatabaseWentBack, TransientError
    from yidi.platform.service import Service
    from yidi.platform.settings import Settings

    class Pool:
        def __init__(self) -> None:
            self.calls = 0

        async def execute(self, sql: str) -> str:
            self.calls += 1
            # Five away, one that runs, one too slow and five away (said), two that run, gone back.
            if self.calls in (1, 2, 3, 4, 5, 8, 9, 10, 11, 12):
                raise TransientError("the database is away")
            if self.calls == 7:
                await asyncio.sleep(1)  # waited for three rounds (0.03 s), then cancelled
            if self.calls == 15:
                raise DatabaseWentBack("the database went back under the running service: g t[0]: it holds no row of it")
            return "SELECT 0"

    service = Service("clearing", Settings(), migrations=None)
    service.pool = Pool()  # type: ignore[assignment]
    service.held = {"g": {("t", 0): 5}}
    with caplog.at_level(logging.DEBUG, logger="yidi.platform.service"):
        await asyncio.wait_for(service._check_held_every(0.01), 5)
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert [level for level, _ in said] == ["WARNING", "INFO", "CRITICAL"], said
    assert said[0][1].startswith("clearing: the check that its database has not gone back has not run for 0 s: "
                                 "TransientError('the database is away')"), said
    assert said[1][1] == "clearing: the check that its database has not gone back runs again"
    assert service.exit_code == 2 and service.pool.calls == 15


async def test_the_services_periodic_check_says_a_failure_once_goes_on_and_stops_the_service_on_a_database_gone_back(
        caplog):
    import asyncio
    import logging
    import time

    from prometheus_client import REGISTRY

    from yidi.platform import metrics
    from yidi.platform.errors import DatabaseWentBack
    from yidi.platform.service import Service
    from yidi.platform.settings import Settings

    class Pool:
        """Refuses twice (a privilege lost after a failover), then answers, then finds a row gone back."""

        def __init__(self) -> None:
            self.queries: list[str] = []
            self.checked_at: list[float] = []  # yidi_progress_checked_timestamp_seconds as each check began

        async def execute(self, sql: str) -> str:
            self.queries.append(sql)
            self.checked_at.append(REGISTRY.get_sample_value("yidi_progress_checked_timestamp_seconds"))
            if len(self.queries) <= 2:
                raise RuntimeError("permission denied for function stage_progress_went_back")
            if len(self.queries) == 4:
                raise DatabaseWentBack("the database went back under the running service: g t[0]: it holds no row of it")
            return "SELECT 0"

    service = Service("clearing", Settings(), migrations=None)
    service.pool = Pool()  # type: ignore[assignment]
    service.held = {"g": {("t", 0): 5}, "quiet": {}}
    metrics.PROGRESS_CHECKED.set(0)
    began = time.time()
    with caplog.at_level(logging.INFO, logger="yidi.platform.service"):
        await asyncio.wait_for(service._check_held_every(0.01), 5)
    assert service.exit_code == 2
    assert len(service.pool.queries) == 4
    # Set by the check that ran, not by those that failed, nor by the one that found the row gone back.
    assert service.pool.checked_at[:3] == [0, 0, 0]
    assert began <= service.pool.checked_at[3] == REGISTRY.get_sample_value(
        "yidi_progress_checked_timestamp_seconds") <= time.time()
    assert all("FROM (VALUES ('t', 0, 5::bigint))" in q and "'quiet'" not in q for q in service.pool.queries)
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in said] == ["WARNING", "INFO", "CRITICAL"], said
    assert "permission denied" in said[0][1]


def test_after_a_restore_every_stage_waits_for_the_services_feeds_and_never_for_another_stage():
    # Pricing priced with the backup's policies while its feeds applied again what came after it (a
    # review, session 49). A stage waiting on another stage could wait on one whose loop waits on
    # it: only feeds are waited for.
    from yidi.platform.catchup import CatchUp
    from yidi.platform.kafka import TransactionalStage
    from yidi.platform.service import Service
    from yidi.platform.settings import Settings

    settings = Settings(namespace="t.")

    async def nothing(records):  # noqa: ANN001, ANN202
        return []

    def stages() -> list[TransactionalStage]:
        return [TransactionalStage("clearing", "clearing", settings, ["settlement.priced"], "yidi-clearing-priced", nothing),
                TransactionalStage("clearing-admin", "clearing", settings, ["clearing.requests"], "yidi-clearing-admin",
                                   nothing)]

    marked = {("t.settlement.priced", 0): 8}
    service = Service("clearing", settings, migrations=None)
    service.pool = object()  # type: ignore[assignment]
    service.stages = stages()
    service.marks = {settings.group("yidi-clearing-priced"): marked, settings.group("yidi-clearing-admin"): marked}
    service._wait_for_feeds()
    assert [s.catch_up for s in service.stages] == [None, None]  # the two stages' marks: no feed to wait for

    # A feed group with marks that no feed of this run reads (a setting turned off since): not
    # waited for, or every start would wait the 10 minutes (the diff review, session 49).
    service.marks[settings.group("yidi-clearing-feed-clearing.prepayment-status")] = {("t.x", 0): 5}
    service._wait_for_feeds()
    assert [s.catch_up for s in service.stages] == [None, None]

    service.marks[settings.group("yidi-clearing-feed-refdata.policies")] = {("t.refdata.policies", 0): 5}
    service.feed_groups.add(settings.group("yidi-clearing-feed-refdata.policies"))
    service._wait_for_feeds()
    waits = [s.catch_up for s in service.stages]
    assert all(isinstance(w, CatchUp) and w.waiting for w in waits) and waits[0] is not waits[1]
    assert all(w._targets == {settings.group("yidi-clearing-feed-refdata.policies"): {("t.refdata.policies", 0): 5}}
               for w in waits)
