"""Metric labels take bounded values: an infno the platform does not offer, which a gateway can
send at will (answered UNSUPPORTED, or read from a request that did not parse), is labelled
"other", so it cannot add series to the answers and latency metrics."""

from __future__ import annotations

from yidi.contracts import answers
from yidi.contracts.envelope import ErrCode
from yidi.platform.replies import recover_word, reply
from yidi.platform.settings import Settings

S = Settings(namespace="t1.")


def test_an_offered_infno_is_its_own_label():
    out = reply(S, "settlement.results", answers.answer("H1", "2207", {}), facility="H", request_ts_ms=1)
    assert out.answered is not None and (out.answered.infno, out.answered.err_code) == ("2207", "ok")


def test_an_infno_the_platform_does_not_offer_is_labelled_other():
    unsupported = answers.answer("H1", "7391", err_code=ErrCode.UNSUPPORTED, err_msg="not offered")
    out = reply(S, "settlement.results", unsupported, facility="H", request_ts_ms=1)
    assert out.answered is not None and (out.answered.infno, out.answered.err_code) == ("other", "UNSUPPORTED")
    assert b'"infno":"7391"' in out.value  # the gateway still gets its own code back


def test_a_stored_answer_with_an_unknown_or_missing_infno_is_labelled_other():
    for stored in ({"msgid": "H1", "infno": "9999", "err_code": "INVALID_INPUT"}, {"msgid": "H1"}):
        out = reply(S, "settlement.results", stored, facility="H", request_ts_ms=1)
        assert out.answered is not None and out.answered.infno == "other"


def test_a_word_read_from_a_request_that_did_not_validate_is_a_label_only_when_the_platform_knows_it():
    known = frozenset({"fund", "run_month"})
    assert recover_word(b'{"reqid": "R1", "type" : "run_month", "setlym": 13}', "type", known) == "run_month"
    assert recover_word(b'{"reqid": "R1", "type": "teleport"}', "type", known) == "unknown"
    assert recover_word(b'{"reqid": "R1", "kind": "fund"}', "type", known) == "unknown"
    assert recover_word(b'not json "action": "fund"', "action", known) == "fund"
