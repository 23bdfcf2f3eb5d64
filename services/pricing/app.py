"""Pricing: the insured region's policy over the treating region's catalogue (R1), exact to the fen.

Consumes settlement.eligible (a transactional stage) and the policy and catalogue feeds.
"""

from __future__ import annotations

from yidi.contracts.clearing import PrepaymentStatus
from yidi.contracts.refdata import CatalogueRecord, PolicyRecord
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

    async def on_policy(record: PolicyRecord) -> None:
        await state["repo"].upsert_policy(record)

    async def on_catalogue(record: CatalogueRecord) -> None:
        await state["repo"].upsert_catalogue_item(record)

    async def on_prepayment(status: PrepaymentStatus) -> None:
        await state["repo"].upsert_prepayment(status.insuplc_admdvs, status.mdtrtarea_admvs, status.balance, status.version)

    feed(service, REFDATA_POLICIES, PolicyRecord, on_policy)
    feed(service, REFDATA_CATALOGUE, CatalogueRecord, on_catalogue)
    if settings.prepayment_policy == "refuse":
        # The balances are read only to refuse (clearing updates them after every batch: dozens of
        # records a second under load). Under the default policy pricing does not follow them; a
        # pricing started later with "refuse" reads the compacted topic from where its group
        # stopped (from the beginning the first time), so its copy is whole before it refuses.
        feed(service, PREPAYMENT_STATUS, PrepaymentStatus, on_prepayment)
    return service
