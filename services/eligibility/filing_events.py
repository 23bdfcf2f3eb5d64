"""Eligibility's second stage: filing.events → its mirror and cache, then the filing's answer.

The filing service publishes each accepted change here with the answer for the person;
eligibility applies it to Postgres and Redis first and only then publishes that answer (in
the same Kafka transaction as the consumed offsets). So once a person or an office has the
answer, the very next settlement already sees the change.
"""

from __future__ import annotations


from yidi.contracts.filing import FilingEvent
from yidi.platform.jsonwire import dumps
from yidi.platform.kafka import Incoming, Outgoing
from yidi.platform.replies import answer_fallback, parse_each
from yidi.platform.settings import Settings
from yidi.platform.topics import FILING_RESULTS

from services.eligibility.repository import EligibilityRepository
from services.eligibility.subjects import Subjects


class FilingEventsHandler:
    def __init__(self, settings: Settings, repo: EligibilityRepository, subjects: Subjects) -> None:
        self.settings = settings
        self.repo = repo
        self.subjects = subjects

    async def __call__(self, records: list[Incoming]) -> list[Outgoing]:
        events, out = parse_each(records, FilingEvent.model_validate, "filing event")
        if not events:
            return out
        # The whole batch in one Postgres transaction, then every person it names to the cache
        # (also those an earlier run of this batch applied: the cache may have missed them).
        await self.subjects.remember_many(await self.repo.upsert_filings([e.filing for _, e in events]), changed=True)
        for _, event in events:
            if event.result is not None and event.reply_to:
                topic = self.settings.topic(event.reply_to)
                out.append(Outgoing(topic, dumps(event.result), key=event.filing.psn_no.encode(),
                                    fallback=answer_fallback(self.settings, topic, FILING_RESULTS)))
        return out
