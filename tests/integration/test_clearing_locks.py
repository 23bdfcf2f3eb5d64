"""Clearing's batch locks, taken in one statement, keep their meaning on the real Postgres.

A settlement batch takes the periods lock shared and its persons' locks in one round trip
(``ClearingRepository.lock_batch``), then reads the closed periods and its ledger rows in another
(``batch_reads``). Batches of other persons run side by side; a batch of the same person waits; a
month's clearing (the periods lock exclusive) waits for every batch in flight, and a batch that
waited for a month's clearing sees the month it closed.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from services.clearing.repository import ClearingRepository
from tests.integration.waiting import until
from yidi.platform.db import create_pool

pytestmark = pytest.mark.integration

FAR_MONTH = "209912"


async def _waiting_for_a_lock(pool, pid: int) -> bool:
    return bool(await pool.fetchval(
        "SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND NOT granted", pid))


async def _start(repo: ClearingRepository, work) -> tuple[asyncio.Task, int]:
    """Run ``work(conn)`` in a transaction of its own; returns the task and its backend's pid."""
    pid: asyncio.Future = asyncio.get_running_loop().create_future()

    async def run():
        async with repo.transaction() as conn:
            pid.set_result(conn.get_server_pid())
            return await work(conn)

    task = asyncio.create_task(run())
    return task, await asyncio.wait_for(asyncio.shield(pid), timeout=10)


@pytest.fixture
async def clearing_db(clearing_of_its_own):
    """Clearing's schema on the real Postgres, in a database of the test's own: its pool and repository."""
    own, _ = clearing_of_its_own
    pool = await create_pool(own.database_url, size=5)  # clearing_of_its_own migrated it
    try:
        yield pool, ClearingRepository(pool)
    finally:
        await pool.close()


async def test_a_batch_holds_its_persons_and_the_periods_shared(clearing_db):
    pool, repo = clearing_db
    async with repo.transaction() as first:
        await repo.lock_batch(first, [b"P-LOCK-1", b"P-LOCK-2"])
        cleared, rows, _ = await repo.batch_reads(first, ["no-such-msgid"], ["no-such-setl"])
        assert rows == [] and cleared.through is None

        # Another person: runs at once, beside the first batch (the periods lock is shared).
        other, _ = await _start(repo, lambda conn: repo.lock_batch(conn, [b"P-LOCK-3"]))
        await asyncio.wait_for(other, timeout=10)
        # The same person, and a month's clearing: both wait, on an advisory lock.
        same_person, same_pid = await _start(repo, lambda conn: repo.lock_batch(conn, [b"P-LOCK-2"]))
        month, month_pid = await _start(repo, repo.cleared_through)
        await until(lambda: _waiting_for_a_lock(pool, same_pid), timeout=10)
        await until(lambda: _waiting_for_a_lock(pool, month_pid), timeout=10)
        assert not same_person.done() and not month.done()
    # The first batch committed: both go on.
    await asyncio.wait_for(asyncio.gather(same_person, month), timeout=10)


async def test_a_batch_that_waited_for_a_months_clearing_sees_the_month_closed(clearing_db):
    pool, repo = clearing_db

    async def settle(conn):
        await repo.lock_batch(conn, [b"P-LOCK-4"])
        cleared, _, _ = await repo.batch_reads(conn, [], [])
        return cleared.through

    async with repo.transaction() as clearing:
        assert await repo.cleared_through(clearing) is None
        batch, batch_pid = await _start(repo, settle)
        await until(lambda: _waiting_for_a_lock(pool, batch_pid), timeout=10)
        await clearing.execute(
            "INSERT INTO clearing.periods (setlym, state, closed_at) VALUES ($1, 'closed', now())", FAR_MONTH)
    # Its read came after the lock: the month the clearing closed meanwhile is the latest closed.
    assert await asyncio.wait_for(batch, timeout=10) == FAR_MONTH


async def test_a_3202_answer_lists_at_most_1000_differences_within_a_byte_budget_and_counts_them_all(
        settings, clearing_db, monkeypatch):
    # A facility's 3202 for a big month lists thousands of differences; an answer over 1 MiB cannot be
    # a Kafka record (and would stop clearing-admin): the answer lists the first 1000, fewer when
    # they would pass LISTED_BYTES (ids of any characters: 4 bytes each in UTF-8; session 49).
    from services.clearing import admin
    from services.clearing.admin import LISTED_BYTES, MAX_LISTED, ClearingAdminHandler
    from yidi.contracts.clearing import ReconcileDetailsInput

    _, repo = clearing_db

    async def answer(setl_id) -> dict:  # noqa: ANN001
        body = ReconcileDetailsInput.model_validate({
            "stmt_begndate": "2099-12-01", "stmt_enddate": "2099-12-31",
            "details": [{"setl_id": setl_id(i), "medfee_sumamt": "1.00", "fund_pay_sumamt": "0.50",
                         "acct_pay": "0.00"} for i in range(MAX_LISTED + 5)],
        })
        async with repo.transaction() as conn:
            return await ClearingAdminHandler(settings, repo)._reconcile_details(conn, "H-NO-SUCH-FACILITY", body)

    output = await answer(lambda i: f"S-NOT-ON-PLATFORM-{i}")
    assert output["differences_total"] == MAX_LISTED + 5 and len(output["differences"]) == MAX_LISTED
    assert f"the first {MAX_LISTED} are listed" in output["stmt_rslt_dscr"]
    assert len(orjson.dumps(output)) < 1024 * 1024
    # Wide ids: the list stops at the budget (here made small enough for them to reach it).
    monkeypatch.setattr(admin, "LISTED_BYTES", 100_000)
    wide = await answer(lambda i: f"{i:04d}" + "\U0001F600" * 60)  # 244 bytes each
    listed = wide["differences"]
    assert wide["differences_total"] == MAX_LISTED + 5 and 0 < len(listed) < MAX_LISTED
    assert f"the first {len(listed)} are listed" in wide["stmt_rslt_dscr"]
    assert sum(len(orjson.dumps(d)) + 1 for d in listed) <= 100_000
    assert [d["setl_id"] for d in listed] == sorted(d["setl_id"] for d in listed)  # the first ones, in order
    assert LISTED_BYTES + 64 * 1024 < 1024 * 1024  # the rest of the answer fits beside the list


async def test_an_undoing_of_a_settlement_the_ledger_lacks_is_answered_as_an_undoing(clearing_db, settings):
    # It was answered "could not record this settlement ... send the same request again", which
    # replays the same failure: pricing has undone it already.
    from services.clearing.handlers import ClearingHandler
    from yidi.platform.kafka import Incoming

    _, repo = clearing_db
    handler = ClearingHandler(settings, repo)
    request = {"infno": "2208", "msgid": "M-UNDO-LOST-1", "mdtrtarea_admvs": "110000", "insuplc_admdvs": "131000",
               "inf_time": "2099-12-01 10:00:00", "fixmedins_code": "H11010500001", "reply_to": "settlement.results"}
    answer = {"infcode": 0, "inf_refmsgid": "YD1", "refmsg_time": "1", "respond_time": "1", "msgid": "M-UNDO-LOST-1",
              "infno": "2208", "output": {"setlinfo": {"setl_id": "S-NOT-IN-LEDGER", "state": "cancelled"}}}
    priced = {"kind": "cancel", "request": request, "request_hash": "h", "request_ts_ms": 0, "answer": answer,
              "facts": None, "target_setl_id": "S-NOT-IN-LEDGER"}
    out = await handler([Incoming(settings.topic("settlement.priced"), 0, 1, b"P-UNDO-LOST", orjson.dumps(priced), 0)])
    (sent,) = [o for o in out if o.answered]
    told = orjson.loads(sent.value)
    assert told["err_code"] == "INTERNAL_ERROR" and "undoing of settlement S-NOT-IN-LEDGER" in told["err_msg"]
    assert "do not settle the visit again" in told["err_msg"] and "Send the same request" not in told["err_msg"]
    assert [o.topic for o in out if not o.answered] == [settings.topic("settlement.priced.dlq")]
