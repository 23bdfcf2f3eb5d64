"""Clearing's messages: requests of clearing clerks and regions (clearing.requests), their
results (clearing.results), statements (clearing.statements), alerts (clearing.alerts), and the
reconciliation inputs of facilities (3201 totals, 3202 details)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AwareDatetime, Field, StringConstraints, TypeAdapter, WithJsonSchema, field_validator, model_validator

from yidi.contracts.common import (LATEST_TIMESTAMP_MS, Amount, AreaCode, Code, Ratio, RequestId, StrictWireModel,
                                   TotalAmount, WireDay, WireModel)
from yidi.contracts.envelope import RequestEnvelope, reply_to_type
from yidi.domain.codes import InsuranceType

# A month of the years 1900-2999, as a settlement's time may be (InfTime): "000001" (a typo of
# 202601, say) made the month arithmetic raise and stopped clearing-admin at every start, and
# "999912" closed a month whose next no run can name.
Month = Annotated[str, Field(pattern=r"^(19[0-9]{2}|2[0-9]{3})(0[1-9]|1[0-2])$")]


StatementDay = WireDay  # a reconciliation's dates


class _Period(WireModel):
    stmt_begndate: StatementDay
    stmt_enddate: StatementDay

    # The longest period a reconciliation reads. Unbounded, 0001-01-01 to 9999-12-31 read every
    # settlement a facility ever had: past the statement timeout (30 s) that is taken for Postgres
    # away and retried for ever, and clearing.requests (one partition) waits behind it.
    MAX_DAYS: ClassVar[int] = 366

    @model_validator(mode="after")
    def _begins_before_it_ends(self) -> Any:
        if self.stmt_enddate < self.stmt_begndate:
            raise ValueError(f"stmt_enddate {self.stmt_enddate} is before stmt_begndate {self.stmt_begndate}")
        if (self.stmt_enddate - self.stmt_begndate).days >= self.MAX_DAYS:
            raise ValueError(f"the period {self.stmt_begndate} to {self.stmt_enddate} is longer than {self.MAX_DAYS} "
                             "days; reconcile it in shorter periods")
        return self


_ClearingReplyTo = reply_to_type("clearing.results")


class _Request(StrictWireModel):
    reqid: RequestId
    reply_to: _ClearingReplyTo = "clearing.results"


class FundPrepayment(_Request):
    """An insured region advances money for its people's settlements in a treating region (R3)."""

    type: Literal["fund"]
    insuplc_admdvs: AreaCode
    mdtrtarea_admvs: AreaCode
    amount: Amount = Field(gt=0, description="money advanced; a withdrawal is not a funding")
    warn_share: Ratio | None = Field(default=None, description="warn when the balance falls below this share")


class WithdrawPrepayment(_Request):
    """An insured region takes back part of what it advanced for a treating region (R3): a funding
    made in error, or the prepayment set lower at the year's review. At most what is left of it (the
    balance, and what was funded less what was withdrawn before); what settlements drew is given
    back by clearing, not withdrawn."""

    type: Literal["withdraw"]
    insuplc_admdvs: AreaCode
    mdtrtarea_admvs: AreaCode
    amount: Amount = Field(gt=0, description="money taken back; at most the account's balance")


class RunMonth(_Request):
    """Clear a settlement month: close it, total it per region pair, issue the statements. Months
    are cleared in order: refused while earlier months hold settlements or undoings not cleared."""

    type: Literal["run_month"]
    setlym: Month


class ConfirmStatement(_Request):
    """One side of a statement confirms it; when both have, the prepayment is topped up."""

    type: Literal["confirm"]
    statement_id: Code
    side: Literal["insured", "treating"]
    opter: str = Field(default="", max_length=200, description="who confirms: recorded on the statement with the time")


class QuerySettlement(_Request):
    type: Literal["query_settlement"]
    setl_id: str = Field(default="", description="the settlement's setl_id; with msgid too, both must name it")
    msgid: str = Field(default="", description="the settlement request's msgid")

    @model_validator(mode="after")
    def _names_one(self) -> QuerySettlement:
        if not (self.setl_id or self.msgid):
            raise ValueError("give the settlement's setl_id or its msgid")
        return self


class QueryFacilityDay(_Request):
    """A facility's settlements dated on one day, a page at a time (``offset``), with the day's totals."""

    type: Literal["query_facility_day"]
    fixmedins_code: Code
    day: WireDay
    offset: int = Field(default=0, ge=0, le=2**31 - 1)  # written back in the answer: a JSON integer


class QueryPairMonth(_Request):
    type: Literal["query_pair_month"]
    insuplc_admdvs: AreaCode
    mdtrtarea_admvs: AreaCode
    setlym: Month


class QueryStatement(_Request):
    """A statement's entries, a page at a time (``offset``), for a region to check before it
    confirms: each settlement of its region pair that landed in its month (cleared as drawn) and
    each cancellation or reversal that landed in it (given back); together they make its totals."""

    type: Literal["query_statement"]
    statement_id: Code
    offset: int = Field(default=0, ge=0, le=2**31 - 1)  # written back in the answer: a JSON integer


class QueryMonth(_Request):
    """A cleared month's statements and net positions, a page at a time (``offset``): a month's
    run lists as many as one answer holds."""

    type: Literal["query_month"]
    setlym: Month
    offset: int = Field(default=0, ge=0, le=2**31 - 1)  # written back in the answer: a JSON integer


class QueryPrepayment(_Request):
    type: Literal["query_prepayment"]
    insuplc_admdvs: AreaCode
    mdtrtarea_admvs: AreaCode


class Reconcile(WireModel):
    """A facility's 3201/3202 request, passed on by eligibility; answered to its ``reply_to``."""

    type: Literal["reconcile"]
    request: RequestEnvelope
    request_ts_ms: int = Field(ge=0, lt=LATEST_TIMESTAMP_MS)
    reqid: str = ""


ClearingRequest = Annotated[
    FundPrepayment | WithdrawPrepayment | RunMonth | ConfirmStatement | QuerySettlement | QueryFacilityDay | QueryPairMonth
    | QueryMonth | QueryStatement | QueryPrepayment | Reconcile,
    Field(discriminator="type"),
]
CLEARING_REQUEST = TypeAdapter(ClearingRequest)


class ClearingResult(WireModel):
    reqid: str
    ok: bool
    reason: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class Statement(WireModel):
    """What an insured region owes a treating region for one period (clearing.statements)."""

    statement_id: str
    setlym: str
    insuplc_admdvs: str
    mdtrtarea_admvs: str
    settlements: int
    undone: int
    medfee_sumamt: TotalAmount
    fund_pay_sumamt: TotalAmount
    acct_pay: TotalAmount
    clr_sumamt: TotalAmount = Field(description="what the insured region owes for the period and what confirming the "
                               "statement clears: fund_pay_sumamt + acct_pay (the individual accounts' payments "
                               "are cleared too; the patients' cash is not)")
    confirmed_insured: bool = False
    confirmed_treating: bool = False
    state: str = "issued"
    # Who confirmed each side and when: the first confirm request's opter (null when it named none,
    # or the side was confirmed before session 50) and the time it was applied.
    confirmed_insured_by: str | None = None
    confirmed_insured_at: AwareDatetime | None = None
    confirmed_treating_by: str | None = None
    confirmed_treating_at: AwareDatetime | None = None


class PrepaymentAlert(WireModel):
    """An insured region's prepayment for a treating region: low (below ``warn_share`` of what was
    advanced), run out (a shortfall), or, under the refuse policy, refusing bills (``refused_draw``
    given)."""

    insuplc_admdvs: str
    mdtrtarea_admvs: str
    balance: TotalAmount
    funded: TotalAmount
    warn_share: Ratio
    shortfall: TotalAmount
    message: str
    refused_draw: TotalAmount | None = Field(
        None, description="under YIDI_PREPAYMENT_POLICY=refuse, an alert that the account refuses bills: what a "
                          "bill it refused would have drawn (fund_pay_sumamt + acct_pay); null in a low or "
                          "run-out alert")
    refused_left: TotalAmount | None = Field(
        None, description="what was left, as pricing saw it, when it refused that bill; null in a low or "
                          "run-out alert")


class PrepaymentStatus(WireModel):
    """An account's balance after a change (clearing.prepayment-status, compacted by pair)."""

    insuplc_admdvs: str
    mdtrtarea_admvs: str
    balance: TotalAmount
    version: int = Field(description="the account's move count: a status never replaces a newer one")


class CutPosition(WireModel):
    """Where clearing's settlement stage stood on one partition of its input when a month closed."""

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0, description="a settlement record below this offset was entered before the close; "
                                          "one at or past it after, in a later month")


class PeriodClosed(WireModel):
    """A month closed by its run (clearing.periods, compacted by month; published once the run has
    totalled it): when, and its cut."""

    setlym: str
    closed_at: AwareDatetime = Field(description="when the month closed (ISO 8601, with its offset)")
    cut: list[CutPosition] = Field(description="where the settlement stage stood on each partition at the close; "
                                               "yidi-recover writes it into a database restored from before the close, "
                                               "so that the settlements handled again land in the months they landed in")


class ReconcileTotalsInput(_Period):
    """3201: the facility's totals for a period (national field names)."""

    medfee_sumamt: Amount
    fund_pay_sumamt: Amount
    acct_pay: Amount
    fixmedins_setl_cnt: int = Field(ge=0)
    insutype: Annotated[InsuranceType | None, WithJsonSchema({
        "anyOf": [{"type": "string", "enum": [t.value for t in InsuranceType]}, {"const": ""}, {"type": "null"}],
    })] = Field(default=None, description="the insurance type the totals are for; absent or empty: all types together")
    # The national 3201 names these two too (a facility's system reconciles by clearing type and
    # settling agency): each filters on what every settlement's answer carried (setlinfo), as
    # insutype does. Ignored, a facility reconciling outpatient and inpatient apart was told the
    # totals differ by the other type's.
    clr_type: Annotated[str | None, StringConstraints(strip_whitespace=True), WithJsonSchema({
        "anyOf": [{"type": "string", "maxLength": 10}, {"type": "null"}],
    })] = Field(default=None, max_length=10, description="the clearing type the totals are for, as the settlements' "
                                                          "answers carry it (setlinfo.clr_type: 21 inpatient, 11 the "
                                                          "rest); absent or empty: all")
    setl_optins: Annotated[str | None, StringConstraints(strip_whitespace=True), WithJsonSchema({
        "anyOf": [{"type": "string", "maxLength": 10}, {"type": "null"}],
    })] = Field(default=None, max_length=10, description="the agency the totals are for, as the settlements' answers "
                                                          "carry it (setlinfo.clr_optins: the insured region); absent "
                                                          "or empty: all")

    @field_validator("insutype", "clr_type", "setl_optins", mode="before")
    @classmethod
    def _empty_is_all(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    def filters(self) -> dict[str, str]:
        """The filters given (``insutype``, ``clr_type``, ``setl_optins``), by name (none: all the period's)."""
        return {k: v for k, v in (("insutype", self.insutype.value if self.insutype else None),
                                  ("clr_type", self.clr_type), ("setl_optins", self.setl_optins)) if v is not None}


class ReconcileDetail(WireModel):
    setl_id: Code
    medfee_sumamt: Amount
    fund_pay_sumamt: Amount
    acct_pay: Amount


class ReconcileDetailsInput(_Period):
    """3202: the facility's settlements for a period, one by one."""

    MAX_DAYS: ClassVar[int] = 31  # every row of the period is read: a month at most

    details: list[ReconcileDetail] = Field(max_length=100_000)

    @model_validator(mode="after")
    def _each_settlement_once(self) -> Any:
        seen: set[str] = set()
        for d in self.details:
            if d.setl_id in seen:
                raise ValueError(f"setl_id {d.setl_id} is listed twice; list each settlement once")
            seen.add(d.setl_id)
        return self
