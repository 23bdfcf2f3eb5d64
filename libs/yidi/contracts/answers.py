"""Building the one answer to a request: from a domain result, or from a refusal."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from yidi.contracts.envelope import ErrCode, RequestEnvelope, RequestRef, ResponseEnvelope, respond_time
from yidi.domain.codes import BUSINESS_TZ
from yidi.domain.money import ZERO, fmt, fmt_ratio
from yidi.domain.pricing import Pricing

_ZERO_TEXT = fmt(ZERO)


def platform_msgid(msgid: str, moment: datetime) -> str:
    """The platform's message id: time-ordered, and the same for the same request at the same moment."""
    return "YD" + respond_time(moment) + hashlib.sha1(msgid.encode()).hexdigest()[:8].upper()


def answer(
    msgid: str,
    infno: str,
    output: dict[str, Any] | None = None,
    *,
    err_code: ErrCode | None = None,
    err_msg: str = "",
    received: datetime | None = None,
    now: datetime | None = None,
) -> ResponseEnvelope:
    now = now or datetime.now(UTC)
    return ResponseEnvelope(
        infcode=0 if err_code is None else -1,
        inf_refmsgid=platform_msgid(msgid, now),
        refmsg_time=respond_time(received or now),
        respond_time=respond_time(now),
        msgid=msgid,
        infno=infno,
        err_code=err_code,
        err_msg=err_msg,
        output=output or {},
    )


# A request dated this far behind the platform's clock may be one from a facility whose clock is
# wrong: its refusal says so, or the cashier is sent to the insured region for what is a clock.
CLOCK_HINT_AFTER = timedelta(days=1)


def clock_hint(inf_time: datetime, now: datetime | None = None) -> str:
    """For a refusal the request's date decided (no filing, no policy on that day): a sentence on
    the facility's clock when ``inf_time`` (China time, naive) is a day or more behind the
    platform's; else empty. A request sent late on purpose is not refused for it."""
    now_china = (now or datetime.now(UTC)).astimezone(BUSINESS_TZ).replace(tzinfo=None)
    behind = now_china - inf_time
    if behind < CLOCK_HINT_AFTER:
        return ""
    return (f" The request is dated {inf_time.isoformat(sep=' ')}, {behind.days} days before the platform's clock: "
            "if that is not when the patient was treated, set the facility's clock.")


def refusal(request: RequestEnvelope | RequestRef, code: ErrCode, message: str, received: datetime | None = None) -> ResponseEnvelope:
    return answer(request.msgid, request.infno.value, err_code=code, err_msg=message, received=received)


def answer_wire(
    msgid: str,
    infno: str,
    output: dict[str, Any] | None = None,
    *,
    err_code: ErrCode | None = None,
    err_msg: str = "",
    now: datetime | None = None,
) -> dict[str, Any]:
    """``answer(...)`` in its wire form, built directly (the settlement path's answers: no model
    round trip). tests/unit/test_wire_forms.py checks it equals ``answer(...).model_dump(mode="json")``."""
    now = now or datetime.now(UTC)
    stamp = respond_time(now)
    return {
        "infcode": 0 if err_code is None else -1,
        "inf_refmsgid": "YD" + stamp + hashlib.sha1(msgid.encode()).hexdigest()[:8].upper(),
        "refmsg_time": stamp,
        "respond_time": stamp,
        "msgid": msgid,
        "infno": infno,
        "err_code": err_code.value if err_code is not None else None,
        "err_msg": err_msg,
        "output": output or {},
    }


def settlement_output(
    pricing: Pricing,
    *,
    setl_id: str,
    mdtrt_id: str,
    psn_no: str,
    psn_name: str,
    insutype: str,
    psn_type: str,
    med_type: str,
    setl_time: str,
    clr_optins: str,
) -> dict[str, Any]:
    """Translate a domain ``Pricing`` into the national settlement output (CONTRACT.md), in wire form.

    Built as the dict ``SettlementOutput(...).model_dump(mode="json")`` would give, field for field
    and in the same order, without building the models: this runs once per settlement and the
    model round trip was a fifth of pricing's CPU (docs/BENCHMARKS.md). ``SettlementOutput``
    stays the schema; tests/unit/test_wire_forms.py proves the two agree.
    """
    fund_pay_sumamt = pricing.fund_pay_sumamt
    info = {
        "mdtrt_id": mdtrt_id,
        "setl_id": setl_id,
        "psn_no": psn_no,
        "psn_name": psn_name,
        "insutype": insutype,
        "psn_type": psn_type,
        "med_type": med_type,
        "setl_time": setl_time,
        "medfee_sumamt": fmt(pricing.medfee_sumamt),
        "fulamt_ownpay_amt": fmt(pricing.fulamt_ownpay_amt),
        "overlmt_selfpay": fmt(pricing.overlmt_selfpay),
        "preselfpay_amt": fmt(pricing.preselfpay_amt),
        "inscp_scp_amt": fmt(pricing.inscp_scp_amt),
        "act_pay_dedc": fmt(pricing.act_pay_dedc),
        "hifp_pay": fmt(pricing.hifp_pay),
        "pool_prop_selfpay": fmt_ratio(pricing.ratio),
        "cvlserv_pay": fmt(pricing.cvlserv_pay),
        "hifes_pay": _ZERO_TEXT,
        "hifmi_pay": fmt(pricing.hifmi_pay),
        "hifob_pay": fmt(pricing.hifob_pay),
        "maf_pay": fmt(pricing.maf_pay),
        "oth_pay": _ZERO_TEXT,
        "fund_pay_sumamt": fmt(fund_pay_sumamt),
        "psn_part_amt": fmt(pricing.psn_part_amt),
        "acct_pay": fmt(pricing.acct_pay),
        "psn_cash_pay": fmt(pricing.psn_cash_pay),
        "hosp_part_amt": fmt(pricing.hosp_part_amt),
        "balc": fmt(pricing.account_balance_after),
        "clr_optins": clr_optins,
        # Cross-region settlements clear between regions by item (national clr_way 1, clr_type 11/21).
        "clr_way": "1",
        "clr_type": "21" if med_type in ("21", "24") else "11",
    }
    details = [
        {
            "fund_pay_type": f.fund_type.value,
            "fund_pay_type_name": f.name,
            "inscp_scp_amt": fmt(f.base),
            "crt_payb_lmt_amt": None if f.limit_left is None else fmt(f.limit_left),
            "fund_payamt": fmt(f.amount),
            "setl_proc_info": f.explanation,
        }
        for f in pricing.funds
    ]
    fees = [
        {
            "feedetl_sn": i.seq,
            "hilist_code": i.code,
            "chrgitm_lv": i.charge_class.value if i.charge_class else "03",
            "selfpay_prop": fmt_ratio(i.selfpay_prop if i.charge_class else ZERO),
            "pric_uplmt_amt": None if i.price_ceiling is None else fmt(i.price_ceiling),
            "fulamt_ownpay_amt": fmt(i.fulamt_ownpay_amt),
            "overlmt_selfpay": fmt(i.overlmt_selfpay),
            "preselfpay_amt": fmt(i.preselfpay_amt),
            "inscp_scp_amt": fmt(i.inscp_scp_amt),
            "memo": i.note,
        }
        for i in pricing.items
    ]
    return {"setlinfo": info, "setldetail": details, "feedetail": fees}
