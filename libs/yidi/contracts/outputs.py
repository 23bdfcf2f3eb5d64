"""The ``output`` of every answer on a gateway's reply topic other than a settlement's
(``SettlementOutput``): person info (1101), benefit check (2001), cancellation and reversal
(2208, 2305, 2601), reconciliation (3201, 3202), and a person's year so far (5206).

The services write these answers as dicts; these models are their schema (docs/schemas), in
serialization form, and the e2e tests check every answer they read against it
(tests/e2e/conftest.py). A failure's ``output`` is ``{}`` whatever the infno.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from yidi.contracts.common import Amount, Day, WireModel
from yidi.contracts.envelope import ErrCode
from yidi.contracts.filing import FilingRecord
from yidi.domain.codes import FilingCategory, InsuranceType, PersonType
from yidi.domain.eligibility import Basis

# --- 1101: person info -------------------------------------------------------------------------


class PersonBaseInfo(WireModel):
    psn_no: str
    psn_name: str
    certno: str = Field(description="the identity document's number; empty when the insured region did not give it")
    insuplc_admdvs: str


class PersonInsuInfo(WireModel):
    insutype: InsuranceType
    psn_type: PersonType
    psn_insu_stas: Literal["1", "2"] = Field(description="1: insured (contributions current), 2: suspended")
    balc: Amount = Field(description="the individual account's balance")
    insuplc_admdvs: str


class PersonIdetInfo(WireModel):
    dise_codg: str = Field(description="a chronic disease the person is qualified for (R14): an ICD-10 code or prefix")


class PersonInfoOutput(WireModel):
    """1101's answer: who the person is, their insurance, chronic qualifications and filings."""

    baseinfo: PersonBaseInfo
    insuinfo: list[PersonInsuInfo]
    idetinfo: list[PersonIdetInfo]
    filings: list[FilingRecord] = Field(description="the person's filings as eligibility holds them, any status")


# --- 5206: a person's year so far -----------------------------------------------------------------


class CumulativeInfo(WireModel):
    psn_no: str
    insutype: InsuranceType
    insuplc_admdvs: str
    year: int
    policy_version: str = Field(description="the insured region's policy whose limits are shown (in force at the "
                                            "request's day, or at the end of an earlier year asked about)")


class CumulativeLine(WireModel):
    cum_type_code: Literal["deductible", "pooled_cap", "outpatient_quota", "layer_threshold", "layer_cap",
                           "account"] = Field(
        description="deductible: a year's deductible bucket; pooled_cap: the pooled fund's annual cap; "
                    "outpatient_quota: the general-outpatient quota (R13); layer_threshold, layer_cap: a further "
                    "fund's annual threshold and cap (R18); account: the individual account (R16)")
    bucket: str = Field(description="the deductible's bucket (deductible only, else empty)")
    fund_pay_type: str = Field(description="the further fund (layer lines only, else empty)")
    limit: Amount | None = Field(description="the policy's amount for the year (a deductible: of the rules the person's "
                                             "visits at the asking facility's level would apply; the account: its balance "
                                             "as the region last stated it); null when those rules differ (by kind of "
                                             "visit or disease) or the policy in force no longer names the bucket")
    used: Amount = Field(description="used this year, through the platform and at home as the region stated it (the "
                                     "account: drawn through the platform since the region last stated its balance)")
    used_at_home: Amount = Field(description="of it, at home as the person record states (the account: 0.00)")
    left: Amount | None = Field(description="limit less used, not below 0; null without a limit")


class CumulativeOutput(WireModel):
    """5206's answer: the person's year so far in the insured region's fund, against its policy."""

    cuminfo: CumulativeInfo
    cumoutput: list[CumulativeLine] = Field(description="each deductible bucket, the pooled fund's cap, the outpatient "
                                                        "quota, each further layer the person has; the account when "
                                                        "the policy lets it pay and the year is the request's")


# --- 2001: benefit check -----------------------------------------------------------------------


class BenefitCheckEligible(WireModel):
    """2001's answer when the person may settle here for that insurance and med_type."""

    eligible: Literal["1"]
    basis: Basis = Field(description="filed, emergency (R5), waived (R17) or home (treated in the insured region)")
    filing_id: str = Field(description="the filing relied on; empty when none is needed")
    filing_category: FilingCategory | Literal[""] = Field(description="its category; empty when none")


class BenefitCheckRefused(WireModel):
    """2001's answer when a settlement would be refused: the code and message it would get. The
    answer itself succeeds (infcode 0)."""

    eligible: Literal["0"]
    reason_code: ErrCode
    reason: str


# --- 2208, 2305, 2601: cancellation and reversal -----------------------------------------------


class UndoSetlInfo(WireModel):
    setl_id: str = Field(description="the settlement undone")
    psn_no: str
    state: Literal["cancelled", "reversed"]
    undone_by: str = Field(description="the msgid of the request that undid it (this one, or an earlier one "
                                       "when the settlement was already undone)")


class UndoOutput(WireModel):
    """A cancellation's or reversal's answer: the settlement it undid."""

    setlinfo: UndoSetlInfo


# --- 3201, 3202: reconciliation ----------------------------------------------------------------

TotalsField = Literal["fixmedins_setl_cnt", "medfee_sumamt", "fund_pay_sumamt", "acct_pay"]


class PlatformTotals(WireModel):
    fixmedins_setl_cnt: int = Field(description="settlements the platform holds for the period (and filters)")
    medfee_sumamt: Amount
    fund_pay_sumamt: Amount
    acct_pay: Amount


class TotalsDifference(WireModel):
    field: TotalsField
    facility: str = Field(description="the facility's figure: a count in digits, or an amount with two decimals")
    platform: str = Field(description="the platform's figure, written the same way")
    gap: str = Field(description="facility minus platform, written the same way")


class ReconcileTotalsOutput(WireModel):
    """3201's answer: whether the facility's totals for the period match the platform's."""

    stmt_rslt: Literal["0", "1"] = Field(description="0: the totals match; 1: they differ")
    stmt_rslt_dscr: str
    platform: PlatformTotals
    differences: list[TotalsDifference]


class DetailDifference(WireModel):
    setl_id: str
    problem: Literal["missing_on_platform", "missing_at_facility", "amounts_differ", "cancelled_on_platform",
                     "reversed_on_platform", "dated_outside_period"]
    facility: dict[str, Amount] = Field(description="medfee_sumamt, fund_pay_sumamt, acct_pay as the facility "
                                                    "listed them; {} when it did not list the settlement")
    platform: dict[str, Amount] = Field(description="the same, as the platform holds them; {} when it has none")
    platform_setl_date: Day | None = Field(
        default=None, exclude_if=lambda v: v is None,
        description="the day the platform has the settlement under (every difference but missing_on_platform; "
                    "before session 49, dated_outside_period only)")
    # What the facility's own records hold, to find the settlement by (from session 49: a
    # settlement whose answer the gateway never got was named by its setl_id alone, which the
    # facility never saw). Every difference but missing_on_platform.
    msgid: str | None = Field(default=None, exclude_if=lambda v: v is None,
                              description="the settlement request's msgid, as the facility sent it")
    psn_no: str | None = Field(default=None, exclude_if=lambda v: v is None)
    mdtrt_id: str | None = Field(default=None, exclude_if=lambda v: v is None)
    undone_msgid: str | None = Field(default=None, exclude_if=lambda v: v is None,
                                     description="cancelled_/reversed_on_platform: the msgid of the request that undid it")
    undone_at: str | None = Field(default=None, exclude_if=lambda v: v is None,
                                  description="cancelled_/reversed_on_platform: when the platform undid it (ISO 8601)")


class ReconcileDetailsOutput(WireModel):
    """3202's answer: the facility's settlements of the period against the platform's, one by one."""

    stmt_rslt: Literal["0", "1"] = Field(description="0: every settlement matches; 1: some differ")
    stmt_rslt_dscr: str
    differences_total: int
    differences: list[DetailDifference] = Field(description="the first 1,000 differences, by setl_id (2,000 before "
                                                            "session 49, when a difference said less)")
