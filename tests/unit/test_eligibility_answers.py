"""Eligibility's own answers (1101, 2001) on fakes of its reads (no servers)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import orjson
import pytest

from services.eligibility.handlers import EligibilityHandler
from tests.unit.factories import WE1_FILING, WE1_PERSON, WE1_PSN_NO
from yidi.contracts.refdata import FacilityRecord
from yidi.platform.kafka import Incoming
from yidi.platform.settings import Settings

WE1 = json.loads((Path(__file__).resolve().parents[3] / "shared" / "examples" / "we1" / "request.json").read_text())
PSN = WE1["input"]["data"]["psn_no"]
PERSON, FILING = WE1_PERSON, WE1_FILING
assert PSN == WE1_PSN_NO and (PERSON["insuplc_admdvs"], FILING["filed_admdvs"]) == (WE1["insuplc_admdvs"], WE1["mdtrtarea_admvs"])
# The WE1 facility, networked for general and chronic outpatient care only.
OUTPATIENT_ONLY = FacilityRecord(fixmedins_code=WE1["fixmedins_code"], fixmedins_name="x", admdvs=WE1["mdtrtarea_admvs"],
                                 level=3, med_types=["11", "14"])


class Subjects:
    async def get_many(self, psn_nos):
        return {p: {"person": PERSON, "filings": [FILING]} for p in psn_nos if p == PSN}


class Repo:
    async def facilities(self, codes):
        return {c: OUTPATIENT_ONLY for c in codes if c == OUTPATIENT_ONLY.fixmedins_code}

    async def outages(self, regions, now):
        return []


async def benefit_check(**changes) -> dict:
    request = copy.deepcopy(WE1) | {"infno": "2001"}
    data = {"psn_no": PSN, "insutype": "310", "med_type": changes.pop("med_type", "14"), "dise_codg": "E11.900"}
    request["input"] = {"data": data}
    request.update(changes)
    handler = EligibilityHandler(Settings(namespace="t."), repo=Repo(), subjects=Subjects())  # type: ignore[arg-type]
    (out,) = await handler([Incoming("t.settlement.requests", 0, 1, b"k", orjson.dumps(request), 0)])
    return orjson.loads(out.value)


async def test_a_benefit_check_is_answered_for_the_visit():
    answer = await benefit_check()
    assert (answer["infcode"], answer["output"]["eligible"]) == (0, "1")


async def test_care_the_facility_is_not_networked_for_is_the_visits_answer_not_a_failure():
    answer = await benefit_check(med_type="21")
    assert (answer["infcode"], answer["output"]["eligible"], answer["output"]["reason_code"]) == (0, "0", "UNKNOWN_FACILITY")


@pytest.mark.parametrize("changes", [{"fixmedins_code": "H99999999999", "msgid": "H99999999999202207011030000001"},
                                     {"mdtrtarea_admvs": "310000"}])
async def test_a_facility_the_region_does_not_know_fails_as_1101_does(changes):
    answer = await benefit_check(**changes)
    assert (answer["infcode"], answer["err_code"]) == (-1, "UNKNOWN_FACILITY") and not answer["output"]


@pytest.mark.parametrize("infno", ["2001", "1101"])
async def test_a_facility_whose_designation_was_withdrawn_fails_as_an_unknown_one(monkeypatch, infno):
    # Published again with med_types [] (a delete is dead-lettered): its settlements were refused,
    # but 1101 still answered a person's identity and balance to it (a review, session 48).
    withdrawn = OUTPATIENT_ONLY.model_copy(update={"med_types": []})
    monkeypatch.setattr(Repo, "facilities", lambda self, codes: _facilities(codes, withdrawn))
    if infno == "1101":
        request = copy.deepcopy(WE1) | {"infno": "1101", "input": {"data": {"psn_no": PSN, "mdtrt_cert_type": "02",
                                                                             "mdtrt_cert_no": PSN}}}
        handler = EligibilityHandler(Settings(namespace="t."), repo=Repo(), subjects=Subjects())  # type: ignore[arg-type]
        (out,) = await handler([Incoming("t.settlement.requests", 0, 1, b"k", orjson.dumps(request), 0)])
        answer = orjson.loads(out.value)
    else:
        answer = await benefit_check()
    assert (answer["infcode"], answer["err_code"]) == (-1, "UNKNOWN_FACILITY"), answer


async def _facilities(codes, facility):
    return {c: facility for c in codes if c == facility.fixmedins_code}


async def test_a_chronic_benefit_check_names_the_disease():
    request = copy.deepcopy(WE1) | {"infno": "2001"}
    request["input"] = {"data": {"psn_no": PSN, "insutype": "310", "med_type": "14", "dise_codg": " "}}
    handler = EligibilityHandler(Settings(namespace="t."), repo=Repo(), subjects=Subjects())  # type: ignore[arg-type]
    out = await handler([Incoming("t.settlement.requests", 0, 1, b"k", orjson.dumps(request), 0)])
    (answer,) = [orjson.loads(o.value) for o in out if o.answered]
    assert answer["err_code"] == "INVALID_INPUT" and "dise_codg is required for med_type 14" in answer["err_msg"]


async def test_an_insurance_kept_from_before_that_this_version_cannot_read_leaves_the_insurance_now(caplog):
    """The insurance kept from before a change is read only when the one held now is not the one the
    request names, and one this version cannot read (a newer version's, after a downgrade) judges by
    the insurance now, said without the record's values; it was an INTERNAL_ERROR, with a
    traceback quoting the person's name and identity card number."""
    stopped = PERSON | {"active": False, "certno": "110101199003077731"}
    unreadable = {"record": stopped | {"active": True, "psn_type": "new-kind"}, "since": None,
                  "until": "2026-11-20T09:00:00+08:00"}

    class Kept(Subjects):
        async def get_many(self, psn_nos):
            return {p: {"person": stopped, "filings": [FILING], "before": unreadable} for p in psn_nos if p == PSN}

    request = copy.deepcopy(WE1) | {"infno": "2001"}
    request["input"] = {"data": {"psn_no": PSN, "insutype": "310", "med_type": "11"}}
    handler = EligibilityHandler(Settings(namespace="t."), repo=Repo(), subjects=Kept())  # type: ignore[arg-type]
    (out,) = await handler([Incoming("t.settlement.requests", 0, 1, b"k", orjson.dumps(request), 0)])
    answer = orjson.loads(out.value)
    assert (answer["infcode"], answer["output"]["eligible"], answer["output"]["reason_code"]) == (0, "0", "NOT_INSURED")
    said = [r.getMessage() for r in caplog.records]
    assert any("cannot be read by this version (psn_type:" in m for m in said), said
    assert not any("110101199003077731" in m or "Wang" in m for m in said), said


@pytest.mark.parametrize(("now", "counted"), [
    # Stopped (same region and fund): what the insurance paid at home is as the region restates it.
    ({"active": False}, {"2022": {"pooled_paid": "4800.00", "deductible:ip": "500.00"}}),
    # Moved to another region: the old insurance's last record's (the new region's is another fund's).
    ({"insuplc_admdvs": "132000"}, {"2022": {"pooled_paid": "4000.00"}}),
])
async def test_a_stay_under_the_insurance_held_at_admission_counts_what_that_insurance_paid_at_home(now, counted):
    # The insurance before the change stated 4,000 paid at home; the record now states 4,800 and a
    # deductible met. A stay admitted before the change is priced under the insurance held then: the
    # stopped insurance's usage went on being restated (a frozen copy let the fund pay past its cap).
    held = PERSON | {"home_usage": [{"year": 2022, "pooled_paid": "4000.00"}]}
    current = PERSON | now | {"home_usage": [{"year": 2022, "pooled_paid": "4800.00",
                                              "deductible_paid": {"ip": "500.00"}}]}
    kept = {"record": held, "since": None, "until": "2022-06-20T09:00:00+08:00"}
    stays = FacilityRecord(fixmedins_code=WE1["fixmedins_code"], fixmedins_name="x", admdvs=WE1["mdtrtarea_admvs"],
                           level=3, med_types=["21"])

    class Kept(Subjects):
        async def get_many(self, psn_nos):
            return {p: {"person": current, "filings": [FILING], "before": kept} for p in psn_nos if p == PSN}

    class Stays(Repo):
        async def facilities(self, codes):
            return {c: stays for c in codes if c == stays.fixmedins_code}

    request = copy.deepcopy(WE1) | {"infno": "2304"}
    request["input"]["data"].update(med_type="21", begntime="2022-06-10 08:00:00", endtime="2022-07-01 09:00:00")
    handler = EligibilityHandler(Settings(namespace="t."), repo=Stays(), subjects=Kept())  # type: ignore[arg-type]
    (out,) = await handler([Incoming("t.settlement.requests", 0, 1, b"k", orjson.dumps(request), 0)])
    work = orjson.loads(out.value)
    assert work.get("refusal") is None, work
    assert work["person"]["home_counters"] == counted


async def person_year(subjects: Subjects | None = None, repo: Repo | None = None, **data: str) -> tuple[str, dict]:
    request = copy.deepcopy(WE1) | {"infno": "5206"}
    request["input"] = {"data": {"psn_no": PSN} | data}
    handler = EligibilityHandler(Settings(namespace="t."), repo=repo or Repo(), subjects=subjects or Subjects())  # type: ignore[arg-type]
    outs = await handler([Incoming("t.settlement.requests", 0, 1, b"k", orjson.dumps(request), 0)])
    (out,) = [o for o in outs if not o.topic.endswith(".dlq")]
    return out.topic, orjson.loads(out.value)


async def test_5206_passes_the_person_to_pricing_with_the_year_at_home():
    # The person's year is pricing's (its accumulators): eligibility checks the facility and the
    # person, and passes the person's insurance on, what it paid at home with it.
    stated = PERSON | {"acct_balc": "80.00", "acct_version": "v3",
                       "home_usage": [{"year": 2022, "pooled_paid": "300.00"}]}

    class Stated(Subjects):
        async def get_many(self, psn_nos):
            return {p: {"person": stated, "filings": []} for p in psn_nos if p == PSN}

    topic, work = await person_year(Stated(), cum_ym="202206")
    assert topic == "t.settlement.eligible" and work["refusal"] is None, work
    assert (work["person"]["acct_balc"], work["person"]["acct_version"]) == ("80.00", "v3")
    assert work["person"]["home_counters"] == {"2022": {"pooled_paid": "300.00"}}
    assert work["facility_level"] == OUTPATIENT_ONLY.level  # the asking facility's deductibles


async def test_5206_naming_the_insurance_held_before_a_move_is_answered_for_it():
    # A stay admitted before the person moved settles under the old insurance: its year can be asked
    # about, by its region (no account: its balance went with the transfer).
    held = PERSON | {"acct_balc": "80.00", "home_usage": [{"year": 2022, "pooled_paid": "300.00"}]}
    moved = PERSON | {"insuplc_admdvs": "132000", "acct_balc": "40.00"}

    class Moved(Subjects):
        async def get_many(self, psn_nos):
            return {p: {"person": moved, "filings": [], "before": {
                "record": held, "since": None, "until": "2022-06-20T09:00:00+08:00"}} for p in psn_nos if p == PSN}

    topic, work = await person_year(Moved())
    assert topic == "t.settlement.eligible", work
    assert (work["person"]["insuplc_admdvs"], work["person"]["acct_balc"]) == ("131000", "0.00")
    assert work["person"]["home_counters"] == {"2022": {"pooled_paid": "300.00"}}


@pytest.mark.parametrize(("case", "err_code", "why"), [
    ("another insurance", "NOT_INSURED", "is insutype 310, not 390"),
    ("unknown person", "NOT_INSURED", "No insured person with this psn_no"),
    ("unknown facility", "UNKNOWN_FACILITY", "not a networked facility"),
    ("not a month", "INVALID_INPUT", "cum_ym is a month"),
    ("a year to come", "INVALID_INPUT", "that year has not begun"),
])
async def test_5206_is_answered_by_eligibility_when_the_person_or_facility_is_not_for_it(case, err_code, why):
    class Nobody(Subjects):
        async def get_many(self, psn_nos):
            return {}

    class NoFacility(Repo):
        async def facilities(self, codes):
            return {}

    data = {"another insurance": {"insutype": "390"}, "not a month": {"cum_ym": "202213"},
            "a year to come": {"cum_ym": "202301"}}.get(case, {})  # WE1's inf_time is in 2022
    topic, answer = await person_year(Nobody() if case == "unknown person" else None,
                                      NoFacility() if case == "unknown facility" else None, **data)
    assert topic == "t.settlement.results" and answer["err_code"] == err_code and why in answer["err_msg"], answer
