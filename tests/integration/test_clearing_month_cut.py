"""A month's cut, on the real Postgres and Kafka: settlements handled again after a restore land in the
month they landed in, whichever comes first of them and their month's run handled again.

A month's close records where clearing's settlement stage stood on each partition (``period_cuts``,
from ``stage_progress.reached``) and publishes it on ``clearing.periods``; ``yidi-recover clearing``
writes the closes a restored database lacks (``restored``). A settlement record below such a cut
lands in the month however late it is handled; the month's run handled again totals it only once
the settlement stage has passed the cut. Before, a settlement entered before the close and handled
again after it landed in the next month (cleared twice), and the other way round (never cleared).
"""

from __future__ import annotations

import uuid

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from services.clearing.admin import BeforeItsCut, ClearingAdminHandler
from services.clearing.handlers import ClearingHandler
from services.clearing.repository import SETTLEMENT_GROUP
from services.clearing.restore import restore_closes
from yidi.platform.recover import Refused
from tests.integration.priced import priced, published
from yidi.contracts.clearing import CutPosition, PeriodClosed
from yidi.platform import progress
from yidi.platform.jsonwire import dumps
from yidi.platform.kafka import Incoming, delete_namespace_topics
from yidi.platform.recover import _own_part
from yidi.platform.topics import CLEARING_PERIODS, CLEARING_STATEMENTS

pytestmark = pytest.mark.integration

PAIR = ("131000", "110000")


def _at(record: Incoming, partition: int, offset: int) -> Incoming:
    return Incoming(record.topic, partition, offset, record.key, record.value, record.timestamp_ms)


async def _settle(settings, handler: ClearingHandler, records: list[Incoming]) -> None:
    """``records`` handled by the settlement stage as one batch, recording where it began and ended."""
    group = settings.group(SETTLEMENT_GROUP)
    with progress.batch(progress.began(group, [(r.topic, r.partition, r.offset) for r in records])):
        await handler(records)


def _settlement(settings, name: str, month: str, partition: int, offset: int) -> Incoming:
    day = f"{month[:4]}-{month[4:]}-20 10:00:00"
    return _at(priced(settings, "settle", f"M-{name}", f"S-{name}", PAIR, "60.00", inf_time=day, setl_time=day),
               partition, offset)


def _run(settings, month: str) -> Incoming:
    body = {"type": "run_month", "reqid": f"R-{uuid.uuid4().hex}", "setlym": month}
    return Incoming(settings.topic("clearing.requests"), 0, 1, body["reqid"].encode(), orjson.dumps(body), 0)


async def _periods(repo) -> dict[str, str]:
    async with repo.transaction() as conn:
        return {r["setl_id"]: r["clr_period"] for r in await conn.fetch("SELECT setl_id, clr_period FROM clearing.ledger")}


async def _restored_close(repo, month: str, cuts: list[tuple[str, int, int]]) -> None:
    """``month`` closed after the backup, as yidi-recover writes it from clearing.periods."""
    async with repo.transaction() as conn:
        await conn.execute("INSERT INTO clearing.periods (setlym, state, closed_at) VALUES ($1, 'closed', now())", month)
        await conn.executemany("INSERT INTO clearing.period_cuts VALUES ($1, $2, $3, $4, true)",
                               [(month, t, p, o) for t, p, o in cuts])


async def test_a_close_publishes_its_cut_which_steers_nothing_in_this_database(clearing_of_its_own):
    settings, repo = clearing_of_its_own
    settle, admin = ClearingHandler(settings, repo), ClearingAdminHandler(settings, repo)
    topic = settings.topic("settlement.priced")
    await _settle(settings, settle, [_settlement(settings, "A", "202509", 0, 0),
                                     _settlement(settings, "B", "202509", 0, 1)])
    await _settle(settings, settle, [_settlement(settings, "C", "202509", 1, 0)])

    # The close records where the stage stood: the end of its last batch on each partition.
    out = await admin([_run(settings, "202509")])
    (closed,) = published(settings, out, CLEARING_PERIODS)
    assert closed["setlym"] == "202509"
    assert sorted((c["topic"], c["partition"], c["offset"]) for c in closed["cut"]) == [(topic, 0, 2), (topic, 1, 1)]
    (statement,) = published(settings, out, CLEARING_STATEMENTS)
    assert statement["settlements"] == 3

    # A close made in this database covers only records it holds: its cut steers nothing. (The
    # topic created again since, its offsets from 0: a new September bill lands after September.)
    await _settle(settings, settle, [_settlement(settings, "D", "202509", 0, 2),
                                     _settlement(settings, "E", "202509", 1, 0)])
    landed = await _periods(repo)
    assert [landed[k] for k in ("S-A", "S-B", "S-C", "S-D", "S-E")] == ["202509"] * 3 + ["202510"] * 2


async def test_settlements_and_cancellations_land_by_the_cuts_a_restore_wrote(clearing_of_its_own):
    settings, repo = clearing_of_its_own
    settle = ClearingHandler(settings, repo)
    topic = settings.topic("settlement.priced")
    async with repo.transaction() as conn:  # August closed before the backup
        await conn.execute("INSERT INTO clearing.periods (setlym, state, closed_at, totalled_at) "
                           "VALUES ('202508', 'closed', now(), now())")
    # September and October closed after the backup, the stage at 2 and then at 4 on partition 0.
    await _restored_close(repo, "202509", [(topic, 0, 2)])
    await _restored_close(repo, "202510", [(topic, 0, 4)])
    first = _settlement(settings, "A", "202509", 0, 0)
    cancel = _at(priced(settings, "cancel", "M-A-undo", "S-A", PAIR, "60.00", inf_time="2025-09-25 10:00:00"), 0, 1)
    # Handled again in one batch, each record lands by its own offset against the cuts.
    await _settle(settings, settle, [first, cancel,
                                     _settlement(settings, "B", "202509", 0, 2),  # after September's close
                                     _settlement(settings, "C", "202510", 0, 3),  # before October's
                                     _settlement(settings, "D", "202510", 0, 4),  # after both
                                     _settlement(settings, "E", "202509", 0, 5)])
    async with repo.transaction() as conn:
        rows = {r["setl_id"]: (r["clr_period"], r["undo_period"]) for r in await conn.fetch(
            "SELECT setl_id, clr_period, undo_period FROM clearing.ledger")}
    assert rows == {"S-A": ("202509", "202509"), "S-B": ("202510", None), "S-C": ("202510", None),
                    "S-D": ("202511", None), "S-E": ("202511", None)}


async def test_a_cancellation_in_a_later_batch_lands_by_its_own_records_offset(clearing_of_its_own):
    settings, repo = clearing_of_its_own
    settle = ClearingHandler(settings, repo)
    topic = settings.topic("settlement.priced")
    await _restored_close(repo, "202509", [(topic, 0, 2)])
    await _restored_close(repo, "202510", [(topic, 0, 4)])
    await _settle(settings, settle, [_settlement(settings, "A", "202509", 0, 0)])
    # Cancelled after September's close, before October's: the undoing lands in October.
    cancel = _at(priced(settings, "cancel", "M-A-undo", "S-A", PAIR, "60.00", inf_time="2025-09-26 10:00:00"), 0, 3)
    await _settle(settings, settle, [cancel])
    async with repo.transaction() as conn:
        row = await conn.fetchrow("SELECT clr_period, undo_period FROM clearing.ledger WHERE setl_id = 'S-A'")
    assert tuple(row) == ("202509", "202510")


async def test_a_close_made_in_this_database_waits_for_nothing(clearing_of_its_own):
    """Even where the settlement stage's row went lower since (its topic deleted and created again,
    and its rows deleted, as the runbook says): the run resumed after its close totals the month."""
    settings, repo = clearing_of_its_own
    settle, admin = ClearingHandler(settings, repo), ClearingAdminHandler(settings, repo)
    await _settle(settings, settle, [_settlement(settings, "A", "202509", 0, 0),
                                     _settlement(settings, "B", "202509", 0, 1)])
    request = _run(settings, "202509")
    reqid = orjson.loads(request.value)["reqid"]
    assert await repo.close_month("202509", reqid, cut_of=settings.group(SETTLEMENT_GROUP)) is None
    async with repo.transaction() as conn:
        assert await conn.fetchval("SELECT count(*) FROM clearing.period_cuts WHERE NOT restored") == 1
        await conn.execute("DELETE FROM clearing.stage_progress")
    out = await admin([request])  # and the run stopped there: resumed
    (statement,) = published(settings, out, CLEARING_STATEMENTS)
    assert statement["settlements"] == 2


async def test_a_months_run_handled_again_waits_for_the_settlements_before_its_cut(clearing_of_its_own):
    settings, repo = clearing_of_its_own
    settle, admin = ClearingHandler(settings, repo), ClearingAdminHandler(settings, repo)
    topic = settings.topic("settlement.priced")
    # The restored database lacks October's close, made when the stage stood at 3 on partition 0:
    # yidi-recover writes it, as clearing.periods has it. The stage has no row of it yet.
    await _restored_close(repo, "202510", [(topic, 0, 3)])
    with pytest.raises(BeforeItsCut, match=r"202510's run waits .*\[0\] at nothing of 3"):
        await admin([_run(settings, "202510")])
    await _settle(settings, settle, [_settlement(settings, "A", "202510", 0, 0)])
    with pytest.raises(BeforeItsCut, match=r"202510's run waits .*\[0\] at 1 of 3"):
        await admin([_run(settings, "202510")])
    # The settlement stage's redo passes the cut: the records below it land in October (closed
    # since, in this database), the one past it in November; the run then totals October.
    await _settle(settings, settle, [_settlement(settings, "B", "202510", 0, 1),
                                     _settlement(settings, "C", "202510", 0, 2),
                                     _settlement(settings, "D", "202510", 0, 3)])
    out = await admin([_run(settings, "202510")])
    (statement,) = published(settings, out, CLEARING_STATEMENTS)
    assert statement["settlements"] == 3
    landed = await _periods(repo)
    assert (landed["S-B"], landed["S-C"], landed["S-D"]) == ("202510", "202510", "202511")
    # Totalled, the month's cut steers nothing more.
    await _settle(settings, settle, [_settlement(settings, "E", "202510", 0, 0)])
    assert (await _periods(repo))["S-E"] == "202511"


async def _publish(settings, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key, partition=0)
    finally:
        await producer.stop()


def _close(month: str, topic: str, offset: int) -> tuple[bytes, bytes]:
    close = PeriodClosed(setlym=month, closed_at="2025-11-03T02:00:00+00:00",
                         cut=[CutPosition(topic=topic, partition=0, offset=offset)])
    return month.encode(), dumps(close)


async def _cuts(repo) -> list[tuple]:
    async with repo.transaction() as conn:
        return [tuple(r) for r in await conn.fetch("SELECT * FROM clearing.period_cuts ORDER BY setlym")]


@pytest.fixture
async def own_topics(clearing_of_its_own):
    """Clearing's database and a topic namespace of the test's own: clearing.periods holds no other
    test's closes."""
    settings, repo = clearing_of_its_own
    own = settings.model_copy(update={"namespace": f"c{uuid.uuid4().hex[:8]}."})
    try:
        yield own, repo
    finally:
        await delete_namespace_topics(own.kafka_bootstrap, own.namespace)


async def test_recover_writes_the_months_closed_after_the_backup_with_their_cuts(own_topics):
    settings, repo = own_topics
    topic = settings.topic(f"cut-{uuid.uuid4().hex[:8]}")  # the settlement stage's input, 50 records
    await _publish(settings, topic, [(b"k", b"v")] * 50)
    async with repo.transaction() as conn:  # the backup has September closed
        await conn.execute("INSERT INTO clearing.periods (setlym, state, closed_at, totalled_at) "
                           "VALUES ('202509', 'closed', now(), now())")
    periods = settings.topic(CLEARING_PERIODS)
    await _publish(settings, periods, [_close("202509", topic, 5), _close("202510", topic, 40),
                                       _close("202510", topic, 41),  # October's run published twice
                                       _close("202511", topic, 45), (b"202511", None)])  # a tombstone

    said = await _own_part("clearing")(settings, False)  # as yidi-recover without --apply: nothing written
    assert len(said) == 1 and said[0].startswith("closed  month 202510")
    assert await _cuts(repo) == []
    assert await restore_closes(settings, True) == said
    async with repo.transaction() as conn:
        periods_now = {r["setlym"]: r["totalled_at"] for r in await conn.fetch("SELECT setlym, totalled_at FROM clearing.periods")}
    assert set(periods_now) == {"202509", "202510"} and periods_now["202510"] is None  # its run is handled again
    assert await _cuts(repo) == [("202510", topic, 0, 41, True)]
    assert await restore_closes(settings, True) == []  # run again: nothing more


async def test_recover_names_a_record_that_is_no_close_until_a_tombstone_under_its_key(own_topics):
    # An answer a gateway had sent to clearing.periods as its reply_to (accepted before session 48),
    # keyed by its facility: the tool stopped at it, and a tombstone helped only once the log
    # cleaner had run.
    settings, repo = own_topics
    topic = settings.topic(f"cut-{uuid.uuid4().hex[:8]}")
    await _publish(settings, topic, [(b"k", b"v")] * 10)
    periods = settings.topic(CLEARING_PERIODS)
    answer = orjson.dumps({"infcode": 0, "msgid": "H11010500001202511031000000001", "output": {}})
    await _publish(settings, periods, [_close("202510", topic, 8), (b"H11010500001", answer)])
    with pytest.raises(Refused, match=r"offset 1 \(key 'H11010500001'\) is not a month's close .* a tombstone "
                                      r"under its key removes it"):
        await restore_closes(settings, True)
    assert await _cuts(repo) == []
    await _publish(settings, periods, [(b"H11010500001", None)])
    (said,) = await restore_closes(settings, True)
    assert said.startswith("closed  month 202510")
    assert await _cuts(repo) == [("202510", topic, 0, 8, True)]


async def test_recover_refuses_a_cut_below_where_the_restored_stage_stood(own_topics):
    settings, repo = own_topics
    topic = settings.topic(f"cut-{uuid.uuid4().hex[:8]}")
    await _publish(settings, topic, [(b"k", b"v")] * 10)
    async with repo.transaction() as conn:  # the backup's settlement stage stood at 7
        await conn.execute("INSERT INTO clearing.stage_progress (consumer_group, topic, kafka_partition, applied_below, "
                           "reached) VALUES ($1, $2, 0, 5, 7)", settings.group(SETTLEMENT_GROUP), topic)
    await _publish(settings, settings.topic(CLEARING_PERIODS), [_close("202510", topic, 6)])
    with pytest.raises(Refused, match=r"202510's cut is at offset 6 .* below where the restored database's "
                                      r"settlement stage stood \(7\)"):
        await restore_closes(settings, True)
    assert await _cuts(repo) == []


async def test_recover_refuses_a_cut_kafka_no_longer_has_and_a_month_out_of_order_writing_nothing(own_topics):
    settings, repo = own_topics
    topic = settings.topic(f"cut-{uuid.uuid4().hex[:8]}")
    await _publish(settings, topic, [(b"k", b"v")] * 10)
    periods = settings.topic(CLEARING_PERIODS)
    # The settlements' topic deleted and created again since the close: its cut is past the end.
    await _publish(settings, periods, [_close("202510", topic, 41)])
    with pytest.raises(Refused, match=r"202510's cut is at offset 41 of .*\[0\], which ends at 10"):
        await restore_closes(settings, True)
    await _publish(settings, periods, [_close("202510", topic, 8), _close("202511", f"{topic}-gone", 3)])
    with pytest.raises(Refused, match=r"202511's cut .* which no longer exists"):
        await restore_closes(settings, True)
    assert await _cuts(repo) == []
    # A month the database lacks before one it has closed: not this database's topic.
    await _publish(settings, periods, [(b"202511", None)])
    async with repo.transaction() as conn:
        await conn.execute("INSERT INTO clearing.periods (setlym, state, closed_at, totalled_at) "
                           "VALUES ('202512', 'closed', now(), now())")
    with pytest.raises(Refused, match=r"month\(s\) 202510 closed, which the restored database lacks although it "
                                      r"has 202512 closed"):
        await restore_closes(settings, True)
    assert await _cuts(repo) == []
