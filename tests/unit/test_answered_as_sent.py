"""Requests refused as they stand are answered under the id the gateway sent, as it sent it, or
dead-lettered when none can be read; never an exception that stops a stage (a record the stage
cannot refuse is read again after every restart, and every request behind it waits).

From a review on 2026-12-05: a filing or clearing request that was not UTF-8 stopped its stage; a
reqid was answered stripped of its spaces; an escaped or numeric msgid of an unsupported
transaction got no answer; an empty ``insuplc_admdvs`` of a 3201 was refused; filing dates written
``yyyyMMdd`` were refused with a message about datetimes; clearing's settlement stage told a
facility whose settlement it could not record to "correct the request or settle in cash".
"""

from __future__ import annotations

import copy
import json

import orjson
import pytest
from pydantic import ValidationError

from services.clearing.admin import ClearingAdminHandler
from services.clearing.app import settlement_stage
from services.eligibility.handlers import EligibilityHandler, Parsed
from services.filing.handlers import FilingHandler
from tests.unit.test_bad_input import WE1
from yidi.contracts.clearing import CLEARING_REQUEST
from yidi.contracts.envelope import RequestEnvelope
from yidi.contracts.filing import FilingRequest
from yidi.platform.kafka import Incoming
from yidi.platform.replies import parse_each, recover_reqid
from yidi.platform.settings import Settings

SETTINGS = Settings(namespace="ns.")
FILING = {"action": "add", "reqid": "R-1", "psn_no": "P1", "insutype": "310", "insuplc_admdvs": "110000",
          "filed_admdvs": "310000", "category": "retiree_resettled", "begndate": "2025-01-01",
          "reply_to": "gw.filing.results"}
QUERY = {"type": "query_facility_day", "reqid": "C-1", "fixmedins_code": "H1", "day": "2025-01-01",
         "reply_to": "ops.results"}


def _record(topic: str, value: bytes) -> Incoming:
    return Incoming(f"ns.{topic}", 0, 5, b"k", value, 1_700_000_000_000)


def _filing(value: bytes) -> tuple[list, list]:
    handler = FilingHandler(SETTINGS, repo=None)  # type: ignore[arg-type]
    return parse_each([_record("filing.requests", value)], FilingRequest.model_validate, "filing request",
                      handler.refuse)


def _clearing(value: bytes) -> tuple[list, list]:
    handler = ClearingAdminHandler(SETTINGS, repo=None)  # type: ignore[arg-type]
    return parse_each([_record("clearing.requests", value)], CLEARING_REQUEST.validate_python, "clearing request",
                      handler.refuse)


@pytest.mark.parametrize(("refuse", "request_", "topic"), [
    (_filing, {**FILING, "reqid": "备案0001", "opter": "张三"}, "ns.filing.requests.dlq"),
    (_clearing, {**QUERY, "reqid": "清算-1", "day": "2025-13-01"}, "ns.clearing.requests.dlq"),
])
def test_a_request_not_in_utf8_is_dead_lettered_and_the_stage_goes_on(refuse, request_, topic):
    # GBK, as some hospital systems write: not JSON to the platform, and its reqid not text.
    value = json.dumps(request_, ensure_ascii=False).encode("gbk")
    parsed, out = refuse(value)
    assert parsed == [] and [o.topic for o in out] == [topic]
    assert recover_reqid(value) is None


def test_a_request_in_gbk_whose_reqid_is_ascii_is_still_answered():
    value = json.dumps({**FILING, "action": "dance", "opter": "张三"}, ensure_ascii=False).encode("gbk")
    parsed, (dead, answer) = _filing(value)
    assert orjson.loads(answer.value)["reqid"] == "R-1" and answer.topic == "ns.gw.filing.results"


@pytest.mark.parametrize("reqid", ["R-1 ", " R-1", "R-1\u3000", "备案-1"])
def test_a_filing_refused_is_answered_under_its_reqid_as_sent(reqid):
    # Escaped or not (json.dumps writes 备 as \\u5907): the gateway matches the answer by what it sent.
    for value in (orjson.dumps({**FILING, "reqid": reqid, "action": "dance"}),
                  json.dumps({**FILING, "reqid": reqid, "action": "dance"}).encode()):
        parsed, (dead, answer) = _filing(value)
        result = orjson.loads(answer.value)
        assert (result["reqid"], result["accepted"]) == (reqid, False)
        assert answer.key == b"k" and dead.topic == "ns.filing.requests.dlq"


@pytest.mark.parametrize("reqid", ["R-1 ", "\u00a0R-1", "R-1\u3000"])
def test_a_reqid_with_spaces_around_it_is_refused_not_stripped(reqid):
    # It was taken stripped, and answered "R-1": a gateway waiting for "R-1 " never saw it.
    parsed, (dead, answer) = _filing(orjson.dumps({**FILING, "reqid": reqid}))
    result = orjson.loads(answer.value)
    assert parsed == [] and (result["reqid"], result["accepted"]) == (reqid, False)
    assert "no spaces before or after it" in result["reason"]
    parsed, (dead, answer) = _clearing(orjson.dumps({**QUERY, "reqid": reqid}))
    result = orjson.loads(answer.value)
    assert parsed == [] and (result["reqid"], result["ok"]) == (reqid, False)


@pytest.mark.parametrize("reqid", ["   ", "", 42, None, "R" * 257])
def test_a_reqid_an_answer_cannot_carry_back_leaves_a_dead_letter_only(reqid):
    parsed, out = _filing(json.dumps({**FILING, "reqid": reqid, "action": "dance"}).encode())
    assert parsed == [] and [o.topic for o in out] == ["ns.filing.requests.dlq"]


@pytest.mark.parametrize("reqid", ["R" * 65, "R" * 256])
def test_a_reqid_refused_for_its_length_is_answered_under_it(reqid):
    # Refused (the contract takes 64 characters), and it was dead-lettered only: the gateway
    # waiting for that reqid never heard (a review, session 34). msgids are answered up to 256 too.
    parsed, (dead, answer) = _filing(json.dumps({**FILING, "reqid": reqid}).encode())
    result = orjson.loads(answer.value)
    assert parsed == [] and (result["reqid"], result["accepted"]) == (reqid, False)
    parsed, (dead, answer) = _clearing(json.dumps({**QUERY, "reqid": reqid}).encode())
    assert parsed == [] and orjson.loads(answer.value)["reqid"] == reqid


@pytest.mark.parametrize("reqid", ["R\x01", "R\x1c-1", "\tR-1", "R\x9f"])
def test_a_reqid_with_control_characters_is_answered_as_sent_too(reqid):
    # A valid request with such a reqid is taken (and answered under it): a refused one is too.
    assert FilingRequest.model_validate({**FILING, "reqid": reqid.strip()}).reqid == reqid.strip()
    parsed, (dead, answer) = _filing(json.dumps({**FILING, "reqid": reqid, "action": "dance"}).encode())
    assert orjson.loads(answer.value)["reqid"] == reqid


@pytest.mark.parametrize("day", ["20250101", 20250101, "1735689600", "2025/01/01"])
def test_a_filing_date_not_written_yyyy_mm_dd_is_refused_saying_so(day):
    # pydantic alone read the digits as seconds since 1970: "20250101" was refused with a message
    # about datetimes, and "1735689600" taken for 2025-01-01.
    for field in ("begndate", "enddate"):
        with pytest.raises(ValidationError) as refused:
            FilingRequest.model_validate({**FILING, field: day})
        (error,) = refused.value.errors()
        assert error["loc"] == (field,) and "is not a date of the form yyyy-MM-dd" in error["msg"]
    assert FilingRequest.model_validate(FILING).begndate.isoformat() == "2025-01-01"
    with pytest.raises(ValidationError, match="yyyy-MM-dd"):
        CLEARING_REQUEST.validate_python({**QUERY, "day": day})


def _eligibility(request: dict | bytes) -> list:
    handler = EligibilityHandler(SETTINGS, repo=None, subjects=None)  # type: ignore[arg-type]
    value = request if isinstance(request, bytes) else json.dumps(request).encode()
    result = handler.parse(_record("settlement.requests", value))
    assert not isinstance(result, Parsed)
    return result


@pytest.mark.parametrize("msgid", ["H1101050000120260701103000\u00e9", "H11010500001202607011030000\u3000",
                                   "\u00a0H11010500001202607011030000", 1101050000120260701])
def test_an_unsupported_transaction_is_answered_under_an_escaped_or_numeric_msgid(msgid):
    request = {**copy.deepcopy(WE1), "infno": "2204", "msgid": msgid, "reply_to": "gw.results"}
    for value in (json.dumps(request).encode(), orjson.dumps(request)):
        (only,) = _eligibility(value)
        answer = orjson.loads(only.value)
        assert (only.topic, answer["msgid"], answer["err_code"]) == ("ns.gw.results", str(msgid), "UNSUPPORTED")


def test_a_malformed_request_with_a_numeric_msgid_is_answered_under_its_digits():
    request = {**copy.deepcopy(WE1), "msgid": 4200, "inf_time": "yesterday"}
    dead, answer = _eligibility(request)
    body = orjson.loads(answer.value)
    assert (body["msgid"], body["err_code"]) == ("4200", "INVALID_INPUT") and dead.topic.endswith(".dlq")
    for not_an_id in (True, -1, 4.2, 10**70):  # nothing to answer under: a dead letter only
        assert [o.topic for o in _eligibility({**request, "msgid": not_an_id})] == ["ns.settlement.requests.dlq"]


def _reconcile(insuplc: object) -> dict:
    return {**copy.deepcopy(WE1), "infno": "3201", "insuplc_admdvs": insuplc,
            "input": {"data": {"stmt_begndate": "2025-01-01", "stmt_enddate": "2025-01-31", "medfee_sumamt": "10.00",
                               "fund_pay_sumamt": "0.00", "acct_pay": "0.00", "fixmedins_setl_cnt": 1}}}


@pytest.mark.parametrize("insuplc", ["", None])
def test_an_empty_insured_region_is_not_given(insuplc):
    # CONTRACT.md: required when the input has psn_no. A 3201 with "" was refused by the pattern.
    assert RequestEnvelope.model_validate(_reconcile(insuplc)).insuplc_admdvs is None
    (passed_on,) = _eligibility(_reconcile(insuplc))
    assert passed_on.topic == "ns.clearing.requests"
    # With psn_no it is required, and the refusal says so rather than quoting a pattern.
    dead, answer = _eligibility({**copy.deepcopy(WE1), "insuplc_admdvs": insuplc})
    assert "insuplc_admdvs is required when the input has psn_no" in orjson.loads(answer.value)["err_msg"]
    with pytest.raises(ValidationError):
        RequestEnvelope.model_validate({**_reconcile(insuplc), "insuplc_admdvs": " "})


@pytest.mark.parametrize(("kind", "says"), [
    ("settle", "could not record this settlement; nothing was settled. Send the same request again later, under "
               "the same msgid."),
    ("cancel", "could not record this cancellation; the settlement stands in the ledger until it is. Send the same "
               "request again later, under the same msgid, and do not settle the visit again meanwhile."),
])
def test_clearings_stage_refuses_what_it_cannot_record_as_pricing_left_it(kind, says):
    # Its refusal was the stage's generic one ("correct the request or settle in cash"): pricing has
    # recorded the msgid, so a corrected request is refused there, and a cancellation it applied
    # left the visit free to be settled again beside the ledger's row.
    stage = settlement_stage(SETTINGS, repository=None)  # type: ignore[arg-type]
    handler = stage.handler
    assert stage.refuse == handler.refuse == handler._broken
    priced = {"kind": kind, "request": {"msgid": WE1["msgid"], "infno": "2207", "reply_to": "gw.results",
                                        "fixmedins_code": WE1["fixmedins_code"]}, "answer": {"output": {}}}
    dead, answer = handler.refuse(_record("settlement.priced", orjson.dumps(priced)), "cannot be processed: DataError")
    body = orjson.loads(answer.value)
    assert dead.topic == "ns.settlement.priced.dlq" and answer.topic == "ns.gw.results"
    assert (body["msgid"], body["err_code"]) == (WE1["msgid"], "INTERNAL_ERROR") and says in body["err_msg"]


@pytest.mark.parametrize("variant", ["escaped", "repeated"])
def test_a_request_a_later_stage_cannot_process_is_answered_under_the_msgid_it_was_read_with(variant):
    # Pricing's per-record failure (and a stage's refusal of a record Postgres or Kafka refused)
    # answered by searching the bytes: a msgid written with an escape got no answer, and a repeated
    # "msgid" key was answered under the first one, another facility's (a review, session 34).
    from services.eligibility.handlers import _work
    from services.pricing.handlers import PricingHandler

    msgid = WE1["msgid"]
    raw = orjson.dumps(WE1)
    raw = (raw.replace(f'"msgid":"{msgid}"'.encode(), f'"msgid":"{msgid[:-1]}\\u00{ord(msgid[-1]):02x}"'.encode())
           if variant == "escaped" else raw.replace(b"{", b'{"msgid":"H99999999999X",', 1))
    parsed = EligibilityHandler(SETTINGS, repo=None, subjects=None).parse(_record("settlement.requests", raw))  # type: ignore[arg-type]
    assert isinstance(parsed, Parsed) and parsed.request.msgid == msgid
    eligible = _record("settlement.eligible", orjson.dumps(_work(parsed)))
    dead, answer = PricingHandler(SETTINGS, repo=None)._broken(eligible, "pricing failed: a bug")  # type: ignore[arg-type]
    assert dead.topic == "ns.settlement.eligible.dlq"
    body = orjson.loads(answer.value)
    assert (body["msgid"], body["err_code"], answer.topic) == (msgid, "INTERNAL_ERROR", "ns." + WE1["reply_to"])


def test_a_request_carrying_a_request_of_its_own_is_answered_under_its_own_msgid():
    # The models ignore fields they do not know: a gateway echoing an earlier request inside its
    # own ("request": {...}) was answered under the inner msgid, on the inner reply_to (a review).
    from yidi.platform.replies import broken

    inner = {"msgid": "H99999999999X0000", "reply_to": "gw.other", "fixmedins_code": "H99999999999"}
    raw = orjson.dumps({**WE1, "infno": "1101", "request": inner})
    dead, answer = broken(SETTINGS, _record("settlement.requests", raw), "eligibility failed: a bug", "try again")
    body = orjson.loads(answer.value)
    assert (body["msgid"], answer.topic, answer.key) == (WE1["msgid"], "ns." + WE1["reply_to"], b"H11010500001")
