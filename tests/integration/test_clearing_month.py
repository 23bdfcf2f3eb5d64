"""A month with thousands of region pairs, cleared on the real Postgres.

At national scale a month has thousands of (insured, treating) pairs with settlements. Its run
publishes one statement per pair on clearing.statements and answers with as many statements and
net positions as one Kafka record holds, counting them all; ``query_month`` pages through the
rest. The answer listed them all and ran past 1 MiB at about 2,300 pairs: the month closed, but
its statements were never published and the clerk was told it could not be processed.
"""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from services.clearing.admin import MAX_LISTED_STATEMENTS, ClearingAdminHandler
from services.clearing.repository import AMOUNT_COLUMNS, ClearingRepository
from yidi.platform.kafka import Incoming
from yidi.platform.topics import CLEARING_PERIODS, CLEARING_STATEMENTS

pytestmark = pytest.mark.integration

PAIRS = 3000  # 60 insured regions × 50 treating ones


@pytest.fixture
def repo(clearing_of_its_own) -> ClearingRepository:
    return clearing_of_its_own[1]


# A bill of 100.00: the pooled fund 60.00, the person 40.00 in cash.
BILL = {"medfee_sumamt": "100.00", "hifp_pay": "60.00", "fund_pay_sumamt": "60.00", "psn_cash_pay": "40.00"}


def _amounts(**paid: str) -> tuple[str, str]:
    """The ledger's amount columns, and the SQL list of their values: ``paid`` by column, 0.00 the others."""
    return ", ".join(AMOUNT_COLUMNS), ", ".join(paid.get(a, "0.00") for a in AMOUNT_COLUMNS)


async def _settled_pairs(repo: ClearingRepository, month: str) -> None:
    """One settlement of 100.00 (fund 60.00) for each of PAIRS region pairs, in ``month``."""
    amounts, values = _amounts(**BILL)
    async with repo.transaction() as conn:
        await conn.execute(
            f"""INSERT INTO clearing.ledger (setl_id, msgid, request_hash, infno, psn_no, mdtrt_id, insuplc_admdvs,
                    mdtrtarea_admvs, fixmedins_code, setlym, {amounts}, answer, setl_date, clr_period)
                SELECT $1 || g, $1 || 'M' || g, 'h', '2207', 'P' || g, 'V' || g,
                       '81' || lpad((g / 50)::text, 4, '0'), '71' || lpad((g % 50)::text, 4, '0'), 'H1', $2,
                       {values}, '{{}}'::json, current_date, $2
                FROM generate_series(0, {PAIRS - 1}) AS g""",
            f"S{month}-{uuid.uuid4().hex[:8]}-", month,
        )


def _request(settings, body: dict) -> Incoming:
    return Incoming(settings.topic("clearing.requests"), 0, 1, body["reqid"].encode(), orjson.dumps(body), 0)


def _result(settings, out) -> tuple[dict, int]:
    (answer,) = [o for o in out if o.topic == settings.topic("clearing.results")]
    return orjson.loads(answer.value), len(answer.value)


async def test_a_month_of_thousands_of_pairs_publishes_every_statement_and_answers_within_a_record(settings, repo):
    month = "202509"  # in a database of the test's own
    await _settled_pairs(repo, month)
    handler = ClearingAdminHandler(settings, repo)

    out = await handler([_request(settings, {"type": "run_month", "reqid": f"R-{uuid.uuid4().hex}", "setlym": month})])
    result, size = _result(settings, out)
    statements = [orjson.loads(o.value) for o in out if o.topic == settings.topic(CLEARING_STATEMENTS)]
    assert result["ok"], result
    assert len(statements) == PAIRS and {s["clr_sumamt"] for s in statements} == {"60.00"}
    data = result["data"]
    assert (data["statements_total"], data["net_positions_total"], data["clr_sumamt"]) == (PAIRS, PAIRS, f"{60 * PAIRS}.00")
    assert len(data["statements"]) == len(data["net_positions"]) == MAX_LISTED_STATEMENTS
    assert "offset 1000" in data["more"]
    assert size < 900_000  # a Kafka record is at most 1 MiB with its headers

    async def page(offset: int) -> dict:
        body = {"type": "query_month", "reqid": f"Q-{uuid.uuid4().hex}", "setlym": month, "offset": offset}
        return _result(settings, await handler([_request(settings, body)]))[0]

    pages = [await page(offset) for offset in range(0, PAIRS, MAX_LISTED_STATEMENTS)]
    listed = [s["statement_id"] for p in pages for s in p["data"]["statements"]]
    assert listed == sorted(s["statement_id"] for s in statements)  # every one, once, in pair order
    assert len({(n["region_a"], n["region_b"]) for p in pages for n in p["data"]["net_positions"]}) == PAIRS
    assert "more" not in pages[-1]["data"] and pages[0]["data"]["statements"] == data["statements"]
    other = f"{int(month[:4]) + 1}{month[4:]}"
    body = {"type": "query_month", "reqid": f"Q-{uuid.uuid4().hex}", "setlym": other}
    refused = _result(settings, await handler([_request(settings, body)]))[0]
    assert not refused["ok"] and "not cleared yet" in refused["reason"]


async def test_a_months_statements_are_totalled_after_its_close_while_settlements_go_on(settings, repo):
    # The close holds the periods lock as long as its own short transaction; the totals (tens of
    # seconds for a national month) came under it, and every settlement batch waited for them.
    from yidi.contracts.clearing import RunMonth

    month = "202509"
    await _settled_pairs(repo, month)
    handler = ClearingAdminHandler(settings, repo)
    request = RunMonth(type="run_month", reqid=f"R-{uuid.uuid4().hex}", setlym=month)
    await repo.close_month(month, request.reqid)  # and the run stopped there: a crash, say
    async with repo.transaction() as admin:
        ok, _, data, published = await handler._run_month(admin, request)  # resumed, not "cleared already"
        async with repo.transaction() as batch:  # a settlement batch meanwhile: not held back
            await asyncio.wait_for(repo.lock_batch(batch, [b"P-DURING-TOTALS"]), timeout=5)
            cleared, _, _ = await repo.batch_reads(batch, [], [])
        assert cleared.through == month  # it lands after it
    # A close without a cut (the settlement stage has no row here, as with a close by an instance of
    # the version before session 45): not published on clearing.periods.
    assert ok and data["statements_total"] == PAIRS and len(published) == PAIRS
    assert all(p["topic"] != settings.topic(CLEARING_PERIODS) for p in published)
    body = {"type": "run_month", "reqid": f"R-{uuid.uuid4().hex}", "setlym": month}
    again = _result(settings, await handler([_request(settings, body)]))[0]
    assert not again["ok"] and "cleared already" in again["reason"]


async def test_settlement_batches_go_on_while_a_months_totals_run(settings, repo, monkeypatch):
    # Held in the middle of its totals, a month's run holds no lock a settlement batch waits for:
    # the batch takes the periods lock and reads the month closed (it lands after it).
    month = "202509"
    await _settled_pairs(repo, month)
    entered, release = asyncio.Event(), asyncio.Event()
    totals = ClearingAdminHandler._month_totals

    async def held(conn, m, pair=None):
        entered.set()
        await release.wait()
        return await totals(conn, m, pair)

    monkeypatch.setattr(ClearingAdminHandler, "_month_totals", staticmethod(held))
    body = {"type": "run_month", "reqid": f"R-{uuid.uuid4().hex}", "setlym": month}
    run = asyncio.create_task(ClearingAdminHandler(settings, repo)([_request(settings, body)]))
    try:
        await asyncio.wait_for(entered.wait(), timeout=10)
        async with repo.transaction() as batch:
            await asyncio.wait_for(repo.lock_batch(batch, [b"P-DURING-TOTALS"]), timeout=5)
            cleared, _, _ = await repo.batch_reads(batch, [], [])
        assert cleared.through == month
    finally:
        release.set()
    result = _result(settings, await asyncio.wait_for(run, timeout=60))[0]
    assert result["ok"] and result["data"]["statements_total"] == PAIRS


async def test_a_months_run_refused_as_its_reqid_used_again_in_the_batch_closes_nothing(settings, repo):
    # The close comes before the batch's transaction: it must not close a month for a run that is
    # then refused (its reqid taken by the batch's first request).
    month = "202509"
    reqid = f"R-{uuid.uuid4().hex}"
    fund = {"type": "fund", "reqid": reqid, "insuplc_admdvs": "951234", "mdtrtarea_admvs": "941234", "amount": "1.00"}
    run = {"type": "run_month", "reqid": reqid, "setlym": month}
    out = await ClearingAdminHandler(settings, repo)([_request(settings, fund), _request(settings, run)])
    results = [orjson.loads(o.value) for o in out if o.topic == settings.topic("clearing.results")]
    assert [r["ok"] for r in results] == [True, False] and "already used" in results[1]["reason"]
    async with repo.transaction() as conn:
        assert await conn.fetchval("SELECT count(*) FROM clearing.periods WHERE setlym = $1", month) == 0


async def test_a_month_that_has_not_ended_is_not_run(settings, repo):
    # Run early, it closed and the rest of its settlements landed in the next month.
    from datetime import datetime

    from yidi.domain.codes import BUSINESS_TZ

    month = datetime.now(BUSINESS_TZ).strftime("%Y%m")
    body = {"type": "run_month", "reqid": f"R-{uuid.uuid4().hex}", "setlym": month}
    refused = _result(settings, await ClearingAdminHandler(settings, repo)([_request(settings, body)]))[0]
    assert not refused["ok"] and "has not ended" in refused["reason"]
    async with repo.transaction() as conn:
        assert await conn.fetchval("SELECT count(*) FROM clearing.periods WHERE setlym = $1", month) == 0
        # Not kept under its reqid: sent again once the month has ended, it runs.
        assert await conn.fetchval("SELECT count(*) FROM clearing.admin_requests WHERE reqid = $1", body["reqid"]) == 0


async def _bills_of_one_pair(repo: ClearingRepository, month: str, count: int, paid: tuple[str, ...],
                             ids: str = "BIG") -> None:
    """``count`` settlements of 999,999,999,999.00 of pair 810000 → 710000 in ``month``, the
    ``paid`` amounts each that too (the others 0.00), their ids from ``ids``."""
    amounts, values = _amounts(**dict.fromkeys(paid, "999999999999.00"))
    async with repo.transaction() as conn:
        await conn.execute(
            f"""INSERT INTO clearing.ledger (setl_id, msgid, request_hash, infno, psn_no, mdtrt_id, insuplc_admdvs,
                    mdtrtarea_admvs, fixmedins_code, setlym, {amounts}, answer, setl_date, clr_period)
                SELECT 'S' || $3 || g, 'M' || $3 || g, 'h', '2207', 'P' || g, 'V' || g, '810000', '710000', 'H1', $1,
                       {values}, '{{}}'::json, current_date, $1
                FROM generate_series(1, $2::int) AS g""", month, count, ids)


async def test_a_pair_whose_month_comes_to_more_than_one_amount_gets_its_statement(settings, repo):
    # Two self-paid bills of 999,999,999,999.00 for one pair: their month's statement refused its own
    # total (a statement's amounts were capped as one bill's), after the month had closed; the month
    # stayed without statements and every later month was refused behind it (a review, session 35).
    month = "202508"
    await _bills_of_one_pair(repo, month, 2, ("medfee_sumamt", "psn_cash_pay"))
    body = {"type": "run_month", "reqid": f"R-{uuid.uuid4().hex}", "setlym": month}
    out = await ClearingAdminHandler(settings, repo)([_request(settings, body)])
    result, _ = _result(settings, out)
    (statement,) = [orjson.loads(o.value) for o in out if o.topic == settings.topic(CLEARING_STATEMENTS)]
    assert result["ok"], result
    assert (statement["medfee_sumamt"], statement["clr_sumamt"]) == ("1999999999998.00", "0.00")


async def test_a_pair_whose_month_comes_to_more_than_a_hundred_of_the_largest_bills_is_stated_and_cleared(
        settings, repo):
    # 101 of the largest bills paid by the fund: past numeric(16, 2), the statement refused its own
    # total after the month had closed, with the same lock-out as above (a review, session 35; left
    # then). The sums are numeric(24, 2) now, and confirming the statement clears it on the account.
    month = "202509"
    await _bills_of_one_pair(repo, month, 101, ("medfee_sumamt", "fund_pay_sumamt", "hifp_pay"))
    handler = ClearingAdminHandler(settings, repo)
    body = {"type": "run_month", "reqid": f"R-{uuid.uuid4().hex}", "setlym": month}
    out = await handler([_request(settings, body)])
    result, _ = _result(settings, out)
    assert result["ok"], result
    (statement,) = [orjson.loads(o.value) for o in out if o.topic == settings.topic(CLEARING_STATEMENTS)]
    assert (statement["fund_pay_sumamt"], statement["clr_sumamt"]) == ("100999999999899.00",) * 2
    for side in ("insured", "treating"):
        confirm = {"type": "confirm", "reqid": f"R-{uuid.uuid4().hex}", "statement_id": statement["statement_id"],
                   "side": side}
        confirmed, _ = _result(settings, await handler([_request(settings, confirm)]))
        assert confirmed["ok"], confirmed
    assert confirmed["data"]["state"] == "settled", confirmed
    async with repo.transaction() as conn:
        cleared = await conn.fetchval(
            "SELECT cleared FROM clearing.prepayment_accounts WHERE insuplc_admdvs = '810000' AND mdtrtarea_admvs = '710000'")
    assert str(cleared) == "100999999999899.00"


async def test_a_statements_entries_are_listed_page_by_page_and_make_its_totals(settings, repo):
    # A region checks a statement before it confirms it: each settlement that landed in its month
    # (drawn) and each cancellation that landed in it (given back). Before session 50 a statement
    # could be seen only as totals (query_pair_month counted the settlements dated in the month).
    from decimal import Decimal

    month, count = "202506", 1203  # with its undoings, a full page and a part
    amounts, values = _amounts(**BILL | {"acct_pay": "10.00", "psn_cash_pay": "30.00"})
    async with repo.transaction() as conn:
        # Pair 820000 → 720000: count settlements drawing 70.00 each, every tenth cancelled in the
        # month (given back); and one of another pair, which is not this statement's.
        await conn.execute(
            f"""INSERT INTO clearing.ledger (setl_id, msgid, request_hash, infno, psn_no, mdtrt_id, insuplc_admdvs,
                    mdtrtarea_admvs, fixmedins_code, setlym, {amounts}, answer, setl_date, clr_period, drawn, state,
                    undo_period, undone_msgid, undone_at)
                SELECT 'SE' || lpad(g::text, 5, '0'), 'ME' || g, 'h', '2207', 'P' || g, 'V' || g,
                       CASE WHEN g = 0 THEN '830000' ELSE '820000' END, '720000', 'H1', $1, {values}, '{{}}'::json,
                       current_date, $1, 70.00, CASE WHEN g % 10 = 1 THEN 'cancelled' ELSE 'settled' END,
                       CASE WHEN g % 10 = 1 THEN $1 END, CASE WHEN g % 10 = 1 THEN 'U' || g END,
                       CASE WHEN g % 10 = 1 THEN now() END
                FROM generate_series(0, $2::int) AS g""", month, count)
    handler = ClearingAdminHandler(settings, repo)
    out = await handler([_request(settings, {"type": "run_month", "reqid": f"R-{uuid.uuid4().hex}", "setlym": month})])
    statements = {(s["insuplc_admdvs"], s["mdtrtarea_admvs"]): s
                  for s in (orjson.loads(o.value) for o in out if o.topic == settings.topic(CLEARING_STATEMENTS))}
    statement = statements[("820000", "720000")]
    undone = len([g for g in range(1, count + 1) if g % 10 == 1])
    assert (statement["settlements"], statement["undone"]) == (count, undone)

    async def page(offset: int) -> dict:
        body = {"type": "query_statement", "reqid": f"Q-{uuid.uuid4().hex}", "statement_id": statement["statement_id"],
                "offset": offset}
        return _result(settings, await handler([_request(settings, body)]))[0]

    pages, offset = [], 0
    while True:
        result = await page(offset)
        assert result["ok"], result
        pages.append(result["data"])
        if "next_offset" not in result["data"]:
            break
        offset = result["data"]["next_offset"]
    assert [p["listed"] for p in pages] == [1000, count + undone - 1000]
    assert {p["entries_total"] for p in pages} == {count + undone}
    assert pages[0]["statement"] == statement
    entries = [e for p in pages for e in p["entries"]]
    kinds = [(e["cleared_as"], e["setl_id"]) for e in entries]
    assert kinds == sorted(kinds) and len(set(kinds)) == len(kinds)  # settlements first, none twice
    assert {e["insuplc_admdvs"] for e in entries} == {"820000"}
    assert sum(Decimal(e["clr_sumamt"]) for e in entries) == Decimal(statement["clr_sumamt"]) == 70 * (count - undone)
    assert sum(1 for e in entries if e["cleared_as"] == "undoing") == undone
    assert {e["clr_sumamt"] for e in entries if e["cleared_as"] == "undoing"} == {"-70.00"}
    missing = _result(settings, await handler([_request(settings, {
        "type": "query_statement", "reqid": f"Q-{uuid.uuid4().hex}", "statement_id": "no-such"})]))[0]
    assert not missing["ok"] and missing["reason"] == "no statement no-such"


async def test_a_statements_entries_leave_out_care_at_home_that_drew_nothing_and_pages_stop_at_the_byte_budget(
        settings, repo, monkeypatch):
    # The rows the month's run sums, no others: care at home (treating 821101 inside insured 820000)
    # that drew nothing is cleared by no one; one that drew (recorded before they were told apart)
    # is; a row from before migration 007 (drawn NULL) clears its fund payment. A page the byte
    # budget cuts short goes on from where it stopped.
    from decimal import Decimal

    from services.clearing import admin

    month = "202504"
    amounts, values = _amounts(**BILL)
    async with repo.transaction() as conn:
        await conn.execute(
            f"""INSERT INTO clearing.ledger (setl_id, msgid, request_hash, infno, psn_no, mdtrt_id, insuplc_admdvs,
                    mdtrtarea_admvs, fixmedins_code, setlym, {amounts}, answer, setl_date, clr_period, drawn)
                SELECT 'SH' || g, 'MH' || g, 'h', '2207', 'P' || g, 'V' || g, '820000', '821101', 'H1', $1,
                       {values}, '{{}}'::json, current_date, $1,
                       CASE g WHEN 1 THEN 0.00 WHEN 2 THEN 70.00 ELSE NULL END
                FROM generate_series(1, 3) AS g""", month)
    handler = ClearingAdminHandler(settings, repo)
    out = await handler([_request(settings, {"type": "run_month", "reqid": f"R-{uuid.uuid4().hex}", "setlym": month})])
    (statement,) = [orjson.loads(o.value) for o in out if o.topic == settings.topic(CLEARING_STATEMENTS)]
    assert (statement["settlements"], statement["clr_sumamt"]) == (2, "130.00")  # SH2 drew 70, SH3 60 (NULL)

    async def page(offset: int) -> dict:
        body = {"type": "query_statement", "reqid": f"Q-{uuid.uuid4().hex}", "statement_id": statement["statement_id"],
                "offset": offset}
        return _result(settings, await handler([_request(settings, body)]))[0]

    whole = (await page(0))["data"]
    assert [(e["setl_id"], e["clr_sumamt"]) for e in whole["entries"]] == [("SH2", "70.00"), ("SH3", "60.00")]
    assert whole["entries_total"] == 2 and "next_offset" not in whole
    monkeypatch.setattr(admin, "LISTED_BYTES", len(orjson.dumps(whole["entries"][0])) + 10)  # room for one
    first = (await page(0))["data"]
    assert (first["listed"], first["next_offset"]) == (1, 1)
    second = (await page(first["next_offset"]))["data"]
    assert [e["setl_id"] for e in second["entries"]] == ["SH3"] and "next_offset" not in second
    assert sum(Decimal(e["clr_sumamt"]) for e in first["entries"] + second["entries"]) == Decimal(statement["clr_sumamt"])
    # A statement issued before care at home was told apart counted rows the listing leaves out:
    # the next page is decided by the rows (the count's said a page was left, for ever).
    monkeypatch.setattr(admin, "LISTED_BYTES", 800_000)
    async with repo.transaction() as conn:
        await conn.execute("UPDATE clearing.statements SET settlements = settlements + 1 WHERE statement_id = $1",
                           statement["statement_id"])
    counted_more = (await page(0))["data"]
    assert (counted_more["entries_total"], counted_more["listed"]) == (3, 2) and "next_offset" not in counted_more
    # A page that outlasts its time is refused, not retried while the requests behind it wait.
    monkeypatch.setattr(admin, "STATEMENT_PAGE_TIMEOUT_S", 0.000001)
    slow = await page(0)
    assert not slow["ok"] and "holds 3 entries, more than a page from offset 0 is read in" in slow["reason"], slow


async def test_a_confirmation_is_recorded_against_its_operator_and_the_first_one_stands(settings, repo):
    # Each side's first confirmation is kept with who sent it, when and its reqid (migration 016,
    # session 50): before, a statement said only that a side had confirmed.
    month = "202505"
    await _bills_of_one_pair(repo, month, 1, ("medfee_sumamt", "fund_pay_sumamt", "hifp_pay"))
    handler = ClearingAdminHandler(settings, repo)
    out = await handler([_request(settings, {"type": "run_month", "reqid": f"R-{uuid.uuid4().hex}", "setlym": month})])
    (statement,) = [orjson.loads(o.value) for o in out if o.topic == settings.topic(CLEARING_STATEMENTS)]
    assert (statement["confirmed_insured_by"], statement["confirmed_insured_at"]) == (None, None)

    async def confirm(side: str, opter: str) -> tuple[str, dict]:
        reqid = f"R-{uuid.uuid4().hex}"
        body = {"type": "confirm", "reqid": reqid, "statement_id": statement["statement_id"], "side": side,
                "opter": opter}
        result, _ = _result(settings, await handler([_request(settings, body)]))
        assert result["ok"], result
        return reqid, result["data"]

    first_reqid, first = await confirm("insured", "clerk Wang of 810000")
    _, again = await confirm("insured", "clerk Li")  # the side confirmed already: Wang's stands
    _, both = await confirm("treating", "")
    assert first["confirmed_insured_by"] == again["confirmed_insured_by"] == "clerk Wang of 810000"
    assert first["confirmed_insured_at"] == again["confirmed_insured_at"] is not None
    assert (both["state"], both["confirmed_treating_by"]) == ("settled", None) and both["confirmed_treating_at"]
    async with repo.transaction() as conn:
        stored = await conn.fetchrow("SELECT * FROM clearing.statements WHERE statement_id = $1", statement["statement_id"])
    assert stored["confirmed_insured_reqid"] == first_reqid and stored["confirmed_treating_reqid"]
    listed = await handler([_request(settings, {"type": "query_statement", "reqid": f"Q-{uuid.uuid4().hex}",
                                                "statement_id": statement["statement_id"]})])
    assert _result(settings, listed)[0]["data"]["statement"]["confirmed_insured_by"] == "clerk Wang of 810000"
    # Handled again after a restore, a confirmation is recorded at its record's time (1970 here), as
    # first recorded near enough, and so is the settling.
    from yidi.platform import progress

    await _bills_of_one_pair(repo, "202504", 1, ("medfee_sumamt", "fund_pay_sumamt", "hifp_pay"), ids="REDO")
    out = await handler([_request(settings, {"type": "run_month", "reqid": f"R-{uuid.uuid4().hex}", "setlym": "202504"})])
    (redone,) = [orjson.loads(o.value) for o in out if o.topic == settings.topic(CLEARING_STATEMENTS)]
    token = progress.RESTORED.set(True)
    try:
        for side in ("insured", "treating"):
            body = {"type": "confirm", "reqid": f"R-{uuid.uuid4().hex}", "statement_id": redone["statement_id"],
                    "side": side}
            confirmed, _ = _result(settings, await handler([_request(settings, body)]))
    finally:
        progress.RESTORED.reset(token)
    assert confirmed["data"]["confirmed_insured_at"].startswith("1970-01-01"), confirmed
    async with repo.transaction() as conn:
        settled_at = await conn.fetchval("SELECT settled_at FROM clearing.statements WHERE statement_id = $1",
                                         redone["statement_id"])
    assert settled_at.year == 1970
    month_listing = await handler([_request(settings, {"type": "query_month", "reqid": f"Q-{uuid.uuid4().hex}",
                                                       "setlym": month})])
    (shown,) = _result(settings, month_listing)[0]["data"]["statements"]
    assert "confirmed_insured_by" not in shown and shown["confirmed_insured_at"] == first["confirmed_insured_at"]


async def test_a_facilitys_day_is_listed_page_by_page_with_the_days_totals(settings, repo):
    # The whole day was read to list its first thousand, the rest out of reach (session 50: paged).
    from decimal import Decimal

    count = 1203
    amounts, values = _amounts(**BILL)
    async with repo.transaction() as conn:
        await conn.execute(
            f"""INSERT INTO clearing.ledger (setl_id, msgid, request_hash, infno, psn_no, mdtrt_id, insuplc_admdvs,
                    mdtrtarea_admvs, fixmedins_code, setlym, {amounts}, answer, setl_date, clr_period, state)
                SELECT 'SD' || lpad(g::text, 5, '0'), 'MD' || g, 'h', '2207', 'P' || g, 'V' || g, '830000', '730000',
                       CASE WHEN g = 0 THEN 'H-OTHER' ELSE 'H-DAY' END, '202503', {values}, '{{}}'::json,
                       DATE '2025-03-03', '202503', CASE WHEN g % 100 = 7 THEN 'cancelled' ELSE 'settled' END
                FROM generate_series(0, $1::int) AS g""", count)
    handler = ClearingAdminHandler(settings, repo)

    async def page(offset: int) -> dict:
        body = {"type": "query_facility_day", "reqid": f"Q-{uuid.uuid4().hex}", "fixmedins_code": "H-DAY",
                "day": "2025-03-03", "offset": offset}
        result = _result(settings, await handler([_request(settings, body)]))[0]
        assert result["ok"], result
        return result["data"]

    first = await page(0)
    second = await page(first["next_offset"])
    cancelled = len([g for g in range(1, count + 1) if g % 100 == 7])
    assert (first["listed"], first["next_offset"], second["listed"]) == (1000, 1000, count - 1000)
    assert "next_offset" not in second and first["settlements_total"] == second["settlements_total"] == count
    ids = [s["setl_id"] for s in first["settlements"] + second["settlements"]]
    assert len(set(ids)) == count and "SD00000" not in ids  # every one of the facility's, once
    standing = count - cancelled
    assert (first["settled_medfee_sumamt"], first["settled_fund_pay_sumamt"]) == (
        f"{100 * standing}.00", f"{60 * standing}.00")
    assert sum(Decimal(s["medfee_sumamt"]) for s in first["settlements"]) == Decimal(100_000)
