"""Filing requests, results and events (filing.requests / filing.results / filing.events)."""

from __future__ import annotations

from datetime import date
from typing import Any
from enum import StrEnum

from pydantic import AwareDatetime, Field, field_validator, model_validator

from yidi.contracts.envelope import reply_to_type

from yidi.contracts.common import AreaCode, Code, RequestId, StrictWireModel, WireDay, WireModel
from yidi.domain.codes import FilingCategory, InsuranceType
from yidi.domain.eligibility import Filing, FilingPeriod, FilingStatus


class FilingAction(StrEnum):
    ADD = "add"
    CHANGE = "change"
    CANCEL = "cancel"
    APPROVE = "approve"  # R21: an office approves a filing that waits for approval
    REFUSE = "refuse"  # R21: or refuses it, with a reason
    HISTORY = "history"  # every version of a filing: who, when, what changed


class DeclarationSource(StrEnum):
    SELF_SERVICE = "self_service"  # R21: takes effect at once
    OFFICE = "office"  # waits for an operator's approve or refuse
    IMPORT = "import"  # bulk load of filings made elsewhere, already approved


FIRST_DAY, LAST_DAY = date(1990, 1, 1), date(2999, 12, 31)


_FilingReplyTo = reply_to_type("filing.results")


class FilingRequest(StrictWireModel):
    """A filing request (key = ``psn_no``).

    ``add`` needs the filing's fields; ``change`` needs ``filing_id`` and the new fields;
    ``cancel``, ``approve``, ``refuse`` and ``history`` need ``filing_id`` only.
    """

    action: FilingAction
    reqid: RequestId = Field(description="the sender's id of this request, the idempotency key; answered as sent")
    filing_id: Code | None = Field(default=None, description="required except for add")
    psn_no: Code
    insutype: InsuranceType | None = None
    insuplc_admdvs: AreaCode | None = None
    filed_admdvs: AreaCode | None = None
    category: FilingCategory | None = None
    begndate: WireDay | None = None
    enddate: WireDay | None = None
    decl_source: DeclarationSource = DeclarationSource.SELF_SERVICE
    opter: str = Field(default="", max_length=200, description="who asks: the person, an office clerk, an import job")
    reason: str = Field(default="", max_length=2000, description="why, for refuse and cancel")
    reply_to: _FilingReplyTo = "filing.results"

    @field_validator("begndate", "enddate")
    @classmethod
    def _a_plausible_date(cls, value: date | None) -> date | None:
        # A date the rules can add six months to (9999-09-01 overflowed in R7 and stopped the stage).
        if value is not None and not FIRST_DAY <= value <= LAST_DAY:
            raise ValueError(f"a filing date is between {FIRST_DAY} and {LAST_DAY}")
        return value

    @model_validator(mode="after")
    def _fields_for_the_action(self) -> FilingRequest:
        if self.action in (FilingAction.ADD, FilingAction.CHANGE):
            missing = [f for f in ("insutype", "insuplc_admdvs", "filed_admdvs", "category", "begndate")
                       if getattr(self, f) is None]
            if missing:
                raise ValueError(f"{self.action.value} needs {', '.join(missing)}")
        if self.action is not FilingAction.ADD and not self.filing_id:
            raise ValueError(f"{self.action.value} needs filing_id")
        return self


class FilingPeriodRecord(WireModel):
    """An earlier version of a filing and the days it was in force (``enddate`` inclusive)."""

    filed_admdvs: str
    category: FilingCategory
    begndate: date
    enddate: date
    insutype: InsuranceType | None = Field(default=None, description="when a change changed it; else the filing's")
    planned_enddate: date | None = Field(
        default=None, description="a temporary version's own end when a change for a later day cut it: that change "
                                  "planned again before it began, the version runs on to the new plan's day, no further")
    ended_at: AwareDatetime | None = Field(
        default=None, description="when the change (or cancellation) that ended it at once was applied, on the day "
                                  "after enddate: that day the version was in force until then, so a stay admitted "
                                  "before it is still covered")


class FilingRecord(WireModel):
    filing_id: str
    psn_no: str
    insutype: InsuranceType
    insuplc_admdvs: str
    filed_admdvs: str
    category: FilingCategory
    begndate: date
    enddate: date | None
    status: FilingStatus
    version: int
    earlier: list[FilingPeriodRecord] = Field(
        default_factory=list,
        description="the versions in force before this one, newest first, each until the day before the change "
                    "(or cancellation) that replaced it took effect: a stay admitted under one is still covered")

    @classmethod
    def of(cls, filing: Filing, version: int) -> FilingRecord:
        return cls(
            filing_id=filing.filing_id, psn_no=filing.psn_no, insutype=filing.insutype,
            insuplc_admdvs=filing.insured_region, filed_admdvs=filing.filed_region, category=filing.category,
            begndate=filing.begin, enddate=filing.end, status=filing.status, version=version,
            earlier=[FilingPeriodRecord(filed_admdvs=p.filed_region, category=p.category, begndate=p.begin,
                                        enddate=p.end, insutype=p.insutype, planned_enddate=p.planned_end,
                                        ended_at=p.ended_at)
                     for p in filing.earlier],
        )

    def to_domain(self) -> Filing:
        return Filing(
            filing_id=self.filing_id,
            psn_no=self.psn_no,
            insutype=self.insutype,
            insured_region=self.insuplc_admdvs,
            filed_region=self.filed_admdvs,
            category=self.category,
            begin=self.begndate,
            end=self.enddate,
            status=self.status,
            earlier=tuple(FilingPeriod(p.filed_admdvs, p.category, p.begndate, p.enddate, p.insutype,
                                       p.planned_enddate, p.ended_at)
                          for p in self.earlier),
        )


class FilingResult(WireModel):
    reqid: str
    accepted: bool
    reason: str = ""
    note: str = Field(default="", description="accepted, but not quite as asked: what the rules changed (R7: a "
                                              "long-term filing has no end date; a temporary one lasts at least "
                                              "six months)")
    filing: FilingRecord | None = None
    history: list[dict[str, Any]] = Field(
        default_factory=list,
        description="answer to history: every version of the filing (version, action, reqid, decl_source, opter, "
                    "reason, at, filing). Action `ended`, with decl_source `platform`: the filing ended because the "
                    "person's insurance changed (R7); its reqid names the refdata.persons record")


class FilingEvent(WireModel):
    """A filing changed (key = ``psn_no``): eligibility refreshes its mirror and cache, then
    publishes ``result`` to ``reply_to``, so the answer a person gets implies that the very next
    settlement sees the change."""

    event: str = Field(description="filed, changed, cancelled, approved, refused; ended: by an insurance change (R7)")
    filing: FilingRecord
    result: FilingResult | None = None
    reply_to: str = ""
