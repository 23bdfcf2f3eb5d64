"""The gateway CLI's one-line summaries, as a cashier or a clerk reads them; what it says and waits
for when a publish fails; its fresh msgids."""

import asyncio
import json
import os
import re
from pathlib import Path
from unittest import mock

import pytest
from aiokafka.errors import KafkaError

from yidi.client import cli
from yidi.client.cli import read_requests, summarise
from yidi.client.gateway import GatewayClient, PublishTimeout


def test_a_settlement_answer_reads_as_who_pays_what():
    request = {"fixmedins_code": "H1", "input": {"data": {"psn_no": "P1"}}}
    answer = {"infno": "2207", "infcode": 0, "output": {"setlinfo": {
        "medfee_sumamt": "64.29", "fund_pay_sumamt": "48.89", "hifp_pay": "48.89", "pool_prop_selfpay": "0.80",
        "acct_pay": "0.00", "psn_cash_pay": "15.40", "setl_id": "S1"}}}
    assert summarise(request, answer) == (
        "2207 P1 at H1: total 64.29, funds pay 48.89 (pooled 48.89 at ratio 0.80), account 0.00, cash 15.40  [S1]"
    )


def test_a_year_so_far_reads_as_what_is_left_of_each_limit():
    request = {"fixmedins_code": "H1", "input": {"data": {"psn_no": "P1"}}}
    line = {"bucket": "", "fund_pay_type": "", "used_at_home": "0.00"}
    answer = {"infno": "5206", "infcode": 0, "output": {"cuminfo": {"year": 2026}, "cumoutput": [
        line | {"cum_type_code": "deductible", "bucket": "op", "limit": "300.00", "used": "250.00", "left": "50.00",
                "used_at_home": "200.00"},
        line | {"cum_type_code": "deductible", "bucket": "old", "limit": None, "used": "20.00", "left": None},
        line | {"cum_type_code": "layer_cap", "fund_pay_type": "330100", "limit": "30.00", "used": "0.00", "left": "30.00"},
        line | {"cum_type_code": "account", "limit": "100.00", "used": "30.00", "left": "70.00"}]}}
    assert summarise(request, answer) == (
        "5206 P1 at H1: year 2026: deductible op used 250.00 (200.00 at home) of 300.00, left 50.00; deductible old used 20.00; "
        "layer_cap 330100 used 0.00 of 30.00, left 30.00; account used 30.00 of 100.00, left 70.00"
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


def test_fresh_msgids_of_two_runs_started_in_one_second_differ():
    # The 4 digits were (pid + seq) % 10000: runs with pids 41000 and 41002, three requests each,
    # started in one second, both sent ...1002 (a review, session 36). Now each process draws its
    # start at random (here 1000 and 5000) and counts up from it.
    request = {"fixmedins_code": "H11010500001"}
    real = cli.datetime
    runs = []
    with mock.patch.object(cli, "datetime") as clock:
        clock.now.return_value = real(2026, 3, 18, 9, 0, 0)
        for pid, drawn in ((41000, 1000), (41002, 5000)):  # two processes
            with mock.patch.object(cli, "_msgid_start", None, create=True), \
                    mock.patch.object(os, "getpid", return_value=pid), \
                    mock.patch("secrets.randbelow", return_value=drawn):
                runs.append([cli.fresh_msgid(request, i) for i in range(3)])
    first, second = runs
    assert not set(first) & set(second)
    assert all(re.fullmatch(r"H11010500001" r"20260318090000" r"\d{4}", m) for m in first + second)  # the contract's
    assert [int(m[-4:]) for m in first] == [1000, 1001, 1002]


def test_fresh_msgids_are_stamped_with_china_time_whatever_the_hosts_zone():
    # datetime.now() is the host's zone: on a UTC host the msgid's time was 8 hours behind the
    # facility clock CONTRACT.md describes (a review, session 37).
    from datetime import UTC

    real = cli.datetime
    with mock.patch.object(cli, "datetime") as clock, mock.patch.object(cli, "_msgid_start", 0, create=True):
        clock.now.side_effect = lambda tz=None: real(2026, 12, 31, 16, 30, tzinfo=UTC).astimezone(tz)
        msgid = cli.fresh_msgid({"fixmedins_code": "H11010500001"}, 0)
    # 16:30 UTC on 31 December is 00:30 on 1 January in China.
    assert msgid == "H11010500001" "20270101003000" "0000"


def _bills(tmp_path: Path, count: int) -> list[str]:
    paths = []
    for i in range(count):
        path = tmp_path / f"r{i}.json"
        path.write_text(json.dumps({"infno": "2207", "msgid": f"H1101050000120260318090000{i:04d}",
                                    "fixmedins_code": "H11010500001",
                                    "input": {"data": {"psn_no": f"P{i}", "mdtrt_id": "V", "feedetail": []}}}))
        paths.append(str(path))
    return paths


class _Offline(GatewayClient):
    """A client that reaches no broker: a test's subclass publishes by its own ``_publish``."""

    async def start(self):
        self._producer = object()

    async def stop(self):
        pass


@pytest.mark.parametrize(("error", "code"), [(PublishTimeout("Kafka did not acknowledge it"), 2),
                                             (KafkaError("message too large"), 4)])
def test_a_publish_failing_part_way_still_reports_and_answers_what_was_published(tmp_path, capsys, error, code):
    # The CLI exited at the failure: the answers to the requests already published (maybe settled)
    # were not waited for, and with --new-msgid their msgids were printed nowhere, so a re-run
    # settled them a second time (a review, session 36).
    published: list[str] = []

    class Fake(_Offline):
        async def _publish(self, value, correlation, fut, *, key, timestamp_ms=None):
            if len(published) == 2:
                raise error
            published.append(json.loads(value)["msgid"])
            asyncio.get_running_loop().call_later(0.01, fut.set_result, {"msgid": correlation, "infcode": 0})

    with mock.patch.object(cli, "GatewayClient", Fake), pytest.raises(SystemExit) as exited:
        cli.main(["--compact", "send", "--new-msgid", *_bills(tmp_path, 4)])
    out = capsys.readouterr()
    assert exited.value.code == code
    assert [json.loads(line)["msgid"] for line in out.out.splitlines()] == published  # their answers
    assert all(f"published {m} (request {n} of 4" in out.err for n, m in enumerate(published, 1))
    assert f"2 of 4 requests published before the failure: {published[0]} {published[1]}" in out.err


def test_a_second_answer_that_differs_from_the_first_is_warned_of(tmp_path, capsys):
    # Only the first answer was printed: a second one to the same msgid (another setl_id,
    # ALREADY_UNDONE) went unreported (a review, session 36).
    class Fake(_Offline):
        async def _publish(self, value, correlation, fut, *, key, timestamp_ms=None):
            answer = {"msgid": correlation, "infcode": 0, "respond_time": "2026-03-18 09:00:00",
                      "output": {"setlinfo": {"setl_id": "S1"}}}
            again = answer | {"respond_time": "2026-03-18 09:00:01"}  # the same answer, later: no warning
            if correlation.endswith("0"):
                again["output"] = {"setlinfo": {"setl_id": "S2"}}
            for each in (answer, again):
                self.on_answer(each, 0)
            fut.set_result(answer)

    with mock.patch.object(cli, "GatewayClient", Fake), pytest.raises(SystemExit) as exited:
        cli.main(["--compact", "send", *_bills(tmp_path, 2)])
    err = capsys.readouterr().err
    assert exited.value.code == 0
    warnings = [line for line in err.splitlines() if "differs from the first" in line]
    assert len(warnings) == 1 and "H11010500001202603180900000000" in warnings[0] and "S2" in warnings[0]


def test_an_answer_that_cannot_be_read_is_said_and_exits_1_not_as_a_timeout(tmp_path, capsys):
    # Dropped by the client, its request timed out: exit 3, "are the services running?" (left in
    # session 36). The client now fails it with the bytes; the others are printed as ever.
    class Fake(_Offline):
        async def _publish(self, value, correlation, fut, *, key, timestamp_ms=None):
            raw = (b'{"msgid": "%s", "infcode": 0, "outp' % correlation.encode() if correlation.endswith("0")
                   else json.dumps({"msgid": correlation, "infcode": 0}).encode())
            asyncio.get_running_loop().call_later(0.01, self._on_record, raw, 0)

    with mock.patch.object(cli, "GatewayClient", Fake), pytest.raises(SystemExit) as exited:
        cli.main(["--compact", "--timeout", "5", "send", *_bills(tmp_path, 2)])
    out = capsys.readouterr()
    assert exited.value.code == 1
    assert "the answer to msgid H11010500001202603180900000000 " in out.err and "is not a JSON object" in out.err
    assert "no answer" not in out.err
    assert [json.loads(line)["msgid"] for line in out.out.splitlines()] == ["H11010500001202603180900000001"]
