"""Bad gateway and feed input is refused where it arrives, as malformed, with an answer: never an
exception that stops a stage (which would retry the same batch for ever, for every hospital).

The inputs are those an independent review found getting past validation (session 5); each one
used to raise ``decimal.InvalidOperation``, fail a batch's SQL later, or wedge a send. The same
requests go through the running platform in tests/e2e/test_bad_input.py.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.eligibility.handlers import MAX_REQUEST_BYTES, EligibilityHandler, Parsed
from services.pricing.handlers import Batch, PricingHandler
from tests.unit.factories import WE1_FILING, WE1_PERSON, MedType, policy, rule, we1_catalogue
from tests.unit.mutations import fuzzing, mutate
from yidi.contracts.envelope import OFFERED_INFNOS, RequestEnvelope
from yidi.contracts.clearing import ReconcileTotalsInput
from yidi.contracts.envelope import gateway_reply_topic
from yidi.contracts.internal import EligibleWork
from yidi.contracts.refdata import CatalogueRecord, FacilityRecord, PersonRecord
from yidi.domain.codes import BUSINESS_TZ
from yidi.platform.jsonwire import CARRIED, MAX_DEPTH, loads
from yidi.platform.kafka import Incoming
from yidi.platform.replies import DEAD_LETTER_MAX_BYTES, DEAD_LETTER_MAX_KEY_BYTES, dead_letter, recover_ids
from yidi.platform.settings import Settings

WE1 = json.loads((Path(__file__).resolve().parents[3] / "shared" / "examples" / "we1" / "request.json").read_text())


def we1_with(**changes) -> dict:
    request = copy.deepcopy(WE1)
    data = request["input"]["data"]
    for path, value in changes.items():
        if path == "reply_to":
            request["reply_to"] = value
        elif path.startswith("line0_"):
            data["feedetail"][0][path.removeprefix("line0_")] = value
        else:
            data[path] = value
    return request


def _nested(levels: int) -> str:
    """A list nested ``levels`` deep, as a marker ``_wire`` writes out (orjson writes 254 levels at most)."""
    return f"<nested {levels}>"


def _wire(request: dict) -> bytes:
    return re.sub(rb'"<nested (\d+)>"', lambda m: b"[" * int(m[1]) + b"]" * int(m[1]), orjson.dumps(request))


def _one_line(cnt: str, pric: str) -> dict:
    """we1 with a single line of ``cnt`` × ``pric`` (amounts consistent, so only the values are at fault)."""
    request = copy.deepcopy(WE1)
    data = request["input"]["data"]
    data["feedetail"] = [data["feedetail"][0] | {"cnt": cnt, "pric": pric, "det_item_fee_sumamt": pric}]
    data["medfee_sumamt"] = pric
    return request


def _negative_line() -> dict:
    """A class-A line of 100.00 and an out-of-catalogue line of −100.00: a bill of 0.00 the funds paid 80.00 on."""
    request = copy.deepcopy(WE1)
    data = request["input"]["data"]
    data["feedetail"] = [
        data["feedetail"][0] | {"cnt": "1", "pric": "100.00", "det_item_fee_sumamt": "100.00"},
        data["feedetail"][1] | {"hilist_code": "NOT-IN-CATALOGUE", "cnt": "1", "pric": "-100.00",
                                "det_item_fee_sumamt": "-100.00"},
    ]
    data["medfee_sumamt"] = "0.00"
    return request


BAD_REQUESTS = {
    # CONTRACT.md: the facility's code, then the time and a sequence. The msgid is the idempotency
    # key across facilities: another facility's answered MODIFIED_REQUEST, or its settlement blocked.
    "a msgid that does not begin with the facility's code": {**copy.deepcopy(WE1), "fixmedins_code": "H99999999999"},
    "empty cnt": we1_with(line0_cnt=""),
    "null cnt": we1_with(line0_cnt=None),
    "cnt abc": we1_with(line0_cnt="abc"),
    "cnt with a comma": we1_with(line0_cnt="1,5"),
    "cnt 1E+30": we1_with(line0_cnt="1E+30"),
    "amount 1E+30": _one_line("1", "1E+30"),
    "amount of 29 digits": _one_line("1", "1" * 29 + ".00"),
    "a 13-digit price (beyond the ledger's numeric(14, 2))": _one_line("1", "1000000000000.00"),
    "a negative line": _negative_line(),
    "NUL in psn_no": we1_with(psn_no="131000\u00000001"),
    "NUL in fixmedins_code": {**copy.deepcopy(WE1), "fixmedins_code": "H1101\u00000500001"},
    # An unknown field the models ignore, nested past what orjson writes (254 levels): hashing the
    # request raised, and eligibility stopped on it at every start (a review, session 34).
    "an unknown field nested 300 levels deep": we1_with(memo=_nested(300)),
    # _has_nul recursed in Python, which stops near 1,000 levels: a RecursionError, not refused.
    "a NUL after 900 levels of nesting": {"x": _nested(900), **copy.deepcopy(WE1), "psn_name": "\u0000"},
    "an inpatient stay sent as an outpatient settlement (2207, med_type 21)": we1_with(med_type="21"),
    "outpatient care sent as an inpatient settlement (2304, med_type 11)": {**we1_with(med_type="11"), "infno": "2304"},
    "reply_to '.'": we1_with(reply_to="."),
    "reply_to '..'": we1_with(reply_to=".."),
    "reply_to colliding with settlement.results": we1_with(reply_to="settlement_results"),
    "reply_to a platform topic spelt with '_'": we1_with(reply_to="settlement_priced"),
    # begntime decided which filing covers a stay, read as free text (a contract review, session 15)
    "begntime that is no time": we1_with(begntime="garbage"),
    "begntime on a day that does not exist": we1_with(begntime="2022-13-45 99:99:99"),
    "endtime before begntime": we1_with(begntime="2022-07-01 10:05:00", endtime="2022-06-30 10:05:00"),
    "begntime after inf_time": we1_with(begntime="2022-07-02 10:05:00"),
    "inf_time in year 1": {**copy.deepcopy(WE1), "inf_time": "0001-01-01 00:00:00"},
    "a dise_codg of 65 characters": we1_with(dise_codg="E" * 65),
    "chronic outpatient care (14) without its disease": we1_with(dise_codg="  "),
    "an mdtrt_cert_no of 65 characters": we1_with(mdtrt_cert_no="1" * 65),
    "a hilist_name of 201 characters": we1_with(line0_hilist_name="x" * 201),
    # Answered by clearing, but not dead-lettered (CONTRACT.md: malformed requests go there either
    # way; a review, session 36): checked in eligibility now, as every other input.
    "a reconciliation of totals (3201) whose amount is no amount": {
        **copy.deepcopy(WE1), "infno": "3201",
        "input": {"data": {"stmt_begndate": "2025-01-01", "stmt_enddate": "2025-01-31", "medfee_sumamt": "x",
                           "fund_pay_sumamt": "0.00", "acct_pay": "0.00", "fixmedins_setl_cnt": 1}}},
    "a reconciliation of details (3202) over a year": {
        **copy.deepcopy(WE1), "infno": "3202",
        "input": {"data": {"stmt_begndate": "2024-01-01", "stmt_enddate": "2025-12-31"}}},
    # answered, but was not dead-lettered (CONTRACT.md: malformed requests go there either way)
    "a benefit check (2001) without med_type": {**copy.deepcopy(WE1), "infno": "2001",
                                                "input": {"data": {"psn_no": WE1["input"]["data"]["psn_no"],
                                                                   "insutype": "310"}}},
}


# Refused too, but by pricing after its msgid is checked (a resend of a settled request gets the
# stored answer): eligibility passes it on with its refusal, and dead-letters it.
REFUSED_BY_PRICING = {
    "inf_time far ahead of the platform's clock": {**copy.deepcopy(WE1), "inf_time": "2999-01-01 10:30:00"},
}


@pytest.fixture
def handler() -> EligibilityHandler:
    return EligibilityHandler(Settings(namespace="ns."), repo=None, subjects=None)  # type: ignore[arg-type]


async def _through_the_stages(request: dict | bytes, stored: dict | None = None, subjects: Any = None,
                              world: bool = False) -> tuple[list, list]:
    """What eligibility, then pricing (on an in-memory batch: ``stored`` msgids), answer and
    dead-letter for ``request`` (as it is sent, when bytes). ``world``: WE1's person, filing,
    facility, policy and catalogue are there (a valid request is priced), else none is."""
    settings = Settings(namespace="ns.")
    eligibility = EligibilityHandler(settings, repo=_WE1Rows() if world else _NoRows(),  # type: ignore[arg-type]
                                     subjects=_WE1Subjects() if world else subjects or _NoSubjects())
    raw = request if isinstance(request, bytes) else _wire(request)
    out = await eligibility([Incoming("ns.settlement.requests", 0, 7, b"k", raw, 1_700_000_000_000)])
    sent = [o for o in out if o.answered]
    dead = [o for o in out if o.topic == "ns.settlement.requests.dlq"]
    for o in out:
        if o.topic == "ns.settlement.eligible":
            batch = Batch(stored=stored or {}, settlements=[], policies=[_WE1_POLICY] if world else [],
                          items=list(_WE1_ITEMS) if world else [], usage={})
            sent += [p for p in PricingHandler(settings, repo=None)._one(EligibleWork.model_validate_json(o.value), batch)]  # type: ignore[arg-type]
    return sent, dead


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
async def test_bad_input_is_refused_with_one_answer_on_the_gateways_topic_and_a_dead_letter(name):
    # A settlement's input is refused by pricing, after its msgid is checked (the next test); the
    # rest where it arrives. Either way: one answer, one dead letter.
    sent, dead = await _through_the_stages(BAD_REQUESTS[name])
    assert len(sent) == 1 and len(dead) == 1, name
    answer = orjson.loads(sent[0].value)
    assert (answer["msgid"], answer["err_code"], answer["infcode"]) == (WE1["msgid"], "INVALID_INPUT", -1)
    assert "refused as malformed" in answer["err_msg"]
    # A forbidden or illegal reply_to is never written to: the gateways' shared topic is.
    assert sent[0].topic == "ns.settlement.results"


def _envelope_valid(request: dict) -> bool:
    try:
        RequestEnvelope.model_validate(request)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("name", [n for n, r in BAD_REQUESTS.items() if r.get("infno") in ("2207", "2304")
                                  and _envelope_valid(r) and "NUL" not in n and "deep" not in n])
async def test_a_settled_request_resent_after_a_check_was_tightened_gets_its_stored_answer(name):
    # Settled by an earlier version that took its input, its answer lost, sent again after the
    # upgrade: the stored answer, not "refused as malformed" beside a payment in the ledger.
    from services.pricing.repository import StoredRequest

    request = BAD_REQUESTS[name]
    envelope = RequestEnvelope.model_validate(request)
    emitted = {"kind": "settle", "request": envelope.ref_wire(), "request_hash": envelope.payload_hash(),
               "request_ts_ms": 1, "answer": {"infcode": 0, "inf_refmsgid": "YD1", "refmsg_time": "1",
                                              "respond_time": "1", "msgid": envelope.msgid, "output": {}},
               "facts": None, "target_setl_id": ""}
    stored = {envelope.msgid: StoredRequest(envelope.msgid, envelope.payload_hash(), "2207", "S1", [emitted])}
    sent, dead = await _through_the_stages(request, stored)
    assert [o.topic for o in sent] == ["ns.settlement.priced"] and len(dead) == 1


async def test_a_refused_settlement_is_keyed_by_its_person_as_pricing_keys_it():
    # Its resend must meet the settlement's partition (and pricing's lock): the person's code,
    # stripped as the model strips it (a U+001C is kept; str.strip() would drop it).
    request = copy.deepcopy(WE1)
    psn_no = request["input"]["data"]["psn_no"]
    request["input"]["data"]["psn_no"] = " \x1c" + psn_no + "\u3000"
    request["input"]["data"]["medfee_sumamt"] = "0.01"  # not the sum of the details: refused
    eligibility = EligibilityHandler(Settings(namespace="ns."), repo=_NoRows(), subjects=_NoSubjects())  # type: ignore[arg-type]
    out = await eligibility([Incoming("ns.settlement.requests", 0, 7, b"k", orjson.dumps(request), 1_700_000_000_000)])
    passed_on = [o for o in out if o.topic == "ns.settlement.eligible"]
    assert len(passed_on) == 1 and orjson.loads(passed_on[0].value)["refusal"] is not None
    assert passed_on[0].key == ("\x1c" + psn_no).encode()


@pytest.mark.parametrize("msgid", [WE1["msgid"] + " ", " " + WE1["msgid"], WE1["msgid"][:-1] + "１",
                                   "H" * 65, "H1101.0500001", "病历-0001"])
def test_a_readable_msgid_the_contract_refuses_is_answered_under_it_as_sent(handler, msgid):
    # It was dead-lettered only: the gateway, matching answers by the msgid it sent, timed out.
    request = {**copy.deepcopy(WE1), "msgid": msgid}
    for value in (orjson.dumps(request), json.dumps(request).encode()):  # json.dumps writes "１" as "\\uff11"
        result = handler.parse(Incoming("ns.settlement.requests", 0, 7, b"k", value, 1_700_000_000_000))
        (answer,) = [orjson.loads(o.value) for o in result if o.answered]
        assert (answer["msgid"], answer["err_code"]) == (msgid, "INVALID_INPUT")
        assert "msgid" in answer["err_msg"]


@pytest.mark.parametrize("infno", ["2204", "2301", "9999"])
def test_a_transaction_the_platform_does_not_offer_is_answered_unsupported_once(handler, infno):
    """A well-formed request for a transaction outside the contract's list (fee-detail upload
    2204/2301 travels inside the settlement here): UNSUPPORTED, not a malformed request, and not
    dead-lettered."""
    request = we1_with() | {"infno": infno, "reply_to": "gw.results"}
    result = handler.parse(Incoming("ns.settlement.requests", 0, 7, b"k", orjson.dumps(request), 1_700_000_000_000))
    assert not isinstance(result, Parsed)
    (only,) = result
    answer = orjson.loads(only.value)
    assert (only.topic, answer["msgid"], answer["infno"], answer["err_code"]) == (
        "ns.gw.results", WE1["msgid"], infno, "UNSUPPORTED")
    assert "2207" in answer["err_msg"] and only.answered.err_code == "UNSUPPORTED"


def test_a_request_too_large_for_the_next_hop_is_refused_and_its_dead_letter_fits_in_a_record(handler):
    request = copy.deepcopy(WE1)
    request["input"]["data"]["dise_name"] = "x" * MAX_REQUEST_BYTES
    record = Incoming("ns.settlement.requests", 0, 7, b"k", orjson.dumps(request), 1_700_000_000_000)
    result = handler.parse(record)
    assert not isinstance(result, Parsed)
    answer = orjson.loads(next(o for o in result if o.answered).value)
    assert answer["err_code"] == "INVALID_INPUT" and "bytes" in answer["err_msg"]
    dead = next(o for o in result if o.topic.endswith(".dlq"))
    assert len(dead.value) == DEAD_LETTER_MAX_BYTES
    assert dict(dead.headers)["yidi-dlq-truncated"] == str(len(record.value)).encode()


def test_a_dead_letter_drops_headers_that_would_not_fit_in_a_record():
    record = Incoming("t", 0, 1, None, b"{not json", 0, (("big", b"x" * 900_000),))
    dead = dead_letter(record, "not JSON")
    assert dead.value == b"{not json" and "big" not in dict(dead.headers)
    assert dict(dead.headers)["yidi-dlq-headers-dropped"] == b"1"
    small = Incoming("t", 0, 1, None, b"{", 0, (("trace", b"abc"),))
    assert dict(dead_letter(small, "not JSON").headers)["trace"] == b"abc"


def test_a_dead_letter_keeps_a_null_header_and_counts_many_empty_ones():
    # Kafka header values may be null: measuring one raised TypeError, and the stage stopped on
    # the first malformed request that carried one (a review, session 34).
    record = Incoming("t", 0, 1, None, b"{not json", 0, (("traceparent", None),))
    assert ("traceparent", None) in dead_letter(record, "not JSON").headers
    # 600,000 empty headers: some 6 MB on the wire, counted as nothing before.
    many = Incoming("t", 0, 1, None, b"{", 0, (("", b""),) * 600_000)
    assert dict(dead_letter(many, "not JSON").headers)["yidi-dlq-headers-dropped"] == b"600000"


def test_a_dead_letter_keeps_at_most_a_kilobyte_of_the_key():
    # A compressed batch carries a key of megabytes in a few kilobytes; its dead letter, refused as
    # too large, stopped the stage.
    record = Incoming("t", 0, 1, b"k" * 2_000_000, b"{not json", 0)
    dead = dead_letter(record, "not JSON")
    assert dead.key == b"k" * DEAD_LETTER_MAX_KEY_BYTES
    assert dict(dead.headers)["yidi-dlq-key-truncated"] == b"2000000"
    assert dead_letter(Incoming("t", 0, 1, b"P1", b"{", 0), "not JSON").key == b"P1"

def test_a_small_dead_letter_keeps_the_whole_message():
    record = Incoming("t", 0, 1, None, b"{not json", 0)
    assert dead_letter(record, "not JSON").value == b"{not json"


def _dated(moment: datetime) -> dict:
    return {**copy.deepcopy(WE1), "inf_time": f"{moment:%Y-%m-%d %H:%M:%S}"}


class _NoSubjects:
    async def get_many(self, psn_nos):
        return {}


class _UnreadableSubjects:
    """A stored person record this version cannot read."""

    async def get_many(self, psn_nos):
        return {p: {"person": {"psn_no": p, "unknown_field": 1}, "filings": []} for p in psn_nos}


class _NoRows:
    async def facilities(self, codes):
        return {}

    async def outages(self, regions, now):
        return []


# WE1's world, for requests that are to be priced: its person and filing, its facility networked
# for every kind of care, its insured region's fund paying every kind, its catalogue's two items.
_WE1_PERSON = WE1_PERSON | {"acct_balc": "100.00"}
_WE1_POLICY = policy(*(rule(m, "10.00", "0.80") for m in MedType), annual_cap=D("300000"))
_WE1_ITEMS = tuple(we1_catalogue().items.values())


class _WE1Subjects:
    async def get_many(self, psn_nos):
        return {p: {"person": _WE1_PERSON, "filings": [WE1_FILING]} for p in psn_nos if p == _WE1_PERSON["psn_no"]}


class _WE1Rows:
    async def facilities(self, codes):
        facility = FacilityRecord(fixmedins_code=WE1["fixmedins_code"], fixmedins_name="x", admdvs=WE1["mdtrtarea_admvs"],
                                  level=3, med_types=[m.value for m in MedType])
        return {c: facility for c in codes if c == facility.fixmedins_code}

    async def outages(self, regions, now):
        return []


async def test_a_settlement_dated_ahead_of_the_platforms_clock_is_refused_by_pricing_after_its_msgid_check():
    """Refused INVALID_INPUT, but on its way through pricing, which answers a msgid it has settled
    with the stored answer first: a resend of a settled request with a fast clock (``inf_time``
    is not part of the payload's hash) must not be told "refused" beside a payment in the ledger."""
    for subjects in (_NoSubjects(), _UnreadableSubjects()):
        await _refused_by_pricing(EligibilityHandler(Settings(namespace="ns."), repo=_NoRows(), subjects=subjects))  # type: ignore[arg-type]


async def _refused_by_pricing(handler: EligibilityHandler) -> None:
    late = _dated(datetime.now(BUSINESS_TZ).replace(tzinfo=None)
                  + timedelta(seconds=handler.settings.max_clock_ahead_seconds + 120))
    for infno in ("2207", "2208", "2601"):
        request = late | {"infno": infno}
        psn_no = WE1["input"]["data"]["psn_no"]
        if infno == "2208":
            request["input"] = {"data": {"psn_no": psn_no, "mdtrt_id": "V1", "setl_id": "S1"}}
        elif infno == "2601":
            request["input"] = {"data": {"psn_no": psn_no, "omsgid": "M1", "oinfno": "2207"}}
        out = await handler([Incoming("ns.settlement.requests", 0, 7, b"k", orjson.dumps(request), 1_700_000_000_000)])
        assert [o.topic for o in out] == ["ns.settlement.requests.dlq", "ns.settlement.eligible"], infno
        assert not any(o.answered for o in out)
        work = EligibleWork.model_validate_json(out[1].value)
        assert work.refusal is not None and work.refusal.err_code == "INVALID_INPUT", infno
        assert "ahead of the platform's clock" in work.refusal.err_msg and work.request.msgid == WE1["msgid"]


@pytest.mark.parametrize("infno", ["2206", "1101"])
def test_a_query_dated_ahead_of_the_platforms_clock_is_refused_where_it_arrives(handler, infno):
    china_now = datetime.now(BUSINESS_TZ).replace(tzinfo=None)
    late = _dated(china_now + timedelta(seconds=handler.settings.max_clock_ahead_seconds + 120)) | {"infno": infno}
    result = handler.parse(Incoming("ns.settlement.requests", 0, 7, b"k", orjson.dumps(late), 1_700_000_000_000))
    assert not isinstance(result, Parsed)
    answer = orjson.loads(next(o for o in result if o.answered).value)
    assert answer["err_code"] == "INVALID_INPUT" and "ahead of the platform's clock" in answer["err_msg"]
    assert any(o.topic == "ns.settlement.requests.dlq" for o in result)


def test_a_request_a_few_minutes_fast_or_backdated_is_accepted(handler):
    china_now = datetime.now(BUSINESS_TZ).replace(tzinfo=None)
    # A few minutes fast is tolerated; a backdated request (sent late, offline) is not refused.
    for moment in (china_now + timedelta(minutes=5), china_now - timedelta(days=400)):
        ok = _dated(moment)
        assert isinstance(handler.parse(Incoming("ns.settlement.requests", 0, 7, b"k", orjson.dumps(ok), 0)), Parsed)
    # A time that is ahead only when read as UTC (this machine's clock may be) is China time: accepted.
    utc_now = datetime.now(UTC).replace(tzinfo=None)
    assert isinstance(handler.parse(Incoming("ns.settlement.requests", 0, 7, b"k", orjson.dumps(_dated(utc_now)), 0)), Parsed)


def test_a_disease_code_is_stripped_as_codes_are(handler):
    request = we1_with(dise_codg=" " + WE1["input"]["data"]["dise_codg"] + " ")
    parsed = handler.parse(Incoming("ns.settlement.requests", 0, 7, b"k", orjson.dumps(request), 1_700_000_000_000))
    assert isinstance(parsed, Parsed) and parsed.body.dise_codg == WE1["input"]["data"]["dise_codg"]


@pytest.mark.parametrize(("begntime", "read"), [("2022-07-01 08:00:00", "2022-07-01 08:00:00"),
                                               ("2022-07-01", "2022-07-01 00:00:00"),  # read by the day before
                                               ("2022-7-1 8:00:00", "2022-07-01 08:00:00")])  # as inf_time is
def test_an_admission_time_is_read_in_the_forms_taken_before(handler, begntime, read):
    record = Incoming("ns.settlement.requests", 0, 7, b"k", orjson.dumps(we1_with(begntime=begntime)), 1_700_000_000_000)
    parsed = handler.parse(record)
    assert isinstance(parsed, Parsed) and parsed.refused is None and f"{parsed.body.begntime}" == read


def test_an_empty_or_absent_begntime_and_endtime_are_not_given(handler):
    for request in (we1_with(begntime="", endtime=""), we1_with(begntime=None)):
        record = Incoming("ns.settlement.requests", 0, 7, b"k", orjson.dumps(request), 1_700_000_000_000)
        parsed = handler.parse(record)
        assert isinstance(parsed, Parsed) and parsed.body.begntime is None and parsed.body.endtime is None


def test_a_valid_request_still_parses(handler):
    record = Incoming("ns.settlement.requests", 0, 7, b"k", orjson.dumps(WE1), 1_700_000_000_000)
    assert isinstance(handler.parse(record), Parsed)


@pytest.mark.parametrize("reply_to", [".", "..", "settlement_results", "settlement_priced", "refdata_persons",
                                      "settlement.requests", "settlement.results.dlq", "a" * 201, "has space",
                                      "__consumer_offsets", "__transaction_state", "..consumer_offsets",
                                      "._consumer_offsets", "_.transaction_state", "clearing.statements",
                                      "clearing_alerts", "filing.results", "clearing.results",
                                      # other facilities' answers moved off a refused reply topic (session 38)
                                      "platform.moved.settlement.results", "platform_moved.settlement_results",
                                      "platform.moved.filing.results", "platform.moved.clearing.results"])
def test_an_illegal_or_platform_reply_to_is_refused(reply_to):
    with pytest.raises(ValueError):
        gateway_reply_topic(reply_to)


def test_no_request_may_name_a_topic_of_the_platform_but_its_own_kinds_shared_answer_topic():
    """Every topic the platform has, its dead-letter and moved answers' topics too, under either
    spelling Kafka treats alike: clearing.periods was accepted (a review, session 48), and an answer
    there stopped yidi-recover at a record that is not a month's close."""
    from yidi.platform.topics import SHARED_RESULTS, all_topic_specs

    for spec in all_topic_specs():
        for name in (spec.name, spec.name.replace(".", "_")):
            for own in SHARED_RESULTS:
                if name == own:
                    assert gateway_reply_topic(name, own=own) == name
                    continue
                with pytest.raises(ValueError):
                    gateway_reply_topic(name, own=own)


def test_no_request_may_name_a_moved_answers_topic_nor_is_one_under_a_shared_topics_name():
    """They hold other facilities' patients' answers: operations read them, no gateway."""
    from yidi.platform.topics import SHARED_RESULTS, moved_answers

    for shared in SHARED_RESULTS:
        moved = moved_answers(shared)
        assert not moved.startswith(shared)  # a gateway's prefixed read permission on it covers it not
        for own in SHARED_RESULTS:
            with pytest.raises(ValueError, match="platform's own"):
                gateway_reply_topic(moved, own=own)


def test_each_kind_of_request_may_name_its_own_shared_answer_topic_only():
    assert gateway_reply_topic("clearing.results", own="clearing.results") == "clearing.results"
    assert gateway_reply_topic("filing.results", own="filing.results") == "filing.results"
    with pytest.raises(ValueError, match="another kind of request"):
        gateway_reply_topic("settlement.results", own="filing.results")
    with pytest.raises(ValueError, match="collides"):
        gateway_reply_topic("filing_results", own="filing.results")
    # A settlement request naming Kafka's internal topic is refused where it arrives, and its
    # refusal goes to the shared topic, not there.
    assert recover_ids(b'{"msgid": "M1", "reply_to": "__consumer_offsets", "input": ')[1] == "settlement.results"


@pytest.mark.parametrize("reply_to", ["settlement.results", "gw.H11010500001.results", "gateway_results-7"])
def test_a_gateways_own_reply_topic_is_accepted(reply_to):
    assert gateway_reply_topic(reply_to) == reply_to


@pytest.mark.parametrize("reply_to", ["", None])
def test_a_reply_to_left_empty_or_null_is_the_default_not_a_malformed_request(reply_to):
    """CONTRACT.md: reply_to's default is settlement.results. Gateways following the national
    interface send "" (or null) for a field they do not use; that refused every request of theirs."""
    from yidi.contracts.clearing import CLEARING_REQUEST
    from yidi.contracts.filing import FilingRequest

    sent, dead = asyncio.run(_through_the_stages(we1_with(reply_to=reply_to), world=True))
    # Priced, for clearing to answer on the shared topic.
    assert dead == [] and [o.topic for o in sent] == ["ns.settlement.priced"]
    priced = orjson.loads(sent[0].value)
    assert priced["request"]["reply_to"] == "settlement.results"
    assert priced["answer"]["infcode"] == 0 and priced["answer"]["output"]["setlinfo"]["setl_id"], priced["answer"]
    filing = {"action": "history", "reqid": "F-1", "filing_id": "F1", "psn_no": "P1", "reply_to": reply_to}
    assert FilingRequest.model_validate(filing).reply_to == "filing.results"
    query = {"type": "query_facility_day", "reqid": "R-1", "fixmedins_code": "H1", "day": "2026-01-01",
             "reply_to": reply_to}
    assert CLEARING_REQUEST.validate_python(query).reply_to == "clearing.results"


def test_a_recovered_reply_to_that_is_forbidden_falls_back_to_the_shared_topic():
    raw = b'{"msgid": "M1", "reply_to": "settlement.priced", "infno": "2207", "input": '
    assert recover_ids(raw)[1] == "settlement.results"
    assert recover_ids(b'{"msgid": "M1", "reply_to": "gw.results", "input": ')[1] == "gw.results"


def test_nul_is_refused_anywhere_but_an_escaped_backslash_is_not_a_nul():
    with pytest.raises(ValueError, match="NUL"):
        loads(b'{"a": {"b": ["x\\u0000"]}}')
    assert loads(b'{"a": "x\\\\u0000"}') == {"a": "x\\u0000"}
    with pytest.raises(ValueError, match="NUL"):
        loads(b'{"a": [{"k\\u0000": 1}]}')
    with pytest.raises(ValueError, match="NUL"):
        loads(b'"\\u0000"')


def test_a_message_nesting_deeper_than_the_limit_is_refused_as_malformed():
    limit = _wire({"a": _nested(MAX_DEPTH - 1)})  # the object is a level
    assert loads(limit, MAX_DEPTH) == loads(limit.decode(), MAX_DEPTH) == orjson.loads(limit)
    for value in ({"a": _nested(MAX_DEPTH)}, _nested(1000)):
        with pytest.raises(ValueError, match=f"nests deeper than {MAX_DEPTH} levels"):
            loads(_wire(value), MAX_DEPTH)
    with pytest.raises(ValueError, match="NUL character"):
        loads(_wire([{"b": _nested(900)}, "\x00"]))  # not a RecursionError
    # Messages between the services carry a request a level or two down: they may nest more.
    assert loads(_wire({"a": _nested(MAX_DEPTH + CARRIED - 1)})) is not None


async def test_a_request_nested_to_the_limit_is_taken_and_read_by_the_next_stage():
    # Taken by eligibility at 64 levels, it reached pricing one level deeper, and pricing's read
    # refused it: dead-lettered and answered INTERNAL_ERROR "try again later" (a review).
    from yidi.platform.replies import parse_each

    request = we1_with(memo=_nested(MAX_DEPTH - 3))  # the envelope, input and data are three levels
    settings = Settings(namespace="ns.")
    eligibility = EligibilityHandler(settings, repo=_NoRows(), subjects=_NoSubjects())  # type: ignore[arg-type]
    out = await eligibility([Incoming("ns.settlement.requests", 0, 7, b"k", _wire(request), 1_700_000_000_000)])
    (passed,) = [o for o in out if o.topic == "ns.settlement.eligible"]
    works, refused = parse_each([Incoming(passed.topic, 0, 1, passed.key, passed.value, 0)], EligibleWork.model_validate,
                                "settlement.eligible message")
    assert refused == [] and works[0][1].request.msgid == WE1["msgid"]
    deeper = await eligibility([Incoming("ns.settlement.requests", 0, 8, b"k", _wire(we1_with(memo=_nested(MAX_DEPTH - 2))),
                                         1_700_000_000_000)])
    (answer,) = [orjson.loads(o.value) for o in deeper if o.answered]
    assert answer["err_code"] == "INVALID_INPUT" and f"deeper than {MAX_DEPTH} levels" in answer["err_msg"]
    # Brackets inside strings count towards the walk, never towards the depth.
    assert loads(orjson.dumps({"s": "[" * 500})) == {"s": "[" * 500}


@pytest.mark.parametrize("record", [
    {"acct_balc": "1E+30"},
    {"acct_balc": "-5.00"},
    {"home_quota_used": "-1.00"},
])
def test_a_person_feed_record_with_a_bad_amount_is_a_validation_error(record):
    base = {"psn_no": "P1", "psn_name": "x", "insuplc_admdvs": "131000", "insutype": "310", "psn_type": "11"}
    PersonRecord.model_validate(base)
    with pytest.raises(ValidationError) as refused:  # dead-lettered by the feed, not a spin on the batch
        PersonRecord.model_validate(base | record)
    assert [e["loc"] for e in refused.value.errors()] == [tuple(record)]


def test_a_home_quota_used_without_its_year_is_a_validation_error_and_a_stored_one_still_reads():
    # Accepted, then ignored by pricing (no year is this year): the fund paid past the quota shared
    # with care at home (R13; a review, session 37).
    from yidi.contracts.common import STORED

    base = {"psn_no": "P1", "psn_name": "x", "insuplc_admdvs": "131000", "insutype": "310", "psn_type": "11"}
    assert PersonRecord.model_validate(base | {"home_quota_used": "350.00", "home_quota_year": 2026}).home_quota_year == 2026
    assert PersonRecord.model_validate(base | {"home_quota_used": "0.00"}).home_quota_year is None
    with pytest.raises(ValidationError, match="home_quota_used 350.00 needs home_quota_year"):
        PersonRecord.model_validate(base | {"home_quota_used": "350.00"})
    stored = PersonRecord.model_validate(base | {"home_quota_used": "350.00"}, context={STORED: True})
    assert str(stored.home_quota_used) == "350.00"


@pytest.mark.parametrize(("usage", "why"), [
    ([{"pooled_paid": "100.00"}], "year"),
    ([{"year": 1800}], "greater than or equal to 1900"),
    ([{"year": 2026}, {"year": 2026}], "a year at most once"),
    ([{"year": y} for y in range(2023, 2027)], "at most 3"),
    ({"year": 2026}, "valid list"),
    ([{"year": 2026, "pooled_paid": "-1.00"}], "greater than or equal to 0"),
    ([{"year": 2026, "deductible_paid": {"op": "-1.00"}}], "greater than or equal to 0"),
    ([{"year": 2026, "deductible_paid": {" ": "1.00"}}], "not blank"),
    ([{"year": 2026, "deductible_paid": {"o" * 257: "1.00"}}], "in 1 to 256 characters"),
    ([{"year": 2026, "deductible_paid": {"ip:stay:H1:V1": "1.00"}}], "one stay's deductible"),
    ([{"year": 2026, "deductible_paid": {f"b{i}": "1.00" for i in range(33)}}], "at most 32"),
    ([{"year": 2026, "layers": {"310100": {"paid": "1.00"}}}], "the pooled fund's is pooled_paid"),
    ([{"year": 2026, "layers": {"330100": {"paid": "-1.00"}}}], "greater than or equal to 0"),
    ([{"year": 2026, "layers": {"330100": {"owed": "1.00"}}}], "Extra inputs are not permitted"),
    ([{"year": 2026, "spent": "1.00"}], "Extra inputs are not permitted"),
])
def test_a_person_records_home_usage_that_cannot_count_is_a_validation_error(usage, why):
    # Dead-lettered by the feed, with the reason; a person's record refused whole (no half of it applied).
    base = {"psn_no": "P1", "psn_name": "x", "insuplc_admdvs": "131000", "insutype": "310", "psn_type": "11"}
    with pytest.raises(ValidationError, match=why):
        PersonRecord.model_validate(base | {"home_usage": usage})


def test_the_quota_used_at_home_stated_twice_for_a_year_is_a_validation_error():
    base = {"psn_no": "P1", "psn_name": "x", "insuplc_admdvs": "131000", "insutype": "310", "psn_type": "11",
            "home_quota_used": "100.00", "home_quota_year": 2026}
    with pytest.raises(ValidationError, match="stated twice"):  # it would count twice
        PersonRecord.model_validate(base | {"home_usage": [{"year": 2026, "outpatient_quota_used": "50.00"}]})
    PersonRecord.model_validate(base | {"home_usage": [{"year": 2025, "outpatient_quota_used": "50.00"},
                                                       {"year": 2026, "pooled_paid": "50.00"}]})


def test_a_person_records_home_usage_reads_as_the_year_s_accumulators_and_stays_out_of_a_record_without_it():
    from yidi.contracts.refdata import STORED_CONTEXT, home_counters

    base = {"psn_no": "P1", "psn_name": "x", "insuplc_admdvs": "131000", "insutype": "310", "psn_type": "11"}
    record = PersonRecord.model_validate(base | {"home_usage": [
        {"year": 2026, "pooled_paid": "4500", "deductible_paid": {"op": "250.00", "med:21,24": "0.00"},
         "layers": {"330100": {"threshold_used": "100.00", "paid": "20.50"}}},
        {"year": 2025, "deductible_paid": {" op": "300.00"}}]})
    assert home_counters(record.home_usage) == {
        "2026": {"pooled_paid": "4500.00", "deductible:op": "250.00",
                 "layer:330100:base": "100.00", "layer:330100:paid": "20.50"},
        "2025": {"deductible: op": "300.00"}}  # as the policy spells its bucket (it may pad it too)
    stored = record.model_dump(mode="json")  # as eligibility stores it, and reads it back
    assert PersonRecord.model_validate(stored, context=STORED_CONTEXT) == record
    assert "home_usage" not in PersonRecord.model_validate(base).model_dump(mode="json")


def test_a_catalogue_ceiling_below_zero_is_a_validation_error():
    item = {"mdtrtarea_admvs": "110000", "hilist_code": "X", "hilist_name": "x", "chrgitm_lv": "01",
            "pric_uplmt_amt": "1.00", "begndate": "2024-01-01"}
    CatalogueRecord.model_validate(item)
    with pytest.raises(ValidationError):
        CatalogueRecord.model_validate(item | {"pric_uplmt_amt": "-1.00"})


def test_a_catalogue_version_may_be_withdrawn_and_is_then_in_force_on_no_day():
    # A region's own entry published by mistake for a later day: republished ending the day it
    # begins, it stands on no day, and the province's serves the region (a review, session 49: it
    # was refused, and the region's class C entry stood for a day at least).
    from yidi.domain.catalogue import Catalogue

    own = {"mdtrtarea_admvs": "110100", "hilist_code": "X", "hilist_name": "x", "chrgitm_lv": "03",
           "begndate": "2026-09-01"}
    withdrawn = CatalogueRecord.model_validate(own | {"enddate": "2026-09-01"}).to_domain()
    province = CatalogueRecord.model_validate(own | {"mdtrtarea_admvs": "110000", "chrgitm_lv": "01",
                                                     "begndate": "2024-01-01"}).to_domain()
    for day in (date(2026, 8, 31), date(2026, 9, 1), date(2027, 1, 1)):
        assert Catalogue.in_force("110105", day, [withdrawn, province]).get("X") is province
    with pytest.raises(ValidationError, match="not before"):
        CatalogueRecord.model_validate(own | {"enddate": "2026-08-31"})


def test_a_policy_rule_for_a_facility_level_that_does_not_exist_or_a_quota_for_no_care_is_refused():
    # Each was taken, and silently never applied: a rule for level 4 (a typo for 3) never paid; a
    # quota with no kinds of care never counted (a review, session 49). One stored before is read.
    from yidi.contracts.refdata import STORED_CONTEXT, PolicyRecord

    body = {"insuplc_admdvs": "131000", "insutype": "310", "version": "V1", "begndate": "2024-01-01",
            "rules": [{"med_types": ["11"], "deductible": "0.00", "ratio": "0.50", "facility_levels": [3]}],
            "outpatient_quota": "2500.00"}
    PolicyRecord.model_validate(body)
    wrong = [({"rules": [body["rules"][0] | {"facility_levels": [3, 4]}]}, "facility level 4 is none of 1, 2, 3"),
             ({"quota_med_types": []}, "quota_med_types is empty")]
    for fields, said in wrong:
        with pytest.raises(ValidationError, match=said):
            PolicyRecord.model_validate(body | fields)
        PolicyRecord.model_validate(body | fields, context=STORED_CONTEXT)


def test_a_reconciliation_with_an_amount_out_of_range_is_a_validation_error():
    totals = {"stmt_begndate": "2024-01-01", "stmt_enddate": "2024-01-31", "medfee_sumamt": "10.00",
              "fund_pay_sumamt": "0.00", "acct_pay": "0.00", "fixmedins_setl_cnt": 1}
    ReconcileTotalsInput.model_validate(totals)
    with pytest.raises(ValidationError) as refused:
        ReconcileTotalsInput.model_validate(totals | {"medfee_sumamt": "1E+30"})
    assert [e["loc"] for e in refused.value.errors()] == [("medfee_sumamt",)]


def test_a_clearing_request_the_stage_cannot_process_is_answered_by_reqid_on_its_reply_topic():
    from services.clearing.admin import ClearingAdminHandler

    admin = ClearingAdminHandler(Settings(namespace="ns."), repo=None)  # type: ignore[arg-type]
    raw = b'{"type": "query_facility_day", "reqid": "R-42", "reply_to": "ops.results", "fixmedins_code": "H1"}'
    out = admin.refuse(Incoming("ns.clearing.requests", 0, 3, b"R-42", raw, 0), "refused by the database: DataError")
    dead, answer = out
    assert dead.topic == "ns.clearing.requests.dlq"
    assert answer.topic == "ns.ops.results" and answer.key == b"R-42"
    result = orjson.loads(answer.value)
    assert (result["reqid"], result["ok"]) == ("R-42", False) and "DataError" in result["reason"]
    # A forbidden reply_to falls back to clearing.results; a 3201/3202 (msgid) is answered as a gateway's.
    forbidden = raw.replace(b"ops.results", b"settlement.priced")
    assert admin.refuse(Incoming("ns.clearing.requests", 0, 3, None, forbidden, 0), "x")[1].topic == "ns.clearing.results"


def test_a_facilitys_reconciliation_the_stage_cannot_process_is_answered_as_a_gateway_request():
    from services.clearing.admin import ClearingAdminHandler

    admin = ClearingAdminHandler(Settings(namespace="ns."), repo=None)  # type: ignore[arg-type]
    request = {**WE1, "infno": "3201", "msgid": "H11010500001202607011030000042", "reply_to": "gw.H1.results"}
    raw = orjson.dumps({"type": "reconcile", "request": request, "request_ts_ms": 0, "reqid": request["msgid"]})
    dead, answer = admin.refuse(Incoming("ns.clearing.requests", 0, 3, b"k", raw, 1_700_000_000_000), "DataError")
    assert dead.topic == "ns.clearing.requests.dlq"
    # The gateway's client waits for a response envelope under the msgid, on its topic, by facility.
    assert answer.topic == "ns.gw.H1.results" and answer.key == WE1["fixmedins_code"].encode()
    body = orjson.loads(answer.value)
    assert (body["msgid"], body["infno"], body["err_code"]) == (request["msgid"], "3201", "INTERNAL_ERROR")
    assert body["infcode"] != 0 and "reqid" not in body


def test_answer_times_are_china_time_like_the_requests():
    from yidi.contracts.envelope import respond_time

    assert respond_time(datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)) == "20260101080000123"
    assert respond_time(datetime(2026, 1, 1, 16, 30)) == "20260102003000000"  # naive: UTC


def _settled(request: dict) -> dict:
    """``stored`` for pricing: ``request`` settled before, its answer kept."""
    from services.pricing.repository import StoredRequest

    envelope = RequestEnvelope.model_validate(request)
    emitted = {"kind": "settle", "request": envelope.ref_wire(), "request_hash": envelope.payload_hash(),
               "request_ts_ms": 1, "answer": {"infcode": 0, "inf_refmsgid": "YD1", "refmsg_time": "1",
                                              "respond_time": "1", "msgid": envelope.msgid, "output": {}},
               "facts": None, "target_setl_id": ""}
    return {envelope.msgid: StoredRequest(envelope.msgid, envelope.payload_hash(), "2207", "S1", [emitted])}


async def test_a_person_eligibility_cannot_read_is_answered_internal_error_but_a_settled_resend_gets_its_answer():
    """A stored person record this version cannot read: the settlement is dead-lettered and
    answered INTERNAL_ERROR "nothing was settled", by pricing after its msgid check. Eligibility
    answered it itself, and told a resent, settled request "nothing was settled" beside its payment."""
    request = copy.deepcopy(WE1)
    sent, dead = await _through_the_stages(request, subjects=_UnreadableSubjects())
    answer = orjson.loads(sent[0].value)
    assert len(sent) == 1 and len(dead) == 1
    assert answer["err_code"] == "INTERNAL_ERROR" and "nothing was settled" in answer["err_msg"]
    assert dict(dead[0].headers)["yidi-dlq-reason"].startswith(b"eligibility failed:")
    resent, dead = await _through_the_stages(request, stored=_settled(request), subjects=_UnreadableSubjects())
    assert [o.topic for o in resent] == ["ns.settlement.priced"] and len(dead) == 1  # the stored answer, again


@pytest.mark.parametrize("infno", ["2208", "2601"])
async def test_an_undoing_of_a_person_eligibility_cannot_read_passes_unchecked(infno):
    request = copy.deepcopy(WE1) | {"infno": infno}
    psn_no = WE1["input"]["data"]["psn_no"]
    request["input"] = ({"data": {"psn_no": psn_no, "mdtrt_id": "V1", "setl_id": "S1"}} if infno == "2208"
                        else {"data": {"psn_no": psn_no, "omsgid": "M1", "oinfno": "2207"}})
    handler = EligibilityHandler(Settings(namespace="ns."), repo=_NoRows(), subjects=_UnreadableSubjects())  # type: ignore[arg-type]
    out = await handler([Incoming("ns.settlement.requests", 0, 7, b"k", orjson.dumps(request), 1_700_000_000_000)])
    assert [o.topic for o in out] == ["ns.settlement.eligible"]
    assert EligibleWork.model_validate_json(out[0].value).refusal is None


async def test_a_person_query_eligibility_cannot_read_is_answered_where_it_arrives():
    request = copy.deepcopy(WE1) | {"infno": "1101", "input": {"data": {"psn_no": WE1["input"]["data"]["psn_no"]}}}
    sent, dead = await _through_the_stages(request, subjects=_UnreadableSubjects())
    assert [orjson.loads(o.value)["err_code"] for o in sent] == ["INTERNAL_ERROR"] and len(dead) == 1


async def test_a_person_query_with_unused_codes_sent_empty_is_answered_and_a_benefit_check_told_it_needs_them():
    # Gateways following the national interface send "" for fields a transaction does not use: a
    # 1101 uses neither insutype nor med_type (a review, session 46).
    psn_no = WE1["input"]["data"]["psn_no"]
    person = copy.deepcopy(WE1) | {"infno": "1101", "input": {"data": {"psn_no": psn_no, "insutype": "",
                                                                         "med_type": ""}}}
    sent, dead = await _through_the_stages(person, world=True)
    (answer,) = [orjson.loads(o.value) for o in sent]
    assert (answer["infcode"], answer["err_code"], dead) == (0, None, []), answer
    assert answer["output"]["baseinfo"]["psn_no"] == psn_no
    check = copy.deepcopy(WE1) | {"infno": "2001", "input": {"data": {"psn_no": psn_no, "insutype": "",
                                                                        "med_type": "11"}}}
    sent, dead = await _through_the_stages(check, world=True)
    (answer,) = [orjson.loads(o.value) for o in sent]
    assert answer["err_code"] == "INVALID_INPUT" and "names insutype and med_type" in answer["err_msg"], answer


@pytest.mark.parametrize("oinfno", ["2208", "2305"])
async def test_a_reversal_of_a_cancellation_is_refused_saying_what_to_do_instead(oinfno):
    # A 2601 undoes a settlement (DOMAIN.md); the cashier whose cancellation went unanswered was
    # told only "Input should be '2207' or '2304'" (a review, session 46).
    psn_no = WE1["input"]["data"]["psn_no"]
    reversal = copy.deepcopy(WE1) | {"infno": "2601", "input": {"data": {"psn_no": psn_no, "omsgid": "H11010500001X",
                                                                           "oinfno": oinfno}}}
    sent, dead = await _through_the_stages(reversal, world=True)
    (answer,) = [orjson.loads(o.value) for o in sent]
    assert answer["err_code"] == "INVALID_INPUT" and len(dead) == 1
    assert f"a cancellation ({oinfno}) cannot be reversed" in answer["err_msg"], answer["err_msg"]
    assert "send the cancellation again under its msgid" in answer["err_msg"]


async def test_a_pre_settlement_under_a_settled_msgid_is_refused_as_a_modified_request():
    # It was priced and answered as a pre-settlement: the gateway held two answers to one msgid,
    # the settlement's and this one's (review of the answers, 2026-12-05).
    from services.pricing.repository import StoredRequest

    pre = {**copy.deepcopy(WE1), "infno": "2206"}
    stored = {WE1["msgid"]: StoredRequest(WE1["msgid"], "another hash", "2207", "S1", [])}
    sent, dead = await _through_the_stages(pre, stored)
    (answer,) = [orjson.loads(o.value) for o in sent]
    assert (answer["msgid"], answer["err_code"]) == (WE1["msgid"], "MODIFIED_REQUEST") and dead == []
    assert "already used for another request (infno 2207)" in answer["err_msg"]
    # Under a msgid of its own it is decided as before (here: a facility eligibility does not know).
    sent, _ = await _through_the_stages(pre, {})
    assert [orjson.loads(o.value)["err_code"] for o in sent] == ["UNKNOWN_FACILITY"]


KAFKA_RECORD = 1_048_576  # the broker's default max.message.bytes


async def _through_eligibility(raw: bytes) -> list:
    eligibility = EligibilityHandler(Settings(namespace="ns."), repo=_NoRows(), subjects=_NoSubjects())  # type: ignore[arg-type]
    return await eligibility([Incoming("ns.settlement.requests", 0, 7, b"k", raw, 1_700_000_000_000)])


@pytest.mark.parametrize("request_", [
    we1_with(medfee_sumamt=["\u0085" * 420_000]) | {"infno": "2206"},  # its repr: 2.5 times the bytes sent
    we1_with(medfee_sumamt="1." + "1" * 850_000),  # quoted whole, beside the request that carries it on
    we1_with(psn_no="P" * 800_000),  # a refused settlement was keyed by its whole psn_no
])
async def test_a_refusal_fits_in_a_kafka_record_whatever_the_request_quotes(request_):
    # Each was under the 900 KB a request may have, and its refusal (the answer, or the work passed
    # on to pricing with the request and the reason) was 1.6-2.1 MB: past the broker's limit, the
    # stage halved its batch and the gateway got INTERNAL_ERROR, not INVALID_INPUT (a review, session 37).
    raw = _wire(request_)
    assert len(raw) < 900_000
    out = await _through_eligibility(raw)
    assert out
    for o in out:
        assert len(o.value) + len(o.key or b"") < KAFKA_RECORD - 100_000, o.topic  # room for headers
    (refusal,) = [orjson.loads(o.value) for o in out if o.topic in ("ns.settlement.results", "ns.settlement.eligible")]
    refusal = refusal.get("refusal") or refusal
    assert refusal["err_code"] == "INVALID_INPUT"


async def test_a_request_refused_before_its_envelope_validates_is_answered_where_its_json_says():
    # The byte patterns for messages that do not parse chose the topic: a reply_to written with an
    # escape was answered on the shared topic, and one inside input.data on the topic it named,
    # another gateway's, under its facility and infno (a review, session 37).
    bad = we1_with(reply_to="gw.mine") | {"inf_time": "2022-02-30 10:00:00"}
    escaped = _wire(bad).replace(b'"gw.mine"', b'"gw\\u002emine"')
    (answer,) = [o for o in await _through_eligibility(escaped) if o.answered]
    assert answer.topic == "ns.gw.mine"
    inner = {"input": {"data": {**bad["input"]["data"], "reply_to": "gw.other", "fixmedins_code": "H99", "infno": "2001"}}}
    nested = orjson.dumps(inner | {k: v for k, v in bad.items() if k != "input"})  # input.data written first
    (answer,) = [o for o in await _through_eligibility(nested) if o.answered]
    assert (answer.topic, answer.key) == ("ns.gw.mine", WE1["fixmedins_code"].encode())
    assert orjson.loads(answer.value)["infno"] == WE1["infno"]
    unsupported = orjson.dumps(inner | {k: v for k, v in bad.items() if k != "input"} | {"infno": "9999"})
    (answer,) = [o for o in await _through_eligibility(unsupported) if o.answered]
    assert answer.topic == "ns.gw.mine" and orjson.loads(answer.value)["err_code"] == "UNSUPPORTED"
    # No msgid of its own at the top: the one inside input.data is not it (a diff review, session
    # 37): dead-lettered only, nothing answered on another gateway's topic.
    inside = {"input": {"data": {"msgid": "INNER", "reply_to": "gw.other", "fixmedins_code": "H99"}},
              "infno": "2207", "msgid": "", "reply_to": "gw.mine"}
    out = await _through_eligibility(orjson.dumps(inside))
    assert [o.topic for o in out] == ["ns.settlement.requests.dlq"]
    # Refused for a NUL, bytes that are not UTF-8 or nesting past the limit, a request was read by
    # the byte patterns, which took the msgid and reply_to inside input.data over its own (a review,
    # session 37).
    for spoiler in (b'"a\\u0000"', b'"\xff"', b"[" * 80 + b"]" * 80):
        raw = (b'{"input":{"data":{"msgid":"INNER","reply_to":"gw.other","fixmedins_code":"H99","x":' + spoiler
               + b'}},"infno":"2207","msgid":"H11010500001OUTER","reply_to":"gw.mine","fixmedins_code":"H11010500001"}')
        answered = [o for o in await _through_eligibility(raw) if o.answered]
        assert [(o.topic, orjson.loads(o.value)["msgid"]) for o in answered] == [("ns.gw.mine", "H11010500001OUTER")], spoiler


async def test_a_request_of_too_many_empty_arrays_is_refused_quickly_and_a_full_reconciliation_is_not():
    # 850 KB of [] in a field the models ignore: each stage walked 280,000 arrays, 0.3 s a stage
    # for one message (a fuzz review, session 37). Refused past 50,000 objects and arrays, as
    # malformed; a 3202 filling the 900 KB a request may have holds about 15,000.
    from yidi.platform.jsonwire import MAX_CONTAINERS

    flood = we1_with(memo=[[] for _ in range(280_000)])
    raw = _wire(flood)
    assert len(raw) < MAX_REQUEST_BYTES
    with pytest.raises(ValueError, match=f"more than {MAX_CONTAINERS} objects and arrays"):
        loads(raw, MAX_DEPTH, MAX_CONTAINERS)
    (answer,) = [orjson.loads(o.value) for o in await _through_eligibility(raw) if o.answered]
    assert answer["err_code"] == "INVALID_INPUT" and "objects and arrays" in answer["err_msg"]
    detail = {"setl_id": "S" * 24, "msgid": "M" * 30, "medfee_sumamt": "1.00", "fund_pay_sumamt": "1.00"}
    reconciliation = {"infno": "3202", "input": {"data": {"details": [dict(detail) for _ in range(9_000)]}}}
    assert len(loads(orjson.dumps(reconciliation))["input"]["data"]["details"]) == 9_000


def _containers(value) -> int:
    """The objects and arrays ``value`` holds, itself left out, as jsonwire counts them."""
    inner = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return sum(1 + _containers(child) for child in inner if isinstance(child, (dict, list)))


async def test_a_request_at_the_containers_limit_passed_on_is_taken_by_the_next_stage():
    # Exactly 50,000 objects and arrays passed eligibility; the work it passed on, the request a
    # level down with the person and the refusal beside it, held a few more, and pricing refused it:
    # INTERNAL_ERROR "try again later", the same at every try, under ids read from the raw bytes
    # (a review, session 48). One more is refused by eligibility, as malformed.
    from yidi.platform.jsonwire import MAX_CONTAINERS

    base = we1_with(memo=[])
    limit = we1_with(memo=[[] for _ in range(MAX_CONTAINERS - _containers(base))])
    assert _containers(limit) == MAX_CONTAINERS
    (passed,) = [o for o in await _through_eligibility(_wire(limit)) if not o.answered]
    assert passed.topic == "ns.settlement.eligible"
    work = loads(passed.value)  # as pricing reads it (replies.parse_each)
    assert _containers(work) > MAX_CONTAINERS
    assert EligibleWork.model_validate(work).request.msgid == WE1["msgid"]
    over = we1_with(memo=[[] for _ in range(MAX_CONTAINERS - _containers(base) + 1)])
    (answer,) = [orjson.loads(o.value) for o in await _through_eligibility(_wire(over)) if o.answered]
    assert answer["err_code"] == "INVALID_INPUT" and "objects and arrays" in answer["err_msg"]


def test_a_filing_request_is_held_to_a_gateway_requests_limits_not_a_carried_messages():
    # Filing reads gateways' requests itself, with no stage before it; it took 1,000 containers
    # and 8 levels more than eligibility does (the review of session 48's diff).
    from services.filing.handlers import FilingHandler
    from yidi.platform.jsonwire import MAX_CONTAINERS
    from yidi.platform.replies import parse_each

    body = {"action": "add", "reqid": "R1", "psn_no": "P1", "memo": [[] for _ in range(MAX_CONTAINERS)]}
    record = Incoming("ns.filing.requests", 0, 1, b"P1", orjson.dumps(body), 0)
    for gateway, taken in ((False, 1), (True, 0)):
        parsed, out = parse_each([record], dict, "filing request", gateway=gateway)
        assert len(parsed) == taken and len(out) == 1 - taken
    assert "gateway=True" in inspect.getsource(FilingHandler.__call__)


# ---- any request, as mutated at random: one answer, and a dead letter for a malformed one ----------


def _seeds() -> list[dict]:
    """A valid request of each kind the platform offers, WE1's envelope around each input."""
    def of(infno: str, data: dict) -> dict:
        return {**copy.deepcopy(WE1), "infno": infno, "input": {"data": data}}

    settlement = WE1["input"]["data"]
    psn = {"psn_no": settlement["psn_no"]}
    stay = {**copy.deepcopy(settlement), "med_type": "21", "endtime": "2022-07-01 10:20:00"}
    period = {"stmt_begndate": "2022-07-01", "stmt_enddate": "2022-07-31"}
    return [
        copy.deepcopy(WE1), of("2206", copy.deepcopy(settlement)), of("2304", stay), of("2303", copy.deepcopy(stay)),
        of("2208", {**psn, "mdtrt_id": "MDTRT-WE1-0001", "setl_id": "S1"}),
        of("2305", {**psn, "mdtrt_id": "MDTRT-WE1-0001", "setl_id": "S1"}),
        of("2601", {**psn, "omsgid": WE1["msgid"], "oinfno": "2207"}),
        of("1101", {**psn, "mdtrt_cert_type": "02", "mdtrt_cert_no": settlement["mdtrt_cert_no"]}),
        of("2001", {**psn, "insutype": "310", "med_type": "14", "dise_codg": "E11.900"}),
        of("3201", {**period, "medfee_sumamt": "64.29", "fund_pay_sumamt": "48.89", "acct_pay": "0.00",
                    "fixmedins_setl_cnt": 1}),
        of("3202", {**period, "details": [{"setl_id": "S1", "medfee_sumamt": "64.29", "fund_pay_sumamt": "48.89",
                                           "acct_pay": "0.00"}]}),
    ]


SEEDS = _seeds()


@st.composite
def _mutated(draw: st.DrawFn) -> tuple[dict, bool]:
    """A valid request of some kind under one to three mutations (``tests.unit.mutations``; its
    infno changed to another the platform offers among them), and whether its msgid, reply_to and
    facility are as sent (so an answer is owed under that msgid)."""
    request = mutate(draw, draw(st.sampled_from(SEEDS)), focus=("input", "data"),
                     changes={("infno",): st.sampled_from(sorted(OFFERED_INFNOS))})
    intact = all(request.get(k) == WE1[k] for k in ("msgid", "reply_to", "fixmedins_code"))
    return request, intact


async def _answers_owed(raw: bytes) -> tuple[list, list]:
    """``_through_the_stages`` in WE1's world (a valid request is priced), a reconciliation passed
    on to clearing (which answers it) counted as its answer."""
    sent, dead = await _through_the_stages(raw, world=True)
    settings = Settings(namespace="ns.")
    eligibility = EligibilityHandler(settings, repo=_WE1Rows(), subjects=_WE1Subjects())  # type: ignore[arg-type]
    passed = [o for o in await eligibility([Incoming("ns.settlement.requests", 0, 7, b"k", raw, 1_700_000_000_000)])
              if o.topic == "ns.clearing.requests"]
    return sent + passed, dead


def test_the_seeds_are_valid_requests_each_answered_once_and_the_settlements_priced():
    # What the mutations start from: a request of each kind the platform takes, none refused as
    # malformed, and in WE1's world the settlements and pre-settlements priced (so the mutations
    # that keep a request valid reach pricing's arithmetic).
    priced = set()
    for seed in SEEDS:
        sent, dead = asyncio.run(_answers_owed(_wire(seed)))
        assert len(sent) == 1 and dead == [], seed["infno"]
        value = orjson.loads(sent[0].value)
        answer = value.get("answer", value)
        assert answer.get("err_code") != "INVALID_INPUT", (seed["infno"], answer)
        if answer.get("infcode") == 0 and "setlinfo" in answer.get("output", {}) \
                and "fund_pay_sumamt" in answer["output"]["setlinfo"]:
            priced.add(seed["infno"])
    assert priced == {"2206", "2207", "2303", "2304"}, priced


@given(_mutated())
@fuzzing(600)
def test_any_mutated_request_gets_one_answer_and_a_malformed_one_a_dead_letter(case):
    # The contract: every request gets exactly one response, a malformed one too when its msgid
    # can be read, and goes to the dead-letter topic with the reason either way. No input may raise
    # out of a stage: the batch would be retried for ever, for every hospital.
    request, intact = case
    # The standard library writes what orjson will not (integers past 64 bits): the stages read it.
    sent, dead = asyncio.run(_answers_owed(json.dumps(request).encode()))
    assert len(sent) <= 1 and len(dead) <= 1, (sent, dead)
    if intact:
        assert len(sent) == 1, request
    for answer in (orjson.loads(o.value) for o in sent if o.topic not in ("ns.settlement.priced", "ns.clearing.requests")):
        assert answer["infcode"] in (0, -1)
        if intact:
            assert answer["msgid"] == WE1["msgid"]
        if answer.get("err_code") == "INVALID_INPUT":
            assert len(dead) == 1, answer
    if not sent:
        assert len(dead) == 1, request  # no readable msgid: the dead letter keeps it
