"""R1: a new catalogue or policy version takes effect on its date, without a restart."""

from datetime import date
from decimal import Decimal as D

from yidi.domain.catalogue import Catalogue, CatalogueItem
from yidi.domain.codes import ChargeClass, InsuranceType, MedType
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
