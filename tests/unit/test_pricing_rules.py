"""Each pricing rule of DOMAIN.md on hand-computed numbers, named after the rule."""

from dataclasses import replace
from decimal import Decimal as D

import pytest

from yidi.domain.codes import ChargeClass, FilingCategory, FundType, InsuranceType, MedType, PersonType
from yidi.domain.policy import DeductibleScope, Layer, LayerBase, PolicyError, validate_policy
from yidi.domain.pricing import OUTPATIENT_QUOTA, POOLED_PAID, Bill, deductible_counter, price

from tests.unit.factories import DAY, bill, catalogue, item, policy, rule, terms

OP = MedType.GENERAL_OUTPATIENT
IP = MedType.INPATIENT


def test_r1_item_missing_from_the_catalogue_is_fully_self_paid_with_the_reason():
    p = price(bill(("NOT-LISTED", "2", "10.00")), catalogue(), policy(rule(OP)), terms(OP), {})
    assert p.fulamt_ownpay_amt == D("20.00") and p.inscp_scp_amt == 0 and p.hifp_pay == 0
    assert "not in the catalogue" in p.items[0].note


def test_r1_class_c_item_is_fully_self_paid():
    p = price(bill(("C1", "1", "99.99")), catalogue(item("C1", ChargeClass.C)), policy(rule(OP)), terms(OP), {})
    assert p.fulamt_ownpay_amt == D("99.99") and p.psn_part_amt == D("99.99")


def test_r1_price_above_the_ceiling_is_self_paid_then_class_b_share_applies_to_the_rest():
    # 3 × 52.00 = 156.00; ceiling 45 → 3 × 7 = 21.00 over; class B 10% of 135.00 = 13.50
    cat = catalogue(item("B1", ChargeClass.B, "0.10", ceiling="45.00"))
    p = price(bill(("B1", "3", "52.00")), cat, policy(rule(OP, ratio="0.50")), terms(OP), {})
    assert (p.overlmt_selfpay, p.preselfpay_amt, p.inscp_scp_amt) == (D("21.00"), D("13.50"), D("121.50"))
    assert p.hifp_pay == D("60.75")


def test_r12_first_self_pay_moves_a_share_of_the_scope_to_the_person_for_temporary_trips():
    pol = policy(rule(OP, ratio="0.50"), first_selfpay={FilingCategory.TEMPORARY_OTHER: D("0.10")})
    p = price(bill(("A1", "1", "200.00")), catalogue(item("A1")), pol, terms(OP, category=FilingCategory.TEMPORARY_OTHER), {})
    assert p.preselfpay_amt == D("20.00") and p.inscp_scp_amt == D("180.00") and p.hifp_pay == D("90.00")


def test_r17_a_trip_whose_filing_the_province_waived_still_pays_the_first_self_pay_but_no_r11_reduction():
    # Seed 002 §6: the first self-pay applies to temporary trips 省内跨市 as well as 跨省; §7 only
    # drops the filing for trips between the province's cities.
    pol = policy(rule(OP, ratio="0.50"), first_selfpay={FilingCategory.TEMPORARY_OTHER: D("0.10")},
                 reductions={FilingCategory.TEMPORARY_OTHER: D("0.20")})
    waived = price(bill(("A1", "1", "200.00")), catalogue(item("A1")), pol, terms(OP, category=None, waived_filing=True), {})
    at_home = price(bill(("A1", "1", "200.00")), catalogue(item("A1")), pol, terms(OP, category=None), {})
    assert waived.preselfpay_amt == D("20.00") and waived.hifp_pay == D("90.00")  # 180 × 0.50, not × 0.30
    assert "R17" in waived.funds[0].explanation
    assert at_home.preselfpay_amt == 0 and at_home.hifp_pay == D("100.00")


def test_r17_a_waived_trip_in_a_two_group_province_pays_its_temporary_first_self_pay():
    pol = policy(rule(OP, ratio="0.50"), first_selfpay={FilingCategory.TEMPORARY: D("0.10")},
                 reductions={FilingCategory.TEMPORARY: D("0.10")})
    waived = price(bill(("A1", "1", "200.00")), catalogue(item("A1")), pol, terms(OP, category=None, waived_filing=True), {})
    assert waived.preselfpay_amt == D("20.00") and waived.hifp_pay == D("90.00")  # no R11 reduction either
    assert "temporary (filing waived, R17)" in waived.funds[0].explanation


def test_r4_a_two_group_temporary_filing_under_the_six_categories_is_priced_as_another_temporary_trip():
    # The insured region names referral, emergency and other trips: a filing of "temporary" (the
    # two groups' word) found neither a reduction nor a first self-pay, and was paid as long-term.
    pol = policy(rule(OP, ratio="0.50"), first_selfpay={FilingCategory.TEMPORARY_OTHER: D("0.10")},
                 reductions={FilingCategory.REFERRAL: D("0.05"), FilingCategory.TEMPORARY_OTHER: D("0.20")})
    p = price(bill(("A1", "1", "200.00")), catalogue(item("A1")), pol, terms(OP, category=FilingCategory.TEMPORARY), {})
    # 200 − 10 % first self-pay = 180; × (0.50 − 0.20) = 54.00
    assert p.preselfpay_amt == D("20.00") and p.hifp_pay == D("54.00")
    assert "filed as temporary" in p.funds[0].explanation and "temporary_other" in p.funds[0].explanation
    as_other = price(bill(("A1", "1", "200.00")), catalogue(item("A1")), pol,
                     terms(OP, category=FilingCategory.TEMPORARY_OTHER), {})
    assert (as_other.preselfpay_amt, as_other.hifp_pay) == (p.preselfpay_amt, p.hifp_pay)
    assert "filed as" not in as_other.funds[0].explanation


def test_r4_the_six_categories_temporary_trips_are_priced_as_temporary_under_the_two_groups():
    pol = policy(rule(OP, ratio="0.50"), first_selfpay={FilingCategory.TEMPORARY: D("0.10")},
                 reductions={FilingCategory.TEMPORARY: D("0.10")})
    for category in (FilingCategory.REFERRAL, FilingCategory.EMERGENCY, FilingCategory.TEMPORARY_OTHER):
        p = price(bill(("A1", "1", "200.00")), catalogue(item("A1")), pol, terms(OP, category=category), {})
        assert p.preselfpay_amt == D("20.00") and p.hifp_pay == D("72.00"), category  # 180 × 0.40
        assert f"filed as {category.value}" in p.funds[0].explanation
    # Long-term filings have neither, in either scheme.
    p = price(bill(("A1", "1", "200.00")), catalogue(item("A1")), pol, terms(OP, category=FilingCategory.LONG_TERM_RESIDENT), {})
    assert p.preselfpay_amt == 0 and p.hifp_pay == D("100.00")


def test_r4_a_policy_naming_no_temporary_category_reads_every_category_as_filed():
    pol = policy(rule(OP, ratio="0.50"))
    for category in FilingCategory:
        assert pol.in_scheme(category) is category
    assert pol.in_scheme(None) is None


def test_r4_a_policy_published_names_the_temporary_categories_of_one_scheme_one_stored_keeps_what_it_had():
    from pydantic import ValidationError

    from yidi.contracts.refdata import STORED_CONTEXT, PolicyRecord

    body = {"insuplc_admdvs": "131000", "insutype": "310", "version": "V1", "begndate": "2024-01-01",
            "rules": [{"med_types": ["11"], "deductible": "0.00", "ratio": "0.50"}]}
    mixed = [{"reductions": {"temporary": "0.10", "referral": "0.05"}},
             {"reductions": {"temporary_other": "0.10"}, "first_selfpay": {"temporary": "0.10"}}]
    for fields in mixed:
        with pytest.raises(ValidationError, match="R4"):
            PolicyRecord.model_validate(body | fields)
    # Published before the check: still read, and each category it names priced as it names it.
    stored = PolicyRecord.model_validate(body | mixed[0], context=STORED_CONTEXT).to_domain()
    assert stored.in_scheme(FilingCategory.REFERRAL) is FilingCategory.REFERRAL
    assert stored.in_scheme(FilingCategory.TEMPORARY) is FilingCategory.TEMPORARY
    p = price(bill(("A1", "1", "200.00")), catalogue(item("A1")), stored, terms(OP, category=FilingCategory.REFERRAL), {})
    assert p.hifp_pay == D("90.00")  # 200 × (0.50 − 0.05)


def test_r12_first_self_pay_does_not_touch_long_term_filings():
    pol = policy(rule(OP, ratio="0.50"), first_selfpay={FilingCategory.TEMPORARY_OTHER: D("0.10")})
    p = price(bill(("A1", "1", "200.00")), catalogue(item("A1")), pol, terms(OP), {})
    assert p.preselfpay_amt == 0 and p.hifp_pay == D("100.00")


def test_deductible_is_taken_from_the_scope_once_per_year_and_crossed_over_two_settlements():
    pol = policy(rule(OP, deductible="300.00", ratio="0.50", deductible_bucket="outpatient"))
    first = price(bill(("A1", "1", "200.00")), catalogue(item("A1")), pol, terms(OP), {})
    assert first.act_pay_dedc == D("200.00") and first.hifp_pay == 0
    used = dict(first.usage_delta)
    second = price(bill(("A1", "1", "200.00")), catalogue(item("A1")), pol, terms(OP), used)
    assert second.act_pay_dedc == D("100.00") and second.hifp_pay == D("50.00")


def test_unnamed_rules_count_their_deductible_by_their_kind_of_care_not_in_one_bucket():
    # DOMAIN step 3: the year's deductible "for this kind of care". Unnamed rules shared one bucket
    # ("default"): a 400 outpatient bill took 300, and a later 1,000 stay found 200 of its 500 left
    # (fund 640.00 instead of 400.00).
    pol = policy(rule(OP, deductible="300.00", ratio="0.50"), rule(IP, deductible="500.00", ratio="0.80"),
                 rule(OP, deductible="300.00", ratio="0.60", facility_levels=frozenset({1})))
    outpatient = price(bill(("A1", "1", "400.00")), catalogue(item("A1")), pol, terms(OP), {})
    assert outpatient.act_pay_dedc == D("300.00")
    stay = price(bill(("A1", "1", "1000.00")), catalogue(item("A1")), pol, terms(IP), outpatient.usage_delta)
    assert (stay.act_pay_dedc, stay.hifp_pay) == (D("500.00"), D("400.00"))
    # Rules for the same care at another facility level share the kind's deductible.
    level_1 = price(bill(("A1", "1", "400.00")), catalogue(item("A1")), pol, replace(terms(OP), facility_level=1),
                    outpatient.usage_delta)
    assert level_1.act_pay_dedc == 0


def test_deductible_per_stay_starts_again_for_another_stay():
    pol = policy(rule(IP, deductible="900.00", ratio="0.85", deductible_scope=DeductibleScope.STAY, deductible_bucket="ip"))
    first = price(bill(("A1", "1", "1000.00"), visit="STAY-1"), catalogue(item("A1")), pol, terms(IP), {})
    second = price(bill(("A1", "1", "1000.00"), visit="STAY-2"), catalogue(item("A1")), pol, terms(IP), first.usage_delta)
    assert first.act_pay_dedc == second.act_pay_dedc == D("900.00")
    assert deductible_counter("ip", DeductibleScope.STAY, "STAY-1") in first.usage_delta


def test_r11_reduction_lowers_the_ratio_for_temporary_trips():
    pol = policy(rule(OP, ratio="0.70"), reductions={FilingCategory.TEMPORARY_OTHER: D("0.20")})
    p = price(bill(("A1", "1", "100.00")), catalogue(item("A1")), pol, terms(OP, category=FilingCategory.TEMPORARY_OTHER), {})
    assert p.ratio == D("0.50") and p.hifp_pay == D("50.00")
    assert "R11" in p.funds[0].explanation


@pytest.mark.parametrize(
    ("category", "reduction"),
    [(FilingCategory.REFERRAL, "0.11"), (FilingCategory.EMERGENCY, "0.15"), (FilingCategory.TEMPORARY_OTHER, "0.21"),
     (FilingCategory.RETIREE_RESETTLED, "0.01")],
)
def test_r11_a_policy_reducing_beyond_the_limits_is_refused_when_loaded(category, reduction):
    with pytest.raises(PolicyError, match="R11"):
        policy(rule(OP), reductions={category: D(reduction)})


def test_r5_emergency_without_a_filing_gets_no_reduction():
    pol = policy(rule(MedType.EMERGENCY, ratio="0.60"), reductions={FilingCategory.EMERGENCY: D("0.10")})
    p = price(bill(("A1", "1", "100.00")), catalogue(item("A1")), pol, terms(MedType.EMERGENCY, category=None), {})
    assert p.ratio == D("0.60")


def test_annual_cap_stops_the_pooled_fund_at_what_is_left():
    pol = policy(rule(IP, ratio="0.90"), annual_cap=D("1000.00"))
    p = price(bill(("A1", "1", "2000.00")), catalogue(item("A1")), pol, terms(IP), {POOLED_PAID: D("700.00")})
    assert p.hifp_pay == D("300.00") and "annual cap" in p.funds[0].explanation
    # crt_payb_lmt_amt (本次可支付限额金额): what the fund could pay on this bill, the cap left before it
    assert p.funds[0].limit_left == D("300.00")


def test_r13_general_outpatient_quota_is_shared_and_never_exceeded():
    pol = policy(rule(OP, ratio="0.50"), outpatient_quota=D("100.00"))
    p = price(bill(("A1", "1", "400.00")), catalogue(item("A1")), pol, terms(OP), {OUTPATIENT_QUOTA: D("40.00")})
    assert p.hifp_pay == D("60.00") and p.usage_delta[OUTPATIENT_QUOTA] == D("60.00")
    assert p.funds[0].limit_left == D("60.00")  # the quota left before this bill, all of it used by it
    assert "R13" in p.funds[0].explanation


def test_r13_quota_does_not_apply_to_inpatient_care():
    pol = policy(rule(IP, ratio="0.50"), outpatient_quota=D("100.00"))
    p = price(bill(("A1", "1", "400.00")), catalogue(item("A1")), pol, terms(IP), {OUTPATIENT_QUOTA: D("100.00")})
    assert p.hifp_pay == D("200.00")


def test_r18_serious_illness_pays_above_its_threshold_on_what_the_pooled_fund_left():
    pol = policy(
        rule(IP, ratio="0.60"), insutype=InsuranceType.RESIDENT,
        layers=(Layer(FundType.RESIDENT_SERIOUS_ILLNESS, D("15000.00"), D("0.60")),),
    )
    t = terms(IP, insutype=InsuranceType.RESIDENT, person=PersonType.RESIDENT)
    # scope 50,000: pooled 30,000; left 20,000, of which 5,000 above the threshold × 0.60 = 3,000
    p = price(bill(("A1", "1", "50000.00")), catalogue(item("A1")), pol, t, {})
    assert p.hifp_pay == D("30000.00") and p.hifmi_pay == D("3000.00")
    assert p.psn_part_amt == D("17000.00")


def test_r18_the_employee_large_amount_subsidy_pays_on_the_cost_past_the_pooled_funds_annual_cap():
    """Before, the only base was what the pooled fund left inside the scope, so the demo's threshold
    of 250,000 (the pooled cap) was reached only by stays of well over a million: a 400,000 stay got
    nothing from the subsidy."""
    large = Layer(FundType.EMPLOYEE_LARGE_AMOUNT, D("0"), D("0.85"), D("400000.00"), base=LayerBase.ABOVE_POOLED_CAP)
    pol = policy(rule(IP, ratio="0.80"), annual_cap=D("250000.00"), layers=(large,))
    # 400,000 in scope: the pooled fund's 250,000 covers 312,500 at 80 %; 87,500 past the cap × 0.85
    stay = price(bill(("A1", "1", "400000.00")), catalogue(item("A1")), pol, terms(IP), {})
    assert (stay.hifp_pay, stay.hifob_pay, stay.psn_part_amt) == (D("250000.00"), D("74375.00"), D("75625.00"))
    assert "past the pooled fund's annual cap 87500.00" in stay.funds[1].explanation
    # below the cap: nothing past it, the subsidy pays nothing
    small = price(bill(("A1", "1", "100000.00")), catalogue(item("A1")), pol, terms(IP), {})
    assert (small.hifp_pay, small.hifob_pay) == (D("80000.00"), D("0"))
    # the cap reached by earlier stays this year: all of this one is past it
    later = price(bill(("A1", "1", "10000.00")), catalogue(item("A1")), pol, terms(IP), stay.usage_delta)
    assert (later.hifp_pay, later.hifob_pay) == (D("0"), D("8500.00"))


def test_r18_a_layer_pays_only_for_the_kinds_of_care_it_names():
    """The pooled cap is shared by every kind of care: once it is used up, a large-amount subsidy
    for stays must not pay general-outpatient bills at 85 % (nor get round the R13 quota)."""
    large = Layer(FundType.EMPLOYEE_LARGE_AMOUNT, D("0"), D("0.85"), None, base=LayerBase.ABOVE_POOLED_CAP,
                  med_types=frozenset({MedType.INPATIENT, MedType.CHRONIC_OUTPATIENT}))
    pol = policy(rule(IP, ratio="0.80"), rule(OP, ratio="0.50"), annual_cap=D("1000.00"), layers=(large,))
    used_up = {POOLED_PAID: D("1000.00")}
    stay = price(bill(("A1", "1", "1000.00")), catalogue(item("A1")), pol, terms(IP), used_up)
    visit = price(bill(("A1", "1", "1000.00")), catalogue(item("A1")), pol, terms(OP), used_up)
    assert (stay.hifob_pay, visit.hifob_pay, visit.psn_part_amt) == (D("850.00"), D("0"), D("1000.00"))
    # the fund's row shows what the layer paid on: the cost past the cap, not all the pooled fund left
    assert (stay.funds[1].base, stay.funds[1].amount) == (D("1000.00"), D("850.00"))


def test_r18_the_large_amount_subsidy_pays_nothing_while_the_quota_not_the_cap_stops_the_pooled_fund():
    """A general-outpatient bill stopped by the R13 quota, with 100.00 of the pooled cap left, was
    paid 708.33 by a subsidy for cost "past the pooled fund's annual cap", which it never reached."""
    large = Layer(FundType.EMPLOYEE_LARGE_AMOUNT, D("0"), D("0.85"), D("500000.00"), base=LayerBase.ABOVE_POOLED_CAP)
    pol = policy(rule(OP, ratio="0.60"), annual_cap=D("300000.00"), outpatient_quota=D("2500.00"), layers=(large,))
    used = {POOLED_PAID: D("299900.00"), OUTPATIENT_QUOTA: D("2500.00")}
    visit = price(bill(("A1", "1", "1000.00")), catalogue(item("A1")), pol, terms(OP), used)
    assert (visit.hifp_pay, visit.hifob_pay, visit.psn_part_amt) == (D("0"), D("0"), D("1000.00"))
    # The quota left larger than the cap left: the cap stops the fund, and the subsidy pays past it.
    roomy = {POOLED_PAID: D("299900.00"), OUTPATIENT_QUOTA: D("0")}
    capped = price(bill(("A1", "1", "1000.00")), catalogue(item("A1")), pol, terms(OP), roomy)
    # 100.00 of cap covers 166.67 at 60 %; 833.33 past it × 0.85 = 708.33
    assert (capped.hifp_pay, capped.hifob_pay) == (D("100.00"), D("708.33"))


def test_r18_the_large_amount_subsidy_pays_past_a_cap_used_up_whatever_the_pooled_ratio():
    # The cap used up by earlier stays and the ratio lowered to 0 (R11): all of the bill is past the
    # cap all the same (at a ratio of 0.01 it paid 8,500.00, at 0 nothing).
    large = Layer(FundType.EMPLOYEE_LARGE_AMOUNT, D("0"), D("0.85"), None, base=LayerBase.ABOVE_POOLED_CAP)
    pol = policy(rule(IP, ratio="0.10"), annual_cap=D("250000.00"), layers=(large,),
                 reductions={FilingCategory.TEMPORARY_OTHER: D("0.10")})
    t = terms(IP, category=FilingCategory.TEMPORARY_OTHER, person=PersonType.IN_SERVICE)
    stay = price(bill(("A1", "1", "10000.00")), catalogue(item("A1")), pol, t, {POOLED_PAID: D("250000.00")})
    assert (stay.hifp_pay, stay.hifob_pay) == (D("0"), D("8500.00"))


def test_r18_the_large_amount_subsidy_when_the_quota_and_the_cap_left_are_equal_or_the_cap_is_used_up():
    large = Layer(FundType.EMPLOYEE_LARGE_AMOUNT, D("0"), D("0.85"), None, base=LayerBase.ABOVE_POOLED_CAP)
    pol = policy(rule(OP, ratio="0.60"), annual_cap=D("300000.00"), outpatient_quota=D("2500.00"), layers=(large,))
    # 100.00 left of both: the cap stops the fund as much as the quota does, so what is past it is
    # past the cap (100.00 covers 166.67 at 60 %; 833.33 × 0.85 = 708.33).
    tie = {POOLED_PAID: D("299900.00"), OUTPATIENT_QUOTA: D("2400.00")}
    tied = price(bill(("A1", "1", "1000.00")), catalogue(item("A1")), pol, terms(OP), tie)
    assert (tied.hifp_pay, tied.hifob_pay) == (D("100.00"), D("708.33"))
    # The cap used up by earlier bills, the quota too: all of the bill is past the cap.
    spent = {POOLED_PAID: D("300000.00"), OUTPATIENT_QUOTA: D("2500.00")}
    used_up = price(bill(("A1", "1", "1000.00")), catalogue(item("A1")), pol, terms(OP), spent)
    assert (used_up.hifp_pay, used_up.hifob_pay, used_up.psn_part_amt) == (D("0"), D("850.00"), D("150.00"))


@pytest.mark.parametrize("fund", [FundType.EMPLOYEE_POOLED, FundType.RESIDENT_POOLED, FundType.EMPLOYEE_ACCOUNT])
def test_r18_a_layer_of_a_pooled_fund_or_the_account_is_refused_when_loaded(fund):
    # A pooled-fund layer paid past the pooled cap (650.00 against 300.00); an account layer broke
    # fund_pay_sumamt = the funds named in setlinfo (750.00 against 500.00).
    with pytest.raises(PolicyError, match="not a further layer"):
        validate_policy(policy(rule(IP), annual_cap=D("300.00"), layers=(Layer(fund, D("0"), D("0.50")),)))


def test_r18_two_layers_of_one_fund_are_refused_when_loaded():
    # Their year's counters overwrote each other: 658.00 paid in a year against a cap of 300.00.
    two = (Layer(FundType.RESIDENT_SERIOUS_ILLNESS, D("100.00"), D("0.60"), D("300.00")),
           Layer(FundType.RESIDENT_SERIOUS_ILLNESS, D("0"), D("0.70"), D("300.00")))
    with pytest.raises(PolicyError, match="390200 appears twice"):
        validate_policy(policy(rule(IP), insutype=InsuranceType.RESIDENT, layers=two))


def test_r18_layers_listed_out_of_the_payment_order_are_refused_when_loaded():
    # Each layer pays its share of what the ones before it left: medical assistance listed before
    # serious illness split a 50,000 stay 0 / 14,000 (person 6,000) instead of 3,000 / 11,900 (5,100).
    serious = Layer(FundType.RESIDENT_SERIOUS_ILLNESS, D("15000.00"), D("0.60"))
    assistance = Layer(FundType.MEDICAL_ASSISTANCE, D("0"), D("0.70"), requires="medical_assistance")
    civil = Layer(FundType.CIVIL_SERVANT, D("0"), D("0.50"), requires="civil_servant")
    with pytest.raises(PolicyError, match="610100 .* is listed after|390200 .* is listed after"):
        validate_policy(policy(rule(IP), insutype=InsuranceType.RESIDENT, layers=(assistance, serious)))
    with pytest.raises(PolicyError, match="R18: layer 320100"):
        validate_policy(policy(rule(IP), layers=(assistance, civil)))
    validate_policy(policy(rule(IP), insutype=InsuranceType.RESIDENT, layers=(serious, assistance)))
    validate_policy(policy(rule(IP), layers=(Layer(FundType.EMPLOYEE_LARGE_AMOUNT, D("0"), D("0.85")), civil, assistance)))


def test_r18_a_policy_carries_only_its_own_insurances_layers():
    # An employee policy carrying residents' serious-illness insurance beside the large-amount
    # subsidy was loaded, and paid an employee's 1,000.00 bill hifmi 100.00 and hifob 50.00: two
    # layers on one base, one of them the residents' fund.
    serious = Layer(FundType.RESIDENT_SERIOUS_ILLNESS, D("0"), D("0.50"))
    large = Layer(FundType.EMPLOYEE_LARGE_AMOUNT, D("0"), D("0.50"))
    civil = Layer(FundType.CIVIL_SERVANT, D("0"), D("0.50"), requires="civil_servant")
    assistance = Layer(FundType.MEDICAL_ASSISTANCE, D("0"), D("0.70"), requires="medical_assistance")
    with pytest.raises(PolicyError, match=r"R18: layer 390200 \(resident serious-illness insurance\) is not a layer "
                                          r"of 310 \(employee\) insurance"):
        validate_policy(policy(rule(IP), insutype=InsuranceType.EMPLOYEE, layers=(serious, large)))
    for other in (large, civil):
        with pytest.raises(PolicyError, match=f"R18: layer {other.fund_type.value} .* is not a layer of 390"):
            validate_policy(policy(rule(IP), insutype=InsuranceType.RESIDENT, layers=(serious, other)))
    validate_policy(policy(rule(IP), insutype=InsuranceType.EMPLOYEE, layers=(large, civil, assistance)))
    validate_policy(policy(rule(IP), insutype=InsuranceType.RESIDENT, layers=(serious, assistance)))

def test_r18_a_layer_above_the_pooled_cap_needs_a_pooled_cap():
    large = Layer(FundType.EMPLOYEE_LARGE_AMOUNT, D("0"), D("0.85"), base=LayerBase.ABOVE_POOLED_CAP)
    with pytest.raises(PolicyError, match="no annual_cap"):
        validate_policy(policy(rule(IP), layers=(large,)))


def test_r18_a_layer_that_requires_a_qualification_pays_only_the_qualified():
    pol = policy(rule(OP, ratio="0.50"), layers=(Layer(FundType.CIVIL_SERVANT, D("0"), D("0.50"), requires="civil_servant"),))
    plain = price(bill(("A1", "1", "100.00")), catalogue(item("A1")), pol, terms(OP), {})
    civil = price(bill(("A1", "1", "100.00")), catalogue(item("A1")), pol, terms(OP, qualifications=frozenset({"civil_servant"})), {})
    assert plain.cvlserv_pay == 0 and civil.cvlserv_pay == D("25.00")


def test_r16_individual_account_pays_first_within_its_balance():
    pol = policy(rule(OP, ratio="0.50"))
    p = price(bill(("A1", "1", "100.00")), catalogue(item("A1")), pol, terms(OP, use_account=True, account_balance=D("30.00")), {})
    assert (p.acct_pay, p.psn_cash_pay, p.account_balance_after) == (D("30.00"), D("20.00"), D("0.00"))


def test_r16_account_is_not_used_unless_the_request_allows_it():
    p = price(bill(("A1", "1", "100.00")), catalogue(item("A1")), policy(rule(OP, ratio="0.50")), terms(OP, account_balance=D("30.00")), {})
    assert p.acct_pay == 0 and p.psn_cash_pay == D("50.00")


def test_most_specific_benefit_rule_wins():
    pol = policy(rule(OP, ratio="0.50"), rule(OP, ratio="0.60", person_types=frozenset({PersonType.RETIRED})))
    assert price(bill(("A1", "1", "100.00")), catalogue(item("A1")), pol, terms(OP), {}).ratio == D("0.60")
    assert price(bill(("A1", "1", "100.00")), catalogue(item("A1")), pol, terms(OP, person=PersonType.IN_SERVICE), {}).ratio == D("0.50")


def test_calculation_order_option_takes_the_deductible_before_the_first_self_pay():
    from yidi.domain.policy import CalculationOrder

    common = dict(first_selfpay={FilingCategory.TEMPORARY_OTHER: D("0.10")})
    r = rule(OP, deductible="100.00", ratio="0.50")
    t = terms(OP, category=FilingCategory.TEMPORARY_OTHER)
    default = price(bill(("A1", "1", "1000.00")), catalogue(item("A1")), policy(r, **common), t, {})
    deductible_first = price(
        bill(("A1", "1", "1000.00")), catalogue(item("A1")), policy(r, order=CalculationOrder.DEDUCTIBLE_FIRST, **common), t, {}
    )
    # default: 10% of 1000 = 100 first self-pay; (900 − 100) × 0.5 = 400
    assert (default.preselfpay_amt, default.hifp_pay) == (D("100.00"), D("400.00"))
    # deductible first: 10% of (1000 − 100) = 90; scope 910; (910 − 100) × 0.5 = 405
    assert (deductible_first.preselfpay_amt, deductible_first.hifp_pay) == (D("90.00"), D("405.00"))
    assert "deductible_first" in deductible_first.funds[0].explanation


def test_r14_a_rule_for_one_chronic_disease_beats_the_general_chronic_rule():
    chronic = MedType.CHRONIC_OUTPATIENT
    pol = policy(rule(chronic, ratio="0.70"), rule(chronic, ratio="0.90", diseases=frozenset({"N18"})))
    dialysis = price(bill(("A1", "1", "100.00")), catalogue(item("A1")), pol, terms(chronic, disease_code="N18.500"), {})
    diabetes = price(bill(("A1", "1", "100.00")), catalogue(item("A1")), pol, terms(chronic, disease_code="E11.900"), {})
    assert (dialysis.ratio, diabetes.ratio) == (D("0.90"), D("0.70"))


def test_r14_a_disease_rule_matches_a_code_sent_with_or_without_its_dot():
    chronic = MedType.CHRONIC_OUTPATIENT
    pol = policy(rule(chronic, ratio="0.70"), rule(chronic, ratio="0.90", diseases=frozenset({"N18.5"})))
    for code in ("N18.500", "N18500", "n185"):
        p = price(bill(("A1", "1", "100.00")), catalogue(item("A1")), pol, terms(chronic, disease_code=code), {})
        assert p.ratio == D("0.90"), code
    assert pol.rule_for(chronic, PersonType.RETIRED, 3, "N18.400").ratio == D("0.70")


def test_r14_a_disease_rule_covers_a_visit_coded_by_its_treatment():
    # A dialysis rule keyed on kidney failure (N18) priced a dialysis session coded Z49 or Z99.2 at
    # the general chronic ratio; a diabetes rule does not take it.
    chronic = MedType.CHRONIC_OUTPATIENT
    pol = policy(rule(chronic, ratio="0.70"), rule(chronic, ratio="0.90", diseases=frozenset({"N18"})),
                 rule(chronic, ratio="0.80", diseases=frozenset({"E11"})))
    for code, ratio in (("Z49.101", "0.90"), ("Z99.200", "0.90"), ("N18.500", "0.90"), ("E11.900", "0.80"),
                        ("Z51.100", "0.70"), ("I10.X00", "0.70")):
        assert pol.rule_for(chronic, PersonType.RETIRED, 3, code).ratio == D(ratio), code
    # A rule keyed on the treatment code itself is the region's word for it, whichever comes first.
    for rules in ((rule(chronic, ratio="0.90", diseases=frozenset({"N18"})), rule(chronic, ratio="0.95", diseases=frozenset({"Z49"}))),
                  (rule(chronic, ratio="0.95", diseases=frozenset({"Z49"})), rule(chronic, ratio="0.90", diseases=frozenset({"N18"})))):
        both = policy(rule(chronic, ratio="0.70"), *rules)
        assert both.rule_for(chronic, PersonType.RETIRED, 3, "Z49.101").ratio == D("0.95")
        assert both.rule_for(chronic, PersonType.RETIRED, 3, "N18.500").ratio == D("0.90")


def test_a_stay_is_named_by_its_facility_and_visit_number():
    pol = policy(rule(IP, deductible="900.00", ratio="0.85", deductible_scope=DeductibleScope.STAY, deductible_bucket="ip"))
    a = Bill("100", DAY, bill(("A1", "1", "1000.00")).lines, "H1")
    b = Bill("100", DAY, bill(("A1", "1", "1000.00")).lines, "H2")
    first = price(a, catalogue(item("A1")), pol, terms(IP), {})
    other = price(b, catalogue(item("A1")), pol, terms(IP), first.usage_delta)
    assert first.act_pay_dedc == other.act_pay_dedc == D("900.00")
    assert deductible_counter("ip", DeductibleScope.STAY, "100", "H1") in first.usage_delta
    again = price(a, catalogue(item("A1")), pol, terms(IP), first.usage_delta)
    assert again.act_pay_dedc == 0  # the same facility's stay: paid once


def test_the_rule_memo_is_bounded_by_the_policys_disease_prefixes_not_by_the_codes_sent():
    dialysis = rule(OP, ratio="0.90", diseases=frozenset({"N18"}))
    pol = policy(rule(OP, ratio="0.70"), dialysis)
    for n in range(500):
        pol.rule_for(OP, PersonType.RETIRED, 3, f"E11.{n:03d}")
    assert pol.rule_for(OP, PersonType.RETIRED, 3, "n18.500") is dialysis
    assert pol.rule_for(OP, PersonType.RETIRED, 3, "E11.900").ratio == D("0.70")
    assert len(pol._rule_memo) == 2


def test_r17_a_filed_temporary_trip_inside_a_waiving_province_keeps_its_first_self_pay_and_loses_no_ratio():
    # Eligibility flags a filed temporary trip inside a province that waives filing: holding the
    # filing must not settle worse than holding none (R11's reduction is for trips across provinces).
    pol = policy(rule(OP, ratio="0.50"), first_selfpay={FilingCategory.TEMPORARY_OTHER: D("0.10")},
                 reductions={FilingCategory.TEMPORARY_OTHER: D("0.20"), FilingCategory.REFERRAL: D("0.10")})
    lines = bill(("A1", "1", "200.00"))
    none = price(lines, catalogue(item("A1")), pol, terms(OP, category=None, waived_filing=True), {})
    filed = price(lines, catalogue(item("A1")), pol, terms(OP, category=FilingCategory.TEMPORARY_OTHER, waived_filing=True), {})
    referred = price(lines, catalogue(item("A1")), pol, terms(OP, category=FilingCategory.REFERRAL, waived_filing=True), {})
    across = price(lines, catalogue(item("A1")), pol, terms(OP, category=FilingCategory.TEMPORARY_OTHER), {})
    assert (filed.preselfpay_amt, filed.hifp_pay) == (none.preselfpay_amt, none.hifp_pay) == (D("20.00"), D("90.00"))
    assert (referred.preselfpay_amt, referred.hifp_pay) == (D("0.00"), D("100.00"))  # no first self-pay either
    assert across.hifp_pay == D("54.00")  # 180 × (0.50 − 0.20): the reduction stays for trips across provinces


def test_r1_a_persons_year_is_counted_per_fund_and_counters_kept_before_count_for_every_fund():
    from services.pricing.handlers import fund_prefix, fund_usage

    resident, employee = fund_prefix("131000", "390"), fund_prefix("131000", "310")
    counters = {resident + "pooled_paid": D("1150.00"), resident + "deductible:op": D("200.00"),
                employee + "pooled_paid": D("10.00"), "outpatient_quota": D("50.00")}  # the last: kept before
    assert fund_usage(counters, employee) == {"pooled_paid": D("10.00"), "outpatient_quota": D("50.00")}
    assert fund_usage(counters, resident) == {"pooled_paid": D("1150.00"), "deductible:op": D("200.00"),
                                              "outpatient_quota": D("50.00")}
    assert fund_usage({"pooled_paid": D("5.00"), employee + "pooled_paid": D("1.00")}, employee) == {"pooled_paid": D("6.00")}


def test_r17_a_filed_trip_inside_a_waiving_province_pays_no_more_first_self_pay_than_one_without_a_filing():
    pol = policy(rule(OP, ratio="0.50"), first_selfpay={FilingCategory.TEMPORARY_OTHER: D("0.10"),
                                                        FilingCategory.REFERRAL: D("0.15")})
    lines = bill(("A1", "1", "200.00"))
    referred = price(lines, catalogue(item("A1")), pol, terms(OP, category=FilingCategory.REFERRAL, waived_filing=True), {})
    assert referred.preselfpay_amt == D("20.00")  # the waived trip's 10 %, not the referral's 15 %


def test_r14_the_rule_a_visit_gets_does_not_depend_on_the_visits_priced_before_it():
    # The memo was keyed by the prefixes covering the code: Z49.101 and Z99.200 share N18 and Z49,
    # but only Z49.101 is the Z49 rule's own code. Whichever was priced first chose the other's rule,
    # for as long as pricing kept the policy (a review, session 36).
    chronic = MedType.CHRONIC_OUTPATIENT

    def pol():
        return policy(rule(chronic, ratio="0.70"), rule(chronic, ratio="0.90", diseases=frozenset({"N18"})),
                      rule(chronic, ratio="0.95", diseases=frozenset({"Z49"})))

    for first in ("Z99.200", "Z49.101", "N18.500"):
        for code in ("Z49.101", "Z99.200"):
            used = pol()
            used.rule_for(chronic, PersonType.RETIRED, 3, first)
            assert used.rule_for(chronic, PersonType.RETIRED, 3, code).ratio == \
                pol().rule_for(chronic, PersonType.RETIRED, 3, code).ratio, (first, code)
    assert pol().rule_for(chronic, PersonType.RETIRED, 3, "Z49.101").ratio == D("0.95")
    assert pol().rule_for(chronic, PersonType.RETIRED, 3, "Z99.200").ratio == D("0.90")
