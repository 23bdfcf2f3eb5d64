"""Filing's SQL (schema ``filing``): filings, their history, answered requests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg
import orjson

from yidi.contracts.filing import FilingRecord
from yidi.domain.codes import LONG_TERM_CATEGORIES
from yidi.domain.eligibility import Filing
from yidi.platform.db import Repository, json_value


@dataclass
class Insurance:
    """A person's insurance as filing holds it (R7): since when, as far as filing knows, and the
    ``refdata.persons`` record last applied (partition, offset, Kafka timestamp)."""

    insuplc_admdvs: str
    insutype: str
    active: bool
    source_time: datetime | None
    since: datetime
    seen: tuple[int, int, datetime]
    psn_type: str | None = None  # R4: the category filed must fit it (None: held before it was kept)

    @property
    def status(self) -> tuple[str, str, bool]:
        return self.insuplc_admdvs, self.insutype, self.active


# R21: still pending, asked for (the add or change) before $1 (filing/007's partial index).
_OVERDUE = "status = 'pending' AND coalesce(made_at, updated_at) < $1"


class FilingRepository(Repository):
    schema = "filing"

    async def office_overdue_filings(self, before: datetime, insured: str | None = None) -> list[asyncpg.Record]:
        """The filings ``office_overdue`` counts, oldest first (of one insured region, if named)."""
        return await self._pool.fetch(
            f"""SELECT insuplc_admdvs, filing_id, psn_no, category, coalesce(made_at, updated_at) AS asked
                FROM filing.filings WHERE {_OVERDUE} AND ($2::text IS NULL OR insuplc_admdvs = $2)
                ORDER BY asked, filing_id""", before, insured)

    async def office_overdue(self, before: datetime, timeout: float) -> dict[str, tuple[int, datetime]]:
        """R21: the filings still ``pending`` that were asked for (their add or change) before
        ``before``, by insured region: (how many, when the oldest was asked)."""
        async with asyncio.timeout(timeout), self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"""SELECT insuplc_admdvs, count(*) AS n, min(coalesce(made_at, updated_at)) AS oldest
                    FROM filing.filings WHERE {_OVERDUE} GROUP BY insuplc_admdvs""", before)
        return {r["insuplc_admdvs"]: (r["n"], r["oldest"]) for r in rows}

    async def answered(self, conn: asyncpg.Connection, reqid: str) -> tuple[str, list[dict[str, Any]]] | None:
        row = await conn.fetchrow("SELECT request_hash, emitted FROM filing.requests WHERE reqid = $1", reqid)
        return (row["request_hash"], json_value(row["emitted"])) if row else None

    async def get(self, conn: asyncpg.Connection, filing_id: str) -> tuple[FilingRecord, date] | None:
        row = await conn.fetchrow("SELECT * FROM filing.filings WHERE filing_id = $1 FOR UPDATE", filing_id)
        if row is None:
            return None
        return (
            FilingRecord(
                filing_id=row["filing_id"], psn_no=row["psn_no"], insutype=row["insutype"],
                insuplc_admdvs=row["insuplc_admdvs"], filed_admdvs=row["filed_admdvs"], category=row["category"],
                begndate=row["begndate"], enddate=row["enddate"], status=row["status"], version=row["version"],
                earlier=json_value(row["earlier"]),
            ),
            row["filed_on"],
        )

    async def save(
        self, conn: asyncpg.Connection, filing: Filing, version: int, filed_on: date,
        action: str, reqid: str, decl_source: str, opter: str = "", reason: str = "",
        made_at: datetime | None = None,
    ) -> FilingRecord:
        """Save a filing's new version and its history entry. ``filed_on``: the day R8's lock counts
        from (a filing brought back by a change is filed anew). ``made_at``: when this version was
        asked for (an add or a change: the request's publish time); None keeps the one held (for a
        filing saved before ``made_at`` was kept, its last write's time, frozen then)."""
        record = FilingRecord.of(filing, version)
        await conn.execute(
            """INSERT INTO filing.filings AS f (filing_id, psn_no, insutype, insuplc_admdvs, filed_admdvs, category,
                   begndate, enddate, status, version, filed_on, earlier, made_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13)
               ON CONFLICT (filing_id) DO UPDATE SET insutype = EXCLUDED.insutype, filed_admdvs = EXCLUDED.filed_admdvs,
                   category = EXCLUDED.category, begndate = EXCLUDED.begndate, enddate = EXCLUDED.enddate,
                   status = EXCLUDED.status, version = EXCLUDED.version, earlier = EXCLUDED.earlier,
                   filed_on = EXCLUDED.filed_on, made_at = coalesce(EXCLUDED.made_at, f.made_at, f.updated_at),
                   updated_at = now()""",
            record.filing_id, record.psn_no, record.insutype.value, record.insuplc_admdvs, record.filed_admdvs,
            record.category.value, record.begndate, record.enddate, record.status.value, version, filed_on,
            orjson.dumps([p.model_dump(mode="json") for p in record.earlier]).decode(), made_at,
        )
        await conn.execute(
            """INSERT INTO filing.filing_history (filing_id, version, action, reqid, decl_source, opter, reason, record)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)""",
            record.filing_id, version, action, reqid, decl_source, opter, reason, record.model_dump_json(),
        )
        return record

    async def remember(
        self, conn: asyncpg.Connection, reqid: str, hash_: str, result: Any, emitted: list[dict[str, Any]]
    ) -> None:
        await conn.execute(
            "INSERT INTO filing.requests (reqid, request_hash, result, emitted) VALUES ($1, $2, $3::jsonb, $4::jsonb)",
            reqid, hash_, orjson.dumps(result).decode(), orjson.dumps(emitted).decode(),
        )

    async def decided(self, conn: asyncpg.Connection, places: list[tuple[str, int, int]]
                      ) -> dict[tuple[str, int, int], tuple[str, str, list[dict[str, Any]]]]:
        """What was answered before for the records at ``places`` without a stored request (a
        refusal): place → (reqid, request hash, what was published)."""
        rows = await conn.fetch(
            """SELECT d.topic, d.part, d.off, d.reqid, d.request_hash, d.emitted FROM filing.decided d
               JOIN unnest($1::text[], $2::int[], $3::bigint[]) AS k(topic, part, off)
                 ON d.topic = k.topic AND d.part = k.part AND d.off = k.off""",
            [t for t, _, _ in places], [p for _, p, _ in places], [o for _, _, o in places])
        return {(r["topic"], r["part"], r["off"]): (r["reqid"], r["request_hash"], json_value(r["emitted"]))
                for r in rows}

    async def remember_decided(self, conn: asyncpg.Connection, place: tuple[str, int, int], reqid: str, hash_: str,
                               emitted: list[dict[str, Any]]) -> None:
        await conn.execute(
            "INSERT INTO filing.decided AS d (topic, part, off, reqid, request_hash, emitted) "
            "VALUES ($1, $2, $3, $4, $5, $6::jsonb) ON CONFLICT (topic, part, off) DO UPDATE "  # a place reused
            "SET reqid = EXCLUDED.reqid, request_hash = EXCLUDED.request_hash, emitted = EXCLUDED.emitted, "
            "decided_at = now() WHERE d.reqid <> EXCLUDED.reqid OR d.request_hash <> EXCLUDED.request_hash",
            *place, reqid, hash_,
            orjson.dumps(emitted).decode())

    async def forget_decided(self, conn: asyncpg.Connection, days: int = 14, limit: int = 10_000) -> int:
        """Drop up to ``limit`` refusals kept more than ``days`` (past a topic's retention)."""
        status = await conn.execute(
            """DELETE FROM filing.decided WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM filing.decided WHERE decided_at < now() - make_interval(days => $1) LIMIT $2))""",
            days, limit)
        return int(status.split()[-1])

    async def history_in(self, conn: asyncpg.Connection, filing_id: str) -> list[dict[str, Any]]:
        """Every version of a filing: who asked, when, through which channel, and what it became."""
        rows = await conn.fetch(
            "SELECT * FROM filing.filing_history WHERE filing_id = $1 ORDER BY version", filing_id
        )
        return [
            {"version": r["version"], "action": r["action"], "reqid": r["reqid"], "decl_source": r["decl_source"],
             "opter": r["opter"], "reason": r["reason"], "at": r["at"].isoformat(), "filing": json_value(r["record"])}
            for r in rows
        ]

    async def insurances(self, conn: asyncpg.Connection, psn_nos: list[str]) -> dict[str, Insurance]:
        rows = await conn.fetch("SELECT * FROM filing.persons WHERE psn_no = ANY($1::text[])", psn_nos)
        return {
            r["psn_no"]: Insurance(r["insuplc_admdvs"], r["insutype"], r["active"], r["source_time"], r["since"],
                                   (r["seen_partition"], r["seen_offset"], r["seen_at"]), r["psn_type"])
            for r in rows
        }

    async def save_insurances(self, conn: asyncpg.Connection, held: dict[str, Insurance]) -> None:
        if not held:
            return
        rows = list(held.items())
        await conn.execute(
            """INSERT INTO filing.persons (psn_no, insuplc_admdvs, insutype, active, source_time, since,
                   seen_partition, seen_offset, seen_at, psn_type)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::boolean[], $5::timestamptz[],
                                    $6::timestamptz[], $7::int[], $8::bigint[], $9::timestamptz[], $10::text[])
               ON CONFLICT (psn_no) DO UPDATE SET insuplc_admdvs = EXCLUDED.insuplc_admdvs,
                   insutype = EXCLUDED.insutype, active = EXCLUDED.active, source_time = EXCLUDED.source_time,
                   since = EXCLUDED.since, seen_partition = EXCLUDED.seen_partition,
                   seen_offset = EXCLUDED.seen_offset, seen_at = EXCLUDED.seen_at, psn_type = EXCLUDED.psn_type,
                   updated_at = now()""",
            [p for p, _ in rows], [i.insuplc_admdvs for _, i in rows], [i.insutype for _, i in rows],
            [i.active for _, i in rows], [i.source_time for _, i in rows], [i.since for _, i in rows],
            [i.seen[0] for _, i in rows], [i.seen[1] for _, i in rows], [i.seen[2] for _, i in rows],
            [i.psn_type for _, i in rows],
        )

    async def filings_made_under(
        self, conn: asyncpg.Connection, psn_no: str, insuplc_admdvs: str, insutype: str, before: datetime,
    ) -> list[str]:
        """The person's filings under an insurance (all but refused ones) whose version was asked
        for before ``before`` (a filing saved before ``made_at`` was kept: its last write)."""
        rows = await conn.fetch(
            """SELECT filing_id FROM filing.filings WHERE psn_no = $1 AND status <> 'refused'
               AND insuplc_admdvs = $2 AND insutype = $3 AND coalesce(made_at, updated_at) < $4
               ORDER BY filing_id""",
            psn_no, insuplc_admdvs, insutype, before,
        )
        return [r["filing_id"] for r in rows]

    async def ended_by(self, conn: asyncpg.Connection, reqids: list[str]) -> list[tuple[str, FilingRecord]]:
        """The filings the given persons records ended (reqid ``refdata.persons/…``), as ended."""
        rows = await conn.fetch(
            """SELECT reqid, record FROM filing.filing_history WHERE action = 'ended' AND reqid = ANY($1::text[])
               ORDER BY array_position($1::text[], reqid), filing_id""",
            reqids,
        )
        return [(r["reqid"], FilingRecord.model_validate(json_value(r["record"]))) for r in rows]

    async def other_long_term(
        self, conn: asyncpg.Connection, psn_no: str, insuplc_admdvs: str, insutype: str, filing_id: str, *,
        begun_by: date | None = date.max, kept_from: date | None = None,
    ) -> tuple[str, str, str] | None:
        """Another filing of the person under this insurance that is long-term: one active or
        waiting for approval, begun by ``begun_by``; or a long-term earlier version of one, still in
        force on ``kept_from`` (a change for a later day keeps it until the day before: the filing's
        own columns are the change's already; a review, session 48). None leaves that half out.
        Returns (filing_id, filed region, status, or "in force until" the version's last day)."""
        row = await conn.fetchrow(
            """SELECT filing_id, filed_admdvs, status FROM filing.filings
               WHERE psn_no = $1 AND insuplc_admdvs = $2 AND insutype = $3 AND status IN ('active', 'pending')
               AND category = ANY($4::text[]) AND filing_id <> $5 AND begndate <= $7
               UNION ALL
               SELECT f.filing_id, e->>'filed_admdvs', 'in force until ' || (e->>'enddate')
               FROM filing.filings AS f CROSS JOIN LATERAL jsonb_array_elements(f.earlier) AS e
               WHERE f.psn_no = $1 AND f.insuplc_admdvs = $2 AND coalesce(e->>'insutype', f.insutype) = $3
               AND e->>'category' = ANY($4::text[]) AND (e->>'enddate')::date >= $6 AND f.filing_id <> $5
               ORDER BY 1 LIMIT 1""",
            psn_no, insuplc_admdvs, insutype, sorted(c.value for c in LONG_TERM_CATEGORIES), filing_id, kept_from,
            begun_by,
        )
        return None if row is None else (row["filing_id"], row["filed_admdvs"], row["status"])
