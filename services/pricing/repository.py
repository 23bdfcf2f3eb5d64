"""Pricing's SQL (schema ``pricing``): reference data by version, accumulators, priced requests."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from yidi.contracts.refdata import CatalogueRecord, PolicyRecord
from yidi.domain.catalogue import CatalogueItem
from yidi.domain.policy import BenefitPolicy
from yidi.platform.db import Repository, json_value, transient_errors


@dataclass
class StoredRequest:
    msgid: str
    request_hash: str
    infno: str
    setl_id: str | None
    emitted: list[dict[str, Any]]
    # ``emitted`` as JSON text, the bytes that were sent (set on the requests a batch writes; the
    # messages passed on were serialised to be sent, and are kept as they are).
    emitted_json: str | None = None


@dataclass
class StoredSettlement:
    setl_id: str
    msgid: str
    psn_no: str
    year: int
    usage_delta: dict[str, str]
    state: str
    undone_by: str | None


class ParsedCache:
    """Parsed reference records by revision: a revision never changes, so it never goes stale."""

    def __init__(self, limit: int = 200_000) -> None:
        self._items: dict[int, Any] = {}
        self._limit = limit

    def get(self, rev: int, parse: Any, raw: Any) -> Any:
        value = self._items.get(rev)
        if value is None:
            if len(self._items) >= self._limit:
                self._items.clear()
            value = self._items[rev] = parse(raw)
        return value


class PricingRepository(Repository):
    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self._policies = ParsedCache()
        self._items = ParsedCache()

    # Reference feeds -------------------------------------------------------------------------

    async def upsert_policy(self, record: PolicyRecord) -> None:
        async with transient_errors():
            await self._pool.execute(
                """INSERT INTO pricing.policies (insuplc_admdvs, insutype, begndate, version, record, rev)
                   VALUES ($1, $2, $3, $4, $5::jsonb, nextval('pricing.ref_rev'))
                   ON CONFLICT (insuplc_admdvs, insutype, begndate) DO UPDATE
                   SET version = EXCLUDED.version, record = EXCLUDED.record, rev = EXCLUDED.rev, loaded_at = now()""",
                record.insuplc_admdvs, record.insutype.value, record.begndate, record.version,
                record.model_dump_json(),
            )

    async def upsert_catalogue_item(self, record: CatalogueRecord) -> None:
        async with transient_errors():
            await self._pool.execute(
                """INSERT INTO pricing.catalogue (mdtrtarea_admvs, hilist_code, begndate, enddate, record, rev)
                   VALUES ($1, $2, $3, $4, $5::jsonb, nextval('pricing.ref_rev'))
                   ON CONFLICT (mdtrtarea_admvs, hilist_code, begndate) DO UPDATE
                   SET enddate = EXCLUDED.enddate, record = EXCLUDED.record, rev = EXCLUDED.rev, loaded_at = now()""",
                record.mdtrtarea_admvs, record.hilist_code, record.begndate, record.enddate,
                record.model_dump_json(),
            )

    async def upsert_prepayment(self, insured: str, treating: str, balance: Decimal, version: int) -> None:
        async with transient_errors():
            await self._pool.execute(
                """INSERT INTO pricing.prepayments AS p (insuplc_admdvs, mdtrtarea_admvs, balance, version)
                   VALUES ($1, $2, $3, $4)
                   ON CONFLICT (insuplc_admdvs, mdtrtarea_admvs) DO UPDATE
                   SET balance = EXCLUDED.balance, version = EXCLUDED.version WHERE p.version < EXCLUDED.version""",
                insured, treating, balance, version,
            )

    async def prepayments(self, conn: asyncpg.Connection, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Decimal]:
        keys = set(pairs)
        if not keys:
            return {}
        insured, treating = zip(*keys, strict=True)
        rows = await conn.fetch(
            """SELECT p.insuplc_admdvs, p.mdtrtarea_admvs, p.balance FROM pricing.prepayments p
               JOIN unnest($1::text[], $2::text[]) AS k(i, t) ON p.insuplc_admdvs = k.i AND p.mdtrtarea_admvs = k.t""",
            list(insured), list(treating),
        )
        return {(r["insuplc_admdvs"], r["mdtrtarea_admvs"]): r["balance"] for r in rows}

    # Batch reads, inside the batch's transaction ----------------------------------------------

    async def reference(
        self, conn: asyncpg.Connection, policy_keys: Iterable[tuple[str, str]], item_keys: Iterable[tuple[str, str]]
    ) -> tuple[list[BenefitPolicy], list[CatalogueItem]]:
        """Every version of the policies (insured region, insutype) and catalogue items (treating
        region, code) a batch names, in one round trip; parsed once per revision."""
        policy_pairs, item_pairs = sorted(set(policy_keys)), sorted(set(item_keys))
        if not policy_pairs and not item_pairs:
            return [], []
        rows = await conn.fetch(
            """SELECT 'policy' AS kind, p.rev, p.record FROM pricing.policies p
               JOIN unnest($1::text[], $2::text[]) AS k(region, insutype)
                 ON p.insuplc_admdvs = k.region AND p.insutype = k.insutype
               UNION ALL
               SELECT 'item', c.rev, c.record FROM pricing.catalogue c
               JOIN unnest($3::text[], $4::text[]) AS k(region, code)
                 ON c.mdtrtarea_admvs = k.region AND c.hilist_code = k.code""",
            [r for r, _ in policy_pairs], [t for _, t in policy_pairs],
            [r for r, _ in item_pairs], [c for _, c in item_pairs],
        )
        policies = [
            self._policies.get(r["rev"], lambda raw: PolicyRecord.model_validate(json_value(raw)).to_domain(), r["record"])
            for r in rows if r["kind"] == "policy"
        ]
        items = [
            self._items.get(r["rev"], lambda raw: CatalogueRecord.model_validate(json_value(raw)).to_domain(), r["record"])
            for r in rows if r["kind"] == "item"
        ]
        return policies, items

    async def accumulators(
        self, conn: asyncpg.Connection, keys: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], dict[str, Decimal]]:
        pairs = set(keys)
        out: dict[tuple[str, int], dict[str, Decimal]] = {k: {} for k in pairs}
        if not pairs:
            return out
        people, years = zip(*pairs, strict=True)
        rows = await conn.fetch(
            """SELECT a.psn_no, a.year, a.counter, a.amount FROM pricing.accumulators a
               JOIN unnest($1::text[], $2::int[]) AS k(psn_no, year) ON a.psn_no = k.psn_no AND a.year = k.year""",
            list(people), list(years),
        )
        for r in rows:
            out[(r["psn_no"], r["year"])][r["counter"]] = r["amount"]
        return out

    async def requests(self, conn: asyncpg.Connection, msgids: list[str]) -> dict[str, StoredRequest]:
        rows = await conn.fetch("SELECT * FROM pricing.requests WHERE msgid = ANY($1::text[])", msgids)
        return {
            r["msgid"]: StoredRequest(r["msgid"], r["request_hash"], r["infno"], r["setl_id"], json_value(r["emitted"]))
            for r in rows
        }

    async def settlements(
        self, conn: asyncpg.Connection, setl_ids: list[str], msgids: list[str]
    ) -> list[StoredSettlement]:
        rows = await conn.fetch(
            """SELECT * FROM pricing.settlements
               WHERE setl_id = ANY($1::text[]) OR msgid = ANY($2::text[]) FOR UPDATE""",
            setl_ids, msgids,
        )
        return [
            StoredSettlement(
                r["setl_id"], r["msgid"], r["psn_no"], r["year"], json_value(r["usage_delta"]), r["state"], r["undone_by"]
            )
            for r in rows
        ]

    # Batch writes --------------------------------------------------------------------------------

    async def write(
        self,
        conn: asyncpg.Connection,
        requests: list[StoredRequest],
        new_settlements: list[StoredSettlement],
        undone: list[StoredSettlement],
        counter_changes: dict[tuple[str, int, str], Decimal],
    ) -> None:
        # One statement per table, a column array each (unnest), rather than a statement per row.
        if requests:
            await conn.execute(
                """INSERT INTO pricing.requests (msgid, request_hash, infno, setl_id, emitted)
                   SELECT m, h, i, s, e::json FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
                        AS u(m, h, i, s, e)""",
                [r.msgid for r in requests], [r.request_hash for r in requests], [r.infno for r in requests],
                [r.setl_id for r in requests],
                [r.emitted_json for r in requests],
            )
        if new_settlements:
            await conn.execute(
                """INSERT INTO pricing.settlements (setl_id, msgid, psn_no, year, usage_delta)
                   SELECT s, m, p, y, d::jsonb FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[])
                        AS u(s, m, p, y, d)""",
                [s.setl_id for s in new_settlements], [s.msgid for s in new_settlements],
                [s.psn_no for s in new_settlements], [s.year for s in new_settlements],
                [orjson.dumps(s.usage_delta).decode() for s in new_settlements],
            )
        if undone:
            await conn.executemany(
                "UPDATE pricing.settlements SET state = $2, undone_by = $3, undone_at = now() WHERE setl_id = $1",
                [(s.setl_id, s.state, s.undone_by) for s in undone],
            )
        changes = sorted((p, y, c, a) for (p, y, c), a in counter_changes.items() if a)
        if changes:
            # One key appears once (counter_changes sums by key), as ON CONFLICT in one statement needs.
            await conn.execute(
                """INSERT INTO pricing.accumulators AS acc (psn_no, year, counter, amount)
                   SELECT p, y, c, a FROM unnest($1::text[], $2::int[], $3::text[], $4::numeric[]) WITH ORDINALITY
                        AS u(p, y, c, a, n) ORDER BY n
                   ON CONFLICT (psn_no, year, counter) DO UPDATE SET amount = acc.amount + EXCLUDED.amount""",
                [p for p, _, _, _ in changes], [y for _, y, _, _ in changes], [c for _, _, c, _ in changes],
                [a for _, _, _, a in changes],
            )
