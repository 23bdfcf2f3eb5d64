"""Clearing's SQL (schema ``clearing``): the settlement ledger and the undo records."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from yidi.domain.clearing import run_order
from yidi.platform.db import Locks, Repository, hashtext, json_value, lock_keys, locks, transient_errors

PERIODS_LOCK = "yidi-clearing-periods"
# The settlement stage's consumer group (before the namespace): a month's close records where it
# stood (``close_period``).
SETTLEMENT_GROUP = "yidi-clearing-priced"
AMOUNT_COLUMNS = (
    "medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt", "inscp_scp_amt", "act_pay_dedc",
    "hifp_pay", "hifmi_pay", "hifob_pay", "cvlserv_pay", "maf_pay", "oth_pay", "fund_pay_sumamt",
    "psn_part_amt", "acct_pay", "psn_cash_pay", "hosp_part_amt",
)


def batch_locks(keys: list[bytes | str | None]) -> Locks | None:
    """``ClearingRepository.lock_batch``'s locks, taken as the batch's transaction begins."""
    return locks("yidi-clearing", keys, shared_first=PERIODS_LOCK)


@dataclass
class LedgerRow:
    setl_id: str
    msgid: str
    request_hash: str
    state: str
    answer: dict[str, Any]
    undone_msgid: str | None = None
    undone_answer: dict[str, Any] | None = None
    insuplc_admdvs: str = ""
    mdtrtarea_admvs: str = ""
    drawn: Decimal = Decimal(0)  # what the settlement drew on the prepayment (what undoing it gives back)
    undo_period: str | None = None
    clr_period: str = ""  # the period the settlement landed in


@dataclass
class NewEntry:
    row: LedgerRow
    infno: str
    psn_no: str
    mdtrt_id: str
    amounts: dict[str, str]  # AMOUNT_COLUMNS of the answer's setlinfo, as checked wire text
    insuplc_admdvs: str
    mdtrtarea_admvs: str
    fixmedins_code: str
    setlym: str
    clr_period: str
    setl_date: date
    drawn: Decimal  # on the prepayment: ``owed(fund_pay_sumamt, acct_pay)``
    # The answer as sent to the gateway (its bytes, as text): kept as it is, not serialised again.
    answer_json: str


@dataclass(frozen=True)
class WaitingUndo:
    """An undoing of a settlement the ledger lacked (dead-lettered here): applied when it is entered."""

    msgid: str
    request_hash: str
    setl_id: str
    infno: str
    month: str  # yyyyMM of its inf_time
    answer: dict[str, Any]  # pricing's answer to it, kept for a resend once applied


@dataclass(frozen=True)
class Cleared:
    """What a settlement batch lands by (``batch_reads``): the latest month closed (``through``), and
    the months closed after some of the batch's records were entered (``ahead``: by partition, each
    such month's cut with the latest month closed before it). Only the cuts ``yidi-recover`` wrote
    (``period_cuts.restored``: months closed after the backup the database was restored from)
    count: while the settlement stage handles its records again, one below such a cut lands as it
    did before that close, whether or not the month's run has been handled again yet. A close
    made in this database covers only records it holds (a batch below its cut is handled again only
    as records seen before), so outside such a redo ``ahead`` is empty."""

    through: str | None
    ahead: dict[tuple[str, int], list[tuple[int, str | None]]] = field(default_factory=dict)

    def before(self, topic: str, partition: int, offset: int) -> str | None:
        """The latest month closed before the record at ``offset`` of ``topic``'s ``partition`` was
        entered (``landing_period``'s ``cleared_through``). Months close in order and a later close's
        cut is never lower, so the months a record came before are the latest ones: it lands after
        the one before the first of them (the cuts one restore wrote are where the stage stood at
        each close, in order)."""
        found = self.through
        for cut, before in self.ahead.get((topic, partition), ()):
            if offset < cut:
                if before is None:
                    return None
                if found is None or before < found:
                    found = before
        return found


@dataclass
class Moved:
    accounts: list[asyncpg.Record]
    replayed: list[tuple[str, str]]
    changed: set[tuple[str, str]] = field(default_factory=set)


class ClearingRepository(Repository):
    schema = "clearing"

    async def prepayment_accounts(self, timeout: float) -> list[asyncpg.Record]:
        """Every prepayment account, as ``prepayment.account_of`` reads it (the metrics' sample)."""
        async with asyncio.timeout(timeout), self._pool.acquire() as conn:
            return await conn.fetch(
                """SELECT insuplc_admdvs, mdtrtarea_admvs, funded, drawn, given_back, cleared, warn_share
                   FROM clearing.prepayment_accounts""")

    async def lock_batch(self, conn: asyncpg.Connection, keys: list[bytes | str | None]) -> None:
        """A settlement batch's locks, in one statement: the periods lock shared (see
        ``cleared_through``), then the batch's persons. (The stage takes the same locks with its
        transaction's BEGIN: ``batch_locks``.)"""
        await lock_keys(conn, "yidi-clearing", keys, shared_first=PERIODS_LOCK)

    async def batch_reads(
        self, conn: asyncpg.Connection, msgids: list[str], setl_ids: list[str], new_setl_ids: Sequence[str] = (),
        firsts: Mapping[tuple[str, int], int] | None = None,
    ) -> tuple[Cleared, list[LedgerRow], set[str]]:
        """After ``lock_batch``, in one round trip: the latest month closed (what is dated at or
        before it lands after it, ``landing_period``), with the months whose cut is past the batch's
        first offset on a partition (``firsts``; ``Cleared``: a redo after a restore), the ledger
        rows of ``msgids`` (settlements seen before) and ``setl_ids`` (settlements to undo), locked,
        and which of ``new_setl_ids`` (the batch's settlements) have undoings waiting for them
        (``waiting_undos``).

        The periods lock held shared, a month's clearing (which takes it exclusively to close the
        month) waits for the batch to commit, and a batch that waited for it reads the month
        closed: a settlement lands either in the month being cleared (and is in its statements)
        or after it, never in between."""
        firsts = firsts or {}
        rows = await conn.fetch(
            """SELECT c.cleared_through, w.waiting, a.ahead, l.* FROM
                 (SELECT max(setlym) AS cleared_through FROM clearing.periods WHERE state = 'closed') AS c
               CROSS JOIN (SELECT array_agg(DISTINCT setl_id) AS waiting FROM clearing.undo_waiting
                           WHERE setl_id = ANY($3::text[])) AS w
               CROSS JOIN (SELECT array_agg(ARRAY[k.topic, k.kafka_partition::text, k.cut::text,
                                   (SELECT max(p.setlym) FROM clearing.periods AS p
                                    WHERE p.state = 'closed' AND p.setlym < k.setlym)]) AS ahead
                           FROM clearing.period_cuts AS k
                           JOIN unnest($4::text[], $5::int[], $6::bigint[]) AS b (topic, kafka_partition, first)
                             ON k.topic = b.topic AND k.kafka_partition = b.kafka_partition AND k.cut > b.first
                           WHERE k.restored) AS a
               LEFT JOIN LATERAL (
                 SELECT setl_id, msgid, request_hash, state, answer, undone_msgid, undone_answer,
                        insuplc_admdvs, mdtrtarea_admvs, coalesce(drawn, fund_pay_sumamt) AS drawn, undo_period,
                        clr_period
                 FROM clearing.ledger
                 WHERE msgid = ANY($1::text[]) OR setl_id = ANY($2::text[]) FOR UPDATE) AS l ON true""",
            msgids, setl_ids, list(new_setl_ids),
            [t for t, _ in firsts], [p for _, p in firsts], list(firsts.values()),
        )
        ahead: dict[tuple[str, int], list[tuple[int, str | None]]] = {}
        for topic, partition, cut, before in rows[0]["ahead"] or ():
            ahead.setdefault((topic, int(partition)), []).append((int(cut), before))
        return Cleared(rows[0]["cleared_through"], ahead), [
            LedgerRow(r["setl_id"], r["msgid"], r["request_hash"], r["state"], json_value(r["answer"]),
                      r["undone_msgid"], json_value(r["undone_answer"]) if r["undone_answer"] else None,
                      r["insuplc_admdvs"], r["mdtrtarea_admvs"], r["drawn"], r["undo_period"],
                      r["clr_period"])
            for r in rows if r["setl_id"] is not None
        ], set(rows[0]["waiting"] or ())

    async def waiting_undos(self, conn: asyncpg.Connection, setl_ids: list[str]) -> dict[str, list[WaitingUndo]]:
        """The undoings waiting for ``setl_ids``, in the order they came, locked."""
        found: dict[str, list[WaitingUndo]] = {}
        for r in await conn.fetch(
            """SELECT * FROM clearing.undo_waiting WHERE setl_id = ANY($1::text[]) ORDER BY created_at, msgid
               FOR UPDATE""", setl_ids,
        ):
            found.setdefault(r["setl_id"], []).append(
                WaitingUndo(r["msgid"], r["request_hash"], r["setl_id"], r["infno"], r["month"], json_value(r["answer"])))
        return found

    async def cleared_through(self, conn: asyncpg.Connection) -> str | None:
        """The latest month closed, under the periods lock taken exclusively (``lock_periods``):
        settlement batches hold it shared (``lock_batch``), so closing a month waits for them to
        commit and holds new ones back until the close commits. The read is a statement of its
        own: its snapshot must be taken after the lock is held."""
        await self.lock_periods(conn)
        return await self.latest_closed(conn)

    async def latest_closed(self, conn: asyncpg.Connection) -> str | None:
        """The latest month closed, as it reads now (no lock: ``cleared_through`` takes it)."""
        return await conn.fetchval("SELECT max(setlym) FROM clearing.periods WHERE state = 'closed'")

    async def holds(self, conn: asyncpg.Connection, month: str) -> bool:
        """Whether settlements or undoings landed in ``month``."""
        return await conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM clearing.ledger WHERE clr_period = $1)
                      OR EXISTS (SELECT 1 FROM clearing.ledger WHERE undo_period = $1)""", month)

    async def out_of_order(self, conn: asyncpg.Connection, month: str, finishing: Collection[str] = ()) -> str | None:
        """Why open month ``month`` may not be closed now (``domain.clearing.run_order``), or None;
        ``finishing``: months closed whose statements the caller is about to write (earlier runs of
        its batch), not unfinished runs.
        Takes the periods lock exclusively (``cleared_through``), so the answer holds until the
        transaction ends: call it in a transaction as short as ``close_month``'s. The open months
        before it that hold anything are found by walking the ledger's distinct periods on their
        indexes: a few probes per month of its history (about 1 ms for 24 months of 100,000
        settlements each on the 2-core bench box)."""
        cleared = await self.cleared_through(conn)
        row = await conn.fetchrow(
            """WITH RECURSIVE c(p) AS (
                   SELECT min(clr_period) FROM clearing.ledger WHERE clr_period < $1
                 UNION ALL
                   SELECT (SELECT min(clr_period) FROM clearing.ledger WHERE clr_period > c.p AND clr_period < $1)
                   FROM c WHERE c.p IS NOT NULL
               ), u(p) AS (
                   SELECT min(undo_period) FROM clearing.ledger WHERE undo_period < $1
                 UNION ALL
                   SELECT (SELECT min(undo_period) FROM clearing.ledger WHERE undo_period > u.p AND undo_period < $1)
                   FROM u WHERE u.p IS NOT NULL
               )
               SELECT (SELECT coalesce(array_agg(p ORDER BY p), '{}') FROM (SELECT p FROM c UNION SELECT p FROM u) AS x
                       WHERE p IS NOT NULL
                         AND NOT EXISTS (SELECT 1 FROM clearing.periods WHERE setlym = p AND state = 'closed')) AS earlier,
                      (SELECT coalesce(array_agg(setlym ORDER BY setlym), '{}') FROM clearing.periods
                       WHERE setlym < $1 AND state = 'closed' AND totalled_at IS NULL) AS unfinished,
                      EXISTS (SELECT 1 FROM clearing.ledger WHERE clr_period = $1)
                        OR EXISTS (SELECT 1 FROM clearing.ledger WHERE undo_period = $1) AS holds""",
            month,
        )
        unfinished = [m for m in row["unfinished"] if m not in finishing]
        return run_order(month, cleared, list(row["earlier"]), row["holds"], unfinished)

    async def lock_periods(self, conn: asyncpg.Connection) -> None:
        """The periods lock, taken exclusively until ``conn``'s transaction ends (``cleared_through``)."""
        # Its key computed as the settlement batches' shared one is (``batch_locks``): one function.
        await conn.execute("SELECT pg_advisory_xact_lock($1::bigint)", hashtext(PERIODS_LOCK))

    async def close_period(self, conn: asyncpg.Connection, month: str, cut_of: str | None) -> bool:
        """Close ``month``, under the periods lock taken exclusively, with its cut: where settlement
        stage ``cut_of`` (its consumer group) stood on each partition (``stage_progress.reached``;
        where a row has none, a batch of the version before: where its last batch began, lower than
        where it ended). No settlement batch is between its transaction's locks and its commit
        then, so a record below its partition's cut was entered before the close and one at or past
        it after (``Cleared``). False if the month was closed already (nothing recorded)."""
        return await conn.fetchval(
            """WITH c AS (INSERT INTO clearing.periods (setlym, state, closed_at) VALUES ($1, 'closed', now())
                          ON CONFLICT (setlym) DO NOTHING RETURNING setlym),
                    k AS (INSERT INTO clearing.period_cuts (setlym, topic, kafka_partition, cut)
                          SELECT c.setlym, s.topic, s.kafka_partition, GREATEST(s.reached, s.applied_below)
                          FROM c JOIN clearing.stage_progress AS s ON s.consumer_group = $2)
               SELECT EXISTS (SELECT 1 FROM c)""", month, cut_of)

    async def period_cut(self, conn: asyncpg.Connection, month: str) -> list[tuple[str, int, int]]:
        """``month``'s cut: (topic, partition, offset), in order."""
        return [(r["topic"], r["kafka_partition"], r["cut"]) for r in await conn.fetch(
            "SELECT topic, kafka_partition, cut FROM clearing.period_cuts WHERE setlym = $1 ORDER BY topic, "
            "kafka_partition", month)]

    async def short_of_cut(self, conn: asyncpg.Connection, month: str, cut_of: str) -> list[tuple[str, int, int, int | None]]:
        """The partitions where settlement stage ``cut_of`` has not yet reached the cut of ``month``
        that ``yidi-recover`` wrote (a month closed after the backup the database was restored
        from): (topic, partition, cut, where it stands). The month's totals wait until its redo has
        passed them (``settled_past_cut`` then). A close made in this database waits for nothing:
        every batch below its cut had committed."""
        return [(r["topic"], r["kafka_partition"], r["cut"], r["at"]) for r in await conn.fetch(
            """SELECT k.topic, k.kafka_partition, k.cut, GREATEST(s.reached, s.applied_below) AS at
               FROM clearing.period_cuts AS k
               LEFT JOIN clearing.stage_progress AS s
                 ON s.consumer_group = $2 AND s.topic = k.topic AND s.kafka_partition = k.kafka_partition
               WHERE k.setlym = $1 AND k.restored AND coalesce(GREATEST(s.reached, s.applied_below), -1) < k.cut
               ORDER BY k.topic, k.kafka_partition""", month, cut_of)]

    async def settled_past_cut(self, conn: asyncpg.Connection, month: str) -> None:
        """``month``'s run has totalled it after its redo: every settlement below its restored cut
        has been handled again, and the cut steers nothing more (a topic created again later
        would otherwise land its records by it)."""
        await conn.execute("UPDATE clearing.period_cuts SET restored = false WHERE setlym = $1 AND restored", month)

    async def close_month(self, month: str, reqid: str, finishing: Collection[str] = (),
                          cut_of: str | None = None) -> str | None:
        """Close ``month`` for ``run_month`` request ``reqid`` in a transaction of its own, under the
        periods lock taken exclusively, as short as that; or say why it may not be run now
        (``out_of_order``: the run refuses it so, without taking the lock again). Its statements
        are totalled afterwards (``totalled_at`` NULL until they are written), while settlement
        batches go on, landing after it: a national month's totals take tens of seconds, during
        which every settlement waited for the lock. A request handled before, or a month closed
        already (cleared, or its run resumed), takes no lock: the run answers it.

        It records one record less of progress than the batch's own transaction after it
        (``followed``: ``Progress.before_last``), with the same check that the database did not go
        back: a Postgres that lost only the later one (a failover to a replica that was behind)
        holds a row below what the stage holds, and the check finds it; with the close recording
        the same row, nothing showed the month's run lost. A backup taken between the two has the
        group read again from the record before the batch: the run finds its month closed and
        resumes.

        ``cut_of``: the settlement stage's consumer group, whose position the close records as the
        month's cut (``close_period``)."""
        async with self.transaction(followed=True) as conn:
            if await conn.fetchval(
                """SELECT EXISTS (SELECT 1 FROM clearing.admin_requests WHERE reqid = $2)
                          OR EXISTS (SELECT 1 FROM clearing.periods WHERE setlym = $1)""", month, reqid):
                return None
            if (refusal := await self.out_of_order(conn, month, finishing)) is not None:
                return refusal
            await self.close_period(conn, month, cut_of)
            return None

    async def closed_months(self, conn: asyncpg.Connection) -> set[str]:
        """Months cleared, their statements written (no lock: for reading a cleared month)."""
        rows = await conn.fetch("SELECT setlym FROM clearing.periods WHERE state = 'closed' AND totalled_at IS NOT NULL")
        return {r["setlym"] for r in rows}

    async def move_prepayments(
        self, conn: asyncpg.Connection, moves: list[tuple[str, str, str, Decimal, str]],
        again: Sequence[tuple[str, str, str, str]] = (), entries: Sequence[NewEntry] = (),
    ) -> Moved:
        """Apply (insured, treating, kind, amount, ref) moves once each; enter ``entries`` (a
        settlement batch's new ledger rows) in the same statement.

        ``again`` names (insured, treating, kind, ref) moves of records handled before (a batch
        handled again after its Postgres commit, or a resend), applied then if at all: they are not
        applied, only reported. Returns every account the moves name (changed now, or before), and
        the moves applied before (of ``moves``, and ``again``): a replay re-publishes what they
        published, so a crash between the Postgres and the Kafka commit loses no status or alert.

        A settlement batch's ledger rows, its moves and the accounts they change are one statement
        (data-modifying CTEs): the accounts are summed from the moves the statement applied, so a
        batch writes in one round trip where it took three (docs/BENCHMARKS.md, "Clearing's writes
        in one statement")."""
        if not moves and not again:
            if entries:
                await conn.execute(*_ledger_insert(entries, first=1, flat=True))
            return Moved([], [])
        accounts: dict[tuple[str, str], asyncpg.Record] = {}
        if moves:
            ledger_sql, ledger_args = _ledger_insert(entries, first=6) if entries else ("", [])
            # The accounts are changed in a fixed order (no deadlock between batches that move the
            # same accounts), and returned as they now are.
            rows = await conn.fetch(
                f"""WITH {f"ledger AS ({ledger_sql})," if entries else ""}
                   applied AS (
                     INSERT INTO clearing.prepayment_moves (insuplc_admdvs, mdtrtarea_admvs, kind, amount, ref)
                     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::numeric[], $5::text[])
                     ON CONFLICT (kind, ref) DO NOTHING
                     RETURNING insuplc_admdvs, mdtrtarea_admvs, kind, amount, ref),
                   sums AS (
                     SELECT insuplc_admdvs AS i, mdtrtarea_admvs AS t,
                            coalesce(sum(amount) FILTER (WHERE kind IN ('fund', 'withdraw')), 0) AS f,
                            coalesce(sum(amount) FILTER (WHERE kind = 'draw'), 0) AS d,
                            coalesce(sum(amount) FILTER (WHERE kind = 'give_back'), 0) AS g,
                            coalesce(sum(amount) FILTER (WHERE kind = 'clearing'), 0) AS c,
                            count(*) AS n
                     FROM applied GROUP BY insuplc_admdvs, mdtrtarea_admvs),
                   changed AS (
                     INSERT INTO clearing.prepayment_accounts AS a
                         (insuplc_admdvs, mdtrtarea_admvs, funded, drawn, given_back, cleared, moves)
                     SELECT i, t, f, d, g, c, n FROM sums ORDER BY i, t
                     ON CONFLICT (insuplc_admdvs, mdtrtarea_admvs) DO UPDATE SET
                       funded = a.funded + EXCLUDED.funded, drawn = a.drawn + EXCLUDED.drawn,
                       given_back = a.given_back + EXCLUDED.given_back, cleared = a.cleared + EXCLUDED.cleared,
                       -- Each move applied, not each statement: the version pricing keeps the highest
                       -- of is then the same however the moves were batched (a batch handled again
                       -- after a restore takes them in fewer statements, whose versions pricing
                       -- would drop until they passed the old ones).
                       moves = a.moves + EXCLUDED.moves
                     RETURNING a.*)
                   -- The moves applied before (none, but in a batch handled again), beside each account
                   -- changed, or alone when none was.
                   SELECT m.kinds_before, m.refs_before, changed.*
                   FROM (SELECT array_agg(kind) AS kinds_before, array_agg(ref) AS refs_before
                         FROM (SELECT kind, ref FROM unnest($3::text[], $5::text[]) AS u(kind, ref)
                               EXCEPT SELECT kind, ref FROM applied) AS before) AS m
                   LEFT JOIN changed ON true""",
                *[list(col) for col in zip(*moves, strict=True)], *ledger_args,
            )
            before = set(zip(rows[0]["kinds_before"] or (), rows[0]["refs_before"] or (), strict=True))
            fresh = {(kind, ref) for _, _, kind, _, ref in moves} - before
            accounts = {(r["insuplc_admdvs"], r["mdtrtarea_admvs"]): r for r in rows if r["insuplc_admdvs"] is not None}
        else:
            fresh = set()
            if entries:
                await conn.execute(*_ledger_insert(entries, first=1, flat=True))
        replayed = [(kind, ref) for _, _, kind, _, ref in moves if (kind, ref) not in fresh]
        # (A record seen twice in one batch names a move this run made: not one made before.)
        replayed += [(kind, ref) for _, _, kind, ref in again if (kind, ref) not in fresh]
        changed = set(accounts)
        # Accounts named only by moves an earlier run applied (a replay): read as they are.
        pairs = sorted(({(i, t) for i, t, *_ in moves} | {(i, t) for i, t, *_ in again}) - set(accounts))
        if pairs:
            for r in await conn.fetch(
                """SELECT a.* FROM clearing.prepayment_accounts a
                   JOIN unnest($1::text[], $2::text[]) AS k(i, t) ON a.insuplc_admdvs = k.i AND a.mdtrtarea_admvs = k.t""",
                [i for i, _ in pairs], [t for _, t in pairs],
            ):
                accounts[(r["insuplc_admdvs"], r["mdtrtarea_admvs"])] = r
        return Moved([accounts[k] for k in sorted(accounts)], replayed, changed)

    async def accounts(self, conn: asyncpg.Connection, pairs: list[tuple[str, str]]) -> list[asyncpg.Record]:
        """The prepayment accounts of (insured, treating) ``pairs`` as they are now."""
        return await conn.fetch(
            """SELECT a.* FROM clearing.prepayment_accounts a
               JOIN unnest($1::text[], $2::text[]) AS k(i, t) ON a.insuplc_admdvs = k.i AND a.mdtrtarea_admvs = k.t""",
            [i for i, _ in pairs], [t for _, t in pairs])

    async def keep_alert(self, conn: asyncpg.Connection, move: tuple[str, str], alert: str) -> None:
        await conn.execute(
            "UPDATE clearing.prepayment_moves SET alert = $3::jsonb WHERE kind = $1 AND ref = $2", *move, alert
        )

    async def kept_alerts(self, conn: asyncpg.Connection, moves: list[tuple[str, str]]) -> list[str]:
        if not moves:
            return []
        rows = await conn.fetch(
            """SELECT m.alert::text AS alert FROM clearing.prepayment_moves m
               JOIN unnest($1::text[], $2::text[]) AS k(kind, ref) ON m.kind = k.kind AND m.ref = k.ref
               WHERE m.alert IS NOT NULL""",
            [k for k, _ in moves], [r for _, r in moves],
        )
        return [r["alert"] for r in rows]

    async def set_refusal_warned(self, conn: asyncpg.Connection, insured: str, treating: str, warned: bool) -> None:
        """Whether the account's region has been warned that it refuses bills (refuse policy)."""
        await conn.execute(
            """UPDATE clearing.prepayment_accounts SET refusal_warned = $3
               WHERE insuplc_admdvs = $1 AND mdtrtarea_admvs = $2""", insured, treating, warned)

    async def set_alert_level(self, conn: asyncpg.Connection, insured: str, treating: str, level: int) -> None:
        await conn.execute(
            """UPDATE clearing.prepayment_accounts SET alert_level = $3::smallint, alerted = $3::smallint > 0
               WHERE insuplc_admdvs = $1 AND mdtrtarea_admvs = $2""",
            insured, treating, level,
        )

    async def undo_requests(self, conn: asyncpg.Connection, msgids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        rows = await conn.fetch(
            "SELECT msgid, request_hash, answer FROM clearing.undo_requests WHERE msgid = ANY($1::text[])", msgids
        )
        return {r["msgid"]: (r["request_hash"], json_value(r["answer"])) for r in rows}

    async def write(
        self,
        conn: asyncpg.Connection,
        undone: list[LedgerRow],
        undo_requests: list[tuple[str, str, str, dict[str, Any]]],
        waiting_new: Sequence[WaitingUndo] = (),
        waiting_done: Sequence[str] = (),
    ) -> None:
        """A batch's undoings (after its new rows are entered: ``move_prepayments``, since a
        settlement may be undone in the batch that enters it) and its undo records."""
        if undone:
            await conn.executemany(
                """UPDATE clearing.ledger SET state = $2, undone_msgid = $3, undone_answer = $4::json, undone_at = now(),
                       undo_period = $5
                   WHERE setl_id = $1""",
                [(u.setl_id, u.state, u.undone_msgid, orjson.dumps(u.undone_answer).decode(), u.undo_period)
                 for u in undone],
            )
        if undo_requests:
            await conn.executemany(
                "INSERT INTO clearing.undo_requests (msgid, request_hash, setl_id, answer) VALUES ($1, $2, $3, $4::json)",
                [(m, h, s, orjson.dumps(a).decode()) for m, h, s, a in undo_requests],
            )
        if waiting_done:
            await conn.execute("DELETE FROM clearing.undo_waiting WHERE msgid = ANY($1::text[])", list(waiting_done))
        # An undoing kept and applied in the same batch (its settlement followed it) is not kept.
        done = set(waiting_done)
        waiting_new = [w for w in waiting_new if w.msgid not in done]
        if waiting_new:
            await conn.executemany(
                """INSERT INTO clearing.undo_waiting (msgid, request_hash, setl_id, infno, month, answer)
                   VALUES ($1, $2, $3, $4, $5, $6::json) ON CONFLICT (msgid) DO NOTHING""",
                [(w.msgid, w.request_hash, w.setl_id, w.infno, w.month, orjson.dumps(w.answer).decode())
                 for w in waiting_new],
            )

    async def by_msgid(self, msgid: str) -> dict[str, Any] | None:
        async with transient_errors():
            row = await self._pool.fetchrow("SELECT * FROM clearing.ledger WHERE msgid = $1", msgid)
        return dict(row) if row else None


LEDGER_COLUMNS = (("setl_id", "text"), ("msgid", "text"), ("request_hash", "text"), ("infno", "text"),
                  ("psn_no", "text"), ("mdtrt_id", "text"), ("insuplc_admdvs", "text"), ("mdtrtarea_admvs", "text"),
                  ("fixmedins_code", "text"), ("setlym", "text"), ("clr_period", "text"), ("setl_date", "date"),
                  *((c, "text") for c in AMOUNT_COLUMNS), ("drawn", "numeric"), ("answer", "text"))


def _ledger_insert(entries: Sequence[NewEntry], *, first: int, flat: bool = False) -> Any:
    """The INSERT of ``entries`` into the ledger, its parameters numbered from ``first``, and their
    values (a list of columns, or with ``flat`` each column after the SQL): one INSERT ... SELECT FROM unnest(one array per column) instead of executemany, a
    single statement, and far less per-row work in asyncpg and Postgres. Amounts travel as their
    checked wire text and become numeric in Postgres (cheaper than encoding a Decimal per column
    per row)."""
    names = [name for name, _ in LEDGER_COLUMNS]
    rows = [
        (e.row.setl_id, e.row.msgid, e.row.request_hash, e.infno, e.psn_no, e.mdtrt_id,
         e.insuplc_admdvs, e.mdtrtarea_admvs, e.fixmedins_code, e.setlym, e.clr_period, e.setl_date,
         *(e.amounts[c] for c in AMOUNT_COLUMNS), e.drawn, e.answer_json)
        for e in entries
    ]
    arrays = ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(LEDGER_COLUMNS, start=first))
    selected = ", ".join(
        f"u.{n}::json" if n == "answer" else f"u.{n}::numeric" if n in AMOUNT_COLUMNS else f"u.{n}" for n in names
    )
    sql = f"""INSERT INTO clearing.ledger ({', '.join(names)})
              SELECT {selected} FROM unnest({arrays}) AS u({', '.join(names)})"""
    columns = [list(col) for col in zip(*rows, strict=True)]
    # flat: (sql, *columns), for conn.execute(*...); else (sql, columns).
    return (sql, *columns) if flat else (sql, columns)
