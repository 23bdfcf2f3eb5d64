"""Bodies of settlement requests and answers (2206/2207/2208, 2303/2304/2305, 2601, 1101, 2001)."""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema, field_validator, model_validator

from yidi.contracts.common import (
    WHITE_SPACE,
    Amount,
    Code,
    DiseaseCode,
    Quantity,
    Ratio,
    StayTime,
    UnitPrice,
    WireModel,
    _amount,
    _quantity,
    _stay_time,
    _unit_price,
    empty_is_not_given,
)
from yidi.domain.codes import InsuranceType, MedType
from yidi.domain.money import ZERO, to_fen
from yidi.domain.pricing import BillLine
from yidi.domain.values import value

log = logging.getLogger(__name__)


class FeeDetail(WireModel):
    feedetl_sn: Code
    hilist_code: Code
    hilist_name: str = Field(default="", max_length=200)
    cnt: Quantity
    # A bill's lines are charges: a refund is a cancellation (2305) and a new settlement, never a
    # negative line, which would let the funds pay on a bill of zero (UnitPrice has no sign).
    pric: UnitPrice
    det_item_fee_sumamt: Amount = Field(ge=0)

    @model_validator(mode="after")
    def _amount_is_count_times_price(self) -> FeeDetail:
        if to_fen(self.cnt * self.pric) != self.det_item_fee_sumamt:
            raise ValueError(
                f"fee detail {self.feedetl_sn}: det_item_fee_sumamt {self.det_item_fee_sumamt} "
                f"is not cnt × pric = {to_fen(self.cnt * self.pric)}"
            )
        return self


class SettlementInput(WireModel):
    """A bill to settle or pre-settle; the fee details travel inside the request."""

    psn_no: Code
    mdtrt_cert_type: Literal["01", "02", "03"] = "02"
    mdtrt_cert_no: str = Field(default="", max_length=64)
    insutype: InsuranceType
    med_type: MedType
    mdtrt_id: Code
    # The visit's begin (admission) and end (discharge), when given; begntime decides which filing
    # covers a stay (R6), so it must be a time that exists.
    begntime: StayTime = None
    endtime: StayTime = None
    # Stripped as codes are: " E11.900" matched no chronic disease (NOT_QUALIFIED for a code that looks right).
    dise_codg: DiseaseCode = ""
    dise_name: str = Field(default="", max_length=200)
    acct_used_flag: Literal["0", "1"] = "0"
    medfee_sumamt: Amount
    feedetail: list[FeeDetail] = Field(min_length=1, max_length=2000)

    @model_validator(mode="after")
    def _total_is_sum_of_details(self) -> SettlementInput:
        total = sum((d.det_item_fee_sumamt for d in self.feedetail), ZERO)
        if total != self.medfee_sumamt:
            raise ValueError(f"medfee_sumamt {self.medfee_sumamt} is not the sum of the details {total}")
        if len({d.feedetl_sn for d in self.feedetail}) != len(self.feedetail):
            raise ValueError("feedetl_sn repeats within the bill")
        if self.med_type is MedType.CHRONIC_OUTPATIENT and not self.dise_codg:
            raise ValueError(_DISEASE_REQUIRED)
        if self.begntime and self.endtime and self.endtime < self.begntime:
            raise ValueError(f"endtime {self.endtime:%Y-%m-%d %H:%M:%S} is before begntime {self.begntime:%Y-%m-%d %H:%M:%S}")
        return self


@value
class BillFields:
    """What pricing prices a bill with: the values ``SettlementInput`` gives for these fields."""

    psn_no: str
    insutype: InsuranceType
    med_type: MedType
    mdtrt_id: str
    acct_used_flag: str
    dise_codg: str
    lines: tuple[BillLine, ...]

    @classmethod
    def of(cls, body: SettlementInput) -> BillFields:
        return cls(body.psn_no, body.insutype, body.med_type, body.mdtrt_id, body.acct_used_flag, body.dise_codg,
                   tuple(BillLine(d.feedetl_sn, d.hilist_code, d.hilist_name, d.cnt, d.pric, d.det_item_fee_sumamt)
                         for d in body.feedetail))


def bill_fields(data: dict[str, Any]) -> BillFields:
    """The fields pricing prices with, of a body ``SettlementInput`` has already validated.

    Eligibility validates every bill it passes on (it refuses one that does not validate), so
    pricing reads the seven fields it uses directly: the model's own validators of the values it
    converts (amounts, counts, unit prices, the enums) and its stripping of codes, and not the
    checks that can only refuse (lengths, the sums, repeated lines, cnt × pric, the fields pricing
    does not read). That is half the cost of validating the body again, which was an eighth of
    pricing's CPU (docs/BENCHMARKS.md, 2026-12-04, "Pricing's second validation"). Whatever the
    direct read cannot take (a field it converts or strips missing or of another type, a flag not
    "0"/"1") goes through the model, which gives the same values or says what is wrong; the line's
    name, which pricing does not use, is taken as it is. tests/unit/test_contracts.py compares the
    two on every bill of a generated day and on every randomly damaged body the model accepts, and
    pins the models' fields, validators and config: a change to ``SettlementInput`` or
    ``FeeDetail`` must be made here too.
    """
    try:
        flag = data.get("acct_used_flag", "0")
        if flag != "0" and flag != "1":  # money rides on it: "1" draws on the individual account
            raise ValueError(flag)
        return BillFields(
            data["psn_no"].strip(WHITE_SPACE),  # str only: anything else goes through the model
            InsuranceType(data["insutype"]),
            MedType(data["med_type"]),
            data["mdtrt_id"].strip(WHITE_SPACE),
            flag,
            data.get("dise_codg", "").strip(WHITE_SPACE),
            tuple(BillLine(d["feedetl_sn"].strip(WHITE_SPACE), d["hilist_code"].strip(WHITE_SPACE), d.get("hilist_name", ""),
                           _quantity(d["cnt"]), _unit_price(d["pric"]), _amount(d["det_item_fee_sumamt"]))
                  for d in data["feedetail"]),
        )
    except (KeyError, TypeError, AttributeError, ValueError, ArithmeticError) as exc:
        fields = BillFields.of(SettlementInput.model_validate(data))
        global _drift_logged
        if not _drift_logged:  # the model took what the direct read could not: they have drifted apart
            _drift_logged = True
            log.warning("bill_fields read a bill the model validates only through the model (%r): "
                        "update bill_fields to the model", exc)
        return fields


_drift_logged = False


def care_day(inf_time: datetime, data: dict[str, Any]) -> date:
    """The day a bill is priced as of: the policy and catalogue in force, and the year whose
    deductible, caps and quotas it counts in. For a stay, the day it ended (``endtime``: its
    discharge), when the request gives it, not after the settlement's day and at most
    ``STAY_END_DAYS`` before it; else the settlement's (``inf_time``). A stay discharged on 31 December and settled
    after midnight, or cancelled and settled again in January, counts in December's year, as
    regions count a stay across the new year (by its discharge), and not by the moment the cashier
    settled it. Other care is priced on its settlement's day, and so is a stay whose ``endtime``
    lies further back (a year typed wrong at the new year reaches no earlier year's counters) or
    cannot be read (a record an earlier
    version passed on, read again: a bill is not refused here)."""
    settled = inf_time.date()
    if data.get("med_type") not in _STAY_MED_TYPES:
        return settled
    try:
        ended = _stay_time(data.get("endtime"))
    except ValueError:
        return settled
    if ended is None or ended.date() >= settled or (settled - ended.date()).days > STAY_END_DAYS:
        return settled
    return ended.date()


# How far before its settlement a stay's end may lie and still price it: a discharge settled after
# a holiday, or a bill corrected and settled again, weeks later.
STAY_END_DAYS = 92
_STAY_MED_TYPES = frozenset(m.value for m in MedType if m.is_inpatient)


class CancelInput(WireModel):
    psn_no: Code
    mdtrt_id: Code
    setl_id: Code


class ReversalInput(WireModel):
    psn_no: Code
    omsgid: Code
    oinfno: Literal["2207", "2304"]

    @field_validator("oinfno", mode="before")
    @classmethod
    def _a_settlement_not_a_cancellation(cls, value: Any) -> Any:
        # DOMAIN.md: a reversal (2601) undoes a settlement, as a cancellation does; a cancellation is
        # not undone. The cashier whose 2208 went unanswered needs to know what to do instead.
        if value in ("2208", "2305"):
            raise ValueError(f"a cancellation ({value}) cannot be reversed, only a settlement (2207/2304): "
                             "send the cancellation again under its msgid for its answer; a visit whose settlement "
                             "was cancelled is settled again under a new msgid")
        return value


def _code_or_empty(codes: type[InsuranceType] | type[MedType]) -> Any:
    """A code a person query may leave out: gateways following the national interface send "" for
    a field the transaction does not use (a 1101 uses neither insutype nor med_type), read as left
    out; a 2001, which needs both, is then answered that it names them."""
    return Annotated[codes | None, BeforeValidator(empty_is_not_given), WithJsonSchema({
        "anyOf": [{"type": "string", "enum": [c.value for c in codes]}, {"const": ""}, {"type": "null"}],
    })]


class PersonQueryInput(WireModel):
    """1101 person info and 2001 benefit check."""

    psn_no: Code
    insutype: _code_or_empty(InsuranceType) = None
    med_type: _code_or_empty(MedType) = None
    dise_codg: DiseaseCode = ""
    # R2: the credential the patient presents, as on a settlement. A 2001 that gives an identity
    # card (02) and its number is checked as the settlement would be (another person's card is
    # refused). Read as sent and never refused here: a 1101 does not use them, and gateways fill
    # fields they do not use with "" (a stricter check would refuse a person query for them).
    mdtrt_cert_type: str | None = None
    mdtrt_cert_no: str | None = None

    @model_validator(mode="after")
    def _a_chronic_check_names_the_disease(self) -> PersonQueryInput:
        if self.med_type is MedType.CHRONIC_OUTPATIENT and not self.dise_codg:
            raise ValueError(_DISEASE_REQUIRED)
        return self


class CumulativeInput(WireModel):
    """5206 a person's year so far (人员累计信息查询): what the year's deductible, the pooled fund's cap,
    the outpatient quota (R13), the further layers (R18) and the individual account have left."""

    psn_no: Code
    insutype: _code_or_empty(InsuranceType) = Field(
        default=None, description="the insurance asked about; empty: the person's (it must be the person's)")
    cum_ym: str = Field(default="", description="a month of the year asked about (yyyyMM); empty: inf_time's year")

    @field_validator("cum_ym")
    @classmethod
    def _a_month(cls, value: str) -> str:
        value = value.strip()
        if value and not (len(value) == 6 and value.isascii() and value.isdigit()
                          and 1900 <= int(value[:4]) <= 2999 and 1 <= int(value[4:]) <= 12):
            raise ValueError(f"cum_ym is a month, yyyyMM (e.g. 202607), in the years 1900 to 2999: {value[:20]!r}")
        return value

    def year(self, inf_time: datetime) -> int:
        return int(self.cum_ym[:4]) if self.cum_ym else inf_time.year


_DISEASE_REQUIRED = ("dise_codg is required for med_type 14: outpatient care of a chronic disease is settled "
                     "by the disease (R14)")


class SetlInfo(WireModel):
    mdtrt_id: str
    setl_id: str
    psn_no: str
    psn_name: str
    insutype: str
    psn_type: str
    med_type: str
    setl_time: str
    medfee_sumamt: Amount
    fulamt_ownpay_amt: Amount
    overlmt_selfpay: Amount
    preselfpay_amt: Amount
    inscp_scp_amt: Amount
    act_pay_dedc: Amount
    hifp_pay: Amount
    pool_prop_selfpay: Ratio
    cvlserv_pay: Amount
    hifes_pay: Amount = ZERO
    hifmi_pay: Amount
    hifob_pay: Amount
    maf_pay: Amount
    oth_pay: Amount = ZERO
    fund_pay_sumamt: Amount
    psn_part_amt: Amount
    acct_pay: Amount
    psn_cash_pay: Amount
    hosp_part_amt: Amount
    balc: Amount
    clr_optins: str
    clr_way: str
    clr_type: str


class SetlDetail(WireModel):
    """One row per fund that paid, and always one for the pooled fund, whose ``setl_proc_info``
    says how it was computed even when it paid 0.00 (a deductible not yet reached, a cap used up):
    the row a cashier reads to explain a bill the fund did not pay."""

    fund_pay_type: str
    fund_pay_type_name: str
    inscp_scp_amt: Amount
    crt_payb_lmt_amt: Amount | None = Field(
        default=None, description="the most the fund could pay on this bill (本次可支付限额金额): its annual cap or "
                                  "quota left this year before this settlement, out of which fund_payamt came; null: no "
                                  "cap or quota applies (never \"0.00\", which would mean none was left)")
    fund_payamt: Amount
    setl_proc_info: str


class FeeDetailResult(WireModel):
    feedetl_sn: str
    hilist_code: str
    chrgitm_lv: str
    selfpay_prop: Ratio
    pric_uplmt_amt: Amount | None = Field(
        default=None, description="the catalogue's price ceiling for the item; null: the item has no ceiling (never "
                                  "\"0.00\", which would put the whole price over it)")
    fulamt_ownpay_amt: Amount
    overlmt_selfpay: Amount
    preselfpay_amt: Amount
    inscp_scp_amt: Amount
    memo: str = ""


class SettlementOutput(WireModel):
    setlinfo: SetlInfo
    setldetail: list[SetlDetail]
    feedetail: list[FeeDetailResult]


def amounts_identities_hold(info: SetlInfo) -> bool:
    """The three amount identities of DOMAIN.md, to the fen."""
    funds = info.hifp_pay + info.hifmi_pay + info.hifob_pay + info.cvlserv_pay + info.maf_pay + info.oth_pay
    return (
        info.medfee_sumamt
        == info.fulamt_ownpay_amt + info.overlmt_selfpay + info.preselfpay_amt + info.inscp_scp_amt
        and info.fund_pay_sumamt == funds
        and info.psn_part_amt == info.medfee_sumamt - info.fund_pay_sumamt - info.hosp_part_amt
        and info.psn_part_amt == info.acct_pay + info.psn_cash_pay
    )


__all__ = [
    "CancelInput",
    "FeeDetail",
    "FeeDetailResult",
    "PersonQueryInput",
    "ReversalInput",
    "SetlDetail",
    "SetlInfo",
    "SettlementInput",
    "SettlementOutput",
    "amounts_identities_hold",
]
