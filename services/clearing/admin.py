"""Clearing's second stage: clearing.requests — prepayment funding and withdrawals, month runs, confirmations,
the clerks' queries, and facilities' reconciliation (3201/3202, passed on by eligibility).

Each request is applied once by its ``reqid`` (the result is kept and replayed); reconciliations
and queries change nothing and are answered from the ledger as it stands.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, get_args

import asyncpg
from pydantic import ValidationError

from yidi.contracts import answers
from yidi.contracts.clearing import (
    CLEARING_REQUEST,
    ClearingRequest,
    ConfirmStatement,
    CutPosition,
    FundPrepayment,
    PeriodClosed,
    QueryFacilityDay,
    QueryMonth,
    QueryPairMonth,
    QueryPrepayment,
    QuerySettlement,
    QueryStatement,
    Reconcile,
    ReconcileDetailsInput,
    ReconcileTotalsInput,
    RunMonth,
    Statement,
    WithdrawPrepayment,
)
from yidi.contracts.envelope import ErrCode, Infno
from yidi.domain.codes import BUSINESS_TZ, within
from yidi.domain.clearing import PairTotals, month_ended, net_positions, next_month, reconcile_details, reconcile_totals
from yidi.domain.money import MAX_AMOUNT, fmt
from yidi.platform import metrics, progress
from yidi.platform.db import savepoint
from yidi.platform.errors import BadData, RaceLost, TransientError
from yidi.platform.jsonwire import dumps, loads, request_hash
from yidi.platform.kafka import Incoming, Outgoing
from yidi.platform.replies import answer_fallback, broken, parse_each, recover_word, refuse_by_reqid, reply
from yidi.platform.settings import Settings
from yidi.platform.topics import CLEARING_ALERTS, CLEARING_PERIODS, CLEARING_STATEMENTS, PREPAYMENT_STATUS

from services.clearing.prepayment import account_of, account_view, alert_message, prepayment_alert, status_update
from services.clearing.repository import SETTLEMENT_GROUP, ClearingRepository

AMOUNTS = ("medfee_sumamt", "fund_pay_sumamt", "acct_pay")

log = logging.getLogger(__name__)


def _amounts(row: Any) -> dict[str, str]:
    return {k: fmt(row[k]) for k in AMOUNTS if k in row}


def _text(value: Any) -> str:
    """A reconciliation's figure as the contract writes it: amounts with two decimals, counts whole."""
    return fmt(value) if isinstance(value, Decimal) else str(value)


def statement_of(row: Any) -> Statement:
    return Statement(**{k: row[k] for k in Statement.model_fields if k in row})


ADMIN_REPLY_TO = FundPrepayment.model_fields["reply_to"].default  # clearing.requests' default reply_to
_RECONCILE = re.compile(rb'"type"\s*:\s*"reconcile"')
# The request types, the only values the metric's type label takes (a request's own word otherwise).
_TYPES = frozenset(get_args(model.model_fields["type"].annotation)[0] for model in get_args(get_args(ClearingRequest)[0]))


def judged_on(record: Incoming) -> date:
    """The business day a request is judged on: today; or, for a request answered before the
    database was restored and handled again now (``progress.RESTORED``), the day it was sent, as it
    was judged then (a month run refused "has not ended" must not close the month now, its result
    dropped: yidi.platform.progress)."""
    if progress.RESTORED.get():
        return datetime.fromtimestamp(record.timestamp_ms / 1000, BUSINESS_TZ).date()
    return datetime.now(BUSINESS_TZ).date()


def judged_at(record: Incoming) -> datetime | None:
    """When a request is recorded as done: None (now); or, handled again after a restore, when it
    was sent (a confirmation's time as it was first recorded, near enough)."""
    if progress.RESTORED.get():
        return datetime.fromtimestamp(record.timestamp_ms / 1000, BUSINESS_TZ)
    return None


def _counter(kind: str, outcome: str) -> Callable[[], None]:
    """Counts one request's result (``yidi_clearing_requests_total``), run once its batch committed."""
    return metrics.CLEARING_REQUESTS.labels(kind, outcome).inc


class BeforeItsCut(TransientError):
    """A month's run handled again after a restore, whose settlements before its close are not all
    handled again yet (``ClearingRepository.short_of_cut``): its totals wait, the batch retried."""


class ClearingAdminHandler:
    def __init__(self, settings: Settings, repo: ClearingRepository) -> None:
        self.settings = settings
        self.repo = repo
        # The settlement stage whose position a month's close records as its cut.
        self.cut_of = settings.group(SETTLEMENT_GROUP)

    def refuse(self, record: Incoming, reason: str) -> list[Outgoing]:
        """A request that does not validate, or that the stage could not process (``BadData``):
        dead-lettered, and answered on its ``reply_to`` by ``reqid``. A facility's 3201/3202 (passed
        on by eligibility, its reqid its msgid), or one without a readable reqid, is answered as
        ``broken`` answers a gateway: an INTERNAL_ERROR response envelope under its msgid, keyed by
        its facility, as the gateway's client waits for it."""
        if _RECONCILE.search(record.value):
            return broken(self.settings, record, reason,
                          "The platform could not reconcile this request; send it again later, under a new msgid.")
        return refuse_by_reqid(
            self.settings, record, reason, default_reply_to=ADMIN_REPLY_TO,
            result=lambda reqid: {"reqid": reqid, "ok": False, "data": {},
                                  "reason": f"the platform could not process this request ({reason[:500]})"},
            on_commit=_counter(recover_word(record.value, "type", _TYPES), "invalid"),
        ) or broken(self.settings, record, reason, "The platform could not process this request.")

    async def __call__(self, records: list[Incoming]) -> list[Outgoing]:
        requests, out = parse_each(records, CLEARING_REQUEST.validate_python, "clearing request", self.refuse)
        uses = Counter(request.reqid for _, request in requests)
        # A month's run (its reqid its own in the batch) goes first: its totals then hold no lock a
        # funding or a confirmation of this batch took, which settlement batches would wait for.
        # Runs go in month order: months are cleared in order, so a batch of several closes each.
        runs: list[tuple[Incoming, Any]] = []
        rest: list[tuple[Incoming, Any]] = []
        for p in requests:
            (runs if isinstance(p[1], RunMonth) and uses[p[1].reqid] == 1 else rest).append(p)
        runs.sort(key=lambda p: p[1].setlym)
        requests = runs + rest
        refused: dict[str, str] = {}  # by reqid: why close_month did not close the month
        finishing: set[str] = set()  # months closed, their statements written in this batch
        for record, request in runs:
            if month_ended(request.setlym, judged_on(record)):
                # Closed before this batch's transaction locks anything a settlement batch may wait for.
                if (refusal := await self.repo.close_month(request.setlym, request.reqid, finishing,
                                                           cut_of=self.cut_of)) is not None:
                    refused[request.reqid] = refusal
                else:
                    finishing.add(request.setlym)
        async with self.repo.transaction() as conn:
            locked = False
            for record, request in requests:
                if not locked and isinstance(request, (FundPrepayment, WithdrawPrepayment, ConfirmStatement)):
                    # After the months' runs (above): their totals take no account's lock.
                    await _lock_accounts(conn, [r for _, r in requests])
                    locked = True
                if isinstance(request, Reconcile):
                    out.append(await self._reconcile(conn, request))
                    continue
                seen = await conn.fetchrow(
                    "SELECT request_hash, emitted FROM clearing.admin_requests WHERE reqid = $1", request.reqid
                )
                if seen is not None and seen["request_hash"] in ("", request_hash(request)):
                    # What it published then, its result to this copy's reply_to (the hash leaves
                    # reply_to out: a clerk's tool that moved to another topic is answered there).
                    result, *extra = loads(seen["emitted"])
                    extra = await self._statuses_now(conn, extra)
                    out.extend(self._emit([result | {"topic": self.settings.topic(request.reply_to)}, *extra],
                                          counted=(request.type, "stored")))
                    continue
                if seen is not None:
                    ok, reason, data, extra = False, f"reqid {request.reqid} was already used for another request", {}, []
                else:
                    try:
                        ok, reason, data, extra = await self._apply(conn, record, request, refused)
                    except ValidationError as exc:
                        # A message the contract refuses (an amount out of range, say): this request
                        # is refused and kept for the operators, not tried again forever.
                        raise BadData(f"request {request.reqid} made a message the contract refuses: "
                                      f"{exc.errors()[0]['msg']}") from exc
                result = {"reqid": request.reqid, "ok": ok, "reason": reason, "data": data}
                emitted = [{"topic": self.settings.topic(request.reply_to), "value": dumps(result).decode(),
                            "key": request.reqid}] + extra
                # A refused month's run changed nothing ("cleared already", "has not ended", an
                # earlier month to run first): decided again when sent again, so that it runs once
                # the month has ended or its turn has come.
                if seen is None and not request.type.startswith("query") and (ok or not isinstance(request, RunMonth)):
                    await conn.execute(
                        "INSERT INTO clearing.admin_requests (reqid, request_hash, emitted) VALUES ($1, $2, $3::jsonb)",
                        request.reqid, request_hash(request), dumps(emitted).decode(),
                    )
                out.extend(self._emit(emitted, counted=(request.type, "ok" if ok else "refused")))
        return out

    def _emit(self, emitted: list[dict[str, Any]], *, counted: tuple[str, str]) -> list[Outgoing]:
        """What a request publishes, as kept: its result (on platform.moved.clearing.results if the
        broker refuses the requester's reply_to for good), counted by ``counted`` (type, outcome)
        once committed, and the prepayment messages it caused."""
        return [Outgoing(e["topic"], e["value"].encode(), key=e["key"].encode(),
                         fallback=answer_fallback(self.settings, e["topic"], ADMIN_REPLY_TO),
                         on_commit=_counter(*counted) if i == 0 else None) for i, e in enumerate(emitted)]

    async def _statuses_now(self, conn: Any, emitted: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """What a stored request published, with each account's status as the account is now: as
        stored, a resend (or a batch handled again) put an old balance and version back on the
        compacted status topic, where it could be the last record of its key a mirror rebuilt from
        the topic reads (a review, session 37). A warning it gave goes out again only while the
        account is still at the level it warned of, as the settlement stage's kept warnings do: a
        resend after a top-up told the region again that its account was low (left by session 46)."""
        topic, alerts = self.settings.topic(PREPAYMENT_STATUS), self.settings.topic(CLEARING_ALERTS)
        pairs = sorted({_status_pair(e) for e in emitted if e["topic"] in (topic, alerts)})
        if not pairs:
            return emitted
        now = {(r["insuplc_admdvs"], r["mdtrtarea_admvs"]): r for r in await self.repo.accounts(conn, pairs)}
        return [_status(self.settings, now[_status_pair(e)]) if e["topic"] == topic and _status_pair(e) in now else e
                for e in emitted
                if e["topic"] != alerts or alert_message(self.settings, e["value"], now) is not None]

    async def _apply(self, conn: asyncpg.Connection, record: Incoming, request: Any,
                     refused: dict[str, str]) -> tuple[bool, str, dict[str, Any], list[dict[str, Any]]]:
        match request:
            case FundPrepayment():
                return await self._fund(conn, request)
            case WithdrawPrepayment():
                return await self._withdraw(conn, request)
            case RunMonth():
                return await self._run_month(conn, request, refused.get(request.reqid), judged_on(record))
            case ConfirmStatement():
                return await self._confirm(conn, request, judged_at(record))
            case QuerySettlement():
                # Both given: the settlement both name (either one's row answered a question about
                # two settlements as if about one: a review, session 49). Each its own statement, so
                # that each uses its index.
                keys = {k: v for k, v in (("setl_id", request.setl_id), ("msgid", request.msgid)) if v}
                where = " AND ".join(f"{k} = ${i}" for i, k in enumerate(keys, 1))
                row = await conn.fetchrow(f"SELECT * FROM clearing.ledger WHERE {where}", *keys.values())
                if row is None:
                    return False, "no such settlement", {}, []
                return True, "", {"settlement": _ledger_view(row)}, []
            case QueryFacilityDay():
                # A page of the day's rows, their columns the view shows (not the stored answers), and
                # the day's totals summed by Postgres: the whole day was read to list a thousand of it,
                # the rest out of reach (session 50).
                day = (request.fixmedins_code, request.day)
                totals = await conn.fetchrow(
                    f"""SELECT count(*) AS n, {", ".join(f"coalesce(sum({k}) FILTER (WHERE state = 'settled'), 0) AS {k}"
                                                        for k in AMOUNTS)}
                        FROM clearing.ledger WHERE fixmedins_code = $1 AND setl_date = $2""", *day)
                rows = await conn.fetch(
                    f"""SELECT {", ".join(_ENTRY_COLUMNS)} FROM clearing.ledger WHERE fixmedins_code = $1 AND setl_date = $2
                        ORDER BY settled_at, setl_id LIMIT $3 OFFSET $4""", *day, MAX_LISTED_SETTLEMENTS, request.offset)
                listed = _within_budget(_ledger_view(r) for r in rows)
                data = {"settlements": listed, "settlements_total": totals["n"], "offset": request.offset,
                        "listed": len(listed), **{f"settled_{k}": fmt(totals[k]) for k in AMOUNTS}}
                if request.offset + len(listed) < totals["n"]:
                    data["next_offset"] = request.offset + len(listed)
                return True, "", data, []
            case QueryPairMonth():
                pair = (request.insuplc_admdvs, request.mdtrtarea_admvs)
                dated = await conn.fetchrow(
                    f"""SELECT count(*) AS n, {", ".join(f"coalesce(sum({k}) FILTER (WHERE state = 'settled'), 0) AS {k}"
                                                        for k in AMOUNTS)}
                        FROM clearing.ledger WHERE insuplc_admdvs = $1 AND mdtrtarea_admvs = $2 AND setlym = $3""",
                    *pair, request.setlym,
                )
                statements = await conn.fetch(
                    "SELECT * FROM clearing.statements WHERE insuplc_admdvs = $1 AND mdtrtarea_admvs = $2 AND setlym = $3",
                    *pair, request.setlym,
                )
                landed = (await self._month_totals(conn, request.setlym, pair)).get(pair)
                return True, "", {"settlements": dated["n"], **{f"settled_{k}": fmt(dated[k]) for k in AMOUNTS},
                                  "clearing": _landed_view(landed or PairTotals(*pair, request.setlym)),
                                  "statements": [statement_of(s).model_dump(mode="json") for s in statements]}, []
            case QueryStatement():
                return await self._statement_entries(conn, request)
            case QueryMonth():
                if request.setlym not in await self.repo.closed_months(conn):
                    return False, await self._not_cleared(conn, request.setlym), {}, []
                rows = await conn.fetch(
                    "SELECT * FROM clearing.statements WHERE setlym = $1 ORDER BY insuplc_admdvs, mdtrtarea_admvs",
                    request.setlym,
                )
                return True, "", month_view(request.setlym, [statement_of(r) for r in rows], request.offset), []
            case QueryPrepayment():
                row = await conn.fetchrow(
                    "SELECT * FROM clearing.prepayment_accounts WHERE insuplc_admdvs = $1 AND mdtrtarea_admvs = $2",
                    request.insuplc_admdvs, request.mdtrtarea_admvs,
                )
                return (row is not None), ("" if row else "no prepayment account"), (account_view(row) if row else {}), []
        return False, "unknown request", {}, []

    @staticmethod
    async def _statement_entries(conn: asyncpg.Connection,
                                 request: QueryStatement) -> tuple[bool, str, dict[str, Any], list[dict[str, Any]]]:
        """A statement and its entries from ``offset`` (at most ``MAX_LISTED_SETTLEMENTS``, and
        ``LISTED_BYTES``): the rows ``_month_totals`` sums for its pair and month, settlements first,
        each by ``setl_id``; ``clr_sumamt`` what each moves (drawn, or given back: negative).
        ``next_offset`` is where the next page begins, absent on the last one. The statement's own
        counts are how many there are (its run counted the same rows; one issued before session 24
        counted care at home that drew nothing too). A page that outlasts
        ``STATEMENT_PAGE_TIMEOUT_S`` (a pair of a million settlements a month sorted again for each
        page) is refused, as a reconciliation that long is, rather than retried while every clearing
        request behind it waits."""
        row = await conn.fetchrow("SELECT * FROM clearing.statements WHERE statement_id = $1", request.statement_id)
        if row is None:
            return False, f"no statement {request.statement_id}", {}, []
        month, pair = row["setlym"], (row["insuplc_admdvs"], row["mdtrtarea_admvs"])
        # The columns the view shows, not the rows' stored answers (kilobytes each), read and sorted.
        columns = ", ".join(_ENTRY_COLUMNS)
        entries = f"""SELECT * FROM (
                SELECT 'settlement' AS cleared_as, {columns} FROM clearing.ledger
                WHERE clr_period = $1 AND insuplc_admdvs = $2 AND mdtrtarea_admvs = $3
                UNION ALL
                SELECT 'undoing' AS cleared_as, {columns} FROM clearing.ledger
                WHERE undo_period = $1 AND insuplc_admdvs = $2 AND mdtrtarea_admvs = $3) AS e
              -- care at home that drew nothing is cleared by no one (``_month_totals``)
              WHERE NOT ($4 AND coalesce(drawn, fund_pay_sumamt) = 0)
              ORDER BY cleared_as, setl_id LIMIT $5 OFFSET $6"""  # a page and one more: is there a next
        try:
            async with savepoint(conn):
                rows = await conn.fetch(entries, month, *pair, within(pair[1], pair[0]), MAX_LISTED_SETTLEMENTS + 1,
                                        request.offset, timeout=STATEMENT_PAGE_TIMEOUT_S)
        except TimeoutError:
            return False, (f"statement {request.statement_id} holds {row['settlements'] + row['undone']} entries, more "
                           f"than a page from offset {request.offset} is read in {STATEMENT_PAGE_TIMEOUT_S:.0f} s; list "
                           "its settlements by facility and day (query_facility_day)"), {}, []
        def shown(r: Any) -> dict[str, Any]:
            drawn = r["drawn"] if r["drawn"] is not None else r["fund_pay_sumamt"]
            return _ledger_view(r) | {"cleared_as": r["cleared_as"],
                                      "clr_sumamt": fmt(drawn if r["cleared_as"] == "settlement" else -drawn)}

        listed = _within_budget(shown(r) for r in rows[:MAX_LISTED_SETTLEMENTS])
        data = {"statement": statement_of(row).model_dump(mode="json"), "entries_total": row["settlements"] + row["undone"],
                "offset": request.offset, "listed": len(listed), "entries": listed}
        if len(rows) > len(listed):  # from the rows, not the counts: a statement issued before care at home
            data["next_offset"] = request.offset + len(listed)  # was told apart counted rows left out now
        return True, "", data, []

    @staticmethod
    async def _month_totals(conn: asyncpg.Connection, month: str,
                            pair: tuple[str, str] | None = None) -> dict[tuple[str, str], PairTotals]:
        """What month ``month`` clears per region pair (or for ``pair``): what the settlements that
        landed in it drew on the prepayment, less what the undoings that landed in it gave back: fund
        and account payments (NULL drawn: a settlement before migration 007, which drew its fund
        payment only). Care at home (the treating region inside the insured one) is no pair's to
        clear: its rows that drew nothing are left out, so a statement of such a pair holds only rows
        recorded before they were told apart, which drew, and its totals add up to what it clears."""
        where = "" if pair is None else " AND insuplc_admdvs = $2 AND mdtrtarea_admvs = $3"
        totals_sql = f"""SELECT insuplc_admdvs, mdtrtarea_admvs, coalesce(drawn, fund_pay_sumamt) = 0 AS drew_nothing, count(*) AS n,
                                sum(medfee_sumamt) AS medfee_sumamt, sum(fund_pay_sumamt) AS fund_pay_sumamt,
                                sum(acct_pay) AS acct_pay, sum(coalesce(drawn, fund_pay_sumamt)) AS drawn
                         FROM clearing.ledger WHERE {{}} = $1{where} GROUP BY 1, 2, 3"""
        args = (month,) if pair is None else (month, *pair)
        plus = await conn.fetch(totals_sql.format("clr_period"), *args, timeout=MONTH_TOTALS_TIMEOUT_S)
        minus = await conn.fetch(totals_sql.format("undo_period"), *args, timeout=MONTH_TOTALS_TIMEOUT_S)
        totals: dict[tuple[str, str], PairTotals] = {}
        for rows, sign in ((plus, 1), (minus, -1)):
            for r in rows:
                if r["drew_nothing"] and within(r["mdtrtarea_admvs"], r["insuplc_admdvs"]):
                    continue  # care at home: in the ledger, cleared by no one
                t = totals.setdefault((r["insuplc_admdvs"], r["mdtrtarea_admvs"]),
                                      PairTotals(r["insuplc_admdvs"], r["mdtrtarea_admvs"], month))
                if sign > 0:
                    t.settlements += r["n"]
                else:
                    t.undone += r["n"]
                t.medfee_sumamt += sign * r["medfee_sumamt"]
                t.fund_pay_sumamt += sign * r["fund_pay_sumamt"]
                t.acct_pay += sign * r["acct_pay"]
                t.clr_sumamt += sign * r["drawn"]
        return totals

    async def _not_cleared(self, conn: asyncpg.Connection, month: str) -> str:
        """Why a month has no statements to show: not run yet, or never to be run (before the latest
        month closed, holding nothing: ``run_order``)."""
        latest = await self.repo.latest_closed(conn)
        if latest is not None and month < latest and not await self.repo.holds(conn, month):
            return (f"month {month} was not run, and {latest} after it is cleared: it has no statements; what was "
                    f"dated in it is in the statements of a month after it")
        return f"month {month} is not cleared yet; run it first"

    async def _fund(self, conn: asyncpg.Connection, request: FundPrepayment) -> tuple[bool, str, dict[str, Any], list[dict[str, Any]]]:
        if within(request.mdtrtarea_admvs, request.insuplc_admdvs):
            # Care there is care at home: nothing ever draws on such an account (area codes nest).
            return False, (f"region {request.mdtrtarea_admvs} lies in insured region {request.insuplc_admdvs}: care "
                           "there is care at home, which draws on no prepayment; nothing was funded"), {}, []
        funded = await conn.fetchval(
            "SELECT funded FROM clearing.prepayment_accounts WHERE insuplc_admdvs = $1 AND mdtrtarea_admvs = $2",
            request.insuplc_admdvs, request.mdtrtarea_admvs,
        ) or Decimal(0)
        if funded + request.amount > MAX_AMOUNT:
            # Every message about the account (its status, a warning) carries what was funded.
            return False, (f"the account would have been funded {fmt(funded + request.amount)} in all, more than an "
                           f"amount may be ({fmt(MAX_AMOUNT)}); check the amount"), {}, []
        touched = await self.repo.move_prepayments(
            conn, [(request.insuplc_admdvs, request.mdtrtarea_admvs, "fund", request.amount, request.reqid)]
        )
        if request.warn_share is not None:
            await conn.execute(
                "UPDATE clearing.prepayment_accounts SET warn_share = $3 WHERE insuplc_admdvs = $1 AND mdtrtarea_admvs = $2",
                request.insuplc_admdvs, request.mdtrtarea_admvs, request.warn_share,
            )
        row = await conn.fetchrow(
            "SELECT * FROM clearing.prepayment_accounts WHERE insuplc_admdvs = $1 AND mdtrtarea_admvs = $2",
            request.insuplc_admdvs, request.mdtrtarea_admvs,
        )
        warned = await self._warning_after_move(conn, [row])
        return True, "", account_view(row), [_status(self.settings, r) for r in touched.accounts] + warned

    async def _withdraw(self, conn: asyncpg.Connection,
                        request: WithdrawPrepayment) -> tuple[bool, str, dict[str, Any], list[dict[str, Any]]]:
        """Take back part of a prepayment: at most its balance (what settlements drew is not there to
        take; clearing gives it back), and at most what is funded (a balance above it, left by
        clearings of settlements from before migration 007, is the treating region's due). The
        account is read locked: a settlement batch drawing on it meanwhile would otherwise leave it
        short of what this took. A withdrawal is a move of its own (``withdraw``, by reqid, the
        amount negative): ``funded`` is then what is advanced, less what was withdrawn."""
        pair = (request.insuplc_admdvs, request.mdtrtarea_admvs)
        row = await conn.fetchrow(
            "SELECT * FROM clearing.prepayment_accounts WHERE insuplc_admdvs = $1 AND mdtrtarea_admvs = $2 FOR UPDATE",
            *pair,
        )
        if row is None:
            return False, (f"no prepayment account of insured region {pair[0]} in treating region {pair[1]}; "
                           "nothing was withdrawn"), {}, []
        account = account_of(row)
        most = min(account.balance, account.funded)
        if progress.RESTORED.get():
            # Handled again after a restore, beside the settlement stage redoing its own records:
            # the balance now is not the one it was judged on (the draws redone so far). Judged on
            # what is funded alone, which only this stage moves, in order: a withdrawal answered ok
            # is taken again; one refused for the balance alone is taken too, and said (review,
            # session 50: the runbook's restore steps compare these with their answers).
            if account.funded >= request.amount > most:
                log.warning("clearing-admin: withdrawal %s of %s from %s in %s handled again after a restore and "
                            "taken, though the balance as redone so far is %s: if its answer before the restore "
                            "refused it (clearing.results, by its reqid), give the amount back with a fund "
                            "(runbook, \"Restoring a service's database\")", request.reqid, fmt(request.amount),
                            pair[0], pair[1], fmt(account.balance))
            most = account.funded
            if request.amount > most:
                # A withdrawal taken above (refused before the restore) lowered what is funded: one
                # answered ok then may be refused now.
                log.warning("clearing-admin: withdrawal %s of %s from %s in %s handled again after a restore and "
                            "refused (funded %s): if its answer before the restore took it (clearing.results, by "
                            "its reqid), send it again under a new reqid (runbook, \"Restoring a service's "
                            "database\")", request.reqid, fmt(request.amount), pair[0], pair[1], fmt(account.funded))
        if request.amount > most:
            return False, (f"the account holds {fmt(account.balance)} of the {fmt(account.funded)} funded; at most "
                           f"{fmt(max(most, Decimal(0)))} can be withdrawn, not {fmt(request.amount)}; nothing was "
                           "withdrawn"), account_view(row), []
        touched = await self.repo.move_prepayments(conn, [(*pair, "withdraw", -request.amount, request.reqid)])
        row = await conn.fetchrow(
            "SELECT * FROM clearing.prepayment_accounts WHERE insuplc_admdvs = $1 AND mdtrtarea_admvs = $2", *pair,
        )
        # A withdrawal lowers the balance: a refused bill is no news again (only a top-up re-arms it).
        warned = await self._warning_after_move(conn, [row], rearm_refusals=False)
        return True, "", account_view(row), [_status(self.settings, r) for r in touched.accounts] + warned

    async def _warning_after_move(self, conn: asyncpg.Connection, rows: list[Any], *,
                                  rearm_refusals: bool = True) -> list[dict[str, Any]]:
        """After funding, a withdrawal or clearing moved an account: its warnings re-armed as far as the balance
        recovered (a month's clearing is how it usually comes back), or one given when the move left
        it lower than it was warned at (a statement whose cancellations outweighed its settlements, a
        withdrawal). ``rearm_refusals``: a bill refused from now on is news again (not after a
        withdrawal, which lifts nothing)."""
        out = []
        for row in rows:
            account = account_of(row)
            level = account.alert_level()
            if level != row["alert_level"]:
                await self.repo.set_alert_level(conn, row["insuplc_admdvs"], row["mdtrtarea_admvs"], level)
            if row["refusal_warned"] and rearm_refusals:
                # Topped up or cleared: a bill refused from now on is news again (refuse policy).
                await self.repo.set_refusal_warned(conn, row["insuplc_admdvs"], row["mdtrtarea_admvs"], False)
            if level > row["alert_level"]:
                alert = prepayment_alert(self.settings, row, account)
                out.append({"topic": alert.topic, "value": alert.value.decode(), "key": (alert.key or b"").decode()})
        return out

    async def _run_month(self, conn: asyncpg.Connection, request: RunMonth, refused: str | None = None,
                         today: date | None = None) -> tuple[bool, str, dict[str, Any], list[dict[str, Any]]]:
        """Clear ``request``'s month: closed by ``close_month`` before this transaction (or why it
        was not: ``refused``), or, for a run it did not see, here. ``today``: the day it is judged
        on (``judged_on``)."""
        month = request.setlym
        if not month_ended(month, today or datetime.now(BUSINESS_TZ).date()):
            following = next_month(month)
            return False, (f"month {month} has not ended (China time): run it from {following[:4]}-{following[4:]}-01, "
                           "or its last days' settlements would land in the next month"), {}, []
        period = await conn.fetchrow("SELECT state, totalled_at FROM clearing.periods WHERE setlym = $1 FOR UPDATE",
                                     month)
        if period is not None and period["totalled_at"] is not None:
            if await conn.fetchval("SELECT 1 FROM clearing.admin_requests WHERE reqid = $1", request.reqid):
                # Cleared by this very request, committed by another instance while this one waited
                # for the lock (a rebalance during the run: that instance's Kafka transaction is
                # refused). Handled again, the stored result and statements are published.
                raise RaceLost(f"run_month {request.reqid} was committed by another instance meanwhile")
            return False, f"month {month} is cleared already; query its statements", {}, []
        if period is None and refused is not None:
            # Refused by close_month in its own short transaction: not checked again here, where the
            # periods lock would be held until this batch commits (other runs' totals included).
            # Sent again, it is decided again.
            return False, refused, {}, []
        if period is None:  # a run close_month did not see (its reqid used twice in the batch, or the
            # month ended between the two reads of the clock): here
            if (refusal := await self.repo.out_of_order(conn, month)) is not None:  # the lock held
                return False, refusal, {}, []
            if not await self.repo.close_period(conn, month, self.cut_of):
                # Closed by another instance's run meanwhile (a rebalance): handled again, this one
                # finds its month closed, or resumes it.
                raise RaceLost(f"month {month} was closed by another run meanwhile")
        # Closed (now, or by a run that stopped before its statements were written): nothing lands
        # in the month any more, and every batch that could has committed (the close waited for
        # them on the lock), so its totals are final. Unless the run is handled again after a
        # restore (its close written by yidi-recover, from clearing.periods) while the settlements
        # before its cut are not all handled again yet: the totals wait for them.
        if short := await self.repo.short_of_cut(conn, month, self.cut_of):
            where = ", ".join(f"{t}[{p}] at {'nothing' if at is None else at} of {cut}" for t, p, cut, at in short[:3])
            raise BeforeItsCut(f"month {month}'s run waits for the settlements before its close to be handled "
                               f"again after the restore ({len(short)} partition(s) short: {where})")
        totals = await self._month_totals(conn, month)
        statements = [
            Statement(
                statement_id=f"{month}-{insured}-{treating}", setlym=month, insuplc_admdvs=insured,
                mdtrtarea_admvs=treating, settlements=t.settlements, undone=t.undone, medfee_sumamt=t.medfee_sumamt,
                fund_pay_sumamt=t.fund_pay_sumamt, acct_pay=t.acct_pay, clr_sumamt=t.clr_sumamt,
            )
            # Care at home draws nothing and no region owes it another: its rows are not in the
            # totals, and a pair of it has a statement only for rows recorded before it was told
            # apart, which drew and are cleared as they drew.
            for (insured, treating), t in sorted(totals.items())
        ]
        if statements:  # one statement for the month's every pair, thousands at national scale
            await conn.execute(
                """INSERT INTO clearing.statements (statement_id, setlym, insuplc_admdvs, mdtrtarea_admvs, settlements,
                       undone, medfee_sumamt, fund_pay_sumamt, acct_pay, clr_sumamt)
                   SELECT i, $2, a, b, n, u, m, f, c, s
                   FROM unnest($1::text[], $3::text[], $4::text[], $5::int[], $6::int[], $7::numeric[], $8::numeric[],
                               $9::numeric[], $10::numeric[]) AS x(i, a, b, n, u, m, f, c, s)
                   ON CONFLICT (statement_id) DO NOTHING""",
                [s.statement_id for s in statements], month, [s.insuplc_admdvs for s in statements],
                [s.mdtrtarea_admvs for s in statements], [s.settlements for s in statements],
                [s.undone for s in statements], [s.medfee_sumamt for s in statements],
                [s.fund_pay_sumamt for s in statements], [s.acct_pay for s in statements],
                [s.clr_sumamt for s in statements],
            )
        await conn.execute("UPDATE clearing.periods SET totalled_at = now() WHERE setlym = $1", month)
        await self.repo.settled_past_cut(conn, month)
        published = [
            {"topic": self.settings.topic(CLEARING_STATEMENTS), "value": dumps(s).decode(),
             "key": f"{s.insuplc_admdvs}-{s.mdtrtarea_admvs}"}
            for s in statements
        ]
        # The close and its cut, for a restore of this database from before it (yidi-recover). A close
        # without one (an instance of the version before session 45 closed the month, this one
        # totalled it) is not published: a restore to before it is redone as before.
        if cut := await self.repo.period_cut(conn, month):
            closed_at = await conn.fetchval("SELECT closed_at FROM clearing.periods WHERE setlym = $1", month)
            closed = PeriodClosed(setlym=month, closed_at=(closed_at or datetime.now(UTC)).astimezone(UTC),
                                  cut=[CutPosition(topic=t, partition=p, offset=o) for t, p, o in cut])
            published.append({"topic": self.settings.topic(CLEARING_PERIODS), "value": dumps(closed).decode(),
                              "key": month})
        return True, "", month_view(month, statements, 0), published

    async def _confirm(self, conn: asyncpg.Connection, request: ConfirmStatement,
                       at: datetime | None = None) -> tuple[bool, str, dict[str, Any], list[dict[str, Any]]]:
        """One side's confirmation, recorded at ``at`` (None: now)."""
        row = await conn.fetchrow("SELECT * FROM clearing.statements WHERE statement_id = $1 FOR UPDATE", request.statement_id)
        if row is None:
            return False, f"no statement {request.statement_id}", {}, []
        # The side's first confirmation is recorded against its operator and request; one sent
        # again under another reqid changes nothing of it.
        column = "confirmed_insured" if request.side == "insured" else "confirmed_treating"
        row = await conn.fetchrow(
            f"""UPDATE clearing.statements SET {column} = true,
                       {column}_by = CASE WHEN {column} THEN {column}_by ELSE nullif($2, '') END,
                       {column}_at = CASE WHEN {column} THEN {column}_at ELSE coalesce($4, now()) END,
                       {column}_reqid = CASE WHEN {column} THEN {column}_reqid ELSE $3 END
                WHERE statement_id = $1 RETURNING *""",
            request.statement_id, request.opter, request.reqid, at,
        )
        extra: list[dict[str, Any]] = []
        if row["confirmed_insured"] and row["confirmed_treating"] and row["state"] != "settled":
            row = await conn.fetchrow(
                "UPDATE clearing.statements SET state = 'settled', settled_at = coalesce($2, now()) WHERE statement_id = $1 "
                "RETURNING *", request.statement_id, at,
            )
            # Both sides agree: the insured region tops its prepayment up by what was cleared
            # (drawn down, when cancellations outweighed settlements).
            touched = await self.repo.move_prepayments(
                conn, [(row["insuplc_admdvs"], row["mdtrtarea_admvs"], "clearing", row["clr_sumamt"], row["statement_id"])]
            )
            extra += [_status(self.settings, r) for r in touched.accounts]
            extra += await self._warning_after_move(conn, touched.accounts)
        statement = statement_of(row)
        extra.append({"topic": self.settings.topic(CLEARING_STATEMENTS), "value": dumps(statement).decode(),
                      "key": f"{statement.insuplc_admdvs}-{statement.mdtrtarea_admvs}"})
        return True, "", statement.model_dump(mode="json"), extra

    async def _reconcile(self, conn: asyncpg.Connection, request: Reconcile) -> Outgoing:
        envelope = request.request
        facility = envelope.fixmedins_code
        try:
            # A savepoint: a reconciliation that outlasts the statement timeout (30 s) is the
            # request's, not Postgres away; taken for the second, it was retried for ever while every
            # clearing request behind it waited. Its rows are read alone, and the batch goes on.
            async with savepoint(conn):
                if envelope.infno is Infno.RECONCILE_TOTALS:
                    body = ReconcileTotalsInput.model_validate(envelope.data)
                    output = await self._reconcile_totals(conn, facility, body)
                else:
                    details = ReconcileDetailsInput.model_validate(envelope.data)
                    output = await self._reconcile_details(conn, facility, details)
            answer = answers.answer(envelope.msgid, envelope.infno.value, output)
        except TimeoutError:
            answer = answers.refusal(envelope, ErrCode.INVALID_INPUT,
                                     "the period holds more settlements than one reconciliation reads in time; "
                                     "reconcile it in shorter periods.")
        except ValidationError as exc:
            errors = exc.errors()
            where = "".join(f".{part}" for part in errors[0]["loc"])
            msg = errors[0]["msg"].removeprefix("Value error, ")
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            answer = answers.refusal(envelope, ErrCode.INVALID_INPUT,
                                     f"input.data{where}: {msg}{more}; correct it and send it again.")
        except (ValueError, ArithmeticError) as exc:  # any other data error: refused, never retried
            answer = answers.refusal(envelope, ErrCode.INVALID_INPUT,
                                     f"input.data: {exc}"[:450] + "; correct it and send it again.")
        return reply(self.settings, envelope.reply_to, answer, facility=facility, request_ts_ms=request.request_ts_ms)

    async def _reconcile_totals(self, conn: asyncpg.Connection, facility: str, body: ReconcileTotalsInput) -> dict[str, Any]:
        # A settlement's insurance type, clearing type and agency are in its answer as sent
        # (setlinfo): read there only when the facility asks for some, among the rows of its period.
        filters = body.filters()
        row = await conn.fetchrow(
            """SELECT count(*) AS n, coalesce(sum(medfee_sumamt), 0) AS medfee_sumamt,
                      coalesce(sum(fund_pay_sumamt), 0) AS fund_pay_sumamt, coalesce(sum(acct_pay), 0) AS acct_pay
               FROM clearing.ledger WHERE fixmedins_code = $1 AND setl_date BETWEEN $2 AND $3 AND state = 'settled'
                 AND ($4::text IS NULL OR answer -> 'output' -> 'setlinfo' ->> 'insutype' = $4::text)
                 AND ($5::text IS NULL OR answer -> 'output' -> 'setlinfo' ->> 'clr_type' = $5::text)
                 AND ($6::text IS NULL OR answer -> 'output' -> 'setlinfo' ->> 'clr_optins' = $6::text)""",
            facility, body.stmt_begndate, body.stmt_enddate,
            filters.get("insutype"), filters.get("clr_type"), filters.get("setl_optins"),
        )
        mine = {"fixmedins_setl_cnt": body.fixmedins_setl_cnt, "medfee_sumamt": body.medfee_sumamt,
                "fund_pay_sumamt": body.fund_pay_sumamt, "acct_pay": body.acct_pay}
        platform = {"fixmedins_setl_cnt": row["n"], "medfee_sumamt": row["medfee_sumamt"],
                    "fund_pay_sumamt": row["fund_pay_sumamt"], "acct_pay": row["acct_pay"]}
        diffs = reconcile_totals(mine, platform)
        of = f" ({', '.join(f'{k} {v}' for k, v in filters.items())})" if filters else ""
        return {
            "stmt_rslt": "0" if not diffs else "1",
            "stmt_rslt_dscr": f"totals{of} match" if not diffs else f"totals{of} differ: " + ", ".join(d.field for d in diffs),
            "platform": {k: (fmt(v) if isinstance(v, Decimal) else v) for k, v in platform.items()},
            "differences": [{"field": d.field, **{k: _text(getattr(d, k)) for k in ("facility", "platform", "gap")}}
                            for d in diffs],
        }

    async def _reconcile_details(self, conn: asyncpg.Connection, facility: str, body: ReconcileDetailsInput) -> dict[str, Any]:
        rows = await conn.fetch(
            """SELECT setl_id, state, setl_date, medfee_sumamt, fund_pay_sumamt, acct_pay, msgid, psn_no, mdtrt_id,
                      undone_msgid, undone_at FROM clearing.ledger
               WHERE fixmedins_code = $1 AND (setl_date BETWEEN $2 AND $3 OR setl_id = ANY($4::text[]))""",
            facility, body.stmt_begndate, body.stmt_enddate, [d.setl_id for d in body.details],
        )
        platform = {r["setl_id"]: (r["state"], {k: r[k] for k in AMOUNTS}) for r in rows}
        held = {r["setl_id"]: r for r in rows}
        mine = {d.setl_id: {k: getattr(d, k) for k in AMOUNTS} for d in body.details}
        # Listed by the facility, but dated by the platform outside the period.
        outside = {r["setl_id"] for r in rows if not body.stmt_begndate <= r["setl_date"] <= body.stmt_enddate}
        diffs = reconcile_details(mine, platform, outside)
        # At most MAX_LISTED, and no more than LISTED_BYTES of them: ids of any characters (4 bytes
        # each in UTF-8) made 1,000 of the widest over 1 MiB (the diff review, session 49).
        listed = _within_budget(
            {"setl_id": d.setl_id, "problem": d.problem,
             "facility": {k: fmt(v) for k, v in d.facility.items()},
             "platform": {k: fmt(v) for k, v in d.platform.items()}} | _found_by(held.get(d.setl_id))
            for d in diffs[:MAX_LISTED])
        more = f"; the first {len(listed)} are listed: reconcile a shorter period to see the rest" if len(diffs) > len(listed) else ""
        return {
            "stmt_rslt": "0" if not diffs else "1",
            "stmt_rslt_dscr": "every settlement matches" if not diffs else f"{len(diffs)} settlements differ{more}",
            "differences_total": len(diffs),
            "differences": listed,
        }


def _found_by(row: Any) -> dict[str, Any]:
    """What a 3202 difference tells the facility to find the settlement by in its own records: its
    msgid, person, visit and the platform's day for it, and what undid it (a review, session 49:
    one whose answer the gateway never got was named by its setl_id alone)."""
    if row is None:
        return {}
    found = {"msgid": row["msgid"], "psn_no": row["psn_no"], "mdtrt_id": row["mdtrt_id"],
             "platform_setl_date": row["setl_date"].isoformat()}
    if row["undone_msgid"]:
        found |= {"undone_msgid": row["undone_msgid"], "undone_at": row["undone_at"].isoformat()}
    return found


async def _lock_accounts(conn: asyncpg.Connection, requests: list[Any]) -> None:
    """Lock the prepayment accounts the batch's fundings, withdrawals and confirmations move, in the order the
    settlement stage changes accounts in (``move_prepayments``: by insured, then treating region).
    Taken request by request instead, a batch of a confirmation of one account and a funding of
    another (a month's end) deadlocked with a settlement batch drawing on both: Postgres aborted one
    of them after a second, and it was tried again (a review, session 48). An account not yet made
    is made by its first move, as before."""
    pairs = {(r.insuplc_admdvs, r.mdtrtarea_admvs) for r in requests if isinstance(r, (FundPrepayment, WithdrawPrepayment))}
    if statements := [r.statement_id for r in requests if isinstance(r, ConfirmStatement)]:
        pairs |= {(r["insuplc_admdvs"], r["mdtrtarea_admvs"]) for r in await conn.fetch(
            "SELECT insuplc_admdvs, mdtrtarea_admvs FROM clearing.statements WHERE statement_id = ANY($1::text[])",
            statements)}
    if len(pairs) < 2:
        return  # one account is locked by its own move: no order to keep
    insured, treating = zip(*sorted(pairs), strict=True)
    await conn.execute(
        """SELECT 1 FROM clearing.prepayment_accounts AS a
           JOIN unnest($1::text[], $2::text[]) AS p (i, t) ON a.insuplc_admdvs = p.i AND a.mdtrtarea_admvs = p.t
           ORDER BY a.insuplc_admdvs, a.mdtrtarea_admvs FOR UPDATE OF a""",
        list(insured), list(treating))


def _status_pair(message: dict[str, Any]) -> tuple[str, str]:
    value = loads(message["value"])
    return value["insuplc_admdvs"], value["mdtrtarea_admvs"]


def _status(settings: Settings, row: Any) -> dict[str, Any]:
    out = status_update(settings, row)
    return {"topic": out.topic, "value": out.value.decode(), "key": (out.key or b"").decode()}


# At most this many rows in one answer: a big hospital's month of 3202 with no details of its own
# lists every settlement as missing_at_facility, and an answer over 1 MiB cannot be a Kafka record.
# Answers say how many there were in all. A 3202 difference is ~730 bytes with 64 ASCII characters
# an id (with what finds it: session 49), and its list stops at LISTED_BYTES whatever its characters;
# a facility-day settlement is ~555: that list stays under about 730 KB.
MAX_LISTED = 1000
LISTED_BYTES = 800_000
MAX_LISTED_SETTLEMENTS = 1000
# What a page of a statement's entries reads (query_statement), and how long it may take.
_ENTRY_COLUMNS = ("setl_id", "msgid", "psn_no", "state", "insuplc_admdvs", "mdtrtarea_admvs", "fixmedins_code",
                  "setlym", "clr_period", "setl_date", "undo_period", "medfee_sumamt", "fund_pay_sumamt", "hifp_pay",
                  "acct_pay", "psn_cash_pay", "drawn")
STATEMENT_PAGE_TIMEOUT_S = 20.0
# A month's statements and net positions, up to this many of each in one answer (a statement is
# ~370 bytes with its confirmation times, its operators' names left out; a net position ~190: about
# 560 KB). A month at national scale has thousands of
# region pairs; it ran past 1 MiB at about 2,300 and could not be answered at all.
MAX_LISTED_STATEMENTS = 1000
# A month's totals at national scale (24 million settlements) take tens of seconds on one core
# (about 0.7-1 s a million on this box): more than the pools' 30 s for one statement. Its two
# queries together stay under the 300 s Kafka lets a batch's handler run before its consumer
# leaves the group.
MONTH_TOTALS_TIMEOUT_S = 120.0


_CONFIRMED_BY = frozenset({"confirmed_insured_by", "confirmed_treating_by"})


def month_view(month: str, statements: list[Statement], offset: int) -> dict[str, Any]:
    """A cleared month, as ``run_month`` and ``query_month`` answer it: its statements (by region
    pair) and the net positions between each two regions (by region), ``MAX_LISTED_STATEMENTS`` of
    each from ``offset``, and how many there are in all."""
    nets = net_positions(PairTotals(s.insuplc_admdvs, s.mdtrtarea_admvs, month, clr_sumamt=s.clr_sumamt)
                         for s in statements)
    end = offset + MAX_LISTED_STATEMENTS
    view: dict[str, Any] = {
        "setlym": month, "offset": offset,
        "statements_total": len(statements), "net_positions_total": len(nets),
        "clr_sumamt": fmt(sum((s.clr_sumamt for s in statements), Decimal(0))),
        # Without who confirmed them (an operator's name of up to 200 characters, 800 bytes, each
        # side): a thousand statements must fit one record. query_statement shows it.
        "statements": [s.model_dump(mode="json", exclude=_CONFIRMED_BY) for s in statements[offset:end]],
        "net_positions": [
            {"region_a": n.region_a, "region_b": n.region_b, "a_owes_b": fmt(n.a_owes_b), "b_owes_a": fmt(n.b_owes_a),
             "payer": n.payer, "payee": n.payee, "amount": fmt(n.amount)}
            for n in nets[offset:end]
        ],
    }
    if end < max(len(statements), len(nets)):
        view["more"] = f"listed from {offset} to {end - 1}; send query_month with offset {end} for the next ones"
    return view


def _within_budget(views: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``views`` in order, as many as fit ``LISTED_BYTES`` as JSON: a page of ids of 4-byte
    characters passed a Kafka record's 1 MiB at a thousand."""
    listed, size = [], 0
    for view in views:
        size += len(dumps(view)) + 1
        if size > LISTED_BYTES:
            break
        listed.append(view)
    return listed


def _ledger_view(row: Any) -> dict[str, Any]:
    return {
        "setl_id": row["setl_id"], "msgid": row["msgid"], "psn_no": row["psn_no"], "state": row["state"],
        "insuplc_admdvs": row["insuplc_admdvs"], "mdtrtarea_admvs": row["mdtrtarea_admvs"],
        "fixmedins_code": row["fixmedins_code"], "setlym": row["setlym"], "clr_period": row["clr_period"],
        "setl_date": row["setl_date"].isoformat() if isinstance(row["setl_date"], date) else row["setl_date"],
        "undo_period": row["undo_period"],
        **{k: fmt(row[k]) for k in ("medfee_sumamt", "fund_pay_sumamt", "hifp_pay", "acct_pay", "psn_cash_pay")},
    }


def _landed_view(t: PairTotals) -> dict[str, Any]:
    """What a region pair's month clears, as its statement will say (or says: once it is cleared)."""
    return {"settlements": t.settlements, "undone": t.undone, "medfee_sumamt": fmt(t.medfee_sumamt),
            "fund_pay_sumamt": fmt(t.fund_pay_sumamt), "acct_pay": fmt(t.acct_pay), "clr_sumamt": fmt(t.clr_sumamt)}


