"""Wire contracts: WE1 parses, amounts are strings, malformed requests are explained."""

import hashlib
import json
import re
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from yidi.contracts.envelope import RequestEnvelope, ResponseEnvelope
from yidi.contracts.settlement import BillFields, SettlementInput, bill_fields
from yidi.platform.replies import recover_ids

WE1 = Path(__file__).resolve().parents[3] / "shared" / "examples" / "we1" / "request.json"


def we1() -> dict:
    return json.loads(WE1.read_text())


def test_we1_request_parses():
    request = RequestEnvelope.model_validate(we1())
    body = SettlementInput.model_validate(request.data)
    assert str(body.medfee_sumamt) == "64.29" and len(body.feedetail) == 2


def test_a_float_amount_is_refused():
    raw = we1()
    raw["input"]["data"]["medfee_sumamt"] = 64.29
    with pytest.raises(ValidationError, match="never floats"):
        SettlementInput.model_validate(raw["input"]["data"])


def test_a_total_that_is_not_the_sum_of_the_details_is_refused():
    raw = we1()
    raw["input"]["data"]["medfee_sumamt"] = "64.30"
    with pytest.raises(ValidationError, match="not the sum"):
        SettlementInput.model_validate(raw["input"]["data"])


def test_payload_hash_ignores_reply_to_and_time_but_not_the_bill():
    a = RequestEnvelope.model_validate(we1())
    other_reply = we1() | {"reply_to": "gw.answers", "inf_time": "2022-07-01 10:31:00"}
    changed = we1()
    changed["input"]["data"]["feedetail"][0]["pric"] = "32.53"
    assert a.payload_hash() == RequestEnvelope.model_validate(other_reply).payload_hash()
    assert a.payload_hash() != RequestEnvelope.model_validate(changed).payload_hash()


def test_ids_are_recovered_from_a_message_that_does_not_parse():
    raw = b'{"infno": "2207", "msgid": "H1100000000120220701103000000X", "reply_to": "gw.a", "fixmedins_code": "H1", "input": {'
    assert recover_ids(raw) == ("H1100000000120220701103000000X", "gw.a", "2207", "H1")


def test_a_person_records_time_is_iso_8601_and_china_time_without_a_zone():
    from datetime import UTC, datetime

    from yidi.contracts.refdata import PersonRecord

    base = dict(psn_no="P1", psn_name="A", insuplc_admdvs="330100", insutype="310", psn_type="11")
    assert PersonRecord(**base).source_time is None
    assert PersonRecord(**base, updated_at="2026-01-05T08:00:00+08:00").source_time == datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
    assert PersonRecord(**base, updated_at="2026-01-05 08:00:00").source_time == datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
    assert PersonRecord(**base, updated_at="2026-01-05").source_time == datetime(2026, 1, 4, 16, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="updated_at is not an ISO 8601 time"):
        PersonRecord(**base, updated_at="yesterday")
    # A record stored before the check (free text then) still reads, as a record without a time.
    from yidi.contracts.refdata import STORED_CONTEXT

    stored = PersonRecord.model_validate(base | {"updated_at": "yesterday"}, context=STORED_CONTEXT)
    assert (stored.updated_at, stored.source_time) == ("yesterday", None)


def test_r14_disease_codes_are_stripped_and_an_empty_one_is_refused():
    # "E11 " matched no disease, and "" (an empty CSV cell) matched every one.
    from yidi.contracts.refdata import STORED_CONTEXT, BenefitRuleRecord, PersonRecord

    base = dict(psn_no="P1", psn_name="A", insuplc_admdvs="330100", insutype="310", psn_type="11")
    assert PersonRecord(**base, chronic_qualifications=[" E11 ", "I10"]).chronic_qualifications == ["E11", "I10"]
    with pytest.raises(ValueError, match="empty ICD-10 code or prefix"):
        PersonRecord(**base, chronic_qualifications=["E11", " "])
    # Codes compare without their dot (disease_key): a dot alone is as empty, and matched every disease.
    for empty in (".", " . ", ".."):
        with pytest.raises(ValueError, match="a dot alone"):
            PersonRecord(**base, chronic_qualifications=[empty])
    rule = dict(med_types=["14"], deductible="0.00", ratio="0.50")
    assert BenefitRuleRecord(**rule, diseases=["E11 "]).diseases == ["E11"]
    with pytest.raises(ValueError, match="empty ICD-10 code"):
        BenefitRuleRecord(**rule, diseases=[""])
    # A record stored before the check still reads, without its empty entries.
    stored = PersonRecord.model_validate(base | {"chronic_qualifications": ["", "E11", "."]}, context=STORED_CONTEXT)
    assert stored.chronic_qualifications == ["E11"]


def test_texts_a_counter_is_named_after_are_at_most_256_characters_except_as_stored():
    # A deductible bucket or a balance version of kilobytes named a person's counter past its index's
    # 2,704 bytes, and pricing stopped at every start (a review, session 35).
    from yidi.contracts.refdata import STORED_CONTEXT, BenefitRuleRecord, PersonRecord

    base = dict(psn_no="P1", psn_name="A", insuplc_admdvs="330100", insutype="310", psn_type="11")
    rule = dict(med_types=["11"], deductible="0.00", ratio="0.50")
    assert PersonRecord(**base, acct_version="v" * 256).acct_version == "v" * 256
    assert BenefitRuleRecord(**rule, deductible_bucket="b" * 256).deductible_bucket == "b" * 256
    with pytest.raises(ValueError, match="at most 256 characters"):
        PersonRecord(**base, acct_version="v" * 257)
    with pytest.raises(ValueError, match="at most 256 characters"):
        BenefitRuleRecord(**rule, deductible_bucket="b" * 257)
    long = "v" * 3000
    assert PersonRecord.model_validate(base | {"acct_version": long}, context=STORED_CONTEXT).acct_version == long
    assert BenefitRuleRecord.model_validate(rule | {"deductible_bucket": long}, context=STORED_CONTEXT)


def test_a_person_records_time_is_in_the_years_1990_to_2999():
    from yidi.contracts.refdata import PersonRecord

    base = dict(psn_no="P1", psn_name="A", insuplc_admdvs="330100", insutype="310", psn_type="11")
    for far in ("0001-01-01T00:30:00+09:00", "1899-12-31", "3000-01-01T00:00:00Z"):
        with pytest.raises(ValueError, match="updated_at is in the years 1900 to 2999"):
            PersonRecord(**base, updated_at=far)
    for near in ("1900-01-01T00:00:00+09:00", "1970-01-01", "2999-12-31T23:59:59-12:00"):
        assert PersonRecord(**base, updated_at=near).source_time is not None


def test_a_clearing_month_is_of_the_years_1900_to_2999_and_a_query_page_within_2_to_the_31():
    from yidi.contracts.clearing import CLEARING_REQUEST

    def run(month: str) -> object:
        return CLEARING_REQUEST.validate_python({"type": "run_month", "reqid": "R1", "setlym": month})

    for month in ("190001", "202611", "299912"):
        assert run(month).setlym == month
    for month in ("000001", "189912", "300001", "999912", "202613"):
        with pytest.raises(ValueError):
            run(month)
    query = {"type": "query_month", "reqid": "Q1", "setlym": "202611"}
    assert CLEARING_REQUEST.validate_python(query | {"offset": 2**31 - 1}).offset == 2**31 - 1
    with pytest.raises(ValueError):
        CLEARING_REQUEST.validate_python(query | {"offset": "18446744073709551616"})


def test_a_reconciliation_reads_a_3201_of_a_year_at_most_and_a_3202_of_a_month():
    from yidi.contracts.clearing import ReconcileDetailsInput, ReconcileTotalsInput

    totals = {"medfee_sumamt": "0.00", "fund_pay_sumamt": "0.00", "acct_pay": "0.00", "fixmedins_setl_cnt": 0}
    assert ReconcileTotalsInput.model_validate(totals | {"stmt_begndate": "2024-01-01", "stmt_enddate": "2024-12-31"})
    with pytest.raises(ValueError, match="longer than 366 days"):
        ReconcileTotalsInput.model_validate(totals | {"stmt_begndate": "2024-01-01", "stmt_enddate": "2025-01-01"})
    assert ReconcileDetailsInput.model_validate({"stmt_begndate": "2026-10-01", "stmt_enddate": "2026-10-31", "details": []})
    with pytest.raises(ValueError, match="longer than 31 days"):
        ReconcileDetailsInput.model_validate({"stmt_begndate": "2026-10-01", "stmt_enddate": "2026-11-01", "details": []})


def test_a_message_between_the_services_carries_a_request_time_that_is_a_moment():
    # 10**17 ms passed on made the answer's respond_time raise where it was read (a review, session 35).
    from yidi.contracts.common import LATEST_TIMESTAMP_MS
    from yidi.contracts.internal import EligibleWork

    work = {"request": {"infno": "1101", "msgid": "H1100000000120261201103000000001", "mdtrtarea_admvs": "110000",
                        "inf_time": "2026-12-01 10:30:00", "fixmedins_code": "H11000000001",
                        "input": {"data": {"psn_no": "P1"}}, "insuplc_admdvs": "110000"},
            "request_hash": "h"}
    for ms in (0, LATEST_TIMESTAMP_MS - 1):
        assert EligibleWork.model_validate(work | {"request_ts_ms": ms}).request_ts_ms == ms
    for ms in (-1, LATEST_TIMESTAMP_MS, 10**17):
        with pytest.raises(ValueError):
            EligibleWork.model_validate(work | {"request_ts_ms": ms})


def test_a_person_record_dated_ahead_of_now_is_told_apart():
    from datetime import datetime, timedelta

    from yidi.contracts.refdata import PersonRecord
    from yidi.domain.codes import BUSINESS_TZ

    now = datetime(2026, 12, 3, 12, 0, tzinfo=BUSINESS_TZ)
    base = {"psn_no": "P1", "psn_name": "N", "insuplc_admdvs": "131000", "insutype": "310", "psn_type": "11"}
    at = lambda text: PersonRecord.model_validate(base | {"updated_at": text})  # noqa: E731
    assert at("2026-12-03T12:10:00").ahead_of(now, 900) is None  # within the tolerance
    assert at("").ahead_of(now, 900) is None
    assert at("2020-01-01").ahead_of(now, 900) is None
    # China time written with 'Z' reads 8 hours later: refused, not held for good.
    why = at("2026-12-03T12:00:00Z").ahead_of(now, 900)
    assert why is not None and "480 minutes ahead" in why
    assert at("2026-12-03T12:16:00+08:00").ahead_of(now - timedelta(0), 900) is not None


@pytest.mark.parametrize("code", ["１１００００", "١٣١٠٠٠", "11000", "1100000"])
def test_an_area_code_is_six_ascii_digits(code):
    # Python's and pydantic's \d take any script's digits: such a code was accepted and never matched.
    raw = we1()
    raw["mdtrtarea_admvs"] = code
    with pytest.raises(ValidationError, match="mdtrtarea_admvs"):
        RequestEnvelope.model_validate(raw)


@pytest.mark.parametrize("month", ["２０２５01", "202513", "20251"])
def test_a_month_is_ascii_digits(month):
    from yidi.contracts.clearing import RunMonth

    with pytest.raises(ValidationError, match="setlym"):
        RunMonth.model_validate({"type": "run_month", "reqid": "R1", "setlym": month})


def _totals(**changes) -> dict:
    return {"stmt_begndate": "2025-01-01", "stmt_enddate": "2025-01-31", "medfee_sumamt": "0.00",
            "fund_pay_sumamt": "0.00", "acct_pay": "0.00", "fixmedins_setl_cnt": 0} | changes


@pytest.mark.parametrize(("changes", "why"), [
    ({"stmt_begndate": "2025-02-01"}, "before stmt_begndate"),  # answered "totals match" over an empty period
    ({"stmt_begndate": "20250101"}, "yyyy-MM-dd"),  # read as seconds since 1970
    ({"stmt_enddate": 1735689600}, "yyyy-MM-dd"),
])
def test_a_reconciliation_period_is_two_dates_in_order(changes, why):
    from yidi.contracts.clearing import ReconcileTotalsInput

    with pytest.raises(ValidationError, match=why):
        ReconcileTotalsInput.model_validate(_totals(**changes))
    assert ReconcileTotalsInput.model_validate(_totals(stmt_enddate="2025-01-01")).stmt_enddate.day == 1


def test_a_3202_lists_each_settlement_once():
    # Two lines of one setl_id collapsed to the last, and "every settlement matches" hid the other.
    from yidi.contracts.clearing import ReconcileDetailsInput

    line = {"setl_id": "S1", "medfee_sumamt": "1.00", "fund_pay_sumamt": "0.00", "acct_pay": "0.00"}
    body = {"stmt_begndate": "2025-01-01", "stmt_enddate": "2025-01-01", "details": [line, line | {"medfee_sumamt": "2.00"}]}
    with pytest.raises(ValidationError, match="S1 is listed twice"):
        ReconcileDetailsInput.model_validate(body)


def _line(cnt: str, pric: str, amount: str) -> dict:
    raw = we1()
    data = raw["input"]["data"]
    data["feedetail"] = [data["feedetail"][0] | {"cnt": cnt, "pric": pric, "det_item_fee_sumamt": amount}]
    data["medfee_sumamt"] = amount
    return data


def test_a_unit_price_may_have_six_decimals_and_the_line_is_rounded_to_the_fen():
    # 30 tablets at 0.0125: the national interface carries pric as numeric(16, 6).
    body = SettlementInput.model_validate(_line("30", "0.0125", "0.38"))
    assert str(body.feedetail[0].pric) == "0.0125" and str(body.medfee_sumamt) == "0.38"
    assert SettlementInput.model_validate(_line("3", "1.333333", "4.00")).feedetail[0].pric == Decimal("1.333333")


@pytest.mark.parametrize("pric", ["0.0000001", "-1.00", "1e2", "１.00", "12345678901.00", 1.5])
def test_a_unit_price_is_a_plain_number_of_at_most_six_decimals(pric):
    with pytest.raises(ValidationError, match="unit price"):
        SettlementInput.model_validate(_line("1", pric, "1.00"))


def _bills_of_a_generated_day() -> list[dict]:
    from loadtest.generator import DayOptions, day_lines
    from loadtest.world import World

    world = World(persons=60, seed=5, run_id="BF")
    lines = day_lines(world, DayOptions(settlements=400, seed=5, pre_settlements=0.05, malformed=0.0))
    return [ln["request"]["input"]["data"] for ln in lines
            if "request" in ln and ln["request"]["infno"] in ("2206", "2207", "2303", "2304")]


class _NoModel:
    @staticmethod
    def model_validate(data):
        raise AssertionError("bill_fields fell back to the model")


@pytest.fixture
def direct_read_only(monkeypatch):
    """``bill_fields`` without its fall-back to the model: a body it cannot read directly raises."""
    import yidi.contracts.settlement as settlement

    monkeypatch.setattr(settlement, "SettlementInput", _NoModel)


def _exactly(fields: BillFields) -> tuple:
    """Every value with its type: Decimal('2') and Decimal('2.00') are equal but not the same."""
    def one(v):
        return type(v).__name__, repr(v)
    return (tuple(one(getattr(fields, f)) for f in ("psn_no", "insutype", "med_type", "mdtrt_id", "acct_used_flag",
                                                      "dise_codg"))
            + tuple(tuple(one(getattr(line, f)) for f in ("seq", "code", "name", "count", "price", "amount"))
                    for line in fields.lines))


def test_pricing_reads_a_validated_bill_as_the_model_does(direct_read_only):
    bodies = [we1()["input"]["data"], *_bills_of_a_generated_day()]
    assert len(bodies) > 300
    expected = [BillFields.of(SettlementInput.model_validate(data)) for data in bodies]
    for data, model in zip(bodies, expected, strict=True):
        assert _exactly(bill_fields(data)) == _exactly(model)


def test_pricing_reads_padding_defaults_and_whole_numbers_as_the_model_does(direct_read_only):
    data = we1()["input"]["data"]
    data["psn_no"] = "\u3000" + data["psn_no"] + " \t"  # an ideographic space is white space to both
    data["mdtrt_id"] = "\x1c" + data["mdtrt_id"]  # a separator is not: the model keeps it, so must pricing
    data.pop("acct_used_flag", None)
    data["dise_codg"] = " " + data["dise_codg"]
    line = data["feedetail"][0]
    line["hilist_code"] = " " + line["hilist_code"] + "\n"
    line.pop("hilist_name", None)
    line.update(cnt=2, pric="10", det_item_fee_sumamt=20)
    data["feedetail"] = [line]
    data["medfee_sumamt"] = "20.00"
    model = BillFields.of(SettlementInput.model_validate(data))
    read = bill_fields(data)
    assert _exactly(read) == _exactly(model)
    assert read.mdtrt_id.startswith("\x1c") and read.lines[0].amount == Decimal("20.00")


_AWKWARD = [None, True, False, 0, 1, 2, 310, 14, 1.0, 0.5, "", " ", "0", "1", "01", "1.0", "1.00", "1.0000", "0.0125",
            "32.52", "-1", "1e2", "\uff11", "310", "390", "11", "14", "21", " 1", "1 ", [], {}, ["x"], {"a": 1},
            "e11.900", "E11.900", "a1", "Xa10bfa013a001", "\u00e9"]
_PADDING = [" ", "\t", "\u3000", "\x1c", "\x1f", "\u200b", "\ufeff", "\xa0", "\x85", "\n", ""]


def test_a_damaged_bill_the_model_accepts_is_read_directly_as_the_model_reads_it(monkeypatch):
    """Random damage to WE1 (seeded): whatever the model accepts, the direct read gives the same
    values, type for type, without falling back. (What the model refuses, eligibility refuses.)"""
    import copy
    import random

    import orjson

    import yidi.contracts.settlement as settlement

    rnd = random.Random(16)
    base = we1()["input"]["data"]
    top = ["psn_no", "insutype", "med_type", "mdtrt_id", "acct_used_flag", "dise_codg", "medfee_sumamt", "feedetail"]
    per_line = ["feedetl_sn", "hilist_code", "hilist_name", "cnt", "pric", "det_item_fee_sumamt"]
    accepted = 0
    for _ in range(3000):
        data = copy.deepcopy(base)
        for _ in range(rnd.randint(1, 3)):
            target = data if rnd.random() < 0.5 else rnd.choice(data["feedetail"]) if isinstance(
                data.get("feedetail"), list) and data["feedetail"] and isinstance(data["feedetail"][0], dict) else data
            key = rnd.choice(top if target is data else per_line)
            roll = rnd.random()
            if roll < 0.2:
                target.pop(key, None)
            elif roll < 0.6 and isinstance(target.get(key), str):
                target[key] = rnd.choice(_PADDING) + target[key] + rnd.choice(_PADDING)
            else:
                target[key] = rnd.choice(_AWKWARD)
        data = orjson.loads(orjson.dumps(data))  # JSON's types only, as on the wire
        try:
            model = BillFields.of(SettlementInput.model_validate(data))
        except ValidationError:
            continue  # never reaches pricing: eligibility refuses it
        accepted += 1
        with monkeypatch.context() as m:  # read directly, without the fall-back
            m.setattr(settlement, "SettlementInput", _NoModel)
            assert _exactly(bill_fields(data)) == _exactly(model), data
    assert accepted > 300


def test_the_fields_pricing_reads_directly_are_the_models():
    """bill_fields copies how SettlementInput and FeeDetail read these fields: a change to either
    model must be looked at there (and this list updated with it)."""
    from yidi.contracts.settlement import FeeDetail

    def described(model):
        return {name: re.sub(r" at 0x[0-9a-f]+", "", repr((f.annotation, f.metadata, f.default)))
                for name, f in model.model_fields.items()}

    def checks(model):
        """The model's validators (what may change a value: none may be added unseen) and config."""
        decorators = model.__pydantic_decorators__
        return (sorted((name, repr(d.info)) for kind in ("field_validators", "model_validators")
                       for name, d in getattr(decorators, kind).items()),
                sorted((k, repr(v)) for k, v in model.model_config.items()))

    config = sorted((k, repr(v)) for k, v in {"extra": "ignore", "frozen": True, "populate_by_name": True,
                                                  "validate_by_alias": True, "validate_by_name": True}.items())
    assert checks(SettlementInput) == ([("_total_is_sum_of_details", "ModelValidatorDecoratorInfo(mode='after')")], config)
    assert checks(FeeDetail) == ([("_amount_is_count_times_price", "ModelValidatorDecoratorInfo(mode='after')")], config)

    assert set(described(SettlementInput)) == {
        "psn_no", "mdtrt_cert_type", "mdtrt_cert_no", "insutype", "med_type", "mdtrt_id", "begntime", "endtime",
        "dise_codg", "dise_name", "acct_used_flag", "medfee_sumamt", "feedetail"}
    assert set(described(FeeDetail)) == {"feedetl_sn", "hilist_code", "hilist_name", "cnt", "pric", "det_item_fee_sumamt"}
    read = {**{k: v for k, v in described(SettlementInput).items()
               if k in ("psn_no", "insutype", "med_type", "mdtrt_id", "acct_used_flag", "dise_codg")},
            **{f"feedetail.{k}": v for k, v in described(FeeDetail).items()}}
    assert hashlib.sha256(repr(sorted(read.items())).encode()).hexdigest()[:16] == PINNED_READ_FIELDS


# The description of the fields bill_fields reads (test above): when it changes, check bill_fields
# still reads them as the model does, then put the new digest here.
PINNED_READ_FIELDS = "30951219ec4b18c8"


@pytest.mark.parametrize("change", [
    lambda d: d.pop("feedetail"),
    lambda d: d.update(psn_no=12345),
    lambda d: d["feedetail"][0].update(cnt=1.5),
    lambda d: d.update(acct_used_flag=1),
])
def test_a_bill_pricing_cannot_read_directly_goes_through_the_model(change):
    data = we1()["input"]["data"]
    change(data)
    with pytest.raises(ValidationError):
        bill_fields(data)


def test_a_bill_the_model_reads_but_the_direct_read_cannot_is_priced_and_logged_once(monkeypatch, caplog):
    import yidi.contracts.settlement as settlement

    def drifted(value):
        raise ValueError("the model reads counts some new way")

    monkeypatch.setattr(settlement, "_quantity", drifted)
    monkeypatch.setattr(settlement, "_drift_logged", False)
    data = we1()["input"]["data"]
    with caplog.at_level("WARNING", logger="yidi.contracts.settlement"):
        assert bill_fields(data) == BillFields.of(SettlementInput.model_validate(data))
        bill_fields(data)
    assert [r.getMessage()[:59] for r in caplog.records] == [
        "bill_fields read a bill the model validates only through th"]


def test_answer_and_request_times_are_written_as_strftime_writes_them():
    """``respond_time`` (its text to the second made once a second) and ``wire_time`` give the text
    the plain ``strftime`` forms give, on random moments in order and out of order, in every zone."""
    import random
    from datetime import UTC, datetime, timedelta, timezone

    from yidi.contracts.common import INF_TIME_FORMAT, wire_time
    from yidi.contracts.envelope import respond_time, respond_time_ms
    from yidi.domain.codes import BUSINESS_TZ

    rng = random.Random(7)
    start = datetime(1900, 1, 1, tzinfo=UTC)
    moments = [start + timedelta(microseconds=rng.randrange(200 * 365 * 86_400 * 10**6)) for _ in range(3_000)]
    moments += [datetime(2026, 1, 1, 15, 59, 59, 999_999, tzinfo=UTC) + timedelta(microseconds=step) for step in range(0, 3_000, 7)]
    moments += [m.replace(tzinfo=None) for m in moments[:500]]  # naive: UTC
    moments += [m.astimezone(timezone(timedelta(hours=rng.randrange(-12, 14), minutes=rng.choice((0, 30, 45)))))
                for m in moments[:500]]
    for moment in moments:
        aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        assert respond_time(moment) == aware.astimezone(BUSINESS_TZ).strftime("%Y%m%d%H%M%S%f")[:17], moment
        assert wire_time(moment) == moment.strftime(INF_TIME_FORMAT), moment
    # A record's Kafka timestamp, as replies read it before: through a float of seconds.
    for ms in [rng.randrange(-10**12, 4 * 10**12) for _ in range(3_000)] + list(range(1_767_225_599_990, 1_767_225_600_010)):
        expected = datetime.fromtimestamp(ms / 1000, UTC).astimezone(BUSINESS_TZ).strftime("%Y%m%d%H%M%S%f")[:17]
        assert respond_time_ms(ms) == expected, ms
    assert respond_time_ms(1_767_225_600_123.0) == respond_time_ms(1_767_225_600_123) == "20260101080000123"


def test_a_3201s_filters_are_read_as_codes_are_and_empty_means_all():
    from yidi.contracts.clearing import ReconcileTotalsInput

    totals = {"stmt_begndate": "2025-01-01", "stmt_enddate": "2025-01-01", "medfee_sumamt": "1.00",
              "fund_pay_sumamt": "0.00", "acct_pay": "0.00", "fixmedins_setl_cnt": 1}
    padded = ReconcileTotalsInput.model_validate(totals | {"clr_type": "21 ", "setl_optins": " 131000",
                                                           "insutype": "310"})
    assert padded.filters() == {"insutype": "310", "clr_type": "21", "setl_optins": "131000"}
    for blank in ("", "  ", None):
        assert ReconcileTotalsInput.model_validate(
            totals | {"clr_type": blank, "setl_optins": blank, "insutype": blank}).filters() == {}


def test_a_msgid_begins_with_its_facilitys_code():
    # The idempotency key across every facility (CONTRACT.md): facility B's "0001" was answered
    # MODIFIED_REQUEST for facility A's settlement, and B could block A's by sending its msgid first.
    import copy
    import json
    from pathlib import Path

    from pydantic import ValidationError

    from yidi.contracts.envelope import RequestEnvelope

    we1 = json.loads((Path(__file__).resolve().parents[3] / "shared" / "examples" / "we1" / "request.json").read_text())
    assert RequestEnvelope.model_validate(we1).msgid.startswith(we1["fixmedins_code"])
    for msgid in ("0001", "H99999999999" + we1["msgid"][12:], we1["msgid"][1:]):
        with pytest.raises(ValidationError, match="does not begin with fixmedins_code"):
            RequestEnvelope.model_validate(copy.deepcopy(we1) | {"msgid": msgid})


@pytest.mark.parametrize("credential", [
    {},
    {"mdtrt_cert_type": "", "mdtrt_cert_no": ""},  # fields a gateway does not use, sent blank
    {"mdtrt_cert_type": "04", "mdtrt_cert_no": "X" * 100},
    {"mdtrt_cert_type": None, "mdtrt_cert_no": None},
    {"mdtrt_cert_type": "02", "mdtrt_cert_no": "97010219700101002X"},
])
def test_a_person_query_takes_whatever_credential_is_sent(credential):
    """1101 does not use the credential and 2001 checks only an identity card's number (R2): a
    person query is never refused for it, as it was not before 2001 read it."""
    from yidi.contracts.settlement import PersonQueryInput

    body = PersonQueryInput.model_validate({"psn_no": "P1", "insutype": "310", "med_type": "11"} | credential)
    assert (body.mdtrt_cert_type, body.mdtrt_cert_no) == (credential.get("mdtrt_cert_type"),
                                                          credential.get("mdtrt_cert_no"))


@pytest.mark.parametrize("text", ["\uff12\uff10\uff12\uff12-07-01 10:30:00", "\u0662\u0660\u0662\u0662-07-01 10:30:00",
                                  "2022-07-01\n10:30:00", "2022-07-01   10:30:00", "2022-07- 1 10:30:00"])
def test_an_inf_time_is_ascii_digits_and_one_space(text):
    # strptime read other scripts' digits and any run of white space (a review, session 37): the
    # contract's time is yyyy-MM-dd HH:mm:ss in ASCII. The unpadded form settled before stays taken.
    from yidi.contracts.common import _inf_time, _stay_time

    with pytest.raises(ValueError, match="is not a time of the form yyyy-MM-dd HH:mm:ss"):
        _inf_time(text)
    with pytest.raises(ValueError):
        _stay_time(text)
    assert _inf_time("2022-7-1 1:1:1") == datetime(2022, 7, 1, 1, 1, 1)


def test_a_stay_given_as_a_day_before_1900_is_refused_as_a_time_before_1900_is():
    # "0001-01-01" was taken as a begntime, "0001-01-01 00:00:00" refused (a review, session 37).
    from yidi.contracts.common import _stay_time

    for text in ("0001-01-01", "1899-12-31", "1899-12-31 23:59:59"):
        with pytest.raises(ValueError, match="before 1900"):
            _stay_time(text)
    assert _stay_time("1900-01-01") == datetime(1900, 1, 1)


def test_a_malformed_messages_explanation_names_fields_not_values_and_counts_what_it_leaves_out():
    from pydantic import BaseModel

    from yidi.contracts.common import explain

    class Seven(BaseModel):
        a: int
        b: int
        c: int
        d: int
        e: int
        f: int
        g: int

    with pytest.raises(ValidationError) as refused:
        Seven.model_validate({k: "secret-110101199003077731" for k in "abcdefg"})
    said = explain(refused.value)
    assert said.startswith("a: Input should be a valid integer, unable to parse string as an integer; b: ")
    assert said.endswith("; and 2 more") and said.count("Input should be") == 5
    assert "secret" not in said
    assert explain(ValueError("a plain reason")) == "ValueError: a plain reason"


def test_a_stored_answer_sent_again_for_a_resend_is_not_dated_before_the_resend():
    # A settled request resent later gets its stored answer, its refmsg_time the resend's: its
    # respond_time, kept from the first answer, said it was made before the request came (a
    # review, session 46). A first answer keeps the time it was built.
    from yidi.contracts.envelope import respond_time_ms
    from yidi.platform.replies import reply
    from yidi.platform.settings import Settings

    settings = Settings(namespace="ns.")
    first_ms, resent_ms = 1_700_000_000_000, 1_700_086_400_000
    stored = {"infcode": 0, "inf_refmsgid": "YD1", "refmsg_time": respond_time_ms(first_ms),
              "respond_time": respond_time_ms(first_ms + 5), "msgid": "M1", "infno": "2207", "err_code": None,
              "err_msg": "", "output": {}}
    again = orjson.loads(reply(settings, "gw.results", stored, facility="H1", request_ts_ms=resent_ms).value)
    assert again["refmsg_time"] == respond_time_ms(resent_ms)
    assert again["respond_time"] >= again["refmsg_time"] and again["inf_refmsgid"] == "YD1"
    assert again["respond_time"] <= respond_time_ms(time.time_ns() // 1_000_000)
    first = orjson.loads(reply(settings, "gw.results", stored, facility="H1", request_ts_ms=first_ms).value)
    assert first == stored
    model = ResponseEnvelope.model_validate(stored)
    again = orjson.loads(reply(settings, "gw.results", model, facility="H1", request_ts_ms=resent_ms).value)
    assert again["respond_time"] >= again["refmsg_time"] == respond_time_ms(resent_ms)
