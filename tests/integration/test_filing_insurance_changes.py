"""R7 on the real Postgres: filing's refdata.persons stage ends the long-term filings under a
person's old insurance when the insured region changes it, and publishes every ended filing
exactly as often as eligibility needs it (once, and again when a batch is handled again)."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta

import orjson
import pytest
from prometheus_client import REGISTRY

from yidi.contracts.filing import FilingEvent
from yidi.domain.codes import BUSINESS_TZ, FilingCategory, InsuranceType
from yidi.domain.filing import FilingAsk, new_filing
from yidi.platform.errors import TransientError
from yidi.platform.kafka import Incoming

from services.filing.persons import FilingPersonsHandler
from services.filing.repository import FilingRepository
from tests.conftest import unique

pytestmark = pytest.mark.integration

REGION, FILED = "131000", "110000"


def ago(**delta: float) -> datetime:
    return datetime.now(BUSINESS_TZ) - timedelta(**delta)


class Feed:
    """refdata.persons records of one person, a retiree (the tests file retiree_resettled, R4), at
    increasing offsets of one partition."""

    def __init__(self, psn_no: str) -> None:
        self.psn_no, self.offset = psn_no, 0

    def record(self, *, active: bool = True, insutype: str = "310", at: datetime | None = None) -> Incoming:
        """A record the region dated ``at`` (none: dated by its publish time)."""
        self.offset += 1
        value = {"psn_no": self.psn_no, "psn_name": "p", "insuplc_admdvs": REGION, "insutype": insutype,
                 "psn_type": "12", "active": active, "updated_at": at.isoformat() if at else ""}
        return Incoming("refdata.persons", 2, self.offset, self.psn_no.encode(), orjson.dumps(value),
                        int(time.time() * 1000))


async def file(repo: FilingRepository, psn_no: str, category: FilingCategory, *, made: datetime,
               insutype: str = "310", begin: date = date(2025, 1, 1), at_once: bool = True) -> str:
    """A filing asked for at ``made``."""
    filing = new_filing(FilingAsk(unique("F"), psn_no, InsuranceType(insutype), REGION, FILED, category, begin,
                                  None, at_once))
    async with repo.transaction() as conn:
        await repo.save(conn, filing, 1, begin, "add", unique("R"), "import", made_at=made)
    return filing.filing_id


async def status(repo: FilingRepository, filing_id: str) -> tuple[str, int]:
    async with repo.transaction() as conn:
        found = await repo.get(conn, filing_id)
    assert found is not None
    return found[0].status.value, found[0].version


def ended(out) -> list[FilingEvent]:
    return [FilingEvent.model_validate(orjson.loads(o.value)) for o in out]


async def test_a_stop_ends_the_long_term_filings_under_the_old_insurance_and_nothing_else(filing_repo, settings):
    psn = unique("P")
    handler, feed = FilingPersonsHandler(settings, filing_repo), Feed(psn)
    long_term = await file(filing_repo, psn, FilingCategory.RETIREE_RESETTLED, made=ago(days=3))
    waiting = await file(filing_repo, psn, FilingCategory.LONG_TERM_RESIDENT, made=ago(days=3), at_once=False)
    temporary = await file(filing_repo, psn, FilingCategory.TEMPORARY_OTHER, made=ago(days=3),
                           begin=datetime.now(BUSINESS_TZ).date())
    other_fund = await file(filing_repo, psn, FilingCategory.LONG_TERM_RESIDENT, made=ago(days=3), insutype="390")

    first = await handler([feed.record(at=ago(days=5))])  # the first record seen: nothing to compare with
    same = await handler([feed.record(at=ago(days=4))])  # the same insurance again (a reload): no change
    stopped_on = ago(days=1).replace(hour=12)
    stop = await handler([feed.record(active=False, at=stopped_on)])

    assert first == [] and same == []
    events = ended(stop)
    assert sorted((e.event, e.filing.filing_id, e.filing.status.value, e.result, e.reply_to) for e in events) == sorted([
        ("ended", long_term, "cancelled", None, ""), ("ended", waiting, "cancelled", None, "")])
    by_id = {e.filing.filing_id: e.filing for e in events}
    # In force until the day before the stop, and on its day until the stop (a stay admitted that
    # morning stays covered, as eligibility judges the insurance by the moment).
    assert [(p.begndate, p.enddate, p.ended_at) for p in by_id[long_term].earlier] == [
        (date(2025, 1, 1), stopped_on.date() - timedelta(days=1), stopped_on)]
    assert by_id[waiting].earlier == []  # never in force
    assert {o.topic for o in stop} == {settings.topic("filing.events")} and {o.key for o in stop} == {psn.encode()}
    assert await status(filing_repo, temporary) == ("active", 1)
    assert await status(filing_repo, other_fund) == ("active", 1)
    async with filing_repo.transaction() as conn:
        history = await filing_repo.history_in(conn, long_term)
    assert [(h["action"], h["decl_source"]) for h in history] == [("add", "import"), ("ended", "platform")]
    assert f"(stopped) on {stopped_on.date().isoformat()}" in history[-1]["reason"]


async def test_a_move_to_another_fund_keeps_filings_made_for_the_new_one_or_after_the_change(filing_repo, settings):
    psn = unique("P")
    handler, feed = FilingPersonsHandler(settings, filing_repo), Feed(psn)
    await handler([feed.record(insutype="390", at=ago(days=5))])
    old = await file(filing_repo, psn, FilingCategory.RETIREE_RESETTLED, made=ago(days=3), insutype="390")
    late = await file(filing_repo, psn, FilingCategory.POSTED_WORKER, made=ago(minutes=30), insutype="390")
    new = await file(filing_repo, psn, FilingCategory.RETIREE_RESETTLED, made=ago(hours=1), insutype="310")
    # The region dates the move two hours ago; filing reads it now, after both later filings.
    moved = await handler([feed.record(insutype="310", at=ago(hours=2))])
    assert [e.filing.filing_id for e in ended(moved)] == [old]
    assert await status(filing_repo, late) == ("active", 1)
    assert await status(filing_repo, new) == ("active", 1)


async def test_a_resume_ends_what_the_stop_missed_and_keeps_what_was_filed_while_stopped(filing_repo, settings):
    psn = unique("P")
    handler, feed = FilingPersonsHandler(settings, filing_repo), Feed(psn)
    await handler([feed.record(at=ago(days=10))])
    await handler([feed.record(active=False, at=ago(days=3))])
    # Asked for before the stop, saved after it (the filing stage lagging): the stop did not see it.
    missed = await file(filing_repo, psn, FilingCategory.RETIREE_RESETTLED, made=ago(days=4))
    while_stopped = await file(filing_repo, psn, FilingCategory.LONG_TERM_RESIDENT, made=ago(days=2))
    resumed = await handler([feed.record(active=True, at=ago(days=1))])
    events = ended(resumed)
    assert [e.filing.filing_id for e in events] == [missed]
    assert events[0].filing.earlier[0].enddate == ago(days=3).date() - timedelta(days=1)  # as at the stop
    assert await status(filing_repo, while_stopped) == ("active", 1)


async def test_a_filing_is_judged_by_when_it_was_asked_for_not_by_its_last_write(filing_repo, settings):
    """Through the filing stage: an add asked for five days ago and cancelled now is still a filing
    made before a stop dated two days ago, read after the cancellation: its version in force ends
    at the stop, not at the cancellation."""
    from services.filing.handlers import FilingHandler

    psn = unique("P")
    requests, handler, feed = FilingHandler(settings, filing_repo), FilingPersonsHandler(settings, filing_repo), Feed(psn)
    await handler([feed.record(at=ago(days=10))])

    def request(offset: int, body: dict, when: datetime) -> Incoming:
        return Incoming("filing.requests", 0, offset, psn.encode(), orjson.dumps(body | {"reqid": unique("R"), "psn_no": psn}),
                        int(when.timestamp() * 1000))

    added = await requests([request(1, {"action": "add", "insutype": "310", "insuplc_admdvs": REGION, "filed_admdvs": FILED,
                                        "category": "retiree_resettled", "begndate": "2025-01-01",
                                        "decl_source": "import"}, ago(days=5))])
    filing_id = ended(added)[0].filing.filing_id
    cancelled = await requests([request(2, {"action": "cancel", "filing_id": filing_id}, ago(seconds=1))])
    stop = await handler([feed.record(active=False, at=ago(days=2))])
    events = ended(stop)
    assert ended(cancelled)[0].result.accepted
    assert [e.filing.filing_id for e in events] == [filing_id]
    assert events[0].filing.status.value == "cancelled"
    assert [p.enddate for p in events[0].filing.earlier] == [ago(days=2).date() - timedelta(days=1)]


async def test_a_change_is_made_when_it_was_asked_for_and_a_request_overtaken_by_a_change_is_refused(
        filing_repo, settings):
    from services.filing.handlers import FilingHandler

    psn = unique("P")
    requests, handler, feed = FilingHandler(settings, filing_repo), FilingPersonsHandler(settings, filing_repo), Feed(psn)
    await handler([feed.record(at=ago(days=10))])
    offsets = iter(range(1, 100))

    def request(body: dict, when: datetime) -> Incoming:
        body = {"reqid": unique("R"), "psn_no": psn, "insutype": "310", "insuplc_admdvs": REGION, "filed_admdvs": FILED,
                "category": "retiree_resettled", "begndate": "2025-01-01", "decl_source": "import"} | body
        return Incoming("filing.requests", 0, next(offsets), psn.encode(), orjson.dumps(body), int(when.timestamp() * 1000))

    added = ended(await requests([request({"action": "add"}, ago(days=5))]))[0]
    changed = ended(await requests([request({"action": "change", "filing_id": added.filing.filing_id,
                                             "filed_admdvs": "120000"}, ago(hours=1))]))[0]
    # A stop dated before the change was asked for, read after it: the changed filing stays.
    assert await handler([feed.record(active=False, at=ago(hours=2))]) == []
    assert changed.result.accepted and await status(filing_repo, added.filing.filing_id) == ("active", 2)

    # Asked for before the person moved to 390, handled after it: refused under 310, taken under 390.
    await handler([feed.record(insutype="390", at=ago(minutes=30))])
    late_310 = await requests([request({"action": "add"}, ago(minutes=40))])
    late_390 = ended(await requests([request({"action": "add", "insutype": "390"}, ago(minutes=40))]))
    after = ended(await requests([request({"action": "add", "category": "temporary_other", "insutype": "390"},
                                          ago(minutes=10))]))
    refusal = orjson.loads(late_310[0].value)
    assert [o.topic for o in late_310] == [settings.topic("filing.results")]
    assert not refusal["accepted"] and "(R7)" in refusal["reason"] and "is not the person’s now" in refusal["reason"]
    assert late_390[0].result.accepted and after[0].result.accepted


async def test_a_filing_names_the_insurance_the_person_holds(filing_repo, settings):
    """R20: a filing is the insured region's record of its own insured person. One naming another
    region's or fund's insurance, or one stopped, was accepted, and came into force the day the
    person moved into that insurance."""
    from services.filing.handlers import FilingHandler

    psn = unique("P")
    requests, handler, feed = FilingHandler(settings, filing_repo), FilingPersonsHandler(settings, filing_repo), Feed(psn)
    offsets = iter(range(1, 100))

    async def ask(**fields: str) -> dict:
        body = {"action": "add", "reqid": unique("R"), "psn_no": psn, "insutype": "310", "insuplc_admdvs": REGION,
                "filed_admdvs": FILED, "category": "temporary_other", "begndate": "2026-01-01",
                "decl_source": "self_service"} | fields
        out = await requests([Incoming("filing.requests", 0, next(offsets), psn.encode(), orjson.dumps(body),
                                       int(time.time() * 1000))])
        value = orjson.loads(out[-1].value)
        return value.get("result") or value

    unknown = await ask()  # no record of the person yet: not checked
    await handler([feed.record(at=ago(days=1))])  # insured in 131000, fund 310
    other_fund, other_region, held = await ask(insutype="390"), await ask(insuplc_admdvs="132000"), await ask()
    await handler([feed.record(active=False, at=ago(hours=1))])
    stopped = await ask()
    assert unknown["accepted"] and held["accepted"]
    for refused in (other_fund, other_region):
        assert not refused["accepted"] and "(R20)" in refused["reason"]
        assert "has this person under the 310 insurance of region 131000" in refused["reason"]
    assert not stopped["accepted"] and "is stopped" in stopped["reason"] and "(R20)" in stopped["reason"]


async def test_an_older_record_changes_nothing(filing_repo, settings):
    psn = unique("P")
    handler, feed = FilingPersonsHandler(settings, filing_repo), Feed(psn)
    filing_id = await file(filing_repo, psn, FilingCategory.RETIREE_RESETTLED, made=ago(days=3))
    await handler([feed.record(at=ago(hours=1))])
    older = await handler([feed.record(active=False, at=ago(hours=2))])
    assert older == [] and await status(filing_repo, filing_id) == ("active", 1)
    # Not even as the base of the next comparison: the same insurance, newer, is no change.
    assert await handler([feed.record(at=ago(minutes=1))]) == []


async def test_a_batch_handled_again_publishes_what_its_records_ended_however_often_it_is_lost(filing_repo, settings):
    psn = unique("P")
    handler, feed = FilingPersonsHandler(settings, filing_repo), Feed(psn)
    employee = await file(filing_repo, psn, FilingCategory.RETIREE_RESETTLED, made=ago(days=3))
    resident = await file(filing_repo, psn, FilingCategory.RETIREE_RESETTLED, made=ago(days=3), insutype="390")
    await handler([feed.record(at=ago(days=5))])
    to_resident, back = feed.record(insutype="390", at=ago(days=2)), feed.record(insutype="310", at=ago(days=1))
    # Each time Postgres commits and the Kafka transaction is lost; the partition's next owner
    # reads from the committed offset, a batch as long as it gets.
    first = await handler([to_resident])
    longer = await handler([to_resident, back])
    third = await handler([to_resident, back])
    parts = [await handler([r]) for r in (to_resident, back)]

    assert [e.filing.filing_id for e in ended(first)] == [employee]
    assert sorted(e.filing.filing_id for e in ended(longer)) == sorted([employee, resident])
    assert sorted(o.value for o in third) == sorted(o.value for o in longer)
    assert [[e.filing.filing_id for e in ended(p)] for p in parts] == [[employee], [resident]]
    assert await status(filing_repo, employee) == ("cancelled", 2)
    assert await status(filing_repo, resident) == ("cancelled", 2)
    # A later record without a change publishes nothing.
    assert await handler([feed.record(at=ago(minutes=1))]) == []


async def test_a_region_whose_sending_clock_is_slow_is_still_followed(filing_repo, settings):
    """Dated by the region's database, published by a host 20 minutes slow: not "ahead" of now."""
    psn = unique("P")
    handler = FilingPersonsHandler(settings, filing_repo)
    filing_id = await file(filing_repo, psn, FilingCategory.RETIREE_RESETTLED, made=ago(days=3))

    def slow(offset: int, active: bool) -> Incoming:
        value = {"psn_no": psn, "psn_name": "p", "insuplc_admdvs": REGION, "insutype": "310", "psn_type": "11",
                 "active": active, "updated_at": ago(seconds=10 - offset).isoformat()}
        return Incoming("refdata.persons", 1, offset, psn.encode(), orjson.dumps(value), int(ago(minutes=20).timestamp() * 1000))

    await handler([slow(1, True)])
    assert [e.filing.filing_id for e in ended(await handler([slow(2, False)]))] == [filing_id]


async def test_records_that_do_not_validate_are_left_to_eligibilitys_feed(filing_repo, settings):
    psn = unique("P")
    handler = FilingPersonsHandler(settings, filing_repo)
    bad = Incoming("refdata.persons", 0, 1, psn.encode(), b'{"psn_no": "x"}', int(time.time() * 1000))
    # Dated a day after it was published: refused by eligibility, ignored here.
    ahead = Feed(psn).record(at=datetime.now(BUSINESS_TZ) + timedelta(days=1))
    assert await handler([bad, ahead]) == []
    async with filing_repo.transaction() as conn:
        assert await filing_repo.insurances(conn, [psn]) == {}


async def test_a_record_dated_outside_the_years_a_time_can_be_moved_to_china_is_ignored(filing_repo, settings):
    """A change dated in year 1 east of China (0001-01-01T00:30+09:00 is before year 1 in China
    time) raised OverflowError where the stage ends the filings, after a record with no time: the
    service stopped at every start (a review, session 35). It is refused as it is validated now."""
    psn = unique("P")
    handler, feed = FilingPersonsHandler(settings, filing_repo), Feed(psn)
    filing_id = await file(filing_repo, psn, FilingCategory.RETIREE_RESETTLED, made=ago(days=3))
    await handler([feed.record()])  # no updated_at
    stop = feed.record(active=False)
    value = stop.value.replace(b'"updated_at":""', b'"updated_at":"0001-01-01T00:30:00+09:00"')
    assert value != stop.value
    assert await handler([Incoming(stop.topic, stop.partition, stop.offset, stop.key, value, stop.timestamp_ms)]) == []
    assert await status(filing_repo, filing_id) == ("active", 1)


async def test_a_batch_retried_after_a_transient_error_counts_its_ignored_records_once(filing_repo, settings):
    """The stage handles a batch again after a transient error (Postgres away under its
    transaction): the records it ignores are counted when its work commits, not on each try."""

    class Unsteady(FilingRepository):
        fails = 1

        async def insurances(self, conn, psn_nos):
            if self.fails:
                self.fails -= 1
                raise TransientError("Postgres away (the test)")
            return await super().insurances(conn, psn_nos)

    psn = unique("P")
    handler = FilingPersonsHandler(settings, Unsteady(filing_repo._pool))
    bad = Incoming("refdata.persons", 0, 1, psn.encode(), b'{"psn_no": "x"}', int(time.time() * 1000))
    before = ignored()
    with pytest.raises(TransientError):
        await handler([bad, Feed(psn).record(at=ago(hours=1))])
    assert ignored() == before
    await handler([bad, Feed(psn).record(at=ago(hours=1))])
    assert ignored() == before + 1
    # A batch of nothing but records it ignores has no transaction to wait for.
    await handler([bad, bad])
    assert ignored() == before + 3


def ignored() -> float:
    return REGISTRY.get_sample_value("yidi_refdata_records_total", {"feed": "refdata.persons", "outcome": "ignored"}) or 0.0


async def test_a_person_record_filing_ignores_is_logged_without_its_values_and_an_ended_filing_without_the_person(
        filing_repo, settings, caplog):
    """pydantic's text of a validation error quotes the values: a person record filing could not read
    wrote the person's name and identity card number into its log. An ended filing's line named
    the person; the filing names them, for whoever may look."""
    import logging

    psn = unique("P")
    handler, feed = FilingPersonsHandler(settings, filing_repo), Feed(psn)
    unreadable = orjson.dumps({"psn_no": psn, "psn_name": "张三丰", "certno": 110101199003077731,
                               "insuplc_admdvs": "110000", "insutype": "310"})
    filing_id = await file(filing_repo, psn, FilingCategory.RETIREE_RESETTLED, made=ago(days=3))
    with caplog.at_level(logging.INFO):
        await handler([Incoming("refdata.persons", 0, 1, psn.encode(), unreadable, int(time.time() * 1000))])
        await handler([feed.record(at=ago(hours=2))])
        await handler([feed.record(at=ago(hours=1), active=False)])
    said = [r.getMessage() for r in caplog.records]
    assert any("certno: Input should be a valid string; psn_type: Field required" in m for m in said), said
    assert any(f"filing {filing_id} ended" in m for m in said), said
    assert not any("110101199003077731" in m or "张三丰" in m or psn in m for m in said), said
