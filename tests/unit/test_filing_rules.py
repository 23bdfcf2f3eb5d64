"""Filing rules (R4, R7, R8, R9, R21) on plain data: what a filing request becomes, or why it is refused."""

from dataclasses import replace
from datetime import date, datetime

import pytest

from yidi.domain.codes import FilingCategory, InsuranceType
from yidi.domain.eligibility import FilingStatus
from yidi.domain.filing import (
    FilingAsk,
    FilingRefused,
    add_months,
    approve_filing,
    cancel_filing,
    change_filing,
    end_on_insurance_change,
    lock_months_of,
    new_filing,
    refuse_filing,
)


def ask(category=FilingCategory.TEMPORARY_OTHER, begin=date(2026, 1, 10), end=None, filed="110000", at_once=True):
    return FilingAsk("F1", "P1", InsuranceType.EMPLOYEE, "131000", filed, category, begin, end, at_once)


def test_r7_a_temporary_filing_lasts_at_least_six_months_and_a_longer_one_is_kept():
    assert new_filing(ask(end=date(2026, 2, 1))).end == date(2026, 7, 10)
    assert new_filing(ask(end=date(2026, 12, 31))).end == date(2026, 12, 31)
    assert new_filing(ask()).end == date(2026, 7, 10)


def test_r7_six_months_from_a_month_end_is_the_last_day_of_a_shorter_month():
    assert add_months(date(2025, 8, 31), 6) == date(2026, 2, 28)
    assert add_months(date(2027, 8, 31), 6) == date(2028, 2, 29)


def test_r7_a_long_term_filing_is_open_ended():
    assert new_filing(ask(FilingCategory.RETIREE_RESETTLED, end=date(2027, 1, 1))).end is None


def test_a_filing_that_ends_before_it_begins_is_refused_not_stretched_to_six_months():
    with pytest.raises(FilingRefused, match="ends before it begins"):
        new_filing(ask(begin=date(2026, 3, 1), end=date(2026, 2, 1)))


def test_r9_a_filing_names_a_region_outside_the_insured_one():
    # Insured in 131000 (a city): care in it or in a county of it is care at home.
    for inside in ("131000", "131002"):
        with pytest.raises(FilingRefused, match=f"region {inside} is or lies in insured region 131000: care there is care at home"):
            new_filing(ask(filed=inside))
    # The province the insured city lies in covers its other regions: a filing to it is one.
    assert new_filing(ask(filed="130000")).filed_region == "130000"


def test_r21_self_service_takes_effect_at_once_an_office_filing_waits_for_approval():
    assert new_filing(ask(at_once=True)).status is FilingStatus.ACTIVE
    pending = new_filing(ask(at_once=False))
    assert pending.status is FilingStatus.PENDING
    assert approve_filing(pending).status is FilingStatus.ACTIVE


def test_r8_a_region_may_lock_a_filing_for_at_most_six_months():
    current = new_filing(ask())
    filed_on = date(2026, 1, 10)
    with pytest.raises(FilingRefused, match="from 2026-04-10"):
        cancel_filing(current, today=date(2026, 3, 1), lock_months=3, filed_on=filed_on)
    # A region asking for twelve months gets six.
    with pytest.raises(FilingRefused, match="locks a filing for 6 months"):
        change_filing(current, ask(end=date(2027, 1, 1)), today=date(2026, 6, 1), lock_months=12, filed_on=filed_on)
    assert cancel_filing(current, today=date(2026, 7, 10), lock_months=12, filed_on=filed_on).status is FilingStatus.CANCELLED


def test_r21_a_self_service_change_takes_effect_at_once_an_office_change_keeps_an_active_filing_active():
    today, filed_on = date(2026, 9, 1), date(2026, 1, 10)
    pending, refused = new_filing(ask(at_once=False)), refuse_filing(new_filing(ask(at_once=False)))
    active = new_filing(ask())
    for current in (pending, refused):
        assert change_filing(current, ask(at_once=True), today=today, lock_months=0, filed_on=filed_on).status \
            is FilingStatus.ACTIVE
        assert change_filing(current, ask(at_once=False), today=today, lock_months=0, filed_on=filed_on).status \
            is FilingStatus.PENDING
    assert change_filing(active, ask(at_once=False), today=today, lock_months=0, filed_on=filed_on).status \
        is FilingStatus.ACTIVE


def test_r8_the_lock_holds_a_filing_in_effect_not_one_that_never_took_effect():
    filed_on, today = date(2026, 1, 10), date(2026, 2, 1)
    pending = new_filing(ask(at_once=False))
    assert cancel_filing(pending, today=today, lock_months=6, filed_on=filed_on).status is FilingStatus.CANCELLED
    assert change_filing(pending, ask(end=date(2026, 12, 1), at_once=False), today=today, lock_months=6,
                         filed_on=filed_on).end == date(2026, 12, 1)
    cancelled = cancel_filing(new_filing(ask()), today=date(2026, 8, 1), lock_months=6, filed_on=filed_on)
    assert cancel_filing(cancelled, today=today, lock_months=6, filed_on=filed_on) is cancelled  # no-op, no refusal


def test_a_change_cannot_move_a_filing_to_another_insured_region():
    """The filing table kept the old insured region while the answer and eligibility's mirror
    took the new one."""
    other = FilingAsk("F1", "P1", InsuranceType.EMPLOYEE, "370100", "110000", FilingCategory.TEMPORARY_OTHER,
                      date(2026, 1, 10), None, True)
    with pytest.raises(FilingRefused, match="insured region \\(131000\\) does not change"):
        change_filing(new_filing(ask()), other, today=date(2026, 9, 1), lock_months=0, filed_on=date(2026, 1, 10))


@pytest.mark.parametrize("field", ["begndate", "enddate"])
def test_a_filing_date_the_rules_cannot_count_from_is_refused_as_malformed(field):
    """9999-09-01 passed validation and overflowed in R7's six months: the filing stage stopped."""
    from pydantic import ValidationError

    from yidi.contracts.filing import FilingRequest
    request = {"action": "add", "reqid": "R1", "psn_no": "P1", "insutype": "310", "insuplc_admdvs": "131000",
               "filed_admdvs": "110000", "category": "temporary_other", "begndate": "2026-01-10"}
    with pytest.raises(ValidationError, match="between 1990-01-01 and 2999-12-31"):
        FilingRequest.model_validate(request | {field: "9999-09-01"})
    assert getattr(FilingRequest.model_validate(request | {field: "2999-12-31"}), field) == date(2999, 12, 31)


def test_a_filing_request_the_stage_cannot_process_is_refused_by_reqid():
    """A record the filing stage cannot process (BadData: a history answer over a Kafka record's
    1 MiB, say) used to be only dead-lettered: filing requests have no msgid, so the stage's
    default refusal answered nobody (found by review)."""
    import orjson

    from services.filing.app import stage
    from yidi.platform.kafka import CANNOT_PROCESS, Incoming
    from yidi.platform.settings import Settings

    filing_stage = stage(Settings(namespace="ns."), repo=None)  # type: ignore[arg-type]
    assert filing_stage.refuse is not None
    request = {"action": "history", "reqid": "R1", "filing_id": "F1", "psn_no": "P1", "reply_to": "gw.filing"}
    out = filing_stage.refuse(Incoming("ns.filing.requests", 0, 3, b"P1", orjson.dumps(request), 0),
                              f"{CANNOT_PROCESS}: output of 2000000 bytes")
    assert [o.topic for o in out] == ["ns.filing.requests.dlq", "ns.gw.filing"]
    result = orjson.loads(out[1].value)
    assert (result["reqid"], result["accepted"]) == ("R1", False) and "could not process" in result["reason"]


def test_who_and_why_of_a_filing_request_are_bounded():
    from pydantic import ValidationError

    from yidi.contracts.filing import FilingRequest

    base = {"action": "cancel", "reqid": "R1", "filing_id": "F1", "psn_no": "P1"}
    assert FilingRequest.model_validate(base | {"reason": "x" * 2000, "opter": "y" * 200})
    for field, size in (("reason", 2001), ("opter", 201)):
        with pytest.raises(ValidationError):
            FilingRequest.model_validate(base | {field: "x" * size})


def test_r7_a_temporary_filings_move_planned_again_leaves_no_day_filed_nowhere():
    """A temporary version cut by a move planned for a later day stayed cut when the move was
    planned again for a day after: April 2026 was filed nowhere, and every settlement refused."""
    def ask(filed: str, begin: date, end: date | None = None) -> FilingAsk:
        return FilingAsk("F1", "P1", InsuranceType.EMPLOYEE, "131000", filed, FilingCategory.TEMPORARY_OTHER,
                         begin, end, True)

    beijing = new_filing(ask("110000", date(2026, 1, 1), date(2026, 7, 1)))
    tianjin = change_filing(beijing, ask("120000", date(2026, 4, 1), date(2026, 10, 1)), today=date(2026, 2, 1),
                            lock_months=0, filed_on=date(2026, 1, 1))
    assert [(p.filed_region, p.end, p.planned_end) for p in tianjin.earlier] == [
        ("110000", date(2026, 3, 31), date(2026, 7, 1))]
    shanghai = change_filing(tianjin, ask("310000", date(2026, 5, 1), date(2026, 11, 1)), today=date(2026, 3, 1),
                             lock_months=0, filed_on=date(2026, 1, 1))
    assert [(p.filed_region, p.end) for p in shanghai.earlier] == [("110000", date(2026, 4, 30))]
    by_region = {v.filed_region: v for v in shanghai.versions()}
    assert by_region["110000"].valid_on(date(2026, 4, 15)) and by_region["310000"].valid_on(date(2026, 5, 1))
    # Planned again for a day past the version's own end: it runs on to its end, no further.
    later = change_filing(tianjin, ask("310000", date(2026, 9, 1), date(2027, 3, 1)), today=date(2026, 3, 1),
                          lock_months=0, filed_on=date(2026, 1, 1))
    assert [(p.filed_region, p.end) for p in later.earlier] == [("110000", date(2026, 7, 1))]
    # The wire form keeps it: eligibility and a restart of filing see the same.
    from yidi.contracts.filing import FilingRecord
    assert FilingRecord.of(tianjin, 2).to_domain().earlier == tianjin.earlier


def test_r7_a_change_for_a_later_day_leaves_the_old_version_in_force_until_then_and_covers_stays_begun_under_it():
    from yidi.domain.eligibility import FilingPeriod

    def ask(filed: str, begin: date) -> FilingAsk:
        return FilingAsk("F1", "P1", InsuranceType.EMPLOYEE, "131000", filed, FilingCategory.RETIREE_RESETTLED,
                         begin, None, True)

    beijing = new_filing(ask("110000", date(2022, 1, 1)))
    # Asked on 2026-05-10 to move to Tianjin from 2026-06-01: Beijing stays in force until 05-31.
    tianjin = change_filing(beijing, ask("120000", date(2026, 6, 1)), today=date(2026, 5, 10), lock_months=0,
                            filed_on=date(2022, 1, 1))
    assert tianjin.earlier == (FilingPeriod("110000", FilingCategory.RETIREE_RESETTLED, date(2022, 1, 1), date(2026, 5, 31),
                                            InsuranceType.EMPLOYEE),)
    by_day = {v.filed_region: v for v in tianjin.versions()}
    assert by_day["110000"].valid_on(date(2026, 5, 20)) and not by_day["110000"].valid_on(date(2026, 6, 1))
    assert by_day["120000"].valid_on(date(2026, 6, 1)) and not by_day["120000"].valid_on(date(2026, 5, 31))
    # Planned again on 05-12, for Shanghai from 06-15: Tianjin never was in force, and Beijing runs
    # on until 06-14 (the person was filed in Tianjin, where they never went, from 06-01).
    replanned = change_filing(tianjin, ask("310000", date(2026, 6, 15)), today=date(2026, 5, 12), lock_months=0,
                              filed_on=date(2022, 1, 1))
    assert [(p.filed_region, p.end) for p in replanned.earlier] == [("110000", date(2026, 6, 14))]
    # Changed again at once on 05-15: Tianjin never took effect, and Beijing ends on 05-14.
    shanghai = change_filing(tianjin, ask("310000", date(2026, 5, 15)), today=date(2026, 5, 15), lock_months=0,
                             filed_on=date(2022, 1, 1))
    assert [(p.filed_region, p.end) for p in shanghai.earlier] == [("110000", date(2026, 5, 14))]
    # Cancelled on 06-10: in force until 06-09, so a stay admitted before is still covered.
    cancelled = cancel_filing(shanghai, today=date(2026, 6, 10), lock_months=0, filed_on=date(2022, 1, 1))
    assert cancelled.status is FilingStatus.CANCELLED and not cancelled.valid_on(date(2026, 6, 10))
    assert [(p.filed_region, p.begin, p.end) for p in cancelled.earlier] == [
        ("310000", date(2026, 5, 15), date(2026, 6, 9)), ("110000", date(2022, 1, 1), date(2026, 5, 14))]


def test_an_earlier_version_keeps_its_own_insurance_type():
    resident = new_filing(FilingAsk("F1", "P1", InsuranceType.RESIDENT, "131000", "110000",
                                    FilingCategory.LONG_TERM_RESIDENT, date(2022, 1, 1), None, True))
    employee = change_filing(resident, FilingAsk("F1", "P1", InsuranceType.EMPLOYEE, "131000", "110000",
                                                 FilingCategory.LONG_TERM_RESIDENT, date(2026, 5, 1), None, True),
                             today=date(2026, 5, 1), lock_months=0, filed_on=date(2022, 1, 1))
    before, now = employee.versions()[1], employee.versions()[0]
    assert (before.insutype, before.end) == (InsuranceType.RESIDENT, date(2026, 4, 30))
    assert now.insutype is InsuranceType.EMPLOYEE


def test_a_request_sent_again_gets_its_stored_event_with_its_own_reply_to_as_stored_otherwise():
    # The stored event is not validated again: one an older version stored (a field since dropped,
    # say) stopped the filing stage when it was.
    import orjson

    from services.filing.handlers import FilingHandler
    from yidi.contracts.filing import FilingRequest
    from yidi.platform.settings import settings_for

    settings = settings_for("filing")
    request = FilingRequest.model_validate({
        "action": "add", "reqid": "R1", "psn_no": "P1", "insutype": "310", "insuplc_admdvs": "131000",
        "filed_admdvs": "110000", "category": "retiree_resettled", "begndate": "2026-01-01",
        "decl_source": "self_service", "reply_to": "gw.moved"})
    stored_event = {"event": "filed", "filing": {"filing_id": "F1", "dropped_since": 1}, "reply_to": "filing.results"}
    stored = [{"topic": settings.topic("filing.events"), "value": orjson.dumps(stored_event).decode()},
              {"topic": settings.topic("filing.results"), "value": '{"reqid": "R1"}'}]
    event, answer = FilingHandler(settings, None)._again(request, stored)  # type: ignore[arg-type]
    assert event["topic"] == settings.topic("filing.events")
    assert orjson.loads(event["value"]) == stored_event | {"reply_to": "gw.moved"}
    assert answer == {"topic": settings.topic("gw.moved"), "value": '{"reqid": "R1"}'}


def test_r7_an_insurance_change_ends_a_long_term_filing_the_day_before_it():
    """Valid "until the person changes it or their insurance status changes" (seed 001): in force
    until the day before the change, so a stay admitted while it was stays covered (R6)."""
    current = new_filing(ask(FilingCategory.RETIREE_RESETTLED, begin=date(2025, 3, 1)))
    ended = end_on_insurance_change(current, date(2026, 6, 10), today=date(2026, 6, 12))
    assert ended is not None and ended.status is FilingStatus.CANCELLED
    assert [(p.begin, p.end) for p in ended.earlier] == [(date(2025, 3, 1), date(2026, 6, 9))]
    assert not ended.valid_on(date(2026, 6, 10))
    assert [v.valid_on(date(2026, 6, 9)) for v in ended.versions()] == [False, True]
    # A change on the day the filing began leaves no day it was in force.
    same_day = end_on_insurance_change(current, date(2025, 3, 1), today=date(2026, 6, 12))
    assert same_day is not None and same_day.earlier == ()


def test_r7_a_version_an_insurance_change_ends_is_in_force_that_day_until_the_change():
    """As after a cancellation made at once: a stay admitted on the change's day, before it, stays
    covered by the filing, as eligibility judges the insurance itself by the moment. It was filed
    nowhere that morning, and refused NOT_FILED with advice to file, which filing refuses under an
    insurance no longer held (a review of session 38)."""
    from yidi.domain.codes import BUSINESS_TZ

    current = new_filing(ask(FilingCategory.RETIREE_RESETTLED, begin=date(2025, 3, 1)))
    at = datetime(2026, 6, 10, 9, 0, tzinfo=BUSINESS_TZ)
    ended = end_on_insurance_change(current, date(2026, 6, 10), today=date(2026, 6, 12), at=at)
    assert ended is not None and [(p.end, p.ended_at) for p in ended.earlier] == [(date(2026, 6, 9), at)]
    (_, version) = ended.versions()
    assert version.in_force_until_ended(datetime(2026, 6, 10, 8, 0, tzinfo=BUSINESS_TZ))
    assert not version.in_force_until_ended(datetime(2026, 6, 10, 9, 30, tzinfo=BUSINESS_TZ))
    # Begun that very day: in force until the change all the same.
    same_day = end_on_insurance_change(current, date(2025, 3, 1), today=date(2026, 6, 12),
                                       at=datetime(2025, 3, 1, 15, 0, tzinfo=BUSINESS_TZ))
    assert same_day is not None and [(p.begin, p.end) for p in same_day.earlier] == [(date(2025, 3, 1), date(2025, 2, 28))]
    # A version that had ended by then keeps its end: a cancellation made at once at 08:00, then the
    # insurance stopped at 10:00 (a review of session 38: the stop extended it to 10:00).
    cancelled = cancel_filing(current, today=date(2026, 6, 10), lock_months=0, filed_on=date(2025, 3, 1),
                              at=datetime(2026, 6, 10, 8, 0, tzinfo=BUSINESS_TZ))
    assert [(p.end, p.ended_at) for p in cancelled.earlier] == [
        (date(2026, 6, 9), datetime(2026, 6, 10, 8, 0, tzinfo=BUSINESS_TZ))]
    assert end_on_insurance_change(cancelled, date(2026, 6, 10), today=date(2026, 6, 10), at=at) is None
    # ... and one ended at midnight stays so; one the cancellation ended after the stop, at the stop.
    midnight = replace(cancelled, earlier=(replace(cancelled.earlier[0], ended_at=None),))
    assert end_on_insurance_change(midnight, date(2026, 6, 10), today=date(2026, 6, 10), at=at) is None
    late = replace(cancelled, earlier=(replace(cancelled.earlier[0], ended_at=datetime(2026, 6, 10, 11, 0,
                                                                                       tzinfo=BUSINESS_TZ)),))
    cut = end_on_insurance_change(late, date(2026, 6, 10), today=date(2026, 6, 10), at=at)
    assert cut is not None and [p.ended_at for p in cut.earlier] == [at]
    # A move planned for that day: the new version was in force that morning, the old one not.
    moving = change_filing(current, ask(FilingCategory.RETIREE_RESETTLED, begin=date(2026, 6, 10), filed="120000"),
                           today=date(2026, 6, 1), lock_months=0, filed_on=date(2025, 3, 1))
    moved = end_on_insurance_change(moving, date(2026, 6, 10), today=date(2026, 6, 10), at=at)
    assert moved is not None and [(p.filed_region, p.begin, p.end, p.ended_at) for p in moved.earlier] == [
        ("120000", date(2026, 6, 10), date(2026, 6, 9), at), (current.filed_region, date(2025, 3, 1), date(2026, 6, 9), None)]
    # A moment on another day than the change's (a record dated ahead, taken as today) ends it at midnight.
    later = end_on_insurance_change(current, date(2026, 6, 10), today=date(2026, 6, 10),
                                    at=datetime(2026, 6, 11, 9, 0, tzinfo=BUSINESS_TZ))
    assert later is not None and later.earlier[0].ended_at is None


def test_r7_an_insurance_change_leaves_a_temporary_filing_its_six_months_but_ends_long_term_versions_it_keeps():
    lived = new_filing(ask(FilingCategory.LONG_TERM_RESIDENT, begin=date(2025, 1, 1)))
    # A move to a temporary trip from 2026-07-01, planned on 2026-06-01: the long-term version runs until then.
    trip = change_filing(lived, ask(FilingCategory.TEMPORARY_OTHER, begin=date(2026, 7, 1), filed="120000"),
                         today=date(2026, 6, 1), lock_months=0, filed_on=date(2025, 1, 1))
    assert [(p.category, p.end) for p in trip.earlier] == [(FilingCategory.LONG_TERM_RESIDENT, date(2026, 6, 30))]
    ended = end_on_insurance_change(trip, date(2026, 6, 15), today=date(2026, 6, 15))
    assert ended is not None and ended.status is FilingStatus.ACTIVE and (ended.begin, ended.end) == (trip.begin, trip.end)
    assert [(p.category, p.end) for p in ended.earlier] == [(FilingCategory.LONG_TERM_RESIDENT, date(2026, 6, 14))]
    # Nothing long-term left in force: nothing ends.
    assert end_on_insurance_change(new_filing(ask()), date(2026, 6, 15), today=date(2026, 6, 15)) is None
    assert end_on_insurance_change(ended, date(2026, 6, 20), today=date(2026, 6, 20)) is None


def test_r7_an_insurance_change_cancels_a_long_term_filing_waiting_for_approval_and_cuts_a_cancelled_ones_versions():
    pending = new_filing(ask(FilingCategory.RETIREE_RESETTLED, at_once=False))
    withdrawn = end_on_insurance_change(pending, date(2026, 6, 1), today=date(2026, 6, 1))
    assert withdrawn is not None and withdrawn.status is FilingStatus.CANCELLED and withdrawn.earlier == ()
    cancelled = cancel_filing(new_filing(ask(FilingCategory.RETIREE_RESETTLED)), today=date(2026, 2, 1), lock_months=0,
                              filed_on=date(2026, 1, 10))
    assert end_on_insurance_change(cancelled, date(2026, 6, 1), today=date(2026, 6, 1)) is None
    # The change read after the cancellation, dated before it: the version in force ends at the change.
    cut = end_on_insurance_change(cancelled, date(2026, 1, 20), today=date(2026, 6, 1))
    assert cut is not None and [(p.begin, p.end) for p in cut.earlier] == [(date(2026, 1, 10), date(2026, 1, 19))]
    temporary = new_filing(ask(FilingCategory.TEMPORARY_OTHER, at_once=False))
    assert end_on_insurance_change(temporary, date(2026, 6, 1), today=date(2026, 6, 1)) is None


def test_r7_an_insurance_change_leaves_a_long_term_filings_temporary_version_its_six_months():
    trip = new_filing(ask(FilingCategory.TEMPORARY_OTHER, begin=date(2026, 5, 1)))
    # Changed on 1 June to a long-term filing from 1 July: the trip stays in force until 30 June.
    moving = change_filing(trip, ask(FilingCategory.LONG_TERM_RESIDENT, begin=date(2026, 7, 1), filed="120000"),
                           today=date(2026, 6, 1), lock_months=0, filed_on=date(2026, 5, 1))
    ended = end_on_insurance_change(moving, date(2026, 6, 15), today=date(2026, 6, 15))
    assert ended is not None and ended.status is FilingStatus.CANCELLED  # the move never took effect
    assert [(p.category, p.begin, p.end) for p in ended.earlier] == [
        (FilingCategory.TEMPORARY_OTHER, date(2026, 5, 1), date(2026, 6, 30))]


def test_r7_an_insurance_change_keeps_at_most_four_earlier_versions():
    from yidi.domain.eligibility import FilingPeriod
    from yidi.domain.filing import MAX_EARLIER

    current = new_filing(ask(FilingCategory.RETIREE_RESETTLED, begin=date(2026, 5, 1)))
    older = tuple(FilingPeriod("120000", FilingCategory.TEMPORARY_OTHER, date(2025, m, 1), date(2025, m, 20))
                  for m in (12, 10, 8, 6))
    ended = end_on_insurance_change(replace(current, earlier=older), date(2026, 6, 1), today=date(2026, 6, 1))
    assert ended is not None and len(ended.earlier) == MAX_EARLIER == 4
    assert [p.begin for p in ended.earlier] == [date(2026, 5, 1), date(2025, 12, 1), date(2025, 10, 1), date(2025, 8, 1)]


def test_r7_a_version_ended_at_once_was_in_force_that_day_until_the_change_was_applied():
    from datetime import datetime

    from yidi.domain.codes import BUSINESS_TZ

    at = datetime(2026, 6, 10, 15, 0, tzinfo=BUSINESS_TZ)
    beijing = new_filing(ask(FilingCategory.LONG_TERM_RESIDENT, begin=date(2022, 1, 1)))
    moved = change_filing(beijing, ask(FilingCategory.LONG_TERM_RESIDENT, begin=date(2026, 6, 10), filed="120000"),
                          today=date(2026, 6, 10), lock_months=0, filed_on=date(2022, 1, 1), at=at)
    assert [(p.end, p.ended_at) for p in moved.earlier] == [(date(2026, 6, 9), at)]
    cancelled = cancel_filing(beijing, today=date(2026, 6, 10), lock_months=0, filed_on=date(2022, 1, 1), at=at)
    assert [(p.end, p.ended_at) for p in cancelled.earlier] == [(date(2026, 6, 9), at)]
    # a change for a later day: the version is in force through the day before it, not part of that day
    planned = change_filing(beijing, ask(FilingCategory.LONG_TERM_RESIDENT, begin=date(2026, 7, 1), filed="120000"),
                            today=date(2026, 6, 10), lock_months=0, filed_on=date(2022, 1, 1), at=at)
    assert [(p.end, p.ended_at) for p in planned.earlier] == [(date(2026, 6, 30), None)]
    # ... and changed again at once on 06-20: Tianjin never took effect; Beijing ran until then
    later = datetime(2026, 6, 20, 9, 0, tzinfo=BUSINESS_TZ)
    again = change_filing(planned, ask(FilingCategory.LONG_TERM_RESIDENT, begin=date(2026, 6, 20), filed="310000"),
                          today=date(2026, 6, 20), lock_months=0, filed_on=date(2022, 1, 1), at=later)
    assert [(p.filed_region, p.end, p.ended_at) for p in again.earlier] == [("110000", date(2026, 6, 19), later)]
    # a temporary filing that ran out the day before was not in force that day
    trip = new_filing(ask(begin=date(2025, 12, 9), end=date(2026, 6, 9)))
    gone = cancel_filing(trip, today=date(2026, 6, 10), lock_months=0, filed_on=date(2025, 12, 9), at=at)
    assert [(p.end, p.ended_at) for p in gone.earlier] == [(date(2026, 6, 9), None)]


def test_r7_a_version_in_force_since_midnight_and_ended_at_once_that_day_is_kept_for_its_hours():
    from datetime import datetime

    from yidi.domain.codes import BUSINESS_TZ

    at = datetime(2026, 6, 10, 10, 0, tzinfo=BUSINESS_TZ)
    beijing = new_filing(ask(FilingCategory.LONG_TERM_RESIDENT, begin=date(2022, 1, 1)))
    # planned on 06-01 for Tianjin from 06-10; on 06-10 at 10:00 moved again, at once, to Shanghai
    tianjin = change_filing(beijing, ask(FilingCategory.LONG_TERM_RESIDENT, begin=date(2026, 6, 10), filed="120000"),
                            today=date(2026, 6, 1), lock_months=0, filed_on=date(2022, 1, 1))
    shanghai = change_filing(tianjin, ask(FilingCategory.LONG_TERM_RESIDENT, begin=date(2026, 6, 10), filed="310000"),
                             today=date(2026, 6, 10), lock_months=0, filed_on=date(2022, 1, 1), at=at)
    assert [(p.filed_region, p.begin, p.end, p.ended_at) for p in shanghai.earlier] == [
        ("120000", date(2026, 6, 10), date(2026, 6, 9), at), ("110000", date(2022, 1, 1), date(2026, 6, 9), None)]
    tianjin_today = [v for v in shanghai.versions() if v.filed_region == "120000"][0]
    assert not tianjin_today.valid_on(date(2026, 6, 10))  # no whole day of its own
    assert tianjin_today.in_force_until_ended(datetime(2026, 6, 10, 8, 0, tzinfo=BUSINESS_TZ))
    # a filing added at once this morning and cancelled at once: the same
    added = new_filing(ask(FilingCategory.LONG_TERM_RESIDENT, begin=date(2026, 6, 10)))
    gone = cancel_filing(added, today=date(2026, 6, 10), lock_months=0, filed_on=date(2026, 6, 10), at=at)
    assert [(p.begin, p.end, p.ended_at) for p in gone.earlier] == [(date(2026, 6, 10), date(2026, 6, 9), at)]
    # an insurance change dated later keeps it; one dated that day ends it from the day's start
    assert end_on_insurance_change(gone, date(2026, 6, 20), date(2026, 6, 20)) is None
    cut = end_on_insurance_change(shanghai, date(2026, 6, 10), date(2026, 6, 10))
    # Shanghai (from the 10th) and Tianjin's hours of the 10th never were, under the insurance changed that day
    assert [(p.filed_region, p.end, p.ended_at) for p in cut.earlier] == [("110000", date(2026, 6, 9), None)]


def test_r8_a_regions_own_lock_comes_first_then_its_citys_then_its_provinces():
    locks = {"130000": 6, "131000": 3, "131002": 0}
    assert lock_months_of(locks, "131002") == 0  # its own, even 0
    assert lock_months_of(locks, "131003") == 3  # its city's
    assert lock_months_of(locks, "130100") == 6  # its province's
    assert lock_months_of(locks, "370100") == 0  # none set


def test_r21_a_pending_filing_to_a_region_inside_the_insured_one_is_not_approved():
    # Asked before area codes nested (a county of the insured city): care there is at home now.
    pending = replace(new_filing(ask(at_once=False)), filed_region="131002")
    with pytest.raises(FilingRefused, match="care there is care at home and needs no filing; refuse this filing"):
        approve_filing(pending)
    assert refuse_filing(pending).status is FilingStatus.REFUSED
