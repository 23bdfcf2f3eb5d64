"""The e2e tests' check of answers against the published schemas (tests/answer_schemas.py) takes
what the services write and refuses what a gateway generating its client from docs/schemas would."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

from yidi.contracts import answers
from yidi.contracts.envelope import ErrCode
from yidi.domain.pricing import price

from tests.answer_schemas import AnswerSchemas
from tests.unit.factories import bill, terms, we1_catalogue, we1_policy

NOW = datetime(2026, 3, 18, 9, 30, 1, tzinfo=UTC)


def _we1_answer() -> dict:
    pricing = price(bill(("XA10BFA013A001", "1", "32.52"), ("XA10BXR018A001", "1", "31.77")),
                    we1_catalogue(), we1_policy(), terms(), {})
    output = answers.settlement_output(
        pricing, setl_id="S1", mdtrt_id="V1", psn_no="P1", psn_name="Zhang San", insutype="310", psn_type="11",
        med_type="11", setl_time="2026-03-18 09:30:01", clr_optins="131000",
    )
    return answers.answer_wire("H11010500001202603180930010001", "2207", output, now=NOW)


def _problems(answer: dict, envelope: str = "ResponseEnvelope") -> list[str]:
    check = AnswerSchemas(envelope)
    check(answer, 0)
    return check.problems


def test_what_the_services_write_passes():
    assert _problems(_we1_answer()) == []
    refusal = answers.answer_wire("M1", "2207", err_code=ErrCode.NOT_FILED, err_msg="no filing", now=NOW)
    assert _problems(refusal) == []
    undo = answers.answer_wire("M2", "2208", {"setlinfo": {"setl_id": "S1", "psn_no": "P1", "state": "cancelled",
                                                           "undone_by": "M2"}}, now=NOW)
    assert _problems(undo) == []
    check = answers.answer_wire("M3", "2001", {"eligible": "0", "reason_code": "NOT_FILED", "reason": "no filing"}, now=NOW)
    assert _problems(check) == []


def test_a_missing_field_a_wrong_type_or_a_stray_output_fails():
    missing = _we1_answer()
    del missing["output"]["setlinfo"]["oth_pay"]  # optional in the model, always written: required
    assert any("'oth_pay' is a required property" in p for p in _problems(missing))

    float_amount = _we1_answer()
    float_amount["output"]["setlinfo"]["hifp_pay"] = 48.89
    assert _problems(float_amount)

    no_envelope_field = _we1_answer()
    del no_envelope_field["err_code"]
    assert any("'err_code' is a required property" in p for p in _problems(no_envelope_field))

    failure_with_output = answers.answer_wire("M1", "2207", {"setlinfo": {}}, err_code=ErrCode.NOT_FILED,
                                              err_msg="x", now=NOW)
    assert any("a failure's output is {}" in p for p in _problems(failure_with_output))

    bad_undo = answers.answer_wire("M2", "2601", {"setlinfo": {"setl_id": "S1", "psn_no": "P1", "state": "settled",
                                                               "undone_by": "M2"}}, now=NOW)
    assert _problems(bad_undo)

    unknown = answers.answer_wire("M4", "9999", {"x": 1}, now=NOW)
    assert any("no output schema" in p for p in _problems(unknown))


def test_a_filing_result_is_checked_against_its_own_schema():
    problems = _problems({"reqid": "R1", "ok": True}, envelope="FilingResult")
    assert problems and all("FilingResult.json" in p for p in problems)


def test_each_of_two_output_models_is_tried():
    eligible = answers.answer_wire("M3", "2001", {"eligible": "1", "basis": "filed", "filing_id": "F1",
                                                  "filing_category": "referral"}, now=NOW)
    assert _problems(eligible) == []
    half = copy.deepcopy(eligible)
    half["output"]["reason"] = "x"
    del half["output"]["basis"]  # neither model takes it
    assert _problems(half)
