"""The treating region's catalogue (R1): what is covered, its class, its price ceiling."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from yidi.domain.codes import ChargeClass, region_chain


@dataclass(frozen=True, slots=True)
class CatalogueItem:
    """One catalogue entry of a treating region, valid from ``effective_from`` until ``effective_to`` (exclusive)."""

    region: str
    code: str
    name: str
    charge_class: ChargeClass
    selfpay_prop: Decimal
    price_ceiling: Decimal | None
    effective_from: date
    effective_to: date | None = None

    def __post_init__(self) -> None:
        if not Decimal(0) <= self.selfpay_prop <= Decimal(1):
            raise ValueError(f"{self.code}: selfpay_prop lies between 0 and 1")
        if self.charge_class is not ChargeClass.B and self.selfpay_prop != 0:
            raise ValueError(f"{self.code}: only class B items carry a first self-pay share")
        if self.price_ceiling is not None and self.price_ceiling < 0:
            raise ValueError(f"{self.code}: a price ceiling is not negative")
        if self.effective_to is not None and self.effective_to < self.effective_from:
            # Equal: a version published for a later day, withdrawn (never in force), as a policy's.
            raise ValueError(f"{self.code}: effective_to is not before effective_from")

    def in_force(self, on: date) -> bool:
        return self.effective_from <= on and (self.effective_to is None or on < self.effective_to)


@dataclass(frozen=True, slots=True)
class Catalogue:
    """The entries of one treating region that are in force on one day, by code."""

    region: str
    on: date
    items: Mapping[str, CatalogueItem]

    @classmethod
    def in_force(cls, region: str, on: date, versions: Iterable[CatalogueItem]) -> Catalogue:
        """Pick, for each code, the latest version in force on ``on`` of the most specific region
        that has one: the region's own, else its city's, else its province's (area codes nest, so
        a province's catalogue serves every region of it; a region's own entry for a code, class C
        included, stands instead of the province's)."""
        rank = {r: i for i, r in enumerate(region_chain(region))}
        chosen: dict[str, CatalogueItem] = {}
        for item in versions:
            mine = rank.get(item.region)
            if mine is None or not item.in_force(on):
                continue
            current = chosen.get(item.code)
            if current is None or (mine, current.effective_from) < (rank[current.region], item.effective_from):
                chosen[item.code] = item
        return cls(region=region, on=on, items=chosen)

    def get(self, code: str) -> CatalogueItem | None:
        return self.items.get(code)
