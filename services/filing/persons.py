"""Filing's second stage: refdata.persons → filing.events, R7's "until … their insurance status changes".

A long-term filing stays valid "until the person changes it or their insurance status changes"
(R7, seed 001). Filing follows each person's insurance as the insured region publishes it
(insured region, fund, active) and, when it changes, ends the long-term filings under the
insurance the person had: in force until the day before the change, so a stay admitted while it
was stays covered (R6), as after a cancellation. Each ended filing gets a new version and a
history entry (action ``ended``, by the platform, with the reason) and is published on
filing.events like a cancellation: eligibility has it before the next settlement it reads.

Which filings: active ones under the insurance the person had, saved before the change took
effect: the region's time of the record (``updated_at``) or, without one, the time the record was
published. A filing made for the new insurance, or made after the change, stays, whichever of
the two topics filing happens to read first. The first record filing sees of a person changes
nothing: it holds nothing to compare it with. A temporary filing keeps its six months (R7 says
"until the insurance changes" of long-term ones only).

A record older than the one held (by ``updated_at``) is ignored, as eligibility ignores it; one
that does not validate, or dated ahead of the clock, too (eligibility's feed dead-letters it).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from yidi.contracts.filing import FilingEvent
from yidi.contracts.refdata import PersonRecord
from yidi.domain.codes import BUSINESS_TZ
from yidi.domain.filing import end_on_insurance_change
from yidi.platform import metrics
from yidi.platform.db import lock_keys
from yidi.platform.jsonwire import dumps, loads
from yidi.platform.kafka import Incoming, Outgoing
from yidi.platform.settings import Settings
from yidi.platform.topics import FILING_EVENTS

from services.filing.repository import FilingRepository, Insurance

log = logging.getLogger(__name__)

ENDED_BY = "platform"  # the history's decl_source of a filing ended by an insurance change


def change_kind(before: Insurance, after: Insurance) -> str:
    if before.active and not after.active:
        return "stopped"
    if not before.active and after.active and before.status[:2] == after.status[:2]:
        return "resumed"
    return "moved"


class FilingPersonsHandler:
    def __init__(self, settings: Settings, repo: FilingRepository) -> None:
        self.settings = settings
        self.repo = repo

    def _readable(self, records: list[Incoming]) -> list[tuple[Incoming, PersonRecord]]:
        now = datetime.now(BUSINESS_TZ)
        people = []
        for record in records:
            try:
                person = PersonRecord.model_validate(loads(record.value))
            except (ValidationError, ValueError) as exc:
                log.debug("filing: person record %s/%s/%s ignored: %s", record.topic, record.partition, record.offset, exc)
                continue
            if person.ahead_of(now, self.settings.max_clock_ahead_seconds):
                continue
            people.append((record, person))
        return people

    async def __call__(self, records: list[Incoming]) -> list[Outgoing]:
        people = self._readable(records)
        if not people:
            return []
        out: list[dict[str, Any]] = []
        async with self.repo.transaction() as conn:
            # The same locks as the filing requests: a request and an insurance change of one
            # person take turns.
            await lock_keys(conn, "yidi-filing", [p.psn_no for _, p in people])
            held = await self.repo.insurances(conn, sorted({p.psn_no for _, p in people}))
            ended_now: set[str] = set()
            for record, person in people:
                at = (record.partition, record.offset)
                before = held.get(person.psn_no)
                if before is not None and before.seen[0] == at[0] and at <= before.seen:
                    # Applied before: this batch is handled again (its Kafka transaction was lost
                    # after the commit). What it ended is published again, or eligibility would
                    # never hear of it.
                    if before.ended_at == at:
                        out.extend(before.ended_events or [])
                    continue
                moment = person.source_time
                if moment is not None and before is not None and before.source_time is not None \
                        and moment < before.source_time:
                    before.seen = at  # older than the one held: ignored, as eligibility ignores it
                    continue
                after = Insurance(
                    person.insuplc_admdvs, person.insutype.value, person.active,
                    moment or (before.source_time if before else None), at,
                    before.ended_at if before else None, before.ended_events if before else None,
                )
                if before is not None and before.status != after.status:
                    since = moment or datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)
                    events = await self._end(conn, person.psn_no, before, since, at, change_kind(before, after))
                    if events:
                        # A new batch starts the person's kept events afresh; one batch's changes add up.
                        kept = (before.ended_events or []) if person.psn_no in ended_now else []
                        after.ended_at, after.ended_events = at, kept + events
                        ended_now.add(person.psn_no)
                        out.extend(events)
                held[person.psn_no] = after
            await self.repo.save_insurances(conn, held)
        return [Outgoing(topic=e["topic"], value=e["value"].encode(), key=e["key"].encode()) for e in out]

    async def _end(
        self, conn: Any, psn_no: str, before: Insurance, since: datetime, at: tuple[int, int], kind: str,
    ) -> list[dict[str, Any]]:
        today = datetime.now(BUSINESS_TZ).date()
        day = min(since.astimezone(BUSINESS_TZ).date(), today)
        reason = (f"the person's insurance changed on {day.isoformat()} ({kind}): a long-term filing is valid until "
                  "it is changed or the insurance status changes (R7); file again")
        events = []
        for filing_id in await self.repo.filings_under(conn, psn_no, before.insuplc_admdvs, before.insutype, since):
            found = await self.repo.get(conn, filing_id)
            assert found is not None
            record, filed_on = found
            ended = end_on_insurance_change(record.to_domain(), day, today)
            if ended is None:
                continue
            saved = await self.repo.save(conn, ended, record.version + 1, filed_on, "ended",
                                         f"refdata.persons/{at[0]}/{at[1]}", ENDED_BY, "", reason)
            metrics.FILINGS_ENDED.labels(kind).inc()
            log.info("filing %s of %s ended: %s", filing_id, psn_no, reason)
            event = FilingEvent(event="ended", filing=saved)
            events.append({"topic": self.settings.topic(FILING_EVENTS), "key": psn_no, "value": dumps(event).decode()})
        return events
