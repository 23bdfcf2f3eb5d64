"""Clearing's stage: settlement.priced → the ledger, then the one answer to the gateway.

The ledger row (or the cancellation mark) and the answer commit together: the Postgres
transaction first, then the Kafka transaction that publishes the answer with the consumed
offsets. A replay after a crash finds the row and publishes the stored answer; a gateway that
sends the same msgid again gets the stored answer, or ``ALREADY_UNDONE`` once the settlement is
cancelled or reversed; another payload under a used msgid is refused ``MODIFIED_REQUEST``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any


from yidi.contracts import answers
from yidi.contracts.envelope import ErrCode, ResponseEnvelope
from yidi.contracts.internal import PricedWork, RefusalNotice, WorkKind
from yidi.domain.clearing import landing_period, owed
from yidi.domain.codes import within
from yidi.domain.money import ZERO, amount_texts
from yidi.platform import metrics, progress
from yidi.platform.kafka import Incoming, Outgoing
from yidi.platform.replies import broken, dead_letter, parse_each, reply
from yidi.platform.settings import Settings

from services.clearing.prepayment import account_of, alert_message, prepayment_alert, refusing_alert, status_update
from services.clearing.repository import (AMOUNT_COLUMNS, ClearingRepository, LedgerRow, NewEntry, WaitingUndo,
                                          batch_locks)

log = logging.getLogger(__name__)
# The per-record counters, their label looked up once (prometheus_client's labels() is not free).
_SETTLED = metrics.LEDGER_ENTRIES.labels("settled")
_DUPLICATE = metrics.LEDGER_ENTRIES.labels("duplicate")
# A priced message that undoes a settlement (pricing writes the wire form: ``"kind":"cancel"``).
_UNDOING = re.compile(rb'"kind"\s*:\s*"cancel"')
_NOTICE = re.compile(rb'"notice"\s*:')


def _both(first: Callable[[], None] | None, second: Callable[[], None]) -> Callable[[], None]:
    """One answer's two ledger counters (a settlement entered and undone at once)."""
    def run() -> None:
        if first is not None:
            first()
        second()
    return run


class ClearingHandler:
    def __init__(self, settings: Settings, repo: ClearingRepository) -> None:
        self.settings = settings
        self.repo = repo

    def _answer(self, work: PricedWork, answer: ResponseEnvelope | dict[str, Any],
                counted: Callable[[], None] | None = None) -> Outgoing:
        """The answer to ``work``; ``counted`` (its ledger counter) runs once the batch committed,
        so a batch tried again counts its entries once."""
        r = work.request
        return reply(self.settings, r.reply_to, answer, facility=r.fixmedins_code, request_ts_ms=work.request_ts_ms,
                     on_commit=counted)

    def _broken(self, record: Incoming, reason: str) -> list[Outgoing]:
        """A priced message clearing cannot record: it does not parse, or (as the stage's ``refuse``)
        Postgres refused a value of it or its output was too large for a Kafka record. Pricing has
        recorded the msgid (runbook, "Dead letters"): a resend under the same msgid is what completes
        it once clearing is fixed (or its dead letter is re-published); a new msgid for the visit is
        refused. A cancellation or reversal has been applied by pricing (the visit is free there), so
        the facility must not settle the visit again meanwhile: the ledger would hold both."""
        if _NOTICE.search(record.value):
            # A refusal notice: pricing answered its request. Dead-lettered only; the region is not
            # warned of it (pricing's yidi_prepayment_refused_timestamp_seconds still names the account).
            return [dead_letter(record, reason)]
        if _UNDOING.search(record.value):
            why = ("The platform could not record this cancellation; the settlement stands in the ledger until it "
                   "is. Send the same request again later, under the same msgid, and do not settle the visit again "
                   "meanwhile.")
        else:
            why = ("The platform could not record this settlement; nothing was settled. Send the same request again "
                   "later, under the same msgid.")
        return broken(self.settings, record, reason, why)

    refuse = _broken  # the stage's refusal of a record it cannot process (TransactionalStage.refuse)

    async def __call__(self, records: list[Incoming]) -> list[Outgoing]:
        # The model checks the message; the answer goes on (to the ledger, to the gateway) in the
        # wire form pricing wrote, which that check has just validated.
        works, out = parse_each(records, _priced, "settlement.priced message", self._broken)
        if not works:
            return out
        async with self.repo.transaction(batch_locks([r.key for r, _ in works])) as conn:
            moves: list[tuple[str, str, str, Decimal, str]] = []
            # The moves of records handled before (a batch handled again after its Postgres commit,
            # or a resend): nothing is moved again, but their statuses and kept alerts go out again.
            again: list[tuple[str, str, str, str]] = []
            notices = [(r, w) for r, (w, _, _) in works if isinstance(w, RefusalNotice)]
            if notices:
                works = [(r, parsed) for r, parsed in works if not isinstance(parsed[0], RefusalNotice)]
            msgids = [w.request.msgid for _, (w, _, _) in works if w.kind is WorkKind.SETTLE]
            setl_ids = [w.target_setl_id for _, (w, _, _) in works if w.kind is WorkKind.CANCEL]
            new_setl_ids = [w.facts.setl_id for _, (w, _, _) in works if w.kind is WorkKind.SETTLE and w.facts]
            firsts = progress.firsts((r.topic, r.partition, r.offset) for r, _ in [*works, *notices])
            cleared, rows, waits = await self.repo.batch_reads(conn, msgids, setl_ids, new_setl_ids, firsts)
            # Undoings that came before their settlement reached the ledger (below): rare.
            waiting = await self.repo.waiting_undos(conn, sorted(waits)) if waits else {}
            waiting_new: list[WaitingUndo] = []
            waiting_done: list[str] = []
            by_msgid = {r.msgid: r for r in rows}
            by_setl = {r.setl_id: r for r in rows}
            undo_msgids = [w.request.msgid for _, (w, _, _) in works if w.kind is WorkKind.CANCEL]
            undo_seen = await self.repo.undo_requests(conn, undo_msgids) if undo_msgids else {}
            entries: list[NewEntry] = []
            undone: dict[str, LedgerRow] = {}
            undo_new: list[tuple[str, str, str, dict[str, Any]]] = []
            # Refusal notices (pricing answered their requests): each a move of nothing, recorded once
            # (by the refused msgid and when it reached Kafka: a resend refused again is another
            # notice, the same record handled again is not), with which the warning is kept, as with
            # a draw, to go out again on a replay. The first of each account warns its region.
            refused: dict[tuple[str, str], list[tuple[tuple[str, str], RefusalNotice]]] = {}
            for _, notice in notices:
                moves.append((notice.insuplc_admdvs, notice.mdtrtarea_admvs, "refused", ZERO, notice.ref))
                refused.setdefault((notice.insuplc_admdvs, notice.mdtrtarea_admvs), []).append((("refused", notice.ref), notice))
            for record, (work, answer, amounts) in works:
                # The latest month closed before this record was first entered (``Cleared``).
                cleared_through = cleared.before(record.topic, record.partition, record.offset)
                if amounts is not None:
                    entered = len(entries)
                    sent = self._settle(work, answer, amounts, by_msgid, by_setl, entries, cleared_through, moves, again)
                    if len(entries) > entered and (waits_for := waiting.pop(entries[-1].row.setl_id, [])):
                        # Undone while the ledger lacked it (its settlement was dead-lettered, and now
                        # sent again): the undoing takes effect as the settlement is entered. Its
                        # request was answered then; its answer now is kept for a resend of it.
                        # The settlement is answered as it now stands (undone), not as priced: the
                        # facility was told it failed, and a success now would have it collect only
                        # the cash part of a bill the ledger holds undone.
                        row = entries[-1].row
                        first = waits_for[0]
                        undo_counted = self._undo(row, first.infno, first.msgid, first.answer, first.month,
                                                  cleared_through, undone, moves)
                        sent = replace(self._answer(work, _undone_answer(work, row)),
                                       on_commit=_both(sent.on_commit, undo_counted))
                        for w in waits_for:
                            undo_seen[w.msgid] = (w.request_hash, w.answer)
                            undo_new.append((w.msgid, w.request_hash, row.setl_id, w.answer))
                            waiting_done.append(w.msgid)
                    out.append(sent)
                    continue
                seen = undo_seen.get(work.request.msgid)
                if seen is not None:
                    out.append(self._answer(work, seen[1], _DUPLICATE.inc))
                    if ((done := by_setl.get(work.target_setl_id)) is not None and done.state != "settled"
                            and _moves_prepayment(done.insuplc_admdvs, done.mdtrtarea_admvs, done.drawn)):
                        again.append((done.insuplc_admdvs, done.mdtrtarea_admvs, "give_back", done.setl_id))
                    continue
                row = by_setl.get(work.target_setl_id)
                if row is None:
                    # Pricing has undone it already (its accumulators given back): a resend replays
                    # the same. Its settlement was dead-lettered here: the undoing is kept, and takes
                    # effect when that settlement is sent again (without it, the settlement would
                    # enter the ledger as settled, and the insured region pay for a cancelled bill).
                    kept = WaitingUndo(work.request.msgid, work.request_hash, work.target_setl_id,
                                       work.request.infno.value, f"{work.request.inf_time:%Y%m}", answer)
                    waiting_new.append(kept)
                    # Its settlement may follow in this very batch (both keyed by the person).
                    waits_for = waiting.setdefault(kept.setl_id, [])
                    if all(w.msgid != kept.msgid for w in waits_for):
                        waits_for.append(kept)
                    out.extend(broken(
                        self.settings, record, f"cancellation of {work.target_setl_id}, which the ledger lacks",
                        f"The platform could not record this undoing of settlement {work.target_setl_id}: the "
                        "ledger lacks it. It is kept, and takes effect if that settlement is recorded. The operators "
                        "are alerted; until they confirm, do not settle the visit again, and keep the settlement slip."))
                    continue
                counted = None
                if row.state == "settled":
                    counted = self._undo(row, work.request.infno.value, work.request.msgid, answer,
                                         f"{work.request.inf_time:%Y%m}", cleared_through, undone, moves)
                undo_seen[work.request.msgid] = (work.request_hash, answer)
                undo_new.append((work.request.msgid, work.request_hash, row.setl_id, answer))
                out.append(self._answer(work, answer, counted))
            # The new rows first (one of them may be undone in this batch), in the moves' statement.
            out.extend(await self._prepayment(conn, moves, again, entries, refused))
            await self.repo.write(conn, list(undone.values()), undo_new, waiting_new, waiting_done)
        return out

    @staticmethod
    def _undo(row: LedgerRow, infno: str, msgid: str, answer: dict[str, Any], month: str, cleared_through: str | None,
              undone: dict[str, LedgerRow], moves: list[tuple[str, str, str, Decimal, str]]) -> Callable[[], None]:
        """Undo settled ``row`` by ``msgid`` (a 2601 reverses, the others cancel), dated ``month``;
        its ledger counter, to run once the batch committed."""
        row.state = "reversed" if infno == "2601" else "cancelled"
        row.undone_msgid, row.undone_answer = msgid, answer
        # The undoing lands in its own month, or after the latest month closed (R3: cleared once),
        # and never before the settlement's own period: a cancellation dated back (a facility clock
        # years slow) would land in a month no one clears, while the settlement was cleared in its
        # own, and the insured region paid for it.
        row.undo_period = landing_period(max(month, row.clr_period), cleared_through)
        undone[row.setl_id] = row
        if _moves_prepayment(row.insuplc_admdvs, row.mdtrtarea_admvs, row.drawn):
            moves.append((row.insuplc_admdvs, row.mdtrtarea_admvs, "give_back", row.drawn, row.setl_id))
        return metrics.LEDGER_ENTRIES.labels(row.state).inc

    async def _prepayment(self, conn: Any, moves: list[tuple[str, str, str, Decimal, str]],
                          again: list[tuple[str, str, str, str]], entries: list[NewEntry],
                          refused: dict[tuple[str, str], list[tuple[tuple[str, str], RefusalNotice]]]) -> list[Outgoing]:
        """Draw on (or give back to) each insured region's prepayment; warn once when it runs low, and
        once more when it runs out. Under the refuse policy, also warn once when pricing refuses a bill
        on it (``refused``: each account's notices in the batch) that it cannot cover now, until a
        top-up or a month's clearing re-arms that warning (``refusal_warned``).

        A balance that runs out does not stop settlement: as the national rule does, the
        shortfall is recorded (a negative balance) and clearing settles it (docs/clearing.md).
        ``entries``, the batch's new ledger rows, are entered in the same statement as the moves.
        """
        moved = await self.repo.move_prepayments(conn, moves, again, entries)
        out = [status_update(self.settings, row) for row in moved.accounts]
        now = {(row["insuplc_admdvs"], row["mdtrtarea_admvs"]): row for row in moved.accounts}
        out += [alert for stored in await self.repo.kept_alerts(conn, moved.replayed)
                if (alert := alert_message(self.settings, stored, now)) is not None]
        replayed = set(moved.replayed)
        # The alert is kept with a move this run made (a move made before keeps its own, if any); a
        # balance's with a move of money (a notice's move keeps the refusal warning).
        last_move = {(i, t): (kind, ref) for i, t, kind, _, ref in moves
                     if (kind, ref) not in replayed and kind != "refused"}
        for row in moved.accounts:
            pair = (row["insuplc_admdvs"], row["mdtrtarea_admvs"])
            account = account_of(row)
            if pair in moved.changed and pair in last_move and (level := account.alert_level()) > row["alert_level"]:
                await self.repo.set_alert_level(conn, *pair, level)
                alert = prepayment_alert(self.settings, row, account)
                await self.repo.keep_alert(conn, last_move[pair], alert.value.decode())
                out.append(alert)
            if row["refusal_warned"]:
                continue
            # A notice of a bill the account cannot cover now either: one refused against an older
            # balance than clearing's (pricing's mirror trails it) just after a top-up is not news.
            fresh = [(move, notice) for move, notice in refused.get(pair, ())
                     if move not in replayed and notice.draw > account.balance]
            if fresh:
                move, notice = fresh[0]
                await self.repo.set_refusal_warned(conn, *pair, True)
                alert = refusing_alert(self.settings, row, account, notice)
                await self.repo.keep_alert(conn, move, alert.value.decode())
                out.append(alert)
        return out

    def _settle(
        self, work: PricedWork, answer: dict[str, Any], amounts: dict[str, str], by_msgid: dict[str, LedgerRow], by_setl: dict[str, LedgerRow],
        entries: list[NewEntry], cleared_through: str | None, moves: list[tuple[str, str, str, Decimal, str]],
        again: list[tuple[str, str, str, str]],
    ) -> Outgoing:
        existing = by_msgid.get(work.request.msgid)
        if existing is not None:
            if existing.request_hash != work.request_hash:
                return self._answer(
                    work,
                    answers.refusal(
                        work.request, ErrCode.MODIFIED_REQUEST,
                        f"msgid {work.request.msgid} was already used for a different request; a new request needs a new msgid.",
                    ),
                    _DUPLICATE.inc,
                )
            if _moves_prepayment(existing.insuplc_admdvs, existing.mdtrtarea_admvs, existing.drawn):
                again.append((existing.insuplc_admdvs, existing.mdtrtarea_admvs, "draw", existing.setl_id))
                if existing.state != "settled":  # undone since: its give-back (and an alert kept with it) too
                    again.append((existing.insuplc_admdvs, existing.mdtrtarea_admvs, "give_back", existing.setl_id))
            if existing.state != "settled":
                # Undone since it was answered (a reversal after a lost answer, a cancellation): the
                # stored success would tell the facility the funds pay what the ledger holds undone.
                return self._answer(work, _undone_answer(work, existing), _DUPLICATE.inc)
            return self._answer(work, existing.answer, _DUPLICATE.inc)
        facts = work.facts
        assert facts is not None, "pricing sends facts with every settlement"
        # Care in the insured region itself (R10) is paid by that region's own fund: it draws on no
        # prepayment, and no other region clears it (docs/clearing.md, "Care at home").
        home = within(facts.mdtrtarea_admvs, facts.insuplc_admdvs)  # a county of it included
        drawn = ZERO if home else owed(facts.fund_pay_sumamt, facts.acct_pay)
        period = landing_period(facts.setlym, cleared_through)
        row = LedgerRow(facts.setl_id, work.request.msgid, work.request_hash, "settled", answer,
                        insuplc_admdvs=facts.insuplc_admdvs, mdtrtarea_admvs=facts.mdtrtarea_admvs, drawn=drawn,
                        clr_period=period)
        sent = self._answer(work, answer, _SETTLED.inc)
        # The ledger keeps the answer as it was sent (the bytes of ``sent``; its refmsg_time is
        # this request's): the same answer, serialised once. (A settlement undone as it is entered,
        # by an undoing that waited for it, is answered ALREADY_UNDONE instead: the ledger keeps
        # this one, the settlement's amounts as priced.)
        entries.append(
            NewEntry(row, work.request.infno.value, facts.psn_no, facts.mdtrt_id, amounts,
                     facts.insuplc_admdvs, facts.mdtrtarea_admvs, facts.fixmedins_code, facts.setlym,
                     period, _setl_date(answer) or work.request.inf_time.date(), drawn, sent.value.decode())
        )
        if not home:
            moves.append((facts.insuplc_admdvs, facts.mdtrtarea_admvs, "draw", drawn, facts.setl_id))
        by_msgid[row.msgid] = row
        by_setl[row.setl_id] = row
        return sent


def _undone_answer(work: PricedWork, row: LedgerRow) -> ResponseEnvelope:
    """The answer to a settlement whose ledger row is undone: it does not stand."""
    how = "reversed (2601)" if row.state == "reversed" else "cancelled"
    return answers.refusal(
        work.request, ErrCode.ALREADY_UNDONE,
        f"Settlement {row.setl_id} of msgid {row.msgid} was {how} by msgid {row.undone_msgid}; it does not stand, "
        "and nothing was settled now: the funds pay nothing of this bill. To settle the visit, send a new "
        "settlement under a new msgid.")


def _moves_prepayment(insured: str, treating: str, drawn: Decimal | None) -> bool:
    """Whether a ledger row drew on (and its undoing gives back to) a prepayment: every one but care
    in the insured region itself, which draws nothing (one recorded before it was told apart drew,
    and gives back what it drew)."""
    return not within(treating, insured) or bool(drawn)


def _priced(raw: Any) -> tuple[PricedWork | RefusalNotice, dict[str, Any] | None, dict[str, str] | None]:
    """A settlement.priced message, validated: the work, its answer in wire form and, for a
    settlement, the ledger's amounts read from that answer (a message without them is refused here);
    or a refusal notice (no answer: pricing answered its request)."""
    if isinstance(raw, dict) and "notice" in raw:
        return RefusalNotice.model_validate(raw), None, None
    work = PricedWork.model_validate(raw)
    answer = raw["answer"]
    amounts = None
    if work.kind is WorkKind.SETTLE:
        if work.facts is None:
            raise ValueError("a settlement without its ledger facts")
        info = work.answer.output.get("setlinfo")
        if not isinstance(info, dict):
            raise ValueError("a settlement's answer has no setlinfo")
        amounts = dict(zip(AMOUNT_COLUMNS, amount_texts([info.get(c, "0.00") for c in AMOUNT_COLUMNS]), strict=True))
        _setl_date(answer)  # a settlement time that is not one is refused here
    return work, answer, amounts


def _setl_date(answer: dict[str, Any]) -> date | None:
    """The day the facility settled, as its answer says (``setl_time``, the first request's time):
    what 3201/3202 reconcile by. Not the request that reached clearing: a resend after a refusal
    here carries its own time (a day later, say) and pricing replays the first answer."""
    setl_time = answer["output"]["setlinfo"].get("setl_time")
    return date.fromisoformat(setl_time[:10]) if isinstance(setl_time, str) and setl_time else None
