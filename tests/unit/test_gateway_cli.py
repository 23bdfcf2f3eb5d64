"""The gateway CLI's one-line summaries, as a cashier or a clerk reads them."""

import json
from pathlib import Path

from yidi.client.cli import read_requests, summarise


def test_a_settlement_answer_reads_as_who_pays_what():
    request = {"fixmedins_code": "H1", "input": {"data": {"psn_no": "P1"}}}
    answer = {"infno": "2207", "infcode": 0, "output": {"setlinfo": {
        "medfee_sumamt": "64.29", "fund_pay_sumamt": "48.89", "hifp_pay": "48.89", "pool_prop_selfpay": "0.80",
        "acct_pay": "0.00", "psn_cash_pay": "15.40", "setl_id": "S1"}}}
    assert summarise(request, answer) == (
        "2207 P1 at H1: total 64.29, funds pay 48.89 (pooled 48.89 at ratio 0.80), account 0.00, cash 15.40  [S1]"
    )


def test_a_refusal_reads_with_its_code_and_sentence():
    answer = {"infno": "2207", "infcode": -1, "err_code": "NOT_FILED", "err_msg": "No valid filing."}
    assert summarise({"input": {"data": {"psn_no": "P1"}}, "fixmedins_code": "H1"}, answer).endswith(
        "REFUSED NOT_FILED: No valid filing."
    )


def test_a_clearing_result_reads_as_its_request_and_verdict():
    line = summarise({"type": "fund"}, {"reqid": "R1", "ok": False, "reason": "reqid R1 was already used"})
    assert line == "fund R1: REFUSED: reqid R1 was already used {}"


def test_request_files_hold_one_object_a_list_or_json_lines(tmp_path: Path):
    (tmp_path / "one.json").write_text(json.dumps({"msgid": "a"}))
    (tmp_path / "list.json").write_text(json.dumps([{"msgid": "b"}, {"msgid": "c"}]))
    (tmp_path / "lines.jsonl").write_text('{"msgid": "d"}\n{"msgid": "e"}\n')
    files = [str(tmp_path / n) for n in ("one.json", "list.json", "lines.jsonl")]
    assert [r["msgid"] for r in read_requests(files)] == ["a", "b", "c", "d", "e"]


def test_requests_are_keyed_as_the_topics_document_says():
    from yidi.client.gateway import request_key

    assert request_key({"msgid": "M1", "input": {"data": {"psn_no": "P1"}}}) == "P1"  # settlement.requests
    assert request_key({"msgid": "M1", "infno": "3201", "input": {"data": {}}}) is None  # no person: null key
    assert request_key({"reqid": "F1", "psn_no": "P2"}, "reqid") == "P2"  # filing.requests
    assert request_key({"reqid": "C1", "type": "fund"}, "reqid") == "C1"  # clearing.requests: it had no key


def test_a_filing_accepted_not_quite_as_asked_says_what_changed():
    line = summarise({"action": "add"}, {"reqid": "R2", "accepted": True, "note": "enddate 2030-01-01 was not kept (R7)"})
    assert line.startswith("add R2: ok (enddate 2030-01-01 was not kept (R7))")


def test_a_filing_history_reads_as_its_versions():
    line = summarise({"action": "history"}, {"reqid": "R3", "accepted": True, "history": [{"version": 1, "action": "add"}]})
    assert line == 'history R3: ok {"history": [{"version": 1, "action": "add"}]}'
