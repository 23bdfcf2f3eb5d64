"""Filing's SQL (schema ``filing``): filings, their history, answered requests."""

from __future__ import annotations

from datetime import date
from typing import Any

import asyncpg
import orjson

from yidi.contracts.filing import FilingRecord
from yidi.domain.eligibility import Filing
from yidi.platform.db import Repository, json_value


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
