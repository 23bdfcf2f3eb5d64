"""Filing's second stage: refdata.persons → filing.events, R7's "until … their insurance status changes".

A long-term filing stays valid "until the person changes it or their insurance status changes"
(R7, seed 001). Filing follows each person's insurance as the insured region publishes it
(insured region, fund, active) and, when it changes, ends the long-term filings made under the
insurance the person had: in force until the day before the change, and that day until the change
(``ended_at``), so a stay admitted while it was stays covered (R6), as after a cancellation; one
waiting for approval is cancelled. Each
ended filing gets a new version and a history entry (action ``ended``, ``decl_source``
``platform``, the reason) and is published on filing.events like a cancellation: eligibility has
it before the next settlement it reads.

When: the change takes effect at the region's time of the record (``updated_at``) or, without
one, the time the record was published. Which filings: those under the old insurance whose
version was asked for (``made_at``: the add or change request's publish time) before it, so a
filing made for the new insurance, or after the change, stays. A resumed insurance ends what was made before it stopped (what the stop
should have ended), not what the person filed while it was stopped: that was filed for the
insurance now resumed. The first record filing sees of a person ends nothing: it holds nothing to
compare it with. A temporary filing keeps its six months (R7 limits long-term ones).

A record older than the one held (by ``updated_at``) is ignored, as eligibility ignores it; one
that does not validate, or dated ahead of the clock, too (eligibility's feed dead-letters it), and
counted ``yidi_refdata_records_total{feed="refdata.persons", outcome="ignored"}``. A request for a
filing asked for under an insurance that changed after it, and handled after the change, is
refused by the filing stage (handlers.py). One asked for after the change but handled before
this stage reads it is taken as asked (its filing is made after the change, and stays): the one
case where the order of the two topics shows (docs/architecture.md).

Exactly once: a batch handled again after Postgres committed (its Kafka transaction lost) finds
its records already seen (partition and offset in ``filing.persons``) and publishes again, from
the history, what each of them ended. It reads them again because the topic keeps every record a
week before compaction may replace it (``min.compaction.lag.ms``, yidi.platform.topics): a
record replaced sooner would leave what it ended unpublished, and a stop followed by a resume
read as no change.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from yidi.contracts.common import explain
from yidi.contracts.filing import FilingEvent, FilingRecord
from yidi.contracts.refdata import PersonRecord
from yidi.domain.codes import BUSINESS_TZ
from yidi.domain.filing import end_on_insurance_change
from yidi.platform import metrics
from yidi.platform.db import lock_keys
from yidi.platform.feeds import published_at as feed_published_at
from yidi.platform.jsonwire import dumps, loads
from yidi.platform.kafka import Incoming, Outgoing
from yidi.platform.settings import Settings
from yidi.platform.topics import FILING_EVENTS

from services.filing.repository import FilingRepository, Insurance

log = logging.getLogger(__name__)

ENDED_BY = "platform"  # the history's decl_source of a filing ended by an insurance change


def published_at(record: Incoming) -> datetime:
    """A record's Kafka timestamp (its producer's time of sending), as an aware time."""
    return feed_published_at(record.timestamp_ms)


def ended_reqid(record: Incoming) -> str:
    """The history's reqid of what a persons record ended: the record itself."""
    return f"refdata.persons/{record.partition}/{record.offset}@{record.timestamp_ms}"


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

    def _readable(self, records: list[Incoming]) -> tuple[list[tuple[Incoming, PersonRecord]], int]:
        """The records that validate, and how many did not (counted by the caller once its work is
        committed: a batch retried after a transient error counts them once)."""
        people, ignored = [], 0
        for record in records:
            try:
                person = PersonRecord.model_validate(loads(record.value))
                # Dated ahead of the later of its publish time and now: what eligibility refuses
                # as it reads it, and still right when filing reads it late (its first start).
                why = person.ahead_of(max(published_at(record), datetime.now(UTC)), self.settings.max_clock_ahead_seconds)
            except (ValidationError, ValueError) as exc:
                why = explain(exc) if isinstance(exc, ValidationError) else str(exc)  # no values quoted
            if why is not None:
                ignored += 1
                log.warning("filing: person record %s/%s/%s ignored (eligibility dead-letters it): %s",
                            record.topic, record.partition, record.offset, why[:500])
                continue
            people.append((record, person))
        return people, ignored

    async def __call__(self, records: list[Incoming]) -> list[Outgoing]:
        people, ignored = self._readable(records)
        if not people:
            metrics.REFDATA_RECORDS.labels("refdata.persons", "ignored").inc(ignored)
            return []
        events: list[tuple[str, FilingRecord]] = []
        kinds: list[str] = []
        async with self.repo.transaction() as conn:
            # The same locks as the filing requests: a request and an insurance change of one
            # person take turns.
            await lock_keys(conn, "yidi-filing", [p.psn_no for _, p in people])
            held = await self.repo.insurances(conn, sorted({p.psn_no for _, p in people}))
            again: list[str] = []
            for record, person in people:
                seen = (record.partition, record.offset, published_at(record))
                before = held.get(person.psn_no)
                if before is not None and before.seen[0] == seen[0] and seen[1] <= before.seen[1]:
                    # Applied before: this batch is handled again (its Kafka transaction was lost
                    # after the commit). What the record ended is published again, or eligibility
                    # might never hear of it. (A topic made anew starts its offsets again: the
                    # runbook's "Topics" resets the offsets seen.)
                    again.append(ended_reqid(record))
                    continue
                moment = person.source_time
                if moment is not None and before is not None and before.source_time is not None \
                        and moment < before.source_time:
                    before.seen = seen  # older than the one held: ignored, as eligibility ignores it
                    continue
                at = moment or seen[2]
                after = Insurance(person.insuplc_admdvs, person.insutype.value, person.active,
                                  moment or (before.source_time if before else None), at, seen, person.psn_type.value)
                if before is not None and before.status == after.status:
                    after.since = before.since
                elif before is not None:
                    kind = change_kind(before, after)
                    # Resumed: what was made before the stop; else what was made before the change.
                    cutoff = before.since if kind == "resumed" else at
                    ended = await self._end(conn, person.psn_no, before, cutoff, ended_reqid(record), kind)
                    events += [(person.psn_no, e) for e in ended]
                    kinds += [kind] * len(ended)
                held[person.psn_no] = after
            if again:
                events += [(r.psn_no, r) for _, r in await self.repo.ended_by(conn, again)]
            await self.repo.save_insurances(conn, held)
        # Once committed: a batch retried after a transient error counts once.
        metrics.REFDATA_RECORDS.labels("refdata.persons", "ignored").inc(ignored)
        for kind in kinds:
            metrics.FILINGS_ENDED.labels(kind).inc()
        topic = self.settings.topic(FILING_EVENTS)
        return [Outgoing(topic=topic, value=dumps(FilingEvent(event="ended", filing=r)), key=psn_no.encode())
                for psn_no, r in events]

    async def _end(
        self, conn: Any, psn_no: str, before: Insurance, cutoff: datetime, reqid: str, kind: str,
    ) -> list[FilingRecord]:
        today = datetime.now(BUSINESS_TZ).date()
        day = min(cutoff.astimezone(BUSINESS_TZ).date(), today)
        reason = (f"the person's insurance changed ({kind}) on {day.isoformat()}: a long-term filing is valid until "
                  "it is changed or the insurance status changes (R7); file again")
        ended = []
        for filing_id in await self.repo.filings_made_under(conn, psn_no, before.insuplc_admdvs, before.insutype,
                                                            cutoff):
            found = await self.repo.get(conn, filing_id)
            assert found is not None
            record, filed_on = found
            changed = end_on_insurance_change(record.to_domain(), day, today, at=cutoff)
            if changed is None:
                continue
            ended.append(await self.repo.save(conn, changed, record.version + 1, filed_on, "ended", reqid,
                                              ENDED_BY, "", reason))
            log.info("filing %s ended: %s", filing_id, reason)  # not the psn_no: the filing names it
        return ended
