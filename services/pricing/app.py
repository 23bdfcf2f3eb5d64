"""Pricing: the insured region's policy over the treating region's catalogue (R1), exact to the fen.

Consumes settlement.eligible (a transactional stage) and the policy and catalogue feeds.
"""

from __future__ import annotations

from datetime import datetime

from yidi.contracts.clearing import PrepaymentStatus
from yidi.contracts.refdata import CatalogueRecord, PolicyRecord
from yidi.domain.codes import BUSINESS_TZ
from yidi.platform.feeds import feed
from yidi.platform.kafka import TransactionalStage
from yidi.platform.service import Service
from yidi.platform.settings import Settings, settings_for
from yidi.platform.topics import PREPAYMENT_STATUS, REFDATA_CATALOGUE, REFDATA_POLICIES, SETTLEMENT_ELIGIBLE

from services.pricing.handlers import PricingHandler
from services.pricing.repository import PricingRepository


def build(settings: Settings | None = None) -> Service:
    settings = settings or settings_for("pricing")
    service = Service("pricing", settings, migrations="services.pricing.migrations")
    state: dict[str, PricingRepository] = {}

    async def ready() -> None:
        state["repo"] = PricingRepository(service.db())
        service.add_stage(
            TransactionalStage(
                name="pricing", service="pricing", settings=settings,
                topics=[SETTLEMENT_ELIGIBLE], group_id="yidi-pricing-eligible",
                handler=PricingHandler(settings, state["repo"]), max_records=settings.batch_max_records,
            )
        )

    service.on_ready.append(ready)

    async def on_policy(record: PolicyRecord) -> int:
        return await state["repo"].upsert_policy(record)  # 1: older than the version held, ignored

    async def on_catalogue(record: CatalogueRecord) -> int:
        return await state["repo"].upsert_catalogue_item(record)

    def ahead(record: PolicyRecord | CatalogueRecord) -> str | None:
        # A version dated in the future would hold its key for good: every later record would be
        # older than it and ignored (a zone written wrong, 'Z' on China time, is 8 hours ahead).
        return record.ahead_of(datetime.now(BUSINESS_TZ), settings.max_clock_ahead_seconds)

    async def on_prepayment(status: PrepaymentStatus) -> None:
        await state["repo"].upsert_prepayment(status.insuplc_admdvs, status.mdtrtarea_admvs, status.balance, status.version)

    feed(service, REFDATA_POLICIES, PolicyRecord, on_policy, check=ahead)
    feed(service, REFDATA_CATALOGUE, CatalogueRecord, on_catalogue, check=ahead)
    if settings.prepayment_policy == "refuse":
        # The balances are read only to refuse (clearing updates them after every batch: dozens of
        # records a second under load). Under the default policy pricing does not follow them; a
        # pricing started later with "refuse" reads the compacted topic from where its group
        # stopped (from the beginning the first time), so its copy is whole before it refuses.
        feed(service, PREPAYMENT_STATUS, PrepaymentStatus, on_prepayment)
    return service
