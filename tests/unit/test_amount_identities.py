"""The amount identities of DOMAIN.md hold to the fen for any bill and policy (hypothesis)."""

from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from yidi.domain.catalogue import Catalogue, CatalogueItem
from yidi.domain.codes import ChargeClass, FilingCategory, FundType, InsuranceType, MedType, PersonType
from yidi.domain.policy import BenefitPolicy, BenefitRule, Layer, LayerBase
from yidi.domain.pricing import Bill, BillLine, Terms, price

from tests.unit.factories import DAY

money = st.decimals(min_value=D("0.01"), max_value=D("20000.00"), places=2)
ratio = st.decimals(min_value=D("0"), max_value=D("1"), places=2)
counts = st.sampled_from([D("1"), D("2"), D("3"), D("0.5"), D("10")])


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 8))
    items, lines = [], []
    for i in range(n):
        code = f"I{i}"
        cls = draw(st.sampled_from([ChargeClass.A, ChargeClass.B, ChargeClass.C, None]))
        count, unit = draw(counts), draw(money)
        lines.append(BillLine(str(i), code, code, count, unit, (count * unit).quantize(D("0.01"))))
        if cls is not None:
            items.append(CatalogueItem("110000", code, code, cls, draw(ratio) if cls is ChargeClass.B else D(0),
                                       draw(st.none() | money), DAY))
    insutype = draw(st.sampled_from(list(InsuranceType)))
    med = draw(st.sampled_from(list(MedType)))
    category = draw(st.sampled_from([None, FilingCategory.RETIREE_RESETTLED, FilingCategory.REFERRAL, FilingCategory.TEMPORARY_OTHER]))
    annual_cap = draw(st.none() | money)
    large = (Layer(FundType.EMPLOYEE_LARGE_AMOUNT, draw(st.sampled_from([D(0), D("1000")])), draw(ratio),
                   draw(st.none() | money), base=LayerBase.ABOVE_POOLED_CAP,
                   med_types=draw(st.sampled_from([frozenset(), frozenset({MedType.INPATIENT})]))),)
    policy = BenefitPolicy(
        "131000", insutype, "p", DAY, (BenefitRule(frozenset(MedType), draw(st.sampled_from([D(0), D("300"), D("1200")])), draw(ratio)),),
        annual_cap=annual_cap, outpatient_quota=draw(st.none() | money),
        reductions={FilingCategory.REFERRAL: D("0.10"), FilingCategory.TEMPORARY_OTHER: draw(st.sampled_from([D(0), D("0.20")]))},
        first_selfpay={FilingCategory.TEMPORARY_OTHER: draw(st.sampled_from([D(0), D("0.10")]))},
        # Each insurance's own layers (R18): employees' large-amount subsidy above the pooled cap and
        # civil-servant subsidy, residents' serious-illness insurance; medical assistance for both.
        layers=((large if annual_cap is not None else ()) + (
            Layer(FundType.CIVIL_SERVANT, D(0), draw(ratio), draw(st.none() | money), requires="civil_servant"),)
            if insutype is InsuranceType.EMPLOYEE
            else (Layer(FundType.RESIDENT_SERIOUS_ILLNESS, draw(money), draw(ratio), draw(st.none() | money)),)) + (
            Layer(FundType.MEDICAL_ASSISTANCE, D(0), draw(ratio), draw(st.none() | money), requires="medical_assistance"),
        ),
    )
    terms = Terms(med, insutype, draw(st.sampled_from(list(PersonType))), 3, category,
                  use_account=draw(st.booleans()), account_balance=draw(money),
                  qualifications=draw(st.sampled_from([frozenset(), frozenset({"medical_assistance"}), frozenset({"civil_servant", "medical_assistance"})])))
    return Bill("V", DAY, tuple(lines)), Catalogue.in_force("110000", DAY, items), policy, terms


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_amount_identities_hold_to_the_fen(scenario):
    bill, catalogue, policy, terms = scenario
    p = price(bill, catalogue, policy, terms, {})
    assert p.medfee_sumamt == bill.total
    assert p.medfee_sumamt == p.fulamt_ownpay_amt + p.overlmt_selfpay + p.preselfpay_amt + p.inscp_scp_amt
    assert p.fund_pay_sumamt == p.hifp_pay + p.hifmi_pay + p.hifob_pay + p.cvlserv_pay + p.maf_pay
    assert p.psn_part_amt == p.medfee_sumamt - p.fund_pay_sumamt - p.hosp_part_amt == p.acct_pay + p.psn_cash_pay
    for amount in (p.fulamt_ownpay_amt, p.overlmt_selfpay, p.preselfpay_amt, p.inscp_scp_amt, p.act_pay_dedc,
                   p.fund_pay_sumamt, p.acct_pay, p.psn_cash_pay):
        assert amount >= 0 and amount == amount.quantize(D("0.01"))
    # The item columns add up to the totals (step 1), the first self-pay (step 2, R12) included.
    for column in ("fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt", "inscp_scp_amt"):
        assert sum((getattr(i, column) for i in p.items), D(0)) == getattr(p, column), column
        assert all(getattr(i, column) >= 0 for i in p.items), column


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_no_fund_pays_more_than_what_is_within_scope(scenario):
    bill, catalogue, policy, terms = scenario
    p = price(bill, catalogue, policy, terms, {})
    assert p.fund_pay_sumamt <= p.inscp_scp_amt
    assert p.act_pay_dedc <= p.inscp_scp_amt
    assert p.acct_pay <= terms.account_balance
    if policy.annual_cap is not None:
        assert p.hifp_pay <= policy.annual_cap
