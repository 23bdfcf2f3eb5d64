"""Eligibility rules (R5, R6, R7, R10, R14, R17, R19) on plain data."""

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D

import pytest

from yidi.domain.codes import FilingCategory, InsuranceType, MedType, PersonType
from yidi.domain.eligibility import (
    Basis,
    Eligible,
    Facility,
    Filing,
    FilingPeriod,
    FilingStatus,
    InsuredBefore,
    Outage,
    Person,
    Refusal,
    Refused,
    Visit,
    decide,
)

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
BEIJING_HOSPITAL = Facility("H1", "Beijing", "110000", 3, frozenset(MedType))
PERSON = Person("P1", "Wang", "131000", InsuranceType.EMPLOYEE, PersonType.RETIRED, True, frozenset({"E11"}), D("0"))


def visit(med=MedType.GENERAL_OUTPATIENT, on=date(2026, 11, 23), disease="", treating="110000", **kw):
    return Visit(treating, "131000", InsuranceType.EMPLOYEE, med, on, disease, **kw)


def filing(category=FilingCategory.RETIREE_RESETTLED, begin=date(2022, 1, 1), end=None, status=FilingStatus.ACTIVE, filed="110000"):
    return Filing("F1", "P1", InsuranceType.EMPLOYEE, "131000", filed, category, begin, end, status)


def test_r9_a_filing_to_the_region_lets_any_networked_facility_of_it_settle():
    d = decide(visit(), PERSON, BEIJING_HOSPITAL, [filing()], [], NOW)
    assert isinstance(d, Eligible) and d.basis is Basis.FILED and d.category is FilingCategory.RETIREE_RESETTLED


@pytest.mark.parametrize("filed, treating, covered", [
    ("440000", "440106", True),   # the province: every region of it
    ("440000", "440000", True),
    ("440100", "440106", True),   # the city: its counties
    ("440100", "440300", False),  # another city of the province
    ("440106", "440100", False),  # a county does not cover its city
    ("440106", "440104", False),
    ("450000", "440106", False),  # another province
])
def test_r9_a_filing_to_a_province_or_city_covers_the_regions_inside_it(filed, treating, covered):
    hospital = Facility("H2", "Guangzhou", treating, 3, frozenset(MedType))
    d = decide(visit(treating=treating), PERSON, hospital, [filing(filed=filed)], [], NOW)
    assert (isinstance(d, Eligible) and d.basis is Basis.FILED) is covered, d


def test_no_filing_is_refused_not_filed_with_a_sentence_naming_late_filing():
    d = decide(visit(), PERSON, BEIJING_HOSPITAL, [], [], NOW)
    assert isinstance(d, Refused) and d.code is Refusal.NOT_FILED and "R6" in d.message


def test_r6_a_filing_made_after_admission_but_before_settlement_counts():
    late = filing(FilingCategory.TEMPORARY_OTHER, begin=date(2026, 11, 22), end=date(2027, 5, 22))
    d = decide(visit(MedType.INPATIENT), PERSON, BEIJING_HOSPITAL, [late], [], NOW)
    assert isinstance(d, Eligible)


def test_r5_emergency_rescue_counts_as_filed():
    d = decide(visit(MedType.EMERGENCY), PERSON, BEIJING_HOSPITAL, [], [], NOW)
    assert isinstance(d, Eligible) and d.basis is Basis.EMERGENCY and d.category is None


def test_r11_emergency_care_under_an_other_temporary_filing_settles_as_emergency():
    """R11's "other temporary trip" is non-emergency: with a temporary_other filing, emergency care
    used to settle on it (20 points off and a first self-pay), worse than with no filing."""
    trip = filing(FilingCategory.TEMPORARY_OTHER, begin=date(2026, 11, 1), end=date(2027, 5, 1))
    d = decide(visit(MedType.EMERGENCY), PERSON, BEIJING_HOSPITAL, [trip], [], NOW)
    assert isinstance(d, Eligible) and d.basis is Basis.EMERGENCY and d.category is None
    general = decide(visit(), PERSON, BEIJING_HOSPITAL, [trip], [], NOW)
    assert isinstance(general, Eligible) and general.category is FilingCategory.TEMPORARY_OTHER


def test_the_other_valid_temporary_filings_categories_go_to_pricing_which_holds_the_numbers():
    # Referral and emergency rank alike: which settles better is the insured region's reductions.
    held = [filing(FilingCategory.REFERRAL, begin=date(2026, 1, 1), end=date(2027, 1, 1)),
            filing(FilingCategory.EMERGENCY, begin=date(2026, 3, 1), end=date(2027, 3, 1)),
            filing(FilingCategory.TEMPORARY_OTHER, begin=date(2026, 2, 1), end=date(2027, 2, 1)),
            filing(FilingCategory.REFERRAL, begin=date(2026, 4, 1), end=date(2027, 4, 1))]
    d = decide(visit(MedType.INPATIENT), PERSON, BEIJING_HOSPITAL, held, [], NOW)
    assert isinstance(d, Eligible) and d.category is FilingCategory.REFERRAL
    assert d.others == (FilingCategory.EMERGENCY, FilingCategory.TEMPORARY_OTHER)  # each once, not its own
    # A long-term filing has no reduction: nothing to compare.
    resident = [filing(FilingCategory.LONG_TERM_RESIDENT), filing(FilingCategory.EMERGENCY, begin=date(2026, 3, 1),
                                                                   end=date(2027, 3, 1))]
    d = decide(visit(MedType.INPATIENT), PERSON, BEIJING_HOSPITAL, resident, [], NOW)
    assert isinstance(d, Eligible) and d.category is FilingCategory.LONG_TERM_RESIDENT and d.others == ()


def test_r5_emergency_care_with_any_temporary_filing_settles_as_with_none():
    """A referral, emergency or merged temporary filing carries R11's reduction; emergency care
    settled on one paid up to 10 points less than with no filing at all (found by review: adding a
    referral filing to a temporary_other one lowered the fund's share of an emergency)."""
    for category in (FilingCategory.REFERRAL, FilingCategory.EMERGENCY, FilingCategory.TEMPORARY):
        held = [filing(FilingCategory.TEMPORARY_OTHER, begin=date(2026, 1, 1), end=date(2027, 1, 1)),
                filing(category, begin=date(2026, 3, 1), end=date(2027, 3, 1))]
        d = decide(visit(MedType.EMERGENCY), PERSON, BEIJING_HOSPITAL, held, [], NOW)
        assert isinstance(d, Eligible) and (d.basis, d.category) == (Basis.EMERGENCY, None), category
        stay = decide(visit(MedType.INPATIENT), PERSON, BEIJING_HOSPITAL, held, [], NOW)
        assert isinstance(stay, Eligible) and stay.category is category  # other care settles on the filing
    resident = filing(FilingCategory.LONG_TERM_RESIDENT, begin=date(2026, 6, 1))
    d = decide(visit(MedType.EMERGENCY), PERSON, BEIJING_HOSPITAL, [resident], [], NOW)
    assert isinstance(d, Eligible) and d.basis is Basis.FILED and d.category is FilingCategory.LONG_TERM_RESIDENT


def test_of_several_valid_filings_the_most_favourable_is_settled_on_not_the_earliest():
    other = filing(FilingCategory.TEMPORARY_OTHER, begin=date(2026, 1, 1), end=date(2027, 1, 1))
    referral = filing(FilingCategory.REFERRAL, begin=date(2026, 3, 1), end=date(2027, 3, 1))
    d = decide(visit(MedType.INPATIENT), PERSON, BEIJING_HOSPITAL, [other, referral], [], NOW)
    assert isinstance(d, Eligible) and d.category is FilingCategory.REFERRAL
    resident = filing(FilingCategory.LONG_TERM_RESIDENT, begin=date(2026, 6, 1))
    d = decide(visit(MedType.INPATIENT), PERSON, BEIJING_HOSPITAL, [other, referral, resident], [], NOW)
    assert isinstance(d, Eligible) and d.category is FilingCategory.LONG_TERM_RESIDENT


def test_a_temporary_filing_valid_at_admission_covers_the_stay_even_if_it_ran_out_before_discharge():
    trip = filing(FilingCategory.TEMPORARY_OTHER, begin=date(2026, 5, 20), end=date(2026, 11, 20))
    stay = visit(MedType.INPATIENT, admitted=date(2026, 11, 10))  # settled on 2026-11-23
    d = decide(stay, PERSON, BEIJING_HOSPITAL, [trip], [], NOW)
    assert isinstance(d, Eligible) and d.filing == trip
    # not outpatient care begun before the day before, and not a stay admitted after the filing ran out
    assert isinstance(decide(visit(admitted=date(2026, 11, 10)), PERSON, BEIJING_HOSPITAL, [trip], [], NOW), Refused)
    late = visit(MedType.INPATIENT, admitted=date(2026, 11, 21))
    assert isinstance(decide(late, PERSON, BEIJING_HOSPITAL, [trip], [], NOW), Refused)


def test_r6_a_filing_made_during_a_stay_covers_it_though_an_insurance_change_ended_it_before_discharge():
    # Admitted 11-10 unfiled, filed long-term on 11-12 (R6), the insurance stopped on 11-20, which
    # ended the filing (R7: its days kept, 11-12 to 11-19); settled on 11-23 under the insurance held
    # at admission: refused NOT_FILED (a review, session 46), while a filing made before admission,
    # or a temporary one, covered the same stay.
    stay = visit(MedType.INPATIENT, admitted=date(2026, 11, 10))
    late = Filing("F1", "P1", InsuranceType.EMPLOYEE, "131000", "110000", FilingCategory.RETIREE_RESETTLED,
                  date(2026, 11, 12), date(2026, 11, 19), FilingStatus.CANCELLED,
                  earlier=(FilingPeriod("110000", FilingCategory.RETIREE_RESETTLED, date(2026, 11, 12),
                                        date(2026, 11, 19)),))
    decision = decide(stay, STOPPED, BEIJING_HOSPITAL, late.versions(), [], NOW, HELD)
    assert isinstance(decision, Eligible) and decision.basis is Basis.FILED, decision
    # Not outpatient care, not a filing begun after the settlement day nor one cancelled outright,
    # and not a stay admitted after the filing began and ended.
    assert isinstance(decide(replace(stay, med_type=MedType.GENERAL_OUTPATIENT), STOPPED, BEIJING_HOSPITAL,
                             late.versions(), [], NOW, HELD), Refused)
    assert isinstance(decide(replace(stay, on=date(2026, 11, 11)), STOPPED, BEIJING_HOSPITAL,
                             late.versions(), [], NOW, HELD), Refused)
    assert isinstance(decide(stay, STOPPED, BEIJING_HOSPITAL, [late], [], NOW, HELD), Refused)
    after = decide(replace(stay, admitted=date(2026, 11, 20)), PERSON, BEIJING_HOSPITAL, late.versions(), [], NOW)
    assert isinstance(after, Refused) and after.code is Refusal.NOT_FILED


def test_r7_outpatient_care_begun_on_the_filings_last_day_and_settled_after_midnight_is_covered():
    # Refused NOT_FILED, while the same times for a stay were eligible (a review, session 37): the
    # filing is valid through its end day, when the care was given. The day before only.
    trip = filing(FilingCategory.TEMPORARY_OTHER, begin=date(2026, 7, 1), end=date(2026, 12, 31))
    new_year = datetime(2026, 12, 31, 16, 5, tzinfo=UTC)  # 00:05 in Beijing
    for med in (MedType.GENERAL_OUTPATIENT, MedType.PHARMACY):
        late = visit(med, on=date(2027, 1, 1), admitted=date(2026, 12, 31))
        d = decide(late, PERSON, BEIJING_HOSPITAL, [trip], [], new_year)
        assert isinstance(d, Eligible) and d.filing == trip, med
    two_days = visit(on=date(2027, 1, 2), admitted=date(2026, 12, 31))
    refused = decide(two_days, PERSON, BEIJING_HOSPITAL, [trip], [], new_year + timedelta(days=1))
    assert isinstance(refused, Refused) and refused.code is Refusal.NOT_FILED
    no_begin = visit(on=date(2027, 1, 1))
    assert isinstance(decide(no_begin, PERSON, BEIJING_HOSPITAL, [trip], [], new_year), Refused)


def test_r7_an_expired_temporary_filing_no_longer_counts():
    old = filing(FilingCategory.TEMPORARY_OTHER, begin=date(2025, 1, 1), end=date(2025, 7, 1))
    assert isinstance(decide(visit(), PERSON, BEIJING_HOSPITAL, [old], [], NOW), Refused)


def test_a_cancelled_filing_no_longer_counts():
    cancelled = filing(status=FilingStatus.CANCELLED)
    assert isinstance(decide(visit(), PERSON, BEIJING_HOSPITAL, [cancelled], [], NOW), Refused)


def test_r10_care_in_the_insured_region_itself_needs_no_filing():
    home = Facility("H2", "Langfang", "131000", 2, frozenset(MedType))
    d = decide(visit(treating="131000"), PERSON, home, [], [], NOW)
    assert isinstance(d, Eligible) and d.basis is Basis.HOME


def test_r2_an_identity_card_number_that_is_not_the_persons_is_refused():
    from dataclasses import replace

    carded = replace(PERSON, certno="13100219550101001X")
    for cert_type, cert_no, settles in (
        ("02", "13100219550101001X", True), ("02", "13100219550101001x", True),  # the check digit X in either case
        ("02", "131002196001010022", False),  # another person's card
        ("02", "", True),  # no number given: nothing to compare
        ("01", "EV00000001", True),  # an e-voucher's token is not the card number
    ):
        d = decide(visit(cert_type=cert_type, cert_no=cert_no), carded, BEIJING_HOSPITAL, [filing()], [], NOW)
        assert isinstance(d, Eligible) is settles, (cert_type, cert_no, d)
        if not settles:
            assert d.code is Refusal.NOT_INSURED and "not this person's (R2)" in d.message
    # The region gave no card number: nothing to compare.
    assert isinstance(decide(visit(cert_type="02", cert_no="131002196001010022"), PERSON, BEIJING_HOSPITAL,
                             [filing()], [], NOW), Eligible)


def test_r14_chronic_care_needs_the_qualification_at_home():
    ok = decide(visit(MedType.CHRONIC_OUTPATIENT, disease="E11.900"), PERSON, BEIJING_HOSPITAL, [filing()], [], NOW)
    no = decide(visit(MedType.CHRONIC_OUTPATIENT, disease="I10.X00"), PERSON, BEIJING_HOSPITAL, [filing()], [], NOW)
    assert isinstance(ok, Eligible)
    assert isinstance(no, Refused) and no.code is Refusal.NOT_QUALIFIED


def test_r14_a_qualification_is_held_whether_the_code_is_written_with_its_dot_or_without():
    # The home record writes "Z99.2" (dialysis dependence), a facility sends "Z992…", or the reverse.
    for held, sent in (("Z99.2", "Z99200"), ("Z992", "Z99.200"), ("e11.9", "E11900")):
        person = Person("P5", "Wu", "131000", InsuranceType.EMPLOYEE, PersonType.RETIRED, True, frozenset({held}), D("0"))
        d = decide(visit(MedType.CHRONIC_OUTPATIENT, disease=sent), person, BEIJING_HOSPITAL, [filing()], [], NOW)
        assert isinstance(d, Eligible), (held, sent, d)


def test_r14_a_visit_coded_by_its_treatment_is_held_by_the_qualification_for_the_disease_treated():
    """A person qualified at home for uraemia (N18.5) has dialysis visits coded Z49/Z99.2; one
    qualified for breast cancer (C50) has chemotherapy sessions coded Z51.1; after a kidney
    transplant (Z94.0), rejection treated is T86. Those were refused as not held. A qualification
    for another disease does not cover them."""
    for held, sent in (("N18.5", "Z49.101"), ("N18", "Z99.200"), ("C50", "Z51.100"), ("Z94.0", "T86.100"),
                       ("c50.9", "z51.0")):
        person = Person("P5", "Wu", "131000", InsuranceType.EMPLOYEE, PersonType.RETIRED, True, frozenset({held}), D("0"))
        d = decide(visit(MedType.CHRONIC_OUTPATIENT, disease=sent), person, BEIJING_HOSPITAL, [filing()], [], NOW)
        assert isinstance(d, Eligible), (held, sent, d)
    for held, sent in (("E11", "Z49.101"), ("I10", "Z51.100"), ("N18", "T86.100"), ("C50", "C34.900")):
        person = Person("P5", "Wu", "131000", InsuranceType.EMPLOYEE, PersonType.RETIRED, True, frozenset({held}), D("0"))
        d = decide(visit(MedType.CHRONIC_OUTPATIENT, disease=sent), person, BEIJING_HOSPITAL, [filing()], [], NOW)
        assert isinstance(d, Refused) and d.code is Refusal.NOT_QUALIFIED, (held, sent, d)


def test_r14_inside_the_province_any_chronic_disease_the_person_holds_settles_not_only_the_five():
    copd = Person("P3", "Li", "131000", InsuranceType.EMPLOYEE, PersonType.RETIRED, True, frozenset({"J44"}), D("0"))
    at_home = decide(visit(MedType.CHRONIC_OUTPATIENT, disease="J44.900", treating="131000"), copd,
                     Facility("H2", "Langfang", "131000", 2, frozenset(MedType)), [], [], NOW)
    in_province = decide(visit(MedType.CHRONIC_OUTPATIENT, disease="J44.900", treating="130100"), copd,
                         Facility("H4", "Shijiazhuang", "130100", 3, frozenset(MedType)),
                         [filing(filed="130100")], [], NOW)
    across = decide(visit(MedType.CHRONIC_OUTPATIENT, disease="J44.900"), copd, BEIJING_HOSPITAL, [filing()], [], NOW)
    not_held = decide(visit(MedType.CHRONIC_OUTPATIENT, disease="I10.X00", treating="131000"), copd,
                      Facility("H2", "Langfang", "131000", 2, frozenset(MedType)), [], [], NOW)
    assert isinstance(at_home, Eligible) and at_home.basis is Basis.HOME
    assert isinstance(in_province, Eligible) and in_province.basis is Basis.FILED
    assert isinstance(across, Refused) and across.code is Refusal.NOT_QUALIFIED and "five" in across.message
    assert isinstance(not_held, Refused) and not_held.code is Refusal.NOT_QUALIFIED and "holds no" in not_held.message


def test_r17_a_province_may_waive_filing_for_trips_between_its_cities():
    jinan_person = Person("P2", "Sun", "370100", InsuranceType.EMPLOYEE, PersonType.IN_SERVICE, True)
    qingdao = Facility("H3", "Qingdao", "370200", 3, frozenset(MedType))
    v = Visit("370200", "370100", InsuranceType.EMPLOYEE, MedType.GENERAL_OUTPATIENT, date(2026, 11, 23), filing_waived_in_province=True)
    d = decide(v, jinan_person, qingdao, [], [], NOW)
    assert isinstance(d, Eligible) and d.basis is Basis.WAIVED


def test_r19_an_insured_region_in_an_outage_window_is_refused_naming_when_it_resumes():
    outage = Outage("131000", NOW - timedelta(hours=1), NOW + timedelta(hours=2), "maintenance")
    d = decide(visit(), PERSON, BEIJING_HOSPITAL, [filing()], [outage], NOW)
    # 12:00 UTC, told to the cashier in the business zone (it said "12:00" with no zone)
    assert isinstance(d, Refused) and d.code is Refusal.REGION_UNAVAILABLE
    assert "until 2026-11-23 20:00 (UTC+08:00)" in d.message


def test_r19_an_outage_until_further_notice_written_in_utc_is_refused_naming_it():
    # 9999-12-31T23:59:59Z is past the year 9999 in China time: moving it there raised, and every
    # settlement of the region was answered INTERNAL_ERROR (a review, session 35).
    from datetime import UTC, datetime

    outage = Outage("131000", NOW - timedelta(hours=1), datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), "cut over")
    d = decide(visit(), PERSON, BEIJING_HOSPITAL, [filing()], [outage], NOW)
    assert isinstance(d, Refused) and d.code is Refusal.REGION_UNAVAILABLE
    assert "until 9999-12-31 23:59 (UTC+00:00), until further notice" in d.message


def test_r19_an_outage_of_the_insured_regions_province_stops_it_and_another_provinces_does_not():
    # Area codes nest: the province's platform in maintenance stops its cities' insured.
    hebei = Outage("130000", NOW - timedelta(hours=1), NOW + timedelta(hours=2), "maintenance of the Hebei platform")
    d = decide(visit(), PERSON, BEIJING_HOSPITAL, [filing()], [hebei], NOW)
    assert isinstance(d, Refused) and d.code is Refusal.REGION_UNAVAILABLE and "Hebei platform" in d.message
    a_county = Outage("131002", NOW - timedelta(hours=1), NOW + timedelta(hours=2), "a county of it")
    shandong = Outage("370000", NOW - timedelta(hours=1), NOW + timedelta(hours=2), "another province")
    assert isinstance(decide(visit(), PERSON, BEIJING_HOSPITAL, [filing()], [a_county, shandong], NOW), Eligible)


def test_r19_windows_of_the_county_and_its_province_that_follow_each_other_name_the_last_end():
    county = Outage("131002", NOW - timedelta(hours=1), NOW + timedelta(hours=1), "county network")
    province = Outage("130000", NOW + timedelta(hours=1), NOW + timedelta(hours=3), "provincial platform")
    v = Visit("110000", "131002", InsuranceType.EMPLOYEE, MedType.GENERAL_OUTPATIENT, date(2026, 11, 23), "")
    person = replace(PERSON, insured_region="131002")
    d = decide(v, person, BEIJING_HOSPITAL, [replace(filing(), insured_region="131002")], [province, county], NOW)
    assert isinstance(d, Refused) and "until 2026-11-23 21:00 (UTC+08:00) (provincial platform)" in d.message, d


def test_r10_care_in_a_county_of_the_insured_city_is_care_at_home():
    county = Facility("H4", "Langfang county hospital", "131002", 3, frozenset(MedType))
    d = decide(visit(treating="131002"), PERSON, county, [], [], NOW)
    assert isinstance(d, Eligible) and d.basis is Basis.HOME
    # The city's own facility for a person insured at a county of it is another region.
    county_person = replace(PERSON, insured_region="131002")
    city = Facility("H5", "Langfang", "131000", 3, frozenset(MedType))
    v = Visit("131000", "131002", InsuranceType.EMPLOYEE, MedType.GENERAL_OUTPATIENT, date(2026, 11, 23), "")
    refused = decide(v, county_person, city, [], [], NOW)
    assert isinstance(refused, Refused) and refused.code is Refusal.NOT_FILED


def test_r19_overlapping_and_following_windows_name_when_the_region_really_resumes():
    """Two windows covering now, and a third beginning as the later ends: the region resumes at
    the third's end (the first window's end was named, and the cashier sent the patient back
    while the region was still down)."""
    short = Outage("131000", NOW - timedelta(hours=1), NOW + timedelta(hours=1), "network")
    longer = Outage("131000", NOW - timedelta(minutes=30), NOW + timedelta(hours=2), "maintenance")
    following = Outage("131000", NOW + timedelta(hours=2), NOW + timedelta(hours=3), "upgrade")
    elsewhere = Outage("370100", NOW - timedelta(hours=1), NOW + timedelta(hours=9), "other region")
    later = Outage("131000", NOW + timedelta(hours=5), NOW + timedelta(hours=6), "not joined")
    for order in ([short, longer, following, elsewhere, later], [later, elsewhere, following, longer, short]):
        d = decide(visit(), PERSON, BEIJING_HOSPITAL, [filing()], order, NOW)
        assert isinstance(d, Refused) and d.code is Refusal.REGION_UNAVAILABLE
        assert "until 2026-11-23 21:00 (UTC+08:00) (upgrade)" in d.message, d.message
    # A chain met in reverse order: each window found extends the end another may begin before.
    chain = [Outage("131000", NOW + timedelta(hours=h), NOW + timedelta(hours=h + 1), f"step {h}") for h in (4, 3, 2)]
    d = decide(visit(), PERSON, BEIJING_HOSPITAL, [filing()], chain + [longer], NOW)
    assert isinstance(d, Refused) and "until 2026-11-23 23:00 (UTC+08:00) (step 4)" in d.message, d.message
    # Only windows that have begun stop settlements.
    assert isinstance(decide(visit(), PERSON, BEIJING_HOSPITAL, [filing()], [following, later], NOW), Eligible)


def test_suspended_insurance_is_refused_not_insured():
    suspended = Person("P1", "Wang", "131000", InsuranceType.EMPLOYEE, PersonType.RETIRED, False)
    d = decide(visit(), suspended, BEIJING_HOSPITAL, [filing()], [], NOW)
    assert isinstance(d, Refused) and d.code is Refusal.NOT_INSURED


def test_an_unknown_facility_is_refused():
    d = decide(visit(), PERSON, None, [filing()], [], NOW)
    assert isinstance(d, Refused) and d.code is Refusal.UNKNOWN_FACILITY


def test_r17_a_temporary_filing_inside_a_waiving_province_is_flagged_so_it_settles_no_worse_than_none():
    jinan_person = Person("P2", "Sun", "370100", InsuranceType.EMPLOYEE, PersonType.IN_SERVICE, True)
    qingdao = Facility("H3", "Qingdao", "370200", 3, frozenset(MedType))
    waived = Visit("370200", "370100", InsuranceType.EMPLOYEE, MedType.GENERAL_OUTPATIENT, date(2026, 11, 23),
                   filing_waived_in_province=True)
    not_waived = Visit("370200", "370100", InsuranceType.EMPLOYEE, MedType.GENERAL_OUTPATIENT, date(2026, 11, 23))
    temporary = Filing("F1", "P2", InsuranceType.EMPLOYEE, "370100", "370200", FilingCategory.TEMPORARY_OTHER,
                       date(2026, 11, 1), None, FilingStatus.ACTIVE)
    long_term = Filing("F2", "P2", InsuranceType.EMPLOYEE, "370100", "370200", FilingCategory.LONG_TERM_RESIDENT,
                       date(2022, 1, 1), None, FilingStatus.ACTIVE)
    flagged = decide(waived, jinan_person, qingdao, [temporary], [], NOW)
    assert isinstance(flagged, Eligible) and flagged.basis is Basis.FILED and flagged.waived
    assert flagged.category is FilingCategory.TEMPORARY_OTHER
    plain = decide(not_waived, jinan_person, qingdao, [temporary], [], NOW)
    assert isinstance(plain, Eligible) and plain.basis is Basis.FILED and not plain.waived
    # A long-term filing carries no reduction anyway (R10): nothing to flag.
    settled_long = decide(waived, jinan_person, qingdao, [long_term], [], NOW)
    assert isinstance(settled_long, Eligible) and not settled_long.waived


@pytest.mark.parametrize(("code", "disease"), [
    ("N18.500", "uraemia dialysis"), ("N18.000", "uraemia dialysis"), ("N19.x00", "uraemia dialysis"),
    ("Z49.101", "uraemia dialysis"), ("Z99.200", "uraemia dialysis"),  # a dialysis visit coded as one
    ("Z94.000", "anti-rejection after organ transplant"), ("T86.100", "anti-rejection after organ transplant"),
    ("C50.900", "malignant tumour chemo/radiotherapy"), ("Z51.100", "malignant tumour chemo/radiotherapy"),
    ("Z51.000", "malignant tumour chemo/radiotherapy"),
    ("N18.900", "uraemia dialysis"), ("N185", "uraemia dialysis"), ("Z992", "uraemia dialysis"),
    ("Z49", "uraemia dialysis"), ("Z51.800", None), ("Z511", "malignant tumour chemo/radiotherapy"),
    ("N17.900", None), ("Z95.000", None),
])
def test_r14_the_five_cross_province_diseases_by_their_codes(code, disease):
    """A dialysis, anti-rejection or chemotherapy visit coded as such (Z49, Z99.2, T86, Z51.0/1) was
    refused as none of the five; codes are compared with or without their dot."""
    from yidi.domain.eligibility import chronic_disease_of

    assert chronic_disease_of(code) == disease


def test_r7_a_stay_admitted_before_a_change_made_later_that_day_at_once_is_covered_by_the_version_it_ended():
    from dataclasses import replace

    from yidi.domain.codes import BUSINESS_TZ
    from yidi.domain.eligibility import FilingPeriod

    changed_at = datetime(2026, 11, 20, 15, 0, tzinfo=BUSINESS_TZ)
    # Filed in Beijing, moved to Tianjin at once at 15:00 on 11-20; Beijing kept as an earlier version.
    moved = replace(filing(filed="120000", begin=date(2026, 11, 20)), earlier=(
        FilingPeriod("110000", FilingCategory.RETIREE_RESETTLED, date(2022, 1, 1), date(2026, 11, 19),
                     ended_at=changed_at),))
    versions = moved.versions()

    def stay(admitted: datetime):
        return visit(MedType.INPATIENT, admitted=admitted.date(), admitted_at=admitted)  # discharged 11-23 in Beijing

    morning = decide(stay(datetime(2026, 11, 20, 9, 0, tzinfo=BUSINESS_TZ)), PERSON, BEIJING_HOSPITAL, versions, [], NOW)
    assert isinstance(morning, Eligible) and morning.filing.filed_region == "110000"
    evening = decide(stay(datetime(2026, 11, 20, 16, 0, tzinfo=BUSINESS_TZ)), PERSON, BEIJING_HOSPITAL, versions, [], NOW)
    assert isinstance(evening, Refused) and evening.code is Refusal.NOT_FILED
    # the moment in another zone is the same moment: 08:30 UTC is 16:30 in Beijing
    utc = decide(stay(datetime(2026, 11, 20, 8, 30, tzinfo=UTC)), PERSON, BEIJING_HOSPITAL, versions, [], NOW)
    assert isinstance(utc, Refused)
    # outpatient care that day after the change, and a stay admitted the next day: not covered
    assert isinstance(decide(visit(on=date(2026, 11, 20)), PERSON, BEIJING_HOSPITAL, versions, [], NOW), Refused)
    next_day = decide(stay(datetime(2026, 11, 21, 8, 0, tzinfo=BUSINESS_TZ)), PERSON, BEIJING_HOSPITAL, versions, [], NOW)
    assert isinstance(next_day, Refused)


def test_r7_a_move_at_once_keeps_the_stay_admitted_before_it_through_the_wire():
    """From the filing rules, through the record eligibility mirrors (JSON), to the decision."""
    import orjson

    from yidi.contracts.filing import FilingRecord
    from yidi.domain.codes import BUSINESS_TZ
    from yidi.domain.filing import FilingAsk, change_filing, new_filing

    # In Beijing since 11-20 (a move planned earlier took effect at midnight); at 10:00 moved to Tianjin at once.
    day = date(2026, 11, 20)
    beijing, tianjin = (FilingAsk("F1", "P1", InsuranceType.EMPLOYEE, "131000", region,
                                  FilingCategory.RETIREE_RESETTLED, day, None, True) for region in ("110000", "120000"))
    moved = change_filing(new_filing(beijing), tianjin, today=day, lock_months=0, filed_on=day,
                          at=datetime(2026, 11, 20, 10, 0, tzinfo=BUSINESS_TZ))
    wire = FilingRecord.model_validate(orjson.loads(orjson.dumps(FilingRecord.of(moved, 2).model_dump(mode="json"))))
    versions = wire.to_domain().versions()

    def stay(admitted: datetime):
        return visit(MedType.INPATIENT, admitted=admitted.astimezone(BUSINESS_TZ).date(), admitted_at=admitted)

    # 23:30 UTC on 11-19 is 07:30 on 11-20 in Beijing: before the move, under Beijing's filing
    early = decide(stay(datetime(2026, 11, 19, 23, 30, tzinfo=UTC)), PERSON, BEIJING_HOSPITAL, versions, [], NOW)
    assert isinstance(early, Eligible) and early.filing.filed_region == "110000"
    late = decide(stay(datetime(2026, 11, 20, 11, 0, tzinfo=BUSINESS_TZ)), PERSON, BEIJING_HOSPITAL, versions, [], NOW)
    assert isinstance(late, Refused) and late.code is Refusal.NOT_FILED


def test_a_time_that_is_not_one_cannot_end_a_version():
    import pytest as _pytest
    from pydantic import ValidationError

    from yidi.contracts.filing import FilingPeriodRecord

    with _pytest.raises(ValidationError):  # no zone: eligibility could not compare it with an admission
        FilingPeriodRecord(filed_admdvs="110000", category="retiree_resettled", begndate="2022-01-01",
                           enddate="2026-11-19", ended_at="2026-11-20T10:00:00")


def test_a_begntime_of_a_day_alone_is_judged_by_its_day_not_as_midnight():
    from services.eligibility.handlers import _admission_moment
    from yidi.domain.codes import BUSINESS_TZ

    assert _admission_moment(datetime(2026, 11, 20, 0, 0)) is None  # "2026-11-20": before every change that day
    assert _admission_moment(None) is None
    assert _admission_moment(datetime(2026, 11, 20, 7, 30)) == datetime(2026, 11, 20, 7, 30, tzinfo=BUSINESS_TZ)


# The person's insurance stopped at 09:00 Beijing time on 2026-11-20 (or moved to Tianjin's), in the
# middle of a stay admitted on 2026-11-10 and settled on 2026-11-23.
CHANGED = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
STOPPED = replace(PERSON, active=False)
MOVED = replace(PERSON, insured_region="120000")
HELD = InsuredBefore(PERSON, CHANGED)


@pytest.mark.parametrize("now", [STOPPED, MOVED], ids=["stopped", "moved"])
def test_a_stay_admitted_while_insured_is_settled_under_that_insurance_after_it_changed(now):
    """A stay is judged by the insurance held at admission, as filing keeps the filing the change
    ended in force for it (R6, R7): it was refused NOT_INSURED for a change during the stay."""
    stay = visit(MedType.INPATIENT, admitted=date(2026, 11, 10))
    # Filing ended the long-term filing at the change: in force until the day before, for this stay.
    ended = Filing("F1", "P1", InsuranceType.EMPLOYEE, "131000", "110000", FilingCategory.RETIREE_RESETTLED,
                   date(2022, 1, 1), date(2026, 11, 19), FilingStatus.CANCELLED,
                   earlier=(FilingPeriod("110000", FilingCategory.RETIREE_RESETTLED, date(2022, 1, 1), date(2026, 11, 19)),))
    filings = ended.versions()
    assert isinstance(decide(stay, now, BEIJING_HOSPITAL, filings, [], NOW), Refused)  # no insurance held before
    decision = decide(stay, now, BEIJING_HOSPITAL, filings, [], NOW, HELD)
    assert isinstance(decision, Eligible) and decision.insured_before and decision.basis is Basis.FILED
    # With the admission's day alone, the change's own day is not before it (nor does filing keep the
    # filing for it: in force until the day before the change).
    assert isinstance(decide(replace(stay, admitted=date(2026, 11, 20)), now, BEIJING_HOSPITAL,
                             filings, [], NOW, HELD), Refused)
    assert isinstance(decide(replace(stay, admitted=date(2026, 11, 19)), now, BEIJING_HOSPITAL,
                             filings, [], NOW, HELD), Eligible)
    # At home (no filing needed), by the admission's moment when the request gives one.
    home = Facility("H2", "Langfang", "131000", 2, frozenset(MedType))
    at_home = replace(stay, treating_region="131000", admitted=date(2026, 11, 20))
    morning, noon = datetime(2026, 11, 20, 0, 30, tzinfo=UTC), datetime(2026, 11, 20, 4, 0, tzinfo=UTC)
    assert isinstance(decide(replace(at_home, admitted_at=morning), now, home, [], [], NOW, HELD), Eligible)
    refused = decide(replace(at_home, admitted_at=noon), now, home, [], [], NOW, HELD)
    assert isinstance(refused, Refused) and refused.code is Refusal.NOT_INSURED


def test_only_a_stay_admitted_before_the_change_and_naming_that_insurance_is_settled_under_it():
    stay = visit(MedType.INPATIENT, admitted=date(2026, 11, 10), treating="131000")  # at home: no filing needed
    assert isinstance(decide(stay, STOPPED, BEIJING_HOSPITAL, [], [], NOW, HELD), Refused)  # facility not home's
    home = Facility("H2", "Langfang", "131000", 2, frozenset(MedType))
    assert decide(stay, STOPPED, home, [], [], NOW, HELD) == Eligible(Basis.HOME, None, insured_before=True)
    # Outpatient care, and a stay without its admission, are judged by the insurance now.
    for care in (visit(treating="131000"), visit(MedType.INPATIENT, treating="131000"),
                 visit(MedType.GENERAL_OUTPATIENT, treating="131000", admitted=date(2026, 11, 22))):
        refused = decide(care, STOPPED, home, [], [], NOW, HELD)
        assert isinstance(refused, Refused) and refused.code is Refusal.NOT_INSURED
    # A request naming another insurance than the one held then.
    resident = replace(stay, insutype=InsuranceType.RESIDENT)
    assert decide(resident, STOPPED, home, [], [], NOW, HELD).code is Refusal.NOT_INSURED
    # Insured now as the request names: the insurance now decides, and the flag is not set.
    assert decide(stay, PERSON, home, [], [], NOW, InsuredBefore(MOVED, CHANGED)) == Eligible(Basis.HOME, None)


def test_a_stay_admitted_while_the_insurance_before_was_not_yet_held_is_not_settled_under_it():
    """Stopped on 10-01, resumed on 11-01, stopped again on 11-20: the insurance kept from before
    the last stop began on 11-01, and a stay admitted in the gap between was never insured (a review
    of session 38: it settled)."""
    resumed = datetime(2026, 11, 1, 1, 0, tzinfo=UTC)  # 09:00 Beijing time
    held = InsuredBefore(PERSON, CHANGED, since=resumed)
    home = Facility("H2", "Langfang", "131000", 2, frozenset(MedType))

    def stay(day, at=None):
        return visit(MedType.INPATIENT, treating="131000", admitted=day, admitted_at=at)

    assert decide(stay(date(2026, 10, 15)), STOPPED, home, [], [], NOW, held).code is Refusal.NOT_INSURED
    assert isinstance(decide(stay(date(2026, 11, 5)), STOPPED, home, [], [], NOW, held), Eligible)
    # The day it began, by its day alone: held; by its moment: from then on.
    assert isinstance(decide(stay(date(2026, 11, 1)), STOPPED, home, [], [], NOW, held), Eligible)
    early = datetime(2026, 11, 1, 0, 30, tzinfo=UTC)
    assert decide(stay(date(2026, 11, 1), early), STOPPED, home, [], [], NOW, held).code is Refusal.NOT_INSURED
    assert isinstance(decide(stay(date(2026, 11, 1), resumed), STOPPED, home, [], [], NOW, held), Eligible)
