"""Filing: keeps who is filed where and on what terms (R4–R10, R21); publishes every change.

Two stages: filing.requests (the persons' and offices' requests), and refdata.persons, whose
insurance changes end long-term filings (R7, services/filing/persons.py)."""

from __future__ import annotations

from yidi.platform.kafka import TransactionalStage
from yidi.platform.service import Service
from yidi.platform.settings import Settings, settings_for
from yidi.platform.topics import FILING_PERSONS_GROUP, FILING_REQUESTS, FILING_STAGE_GROUP, REFDATA_PERSONS

from services.filing.handlers import FilingHandler
from services.filing.overdue import office_calendar, show_overdue_every
from services.filing.persons import FilingPersonsHandler
from services.filing.repository import FilingRepository


def build(settings: Settings | None = None) -> Service:
    settings = settings or settings_for("filing")
    service = Service("filing", settings, migrations="services.filing.migrations")

    async def ready() -> None:
        repo = FilingRepository(service.db())
        service.add_stage(stage(settings, repo))
        service.add_stage(persons_stage(settings, repo))
        if settings.office_overdue_sample_seconds > 0:
            calendar = office_calendar(settings)
            service.background.append(lambda: show_overdue_every(repo, settings.office_overdue_sample_seconds, calendar))

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


def persons_stage(settings: Settings, repo: FilingRepository) -> TransactionalStage:
    """refdata.persons: an insurance change ends the long-term filings under the old insurance (R7)."""
    return TransactionalStage(
        name="filing-persons", service="filing", settings=settings,
        topics=[REFDATA_PERSONS], group_id=FILING_PERSONS_GROUP,
        handler=FilingPersonsHandler(settings, repo), max_records=settings.batch_max_records,
    )
