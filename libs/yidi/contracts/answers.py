"""Building the one answer to a request: from a domain result, or from a refusal."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from yidi.contracts.envelope import ErrCode, RequestEnvelope, ResponseEnvelope, respond_time
from yidi.contracts.settlement import FeeDetailResult, SetlDetail, SetlInfo, SettlementOutput
from yidi.domain.money import ZERO
from yidi.domain.pricing import Pricing


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


def refusal(request: RequestEnvelope, code: ErrCode, message: str, received: datetime | None = None) -> ResponseEnvelope:
    return answer(request.msgid, request.infno.value, err_code=code, err_msg=message, received=received)


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
) -> SettlementOutput:
    """Translate a domain ``Pricing`` into the national settlement output (CONTRACT.md)."""
    info = SetlInfo(
        mdtrt_id=mdtrt_id,
        setl_id=setl_id,
        psn_no=psn_no,
        psn_name=psn_name,
        insutype=insutype,
        psn_type=psn_type,
        med_type=med_type,
        setl_time=setl_time,
        medfee_sumamt=pricing.medfee_sumamt,
        fulamt_ownpay_amt=pricing.fulamt_ownpay_amt,
        overlmt_selfpay=pricing.overlmt_selfpay,
        preselfpay_amt=pricing.preselfpay_amt,
        inscp_scp_amt=pricing.inscp_scp_amt,
        act_pay_dedc=pricing.act_pay_dedc,
        hifp_pay=pricing.hifp_pay,
        pool_prop_selfpay=pricing.ratio,
        cvlserv_pay=pricing.cvlserv_pay,
        hifmi_pay=pricing.hifmi_pay,
        hifob_pay=pricing.hifob_pay,
        maf_pay=pricing.maf_pay,
        fund_pay_sumamt=pricing.fund_pay_sumamt,
        psn_part_amt=pricing.psn_part_amt,
        acct_pay=pricing.acct_pay,
        psn_cash_pay=pricing.psn_cash_pay,
        hosp_part_amt=pricing.hosp_part_amt,
        balc=pricing.account_balance_after,
        clr_optins=clr_optins,
        # Cross-region settlements clear between regions by item (national clr_way 1, clr_type 11/21).
        clr_way="1",
        clr_type="21" if med_type in ("21", "24") else "11",
    )
    details = [
        SetlDetail(
            fund_pay_type=f.fund_type.value,
            fund_pay_type_name=f.name,
            inscp_scp_amt=f.base,
            crt_payb_lmt_amt=f.limit_left,
            fund_payamt=f.amount,
            setl_proc_info=f.explanation,
        )
        for f in pricing.funds
    ]
    fees = [
        FeeDetailResult(
            feedetl_sn=i.seq,
            hilist_code=i.code,
            chrgitm_lv=i.charge_class.value if i.charge_class else "03",
            selfpay_prop=i.selfpay_prop if i.charge_class else ZERO,
            pric_uplmt_amt=i.price_ceiling,
            fulamt_ownpay_amt=i.fulamt_ownpay_amt,
            overlmt_selfpay=i.overlmt_selfpay,
            preselfpay_amt=i.preselfpay_amt,
            inscp_scp_amt=i.inscp_scp_amt,
            memo=i.note,
        )
        for i in pricing.items
    ]
    return SettlementOutput(setlinfo=info, setldetail=details, feedetail=fees)
