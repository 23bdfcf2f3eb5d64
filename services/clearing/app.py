"""Clearing: owns the money. Records every settlement once in the ledger and answers the gateway."""

from __future__ import annotations

from yidi.platform.kafka import TransactionalStage
from yidi.platform.service import Service
from yidi.platform.settings import Settings, settings_for
from yidi.platform.topics import CLEARING_REQUESTS, SETTLEMENT_PRICED

from services.clearing.admin import ClearingAdminHandler
from services.clearing.handlers import ClearingHandler
from services.clearing.prepayment import show_balances_every
from services.clearing.repository import SETTLEMENT_GROUP, ClearingRepository


def settlement_stage(settings: Settings, repository: ClearingRepository) -> TransactionalStage:
    """Clearing's stage over ``settlement.priced``: a record it cannot process (``BadData``) is
    refused as pricing left it (``ClearingHandler.refuse``), not with the stage's generic text."""
    handler = ClearingHandler(settings, repository)
    return TransactionalStage(
        name="clearing", service="clearing", settings=settings,
        topics=[SETTLEMENT_PRICED], group_id=SETTLEMENT_GROUP,
        handler=handler, refuse=handler.refuse, max_records=settings.batch_max_records,
    )


def build(settings: Settings | None = None) -> Service:
    settings = settings or settings_for("clearing")
    service = Service("clearing", settings, migrations="services.clearing.migrations")

    async def ready() -> None:
        service.add_stage(settlement_stage(settings, ClearingRepository(service.db())))
        if settings.prepayment_sample_seconds > 0:
            repository = ClearingRepository(service.db())
            service.background.append(lambda: show_balances_every(
                repository, settings.prepayment_sample_seconds, settings.prepayment_gauge_accounts))
        admin = ClearingAdminHandler(settings, ClearingRepository(service.db()))
        service.add_stage(
            TransactionalStage(
                name="clearing-admin", service="clearing", settings=settings,
                topics=[CLEARING_REQUESTS], group_id="yidi-clearing-requests",
                handler=admin, refuse=admin.refuse, max_records=100,
            )
        )

    service.on_ready.append(ready)
    return service
