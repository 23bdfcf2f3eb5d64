"""Reference feeds: persons, facilities, policies, catalogue items (refdata.* topics).

Each record maps to a frozen domain object with ``to_domain``; a record that does not map is
refused whole when loaded (a bad policy is never half-applied).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator, model_validator

from yidi.contracts.common import (STORED, WHITE_SPACE, Amount, AreaCode, Code, Ratio, StrictWireModel, WireDay,
                                   WireTime)
from yidi.domain.catalogue import CatalogueItem
from yidi.domain.codes import (BUSINESS_TZ, ChargeClass, FilingCategory, FundType, InsuranceType, MedType, PersonType,
                              disease_key, minutes_ahead)
from yidi.domain.eligibility import Facility, Person
from yidi.domain.money import ZERO, fmt
from yidi.domain.policy import BenefitPolicy, BenefitRule, CalculationOrder, DeductibleScope, Layer, LayerBase, one_scheme
from yidi.domain.pricing import OUTPATIENT_QUOTA, POOLED_PAID, deductible_counter, layer_base_counter, layer_paid_counter


# Validation context of a record read back from the platform's own store: it was checked when it
# arrived, under the rules of then (``updated_at`` was free text before eligibility migration 002).
STORED_CONTEXT = {STORED: True}


FIRST_SOURCE_YEAR, LAST_SOURCE_YEAR = 1900, 2999  # a region's record time (1970-01-01: a placeholder some send)


def _source_time(text: str) -> datetime:
    """An ISO 8601 date or time of a region's record; one without a zone is China time."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"updated_at is not an ISO 8601 time (e.g. 2026-01-05T08:00:00+08:00): {text[:40]!r}") from None
    # A time the services can move to China time and store: 0001-01-01T00:30+09:00 is before year 1
    # there (OverflowError), and stopped filing's persons stage at every start.
    if not FIRST_SOURCE_YEAR <= moment.year <= LAST_SOURCE_YEAR:
        raise ValueError(f"updated_at is in the years {FIRST_SOURCE_YEAR} to {LAST_SOURCE_YEAR}: {text[:40]!r}")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=BUSINESS_TZ)


def _updated_at(value: str, info: ValidationInfo) -> str:
    """A record's ``updated_at``, stripped; refused when it is not a time (a stored record keeps it)."""
    value = value.strip()
    if value and not (info.context or {}).get(STORED):
        _source_time(value)  # refused here when it is not a time
    return value


def _time_of(updated_at: str) -> datetime | None:
    """``updated_at`` as a time, or None when the region sent none (or a stored record from before
    the check holds one that is not a time: arrival order)."""
    if not updated_at:
        return None
    try:
        return _source_time(updated_at)
    except ValueError:
        return None


def _ahead(updated_at: str, now: datetime, tolerance_seconds: float, what: str) -> str | None:
    """Why a record dated ``updated_at`` is refused as ahead of ``now`` by more than the tolerance,
    or None. ``what`` names the record's key (this person, this policy version…)."""
    moment = _time_of(updated_at)
    minutes = None if moment is None else minutes_ahead(moment, now, tolerance_seconds)
    if minutes is None:
        return None
    return (f"updated_at {updated_at} is {minutes} minutes ahead of the "
            f"platform's clock ({now.astimezone(BUSINESS_TZ):%Y-%m-%dT%H:%M:%S}+08:00): a record dated in the "
            f"future would make every later record of {what} look older and be ignored; a time without "
            "a zone is China time")


# A reference record's own time (policy and catalogue versions, from session 50), as a person's. Left
# out of a record without one (as a pricing older than it reads them) and of the record pricing
# stores (it keeps the time beside it, migration 009).
_REFERENCE_UPDATED_AT = (
    "the region's time of this record (ISO 8601; without a zone, China time): a record of the same version "
    "older than the one the platform holds is ignored, so reloading an earlier file does not undo a "
    "correction; empty, records apply in arrival order")


# The most characters of a text pricing names a counter after (a person's accumulators: a rule's
# deductible bucket, an account's balance version): room for a hash or a signed id. A name of
# kilobytes overflowed the counters' index (2,704 bytes) and stopped pricing. Stored records keep
# theirs (Postgres's refusal of one then refuses that settlement alone).
MAX_COUNTER_TEXT_CHARS = 256


def _counter_text(value: str, info: ValidationInfo) -> str:
    if len(value) > MAX_COUNTER_TEXT_CHARS and not (info.context or {}).get(STORED):
        raise ValueError(f"at most {MAX_COUNTER_TEXT_CHARS} characters (a counter is named after it): {value[:40]!r}…")
    return value


def _disease_codes(values: list[str], info: ValidationInfo) -> list[str]:
    """ICD-10 codes or prefixes, as R14 matches them: stripped (a padded one matched nothing), and
    none empty (an empty prefix matched every disease). A stored record from before the check
    keeps what it can: its empty entries are dropped."""
    codes = [v.strip(WHITE_SPACE) for v in values]  # as a request's dise_codg is stripped
    # Compared without case or dot (disease_key): "." is as empty as "".
    if any(not disease_key(c) for c in codes):
        if not (info.context or {}).get(STORED):
            raise ValueError("an empty ICD-10 code or prefix (or a dot alone) would match every disease; leave it out")
        codes = [c for c in codes if disease_key(c)]
    return codes


# The further funds (R18) whose year at home a region may state: the pooled fund's is ``pooled_paid``,
# the individual account's is its balance (``acct_balc``).
HOME_LAYER_FUNDS = frozenset(FundType) - {FundType.EMPLOYEE_POOLED, FundType.RESIDENT_POOLED, FundType.EMPLOYEE_ACCOUNT}
MAX_HOME_BUCKETS = 32
# The years a person record may state home usage for: this one and the last (a stay discharged in
# December is priced in its year for up to 92 days after), and room for one more.
MAX_HOME_YEARS = 3
# A bucket's name may not name one stay's counter (``deductible_counter``: a stay at home is another stay).
_STAY_COUNTER = ":stay:"
HomeAmount = Annotated[Amount, Field(ge=0)]


class HomeLayerUsage(StrictWireModel):
    """A further fund's year at home (R18): how much of its threshold the person's bills used up, and
    what it paid."""

    threshold_used: HomeAmount = Field(default=ZERO, description="of the layer's annual threshold, used up at home")
    paid: HomeAmount = Field(default=ZERO, description="what the layer paid at home (toward its annual cap)")


class HomeUsage(StrictWireModel):
    """What the person's insurance paid at home in one year, counted here as if settled here: the
    year's deductible, the pooled fund's annual cap and the further layers' thresholds and caps are
    the person's wherever the care (DOMAIN.md steps 3, 5 and 6). Settlements made through the
    platform are counted by the platform already: a region states its own (home) settlements only."""

    year: int = Field(ge=FIRST_SOURCE_YEAR, le=LAST_SOURCE_YEAR, description="the year these amounts count for")
    pooled_paid: HomeAmount = Field(default=ZERO, description="what the pooled fund paid at home (its annual cap)")
    outpatient_quota_used: HomeAmount = Field(
        default=ZERO, description="R13: of the general-outpatient quota, used at home (as home_quota_used, for this year)")
    deductible_paid: dict[str, HomeAmount] = Field(
        default_factory=dict, max_length=MAX_HOME_BUCKETS,
        description="the year's deductible paid at home, by the insured region's policy bucket (a rule's "
                    "deductible_bucket, as the policy spells it; a rule without one: 'med:' and its med_types "
                    "sorted, comma-separated)",
    )
    layers: dict[FundType, HomeLayerUsage] = Field(
        default_factory=dict, description="further funds (R18) by fund_pay_type: threshold used up and paid at home",
    )

    @field_validator("deductible_paid")
    @classmethod
    def _buckets(cls, value: dict[str, Decimal], info: ValidationInfo) -> dict[str, Decimal]:
        if not (info.context or {}).get(STORED):
            for bucket in value:
                if not bucket.strip(WHITE_SPACE) or len(bucket) > MAX_COUNTER_TEXT_CHARS:
                    raise ValueError(f"a deductible bucket is named in 1 to {MAX_COUNTER_TEXT_CHARS} characters, "
                                     f"not blank: {bucket[:40]!r}")
                if _STAY_COUNTER in bucket:
                    raise ValueError(f"a deductible bucket's name may not hold {_STAY_COUNTER!r} (it would name one "
                                     f"stay's deductible): {bucket[:40]!r}")
        return value

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: dict[FundType, HomeLayerUsage], info: ValidationInfo) -> dict[FundType, HomeLayerUsage]:
        if not (info.context or {}).get(STORED) and (other := sorted(set(value) - HOME_LAYER_FUNDS)):
            raise ValueError(f"layers are further funds (R18: {', '.join(sorted(HOME_LAYER_FUNDS))}), not "
                             f"{', '.join(other)}: the pooled fund's is pooled_paid, the account's its balance")
        return value

    def counters(self) -> dict[str, Decimal]:
        """These amounts as the accumulators pricing keeps of the year's settlements here."""
        counters: dict[str, Decimal] = {}
        if self.pooled_paid:
            counters[POOLED_PAID] = self.pooled_paid
        if self.outpatient_quota_used:
            counters[OUTPATIENT_QUOTA] = self.outpatient_quota_used
        for bucket, amount in self.deductible_paid.items():
            if amount:
                counters[deductible_counter(bucket, DeductibleScope.YEAR, "")] = amount
        for fund, usage in self.layers.items():
            if usage.threshold_used:
                counters[layer_base_counter(fund)] = usage.threshold_used
            if usage.paid:
                counters[layer_paid_counter(fund)] = usage.paid
        return counters


def home_counters(usage: list[HomeUsage]) -> dict[str, dict[str, str]]:
    """A person record's ``home_usage`` as eligibility passes it on (``PersonSnapshot.home_counters``):
    by year (as text, a JSON key), the accumulators' names and amounts."""
    return {str(u.year): {name: fmt(amount) for name, amount in u.counters().items()} for u in usage}


class PersonRecord(StrictWireModel):
    """A person's insurance as the insured region publishes it (key = ``psn_no``)."""

    psn_no: Code
    psn_name: str
    certno: str = ""
    insuplc_admdvs: AreaCode
    insutype: InsuranceType
    psn_type: PersonType
    active: bool = True
    chronic_qualifications: list[str] = Field(default_factory=list, description="ICD-10 codes or prefixes, R14")
    acct_balc: Amount = Field(default=ZERO, ge=0)
    acct_version: str = Field(default="", description="changes whenever the region restates the balance (at most "
                                                      f"{MAX_COUNTER_TEXT_CHARS} characters)")
    qualifications: list[str] = Field(default_factory=list, description="civil_servant, medical_assistance")
    updated_at: str = Field(
        default="",
        description="the region's time of this record (ISO 8601; without a zone, China time): a record older "
                    "than the one the platform holds is ignored; empty, records apply in arrival order",
    )
    home_quota_used: Amount = Field(default=ZERO, ge=0, description="R13: general-outpatient quota used at home this year")
    home_quota_year: int | None = Field(default=None, description="the year home_quota_used counts for")
    home_usage: list[HomeUsage] = Field(
        default_factory=list, max_length=MAX_HOME_YEARS, exclude_if=lambda v: not v,
        description="what the person's insurance paid at home, a year each (deductible, pooled fund, further layers)",
    )

    _chronic_qualifications = field_validator("chronic_qualifications")(_disease_codes)
    _acct_version = field_validator("acct_version")(_counter_text)

    @model_validator(mode="after")
    def _home_quota_has_its_year(self, info: ValidationInfo) -> PersonRecord:
        # Without its year the quota used at home counted for no year: pricing ignored it and the fund
        # paid past the shared quota (R13; a review, session 37). A stored record keeps reading as it was.
        if self.home_quota_used and self.home_quota_year is None and not (info.context or {}).get(STORED):
            raise ValueError(f"home_quota_used {self.home_quota_used} needs home_quota_year, the year it was used in "
                             "(R13: it counts against that year's outpatient quota here)")
        if self.home_quota_used and not (info.context or {}).get(STORED) and any(
                u.year == self.home_quota_year and u.outpatient_quota_used for u in self.home_usage):
            raise ValueError(f"the quota used at home in {self.home_quota_year} is stated twice (home_quota_used and "
                             "home_usage's outpatient_quota_used): state it once, it would count twice")
        return self

    @field_validator("home_usage")
    @classmethod
    def _a_year_once(cls, value: list[HomeUsage]) -> list[HomeUsage]:
        years = [u.year for u in value]
        if len(set(years)) < len(years):
            raise ValueError(f"home_usage states a year at most once: {sorted(years)}")
        return value

    _iso_time = field_validator("updated_at")(_updated_at)

    @property
    def source_time(self) -> datetime | None:
        """``updated_at`` as a time, or None when the region sent none."""
        return _time_of(self.updated_at)

    def ahead_of(self, now: datetime, tolerance_seconds: float) -> str | None:
        """Why this record is refused as dated ahead of ``now`` by more than the tolerance, or None."""
        return _ahead(self.updated_at, now, tolerance_seconds, "this person")

    def to_domain(self) -> Person:
        return Person(
            psn_no=self.psn_no,
            name=self.psn_name,
            insured_region=self.insuplc_admdvs,
            insutype=self.insutype,
            person_type=self.psn_type,
            active=self.active,
            chronic_qualifications=frozenset(self.chronic_qualifications),
            account_balance=self.acct_balc,
            account_version=self.acct_version,
            qualifications=frozenset(self.qualifications),
            certno=self.certno,
        )


class FacilityRecord(StrictWireModel):
    """A designated facility (key = ``fixmedins_code``)."""

    fixmedins_code: Code
    fixmedins_name: str
    admdvs: AreaCode
    level: int = Field(ge=1, le=3)
    med_types: list[MedType]

    def to_domain(self) -> Facility:
        return Facility(self.fixmedins_code, self.fixmedins_name, self.admdvs, self.level, frozenset(self.med_types))


class CatalogueRecord(StrictWireModel):
    """One version of one catalogue item of a treating region (key = ``mdtrtarea_admvs``)."""

    mdtrtarea_admvs: AreaCode
    hilist_code: Code
    hilist_name: str
    chrgitm_lv: ChargeClass
    selfpay_prop: Ratio = ZERO
    pric_uplmt_amt: Amount | None = Field(default=None, ge=0)
    begndate: WireDay
    enddate: WireDay | None = None
    updated_at: str = Field(default="", exclude_if=lambda v: not v, description=_REFERENCE_UPDATED_AT)

    _iso_time = field_validator("updated_at")(_updated_at)

    @model_validator(mode="after")
    def _domain_accepts_it(self) -> CatalogueRecord:
        self.to_domain()  # class, share, ceiling and dates checked by the domain
        return self

    @property
    def source_time(self) -> datetime | None:
        return _time_of(self.updated_at)

    def ahead_of(self, now: datetime, tolerance_seconds: float) -> str | None:
        return _ahead(self.updated_at, now, tolerance_seconds, "this item's version")

    def to_domain(self) -> CatalogueItem:
        return CatalogueItem(
            region=self.mdtrtarea_admvs,
            code=self.hilist_code,
            name=self.hilist_name,
            charge_class=self.chrgitm_lv,
            selfpay_prop=self.selfpay_prop,
            price_ceiling=self.pric_uplmt_amt,
            effective_from=self.begndate,
            effective_to=self.enddate,
        )


class BenefitRuleRecord(StrictWireModel):
    med_types: list[MedType] = Field(min_length=1)
    psn_types: list[PersonType] = Field(default_factory=list)
    facility_levels: list[int] = Field(default_factory=list, description=(
        "the facility levels (1-3) it pays at; empty: every level"))
    deductible: Amount = Field(ge=0)
    deductible_scope: DeductibleScope = DeductibleScope.YEAR
    deductible_bucket: str = Field(default="", description=(
        "rules with the same bucket share one deductible (e.g. all outpatient care); empty: the rule's "
        "med_types are its bucket"))
    ratio: Ratio
    diseases: list[str] = Field(default_factory=list, description="ICD-10 prefixes: a rule for some diseases only (R14)")

    _diseases = field_validator("diseases")(_disease_codes)
    _deductible_bucket = field_validator("deductible_bucket")(_counter_text)


class LayerRecord(StrictWireModel):
    fund_type: FundType
    threshold: Amount = Field(ge=0)
    ratio: Ratio
    annual_cap: Amount | None = Field(default=None, ge=0)
    requires: str = ""
    base: LayerBase = Field(default=LayerBase.LEFT_IN_SCOPE, description=(
        "left_in_scope: what the pooled fund left inside the scope; above_pooled_cap: only the "
        "within-scope cost past the pooled fund's annual cap (the employee large-amount subsidy)"))
    med_types: list[MedType] = Field(default_factory=list, description="the kinds of care it pays for; empty: every kind")


class PolicyRecord(StrictWireModel):
    """One version of an insured region's policy for one insurance type (key = ``insuplc_admdvs``)."""

    insuplc_admdvs: AreaCode
    insutype: InsuranceType
    version: str = Field(min_length=1, max_length=40)
    begndate: WireDay
    # Left out of the record when null, so that a version published without it reads as before
    # where pricing is older (a strict model: a field it does not know is refused).
    enddate: WireDay | None = Field(default=None, exclude_if=lambda v: v is None, description=(
        "first day the region's own policy is no longer in force (exclusive), when this is its latest "
        "version: from then the region takes its city's or province's (pooling moved up); not before begndate (equal: "
        "a version published for a later day withdrawn)"))
    rules: list[BenefitRuleRecord] = Field(min_length=1)
    annual_cap: Amount | None = Field(default=None, ge=0)
    outpatient_quota: Amount | None = Field(default=None, ge=0)
    quota_med_types: list[MedType] = Field(default_factory=lambda: [MedType.GENERAL_OUTPATIENT])
    reductions: dict[FilingCategory, Ratio] = Field(default_factory=dict)
    first_selfpay: dict[FilingCategory, Ratio] = Field(default_factory=dict)
    layers: list[LayerRecord] = Field(default_factory=list)
    account_payable: bool = True
    order: CalculationOrder = CalculationOrder.DEFAULT
    updated_at: str = Field(default="", exclude_if=lambda v: not v, description=_REFERENCE_UPDATED_AT)

    _iso_time = field_validator("updated_at")(_updated_at)

    @property
    def source_time(self) -> datetime | None:
        return _time_of(self.updated_at)

    def ahead_of(self, now: datetime, tolerance_seconds: float) -> str | None:
        return _ahead(self.updated_at, now, tolerance_seconds, "this policy version")

    @model_validator(mode="after")
    def _domain_accepts_it(self, info: ValidationInfo) -> PolicyRecord:
        policy = self.to_domain()  # raises PolicyError (a ValueError) for a policy R11 does not allow
        if not (info.context or {}).get(STORED):
            # For what is published; one stored before a check was added stays readable.
            one_scheme(policy)  # R4
            levels = sorted({level for r in self.rules for level in r.facility_levels} - {1, 2, 3})
            if levels:
                raise ValueError(f"facility level {levels[0]} is none of 1, 2, 3: the rule would never pay")
            if self.outpatient_quota is not None and not self.quota_med_types:
                raise ValueError("outpatient_quota is set but quota_med_types is empty: the quota would count no care")
        return self

    def to_domain(self) -> BenefitPolicy:
        return BenefitPolicy(
            region=self.insuplc_admdvs,
            insutype=self.insutype,
            version=self.version,
            effective_from=self.begndate,
            effective_to=self.enddate,
            rules=tuple(
                BenefitRule(
                    med_types=frozenset(r.med_types),
                    deductible=r.deductible,
                    ratio=r.ratio,
                    person_types=frozenset(r.psn_types),
                    facility_levels=frozenset(r.facility_levels),
                    deductible_scope=r.deductible_scope,
                    deductible_bucket=r.deductible_bucket,
                    diseases=frozenset(r.diseases),
                )
                for r in self.rules
            ),
            annual_cap=self.annual_cap,
            outpatient_quota=self.outpatient_quota,
            quota_med_types=frozenset(self.quota_med_types),
            reductions=dict(self.reductions),
            first_selfpay=dict(self.first_selfpay),
            layers=tuple(
                Layer(l.fund_type, l.threshold, l.ratio, l.annual_cap, l.requires, l.base, frozenset(l.med_types))
                for l in self.layers
            ),
            account_payable=self.account_payable,
            order=self.order,
        )


class RegionStatusRecord(StrictWireModel):
    """An outage or maintenance window of a region (R19) on platform.region-status (key = ``admdvs``)."""

    status_id: Code
    admdvs: AreaCode
    starts_at: WireTime
    ends_at: WireTime
    reason: str = ""
    cancelled: bool = False

    @model_validator(mode="after")
    def _window_is_ordered(self) -> RegionStatusRecord:
        if self.starts_at.tzinfo is None or self.ends_at.tzinfo is None:
            raise ValueError("starts_at and ends_at carry a time zone, e.g. 2026-11-23T02:00:00+08:00")
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at comes after starts_at")
        return self
