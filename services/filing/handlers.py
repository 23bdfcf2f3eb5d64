"""Filing's stage: filing.requests → filing.results (the answer) and filing.events (for eligibility)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from yidi.contracts.filing import DeclarationSource, FilingAction, FilingEvent, FilingRequest, FilingResult
from yidi.domain.filing import FilingAsk, FilingRefused, cancel_filing, change_filing, new_filing
from yidi.platform.jsonwire import dumps, loads
from yidi.platform.kafka import Incoming, Outgoing
from yidi.platform.replies import dead_letter
from yidi.platform.settings import Settings
from yidi.platform.topics import FILING_EVENTS

from services.filing.repository import FilingRepository


def filing_id_for(reqid: str) -> str:
    return "F" + hashlib.sha1(reqid.encode()).hexdigest()[:16].upper()


class FilingHandler:
    def __init__(self, settings: Settings, repo: FilingRepository, *, lock_months: dict[str, int] | None = None) -> None:
        self.settings = settings
        self.repo = repo
        self.lock_months = lock_months or {}

    async def __call__(self, records: list[Incoming]) -> list[Outgoing]:
        out: list[Outgoing] = []
        async with self.repo.transaction() as conn:
            for record in records:
                try:
                    request = FilingRequest.model_validate(loads(record.value))
                except (ValidationError, ValueError) as exc:
                    out.append(dead_letter(record, f"filing request does not validate: {exc}"))
                    continue
                emitted = await self.repo.answered(conn, request.reqid)
                if emitted is None:
                    emitted = await self._apply(conn, request)
                out.extend(
                    Outgoing(topic=e["topic"], value=e["value"].encode(), key=request.psn_no.encode()) for e in emitted
                )
        return out

    async def _apply(self, conn: Any, request: FilingRequest) -> list[dict[str, Any]]:
        today = datetime.now(UTC).date()
        ask = FilingAsk(
            filing_id=request.filing_id or filing_id_for(request.reqid),
            psn_no=request.psn_no, insutype=request.insutype, insured_region=request.insuplc_admdvs,
            filed_region=request.filed_admdvs, category=request.category, begin=request.begndate,
            end=request.enddate,
            # R21: self-service filings (and imports of approved ones) take effect at once.
            takes_effect_at_once=request.decl_source is not DeclarationSource.OFFICE,
        )
        lock = self.lock_months.get(request.insuplc_admdvs, 0)
        result: FilingResult
        events: list[FilingEvent] = []
        try:
            if request.action is FilingAction.ADD:
                filing, version, filed_on, event = new_filing(ask), 1, today, "filed"
            else:
                current = await self.repo.get(conn, ask.filing_id) if request.filing_id else None
                if current is None or current[0].psn_no != request.psn_no:
                    raise FilingRefused(f"no filing {request.filing_id} of this person")
                record, filed_on = current
                version = record.version + 1
                if request.action is FilingAction.CHANGE:
                    filing, event = change_filing(record.to_domain(), ask, today=today, lock_months=lock, filed_on=filed_on), "changed"
                else:
                    filing, event = cancel_filing(record.to_domain(), today=today, lock_months=lock, filed_on=filed_on), "cancelled"
            saved = await self.repo.save(conn, filing, version, filed_on, request.action.value, request.reqid,
                                         request.decl_source.value)
            result = FilingResult(reqid=request.reqid, accepted=True, filing=saved)
            events.append(FilingEvent(event=event, filing=saved))
        except FilingRefused as exc:
            result = FilingResult(reqid=request.reqid, accepted=False, reason=str(exc))
        emitted = [{"topic": self.settings.topic(request.reply_to), "value": dumps(result).decode()}]
        emitted += [{"topic": self.settings.topic(FILING_EVENTS), "value": dumps(e).decode()} for e in events]
        await self.repo.remember(conn, request.reqid, result.model_dump(mode="json"), emitted)
        return emitted
