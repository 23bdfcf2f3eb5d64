"""Eligibility's stage: every request on settlement.requests is parsed, checked and passed on.

- Malformed requests are answered ``INVALID_INPUT`` (when their msgid can be recovered) and
  dead-lettered with the reason.
- 1101 and 2001 are answered here, from the same data settlements use.
- Settlements and pre-settlements carry the decision (terms, or refusal) to pricing; pricing
  answers refusals after checking the msgid was not already settled (idempotency lives there).
- Cancellations and reversals go to pricing unchecked: undoing must work whatever the person's
  insurance has become since.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any

import orjson
from pydantic import ValidationError

from yidi.contracts import answers
from yidi.contracts.clearing import Reconcile, ReconcileDetailsInput, ReconcileTotalsInput
from yidi.contracts.common import code_text, explain
from yidi.contracts.envelope import DEFAULT_REPLY_TO, OFFERED_INFNOS, ErrCode, Infno, RequestEnvelope
from yidi.contracts.filing import FilingRecord
from yidi.contracts.refdata import STORED_CONTEXT, FacilityRecord, PersonRecord, home_counters
from yidi.contracts.settlement import CancelInput, CumulativeInput, PersonQueryInput, ReversalInput, SettlementInput
from yidi.domain.codes import BUSINESS_TZ, minutes_ahead, region_chain
from yidi.domain.eligibility import (Eligible, InsuredBefore, Outage, Refusal, Refused, Visit, decide,
                                    insured_as_named)
from yidi.domain.money import ZERO, fmt
from yidi.platform.jsonwire import dumps, loads_request
from yidi.platform.kafka import Incoming, Outgoing
from yidi.platform.replies import answerable_msgid, broken, dead_letter, ids_of, recover_ids, reply
from yidi.platform.settings import Settings
from yidi.platform.topics import CLEARING_REQUESTS, SETTLEMENT_ELIGIBLE

from services.eligibility.repository import EligibilityRepository
from services.eligibility.subjects import Subjects

log = logging.getLogger(__name__)

INPUT_MODELS: dict[Infno, type] = {
    Infno.PERSON_INFO: PersonQueryInput,
    Infno.BENEFIT_CHECK: PersonQueryInput,
    Infno.OUTPATIENT_PRE_SETTLE: SettlementInput,
    Infno.OUTPATIENT_SETTLE: SettlementInput,
    Infno.INPATIENT_PRE_SETTLE: SettlementInput,
    Infno.INPATIENT_SETTLE: SettlementInput,
    Infno.OUTPATIENT_CANCEL: CancelInput,
    Infno.INPATIENT_CANCEL: CancelInput,
    Infno.REVERSAL: ReversalInput,
    Infno.PERSON_CUMULATIVE: CumulativeInput,
}
# Asked of a person by a facility: answered only to a networked facility of the treating region (R20).
PERSON_QUERIES = frozenset({Infno.PERSON_INFO, Infno.BENEFIT_CHECK, Infno.PERSON_CUMULATIVE})


@dataclass(frozen=True, slots=True)
class Parsed:
    record: Incoming
    request: RequestEnvelope
    body: Any
    # Why the request is refused INVALID_INPUT on its way through pricing (a clock ahead), if it is.
    refused: str | None = None


# A request passes on wrapped (EligibleWork: about 500 bytes more) and may be dead-lettered (about
# 2 KB of headers more); Kafka's default limit for a record is 1 MiB, which a larger request would
# exceed at the next hop, failing that hop's every retry. 2,000 bill lines take about 600 KB.
MAX_REQUEST_BYTES = 900_000


def _work(p: Parsed) -> dict[str, Any]:
    """EligibleWork in wire form, built directly (the model is its schema; pricing validates it,
    tests/integration/test_wire_forms.py checks the two agree), with no decision yet. The request
    goes on as the gateway sent it, now known valid: pricing validates its envelope again and reads
    a settlement's bill directly (``bill_fields``), and dumping it again here was a seventh of this
    stage's CPU."""
    return {
        "request": orjson.Fragment(p.record.value),
        "request_hash": p.request.payload_hash(),
        "request_ts_ms": p.record.timestamp_ms,
        "refusal": None, "person": None, "facility_level": 0, "basis": "", "filing_id": "", "filing_category": None,
        "filing_waived": False, "filing_others": [],
    }


def _snapshot(held: PersonRecord, same: PersonRecord | None) -> dict[str, Any]:
    """PersonSnapshot in wire form: the terms of the insurance ``held`` (the person's now, or the one
    held at a stay's admission); the personal account, and what the insurance paid at home (R13,
    ``home_usage``), of ``same``, the record now when it is that insurance (after a stop the region
    goes on restating them), else none and the held record's."""
    used = same or held
    person: dict[str, Any] = {
        "psn_no": held.psn_no,
        "psn_name": held.psn_name,
        "psn_type": held.psn_type.value,
        "insutype": held.insutype.value,
        "insuplc_admdvs": held.insuplc_admdvs,
        "acct_balc": fmt(same.acct_balc if same else ZERO),
        "acct_version": same.acct_version if same else "",
        "qualifications": list(held.qualifications),
        "home_quota_used": fmt(used.home_quota_used),
        "home_quota_year": used.home_quota_year,
    }
    if used.home_usage:
        person["home_counters"] = home_counters(used.home_usage)
    return person


def _ids(record: Incoming) -> tuple[str | None, str, str, str]:
    """msgid, reply_to, infno, fixmedins_code of a request refused before its envelope validated:
    as the JSON says when it parses as an object (escapes read, the last of a repeated key, none
    taken from inside ``input``; no msgid there: none, dead-lettered only), else as the byte
    patterns find them. The patterns alone answered a ``reply_to`` written with an escape on the
    shared topic, and one inside ``input.data`` on the topic it named (another gateway's; reviews,
    session 37)."""
    value = _top_level(record.value)
    if not isinstance(value, dict):
        return recover_ids(record.value)
    return ids_of(value, nested=False) or (None, DEFAULT_REPLY_TO, "", "")


def _top_level(raw: bytes) -> Any:
    """The JSON of a refused request as orjson reads it, whatever made it refused (a NUL, nesting
    past the limit: jsonwire's checks), and with bytes that are not UTF-8 replaced; None when it does
    not parse even so. Through jsonwire, such a request fell back to the byte patterns, which took the
    msgid and reply_to inside ``input.data`` over the ones at the top (a review, session 37)."""
    for text in (raw, raw.decode("utf-8", "replace")):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            continue
    return None


class EligibilityHandler:
    def __init__(self, settings: Settings, repo: EligibilityRepository, subjects: Subjects,
                 caught_up: Callable[[], Awaitable[None]] | None = None) -> None:
        self.settings = settings
        self.repo = repo
        self.subjects = subjects
        # After a restore: raises until the feeds have applied again what the database lacked
        # (yidi.platform.catchup), so that nobody is answered from the backup's copies.
        self.caught_up = caught_up

    def _invalid(self, record: Incoming, reason: str, request: RequestEnvelope | None = None, *,
                 msgid: Any = None) -> list[Outgoing]:
        """Refused as malformed: a dead letter and, when the msgid can be read, the answer. ``msgid``:
        the parsed JSON's, which the byte pattern misses when it is written with escapes (\\uXXXX)."""
        out = [dead_letter(record, reason)]
        if request is not None:
            msgid, reply_to, infno, facility = request.msgid, request.reply_to, request.infno.value, request.fixmedins_code
        else:
            found, reply_to, infno, facility = _ids(record)
            msgid = answerable_msgid(msgid) or found
        if msgid:
            answer = answers.answer(
                msgid, infno, err_code=ErrCode.INVALID_INPUT,
                err_msg=f"The request was refused as malformed: {reason}. Correct it and send it again.",
            )
            out.append(reply(self.settings, reply_to, answer, facility=facility, request_ts_ms=record.timestamp_ms))
        return out

    def _malformed(self, record: Incoming, request: RequestEnvelope, reason: str) -> Parsed | list[Outgoing]:
        """A request whose input the platform refuses. A settlement, cancellation or reversal is
        refused by pricing, after its msgid is checked (as a clock ahead is): a resend of one
        settled before a check was added or tightened gets its stored answer, not a refusal beside
        a payment in the ledger. Anything else is answered here."""
        if request.infno.changes_state:
            return Parsed(record, request, None, reason)
        return self._invalid(record, reason, request)

    def _unsupported(self, record: Incoming, infno: str, sent: Any) -> list[Outgoing]:
        """A transaction code the platform does not offer: answered ``UNSUPPORTED``, not
        dead-lettered (the message is well formed; ``yidi_answers_total`` counts them). ``sent``:
        the parsed JSON's msgid, read as ``_invalid`` reads it."""
        found, reply_to, _, facility = _ids(record)
        msgid = answerable_msgid(sent) or found
        if not msgid:
            return self._invalid(record, f"infno {infno} is not offered, and the msgid cannot be read")
        answer = answers.answer(
            msgid, infno, err_code=ErrCode.UNSUPPORTED,
            err_msg=f"infno {infno} is not a transaction this platform offers (it offers {', '.join(sorted(OFFERED_INFNOS))}). Fee details "
                    "(2204, 2301) travel inside the settlement request (2206/2207, 2303/2304).",
        )
        return [reply(self.settings, reply_to, answer, facility=facility, request_ts_ms=record.timestamp_ms)]

    def _ahead(self, request: RequestEnvelope) -> str | None:
        """Why a request dated ahead of the platform's clock by more than the tolerance is refused,
        or None. ``inf_time`` picks the year's accumulators, the versions in force and the month
        cleared: a facility clock a day fast would settle 31 December on next year's deductible.
        Backdated times are accepted (offline settlements sent late)."""
        now = datetime.now(BUSINESS_TZ)
        minutes = minutes_ahead(request.inf_time.replace(tzinfo=BUSINESS_TZ), now, self.settings.max_clock_ahead_seconds)
        if minutes is None:
            return None
        return (f"inf_time {request.inf_time:%Y-%m-%d %H:%M:%S} is {minutes} minutes ahead of "
                f"the platform's clock ({now:%Y-%m-%d %H:%M:%S} China time, UTC+08:00); set the facility's clock")

    def parse(self, record: Incoming) -> Parsed | list[Outgoing]:
        if len(record.value) > MAX_REQUEST_BYTES:
            return self._invalid(record, f"the request is {len(record.value)} bytes, more than the {MAX_REQUEST_BYTES} "
                                         "accepted (a bill has at most 2,000 lines)")
        try:
            raw = loads_request(record.value)  # what it passes on nests deeper, holds more
        except ValueError as exc:
            return self._invalid(record, f"not JSON ({exc})")
        if not isinstance(raw, dict):
            return self._invalid(record, "not a JSON object")
        infno = raw.get("infno")
        if isinstance(infno, str) and len(infno) == 4 and infno.isascii() and infno.isdigit() and infno not in OFFERED_INFNOS:
            return self._unsupported(record, infno, raw.get("msgid"))
        try:
            request = RequestEnvelope.model_validate(raw)
        except (ValidationError, ValueError, ArithmeticError) as exc:  # any data error: refused, never retried
            return self._invalid(record, explain(exc), msgid=raw.get("msgid"))
        ahead = self._ahead(request)
        if ahead is not None and not request.infno.changes_state:
            return self._invalid(record, ahead, request)  # a query, answered here
        if request.infno in (Infno.RECONCILE_TOTALS, Infno.RECONCILE_DETAILS):
            # Reconciliation is clearing's: pass it on untouched; clearing answers it. Its input is
            # checked here, where a malformed one is dead-lettered as every other is (CONTRACT.md);
            # clearing answered it INVALID_INPUT with no dead letter (a review, session 36).
            period = ReconcileTotalsInput if request.infno is Infno.RECONCILE_TOTALS else ReconcileDetailsInput
            try:
                period.model_validate(request.data)
            except (ValidationError, ValueError, ArithmeticError) as exc:
                return self._malformed(record, request, "input.data: " + explain(exc))
            work = Reconcile(type="reconcile", request=request, request_ts_ms=record.timestamp_ms, reqid=request.msgid)
            return [Outgoing(self.settings.topic(CLEARING_REQUESTS), dumps(work), key=request.msgid.encode())]
        model = INPUT_MODELS[request.infno]
        try:
            body = model.model_validate(request.data)
        except (ValidationError, ValueError, ArithmeticError) as exc:
            return self._malformed(record, request, "input.data: " + explain(exc))
        if request.insuplc_admdvs is None:
            return self._invalid(record, "insuplc_admdvs is required when the input has psn_no", request)
        if request.infno is Infno.BENEFIT_CHECK and (body.insutype is None or body.med_type is None):
            return self._invalid(record, "input.data: a benefit check (2001) names insutype and med_type", request)
        if (isinstance(body, SettlementInput) and body.begntime
                and (body.begntime - request.inf_time).total_seconds() > self.settings.max_clock_ahead_seconds):
            # The same tolerance as inf_time's against the platform's clock: the HIS stamping the
            # admission and the gateway stamping inf_time may run a few minutes apart.
            return self._malformed(record, request, f"input.data.begntime {body.begntime:%Y-%m-%d %H:%M:%S} is after "
                                                    f"inf_time {request.inf_time:%Y-%m-%d %H:%M:%S}: a visit begins "
                                                    "before it is settled; check the facility's clock and the "
                                                    "admission time")
        if isinstance(body, CumulativeInput) and body.year(request.inf_time) > request.inf_time.year:
            return self._malformed(record, request, f"input.data.cum_ym {body.cum_ym} is in a year after inf_time's "
                                                    f"({request.inf_time.year}): that year has not begun")
        if isinstance(body, SettlementInput) and body.med_type.is_inpatient != request.infno.is_inpatient:
            care, bills = ("inpatient", "outpatient") if body.med_type.is_inpatient else ("outpatient", "inpatient")
            return self._malformed(record, request, f"input.data.med_type {body.med_type.value} is {care} care, "
                                                    f"and infno {request.infno.value} settles {bills} bills")
        # A settlement, cancellation or reversal whose clock is ahead is refused by pricing, after
        # its msgid is checked: a resend of a settled request (the same payload; inf_time is not
        # part of it) gets the stored answer, not a refusal beside a payment in the ledger.
        return Parsed(record, request, body, ahead)

    async def __call__(self, records: list[Incoming]) -> list[Outgoing]:
        if self.caught_up is not None:
            await self.caught_up()
        out: list[Outgoing] = []
        parsed: list[Parsed] = []
        for record in records:
            result = self.parse(record)
            if isinstance(result, Parsed):
                parsed.append(result)
                if result.refused is not None:
                    out.append(dead_letter(record, result.refused))
            else:
                out.extend(result)
        if not parsed:
            return out
        now = datetime.now(UTC)
        # Three independent reads (Redis, then Postgres on a miss; two Postgres queries on their own
        # pool connections) side by side: a batch waits for the slowest, not for their sum.
        subjects, facilities, outages = await asyncio.gather(
            self.subjects.get_many([p.body.psn_no for p in parsed if p.body is not None]),
            self.repo.facilities(sorted({p.request.fixmedins_code for p in parsed})),
            # An insured region's outage windows, and its city's and province's (a province's platform).
            self.repo.outages(sorted({r for p in parsed for r in region_chain(p.request.insuplc_admdvs or "")}), now),
        )
        for p in parsed:
            try:
                subject = subjects.get(p.body.psn_no) if p.body is not None else None
                out.append(self.handle_one(p, subject, facilities, outages, now))
            except Exception as exc:  # noqa: BLE001 - e.g. a stored record this version cannot read; any
                # other is a bug, answered and dead-lettered as pricing does, not a stage stopped on one record
                log.exception("eligibility failed for %s", p.request.msgid)
                out.extend(self._failed(p, f"eligibility failed: {exc!r}"))
        return out

    def _failed(self, p: Parsed, reason: str) -> list[Outgoing]:
        """A request eligibility could not decide: dead-lettered, and answered ``INTERNAL_ERROR``.
        A settlement or pre-settlement is answered by pricing, after its msgid check, as every
        refusal is: a settled request sent again must get its stored answer, not "nothing was
        settled" beside a payment in the ledger."""
        message = ("The platform could not check this person's insurance; nothing was settled. Try again later or settle in cash."
                   if p.request.infno.prices_a_bill else
                   "The platform could not answer this request now; nothing was changed. Try again later.")
        if not (p.request.infno.prices_a_bill and p.body is not None):
            return broken(self.settings, p.record, reason, message)
        work = _work(p)
        work["refusal"] = {"err_code": ErrCode.INTERNAL_ERROR.value, "err_msg": message}
        return [dead_letter(p.record, reason),
                Outgoing(topic=self.settings.topic(SETTLEMENT_ELIGIBLE), value=orjson.dumps(work),
                         key=p.body.psn_no.encode())]

    def handle_one(
        self,
        p: Parsed,
        subject: dict[str, Any] | None,
        facilities: dict[str, FacilityRecord],
        outages: list[Outage],
        now: datetime,
    ) -> Outgoing:
        request, body = p.request, p.body
        if p.refused is not None:
            # Refused before anything about the person is read (a stored record this version cannot
            # read must not turn the refusal into a second dead letter and INTERNAL_ERROR).
            work = _work(p)
            work["refusal"] = {
                "err_code": ErrCode.INVALID_INPUT.value,
                "err_msg": f"The request was refused as malformed: {p.refused}. Correct it and send it again.",
            }
            # Keyed as pricing keys it (the person, stripped), so a resend meets its settlement's partition.
            # A psn_no no settlement can have (over 64 characters: one of 800 KB made a record past
            # Kafka's 1 MiB, a review of session 37) keys it by its msgid.
            psn_no = body.psn_no if body is not None else code_text(request.data.get("psn_no"))
            key = psn_no if 0 < len(psn_no) <= 64 else request.msgid
            return Outgoing(topic=self.settings.topic(SETTLEMENT_ELIGIBLE), value=orjson.dumps(work), key=key.encode())
        # Read only for what decides on the person: a cancellation or reversal passes unchecked,
        # whatever the stored record has become (one this version cannot read included).
        reads_person = request.infno in PERSON_QUERIES or request.infno.prices_a_bill
        person_record = (PersonRecord.model_validate(subject["person"], context=STORED_CONTEXT)
                         if reads_person and subject and subject["person"] else None)
        if request.infno in PERSON_QUERIES:
            # A person's identity, balance, filings and year go to networked facilities only (R20); a
            # benefit check from a facility the region does not know fails as well (it answered
            # infcode 0, "eligible": "0", which a gateway checking infcode read as success). One
            # not networked for the care asked is the visit's answer, below.
            facility = facilities.get(request.fixmedins_code)
            # Networked for no care: its designation withdrawn (med_types [], reference-data.md).
            if facility is None or facility.admdvs != request.mdtrtarea_admvs or not facility.med_types:
                return self._answer(p, err=(
                    ErrCode.UNKNOWN_FACILITY,
                    f"This facility is not a networked facility of region {request.mdtrtarea_admvs}; check the "
                    "facility code configured in the gateway."))
        if request.infno is Infno.PERSON_INFO:
            return self._person_info(p, person_record, subject)
        if request.infno is Infno.PERSON_CUMULATIVE:
            return self._cumulative(p, person_record, subject, facilities[request.fixmedins_code])
        work = _work(p)
        if request.infno.prices_a_bill or request.infno is Infno.BENEFIT_CHECK:
            # Each filing with its earlier versions: a stay admitted under one is still covered by it.
            filings = [version for f in (subject or {}).get("filings", [])
                       for version in FilingRecord.model_validate(f).to_domain().versions()]
            facility = facilities.get(request.fixmedins_code)
            visit = Visit(
                treating_region=request.mdtrtarea_admvs,
                insured_region=request.insuplc_admdvs or "",
                insutype=body.insutype,
                med_type=body.med_type,
                on=request.inf_time.date(),
                disease_code=body.dise_codg,
                # R17 is a province's (or a city's) rule: waived for the regions inside it too.
                filing_waived_in_province=any(
                    r in self.settings.filing_waived_regions for r in region_chain(request.insuplc_admdvs or "")),
                admitted=begntime.date() if (begntime := getattr(body, "begntime", None)) else None,
                admitted_at=_admission_moment(begntime),
                # As sent: the model's default type (02) is no statement that the number is a card's.
                # A 2001 gives them or not; R2 is checked alike when it does.
                cert_type=(body.mdtrt_cert_type or "") if "mdtrt_cert_type" in body.model_fields_set else "",
                cert_no=body.mdtrt_cert_no or "",
            )
            # The insurance the person held until it last changed, read only when the one held now is
            # not the one the request names: a stay admitted while it was held is settled under it.
            person = person_record.to_domain() if person_record else None
            before_record, before = None, None
            if (subject or {}).get("before") and not insured_as_named(person, visit):
                before_record, before = _insured_before(subject["before"])
            # parse() refuses a 2001 without insutype and med_type; SettlementInput requires them
            decision = decide(visit, person, facility.to_domain() if facility else None, filings, outages, now, before)
            if request.infno is Infno.BENEFIT_CHECK:
                return self._benefit_check(p, decision)
            if isinstance(decision, Refused):
                # Filings are looked up on the request's day: a facility clock years slow finds none.
                hint = answers.clock_hint(request.inf_time, now) if decision.code is Refusal.NOT_FILED else ""
                work["refusal"] = {"err_code": ErrCode(decision.code.value).value, "err_msg": decision.message + hint}
            else:
                # Under the insurance held at admission: that record's terms. Its personal account,
                # and what it paid at home (R13 and home_usage), are as the region states them now
                # when the insurance only stopped (same region and fund: the account and the year's
                # usage stay the person's, and the region goes on restating them); after a move, no
                # account (its balance went with the transfer: the patient pays that part, and may
                # claim it at home) and the usage the old insurance's last record stated.
                held = before_record if decision.insured_before else person_record
                assert held is not None and person_record is not None and facility is not None
                same = (person_record if held.insuplc_admdvs == person_record.insuplc_admdvs
                        and held.insutype == person_record.insutype else None)
                work["person"] = _snapshot(held, same)
                work["facility_level"] = facility.level
                work["basis"] = decision.basis.value
                work["filing_id"] = decision.filing.filing_id if decision.filing else ""
                work["filing_category"] = decision.category.value if decision.category else None
                work["filing_waived"] = decision.waived
                work["filing_others"] = [c.value for c in decision.others] if decision.category else []
        return Outgoing(
            topic=self.settings.topic(SETTLEMENT_ELIGIBLE), value=orjson.dumps(work), key=body.psn_no.encode()
        )

    def _answer(self, p: Parsed, output: dict[str, Any] | None = None, err: tuple[ErrCode, str] | None = None) -> Outgoing:
        answer = answers.answer(
            p.request.msgid, p.request.infno.value, output,
            err_code=err[0] if err else None, err_msg=err[1] if err else "",
        )
        return reply(self.settings, p.request.reply_to, answer, facility=p.request.fixmedins_code,
                     request_ts_ms=p.record.timestamp_ms)

    def _not_insured(self, p: Parsed) -> Outgoing:
        """A person query (1101, 5206) about no person of the request's insured region."""
        region = p.request.insuplc_admdvs or "(none given)"
        return self._answer(p, err=(ErrCode.NOT_INSURED, f"No insured person with this psn_no in insured region "
                                    f"{region}; check both on the patient's insurance card."))

    def _person_info(self, p: Parsed, person: PersonRecord | None, subject: dict[str, Any] | None) -> Outgoing:
        if person is None or person.insuplc_admdvs != p.request.insuplc_admdvs:
            return self._not_insured(p)
        filings = [FilingRecord.model_validate(f) for f in (subject or {}).get("filings", [])]
        return self._answer(
            p,
            {
                "baseinfo": {
                    "psn_no": person.psn_no, "psn_name": person.psn_name, "certno": person.certno,
                    "insuplc_admdvs": person.insuplc_admdvs,
                },
                "insuinfo": [{
                    "insutype": person.insutype.value, "psn_type": person.psn_type.value,
                    "psn_insu_stas": "1" if person.active else "2", "balc": str(person.acct_balc),
                    "insuplc_admdvs": person.insuplc_admdvs,
                }],
                "idetinfo": [{"dise_codg": q} for q in person.chronic_qualifications],
                "filings": [f.model_dump(mode="json") for f in filings],
            },
        )

    def _cumulative(self, p: Parsed, person: PersonRecord | None, subject: dict[str, Any] | None,
                    facility: FacilityRecord) -> Outgoing:
        """5206: the person's year is pricing's (its accumulators): passed on with the insurance asked
        about, the person's now or, named by the request, the one held before the last change (a
        stay admitted under it settles under it), and the asking facility's level (its deductible)."""
        body, region = p.body, p.request.insuplc_admdvs

        def asked(record: PersonRecord | None) -> bool:
            return (record is not None and record.insuplc_admdvs == region
                    and (body.insutype is None or body.insutype is record.insutype))

        held, same = person, person
        if not asked(person):
            before = _insured_before(subject["before"])[0] if subject and subject.get("before") else None
            if person is None or not asked(before):
                if person is not None and person.insuplc_admdvs == region:
                    return self._answer(p, err=(ErrCode.NOT_INSURED, f"The person's insurance in region {region} is "
                                                f"insutype {person.insutype.value}, not {body.insutype.value}."))
                return self._not_insured(p)
            assert before is not None
            held = before
            same = person if (person.insuplc_admdvs, person.insutype) == (before.insuplc_admdvs, before.insutype) else None
        assert held is not None
        work = _work(p)
        work["person"] = _snapshot(held, same)
        work["facility_level"] = facility.level
        return Outgoing(topic=self.settings.topic(SETTLEMENT_ELIGIBLE), value=orjson.dumps(work), key=body.psn_no.encode())

    def _benefit_check(self, p: Parsed, decision: Eligible | Refused) -> Outgoing:
        if isinstance(decision, Refused):
            return self._answer(p, {"eligible": "0", "reason_code": decision.code.value, "reason": decision.message})
        return self._answer(
            p,
            {
                "eligible": "1",
                "basis": decision.basis.value,
                "filing_id": decision.filing.filing_id if decision.filing else "",
                "filing_category": decision.category.value if decision.category else "",
            },
        )


def _insured_before(kept: dict[str, Any]) -> tuple[PersonRecord | None, InsuredBefore | None]:
    """The insurance kept from before the person's last change (``fold_insurance``), as a record and
    as the domain reads it; nothing when this version cannot read it (written by a newer one, after
    a downgrade): the stay is then judged by the insurance now, as before the insurance before was
    kept. Said without the record's values (a person's name and identity card number)."""
    try:
        record = PersonRecord.model_validate(kept["record"], context=STORED_CONTEXT)
        since = datetime.fromisoformat(kept["since"]) if kept.get("since") else None
        return record, InsuredBefore(record.to_domain(), datetime.fromisoformat(kept["until"]), since)
    except (ValidationError, ValueError, KeyError, TypeError) as exc:
        log.warning("eligibility: the insurance kept from before a change cannot be read by this version (%s): "
                    "the stay is judged by the insurance now", explain(exc) if isinstance(exc, ValidationError)
                    else type(exc).__name__)
        return None, None


def _admission_moment(begntime: datetime | None) -> datetime | None:
    """The moment a stay was admitted, for a filing changed or cancelled at once that day
    (``Filing.in_force_until_ended``): the wire's time is Beijing's wall clock. None for a begntime
    of a day alone, which the wire reads as midnight (or midnight itself: the two cannot be told
    apart): that stay is judged by its day, as before the time was used, and the version a change
    ended that day does not cover it."""
    if begntime is None or begntime.time() == time(0):
        return None
    return begntime.replace(tzinfo=BUSINESS_TZ) if begntime.tzinfo is None else begntime
