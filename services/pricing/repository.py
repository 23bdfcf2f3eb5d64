"""Pricing's SQL (schema ``pricing``): reference data by version, accumulators, priced requests."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from pydantic import ValidationError

from yidi.contracts.refdata import STORED_CONTEXT, CatalogueRecord, PolicyRecord
from yidi.domain.catalogue import CatalogueItem
from yidi.domain.policy import BenefitPolicy
from yidi.platform.db import Repository, json_value, transient_errors

log = logging.getLogger(__name__)


# A version's own time (migration 009): the time held stays when a record without one replaces it,
# and a record older than the one held changes nothing (reloading an earlier file does not undo a
# correction). Equal: the same record again, applied.
_NEWER = """source_time = coalesce(EXCLUDED.source_time, held.source_time)
            WHERE EXCLUDED.source_time IS NULL OR held.source_time IS NULL
               OR EXCLUDED.source_time >= held.source_time"""


# Kept beside the stored record (source_time), not in it: a pricing older than migration 009 reads it.
_OWN_TIME = frozenset({"updated_at"})


def _ignored(status: str) -> int:
    """1 when an upsert's ``INSERT 0 n`` says it wrote nothing (its WHERE refused the update)."""
    return 1 if status.rsplit(" ", 1)[-1] == "0" else 0


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
    # The visit it settled (None for settlements made before migration 004).
    fixmedins_code: str | None = None
    mdtrt_id: str | None = None
    # The transaction that settled it (2207, 2304), from its request's row (None: not known).
    infno: str | None = None

    @property
    def visit(self) -> tuple[str, str, str] | None:
        return (self.psn_no, self.fixmedins_code, self.mdtrt_id) if self.fixmedins_code and self.mdtrt_id else None


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
    schema = "pricing"

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self._policies = ParsedCache()
        self._items = ParsedCache()
        self._unreadable_logged: set[int] = set()

    # Reference feeds -------------------------------------------------------------------------

    async def upsert_policy(self, record: PolicyRecord) -> int:
        """Store a policy version; returns 1 when it is older than the one held (ignored), else 0."""
        return await self._store_version("policies", ("insuplc_admdvs", "insutype", "begndate"), "version", (
            record.insuplc_admdvs, record.insutype.value, record.begndate, record.version), record)

    async def upsert_catalogue_item(self, record: CatalogueRecord) -> int:
        """Store a catalogue item's version; returns 1 when it is older than the one held (ignored), else 0."""
        return await self._store_version("catalogue", ("mdtrtarea_admvs", "hilist_code", "begndate"), "enddate", (
            record.mdtrtarea_admvs, record.hilist_code, record.begndate, record.enddate), record)

    async def _store_version(self, table: str, keys: tuple[str, str, str], column: str, values: tuple[Any, ...],
                             record: PolicyRecord | CatalogueRecord) -> int:
        """Upsert a reference version into ``pricing.<table>`` by ``keys``, ``column`` beside them
        (``values``: the keys' and the column's), unless it is older than the one held (``_NEWER``:
        then 1). The record is stored without enddate when null (an older version reads it), and
        without its time, which is kept beside it."""
        async with transient_errors():
            status = await self._pool.execute(
                f"""INSERT INTO pricing.{table} AS held ({", ".join(keys)}, {column}, record, rev, source_time)
                    VALUES ($1, $2, $3, $4, $5::jsonb, nextval('pricing.ref_rev'), $6)
                    ON CONFLICT ({", ".join(keys)}) DO UPDATE
                    SET {column} = EXCLUDED.{column}, record = EXCLUDED.record, rev = EXCLUDED.rev, loaded_at = now(),
                        {_NEWER}""",
                *values, record.model_dump_json(exclude=_OWN_TIME), record.source_time,
            )
        return _ignored(status)

    async def catalogued(self, conn: asyncpg.Connection, regions: Iterable[str]) -> set[str]:
        """Which of ``regions`` have a catalogue version stored, of any item and day (one index probe each)."""
        rows = await conn.fetch(
            """SELECT r FROM unnest($1::text[]) AS r
               WHERE EXISTS (SELECT 1 FROM pricing.catalogue c WHERE c.mdtrtarea_admvs = r)""",
            sorted(set(regions)))
        return {row["r"] for row in rows}

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

    async def batch_reads(
        self,
        conn: asyncpg.Connection,
        msgids: list[str],
        policy_keys: Iterable[tuple[str, str]],
        item_keys: Iterable[tuple[str, str]],
        usage_keys: Iterable[tuple[str, int]],
        visit_keys: Iterable[tuple[str, str, str]] = (),
        places: Iterable[tuple[str, int, int]] = (),
    ) -> tuple[dict[str, StoredRequest], list[BenefitPolicy], list[CatalogueItem], dict[tuple[str, int], dict[str, Decimal]],
               dict[tuple[str, str, str], str], dict[tuple[str, str, str], list[tuple[date, date | None]]],
               dict[tuple[str, int, int], tuple[str, str, str]]]:
        """What a batch reads after its locks, in one round trip: the requests seen before by msgid,
        every version of the policies (insured region, insutype) and catalogue items (treating region,
        code) it names (parsed once per revision), the accumulators of (person, year), and the
        settlement (setl_id) standing for each visit (person, facility, mdtrt_id) it settles; and
        the stored policies ("policy", region, insutype) and catalogue items ("item", region, code)
        this version cannot read (stored by an earlier one, before a check was added), with each
        such version's begndate and enddate: a request whose day they would decide is refused, the
        rest priced; raising here stopped pricing for every region. And the answers decided before for
        the batch's records by their places (topic, partition, offset), with their msgids and payload
        hashes: a batch handled again."""
        policy_pairs, item_pairs, usage_pairs = sorted(set(policy_keys)), sorted(set(item_keys)), sorted(set(usage_keys))
        visits = sorted(set(visit_keys))
        places = list(places)
        rows = await conn.fetch(
            """SELECT 'request' AS kind, r.msgid AS a, r.request_hash AS b, r.infno AS c, r.setl_id AS d,
                      NULL::int AS year, NULL::numeric AS amount, NULL::bigint AS rev, r.emitted::text AS body
               FROM pricing.requests r WHERE r.msgid = ANY($1::text[])
               UNION ALL
               SELECT 'policy', k.region, p.begndate::text, k.insutype, p.record->>'enddate', NULL, NULL, p.rev, p.record::text
               FROM pricing.policies p
               JOIN unnest($2::text[], $3::text[]) AS k(region, insutype)
                 ON p.insuplc_admdvs = k.region AND p.insutype = k.insutype
               UNION ALL
               SELECT 'item', k.region, c.begndate::text, k.code, c.enddate::text, NULL, NULL, c.rev, c.record::text
               FROM pricing.catalogue c
               JOIN unnest($4::text[], $5::text[]) AS k(region, code)
                 ON c.mdtrtarea_admvs = k.region AND c.hilist_code = k.code
               UNION ALL
               SELECT 'usage', a.psn_no, NULL, a.counter, NULL, a.year, a.amount, NULL, NULL FROM pricing.accumulators a
               JOIN unnest($6::text[], $7::int[]) AS k(psn_no, year) ON a.psn_no = k.psn_no AND a.year = k.year
               UNION ALL
               SELECT 'visit', s.psn_no, s.fixmedins_code, s.mdtrt_id, s.setl_id, NULL, NULL, NULL, NULL
               FROM pricing.settlements s
               JOIN unnest($8::text[], $9::text[], $10::text[]) AS k(psn_no, facility, mdtrt_id)
                 ON s.psn_no = k.psn_no AND s.fixmedins_code = k.facility AND s.mdtrt_id = k.mdtrt_id
               WHERE s.state = 'settled'
               UNION ALL
               SELECT 'decided', d.topic, d.msgid, d.request_hash, NULL, d.part, NULL, d.off, d.answer FROM pricing.decided d
               JOIN unnest($11::text[], $12::int[], $13::bigint[]) AS k(topic, part, off)
                 ON d.topic = k.topic AND d.part = k.part AND d.off = k.off""",
            msgids,
            [r for r, _ in policy_pairs], [t for _, t in policy_pairs],
            [r for r, _ in item_pairs], [c for _, c in item_pairs],
            [p for p, _ in usage_pairs], [y for _, y in usage_pairs],
            [p for p, _, _ in visits], [f for _, f, _ in visits], [m for _, _, m in visits],
            [t for t, _, _ in places], [p for _, p, _ in places], [o for _, _, o in places],
        )
        stored: dict[str, StoredRequest] = {}
        policies: list[BenefitPolicy] = []
        items: list[CatalogueItem] = []
        usage: dict[tuple[str, int], dict[str, Decimal]] = {k: {} for k in usage_pairs}
        settled: dict[tuple[str, str, str], str] = {}
        unreadable: dict[tuple[str, str, str], list[tuple[date, date | None]]] = {}
        decided: dict[tuple[str, int, int], tuple[str, str, str]] = {}  # place → (msgid, request_hash, answer)
        for r in rows:
            kind = r["kind"]
            if kind == "usage":
                usage[(r["a"], r["year"])][r["c"]] = r["amount"]
            elif kind == "visit":
                settled[(r["a"], r["b"], r["c"])] = r["d"]
            elif kind == "request":
                stored[r["a"]] = StoredRequest(r["a"], r["b"], r["c"], r["d"], orjson.loads(r["body"]))
            elif kind == "decided":
                decided[(r["a"], r["year"], r["rev"])] = (r["b"], r["c"], r["body"])
            elif kind == "policy":
                try:
                    policies.append(self._policies.get(
                        r["rev"], lambda raw: PolicyRecord.model_validate(json_value(raw), context=STORED_CONTEXT).to_domain(),
                        r["body"]))
                except (ValidationError, ValueError, ArithmeticError) as exc:
                    unreadable.setdefault(("policy", r["a"], r["c"]), []).append(
                        (date.fromisoformat(r["b"]), _stored_date(r["d"])))
                    self._unreadable(r["rev"], f"policy of {r['a']}/{r['c']} from {r['b']}", exc)
            else:
                try:
                    items.append(self._items.get(
                        r["rev"], lambda raw: CatalogueRecord.model_validate(json_value(raw), context=STORED_CONTEXT).to_domain(),
                        r["body"]))
                except (ValidationError, ValueError, ArithmeticError) as exc:
                    unreadable.setdefault(("item", r["a"], r["c"]), []).append(
                        (date.fromisoformat(r["b"]), date.fromisoformat(r["d"]) if r["d"] else None))
                    self._unreadable(r["rev"], f"catalogue item {r['c']} of {r['a']} from {r['b']}", exc)
        return stored, policies, items, usage, settled, unreadable, decided

    def _unreadable(self, rev: int, what: str, exc: Exception) -> None:
        """Logged once per stored revision (every batch that needs it meets it again)."""
        if rev not in self._unreadable_logged:
            self._unreadable_logged.add(rev)
            log.error("pricing: stored %s (rev %s) cannot be read by this version; the requests that need it are "
                      "answered INTERNAL_ERROR until the region publishes it again: %s", what, rev, exc)

    async def settlements(
        self, conn: asyncpg.Connection, setl_ids: list[str], msgids: list[str]
    ) -> list[StoredSettlement]:
        rows = await conn.fetch(
            """SELECT s.*, r.infno AS settled_by FROM pricing.settlements s
               LEFT JOIN pricing.requests r ON r.msgid = s.msgid
               WHERE s.setl_id = ANY($1::text[]) OR s.msgid = ANY($2::text[]) FOR UPDATE OF s""",
            setl_ids, msgids,
        )
        return [
            StoredSettlement(
                r["setl_id"], r["msgid"], r["psn_no"], r["year"], json_value(r["usage_delta"]), r["state"], r["undone_by"],
                r["fixmedins_code"], r["mdtrt_id"], r["settled_by"],
            )
            for r in rows
        ]

    async def forget_decided(self, conn: asyncpg.Connection, days: int = 14, limit: int = 10_000) -> int:
        """Drop up to ``limit`` of the answers decided more than ``days`` ago (``decided``): past a
        topic's retention no record is left to handle again. A bounded statement of its own, out of
        any batch's transaction: a backlog (after an outage) goes over several calls."""
        status = await conn.execute(
            """DELETE FROM pricing.decided WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM pricing.decided WHERE decided_at < now() - make_interval(days => $1) LIMIT $2))""",
            days, limit)
        return int(status.split()[-1])

    # Batch writes --------------------------------------------------------------------------------

    async def write(
        self,
        conn: asyncpg.Connection,
        requests: list[StoredRequest],
        new_settlements: list[StoredSettlement],
        undone: list[StoredSettlement],
        counter_changes: dict[tuple[str, int, str], Decimal],
        decided: Sequence[tuple[str, int, int, str, str, str]] = (),
    ) -> None:
        # One statement for the four tables (data-modifying CTEs), a column array each (unnest),
        # rather than a statement per table or per row.
        changes = sorted((p, y, c, a) for (p, y, c), a in counter_changes.items() if a)
        if requests or new_settlements or changes or decided:
            await conn.execute(
                """WITH r AS (
                     INSERT INTO pricing.requests (msgid, request_hash, infno, setl_id, emitted)
                     SELECT m, h, i, s, e::json FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
                          AS u(m, h, i, s, e)),
                   s AS (
                     INSERT INTO pricing.settlements (setl_id, msgid, psn_no, year, usage_delta, fixmedins_code, mdtrt_id)
                     SELECT s, m, p, y, d::jsonb, f, v
                     FROM unnest($6::text[], $7::text[], $8::text[], $9::int[], $10::text[], $15::text[], $16::text[])
                          AS u(s, m, p, y, d, f, v)),
                   -- One key appears once (counter_changes sums by key), as ON CONFLICT in one statement needs.
                   a AS (
                     INSERT INTO pricing.accumulators AS acc (psn_no, year, counter, amount)
                     SELECT p, y, c, a FROM unnest($11::text[], $12::int[], $13::text[], $14::numeric[]) WITH ORDINALITY
                          AS u(p, y, c, a, n) ORDER BY n
                     ON CONFLICT (psn_no, year, counter) DO UPDATE SET amount = acc.amount + EXCLUDED.amount),
                   d AS (
                     INSERT INTO pricing.decided AS kept (topic, part, off, msgid, request_hash, answer)
                     SELECT t, p, o, m, h, a
                     FROM unnest($17::text[], $18::int[], $19::bigint[], $20::text[], $21::text[], $22::text[])
                          AS u(t, p, o, m, h, a)
                     -- A place kept for another request (its topic deleted and made again) is this one's now.
                     ON CONFLICT (topic, part, off) DO UPDATE
                     SET msgid = EXCLUDED.msgid, request_hash = EXCLUDED.request_hash, answer = EXCLUDED.answer,
                         decided_at = now()
                     WHERE kept.msgid <> EXCLUDED.msgid OR kept.request_hash <> EXCLUDED.request_hash)
                   SELECT 1""",
                [r.msgid for r in requests], [r.request_hash for r in requests], [r.infno for r in requests],
                [r.setl_id for r in requests], [r.emitted_json for r in requests],
                [s.setl_id for s in new_settlements], [s.msgid for s in new_settlements],
                [s.psn_no for s in new_settlements], [s.year for s in new_settlements],
                [orjson.dumps(s.usage_delta).decode() for s in new_settlements],
                [p for p, _, _, _ in changes], [y for _, y, _, _ in changes], [c for _, _, c, _ in changes],
                [a for _, _, _, a in changes],
                [s.fixmedins_code for s in new_settlements], [s.mdtrt_id for s in new_settlements],
                [d[0] for d in decided], [d[1] for d in decided], [d[2] for d in decided], [d[3] for d in decided],
                [d[4] for d in decided], [d[5] for d in decided],
            )
        if undone:
            await conn.executemany(
                "UPDATE pricing.settlements SET state = $2, undone_by = $3, undone_at = now() WHERE setl_id = $1",
                [(s.setl_id, s.state, s.undone_by) for s in undone],
            )


def _stored_date(text: str | None) -> date | None:
    """An unreadable stored record's date, as far as it can be read (None: open, the cautious reading)."""
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None
