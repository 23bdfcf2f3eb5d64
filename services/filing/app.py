"""Filing: keeps who is filed where and on what terms (R4–R10, R21); publishes every change."""

from __future__ import annotations

from yidi.platform.kafka import TransactionalStage
from yidi.platform.service import Service
from yidi.platform.settings import Settings, settings_for
from yidi.platform.topics import FILING_REQUESTS, FILING_STAGE_GROUP

from services.filing.handlers import FilingHandler
from services.filing.repository import FilingRepository


def build(settings: Settings | None = None) -> Service:
    settings = settings or settings_for("filing")
    service = Service("filing", settings, migrations="services.filing.migrations")

    async def ready() -> None:
        service.add_stage(stage(settings, FilingRepository(service.db())))

    service.on_ready.append(ready)
    return service


def stage(settings: Settings, repo: FilingRepository) -> TransactionalStage:
    """Filing's stage: a request it cannot process (``BadData``) is refused by ``reqid`` too."""
    handler = FilingHandler(settings, repo)
    return TransactionalStage(
        name="filing", service="filing", settings=settings,
        topics=[FILING_REQUESTS], group_id=FILING_STAGE_GROUP,
        handler=handler, refuse=handler.refuse, max_records=settings.batch_max_records,
    )
