"""R1: a new catalogue or policy version takes effect on its date, without a restart."""

from datetime import date
from decimal import Decimal as D

import pytest

from yidi.domain.catalogue import Catalogue, CatalogueItem
from yidi.domain.codes import ChargeClass, InsuranceType, MedType, region_chain, within
from yidi.domain.policy import BenefitPolicy, BenefitRule, policy_in_force


def version(begin: date, ratio: str) -> BenefitPolicy:
    return BenefitPolicy("131000", InsuranceType.EMPLOYEE, str(begin), begin,
                         (BenefitRule(frozenset({MedType.GENERAL_OUTPATIENT}), D(0), D(ratio)),))


def test_the_policy_in_force_is_the_latest_version_that_has_begun():
    versions = [version(date(2024, 1, 1), "0.50"), version(date(2026, 1, 1), "0.60"), version(date(2027, 1, 1), "0.70")]
    assert policy_in_force(versions, "131000", InsuranceType.EMPLOYEE, date(2025, 12, 31)).version == "2024-01-01"
    assert policy_in_force(versions, "131000", InsuranceType.EMPLOYEE, date(2026, 1, 1)).version == "2026-01-01"
    assert policy_in_force(versions, "131000", InsuranceType.RESIDENT, date(2026, 1, 1)) is None
    assert policy_in_force(versions, "131000", InsuranceType.EMPLOYEE, date(2023, 1, 1)) is None


def test_a_catalogue_item_changes_class_on_its_date_and_ends_on_its_end_date():
    old = CatalogueItem("110000", "X1", "drug", ChargeClass.B, D("0.10"), None, date(2022, 1, 1), date(2026, 1, 1))
    new = CatalogueItem("110000", "X1", "drug", ChargeClass.A, D(0), None, date(2026, 1, 1))
    gone = CatalogueItem("110000", "X2", "old drug", ChargeClass.A, D(0), None, date(2022, 1, 1), date(2025, 6, 1))
    assert Catalogue.in_force("110000", date(2025, 12, 31), [old, new, gone]).get("X1").charge_class is ChargeClass.B
    assert Catalogue.in_force("110000", date(2026, 1, 1), [old, new, gone]).get("X1").charge_class is ChargeClass.A
    assert Catalogue.in_force("110000", date(2025, 6, 1), [old, new, gone]).get("X2") is None


def test_a_region_without_its_own_policy_takes_its_citys_then_its_provinces():
    def of(region: str, begin: date, ratio: str) -> BenefitPolicy:
        return BenefitPolicy(region, InsuranceType.EMPLOYEE, f"{region}-{begin}", begin,
                             (BenefitRule(frozenset({MedType.GENERAL_OUTPATIENT}), D(0), D(ratio)),))

    province, city, county = of("440000", date(2020, 1, 1), "0.50"), of("440100", date(2024, 1, 1), "0.60"), \
        of("440106", date(2026, 1, 1), "0.70")
    later_province = of("440000", date(2025, 1, 1), "0.55")
    versions = [province, later_province, city, county, of("450000", date(2020, 1, 1), "0.90")]
    on = InsuranceType.EMPLOYEE
    assert policy_in_force(versions, "440106", on, date(2026, 6, 1)) is county
    assert policy_in_force(versions, "440106", on, date(2025, 6, 1)) is city  # the county's has not begun
    assert policy_in_force(versions, "440106", on, date(2023, 6, 1)) is province
    assert policy_in_force(versions, "440104", on, date(2026, 6, 1)) is city  # a county without one: its city's
    assert policy_in_force(versions, "440300", on, date(2026, 6, 1)) is later_province  # another city: the province's
    assert policy_in_force(versions, "460100", on, date(2026, 6, 1)) is None  # another province's is not its


def test_a_regions_catalogue_is_its_own_entries_else_its_citys_else_its_provinces():
    def item(region: str, code: str, cls: ChargeClass, begin: date = date(2020, 1, 1)) -> CatalogueItem:
        return CatalogueItem(region, code, code, cls, D(0), None, begin)

    province_a = item("440000", "X1", ChargeClass.A)
    province_later = item("440000", "X1", ChargeClass.A, date(2025, 1, 1))
    city_c = item("440100", "X1", ChargeClass.C)  # the city's own entry stands, class C included
    only_province = item("440000", "X2", ChargeClass.A)
    elsewhere = item("450000", "X3", ChargeClass.A)
    versions = [province_a, province_later, city_c, only_province, elsewhere]
    county = Catalogue.in_force("440106", date(2026, 1, 1), versions)
    assert county.get("X1") is city_c and county.get("X2") is only_province and county.get("X3") is None
    other_city = Catalogue.in_force("440300", date(2026, 1, 1), versions)
    assert other_city.get("X1") is province_later and other_city.get("X2") is only_province
    # The more specific region's entry stands even where the province's began later.
    assert Catalogue.in_force("440100", date(2026, 1, 1), list(reversed(versions))).get("X1") is city_c


@pytest.mark.parametrize("region, chain", [
    ("440106", ("440106", "440100", "440000")),
    ("440100", ("440100", "440000")),
    ("440000", ("440000",)),
    ("110101", ("110101", "110100", "110000")),  # a municipality's district, its 市辖区, the municipality
    ("440006", ("440006", "440000")),            # a county straight under the province
    ("000000", ("000000",)),
    ("", ("",)),                                 # not an area code: no region holds it
])
def test_area_codes_nest_county_city_province(region, chain):
    assert region_chain(region) == chain
    assert all(within(region, area) for area in chain)
    assert not within(chain[-1], region) or len(chain) == 1  # a province does not lie in its county


def test_a_region_whose_own_policy_ends_takes_its_provinces_and_an_older_version_does_not_come_back():
    # Pooling moved up to the province: the county's latest version ends, and from that day the
    # province's policy prices its insured. The county's older version, superseded, stays so.
    def of(region: str, begin: date, ratio: str, end: date | None = None) -> BenefitPolicy:
        return BenefitPolicy(region, InsuranceType.EMPLOYEE, f"{region}-{begin}", begin,
                             (BenefitRule(frozenset({MedType.GENERAL_OUTPATIENT}), D(0), D(ratio)),), effective_to=end)

    province = of("440000", date(2020, 1, 1), "0.50")
    old = of("440106", date(2020, 1, 1), "0.70")
    last = of("440106", date(2024, 1, 1), "0.75", end=date(2026, 1, 1))
    versions = [province, old, last]
    on = InsuranceType.EMPLOYEE
    assert policy_in_force(versions, "440106", on, date(2025, 12, 31)) is last
    assert policy_in_force(versions, "440106", on, date(2026, 1, 1)) is province
    # A version the county publishes later is its own again.
    again = of("440106", date(2027, 1, 1), "0.80")
    assert policy_in_force([*versions, again], "440106", on, date(2027, 6, 1)) is again
    assert policy_in_force([*versions, again], "440106", on, date(2026, 6, 1)) is province
    # Another insurance's later version does not end or replace it; the province's own ending leaves none.
    resident = BenefitPolicy("440106", InsuranceType.RESIDENT, "r", date(2025, 6, 1),
                             (BenefitRule(frozenset({MedType.GENERAL_OUTPATIENT}), D(0), D("0.60")),))
    assert policy_in_force([*versions, resident], "440106", on, date(2025, 12, 1)) is last
    province_ends = of("440000", date(2020, 1, 1), "0.50", end=date(2026, 3, 1))
    assert policy_in_force([province_ends, old, last], "440106", on, date(2026, 6, 1)) is None
    # A later version beginning before the end replaces the ended one.
    sooner = of("440106", date(2025, 6, 1), "0.78")
    assert policy_in_force([*versions, sooner], "440106", on, date(2026, 6, 1)) is sooner


def test_a_policy_records_enddate_is_not_before_its_begndate_and_left_out_of_the_record_when_null():
    import orjson
    from pydantic import ValidationError

    from yidi.contracts.refdata import PolicyRecord

    base = {"insuplc_admdvs": "440106", "insutype": "310", "version": "V1", "begndate": "2024-01-01",
            "rules": [{"med_types": ["11"], "deductible": "0.00", "ratio": "0.80"}]}
    assert "enddate" not in orjson.loads(PolicyRecord.model_validate(base).model_dump_json())  # read by older pricing
    ended = PolicyRecord.model_validate(base | {"enddate": "2026-01-01"})
    assert orjson.loads(ended.model_dump_json())["enddate"] == "2026-01-01"
    assert ended.to_domain().effective_to == date(2026, 1, 1)
    with pytest.raises(ValidationError, match="enddate is not before its begndate"):
        PolicyRecord.model_validate(base | {"enddate": "2023-12-31"})
    # Equal: a version published for a later day, withdrawn (never in force, none of its own from then).
    withdrawn = PolicyRecord.model_validate(base | {"enddate": "2024-01-01"}).to_domain()
    older = PolicyRecord.model_validate(base | {"begndate": "2020-01-01", "version": "V0"}).to_domain()
    province = PolicyRecord.model_validate(base | {"insuplc_admdvs": "440000", "begndate": "2020-01-01"}).to_domain()
    versions = [withdrawn, older, province]
    assert policy_in_force(versions, "440106", InsuranceType.EMPLOYEE, date(2023, 6, 1)) is older
    assert policy_in_force(versions, "440106", InsuranceType.EMPLOYEE, date(2024, 6, 1)) is province


@pytest.mark.parametrize("day", ["20260101", 1767225600, "1767225600", 0, "2026/01/01"])
def test_a_reference_records_dates_are_written_yyyy_mm_dd_not_seconds_since_1970(day):
    """pydantic alone took a JSON number, or ten digits, for seconds since 1970: a catalogue item sent
    with ``"begndate": 0`` was in force from 1970, one sent ``"20260101"`` refused with a message
    about datetimes."""
    from pydantic import ValidationError

    from yidi.contracts.refdata import STORED_CONTEXT, CatalogueRecord, PolicyRecord

    item = {"mdtrtarea_admvs": "110000", "hilist_code": "X1", "hilist_name": "drug", "chrgitm_lv": "01",
            "begndate": "2026-01-01"}
    policy = {"insuplc_admdvs": "440106", "insutype": "310", "version": "V1", "begndate": "2026-01-01",
              "rules": [{"med_types": ["11"], "deductible": "0.00", "ratio": "0.80"}]}
    for model, record in ((CatalogueRecord, item), (PolicyRecord, policy)):
        assert model.model_validate(record).begndate == date(2026, 1, 1)
        for field in ("begndate", "enddate"):
            with pytest.raises(ValidationError) as refused:
                model.model_validate(record | {field: day})
            (error,) = refused.value.errors()
            assert error["loc"] == (field,) and "is not a date of the form yyyy-MM-dd" in error["msg"]
        # What the platform stored (its own dump) reads back.
        stored = model.model_validate_json(model.model_validate(record | {"enddate": "2027-01-01"}).model_dump_json())
        assert model.model_validate(stored.model_dump(mode="json"), context=STORED_CONTEXT) == stored


@pytest.mark.parametrize("moment", ["20261123", 1795370400, "1795370400", "2026-11-23", "0001-01-01T00:30+09:00"])
def test_an_outage_windows_times_are_iso_8601_not_seconds_since_1970(moment):
    """R19: an outage posted with a compact date or a number was read as seconds since 1970, in UTC,
    which carries a zone: a window in 1970, taken without a word, and the region's settlements went
    on through the outage."""
    from pydantic import ValidationError

    from yidi.contracts.refdata import RegionStatusRecord

    window = {"status_id": "S1", "admdvs": "440106", "starts_at": "2026-11-23T02:00:00+08:00",
              "ends_at": "2026-11-23T06:00:00+08:00"}
    assert RegionStatusRecord.model_validate(window).starts_at.hour == 2
    for field in ("starts_at", "ends_at"):
        with pytest.raises(ValidationError) as refused:
            RegionStatusRecord.model_validate(window | {field: moment})
        (error,) = refused.value.errors()
        assert error["loc"] == (field,) and ("ISO 8601" in error["msg"] or "1900 to 2999" in error["msg"])
