"""WE1 of DOMAIN.md, computed by hand: the Langfang retiree treated in Beijing."""

from decimal import Decimal as D

from yidi.domain.pricing import POOLED_PAID, price

from tests.unit.factories import bill, terms, we1_catalogue, we1_policy


def we1():
    return price(
        bill(("XA10BFA013A001", "1", "32.52"), ("XA10BXR018A001", "1", "31.77")),
        we1_catalogue(), we1_policy(), terms(), {},
    )


def test_we1_class_b_first_self_pay_is_rounded_half_up_item_by_item():
    p = we1()
    assert [i.preselfpay_amt for i in p.items] == [D("0.00"), D("3.18")]  # 31.77 × 0.10 = 3.177
    assert [i.inscp_scp_amt for i in p.items] == [D("32.52"), D("28.59")]


def test_we1_pooled_fund_pays_eighty_percent_of_what_is_within_scope():
    p = we1()
    assert p.inscp_scp_amt == D("61.11")
    assert p.hifp_pay == D("48.89")  # 61.11 × 0.80 = 48.888
    assert p.ratio == D("0.80")


def test_we1_person_pays_the_rest_in_cash():
    p = we1()
    assert p.medfee_sumamt == D("64.29")
    assert p.psn_part_amt == D("15.40")
    assert p.psn_cash_pay == D("15.40")
    assert p.acct_pay == D("0.00")
    assert p.fund_pay_sumamt == D("48.89")


def test_we1_records_what_the_pooled_fund_paid_against_the_cap():
    assert we1().usage_delta == {POOLED_PAID: D("48.89")}


def test_we1_explains_the_fund_payment_in_words():
    text = we1().funds[0].explanation
    assert "61.11" in text and "0.80" in text and "48.89" in text and "R1" in text
