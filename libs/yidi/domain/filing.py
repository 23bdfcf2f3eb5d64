"""Filing rules (R4, R7, R8, R9, R21): what a filing request becomes, or why it is refused."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta

from yidi.domain.codes import BUSINESS_TZ, FilingCategory, InsuranceType, region_chain, within
from yidi.domain.eligibility import Filing, FilingPeriod, FilingStatus

TEMPORARY_MIN_MONTHS = 6  # R7
MAX_LOCK_MONTHS = 6  # R8
MAX_EARLIER = 4  # earlier versions a filing keeps (a stay outlasting five changes is not covered by the first)
OFFICE_WORKING_DAYS = 2  # R21: the office finishes a filing that is not self-service within 2 working days


@dataclass(frozen=True, slots=True)
class OfficeCalendar:
    """The offices' working days (R21): Monday to Friday, less the public holidays that fall on them
    (``days_off``), plus the weekend days worked in their place (``weekend_workdays``, 调休), as
    the State Council publishes them each year."""

    days_off: frozenset[date] = frozenset()
    weekend_workdays: frozenset[date] = frozenset()

    def working(self, day: date) -> bool:
        if day in self.days_off:
            return False
        return day.weekday() < 5 or day in self.weekend_workdays


def office_overdue_before(now: datetime, calendar: OfficeCalendar = OfficeCalendar()) -> datetime:
    """R21: a filing still ``pending`` that was asked for before this instant is past the office's
    limit. Asked on day D (Beijing time), it is due by the end of the second working day after D;
    so, today T, it is overdue when two working days have passed between D and T: D is before the
    second working day counted back from T (excluded)."""
    day = now.astimezone(BUSINESS_TZ).date()
    for _ in range(OFFICE_WORKING_DAYS):
        day -= timedelta(days=1)
        for _ in range(366):  # a calendar without a working day in a year does not hang the count
            if calendar.working(day):
                break
            day -= timedelta(days=1)
    return datetime.combine(day, time(0), BUSINESS_TZ)


def add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    days_in_month = [31, 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    return date(year, month, min(day.day, days_in_month[month - 1]))


@dataclass(frozen=True, slots=True)
class FilingAsk:
    filing_id: str
    psn_no: str
    insutype: InsuranceType
    insured_region: str
    filed_region: str
    category: FilingCategory
    begin: date
    end: date | None
    takes_effect_at_once: bool


class FilingRefused(ValueError):
    """A filing request the rules do not allow; the reason is for the person."""


def lock_months_of(locks: Mapping[str, int], insured_region: str) -> int:
    """R8: the months the insured region locks a filing for: its own setting, else its city's,
    else its province's (area codes nest); 0 when none is set."""
    return next((locks[r] for r in region_chain(insured_region) if r in locks), 0)


def new_filing(ask: FilingAsk) -> Filing:
    """R4, R7, R9, R21: a filing is to a region; temporary ones last at least six months."""
    if within(ask.filed_region, ask.insured_region):
        # Care there is care at home (area codes nest: a county of the insured city included).
        raise FilingRefused(f"region {ask.filed_region} is or lies in insured region {ask.insured_region}: care there is "
                            "care at home and needs no filing; file to a region outside it")
    if ask.end is not None and ask.end < ask.begin:
        # Asked before R7 extends a short temporary filing: a typo is refused, not stretched to six months.
        raise FilingRefused("the filing ends before it begins")
    end = ask.end
    if ask.category.is_long_term:
        end = None  # R7: valid until changed or until the insurance status changes
    else:
        earliest_end = add_months(ask.begin, TEMPORARY_MIN_MONTHS)
        if end is None or end < earliest_end:
            end = earliest_end  # R7: at least six months
    return Filing(
        filing_id=ask.filing_id,
        psn_no=ask.psn_no,
        insutype=ask.insutype,
        insured_region=ask.insured_region,
        filed_region=ask.filed_region,
        category=ask.category,
        begin=ask.begin,
        end=end,
        status=FilingStatus.ACTIVE if ask.takes_effect_at_once else FilingStatus.PENDING,
    )


def change_filing(current: Filing, ask: FilingAsk, *, today: date, lock_months: int, filed_on: date,
                  at: datetime | None = None) -> Filing:
    """R8: a region may lock a filing against change for at most six months. ``at``: when the
    change is applied (the filing stage's clock; ``superseded``)."""
    if ask.insured_region != current.insured_region:
        # The filing is the insured region's record: another region's is another filing.
        raise FilingRefused(f"a filing's insured region ({current.insured_region}) does not change; "
                            "cancel this filing and file with the new insured region")
    _check_unlocked(current, today=today, lock_months=lock_months, filed_on=filed_on)
    changed = new_filing(replace(ask, filing_id=current.filing_id))
    # The version in force stays so until the change does: from today, or from a later begin date.
    changed = replace(changed, earlier=superseded(current, max(today, changed.begin), today, at))
    # R21: a self-service change takes effect at once; one made at an office keeps an active filing
    # active and sends any other (pending, refused, cancelled) to wait for approval.
    if ask.takes_effect_at_once or current.status is FilingStatus.ACTIVE:
        return replace(changed, status=FilingStatus.ACTIVE)
    return replace(changed, status=FilingStatus.PENDING)


def superseded(current: Filing, cutover: date, today: date, at: datetime | None = None) -> tuple[FilingPeriod, ...]:
    """What ``current`` was in force for, as earlier versions of what replaces it from ``cutover``:
    its own period if it is in force (active, begun by ``today``), and the earlier ones it kept,
    each ending at the latest the day before ``cutover``; a period left with no day is dropped.
    Replaced from today (at once), applied at ``at``, a version this cuts was also in force today
    until then (``ended_at``): a stay admitted this morning stays covered by it.

    A version planned for a later day and replaced before it began never was in force: the move
    was planned again. The version it was to end then runs on until the new plan's day: a
    long-term one, or a temporary one as far as its own end (``planned_end``, kept when the plan
    cut it); before, a temporary one stayed cut, and the days between were filed nowhere."""
    last = cutover - timedelta(days=1)
    ended_at = at if cutover == today else None
    periods = list(current.earlier)
    if current.status is FilingStatus.ACTIVE and current.begin > today:
        if periods and periods[0].end == current.begin - timedelta(days=1):
            cut = periods[0]
            if cut.category.is_long_term:
                periods[0] = replace(cut, end=max(cut.end, last))
            elif cut.planned_end is not None:
                periods[0] = replace(cut, end=max(cut.end, min(cut.planned_end, last)))
    elif current.status is FilingStatus.ACTIVE:
        end = last if current.end is None else min(current.end, last)
        # Cut by a change for a later day (not a cancellation, nor a change at once): the end it had.
        planned = current.end if cutover > today and current.end is not None and current.end > end else None
        # In force up to the cut (not a temporary one that had run out before it): until ``at`` too.
        periods.insert(0, FilingPeriod(current.filed_region, current.category, current.begin, current.end or cutover,
                                       current.insutype, planned))
    kept = [p if p.end <= last else replace(p, end=last, ended_at=ended_at) for p in periods]
    return tuple(p for p in kept if _in_force_at_all(p))[:MAX_EARLIER]


def _in_force_at_all(period: FilingPeriod) -> bool:
    """A day of its own, or part of the day it began, until a change at once ended it that day (a
    version in force since midnight, changed or cancelled at 10:00, covers a stay admitted at 08:00)."""
    return period.begin <= period.end or (
        period.ended_at is not None and period.begin == period.end + timedelta(days=1))


def end_on_insurance_change(current: Filing, day: date, today: date, at: datetime | None = None) -> Filing | None:
    """R7: a long-term filing is valid "until the person changes it or their insurance status
    changes". From ``day``, the day the insured region changed the insurance it was made under
    (stopped, resumed, moved to another fund or region), a long-term filing in force is ended: in
    force until the day before, so a stay admitted while it was stays covered (R6), as after a
    cancellation. One waiting for approval is cancelled (made for an insurance that is no more).
    Temporary filings and versions keep their six months; long-term versions a filing keeps in
    ``earlier`` end too. None: nothing of ``current`` ends. ``at``: the moment of the change, on
    ``day``: a version it cuts was in force that day until then (``ended_at``), so a stay admitted
    that morning, before the change, stays covered, as after a cancellation made at once (and as
    eligibility judges the insurance itself, ``InsuredBefore``)."""
    last = day - timedelta(days=1)
    ended_at = at if at is not None and at.astimezone(BUSINESS_TZ).date() == day else None
    periods = list(current.earlier)
    status = current.status
    if current.category.is_long_term and current.status in (FilingStatus.ACTIVE, FilingStatus.PENDING):
        status = FilingStatus.CANCELLED
        if current.status is FilingStatus.ACTIVE and current.begin <= today:
            in_force_that_day = current.end is None or current.end > last
            periods.insert(0, FilingPeriod(current.filed_region, current.category, current.begin,
                                           last if current.end is None else min(current.end, last), current.insutype,
                                           ended_at=ended_at if in_force_that_day else None))

    def cut(p: FilingPeriod) -> FilingPeriod:
        """A long-term version in force on the change's day ends the day before it, and that day
        until it. One that had ended by then keeps its end: the day before, and that day until its
        own change made at once (``ended_at``), or until this one if it came first; not at all if
        either ended it at midnight (a review of session 38: this change's moment extended a
        version a cancellation had ended that morning)."""
        if not p.category.is_long_term or p.end < last:
            return p
        if p.end > last:
            return replace(p, end=last, ended_at=ended_at)
        return replace(p, ended_at=None if p.ended_at is None or ended_at is None else min(p.ended_at, ended_at))

    kept = tuple(p for p in map(cut, periods) if _in_force_at_all(p))[:MAX_EARLIER]
    if status is current.status and kept == current.earlier:
        return None
    return replace(current, status=status, earlier=kept)


def cancel_filing(current: Filing, *, today: date, lock_months: int, filed_on: date,
                  at: datetime | None = None) -> Filing:
    if current.status is FilingStatus.CANCELLED:
        return current
    _check_unlocked(current, today=today, lock_months=lock_months, filed_on=filed_on)
    # In force until yesterday, and today until the cancellation was applied (``at``): a stay
    # admitted before it is still covered (R6, R7).
    return replace(current, status=FilingStatus.CANCELLED, earlier=superseded(current, today, today, at))


def _check_unlocked(current: Filing, *, today: date, lock_months: int, filed_on: date) -> None:
    """R8 locks a filing in effect: one still waiting for approval, or refused, never took effect
    and may be changed or withdrawn at once."""
    lock = min(lock_months, MAX_LOCK_MONTHS)  # R8: never more than six months
    if lock and current.status is FilingStatus.ACTIVE and today < add_months(filed_on, lock):
        raise FilingRefused(
            f"the insured region locks a filing for {lock} months; it can be changed or cancelled "
            f"from {add_months(filed_on, lock).isoformat()}"
        )


def approve_filing(current: Filing) -> Filing:
    """R21: an office approves a filing that waits for approval; it takes effect now."""
    if current.status is not FilingStatus.PENDING:
        raise FilingRefused(f"only a filing waiting for approval can be approved; this one is {current.status.value}")
    if within(current.filed_region, current.insured_region):
        # One asked before area codes nested: care there is care at home, which needs no filing.
        raise FilingRefused(f"region {current.filed_region} is or lies in insured region {current.insured_region}: "
                            "care there is care at home and needs no filing; refuse this filing")
    return replace(current, status=FilingStatus.ACTIVE)


def refuse_filing(current: Filing) -> Filing:
    if current.status is not FilingStatus.PENDING:
        raise FilingRefused(f"only a filing waiting for approval can be refused; this one is {current.status.value}")
    return replace(current, status=FilingStatus.REFUSED)
