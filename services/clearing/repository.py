"""Clearing's SQL (schema ``clearing``): the settlement ledger and the undo records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from yidi.contracts.settlement import SetlInfo
from yidi.platform.db import transient_errors

AMOUNT_COLUMNS = (
    "medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt", "inscp_scp_amt", "act_pay_dedc",
    "hifp_pay", "hifmi_pay", "hifob_pay", "cvlserv_pay", "maf_pay", "oth_pay", "fund_pay_sumamt",
    "psn_part_amt", "acct_pay", "psn_cash_pay", "hosp_part_amt",
)


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


@dataclass
class LedgerRow:
    setl_id: str
    msgid: str
    request_hash: str
    state: str
    answer: dict[str, Any]
    undone_msgid: str | None = None
    undone_answer: dict[str, Any] | None = None


@dataclass
class NewEntry:
    row: LedgerRow
    infno: str
    info: SetlInfo
    insuplc_admdvs: str
    mdtrtarea_admvs: str
    fixmedins_code: str
    setlym: str


class ClearingRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with transient_errors(), self._pool.acquire() as conn, conn.transaction():
            yield conn

    async def ledger_rows(self, conn: asyncpg.Connection, msgids: list[str], setl_ids: list[str]) -> list[LedgerRow]:
        rows = await conn.fetch(
            """SELECT setl_id, msgid, request_hash, state, answer, undone_msgid, undone_answer FROM clearing.ledger
               WHERE msgid = ANY($1::text[]) OR setl_id = ANY($2::text[]) FOR UPDATE""",
            msgids, setl_ids,
        )
        return [
            LedgerRow(r["setl_id"], r["msgid"], r["request_hash"], r["state"], _json(r["answer"]),
                      r["undone_msgid"], _json(r["undone_answer"]) if r["undone_answer"] else None)
            for r in rows
        ]

    async def undo_requests(self, conn: asyncpg.Connection, msgids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        rows = await conn.fetch(
            "SELECT msgid, request_hash, answer FROM clearing.undo_requests WHERE msgid = ANY($1::text[])", msgids
        )
        return {r["msgid"]: (r["request_hash"], _json(r["answer"])) for r in rows}

    async def write(
        self,
        conn: asyncpg.Connection,
        entries: list[NewEntry],
        undone: list[LedgerRow],
        undo_requests: list[tuple[str, str, str, dict[str, Any]]],
    ) -> None:
        if entries:
            columns = ("setl_id", "msgid", "request_hash", "infno", "psn_no", "mdtrt_id", "insuplc_admdvs",
                       "mdtrtarea_admvs", "fixmedins_code", "setlym", *AMOUNT_COLUMNS, "answer")
            placeholders = [f"${i}" for i in range(1, len(columns))] + [f"${len(columns)}::jsonb"]
            await conn.executemany(
                f"INSERT INTO clearing.ledger ({', '.join(columns)}) VALUES ({', '.join(placeholders)})",
                [
                    (e.row.setl_id, e.row.msgid, e.row.request_hash, e.infno, e.info.psn_no, e.info.mdtrt_id,
                     e.insuplc_admdvs, e.mdtrtarea_admvs, e.fixmedins_code, e.setlym,
                     *(getattr(e.info, c) for c in AMOUNT_COLUMNS), orjson.dumps(e.row.answer).decode())
                    for e in entries
                ],
            )
        if undone:
            await conn.executemany(
                """UPDATE clearing.ledger SET state = $2, undone_msgid = $3, undone_answer = $4::jsonb, undone_at = now()
                   WHERE setl_id = $1""",
                [(u.setl_id, u.state, u.undone_msgid, orjson.dumps(u.undone_answer).decode()) for u in undone],
            )
        if undo_requests:
            await conn.executemany(
                "INSERT INTO clearing.undo_requests (msgid, request_hash, setl_id, answer) VALUES ($1, $2, $3, $4::jsonb)",
                [(m, h, s, orjson.dumps(a).decode()) for m, h, s, a in undo_requests],
            )

    async def by_msgid(self, msgid: str) -> dict[str, Any] | None:
        async with transient_errors():
            row = await self._pool.fetchrow("SELECT * FROM clearing.ledger WHERE msgid = $1", msgid)
        return dict(row) if row else None
