"""Messages between the services (settlement.eligible, settlement.priced); never seen by gateways."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from yidi.contracts.common import LATEST_TIMESTAMP_MS, Amount, TotalAmount, WireModel
from yidi.contracts.envelope import ErrCode, RequestEnvelope, RequestRef, ResponseEnvelope
from yidi.domain.codes import FilingCategory
from yidi.domain.money import ZERO


class Refusal(WireModel):
    err_code: ErrCode
    err_msg: str


class PersonSnapshot(WireModel):
    psn_no: str
    psn_name: str
    psn_type: str
    insutype: str
    insuplc_admdvs: str
    acct_balc: Amount = ZERO
    acct_version: str = ""
    qualifications: list[str] = Field(default_factory=list)
    home_quota_used: Amount = ZERO
    home_quota_year: int | None = None
    # What the insurance paid at home, by year (``refdata.home_counters``: the deductible's, the pooled
    # fund's and the further layers' accumulators), added to the platform's for that year.
    home_counters: dict[int, dict[str, Amount]] = Field(default_factory=dict, exclude_if=lambda v: not v)


class EligibleWork(WireModel):
    """eligibility → pricing: the request with the terms eligibility established, or its refusal."""

    request: RequestEnvelope
    request_hash: str
    request_ts_ms: int = Field(ge=0, lt=LATEST_TIMESTAMP_MS)
    refusal: Refusal | None = None
    person: PersonSnapshot | None = None
    facility_level: int = 0
    basis: str = ""
    filing_id: str = ""
    filing_category: FilingCategory | None = None
    # R17: a filed temporary trip inside a province that waives filing (no R11 reduction).
    filing_waived: bool = False
    # The categories of the person's other valid temporary filings for this visit: pricing settles
    # on whichever of them and ``filing_category`` the insured region's policy pays most (R11, R12).
    filing_others: list[FilingCategory] = Field(default_factory=list)


class WorkKind(StrEnum):
    SETTLE = "settle"
    CANCEL = "cancel"


class LedgerFacts(WireModel):
    """What clearing records of a settlement, beside the answer itself."""

    setl_id: str
    psn_no: str
    mdtrt_id: str
    insuplc_admdvs: str
    mdtrtarea_admvs: str
    fixmedins_code: str
    setlym: str
    medfee_sumamt: Amount
    fund_pay_sumamt: Amount
    acct_pay: Amount
    psn_cash_pay: Amount


class RefusalNotice(WireModel):
    """pricing → clearing (settlement.priced), under YIDI_PREPAYMENT_POLICY=refuse: pricing refused a
    bill PREPAYMENT_EXHAUSTED, and answered it; clearing warns the insured region (PrepaymentAlert).

    It names no msgid (``ref`` carries it): a clearing of an earlier version, which cannot read it,
    dead-letters it without answering anyone (the request was answered)."""

    notice: Literal["prepayment_refused"] = "prepayment_refused"
    insuplc_admdvs: str
    mdtrtarea_admvs: str
    draw: TotalAmount = Field(description="what the refused bill would have drawn: fund_pay_sumamt + acct_pay")
    left: TotalAmount = Field(description="what was left, as pricing's mirror of the balance held it")
    ref: str = Field(description="the refused request's msgid and the time it reached Kafka (ms), "
                                 "`<msgid>@<ms>`: clearing records each notice once")


class PricedWork(WireModel):
    """pricing → clearing: a settlement to record, or a cancellation to apply, with its answer.

    Pricing writes it in wire form directly (``services/pricing/handlers.py``); this model is its
    schema, and what clearing validates it with.
    """

    kind: WorkKind
    request: RequestRef
    request_hash: str
    request_ts_ms: int = Field(ge=0, lt=LATEST_TIMESTAMP_MS)
    answer: ResponseEnvelope
    facts: LedgerFacts | None = None
    # For a cancellation or reversal: the settlement being undone.
    target_setl_id: str = ""
