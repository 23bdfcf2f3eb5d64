"""Filing's SQL (schema ``filing``): filings, their history, answered requests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg
import orjson

from yidi.contracts.filing import FilingRecord
from yidi.domain.eligibility import Filing
from yidi.platform.db import Repository, json_value


@dataclass
class Insurance:
    """A person's insurance as filing holds it (R7), with the ``refdata.persons`` record last
    applied and the events the record that last ended filings published."""

    insuplc_admdvs: str
    insutype: str
    active: bool
    source_time: datetime | None
    seen: tuple[int, int]
    ended_at: tuple[int, int] | None = None
    ended_events: list[dict[str, Any]] | None = None

    @property
    def status(self) -> tuple[str, str, bool]:
        return self.insuplc_admdvs, self.insutype, self.active


class FilingRepository(Repository):

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
    ) -> FilingRecord:
        record = FilingRecord.of(filing, version)
        await conn.execute(
            """INSERT INTO filing.filings (filing_id, psn_no, insutype, insuplc_admdvs, filed_admdvs, category,
                   begndate, enddate, status, version, filed_on, earlier)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb)
               ON CONFLICT (filing_id) DO UPDATE SET insutype = EXCLUDED.insutype, filed_admdvs = EXCLUDED.filed_admdvs,
                   category = EXCLUDED.category, begndate = EXCLUDED.begndate, enddate = EXCLUDED.enddate,
                   status = EXCLUDED.status, version = EXCLUDED.version, earlier = EXCLUDED.earlier,
                   updated_at = now()""",
            record.filing_id, record.psn_no, record.insutype.value, record.insuplc_admdvs, record.filed_admdvs,
            record.category.value, record.begndate, record.enddate, record.status.value, version, filed_on,
            orjson.dumps([p.model_dump(mode="json") for p in record.earlier]).decode(),
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
            r["psn_no"]: Insurance(
                r["insuplc_admdvs"], r["insutype"], r["active"], r["source_time"], (r["seen_partition"], r["seen_offset"]),
                None if r["ended_partition"] is None else (r["ended_partition"], r["ended_offset"]),
                json_value(r["ended_events"]),
            )
            for r in rows
        }

    async def save_insurances(self, conn: asyncpg.Connection, held: dict[str, Insurance]) -> None:
        if not held:
            return
        rows = list(held.items())
        await conn.execute(
            """INSERT INTO filing.persons AS p (psn_no, insuplc_admdvs, insutype, active, source_time, seen_partition,
                   seen_offset, ended_partition, ended_offset, ended_events)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::boolean[], $5::timestamptz[], $6::int[],
                                    $7::bigint[], $8::int[], $9::bigint[], $10::jsonb[])
               ON CONFLICT (psn_no) DO UPDATE SET insuplc_admdvs = EXCLUDED.insuplc_admdvs,
                   insutype = EXCLUDED.insutype, active = EXCLUDED.active, source_time = EXCLUDED.source_time,
                   seen_partition = EXCLUDED.seen_partition, seen_offset = EXCLUDED.seen_offset,
                   ended_partition = EXCLUDED.ended_partition, ended_offset = EXCLUDED.ended_offset,
                   ended_events = EXCLUDED.ended_events, updated_at = now()""",
            [p for p, _ in rows], [i.insuplc_admdvs for _, i in rows], [i.insutype for _, i in rows],
            [i.active for _, i in rows], [i.source_time for _, i in rows], [i.seen[0] for _, i in rows],
            [i.seen[1] for _, i in rows], [i.ended_at[0] if i.ended_at else None for _, i in rows],
            [i.ended_at[1] if i.ended_at else None for _, i in rows],
            [orjson.dumps(i.ended_events or []).decode() for _, i in rows],
        )

    async def filings_under(
        self, conn: asyncpg.Connection, psn_no: str, insuplc_admdvs: str, insutype: str, before: datetime,
    ) -> list[str]:
        """The person's active filings under an insurance, saved before ``before``."""
        rows = await conn.fetch(
            """SELECT filing_id FROM filing.filings WHERE psn_no = $1 AND status = 'active'
               AND insuplc_admdvs = $2 AND insutype = $3 AND updated_at < $4 ORDER BY filing_id""",
            psn_no, insuplc_admdvs, insutype, before,
        )
        return [r["filing_id"] for r in rows]
