"""Pricing's stage: settlement.eligible → answers (pre-settlements, refusals) or settlement.priced.

Pricing is where a settlement's ``msgid`` becomes a fact: the priced request, the person's
accumulators and the ``setl_id`` are written in one Postgres transaction per batch. A request
seen before with the same payload replays what was passed on then; with another payload it is
refused ``MODIFIED_REQUEST``. Cancellation and reversal give back exactly the recorded delta.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from typing import Any

import orjson
from pydantic import ValidationError

from yidi.contracts import answers
from yidi.contracts.common import code_text, wire_time
from yidi.contracts.envelope import ErrCode, Infno, ResponseEnvelope
from yidi.contracts.internal import EligibleWork, PersonSnapshot, PricedWork, RefusalNotice, WorkKind
from yidi.contracts.settlement import BillFields, CancelInput, CumulativeInput, ReversalInput, bill_fields, care_day
from yidi.domain.catalogue import Catalogue, CatalogueItem
from yidi.domain.codes import InsuranceType, PersonType, region_chain, within
from yidi.domain.clearing import owed
from yidi.domain.money import ZERO, fmt
from yidi.domain.policy import BenefitPolicy, PolicyError, policy_in_force
from yidi.domain.pricing import ACCOUNT_DRAWN, OUTPATIENT_QUOTA, Bill, Terms, price, year_so_far
from yidi.platform import metrics
from yidi.platform.db import Purge, locks
from yidi.platform.kafka import Incoming, Outgoing
from yidi.platform.replies import broken, parse_each, reply
from yidi.platform.settings import Settings
from yidi.platform.topics import SETTLEMENT_PRICED

from services.pricing.repository import PricingRepository, StoredRequest, StoredSettlement

log = logging.getLogger(__name__)
ACCOUNT_YEAR = 0  # account draws are counted per balance version, not per year


# What pricing passes on for one settlement (PricedWork: the answer with every line, and the request's
# reference) must fit in a Kafka record (the producer's max_request_size, 1 MiB) with its headers;
# an answer line is larger than its request line, so a request under eligibility's cap can exceed it.
MAX_PASSED_ON_BYTES = 1_000_000


def fund_prefix(insured_region: str, insutype: str) -> str:
    """The year's counters belong to the fund that paid: the insured region's fund of one insurance
    type (R1: its deductible, cap and quota). A person who moves from resident to employee
    insurance, or to another insured region, in the year starts the new fund's counters afresh."""
    return f"@{insured_region}/{insutype}/"


def fund_usage(counters: dict[str, Decimal], fund: str) -> dict[str, Decimal]:
    """A person's year as ``fund`` sees it: its own counters (``fund_prefix``), and counters kept
    before they were kept by fund (no prefix), which count for every fund of the person's year."""
    usage: dict[str, Decimal] = {}
    for counter, amount in counters.items():
        if counter.startswith(fund):
            counter = counter[len(fund):]
        elif counter.startswith("@"):
            continue  # another fund's
        usage[counter] = usage.get(counter, ZERO) + amount
    return usage


def _home_usage(person: PersonSnapshot, year: int) -> dict[str, Decimal]:
    """What the person record states the insurance paid at home in ``year``, as the accumulators'
    counters: counted as if settled here (R13's quota, shared with care at home; the year's
    deductible, the pooled fund's cap and the further layers are the person's wherever the care)."""
    if not person.home_counters and not person.home_quota_used:
        return {}
    home = dict(person.home_counters.get(year, {}))
    if person.home_quota_year == year and person.home_quota_used:
        home[OUTPATIENT_QUOTA] = home.get(OUTPATIENT_QUOTA, ZERO) + person.home_quota_used
    return home


# A settlement_id's length: "S", its day (8 digits) and 16 hex digits of its msgid's digest.
SETTLEMENT_ID_CHARS = 25


def settlement_id(msgid: str, day: date) -> str:
    """Deterministic: the same request always names the same settlement."""
    return f"S{day.year:04d}{day.month:02d}{day.day:02d}{hashlib.sha1(msgid.encode()).hexdigest()[:16].upper()}"


class UnreadableReference(Exception):
    """A request needs a stored policy or catalogue item this version cannot read: it is answered
    INTERNAL_ERROR and dead-lettered (the stage's per-record error path), the batch goes on."""


def _check_readable(batch: Batch, region: str, body: BillFields, treating: str, day: date) -> None:
    """Raise ``UnreadableReference`` when a stored version this version cannot read would decide
    this request's day: its policy, or one of its items, in force then and later than the
    readable version picked (priced without it, a missing item would be self-paid, a missing
    policy NO_POLICY). A version out of force that day refuses nothing."""
    missing = []
    if (unread := _unreadable_policy(batch, region, body.insutype.value, day)) is not None:
        missing.append(unread)
    picked = batch.catalogue(treating, day)
    chain = region_chain(treating)
    for code in dict.fromkeys(line.code for line in body.lines):
        item = picked.get(code)
        for rank, r in enumerate(chain):
            for begins, ends in batch.unreadable.get(("item", r, code), []):
                if begins <= day and (ends is None or day < ends) and _would_win(rank, begins, chain, item):
                    missing.append(f"catalogue item {code} of {r} from {begins}")
    if missing:
        raise UnreadableReference(f"stored reference data this version cannot read decides this request: {missing}")


def _unreadable_policy(batch: Batch, region: str, insutype: str, day: date) -> str | None:
    """The stored policy version this version cannot read that ``policy_in_force`` would have picked
    for ``day``, if any: along the region's chain, each region's latest version begun decides
    (none of its own if that one has ended), readable or not."""
    for r in region_chain(region):
        readable = max((p for p in batch.policies if p.region == r and p.insutype.value == insutype
                        and p.effective_from <= day), key=lambda p: p.effective_from, default=None)
        unread = max(((b, e) for b, e in batch.unreadable.get(("policy", r, insutype), []) if b <= day),
                     key=lambda v: v[0], default=None)
        if unread is not None and (readable is None or unread[0] > readable.effective_from):
            begins, ends = unread
            if ends is None or day < ends:
                return f"policy of {r}/{insutype} from {begins}"
            continue  # ended: the region has none of its own that day
        if readable is not None and readable.in_force(day):
            return None  # the one picked
    return None


def _would_win(rank: int, begins: date, chain: tuple[str, ...], picked: CatalogueItem | None) -> bool:
    """Whether a version of the chain's ``rank``-th region, in force from ``begins``, would have been
    picked over ``picked`` (a more specific region's version stands; of one region, the later)."""
    if picked is None:
        return True
    theirs = chain.index(picked.region)
    return rank < theirs or (rank == theirs and begins > picked.effective_from)


@dataclass
class Batch:
    """Everything one batch reads, and what it will write, kept in memory while it is priced."""

    stored: dict[str, StoredRequest]
    settlements: list[StoredSettlement]
    policies: list[BenefitPolicy]
    items: list[CatalogueItem]
    usage: dict[tuple[str, int], dict[str, Decimal]]
    # Known prepayment balances by (insured, treating), for the "refuse" policy only.
    prepayments: dict[tuple[str, str], Decimal] | None = None
    # The settlement (setl_id) standing for each visit (person, facility, mdtrt_id) the batch settles.
    visits: dict[tuple[str, str, str], str] = field(default_factory=dict)
    # Stored policies ("policy", region, insutype) and items ("item", region, code) this version
    # cannot read: each such version's begndate and enddate (exclusive; None: open).
    unreadable: dict[tuple[str, str, str], list[tuple[date, date | None]]] = field(default_factory=dict)
    new_requests: list[StoredRequest] = field(default_factory=list)
    new_settlements: list[StoredSettlement] = field(default_factory=list)
    undone: list[StoredSettlement] = field(default_factory=list)
    counter_changes: dict[tuple[str, int, str], Decimal] = field(default_factory=lambda: defaultdict(lambda: ZERO))
    # What each settlement of this batch drew on ``prepayments`` (setl_id → pair, amount): a
    # cancellation in the same batch gives it back. One of an earlier batch is given back by
    # clearing, whose balances the next batches read.
    drawn: dict[str, tuple[tuple[str, str], Decimal]] = field(default_factory=dict)
    # The answers decided before for the batch's records by their places (topic, partition, offset):
    # the batch is handled again after its Postgres commit. And what this attempt decides that no
    # stored request holds (a refusal, a quote), kept by place for such a second attempt.
    decided: dict[tuple[str, int, int], tuple[str, str, str]] = field(default_factory=dict)  # place → (msgid, hash, answer)
    # ... and whether it is a state-changing request's (kept whatever the batch stores)
    new_decided: list[tuple[str, int, int, str, str, str, bool]] = field(default_factory=list)
    # The accounts this batch has told clearing of a refusal on (one notice each at most).
    noticed: set[tuple[str, str]] = field(default_factory=set)
    # The treating regions of the batch's bills, with their cities and provinces, that have a
    # catalogue (of any item); None: not looked at (a bill is then priced whatever it finds).
    catalogued: set[str] | None = None
    # The catalogue of each (treating region, day) the batch prices on, picked once per batch.
    _catalogues: dict[tuple[str, date], Catalogue] = field(default_factory=dict, init=False, repr=False)
    # Indexes of ``settlements`` by setl_id and by msgid (the first one listed wins, as a scan would).
    _by_setl_id: dict[str, StoredSettlement] = field(default_factory=dict, init=False, repr=False)
    _by_msgid: dict[str, StoredSettlement] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for s in self.settlements:
            self._index(s)

    def _index(self, s: StoredSettlement) -> None:
        self._by_setl_id.setdefault(s.setl_id, s)
        self._by_msgid.setdefault(s.msgid, s)

    def add_settlement(self, s: StoredSettlement) -> None:
        self.settlements.append(s)
        self._index(s)

    def catalogue(self, region: str, day: date) -> Catalogue:
        found = self._catalogues.get((region, day))
        if found is None:
            found = self._catalogues[(region, day)] = Catalogue.in_force(region, day, self.items)
        return found

    def change(self, psn_no: str, year: int, counter: str, amount: Decimal) -> None:
        self.usage.setdefault((psn_no, year), {})
        self.usage[(psn_no, year)][counter] = self.usage[(psn_no, year)].get(counter, ZERO) + amount
        self.counter_changes[(psn_no, year, counter)] += amount

    def settlement(self, *, setl_id: str | None = None, msgid: str | None = None) -> StoredSettlement | None:
        """The settlement named by setl_id or by msgid (callers give one); an empty name finds nothing."""
        if setl_id and (found := self._by_setl_id.get(setl_id)) is not None:
            return found
        if msgid:
            return self._by_msgid.get(msgid)
        return None


# The settlement each cancellation undoes, and the cancellation of each settlement.
_SETTLED_BY = {Infno.OUTPATIENT_CANCEL: "2207", Infno.INPATIENT_CANCEL: "2304"}
_CANCELLED_BY = {"2207": "2208", "2304": "2305"}


def _account_counter(version: str) -> str:
    return f"{ACCOUNT_DRAWN}:{version}"


class RefusingAccounts:
    """The prepayment accounts this instance refused bills on (``yidi_prepayment_refused_timestamp_seconds``):
    such an account may hold more than its alert lines and refuse a bill larger than it, so the
    balance gauges need not name it (a review, session 46); and which of them clearing is to be
    told of (``notice_due``), for the insured region's warning. A series goes after
    ``keep_seconds`` without a refusal; at most ``cap`` accounts (a gateway cannot add series)."""

    def __init__(self, cap: int, keep_seconds: float = 3600.0, clock: Callable[[], float] = time.time,
                 notice_every: float = 60.0) -> None:
        self.cap, self.keep_seconds, self.clock = cap, keep_seconds, clock
        self.last: dict[tuple[str, str], float] = {}
        self._swept = 0.0
        self.notice_every = notice_every
        self.noticed: dict[tuple[str, str], float] = {}  # oldest first

    def notice_due(self, pair: tuple[str, str]) -> bool:
        """Whether clearing is to be told of a refusal on this account: its first on this instance,
        or its first for ``notice_every`` seconds since a notice of it committed (``noticed``).
        Clearing warns the region once until a top-up; these bound what it records (an account that
        refuses a bill a second is told of once a minute). A notice whose batch did not commit is
        not counted: the account's next refusal sends one."""
        at = self.noticed.get(pair)
        return at is None or self.clock() - at >= self.notice_every

    def noticed_now(self, pair: tuple[str, str]) -> None:
        """A notice of ``pair`` committed (the output's commit hook)."""
        self.noticed.pop(pair, None)
        self.noticed[pair] = self.clock()
        while len(self.noticed) > self.cap:
            self.noticed.pop(next(iter(self.noticed)))  # the least recently told of: told again, if at all

    def refused(self, pair: tuple[str, str]) -> None:
        if pair not in self.last and len(self.last) >= self.cap:
            return
        self.last[pair] = now = self.clock()
        metrics.PREPAYMENT_REFUSED.labels(*pair).set(now)

    def sweep(self) -> None:
        """Take out the accounts not refused on for ``keep_seconds`` (looked at once a minute)."""
        now = self.clock()
        if (not self.last and not self.noticed) or now - self._swept < 60:
            return
        self._swept = now
        for pair in [p for p, at in self.last.items() if now - at > self.keep_seconds]:
            del self.last[pair]
            metrics.PREPAYMENT_REFUSED.remove(*pair)
        for pair in [p for p, at in self.noticed.items() if now - at >= self.notice_every]:
            del self.noticed[pair]  # due again anyway


class PricingHandler:
    def __init__(self, settings: Settings, repo: PricingRepository) -> None:
        self.settings = settings
        self.repo = repo
        self.refusing = RefusingAccounts(settings.prepayment_gauge_accounts)
        # Regions known to have a catalogue: a version is never deleted, so once seen it stays so.
        # One without is asked again at each batch that prices a bill there.
        self._catalogued: set[str] = set()
        # Decided answers past their 14 days go every minute, 10,000 a statement until none is left.
        self._purge = Purge("pricing", repo, lambda conn: self.repo.forget_decided(conn))

    async def __call__(self, records: list[Incoming]) -> list[Outgoing]:
        works, out = parse_each(records, EligibleWork.model_validate, "settlement.eligible message", self._broken)
        self.refusing.sweep()
        if not works:
            return out
        # Each person's settlements are priced one batch at a time, against the accumulators as
        # the last batch left them (architecture.md, "Several instances"): the batch's persons
        # are locked by the query that begins its transaction.
        async with self.repo.transaction(locks("yidi-pricing", [r.key for r, _ in works])) as conn:
            batch = await self._load(conn, [w for _, w in works], [(r.topic, r.partition, r.offset) for r, _ in works])
            for record, work in works:
                place = (record.topic, record.partition, record.offset)
                if (decided := batch.decided.get(place)) is not None and decided[:2] == (work.request.msgid,
                                                                                        work.request_hash):
                    # Handled before, its answer lost with the Kafka transaction: answered as then,
                    # not decided again against what the batch's later records have since stored.
                    out.append(self._reply(work, orjson.loads(decided[2])))
                    continue
                try:
                    stored = len(batch.new_requests)
                    outs = self._one(work, batch)
                    if (len(batch.new_requests) == stored and work.refusal is None and outs
                            and outs[0].answered is not None):
                        # A settlement's, cancellation's or reversal's refusal always; a quote (2206,
                        # 2303) only with a batch that stores a request: one that stores none wrote
                        # nothing its second attempt would read, and a quote decided again settles nothing.
                        # (A refusal for the prepayment may carry its notice to clearing after it: answered
                        # as then, it sends none again; a later refusal of the account does.)
                        batch.new_decided.append((*place, work.request.msgid, work.request_hash,
                                                  outs[0].value.decode(), work.request.infno.changes_state))
                    out.extend(outs)
                except Exception as exc:  # noqa: BLE001 - an unclassified error is a bug: answer, dead-letter, log
                    if isinstance(exc, UnreadableReference):  # known, logged once per version: no traceback each
                        log.error("pricing failed for %s: %s", work.request.msgid, exc)
                    else:
                        log.exception("pricing failed for %s", work.request.msgid)
                    out.extend(self._broken(record, f"pricing failed: {exc!r}"))
            decided = [d[:6] for d in batch.new_decided if d[6] or batch.new_requests]
            await self.repo.write(conn, batch.new_requests, batch.new_settlements, batch.undone, batch.counter_changes,
                                  decided)
        self._purge.due()
        return out

    def _broken(self, record: Incoming, reason: str) -> list[Outgoing]:
        return broken(self.settings, record, reason, "The platform could not price this request; nothing was settled. Try again later or settle in cash.")

    async def _load(self, conn: Any, works: list[EligibleWork], places: Sequence[tuple[str, int, int]] = ()) -> Batch:
        policy_keys, item_keys, usage_keys, visit_keys, setl_ids, msgids = set(), set(), set(), set(), [], []
        treating: set[str] = set()
        for w in works:
            r = w.request
            # The request's data as the gateway sent it (eligibility passes its bytes on): its codes
            # are read here as the contract's Code reads them, stripped, which is how _price and
            # _undo look them up. A padded psn_no read as sent missed the person's accumulators.
            data = r.data
            if r.infno.prices_a_bill and w.refusal is None:
                psn_no = code_text(data.get("psn_no"))
                # A region's own versions, else its city's, else its province's (region_chain).
                insutype = data.get("insutype", "")
                policy_keys.update((region, insutype) for region in region_chain(r.insuplc_admdvs or ""))
                chain = region_chain(r.mdtrtarea_admvs)
                treating.update(chain)
                for d in data.get("feedetail", []):
                    code = code_text(d.get("hilist_code"))
                    item_keys.update((region, code) for region in chain)
                usage_keys.add((psn_no, care_day(r.inf_time, data).year))
                usage_keys.add((psn_no, ACCOUNT_YEAR))
                # A pre-settlement too: a visit settled already is refused either way.
                visit_keys.add((psn_no, r.fixmedins_code, code_text(data.get("mdtrt_id"))))
            if r.infno is Infno.PERSON_CUMULATIVE and w.refusal is None and w.person is not None:
                # The person's insurance (eligibility checked the request names it), that year.
                try:
                    year = CumulativeInput.model_validate(data).year(r.inf_time)
                except (ValidationError, ValueError):
                    continue  # refused with the record alone (_cumulative reads it again)
                policy_keys.update((region, w.person.insutype) for region in region_chain(w.person.insuplc_admdvs))
                usage_keys.add((w.person.psn_no, year))
                usage_keys.add((w.person.psn_no, ACCOUNT_YEAR))
            if r.infno.is_cancellation:
                setl_ids.append(code_text(data.get("setl_id")))
            if r.infno is Infno.REVERSAL:
                msgids.append(code_text(data.get("omsgid")))
        # Cancellations and reversals name settlements whose (person, year) accumulators are read too.
        settlements = await self.repo.settlements(conn, setl_ids, msgids) if setl_ids or msgids else []
        usage_keys |= {(s.psn_no, s.year) for s in settlements} | {(s.psn_no, ACCOUNT_YEAR) for s in settlements}
        prepayments = None
        if self.settings.prepayment_policy == "refuse":
            # Pre-settlements too: a bill that pre-settles also settles.
            pairs = {(w.request.insuplc_admdvs or "", w.request.mdtrtarea_admvs)
                     for w in works if w.request.infno.prices_a_bill}
            prepayments = await self.repo.prepayments(conn, pairs)
        if unknown := treating - self._catalogued:
            self._catalogued |= await self.repo.catalogued(conn, unknown)
        stored, policies, items, usage, visits, unreadable, decided = await self.repo.batch_reads(
            conn, [w.request.msgid for w in works], policy_keys, item_keys, usage_keys, visit_keys, places)
        return Batch(stored=stored, settlements=settlements, policies=policies, items=items, usage=usage,
                     prepayments=prepayments, visits=visits, unreadable=unreadable, decided=decided,
                     catalogued=treating & self._catalogued)

    def _reply(self, work: EligibleWork, answer: ResponseEnvelope | dict[str, Any]) -> Outgoing:
        r = work.request
        return reply(self.settings, r.reply_to, answer, facility=r.fixmedins_code, request_ts_ms=work.request_ts_ms)

    def _refuse(self, work: EligibleWork, code: ErrCode, message: str) -> list[Outgoing]:
        return [self._reply(work, answers.refusal(work.request, code, message))]

    def _pass_on(self, value: bytes, psn_no: str) -> Outgoing:
        return Outgoing(topic=self.settings.topic(SETTLEMENT_PRICED), value=value, key=psn_no.encode())

    def _one(self, work: EligibleWork, batch: Batch) -> list[Outgoing]:
        request = work.request
        if request.infno.changes_state and (seen := batch.stored.get(request.msgid)):
            if seen.request_hash != work.request_hash:
                return self._refuse(
                    work, ErrCode.MODIFIED_REQUEST,
                    f"msgid {request.msgid} was already used for a different request; "
                    "a new request needs a new msgid.",
                )
            # The same request again: pass on what was passed on then, answered to this copy.
            ref = request.ref_wire()
            return [
                self._pass_on(
                    orjson.dumps(PricedWork.model_validate(e | {"request": ref, "request_ts_ms": work.request_ts_ms})
                                 .model_dump(mode="json")),
                    # keyed as the first pass was (stripped): the same partition of settlement.priced,
                    # so clearing never sees a replayed cancellation before its settlement
                    code_text(request.data.get("psn_no")),
                )
                for e in seen.emitted
            ]
        if not request.infno.changes_state and request.msgid in batch.stored:
            # A pre-settlement under the msgid of a request recorded here: answered as a settlement
            # under it, the gateway held two answers to one msgid (its idempotency key).
            return self._refuse(
                work, ErrCode.MODIFIED_REQUEST,
                f"msgid {request.msgid} was already used for another request (infno "
                f"{batch.stored[request.msgid].infno}); a new request needs a new msgid.",
            )
        if work.refusal is not None:
            return self._refuse(work, work.refusal.err_code, work.refusal.err_msg)
        if request.infno.prices_a_bill:
            return self._price(work, batch)
        if request.infno is Infno.PERSON_CUMULATIVE:
            return self._cumulative(work, batch)
        return self._undo(work, batch)

    def _cumulative(self, work: EligibleWork, batch: Batch) -> list[Outgoing]:
        """5206: the person's year so far, against the insured region's policy in force on the
        request's day (a year before the request's: on its last day)."""
        request, person = work.request, work.person
        assert person is not None, "eligibility passes the person with every 5206"
        year = CumulativeInput.model_validate(request.data).year(request.inf_time)
        day = request.inf_time.date() if year == request.inf_time.year else date(year, 12, 31)
        region, insutype = person.insuplc_admdvs, InsuranceType(person.insutype)
        if batch.unreadable and (unread := _unreadable_policy(batch, region, insutype.value, day)) is not None:
            raise UnreadableReference(f"stored reference data this version cannot read decides this request: {[unread]}")
        policy = policy_in_force(batch.policies, region, insutype, day)
        if policy is None:
            return self._refuse(work, ErrCode.NO_POLICY,
                                f"Insured region {region} has no {insutype.value} policy in force on {day.isoformat()}: "
                                "its limits are not known here.")
        usage = fund_usage(batch.usage.get((person.psn_no, year), {}), fund_prefix(region, insutype.value))
        home = _home_usage(person, year)
        for counter, amount in home.items():
            usage[counter] = usage.get(counter, ZERO) + amount
        drawn = batch.usage.get((person.psn_no, ACCOUNT_YEAR), {}).get(_account_counter(person.acct_version), ZERO)
        # The account is the balance the region states now, less the draws since: not a year's.
        balance = person.acct_balc if year == request.inf_time.year else None
        lines = year_so_far(policy, PersonType(person.psn_type), frozenset(person.qualifications), usage, home,
                            balance, drawn, work.facility_level)
        output = {
            "cuminfo": {"psn_no": person.psn_no, "insutype": insutype.value, "insuplc_admdvs": region, "year": year,
                        "policy_version": policy.version},
            "cumoutput": [{"cum_type_code": line.kind, "bucket": line.bucket, "fund_pay_type": line.fund,
                           "limit": None if line.limit is None else fmt(line.limit), "used": fmt(line.used),
                           "used_at_home": fmt(line.used_at_home),
                           "left": None if (left := line.left) is None else fmt(left)} for line in lines],
        }
        return [self._reply(work, answers.answer_wire(request.msgid, request.infno.value, output))]

    def _price(self, work: EligibleWork, batch: Batch) -> list[Outgoing]:
        request, body = work.request, bill_fields(work.request.data)
        person = work.person
        assert person is not None, "eligibility passes a person with every eligible settlement"
        day = care_day(request.inf_time, request.data)
        region = request.insuplc_admdvs or ""
        policy = policy_in_force(batch.policies, region, body.insutype, day)
        if batch.unreadable:
            _check_readable(batch, region, body, request.mdtrtarea_admvs, day)
        if policy is None:
            return self._refuse(
                work, ErrCode.NO_POLICY,
                f"Insured region {region} has no {body.insutype.value} policy in force on {day.isoformat()}; "
                "nothing was settled. Settle in cash or contact the insured region." + answers.clock_hint(request.inf_time),
            )
        if batch.catalogued is not None and not batch.catalogued & set(region_chain(request.mdtrtarea_admvs)):
            # Reference data missing, as a policy missing is: every line would be "not in the
            # catalogue", and the patient charged the whole bill by a settlement that succeeded
            # (a review, session 49).
            return self._refuse(
                work, ErrCode.NO_POLICY,
                f"Treating region {request.mdtrtarea_admvs} has no catalogue loaded (nor has its city or province); "
                "nothing was settled. Settle in cash, or again once the platform has the region's catalogue.",
            )
        catalogue = batch.catalogue(request.mdtrtarea_admvs, day)
        fund = fund_prefix(region, body.insutype.value)
        year_usage = fund_usage(batch.usage.get((body.psn_no, day.year), {}), fund)
        home = _home_usage(person, day.year)
        for counter, amount in home.items():
            year_usage[counter] = year_usage.get(counter, ZERO) + amount
        account_counter = _account_counter(person.acct_version)
        drawn = batch.usage.get((body.psn_no, ACCOUNT_YEAR), {}).get(account_counter, ZERO)
        terms = Terms(
            med_type=body.med_type,
            insutype=body.insutype,
            person_type=PersonType(person.psn_type),
            facility_level=work.facility_level,
            filing_category=work.filing_category,
            waived_filing=work.basis == "waived" or work.filing_waived,
            use_account=body.acct_used_flag == "1",
            account_balance=max(ZERO, person.acct_balc - drawn),
            qualifications=frozenset(person.qualifications),
            disease_code=body.dise_codg,
        )
        bill = Bill(body.mdtrt_id, day, body.lines, request.fixmedins_code)
        try:
            pricing = price(bill, catalogue, policy, terms, year_usage, home)
            for other in work.filing_others:
                # Another valid temporary filing of this visit: the one the insured region's
                # numbers pay most settles it (of equals, eligibility's choice).
                alternative = price(bill, catalogue, policy, replace(terms, filing_category=other), year_usage, home)
                if alternative.fund_pay_sumamt > pricing.fund_pay_sumamt:
                    pricing = alternative
        except PolicyError as exc:
            return self._refuse(work, ErrCode.NO_POLICY, f"{exc}; nothing was settled.")
        settle = request.infno.is_settlement
        visit = (body.psn_no, request.fixmedins_code, body.mdtrt_id)
        if standing := batch.visits.get(visit):
            # A pre-settlement too: it would quote the visit with its own settlement counted (no
            # deductible left, the cap nearer), numbers its settlement could not get once that one was
            # cancelled (a review, session 49). A bill that pre-settles also settles.
            return self._refuse(
                work, ErrCode.ALREADY_SETTLED,
                f"Visit {body.mdtrt_id} of this person is already settled as setl_id {standing}; nothing was "
                f"{'settled again' if settle else 'quoted'}. To settle it anew, cancel that settlement first.",
            )
        setl_id = settlement_id(request.msgid, request.inf_time.date()) if settle else ""  # the day it was settled
        output = answers.settlement_output(
            pricing, setl_id=setl_id, mdtrt_id=body.mdtrt_id, psn_no=body.psn_no, psn_name=person.psn_name,
            insutype=body.insutype.value, psn_type=person.psn_type, med_type=body.med_type.value,
            setl_time=wire_time(request.inf_time), clr_optins=region,
        )
        answer = answers.answer_wire(request.msgid, request.infno.value, output)
        info = output["setlinfo"]
        # PricedWork in wire form, field for field (tests/unit/test_wire_forms.py checks it validates).
        priced = {
            "kind": WorkKind.SETTLE.value, "request": request.ref_wire(), "request_hash": work.request_hash,
            "request_ts_ms": work.request_ts_ms, "answer": answer,
            "facts": {
                "setl_id": setl_id, "psn_no": body.psn_no, "mdtrt_id": body.mdtrt_id, "insuplc_admdvs": region,
                "mdtrtarea_admvs": request.mdtrtarea_admvs, "fixmedins_code": request.fixmedins_code,
                "setlym": info["setl_time"][:4] + info["setl_time"][5:7], "medfee_sumamt": info["medfee_sumamt"],
                "fund_pay_sumamt": info["fund_pay_sumamt"], "acct_pay": info["acct_pay"],
                "psn_cash_pay": info["psn_cash_pay"],
            },
            "target_setl_id": "",
        }
        value = orjson.dumps(priced)
        # A pre-settlement's setl_id is empty in its answer and its facts: measured with the
        # settlement's, so that a bill that pre-settles also settles (it passed 50 bytes short).
        size = len(value) + (0 if settle else 2 * SETTLEMENT_ID_CHARS)
        if size > MAX_PASSED_ON_BYTES:
            # Refused before anything is recorded: a message Kafka would refuse after the settlement
            # was committed here would leave it recorded and never answered. A pre-settlement of the
            # same bill is measured the same way, so that the one passes where the other does (its
            # answer alone, unmeasured, was refused by Kafka: INTERNAL_ERROR "report it").
            return self._refuse(
                work, ErrCode.INVALID_INPUT,
                f"The bill's answer would be {size} bytes, more than one message may carry; nothing was "
                "settled. Send the bill with identical items on one line each (their count in cnt), or fewer lines.",
            )
        draws = batch.prepayments is not None and not within(request.mdtrtarea_admvs, region)  # care at home: nothing
        if draws:
            pair = (region, request.mdtrtarea_admvs)
            left = batch.prepayments.get(pair, ZERO)
            draw = owed(pricing.fund_pay_sumamt, pricing.acct_pay)  # what clearing will draw
            if draw > 0 and draw > left:  # a bill the funds and account pay nothing of draws nothing
                # A pre-settlement too: it quoted what the funds pay, and its settlement was refused
                # (a review, session 46). A bill that pre-settles also settles.
                self.refusing.refused(pair)
                sent = self._refuse(
                    work, ErrCode.PREPAYMENT_EXHAUSTED,
                    f"The prepayment of insured region {region} for this region is exhausted (left {left}); "
                    f"nothing was {'settled' if settle else 'quoted'}. The patient pays now and claims at home, or "
                    "settles again once topped up.",
                )
                if pair not in batch.noticed and self.refusing.notice_due(pair):
                    # Clearing, which never sees the refused bill, warns the insured region (an
                    # account may hold more than its warning line and refuse a bill larger than it).
                    batch.noticed.add(pair)
                    notice = RefusalNotice(insuplc_admdvs=region, mdtrtarea_admvs=request.mdtrtarea_admvs, draw=draw,
                                           left=left, ref=f"{request.msgid}@{work.request_ts_ms}")
                    sent.append(Outgoing(self.settings.topic(SETTLEMENT_PRICED), orjson.dumps(notice.model_dump(mode="json")),
                                         key=body.psn_no.encode(), on_commit=lambda: self.refusing.noticed_now(pair)))
                return sent
        if not settle:
            return [self._reply(work, answer)]  # pre-settlement: the same numbers, nothing committed
        # The counters this settlement moves, keyed "year|counter" (account draws: by balance version).
        moved = {
            (ACCOUNT_YEAR, account_counter) if counter == ACCOUNT_DRAWN else (day.year, fund + counter): amount
            for counter, amount in pricing.usage_delta.items()
        }
        stored_delta = {f"{year}|{counter}": str(amount) for (year, counter), amount in moved.items()}
        # Everything that could fail is built: now change the batch's state, all of it or nothing.
        if draws:
            batch.prepayments[pair] = left - draw
            batch.drawn[setl_id] = (pair, draw)
        for (year, counter), amount in moved.items():
            batch.change(body.psn_no, year, counter, amount)
        self._remember(batch, work, setl_id, priced, value)
        settlement = StoredSettlement(setl_id, request.msgid, body.psn_no, day.year, stored_delta, "settled", None,
                                      request.fixmedins_code, body.mdtrt_id, request.infno.value)
        batch.visits[visit] = setl_id
        batch.new_settlements.append(settlement)
        batch.add_settlement(settlement)
        return [self._pass_on(value, body.psn_no)]

    def _remember(self, batch: Batch, work: EligibleWork, setl_id: str | None, emitted: dict[str, Any],
                  sent: bytes) -> None:
        """Keep what was passed on, in its wire form: the dict, and the bytes that were sent."""
        stored = StoredRequest(work.request.msgid, work.request_hash, work.request.infno.value, setl_id, [emitted],
                               (b"[" + sent + b"]").decode())
        batch.stored[stored.msgid] = stored
        batch.new_requests.append(stored)

    def _undo(self, work: EligibleWork, batch: Batch) -> list[Outgoing]:
        """Cancellation (2208/2305, by setl_id) or reversal (2601, by the original msgid)."""
        request = work.request
        if request.infno is Infno.REVERSAL:
            rev = ReversalInput.model_validate(request.data)
            target = batch.settlement(msgid=rev.omsgid)
            psn_no, mdtrt_id, what = rev.psn_no, None, f"original msgid {rev.omsgid}"
            new_state = "reversed"
        else:
            cancel = CancelInput.model_validate(request.data)
            target = batch.settlement(setl_id=cancel.setl_id)
            psn_no, mdtrt_id, what = cancel.psn_no, cancel.mdtrt_id, f"setl_id {cancel.setl_id}"
            new_state = "cancelled"
        # Only the facility that settled undoes it, for the visit it settled (settlements made before
        # migration 004 did not keep their visit: person only).
        if (target is None or target.psn_no != psn_no
                or (target.fixmedins_code is not None and target.fixmedins_code != request.fixmedins_code)
                or (mdtrt_id is not None and target.mdtrt_id is not None and target.mdtrt_id != mdtrt_id)):
            return self._refuse(
                work, ErrCode.NOT_FOUND,
                f"No settlement of this person at this facility with {what}; check the number on the settlement slip.",
            )
        # Each kind undoes its own: 2208 an outpatient settlement (2207), 2305 an inpatient one (2304);
        # a reversal names the original's transaction.
        meant = rev.oinfno if request.infno is Infno.REVERSAL else _SETTLED_BY[request.infno]
        if target.infno is not None and target.infno != meant:
            return self._refuse(
                work, ErrCode.INVALID_INPUT,
                f"Settlement {target.setl_id} was made by {target.infno}, not {meant}: "
                + (f"send the reversal with oinfno {target.infno}." if request.infno is Infno.REVERSAL
                   else f"cancel it with {_CANCELLED_BY[target.infno]}.") + " Nothing was changed.",
            )
        if target.state == "settled":
            if target.visit is not None and batch.visits.get(target.visit) == target.setl_id:
                del batch.visits[target.visit]  # the visit may be settled anew, in this batch too
            for key, amount in target.usage_delta.items():
                year, _, counter = key.partition("|")
                batch.change(target.psn_no, int(year), counter, -Decimal(amount))
            if batch.prepayments is not None and (drawn := batch.drawn.pop(target.setl_id, None)) is not None:
                # Settled and undone in this batch: its draw given back to the "refuse" check, which
                # refused a new settlement against a balance the cancellation had restored (a review,
                # session 36).
                pair, draw = drawn
                batch.prepayments[pair] = batch.prepayments.get(pair, ZERO) + draw
            target.state, target.undone_by = new_state, request.msgid
            batch.undone.append(target)
        output = {"setlinfo": {"setl_id": target.setl_id, "psn_no": target.psn_no, "state": target.state,
                                "undone_by": target.undone_by or ""}}
        priced = {
            "kind": WorkKind.CANCEL.value, "request": request.ref_wire(), "request_hash": work.request_hash,
            "request_ts_ms": work.request_ts_ms, "answer": answers.answer_wire(request.msgid, request.infno.value, output),
            "facts": None, "target_setl_id": target.setl_id,
        }
        value = orjson.dumps(priced)
        self._remember(batch, work, target.setl_id, priced, value)
        return [self._pass_on(value, psn_no)]
