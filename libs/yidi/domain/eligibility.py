"""Who may settle where, and on which terms (R2, R4–R10, R14, R17, R19, R20).

``decide`` is the whole rule: it takes the person's insurance, their filings, the facility,
the insured region's status and the time, and returns either the terms of the settlement or
a refusal a cashier can act on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from yidi.domain.codes import (
    BUSINESS_TZ,
    FilingCategory,
    InsuranceType,
    MedType,
    PersonType,
    chronic_disease_of,
    disease_covers,
    within,
)
from yidi.domain.money import ZERO
from yidi.domain.values import value


class Refusal(StrEnum):
    NOT_INSURED = "NOT_INSURED"
    NOT_FILED = "NOT_FILED"
    NOT_QUALIFIED = "NOT_QUALIFIED"
    REGION_UNAVAILABLE = "REGION_UNAVAILABLE"
    UNKNOWN_FACILITY = "UNKNOWN_FACILITY"


class Basis(StrEnum):
    """Why the person may settle here."""

    FILED = "filed"
    EMERGENCY = "emergency"  # R5: emergency rescue counts as filed
    WAIVED = "waived"  # R17: filing waived inside a province
    HOME = "home"  # treated in the insured region itself (R10, long-term filed persons too)


# R2's credentials (mdtrt_cert_type): 01 e-voucher, 02 identity card, 03 social security card.
ID_CARD = "02"


@value
class Person:
    psn_no: str
    name: str
    insured_region: str
    insutype: InsuranceType
    person_type: PersonType
    active: bool
    chronic_qualifications: frozenset[str] = frozenset()
    account_balance: Decimal = ZERO
    account_version: str = ""
    qualifications: frozenset[str] = frozenset()
    certno: str = ""  # the identity card's number, when the insured region gives it (R2)


@value
class Facility:
    code: str
    name: str
    region: str
    level: int
    med_types: frozenset[MedType]


class FilingStatus(StrEnum):
    ACTIVE = "active"
    PENDING = "pending"
    REFUSED = "refused"
    CANCELLED = "cancelled"


@value
class FilingPeriod:
    """An earlier version of a filing, in force from ``begin`` to ``end`` (inclusive): until the
    day before the change (or cancellation) that replaced it took effect."""

    filed_region: str
    category: FilingCategory
    begin: date
    end: date
    insutype: InsuranceType | None = None  # a change may change it; None: the filing's own
    # The end it had when a change for a later day cut it (a temporary version's six months, R7):
    # that change planned again before it began, it runs on to the new plan's day, no further.
    planned_end: date | None = None
    # Ended by a change (or cancellation) made on the day after ``end`` that took effect at once:
    # the moment it was made. On that day the version was in force until then, so a stay admitted
    # that morning, before the change, is covered by it (R6, R7).
    ended_at: datetime | None = None


@value
class Filing:
    filing_id: str
    psn_no: str
    insutype: InsuranceType
    insured_region: str
    filed_region: str
    category: FilingCategory
    begin: date
    end: date | None
    status: FilingStatus = FilingStatus.ACTIVE
    # The versions in force before this one (newest first): a stay admitted under one is still
    # covered by it (R6, R7), and a change asked for a later day leaves the old one in force
    # until then, with no day filed nowhere.
    earlier: tuple[FilingPeriod, ...] = ()
    # An earlier version's ``FilingPeriod.ended_at`` (``versions``); None for the filing itself.
    ended_at: datetime | None = None

    def valid_on(self, day: date) -> bool:
        """R7: long-term until changed (``end`` None), temporary until its end date."""
        return (
            self.status is FilingStatus.ACTIVE
            and self.begin <= day
            and (self.end is None or day <= self.end)
        )

    def in_force_until_ended(self, moment: datetime) -> bool:
        """On the day after its last (``end``), a version ended by a change made that day at once
        was in force until that change (``ended_at``): whether ``moment`` was before it."""
        return (self.status is FilingStatus.ACTIVE and self.ended_at is not None and self.end is not None
                and moment < self.ended_at
                and moment.astimezone(BUSINESS_TZ).date() == self.end + timedelta(days=1))

    def versions(self) -> list[Filing]:
        """This filing, and each earlier version as a filing valid over its period."""
        return [self] + [
            replace(self, filed_region=p.filed_region, category=p.category, begin=p.begin, end=p.end,
                    insutype=p.insutype or self.insutype, status=FilingStatus.ACTIVE, earlier=(),
                    ended_at=p.ended_at)
            for p in self.earlier
        ]


@value
class Outage:
    region: str
    start: datetime
    end: datetime
    reason: str = ""

    def covers(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


@value
class Visit:
    """What the settlement request says about the care."""

    treating_region: str
    insured_region: str
    insutype: InsuranceType
    med_type: MedType
    on: date
    disease_code: str = ""
    filing_waived_in_province: bool = False
    # An inpatient stay's admission day (``begntime``), when the request gives one, and its moment
    # (aware; None when the request gives a day alone: the stay is judged by its day).
    admitted: date | None = None
    admitted_at: datetime | None = None
    # R2: the credential presented (mdtrt_cert_type, mdtrt_cert_no); an identity card's number (02)
    # is checked against the person's when both are known.
    cert_type: str = ""
    cert_no: str = ""

    def filing_counts(self, filing: Filing) -> bool:
        """A filing valid on the settlement day (R6: filed during the stay counts), or, for a stay,
        on its admission day: a temporary filing that ran out during the stay still covers it, and
        so does a version a change made later on the admission day ended at once; or begun during
        the stay, though it has ended since. Other care begun
        the day before it is settled (``begntime``: late on the filing's last day, settled after
        midnight) is covered by a filing valid the day it began (R7: valid through its end day);
        no further back, so a begntime cannot reach an old filing."""
        if filing.valid_on(self.on):
            return True
        if self.admitted is None or self.admitted > self.on:
            return False
        if not self.med_type.is_inpatient:
            return (self.on - self.admitted).days == 1 and filing.valid_on(self.admitted)
        return filing.valid_on(self.admitted) or (
            self.admitted_at is not None and filing.in_force_until_ended(self.admitted_at)) or (
            # R6: filed during the stay, it covers the stay even when it ended before the settlement
            # day: a long-term filing ended by an insurance change (R7) when the stay is settled
            # under the insurance held at admission (a review, session 46), as one valid at admission does.
            filing.status is FilingStatus.ACTIVE and self.admitted < filing.begin <= self.on)


@value
class InsuredBefore:
    """The insurance a person held until it changed (stopped, or moved to another region or fund),
    and the moment it changed: the insured region's time of the record that changed it, or, with
    none, when that record was published. A stay admitted while it was held is settled under it."""

    person: Person
    until: datetime
    # When that insurance began (a resume, a move into it); None: before the platform knew.
    since: datetime | None = None

    def covers(self, visit: Visit) -> bool:
        """An inpatient stay admitted while it was held: at its moment when the request gives one,
        else by its day: not before the day it began, and before the day it changed (a stay admitted
        on that day, at an unknown time, is not)."""
        if not visit.med_type.is_inpatient or visit.admitted is None or visit.admitted > visit.on:
            return False
        if visit.admitted_at is not None:
            return (self.since is None or self.since <= visit.admitted_at) and visit.admitted_at < self.until
        return ((self.since is None or self.since.astimezone(BUSINESS_TZ).date() <= visit.admitted)
                and visit.admitted < self.until.astimezone(BUSINESS_TZ).date())


@value
class Eligible:
    basis: Basis
    filing: Filing | None
    # R17: a filed temporary trip that stays inside a province whose filing is waived. It settles on
    # its filing, without R11's reduction (stated for trips across provinces), so holding the filing
    # never settles worse than holding none (Basis.WAIVED).
    waived: bool = False
    # The categories of the other valid temporary filings (not ``filing``'s): which one settles
    # best depends on the insured region's numbers, which pricing holds (R11, R12).
    others: tuple[FilingCategory, ...] = ()
    # Settled under the insurance the person held at admission (``InsuredBefore``), which has
    # changed since: the terms are that insurance's.
    insured_before: bool = False

    @property
    def category(self) -> FilingCategory | None:
        return self.filing.category if self.filing and self.basis is Basis.FILED else None


@value
class Refused:
    code: Refusal
    message: str


Decision = Eligible | Refused


def province_of(region: str) -> str:
    return region[:2]


def region_covers(filed: str, treating: str) -> bool:
    """R9: whether a filing to ``filed`` covers care in ``treating``. Area codes nest: a filing to a
    province ("440000") covers every region of it ("440100", "440106"), one to a city ("440100")
    its counties, one to a county that county alone. The national platform lets a person file to
    the treating province or city."""
    return within(treating, filed)


def _shown(moment: datetime) -> str:
    """A time as a cashier reads it: in the business zone (a naive time is UTC), with its offset."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    try:
        return f"{aware.astimezone(BUSINESS_TZ):%Y-%m-%d %H:%M} (UTC+08:00)"
    except OverflowError:  # past 9999-12-31 in China time ("until further notice" written in UTC)
        return f"{aware.astimezone(UTC):%Y-%m-%d %H:%M} (UTC+00:00), until further notice"


# How favourable a valid filing is to settle on (lower first); long-term categories rank 0.
_FILING_RANK = {
    FilingCategory.REFERRAL: 1,
    FilingCategory.EMERGENCY: 1,
    FilingCategory.TEMPORARY: 2,
    FilingCategory.TEMPORARY_OTHER: 3,
}


def unavailable(region: str, outages: Iterable[Outage], now: datetime) -> Outage | None:
    """R19: the last window of the region's outage covering ``now``: of the windows covering now
    and of those that begin before their end (a maintenance window extended by a second one, or
    two that overlap), the one that ends last; its end is when the region resumes. None: up.
    A window of the region's city or province (its platform's maintenance) stops it too."""
    mine = [o for o in outages if within(region, o.region)]
    covering = [o for o in mine if o.covers(now)]
    if not covering:
        return None
    last = max(covering, key=lambda o: o.end)
    extended = True
    while extended:
        extended = False
        for o in mine:
            if o.start <= last.end < o.end:
                last, extended = o, True
    return last


def insured_as_named(person: Person | None, visit: Visit) -> bool:
    """The person holds, active, the insurance the request names (region and fund)."""
    return (person is not None and person.active and person.insured_region == visit.insured_region
            and person.insutype == visit.insutype)


def decide(
    visit: Visit,
    person: Person | None,
    facility: Facility | None,
    filings: Iterable[Filing],
    outages: Iterable[Outage],
    now: datetime,
    before: InsuredBefore | None = None,
) -> Decision:
    """R20: read the person's insurance, establish the filing and the benefit level.

    A stay is judged by the insurance held at admission: when the person's insurance now is not
    the one the request names, the one held ``before`` the last change serves a stay admitted
    before that change (as filing keeps a filing ended by the change in force for it, R6, R7)."""
    if facility is None or facility.region != visit.treating_region:
        return Refused(
            Refusal.UNKNOWN_FACILITY,
            f"This facility is not a networked facility of region {visit.treating_region}; "
            "check the facility code configured in the gateway.",
        )
    if visit.med_type not in facility.med_types:
        return Refused(
            Refusal.UNKNOWN_FACILITY,
            f"This facility is not networked for medical category {visit.med_type.value}; "
            "settle the bill in cash and give the patient the receipts for a claim at home.",
        )
    outage = unavailable(visit.insured_region, outages, now)
    if outage is not None:
        return Refused(
            Refusal.REGION_UNAVAILABLE,
            f"Insured region {visit.insured_region} is unavailable until "
            f"{_shown(outage.end)}{' (' + outage.reason + ')' if outage.reason else ''}; "
            "the patient pays now and may settle again after it resumes (R19).",
        )
    earlier = False
    if not insured_as_named(person, visit) and before is not None and insured_as_named(before.person, visit) \
            and before.covers(visit):
        person, earlier = before.person, True
    if person is None or not insured_as_named(person, visit):
        return Refused(
            Refusal.NOT_INSURED,
            f"No active {visit.insutype.value} insurance in region {visit.insured_region} for this person; "
            "check the credential and the insured region, or settle in cash.",
        )
    if (visit.cert_type == ID_CARD and visit.cert_no and person.certno
            and visit.cert_no.strip().upper() != person.certno.strip().upper()):
        # R2: the patient presents the e-voucher or card. An identity card's number that is not the
        # person's is another person's card (or a typing slip): not settled under this psn_no.
        return Refused(
            Refusal.NOT_INSURED,
            "The identity card number given (mdtrt_cert_no) is not this person's (R2): check the card the "
            "patient presented and the psn_no read from it, or settle in cash.",
        )
    if visit.med_type is MedType.CHRONIC_OUTPATIENT:
        # R14: the person must hold the qualification at home; across provinces only the five
        # diseases settle, inside the province (the insured region included) any the region lists.
        held = any(disease_covers(q, visit.disease_code) for q in person.chronic_qualifications)
        if not held:
            return Refused(
                Refusal.NOT_QUALIFIED,
                f"The person holds no qualification at home for {visit.disease_code or 'this disease'} "
                "as a chronic or special disease (R14); settle as general outpatient or in cash.",
            )
        across = province_of(visit.treating_region) != province_of(visit.insured_region)
        if across and chronic_disease_of(visit.disease_code) is None:
            return Refused(
                Refusal.NOT_QUALIFIED,
                f"{visit.disease_code} is not among the five chronic and special diseases settled across "
                "provinces (R14); settle as general outpatient or in cash.",
            )
    if within(visit.treating_region, visit.insured_region):
        # Care in the insured region itself, a county of it included (area codes nest), is home.
        return Eligible(Basis.HOME, None, insured_before=earlier)
    waived = visit.filing_waived_in_province and province_of(visit.treating_region) == province_of(visit.insured_region)
    valid = [
        f
        for f in filings
        if region_covers(f.filed_region, visit.treating_region)
        and f.insured_region == visit.insured_region
        and f.insutype == visit.insutype
        and visit.filing_counts(f)
    ]
    if valid:
        # The most favourable filing: long-term ones carry no reduction (R10, R11); referral and
        # emergency ones at most 10 points and no first self-pay; other temporary trips up to 20
        # points and a first self-pay (R11, R12). Of one rank, the earliest. Between temporary
        # ones the insured region's numbers decide: pricing prices the others' categories too.
        valid.sort(key=lambda f: (_FILING_RANK.get(f.category, 0), f.begin))
        best = valid[0]
        others = tuple(dict.fromkeys(f.category for f in valid[1:] if f.category is not best.category)
                       ) if _FILING_RANK.get(best.category, 0) > 0 else ()
        if visit.med_type.is_emergency and _FILING_RANK.get(best.category, 0) > 0:
            # Emergency care counts as filed (R5) and settles as at home, with no reduction: a
            # temporary filing (referral, emergency or other, which carry R11's reduction) must
            # not make it worse than holding none. A long-term filing has no reduction (R10).
            return Eligible(Basis.EMERGENCY, None, insured_before=earlier)
        return Eligible(Basis.FILED, best, waived=waived and _FILING_RANK.get(best.category, 0) > 0, others=others,
                        insured_before=earlier)
    if visit.med_type.is_emergency:
        return Eligible(Basis.EMERGENCY, None, insured_before=earlier)  # R5
    if waived:
        return Eligible(Basis.WAIVED, None, insured_before=earlier)  # R17
    return Refused(
        Refusal.NOT_FILED,
        f"No valid filing for region {visit.treating_region} on {visit.on.isoformat()}; the person may file now "
        "(online or by phone) and settle directly before discharge (R6), or pay and claim at home.",
    )
