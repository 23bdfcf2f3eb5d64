"""A month's cut, on the real Postgres and Kafka: settlements handled again after a restore land in the
month they landed in, whichever comes first of them and their month's run handled again.

A month's close records where clearing's settlement stage stood on each partition (``period_cuts``,
from ``stage_progress.reached``) and publishes it on ``clearing.periods``; ``yidi-recover clearing``
writes the closes a restored database lacks. A settlement record below its partition's cut lands
in the month however late it is handled; a month's run handled again totals the month only once
the settlement stage has passed its cut. Before, a settlement entered before the close and handled
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
from tests.integration.priced import priced, published
from yidi.contracts.clearing import CutPosition, PeriodClosed
from yidi.platform import progress
from yidi.platform.jsonwire import dumps
from yidi.platform.kafka import Incoming
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


async def test_a_settlement_below_its_months_cut_lands_in_the_month_however_late_it_is_handled(clearing_of_its_own):
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

    # After the close: a settlement of September lands in October.
    await _settle(settings, settle, [_settlement(settings, "D", "202509", 0, 2)])
    # A settlement whose record is below the cut was entered before the close: one the database
    # lost (a restore) and handled again now lands in September, where the published statement
    # has it. (Before the cut, it landed in October too: cleared twice.) In one batch with a
    # record past the cut, each lands by its own offset.
    await _settle(settings, settle, [_settlement(settings, "E", "202509", 1, 0),
                                     _settlement(settings, "F", "202509", 1, 1)])
    landed = await _periods(repo)
    assert {k: landed[k] for k in ("S-A", "S-B", "S-C", "S-D", "S-E", "S-F")} == {
        "S-A": "202509", "S-B": "202509", "S-C": "202509", "S-D": "202510", "S-E": "202509", "S-F": "202510"}


async def test_a_months_run_handled_again_waits_for_the_settlements_before_its_cut(clearing_of_its_own):
    settings, repo = clearing_of_its_own
    settle, admin = ClearingHandler(settings, repo), ClearingAdminHandler(settings, repo)
    topic = settings.topic("settlement.priced")
    await _settle(settings, settle, [_settlement(settings, "A", "202510", 0, 0)])
    # The restored database lacks October's close, made when the stage stood at 3 on partition 0:
    # yidi-recover writes it, as clearing.periods has it.
    async with repo.transaction() as conn:
        await conn.execute("INSERT INTO clearing.periods (setlym, state, closed_at) VALUES ('202510', 'closed', now())")
        await conn.execute("INSERT INTO clearing.period_cuts VALUES ('202510', $1, 0, 3)", topic)

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


async def test_recover_writes_the_months_closed_after_the_backup_with_their_cuts(clearing_of_its_own):
    settings, repo = clearing_of_its_own
    topic = settings.topic("settlement.priced")
    async with repo.transaction() as conn:  # the backup has September closed
        await conn.execute("INSERT INTO clearing.periods (setlym, state, closed_at, totalled_at) "
                           "VALUES ('202509', 'closed', now(), now())")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for month, offset in (("202509", 5), ("202510", 40), ("202510", 41)):  # October's run published twice
            close = PeriodClosed(setlym=month, closed_at="2025-11-03T02:00:00+00:00",
                                 cut=[CutPosition(topic=topic, partition=0, offset=offset)])
            await producer.send_and_wait(settings.topic(CLEARING_PERIODS), dumps(close), key=month.encode())
    finally:
        await producer.stop()

    said = await _own_part("clearing")(settings, False)  # as yidi-recover without --apply: nothing written
    assert len(said) == 1 and said[0].startswith("closed  month 202510")
    async with repo.transaction() as conn:
        assert await conn.fetchval("SELECT count(*) FROM clearing.period_cuts") == 0
    assert await restore_closes(settings, True) == said
    async with repo.transaction() as conn:
        periods = {r["setlym"]: r["totalled_at"] for r in await conn.fetch("SELECT setlym, totalled_at FROM clearing.periods")}
        cuts = [tuple(r) for r in await conn.fetch("SELECT setlym, topic, kafka_partition, cut FROM clearing.period_cuts")]
    assert set(periods) == {"202509", "202510"} and periods["202510"] is None  # its run is handled again
    assert cuts == [("202510", topic, 0, 41)]
    assert await restore_closes(settings, True) == []  # run again: nothing more
