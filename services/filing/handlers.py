"""Filing's stage: filing.requests → filing.results (the answer) and filing.events (for eligibility)."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from collections.abc import Callable
from typing import Any


from yidi.contracts.filing import DeclarationSource, FilingAction, FilingEvent, FilingRecord, FilingRequest, FilingResult
from yidi.domain.codes import BUSINESS_TZ, FilingCategory, PersonType
from yidi.domain.eligibility import Filing, FilingStatus
from yidi.domain.filing import (
    FilingAsk,
    FilingRefused,
    approve_filing,
    cancel_filing,
    change_filing,
    lock_months_of,
    new_filing,
    refuse_filing,
)
from yidi.platform import metrics
from yidi.platform.jsonwire import dumps, loads, request_hash
from yidi.platform.db import Purge, lock_keys
from yidi.platform.kafka import CANNOT_PROCESS, Incoming, Outgoing
from yidi.platform.replies import (DEAD_LETTER_MAX_KEY_BYTES, answer_fallback, dead_letter, parse_each, recover_word,
                                   refuse_by_reqid)
from yidi.platform.settings import Settings
from yidi.platform.topics import FILING_EVENTS

from services.filing.persons import published_at
from services.filing.repository import FilingRepository, Insurance


FILING_REPLY_TO = FilingRequest.model_fields["reply_to"].default
_ACTIONS = frozenset(a.value for a in FilingAction)  # the only values the metric's action label takes


def _counter(action: str, outcome: str) -> Callable[[], None]:
    """Counts one request's result (``yidi_filing_requests_total``), run once its batch committed."""
    return metrics.FILING_REQUESTS.labels(action, outcome).inc


def filing_id_for(reqid: str) -> str:
    return "F" + hashlib.sha1(reqid.encode()).hexdigest()[:16].upper()


class FilingHandler:
    def __init__(self, settings: Settings, repo: FilingRepository) -> None:
        self.settings = settings
        self.repo = repo
        # Refusals kept past their 14 days go every minute, 10,000 a statement until none is left.
        self._purge = Purge("filing", repo, lambda conn: self.repo.forget_decided(conn))

    async def __call__(self, records: list[Incoming]) -> list[Outgoing]:
        requests, out = parse_each(records, FilingRequest.model_validate, "filing request", self.refuse, gateway=True)
        async with self.repo.transaction() as conn:
            await lock_keys(conn, "yidi-filing", [request.psn_no for _, request in requests])
            # The persons' insurance and type, read once for the batch: under the same locks, the
            # filing-persons stage cannot change them meanwhile.
            insurances = await self.repo.insurances(conn, sorted({request.psn_no for _, request in requests}))
            # Refusals answered before for these records (a batch handled again after its Postgres
            # commit): answered as then, not decided again against what the batch's later requests
            # have since applied (the cancellation of the filing that made an add a second one).
            decided = await self.repo.decided(conn, [(r.topic, r.partition, r.offset) for r, _ in requests]) if requests else {}
            for record, request in requests:
                place = (record.topic, record.partition, record.offset)
                seen = await self.repo.answered(conn, request.reqid)
                if (before := decided.get(place)) is not None and before[:2] == (request.reqid, request_hash(request)):
                    emitted, outcome = before[2], "refused"
                elif seen is None:
                    emitted, outcome = await self._apply(conn, request, published_at(record), insurances.get(request.psn_no))
                    if outcome == "refused":
                        await self.repo.remember_decided(conn, place, request.reqid, request_hash(request), emitted)
                elif seen[0] and seen[0] != request_hash(request):
                    emitted, outcome = self._answer(request, FilingResult(
                        reqid=request.reqid, accepted=False,
                        reason=f"reqid {request.reqid} was already used for another request; use a new reqid")), "refused"
                else:
                    emitted, outcome = self._again(request, seen[1]), "stored"
                # Counted once the batch committed (a batch handled again after a failed commit is not counted twice).
                counted = _counter(request.action.value, outcome)
                out.extend(
                    Outgoing(topic=e["topic"], value=e["value"].encode(), key=request.psn_no.encode(),
                             fallback=answer_fallback(self.settings, e["topic"], FILING_REPLY_TO),
                             on_commit=counted if i == 0 else None)
                    for i, e in enumerate(emitted)
                )
        self._purge.due()
        return out

    def _again(self, request: FilingRequest, emitted: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The same request again: what was published then, answered to this copy's ``reply_to``
        (the request's hash leaves it out, so a sender that moved to another topic is answered there)."""
        again = []
        for e in emitted:
            value = loads(e["value"])
            if isinstance(value, dict) and "event" in value and "filing" in value:  # the FilingEvent, as stored
                again.append({**e, "value": dumps(value | {"reply_to": request.reply_to}).decode()})
            else:
                again.append({**e, "topic": self.settings.topic(request.reply_to)})
        return again

    def refuse(self, record: Incoming, reason: str) -> list[Outgoing]:
        """A filing request that does not validate, or that the stage cannot process (``BadData``:
        an answer too large for a record, say): dead-lettered, and refused on its ``reply_to`` when
        its ``reqid`` can be read (every request is answered)."""
        if reason.startswith(CANNOT_PROCESS):
            why = f"the platform could not process the request ({reason[:500]}); it is kept for the operators"
        else:
            why = f"the request was refused as malformed ({reason[:500]}); correct it and send it again"
        return refuse_by_reqid(
            self.settings, record, reason, default_reply_to=FILING_REPLY_TO,
            # keyed as the request was, but never by a key too large for the answer's record
            key=record.key if record.key is None or len(record.key) <= DEAD_LETTER_MAX_KEY_BYTES else None,
            result=lambda reqid: FilingResult(reqid=reqid, accepted=False, reason=why),
            on_commit=_counter(recover_word(record.value, "action", _ACTIONS), "invalid"),
        ) or [dead_letter(record, reason)]

    async def _apply(self, conn: Any, request: FilingRequest, asked_at: datetime,
                     held: Insurance | None) -> tuple[list[dict[str, Any]], str]:
        """Apply one request, published at ``asked_at``, of a person whose insurance filing holds as
        ``held``; return what to publish (kept for a repeated reqid), and whether it was accepted
        or refused."""
        now = datetime.now(BUSINESS_TZ)  # the person's today is Beijing's, not UTC's (R8's lock is in days)
        try:
            if request.action is FilingAction.HISTORY:
                current = await self.repo.get(conn, request.filing_id or "")
                if current is None or current[0].psn_no != request.psn_no:  # a person reads their own
                    raise FilingRefused(f"no filing {request.filing_id} of this person")
                return self._answer(request, FilingResult(
                    reqid=request.reqid, accepted=True, history=await self.repo.history_in(conn, request.filing_id or ""))), "accepted"
            filing, version, filed_on, event = await self._decide(conn, request, now, held)
            if request.action in (FilingAction.ADD, FilingAction.CHANGE):
                # After the filing rules (a change of the insured region: "does not change", more to
                # the point); _decide writes nothing.
                _insurance_held(request, asked_at, held)
        except (ValueError, ArithmeticError) as exc:
            # FilingRefused, or a value the rules cannot work with: refused, never a stage that stops.
            reason = str(exc) if isinstance(exc, FilingRefused) else f"the request cannot be applied: {exc}"
            return self._answer(request, FilingResult(reqid=request.reqid, accepted=False, reason=reason)), "refused"
        # An add or a change is made when it was asked for: an insurance change after that leaves it
        # be (R7, persons.py). A sender's clock ahead would put it beyond every change: not after now.
        made_at = min(asked_at, datetime.now(UTC)) if request.action in (FilingAction.ADD, FilingAction.CHANGE) else None
        saved = await self.repo.save(conn, filing, version, filed_on, request.action.value, request.reqid,
                                     request.decl_source.value, request.opter, request.reason, made_at)
        result = FilingResult(reqid=request.reqid, accepted=True, filing=saved, note=_what_the_rules_changed(request, saved))
        # Eligibility applies the event, then answers: the answer implies the next settlement sees it.
        event_out = FilingEvent(event=event, filing=saved, result=result, reply_to=request.reply_to)
        emitted = [{"topic": self.settings.topic(FILING_EVENTS), "value": dumps(event_out).decode()}]
        await self.repo.remember(conn, request.reqid, request_hash(request), result.model_dump(mode="json"), emitted)
        return emitted, "accepted"

    def _answer(self, request: FilingRequest, result: FilingResult) -> list[dict[str, Any]]:
        return [{"topic": self.settings.topic(request.reply_to), "value": dumps(result).decode()}]

    async def _one_long_term(self, conn: Any, ask: FilingAsk, today: date, kept_only: bool = False) -> None:
        """R4, R8: a person lives in one place: one long-term filing under an insurance, active or
        waiting for approval, or a long-term version that another filing's change for a later day
        keeps in force until then, past ``ask``'s first day. A second would also step around the
        lock R8 lets a region put on the first: it is changed (or cancelled), not filed again."""
        if not ask.category.is_long_term:
            return
        other = await self.repo.other_long_term(conn, ask.psn_no, ask.insured_region, ask.insutype.value, ask.filing_id,
                                                begun_by=None if kept_only else date.max,
                                                kept_from=max(today, ask.begin))
        if other is not None:
            filing_id, filed, status = other
            raise FilingRefused(
                f"the person already has long-term filing {filing_id} to region {filed} ({status}); a person has one "
                f"long-term filing: change that one (action change, filing_id {filing_id}) or cancel it first")

    async def _kept_long_term(self, conn: Any, before: Filing, changed: Filing, today: date) -> None:
        """R4, R8: a change for a later day, planned again further off, keeps the long-term version
        it was to end in force until then (``superseded``): that must not run into another
        long-term filing of the person's under the same insurance (the review of session 48's diff:
        a re-planned trip gave two long-term filings for the days between)."""
        ends = {(p.category, p.begin): p.end for p in before.earlier}
        for period in changed.earlier:
            was = ends.get((period.category, period.begin))
            if not period.category.is_long_term or was is None or period.end <= max(was, today - timedelta(days=1)):
                # Not kept longer than before (a version the change ends now was in force with no
                # end: ending it meets nothing new), or over by today.
                continue
            insutype = (period.insutype or changed.insutype).value
            other = await self.repo.other_long_term(conn, changed.psn_no, changed.insured_region, insutype,
                                                    changed.filing_id, begun_by=period.end)
            if other is not None:
                filing_id, filed, status = other
                raise FilingRefused(
                    f"the change keeps this filing's long-term version to region {period.filed_region} in force "
                    f"until {period.end.isoformat()}, and the person already has long-term filing {filing_id} to "
                    f"region {filed} ({status}) by then; a person has one long-term filing: plan the change for "
                    f"an earlier day, or change {filing_id} first")

    async def _decide(self, conn: Any, request: FilingRequest, now: datetime,
                      held: Insurance | None) -> tuple[Filing, int, Any, str]:
        """What ``request`` makes of its filing, applied ``now`` (Beijing time): a change or
        cancellation at once ends the version in force now, which covered today until then."""
        today = now.date()
        if request.action is FilingAction.ADD:
            ask = self._ask(request, request.filing_id or filing_id_for(request.reqid))
            if await self.repo.get(conn, ask.filing_id) is not None:
                raise FilingRefused(f"filing {ask.filing_id} exists already; change it instead")
            _category_fits(ask.category, held)
            await self._one_long_term(conn, ask, today)
            # The day it was filed, which R8's lock counts from: an import was filed elsewhere, by
            # its begndate at the latest (counted from the import, a lock ran up to six months
            # past R8's limit for every filing migrated in).
            filed_on = (min(today, request.begndate)
                        if request.decl_source is DeclarationSource.IMPORT and request.begndate else today)
            return new_filing(ask), 1, filed_on, "filed"
        current = await self.repo.get(conn, request.filing_id or "")
        if current is None or current[0].psn_no != request.psn_no:
            raise FilingRefused(f"no filing {request.filing_id} of this person")
        record, filed_on = current
        filing = record.to_domain()
        lock = lock_months_of(self.settings.filing_lock_months, record.insuplc_admdvs)
        match request.action:
            case FilingAction.CHANGE:
                ask = self._ask(request, record.filing_id)
                in_force = record.status in (FilingStatus.ACTIVE, FilingStatus.PENDING)
                if ask.category is not record.category or not in_force:
                    # A filing in force, of a category held before, may change its region; one
                    # brought back (cancelled, ended, refused) is filed anew.
                    _category_fits(ask.category, held)
                # (The insured region does not change: change_filing refuses it.)
                same_insurance = ask.insutype.value == record.insutype.value
                if not (record.category.is_long_term and in_force and same_insurance):
                    # A change into a long-term filing adds one; so does one that moves a long-term
                    # filing to another fund (insutype), where the person may hold one already (a
                    # review, session 48: two under one insurance, the second past R8's lock).
                    await self._one_long_term(conn, ask, today)
                else:
                    # Within the long-term filing it is: only an earlier day may meet a long-term
                    # version another filing's change keeps in force until then (two held from
                    # before the check may each still change).
                    await self._one_long_term(conn, ask, today, kept_only=True)
                changed = change_filing(filing, ask, today=today, lock_months=lock, filed_on=filed_on, at=now)
                await self._kept_long_term(conn, filing, changed, today)
                # Filed anew, its R8 lock counts from today, as an add's does: kept from the first
                # filing, a cancel and a change the next day let every later change through
                # (a review, session 46).
                return changed, record.version + 1, filed_on if in_force else today, "changed"
            case FilingAction.CANCEL:
                cancelled = cancel_filing(filing, today=today, lock_months=lock, filed_on=filed_on, at=now)
                return cancelled, record.version + 1, filed_on, "cancelled"
            case FilingAction.APPROVE:
                return approve_filing(filing), record.version + 1, filed_on, "approved"
            case FilingAction.REFUSE:
                return refuse_filing(filing), record.version + 1, filed_on, "refused"
        raise FilingRefused(f"unknown action {request.action.value}")

    @staticmethod
    def _ask(request: FilingRequest, filing_id: str) -> FilingAsk:
        assert request.insutype and request.insuplc_admdvs and request.filed_admdvs and request.category and request.begndate
        return FilingAsk(
            filing_id=filing_id, psn_no=request.psn_no, insutype=request.insutype,
            insured_region=request.insuplc_admdvs, filed_region=request.filed_admdvs, category=request.category,
            begin=request.begndate, end=request.enddate,
            # R21: self-service filings (and imports of approved ones) take effect at once.
            takes_effect_at_once=request.decl_source is not DeclarationSource.OFFICE,
        )


def _insurance_held(request: FilingRequest, asked_at: datetime, held: Insurance | None) -> None:
    """R20, R7: a filing names the insurance the person holds, as the insured region's record has
    it (filing's copy of ``refdata.persons``); a person filing has no record of yet is not checked.

    One asked for under an insurance that changed after it was asked, and is not the person's
    insurance now, is refused: the change would have ended it, had this request been handled
    before it (the filing-persons stage read the change first). One naming an insurance the
    person did not hold when it was asked (another region or fund, or one stopped) is refused too:
    it was accepted, and came into force the day the person moved into that insurance."""
    if held is None:
        return
    assert request.insuplc_admdvs and request.insutype
    same = (held.insuplc_admdvs, held.insutype) == (request.insuplc_admdvs, request.insutype.value)
    if held.active and same:
        return
    if held.since > asked_at:
        raise FilingRefused(
            f"the person's insurance changed at {held.since.astimezone(BUSINESS_TZ):%Y-%m-%d %H:%M} (UTC+08:00), "
            f"after this request was sent: the {request.insutype.value} insurance of region {request.insuplc_admdvs} "
            f"it names {'is stopped' if same else 'is not the person’s now'} (R7); file under the person's insurance "
            "as it is now")
    if same:
        raise FilingRefused(
            f"the {request.insutype.value} insurance of region {request.insuplc_admdvs} is stopped, as the insured "
            "region's record has it: the person is not insured to file under it (R20)")
    raise FilingRefused(
        f"the insured region's record has this person under the {held.insutype} insurance of region "
        f"{held.insuplc_admdvs}{'' if held.active else ', stopped'}, not the {request.insutype.value} insurance of "
        f"region {request.insuplc_admdvs} this request names (R20); file under the person's insurance (if they "
        "have just moved, send it again once the region's record of the move has arrived)")


# R4: the long-term categories named after a kind of person, and that person type.
_CATEGORY_FOR = {FilingCategory.RETIREE_RESETTLED: (PersonType.RETIRED, "a retiree"),
                 FilingCategory.POSTED_WORKER: (PersonType.IN_SERVICE, "an employee in service")}


def _category_fits(category: FilingCategory, held: Insurance | None) -> None:
    """R4: a retiree resettled elsewhere is a retiree, a worker posted elsewhere an employee in
    service; anyone may live elsewhere long-term (long_term_resident) or travel. Checked against
    the type the insured region last published for the person, when filing has one."""
    fits = _CATEGORY_FOR.get(category)
    if fits is None or held is None or held.psn_type is None or held.psn_type == fits[0].value:
        return
    raise FilingRefused(
        f"a {category.value} filing is for {fits[1]} (R4), and the insured region lists this person as type "
        f"{held.psn_type}; file as long_term_resident, or have the region correct the person's type")


def _what_the_rules_changed(request: FilingRequest, saved: FilingRecord) -> str:
    """What a filing asked for (add, change) and did not get as asked, said to the person (R7)."""
    if request.action not in (FilingAction.ADD, FilingAction.CHANGE) or request.enddate == saved.enddate:
        return ""
    if saved.enddate is None:
        return (f"enddate {request.enddate} was not kept: a {saved.category.value} filing is long-term and "
                "valid until it is changed or the person's insurance changes (R7)")
    return (f"enddate {request.enddate or '(none)'} became {saved.enddate}: a temporary filing lasts at least "
            "six months (R7)")
