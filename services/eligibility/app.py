"""Eligibility: decides, fast, whether a person may settle here and on which terms.

Consumes settlement.requests (a transactional stage) and the feeds that keep its mirror fresh:
refdata.persons, refdata.facilities, filing.events, platform.region-status.
"""

from __future__ import annotations

from datetime import datetime

from yidi.contracts.refdata import FacilityRecord, PersonRecord, RegionStatusRecord
from yidi.domain.codes import BUSINESS_TZ
from yidi.platform import metrics, probes
from yidi.platform.cache import VersionedCache
from yidi.platform.catchup import CatchUp
from yidi.platform.feeds import Sent, feed
from yidi.platform.kafka import TransactionalStage
from yidi.platform.service import Service
from yidi.platform.settings import Settings, settings_for
from yidi.platform.topics import (
    ELIGIBILITY_STAGE_GROUP,
    FILING_EVENTS,
    REFDATA_FACILITIES,
    REFDATA_PERSONS,
    REGION_STATUS,
    SETTLEMENT_REQUESTS,
    feed_group,
)

from services.eligibility.filing_events import FilingEventsHandler
from services.eligibility.handlers import EligibilityHandler
from services.eligibility.repository import EligibilityRepository
from services.eligibility.subjects import SWEEP_EVERY_S, Subjects, sweep_every


def subjects_cache(settings: Settings) -> VersionedCache:
    """Eligibility's cache of subjects: entries ``<ns>yidi:elig:<psn_no>``, tombstones ``<ns>yidi:elig-gone:<psn_no>``."""
    return VersionedCache(settings.redis_url, ttl_seconds=settings.cache_ttl_seconds,
                          prefix=f"{settings.namespace}yidi:elig:", gone_prefix=f"{settings.namespace}yidi:elig-gone:")


def build(settings: Settings | None = None) -> Service:
    settings = settings or settings_for("eligibility")
    service = Service("eligibility", settings, migrations="services.eligibility.migrations")
    cache = subjects_cache(settings)
    service.resources.append(cache.close)
    state: dict[str, object] = {}

    def repo() -> EligibilityRepository:
        return state["repo"]  # type: ignore[return-value]

    def subjects() -> Subjects:
        return state["subjects"]  # type: ignore[return-value]

    async def ready() -> None:
        state["repo"] = EligibilityRepository(service.db(), reference_ttl=settings.reference_cache_seconds)
        state["subjects"] = Subjects(repo(), cache)
        # After a restore, nobody is answered from the backup's copies until the feeds and the
        # filings stage have applied again what it lacked (their marks; this stage has none): the
        # stage's wait (Service._wait_for_feeds gives the other stages the feeds' alone). One wait:
        # the handler's beside the stage's waited its 10 minutes after the stage's (the diff review,
        # session 49).
        filings_group = settings.group(feed_group("eligibility", FILING_EVENTS))
        catch_up = CatchUp(service.db, "eligibility", service.feeds_marked()
                           | {g: m for g, m in service.marks.items() if g == filings_group and m})
        stage = TransactionalStage(
            name="eligibility", service="eligibility", settings=settings,
            topics=[SETTLEMENT_REQUESTS], group_id=ELIGIBILITY_STAGE_GROUP,
            handler=EligibilityHandler(settings, repo(), subjects()), max_records=settings.batch_max_records,
        )
        stage.catch_up = catch_up if catch_up.waiting else None
        service.add_stage(stage)
        service.add_stage(
            TransactionalStage(
                name="eligibility-filings", service="eligibility", settings=settings,
                topics=[FILING_EVENTS], group_id=feed_group("eligibility", FILING_EVENTS),
                handler=FilingEventsHandler(settings, repo(), subjects()), max_records=settings.batch_max_records,
            )
        )
        # Entries marked stale by any instance (one that could not reach Redis) are dropped from here.
        service.background.append(lambda: sweep_every(subjects(), SWEEP_EVERY_S))
        service.background.append(lambda: probes.reach_every(probes.PROBE_SECONDS, cache.ping, metrics.REDIS_REACHED, "Redis"))

    service.on_ready.append(ready)

    # Each with where and when it was published: its Kafka timestamp is the time of a change of
    # insurance by a record without updated_at, and its offset says whether it was applied already.
    async def on_person(given: tuple[PersonRecord, Sent]) -> int:
        record, sent = given
        subject, stale = await repo().upsert_person(record, sent)
        await subjects().remember(record.psn_no, subject)
        return stale

    async def on_persons(given: list[tuple[PersonRecord, Sent]]) -> int:
        changed, stale = await repo().upsert_persons([r for r, _ in given], [sent for _, sent in given])
        await subjects().remember_many(changed, changed=True)
        return stale

    async def on_facility(record: FacilityRecord) -> None:
        await repo().upsert_facility(record)

    async def on_facilities(records: list[FacilityRecord]) -> None:
        await repo().upsert_facilities(records)

    async def on_region_status(record: RegionStatusRecord) -> None:
        await repo().upsert_outage(
            record.status_id, record.admdvs, record.starts_at, record.ends_at, record.reason, record.cancelled
        )

    def person_ahead(record: PersonRecord) -> str | None:
        # A record dated in the future would hold its person for good: every later record would
        # be older than it and ignored (a zone written wrong, 'Z' on China time, is 8 hours ahead).
        return record.ahead_of(datetime.now(BUSINESS_TZ), settings.max_clock_ahead_seconds)

    feed(service, REFDATA_PERSONS, PersonRecord, on_person, apply_many=on_persons, check=person_ahead, published=True)
    feed(service, REFDATA_FACILITIES, FacilityRecord, on_facility, apply_many=on_facilities)
    feed(service, REGION_STATUS, RegionStatusRecord, on_region_status)
    return service
