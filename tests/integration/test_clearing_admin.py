"""Clearing's admin stage on the real Postgres: requests that must be refused, or answered where
they ask, rather than stop the stage or go unheard."""

from __future__ import annotations

import random
import uuid

import orjson
import pytest

from services.clearing.admin import ClearingAdminHandler
from yidi.platform.kafka import Incoming

pytestmark = pytest.mark.integration


@pytest.fixture
def handler(settings, clearing_repo) -> ClearingAdminHandler:
    return ClearingAdminHandler(settings, clearing_repo)


def _pair() -> dict[str, str]:
    return {"insuplc_admdvs": f"95{random.randrange(10_000):04d}", "mdtrtarea_admvs": f"94{random.randrange(10_000):04d}"}


async def _call(settings, handler, body: dict) -> list[tuple[str, dict]]:
    body = {"reqid": f"R-{uuid.uuid4().hex}"} | body
    out = await handler([Incoming(settings.topic("clearing.requests"), 0, 1, body["reqid"].encode(), orjson.dumps(body), 0)])
    return [(o.topic, orjson.loads(o.value)) for o in out]


async def test_a_funding_past_what_an_amount_may_be_is_refused_and_the_stage_goes_on(settings, handler):
    # Two fundings of 999,999,999,999.99 made a balance no status message may carry: the stage
    # failed on every try of it, and every clearing request behind it waited.
    pair = _pair()
    ((_, first),) = [(t, m) for t, m in await _call(settings, handler, {"type": "fund", "amount": "999999999999.99", **pair})
                     if "reqid" in m]
    ((_, second),) = [(t, m) for t, m in await _call(settings, handler, {"type": "fund", "amount": "1.00", **pair})
                      if "reqid" in m]
    ((_, query),) = await _call(settings, handler, {"type": "query_prepayment", **pair})
    assert first["ok"] and not second["ok"] and "more than an amount may be" in second["reason"]
    assert query["ok"] and query["data"]["funded"] == "999999999999.99"


async def test_a_request_sent_again_to_another_reply_topic_is_answered_there(settings, handler):
    pair = _pair()
    request = {"type": "fund", "reqid": f"R-{uuid.uuid4().hex}", "amount": "100.00", **pair}
    first = await _call(settings, handler, request)
    again = await _call(settings, handler, request | {"reply_to": "gw.clerk.moved"})
    results = lambda out: [(t, m["ok"]) for t, m in out if "reqid" in m]  # noqa: E731
    assert results(first) == [(settings.topic("clearing.results"), True)]
    assert results(again) == [(settings.topic("gw.clerk.moved"), True)]


async def test_a_prepayment_for_care_at_home_is_refused(settings, handler):
    # Care in the insured region, a county of it included (area codes nest), draws on no
    # prepayment: money advanced to such an account could never be drawn nor taken back.
    city = f"95{random.randrange(1, 100):02d}00"
    for treating in (city, city[:4] + "07"):
        pair = {"insuplc_admdvs": city, "mdtrtarea_admvs": treating}
        ((_, answer),) = [(t, m) for t, m in await _call(settings, handler, {"type": "fund", "amount": "100.00", **pair})
                          if "reqid" in m]
        assert not answer["ok"] and "care at home" in answer["reason"], answer
        query = [m for _, m in await _call(settings, handler, {"type": "query_prepayment", **pair}) if "reqid" in m]
        assert not query[0]["ok"], query  # no account was opened


async def test_each_request_answered_is_counted_by_type_and_outcome_once_committed(settings, handler):
    from prometheus_client import REGISTRY

    def count(kind: str, outcome: str) -> float:
        return REGISTRY.get_sample_value("yidi_clearing_requests_total", {"type": kind, "outcome": outcome}) or 0.0

    async def committed(body: dict | bytes) -> None:
        """The handler's outputs for one request, and the stage's commit of them (their on_commit)."""
        value = body if isinstance(body, bytes) else orjson.dumps({"reqid": f"R-{uuid.uuid4().hex}"} | body)
        out = await handler([Incoming(settings.topic("clearing.requests"), 0, 1, b"k", value, 0)])
        for o in out:
            if o.on_commit is not None:
                o.on_commit()

    pair = _pair()
    keys = [(k, o) for k in ("fund", "query_prepayment", "unknown") for o in ("ok", "refused", "stored", "invalid")]
    before = {key: count(*key) for key in keys}
    request = {"type": "fund", "reqid": f"R-{uuid.uuid4().hex}", "amount": "100.00", **pair}
    await committed(request)
    await committed(request)  # the same reqid again: its stored result
    await committed(request | {"amount": "5.00"})  # the reqid reused for another request
    await committed({"type": "query_prepayment", **pair})
    await committed({"type": "fund", "amount": "-1", **pair})  # does not validate: answered ok false
    await committed(b'{"reqid": "R-broken", "type": "no_such_type"}')
    handled = await handler([Incoming(settings.topic("clearing.requests"), 0, 1, b"k",
                                      orjson.dumps({"reqid": f"R-{uuid.uuid4().hex}", "type": "query_prepayment", **pair}), 0)])
    assert handled  # answered, but its batch never committed: not counted
    assert {key: count(*key) - n for key, n in before.items() if count(*key) - n} == {
        ("fund", "ok"): 1, ("fund", "stored"): 1, ("fund", "refused"): 1, ("fund", "invalid"): 1,
        ("query_prepayment", "ok"): 1, ("unknown", "invalid"): 1,
    }


def _reconcile(request_ts_ms: int, begin: str, end: str) -> dict:
    return {"type": "reconcile", "request_ts_ms": request_ts_ms, "request": {
        "infno": "3201", "msgid": f"H11000000001{uuid.uuid4().hex[:18].upper()}", "mdtrtarea_admvs": "110000",
        "inf_time": "2026-12-01 10:30:00", "fixmedins_code": "H11000000001",
        "input": {"data": {"stmt_begndate": begin, "stmt_enddate": end, "medfee_sumamt": "0.00",
                           "fund_pay_sumamt": "0.00", "acct_pay": "0.00", "fixmedins_setl_cnt": 0}}}}


async def test_requests_whose_values_stopped_the_stage_are_refused_and_it_goes_on(settings, handler):
    # Each stopped clearing-admin at every start, and every clearing request and 3201/3202 behind
    # it waited (a review, session 35): a month of the year 0 (the month arithmetic raised), an
    # offset past 64 bits (written back in the answer), a 3201 passed on with a request time that
    # is no moment (its answer's respond_time). A period of decades read every settlement of the
    # facility: past the statement timeout it was retried for ever.
    for body in ({"type": "run_month", "setlym": "000001"}, {"type": "run_month", "setlym": "999912"},
                 {"type": "query_month", "setlym": "202610", "offset": "18446744073709551616"}):
        out = dict(await _call(settings, handler, body))
        assert set(out) == {settings.topic("clearing.results"), settings.topic("clearing.requests.dlq")}, body
        result = out[settings.topic("clearing.results")]
        assert not result["ok"] and "does not validate" in result["reason"], body
    out = dict(await _call(settings, handler, _reconcile(10**17, "2026-11-01", "2026-11-30")))
    assert set(out) == {settings.topic("settlement.results"), settings.topic("clearing.requests.dlq")}
    assert out[settings.topic("settlement.results")]["err_code"] == "INTERNAL_ERROR"  # eligibility passed it on so

    ((topic, answer),) = await _call(settings, handler, _reconcile(1_764_556_200_000, "2000-01-01", "2026-11-30"))
    assert topic == settings.topic("settlement.results") and answer["err_code"] == "INVALID_INPUT"
    assert "longer than 366 days; reconcile it in shorter periods" in answer["err_msg"]
    ((_, answer),) = await _call(settings, handler, _reconcile(1_764_556_200_000, "2025-12-01", "2026-11-30"))
    assert answer["infcode"] == 0 and answer["output"]["stmt_rslt"] == "0"


async def test_a_reconciliation_past_the_statement_timeout_is_refused_and_its_batch_goes_on(settings, clearing_repo):
    # Past the pool's 30 s, asyncpg's timeout was taken for Postgres away: the batch was retried for
    # ever, and clearing.requests (one partition) waited behind it (a review, session 35). Here the
    # reconciliation's read is made to outlast a timeout of 0.3 s.
    class Slow(ClearingAdminHandler):
        async def _reconcile_totals(self, conn, facility, body):
            await conn.execute("SELECT pg_sleep(5)", timeout=0.3)
            raise AssertionError("not reached")

    pair = _pair()
    bodies = [{"reqid": f"R-{uuid.uuid4().hex}"} | _reconcile(1_764_556_200_000, "2026-11-01", "2026-11-30"),
              {"reqid": f"R-{uuid.uuid4().hex}", "type": "fund", "amount": "100.00", **pair}]
    out = await Slow(settings, clearing_repo)([
        Incoming(settings.topic("clearing.requests"), 0, n, b["reqid"].encode(), orjson.dumps(b), 0)
        for n, b in enumerate(bodies)])
    answers = {o.topic: orjson.loads(o.value) for o in out if o.topic.endswith(("settlement.results", "clearing.results"))}
    refused = answers[settings.topic("settlement.results")]
    assert refused["err_code"] == "INVALID_INPUT" and "reconcile it in shorter periods" in refused["err_msg"]
    assert answers[settings.topic("clearing.results")]["ok"]  # the fund after it, in the same transaction
    ((_, query),) = await _call(settings, ClearingAdminHandler(settings, clearing_repo), {"type": "query_prepayment", **pair})
    assert query["data"]["funded"] == "100.00"


async def test_a_funding_sent_again_publishes_the_accounts_status_as_it_is_now(settings, handler):
    # A stored request sent again re-published its status as stored: an old balance and version on
    # the compacted status topic, the last record of its key a mirror rebuilt from the topic reads
    # (a review, session 37).
    pair = _pair()
    first = {"type": "fund", "reqid": f"R-{uuid.uuid4().hex}", "amount": "100.00", **pair}
    status = settings.topic("clearing.prepayment-status")
    (before,) = [m for t, m in await _call(settings, handler, first) if t == status]
    (later,) = [m for t, m in await _call(settings, handler, {"type": "fund", "amount": "50.00", **pair}) if t == status]
    (again,) = [m for t, m in await _call(settings, handler, first) if t == status]
    assert (before["balance"], later["balance"]) == ("100.00", "150.00") and later["version"] > before["version"]
    assert (again["balance"], again["version"]) == (later["balance"], later["version"])


async def test_a_month_run_answered_before_a_restore_is_judged_on_the_day_it_was_sent(settings, handler, clearing_repo):
    """Handled again after the database was restored (yidi.platform.progress), a month run sent
    before its month ended, and refused then, is refused again: judged today it would close and
    total the month, its statements never published (the batch's outputs are dropped)."""
    from datetime import datetime

    from yidi.domain.codes import BUSINESS_TZ
    from yidi.platform import progress

    month = f"19{random.randrange(10, 99)}{random.randrange(1, 13):02d}"
    sent = datetime(int(month[:4]), int(month[4:]), 15, 10, 0, tzinfo=BUSINESS_TZ)
    body = {"type": "run_month", "reqid": f"R-{uuid.uuid4().hex}", "setlym": month}
    record = Incoming(settings.topic("clearing.requests"), 0, 1, body["reqid"].encode(), orjson.dumps(body),
                      int(sent.timestamp() * 1000))
    with progress.restored(True):
        out = await handler([record])
    ((result),) = [orjson.loads(o.value) for o in out if o.topic == settings.topic("clearing.results")]
    assert not result["ok"] and f"month {month} has not ended" in result["reason"]
    async with clearing_repo.transaction() as conn:
        assert await conn.fetchval("SELECT count(*) FROM clearing.periods WHERE setlym = $1", month) == 0


async def test_a_funding_sent_again_warns_again_only_while_the_warning_is_still_true(settings, handler, clearing_repo):
    # A fund request that left its account low (its new warn_share above the balance) published a
    # warning; the same request sent again published it again, though the account had since been
    # topped up: the region was told its account was low when it was not (left by session 46).
    from decimal import Decimal

    from services.clearing.handlers import ClearingHandler
    from tests.integration.priced import priced

    pair = _pair()
    insured_treating = (pair["insuplc_admdvs"], pair["mdtrtarea_admvs"])
    await _call(settings, handler, {"type": "fund", "amount": "100.00", **pair})
    tag = uuid.uuid4().hex[:12]
    await ClearingHandler(settings, clearing_repo)(
        [priced(settings, "settle", f"M-{tag}", f"S-{tag}", insured_treating, "50.00")])  # 50 left: healthy at 20 %
    low = {"type": "fund", "reqid": f"R-{uuid.uuid4().hex}", "amount": "10.00", "warn_share": "0.90", **pair}

    def warnings(out: list[tuple[str, dict]]) -> list[str]:
        return [m["balance"] for t, m in out if t == settings.topic("clearing.alerts")]

    assert warnings(await _call(settings, handler, low)) == ["60.00"]  # below 90 % of 110
    assert warnings(await _call(settings, handler, low)) == ["60.00"]  # sent again: still true, so again
    assert warnings(await _call(settings, handler, {"type": "fund", "amount": "1000.00", **pair})) == []
    again = await _call(settings, handler, low)
    assert warnings(again) == []  # topped up since: news no longer true
    assert [m["ok"] for t, m in again if "reqid" in m] == [True]  # the stored result still answered
    statuses = [m for t, m in again if t == settings.topic("clearing.prepayment-status")]
    assert [Decimal(s["balance"]) for s in statuses] == [Decimal("1060.00")]  # the balance now, as before


async def test_a_batch_moving_two_accounts_locks_them_in_the_settlement_stages_order(settings, handler):
    # A batch [fund the second account, fund the first] took the second's lock, then waited for the
    # first, which a settlement batch held while it waited for the second: a deadlock, one of them
    # aborted after a second and tried again (a review, session 48). Now the batch waits for the
    # first before it takes the second, as the settlement stage's batches do.
    import asyncio

    import asyncpg

    from tests.integration.waiting import until

    first = {"insuplc_admdvs": "961000", "mdtrtarea_admvs": f"94{random.randrange(10_000):04d}"}
    second = {"insuplc_admdvs": "962000", "mdtrtarea_admvs": first["mdtrtarea_admvs"]}
    for pair in (first, second):
        await _call(settings, handler, {"type": "fund", "amount": "100.00", **pair})
    bodies = [{"type": "fund", "reqid": f"R-{uuid.uuid4().hex}", "amount": amount, **pair}
              for amount, pair in (("1.00", second), ("2.00", first))]
    records = [Incoming(settings.topic("clearing.requests"), 0, offset, b["reqid"].encode(), orjson.dumps(b), 0)
               for offset, b in enumerate(bodies, 1)]
    where = "SELECT 1 FROM clearing.prepayment_accounts WHERE insuplc_admdvs = $1 AND mdtrtarea_admvs = $2 FOR UPDATE"
    settlement = await asyncpg.connect(settings.database_url)
    try:
        await settlement.execute("BEGIN")  # a settlement batch's transaction, holding the first account
        await settlement.execute(where, first["insuplc_admdvs"], first["mdtrtarea_admvs"])
        batch = asyncio.ensure_future(handler(records))

        async def admin_waits() -> bool:  # a backend blocked by this one: the admin batch (not another test's)
            return await settlement.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))") > 0

        await until(admin_waits, timeout=10)
        # The settlement batch's next account: free, since the admin batch waits for the first.
        await settlement.execute(where.replace("FOR UPDATE", "FOR UPDATE NOWAIT"), second["insuplc_admdvs"],
                                 second["mdtrtarea_admvs"])
        await settlement.execute("COMMIT")
        out = await asyncio.wait_for(batch, 30)
    finally:
        await settlement.close()
    results = [orjson.loads(o.value) for o in out]
    assert [r["ok"] for r in results if "reqid" in r] == [True, True]


async def test_a_months_run_totals_before_the_batch_locks_the_accounts_its_fundings_move(clearing_of_its_own,
                                                                                          monkeypatch):
    # A run goes first so that its totals (tens of seconds at national scale) hold no account's
    # lock a settlement batch would wait for; the accounts' locks taken at the transaction's start
    # held them all through it (the review of session 48's diff).
    from services.clearing import admin

    settings, repo = clearing_of_its_own
    handler = ClearingAdminHandler(settings, repo)
    order: list[str] = []
    lock, apply = admin._lock_accounts, ClearingAdminHandler._apply

    async def locking(conn, requests):
        order.append("lock accounts")
        await lock(conn, requests)

    async def applying(self, conn, record, request, refused):
        order.append(request.type)
        return await apply(self, conn, record, request, refused)

    monkeypatch.setattr(admin, "_lock_accounts", locking)
    monkeypatch.setattr(ClearingAdminHandler, "_apply", applying)
    bodies = [{"type": "fund", "amount": "1.00", "insuplc_admdvs": "962000", "mdtrtarea_admvs": "941000"},
              {"type": "fund", "amount": "2.00", "insuplc_admdvs": "961000", "mdtrtarea_admvs": "941000"},
              {"type": "run_month", "setlym": "202510"}]
    records = [Incoming(settings.topic("clearing.requests"), 0, offset, f"R-{offset}".encode(),
                        orjson.dumps(b | {"reqid": f"R-{uuid.uuid4().hex}"}), 0) for offset, b in enumerate(bodies, 1)]
    out = [orjson.loads(o.value) for o in await handler(records)]
    assert order == ["run_month", "lock accounts", "fund", "fund"]
    assert [r["ok"] for r in out if "reqid" in r and "ok" in r] == [True, True, True], out


async def test_a_withdrawal_takes_back_at_most_the_balance_once_per_reqid(settings, handler, clearing_repo):
    # R3: an insured region takes back part of its prepayment (a funding made in error, or the
    # advance set lower at the year's review). Before session 50 there was no way to: a funding
    # cannot be negative.
    from decimal import Decimal

    pair = _pair()
    status, alerts = settings.topic("clearing.prepayment-status"), settings.topic("clearing.alerts")

    def result(out: list[tuple[str, dict]]) -> dict:
        (found,) = [m for t, m in out if t == settings.topic("clearing.results")]
        return found

    missing = result(await _call(settings, handler, {"type": "withdraw", "amount": "1.00", **pair}))
    assert not missing["ok"] and "no prepayment account" in missing["reason"], missing
    assert not result(await _call(settings, handler, {"type": "query_prepayment", **pair}))["ok"]  # none opened

    await _call(settings, handler, {"type": "fund", "amount": "100.00", "warn_share": "0.20", **pair})
    async with clearing_repo.transaction() as conn:  # a settlement's draw
        await clearing_repo.move_prepayments(conn, [(*pair.values(), "draw", Decimal("60.00"), f"S-{uuid.uuid4().hex}")])

    too_much = result(await _call(settings, handler, {"type": "withdraw", "amount": "40.01", **pair}))
    assert not too_much["ok"] and "holds 40.00 of the 100.00 funded; at most 40.00 can be withdrawn" in too_much["reason"]
    assert too_much["data"]["balance"] == "40.00"

    async with clearing_repo.transaction() as conn:  # the region told that bills are refused (refuse policy)
        await conn.execute("UPDATE clearing.prepayment_accounts SET refusal_warned = true "
                           "WHERE insuplc_admdvs = $1 AND mdtrtarea_admvs = $2", *pair.values())
    request = {"type": "withdraw", "reqid": f"R-{uuid.uuid4().hex}", "amount": "40.00", **pair}
    out = await _call(settings, handler, request)
    async with clearing_repo.transaction() as conn:  # a withdrawal lifts nothing: not told again
        assert await conn.fetchval("SELECT refusal_warned FROM clearing.prepayment_accounts "
                                   "WHERE insuplc_admdvs = $1 AND mdtrtarea_admvs = $2", *pair.values())
    taken = result(out)
    assert taken["ok"], taken
    assert (taken["data"]["funded"], taken["data"]["drawn"], taken["data"]["balance"]) == ("60.00", "60.00", "0.00")
    (published,) = [m for t, m in out if t == status]
    assert published["balance"] == "0.00"  # pricing's mirror learns it (refuse policy)
    (warning,) = [m for t, m in out if t == alerts]  # 0 left of the 60.00 funded: below its 20 %
    assert warning["insuplc_admdvs"] == pair["insuplc_admdvs"]

    again = await _call(settings, handler, request)  # the same reqid: its stored answer, nothing taken twice
    assert result(again)["ok"]
    query = result(await _call(settings, handler, {"type": "query_prepayment", **pair}))
    assert (query["data"]["funded"], query["data"]["balance"]) == ("60.00", "0.00")
    assert not result(await _call(settings, handler, {"type": "withdraw", "amount": "0.01", **pair}))["ok"]


async def test_a_withdrawal_waits_for_a_settlement_batch_drawing_on_the_account(settings, handler, clearing_repo):
    # The balance is read locked: read while a settlement batch's draw was uncommitted, the
    # withdrawal would have taken what the draw then took too, leaving the account short.
    import asyncio
    from decimal import Decimal

    pair = _pair()
    await _call(settings, handler, {"type": "fund", "amount": "100.00", **pair})
    async with clearing_repo.transaction() as conn:
        await clearing_repo.move_prepayments(conn, [(*pair.values(), "draw", Decimal("70.00"), f"S-{uuid.uuid4().hex}")])
        withdrawing = asyncio.ensure_future(_call(settings, handler, {"type": "withdraw", "amount": "100.00", **pair}))
        await asyncio.sleep(1.0)
        assert not withdrawing.done()  # waits for the draw's transaction
    ((_, answer),) = [(t, m) for t, m in await withdrawing if t == settings.topic("clearing.results")]
    assert not answer["ok"] and "at most 30.00 can be withdrawn" in answer["reason"], answer


async def test_a_withdrawal_handled_again_after_a_restore_is_judged_on_what_is_funded_and_said(
        settings, handler, clearing_repo, caplog):
    # After yidi-recover the settlement stage redoes its draws beside this stage: the balance then
    # is not the one the withdrawal was judged on. Judged on what is funded (this stage's alone), a
    # withdrawal answered ok is taken again; one the balance as redone so far would refuse is said.
    import logging
    from decimal import Decimal

    from yidi.platform import progress

    pair = _pair()
    await _call(settings, handler, {"type": "fund", "amount": "100.00", **pair})
    async with clearing_repo.transaction() as conn:  # a draw redone before the withdrawal is
        await clearing_repo.move_prepayments(conn, [(*pair.values(), "draw", Decimal("80.00"), f"S-{uuid.uuid4().hex}")])
    caplog.set_level(logging.WARNING, logger="services.clearing.admin")
    token = progress.RESTORED.set(True)
    try:
        out = await _call(settings, handler, {"type": "withdraw", "amount": "50.00", **pair})
        too_much = await _call(settings, handler, {"type": "withdraw", "amount": "50.01", **pair})
    finally:
        progress.RESTORED.reset(token)
    (taken,) = [m for t, m in out if t == settings.topic("clearing.results")]
    assert taken["ok"] and (taken["data"]["funded"], taken["data"]["balance"]) == ("50.00", "-30.00"), taken
    (refused,) = [m for t, m in too_much if t == settings.topic("clearing.results")]
    assert not refused["ok"] and "at most 50.00 can be withdrawn" in refused["reason"], refused  # past what is funded
    said = [r.getMessage() for r in caplog.records if "handled again after a restore and taken" in r.getMessage()]
    assert len(said) == 1 and "balance as redone so far is 20.00" in said[0], said
    # Refused now past what is funded: said too (one answered ok before may be refused now, a
    # withdrawal taken above having lowered what is funded).
    refused_said = [r.getMessage() for r in caplog.records if "handled again after a restore and refused" in r.getMessage()]
    assert len(refused_said) == 1 and "(funded 50.00)" in refused_said[0], refused_said
