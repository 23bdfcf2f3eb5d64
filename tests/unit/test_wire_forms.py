"""Answers built directly in wire form equal what their pydantic models would give.

The settlement path builds its answers as dicts (contracts/answers.py) instead of model → dump:
the models stay the schema, and these tests hold the two together, field for field and in order.
tests/integration/test_wire_forms.py does the same for every message the stages pass on.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from yidi.contracts import answers
from yidi.contracts.envelope import ErrCode, ResponseEnvelope
from yidi.contracts.settlement import SettlementOutput
from yidi.domain.codes import MedType
from yidi.domain.pricing import price

from tests.unit.factories import bill, catalogue, item, policy, rule, terms, we1_catalogue, we1_policy

NOW = datetime(2026, 3, 18, 9, 30, 1, 123456, tzinfo=UTC)


def _same(built: dict, model_type) -> None:
    dumped = model_type.model_validate(built).model_dump(mode="json")
    assert dumped == built
    assert list(dumped) == list(built)  # the same field order, so the bytes match too
    assert orjson.dumps(dumped) == orjson.dumps(built)


def test_answer_wire_is_the_envelope_answer_builds():
    for kwargs in ({"output": {"x": "1.00"}}, {"err_code": ErrCode.NOT_FILED, "err_msg": "no filing"}, {}):
        built = answers.answer_wire("M1", "2207", now=NOW, **kwargs)
        _same(built, ResponseEnvelope)
        assert built == answers.answer("M1", "2207", now=NOW, **kwargs).model_dump(mode="json")


def _output(pricing, med_type="14"):
    return answers.settlement_output(
        pricing, setl_id="S1", mdtrt_id="V1", psn_no="P1", psn_name="Zhang San", insutype="310", psn_type="11",
        med_type=med_type, setl_time="2026-03-18 09:30:01", clr_optins="131000",
    )


def test_settlement_output_of_we1_is_the_model_dump():
    pricing = price(bill(("XA10BFA013A001", "1", "32.52"), ("XA10BXR018A001", "1", "31.77")),
                    we1_catalogue(), we1_policy(), terms(), {})
    built = _output(pricing)
    _same(built, SettlementOutput)
    info = built["setlinfo"]
    assert (info["hifp_pay"], info["psn_cash_pay"], info["pool_prop_selfpay"]) == ("48.89", "15.40", "0.80")
    assert built["feedetail"][1]["preselfpay_amt"] == "3.18"


def test_settlement_output_with_unlisted_items_ceilings_and_no_fund_is_the_model_dump():
    # An unlisted item (no charge class, no ceiling) and a capped one; a deductible the bill does
    # not reach, so no fund pays and the limits are absent.
    cat = catalogue(item("C1", ceiling="10.00"))
    pricing = price(bill(("C1", "2", "12.00"), ("UNLISTED", "1", "5.50")), cat,
                    policy(rule(MedType.GENERAL_OUTPATIENT, deductible="900")), terms(MedType.GENERAL_OUTPATIENT), {})
    built = _output(pricing, "11")
    _same(built, SettlementOutput)
    assert built["feedetail"][1]["chrgitm_lv"] == "03" and built["feedetail"][1]["pric_uplmt_amt"] is None
    assert built["setlinfo"]["clr_type"] == "11"
