"""Clearing's input as pricing writes it (settlement.priced), for tests of its stages on the real Postgres."""

from __future__ import annotations

import orjson

from services.clearing.repository import AMOUNT_COLUMNS
from yidi.platform.kafka import Incoming, Outgoing


def priced(settings, kind: str, msgid: str, setl_id: str, pair: tuple[str, str], fund: str, *,
           inf_time: str = "2099-11-05 10:00:00", setl_time: str = "2099-11-05 10:00:00") -> Incoming:
    """A settlement (``kind`` "settle", of month ``setl_time``) or its cancellation ("cancel", dated
    ``inf_time``) of ``fund`` yuan, all paid by the funds, for region pair (insured, treating)."""
    insured, treating = pair
    infno = "2207" if kind == "settle" else "2208"
    request = {"infno": infno, "msgid": msgid, "mdtrtarea_admvs": treating, "insuplc_admdvs": insured,
               "inf_time": inf_time, "fixmedins_code": "H11010500001", "reply_to": "settlement.results"}
    setlinfo = {c: "0.00" for c in AMOUNT_COLUMNS} | {"medfee_sumamt": fund, "fund_pay_sumamt": fund, "hifp_pay": fund}
    answer = {"infcode": 0, "inf_refmsgid": "YD1", "refmsg_time": "1", "respond_time": "1", "msgid": msgid,
              "infno": infno, "output": {"setlinfo": {"setl_id": setl_id, "setl_time": setl_time}
                                         | (setlinfo if kind == "settle" else {"state": "cancelled"})}}
    facts = {"setl_id": setl_id, "psn_no": "P-" + setl_id, "mdtrt_id": "V1", "insuplc_admdvs": insured,
             "mdtrtarea_admvs": treating, "fixmedins_code": "H11010500001", "setlym": setl_time[:4] + setl_time[5:7],
             "medfee_sumamt": fund, "fund_pay_sumamt": fund, "acct_pay": "0.00", "psn_cash_pay": "0.00"}
    message = {"kind": kind, "request": request, "request_hash": "h-" + msgid, "request_ts_ms": 0, "answer": answer,
              "facts": facts if kind == "settle" else None, "target_setl_id": setl_id if kind == "cancel" else ""}
    return Incoming(settings.topic("settlement.priced"), 0, 1, f"P-{setl_id}".encode(), orjson.dumps(message), 0)


def published(settings, out: list[Outgoing], topic: str) -> list[dict]:
    return [orjson.loads(o.value) for o in out if o.topic == settings.topic(topic)]
