"""Wire amounts: parsed strictly, and their canonical text checked the same way without a Decimal."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from yidi.domain.money import MoneyError, amount_text, fmt, parse_amount


@pytest.mark.parametrize("text", ["0.00", "48.89", "-3.10", "999999999999.99", "-999999999999.99"])
def test_a_two_decimal_amount_is_its_own_text(text):
    assert amount_text(text) == text
    assert parse_amount(text) == Decimal(text)


@pytest.mark.parametrize(("text", "canonical"), [("5", "5.00"), ("5.1", "5.10"), (Decimal("7"), "7.00"), (3, "3.00"),
                                                  ("1.230", "1.23")])
def test_other_exact_amounts_get_their_canonical_text(text, canonical):
    assert amount_text(text) == canonical


@pytest.mark.parametrize("bad", ["1.234", "abc", "NaN", "Infinity", "", 1.5, None, [], {}, "1,5",
                                 # beyond the ledger's numeric(14, 2), or beyond Decimal's precision
                                 "1000000000000.00", "-1000000000000.00", "1E+30", "1" * 29 + ".00", "1E+999999",
                                 # what Decimal() reads and the wire's plain decimal strings are not
                                 " 32.52 ", "3_2.52", "3.252e1", "３２.５２", "+32.52", ".5", "5."])
def test_what_parse_amount_refuses_amount_text_refuses(bad):
    with pytest.raises(MoneyError):
        parse_amount(bad)
    with pytest.raises(MoneyError):
        amount_text(bad)


@given(st.integers(min_value=-(10**14 - 1), max_value=10**14 - 1))
def test_amount_text_agrees_with_parse_and_format(fen):
    text = f"{'-' if fen < 0 else ''}{abs(fen) // 100}.{abs(fen) % 100:02d}"
    assert amount_text(text) == fmt(parse_amount(text)) == text


def test_spread_splits_to_the_fen_by_largest_remainder():
    D = Decimal
    from yidi.domain.money import spread

    assert spread(D("20.00"), [D("200.00")]) == [D("20.00")]
    assert spread(D("0.10"), [D("1.00"), D("1.00"), D("1.00")]) == [D("0.04"), D("0.03"), D("0.03")]
    assert spread(D("3.00"), [D("1.00"), D("0.00"), D("2.00")]) == [D("1.00"), D("0.00"), D("2.00")]
    assert spread(D("0.00"), [D("5.00")]) == [D("0.00")] and spread(D("1.00"), [D("0.00")]) == [D("0.00")]
    parts = spread(D("7.77"), [D("0.01"), D("3.33"), D("9.99"), D("0.50")])
    assert sum(parts) == D("7.77") and all(p <= w for p, w in zip(parts, [D("0.01"), D("3.33"), D("9.99"), D("0.50")]))


@pytest.mark.parametrize("first, then", [("0.00", "-0.00"), ("-0", "0"), ("0.8", "0.80"), ("1", "1.0000")])
def test_a_ratios_text_does_not_depend_on_an_equal_ratio_written_before(first, then):
    """``fmt_ratio`` is remembered per value: equal Decimals share a text, except zeros of either sign."""
    from yidi.domain.money import _ratio_text, fmt_ratio

    def plain(ratio: Decimal) -> str:  # the form as computed, not remembered
        whole, _, frac = format(ratio.normalize(), "f").partition(".")
        return f"{whole}.{frac.ljust(2, '0')}"

    _ratio_text.cache_clear()
    assert fmt_ratio(Decimal(first)) == plain(Decimal(first))
    assert fmt_ratio(Decimal(then)) == plain(Decimal(then))


@pytest.mark.parametrize("text", ["-0", "-0.00", Decimal("-0E-2"), "0", "0.00"])
def test_a_ratio_of_minus_zero_is_a_ratio_of_zero(text):
    from yidi.domain.money import fmt_ratio, parse_ratio

    assert fmt_ratio(parse_ratio(text)) == "0.00"


@pytest.mark.parametrize("text", [" 0.5 ", "\uff10.\uff15", "\u0660.\u0665", "5e-1", ".5", "0.1_0", "+0.5", "1e-900000",
                                  "0E+999999999", True, False])
def test_a_ratio_is_a_plain_decimal_string_not_a_boolean(text):
    # Decimal() read them all, and true as 1 (a review, session 37): the schema's ratio is digits with
    # a point. "0E+999999999" passed, and Postgres could not store it (refused as "could not process").
    from yidi.domain.money import MoneyError, parse_ratio

    with pytest.raises(MoneyError, match="not a ratio|not (true|false)"):
        parse_ratio(text)
    assert parse_ratio("0.5") == Decimal("0.5") and parse_ratio("1") == 1 and parse_ratio(0) == 0


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_no_amount(value):
    # bool is an int: true was an amount of 1.00, and a bill of true settled (a review, session 37).
    from pydantic import ValidationError

    from yidi.contracts.settlement import SettlementInput
    from yidi.domain.money import MoneyError, parse_amount

    with pytest.raises(MoneyError, match="not (true|false)"):
        parse_amount(value)
    line = {"feedetl_sn": "1", "hilist_code": "A", "hilist_name": "a", "cnt": "1", "pric": "1", "det_item_fee_sumamt": value}
    bill = {"psn_no": "P1", "insutype": "310", "med_type": "11", "mdtrt_id": "V1", "medfee_sumamt": value, "feedetail": [line]}
    with pytest.raises(ValidationError, match="not (true|false)"):
        SettlementInput.model_validate(bill)


@pytest.mark.parametrize("text", ["0.00000000001", Decimal("1E-11"), "0.1" + "0" * 100_000 + "1"])
def test_a_ratio_with_more_than_ten_decimals_is_refused(text):
    # "1e-900000" lies between 0 and 1: it was taken, and each answer using it wrote 900,000 digits.
    from yidi.domain.money import MoneyError, parse_ratio

    with pytest.raises(MoneyError, match="at most 10 decimals"):
        parse_ratio(text)
    assert parse_ratio("0.0000000001") == Decimal("1E-10") and parse_ratio("0.125000000000000") == Decimal("0.125")
    assert parse_ratio("0.00000000001", None) == Decimal("1E-11")  # a record stored before the limit


def test_a_stored_record_with_a_ratio_of_more_decimals_stays_readable():
    from pydantic import ValidationError

    from yidi.contracts.refdata import STORED_CONTEXT, CatalogueRecord

    record = {"mdtrtarea_admvs": "110000", "hilist_code": "A1", "hilist_name": "a", "chrgitm_lv": "02",
              "selfpay_prop": "0.33333333333", "begndate": "2025-01-01"}
    with pytest.raises(ValidationError, match="at most 10 decimals"):
        CatalogueRecord.model_validate(record)
    assert CatalogueRecord.model_validate(record, context=STORED_CONTEXT).selfpay_prop == Decimal("0.33333333333")

@given(st.decimals(min_value=Decimal("-999999999999.99"), max_value=Decimal("999999999999.99"), places=6))
def test_an_amounts_wire_text_is_its_rounding_to_the_fen(amount):
    from yidi.domain.money import to_fen

    rounded = str(to_fen(amount))
    assert fmt(amount) == ("0.00" if rounded == "-0.00" else rounded)  # a zero has no sign on the wire


@pytest.mark.parametrize("text", ["-0.00", "-00.00", "-0", "-0.0", Decimal("-0.00"), Decimal("-0")])
def test_a_zero_with_a_sign_is_read_and_written_as_zero(text):
    # A line of "-0.00" was taken, and its answer echoed "-0.00" (the wire's schema has no sign on a zero).
    read = parse_amount(text)
    assert read == 0 and not read.is_signed()
    assert amount_text(text) == "0.00"


@pytest.mark.parametrize("amount", ["-0.00", "-0.004", "-0.0049"])
def test_a_zero_worked_out_with_a_sign_is_written_without_it(amount):
    from yidi.domain.money import amount_texts

    assert fmt(Decimal(amount)) == "0.00"
    assert fmt(Decimal("0.00") * Decimal("-0.8")) == "0.00"
    assert amount_texts(["1.00", "-0.00", "-0.01"]) == ["1.00", "0.00", "-0.01"]


_TWO_DECIMALS = st.from_regex(r"-?[0-9]{1,12}\.[0-9]{2}", fullmatch=True)  # the usual amount
_ODD = st.one_of(  # a value beside them that is not the usual, amount or not
    st.sampled_from(["1.00\n2.00", "1.00\n", "\n1.00", "", "\n", "1.5", "1.005", "１.００", " 1.00", "1e2",
                     "9999999999999.00", "-0.00"]),
    st.decimals(min_value=Decimal(-1000), max_value=Decimal(1000), places=2),
    st.integers(min_value=-1000, max_value=1000),
)


@given(st.lists(_TWO_DECIMALS, max_size=18), st.one_of(st.none(), _ODD), st.integers(min_value=0, max_value=18))
@example(["3.00"], "1.00\n2.00", 0)  # two amounts in one value: as many pieces as values + 1
@example(["3.00", "4.00"], "1.00\n2.00", 1)
@example([], "1.00\n2.00", 0)
@example(["3.00"], "", 1)
def test_amount_texts_reads_a_list_as_amount_text_reads_each(values, odd, at):
    """One expression over the list gives what each value's own reading gives, or the same refusal."""
    from yidi.domain.money import amount_texts

    if odd is not None:
        values.insert(at, odd)
    try:
        expected = [amount_text(v) for v in values]
    except MoneyError as exc:
        with pytest.raises(MoneyError) as refused:
            amount_texts(values)
        assert str(refused.value) == str(exc)
    else:
        assert amount_texts(values) == expected
