"""Clearing's settlement stage handled again after its Postgres commit, on the real Postgres.

A batch whose Postgres work committed but whose Kafka transaction did not (a crash between the
two, a refused reply topic, a rebalance) is handled again: every record is then one seen before,
and nothing moves again. What the first run published beside the answers must go out again: the
accounts' balances (``prepayment.status``) and a warning the draw set off (``clearing.alerts``),
or the insured region never hears that its prepayment ran low.
"""

from __future__ import annotations

import random
from decimal import Decimal

import orjson
import pytest

from services.clearing.handlers import ClearingHandler
from services.clearing.repository import ClearingRepository
from tests.integration.priced import priced as _priced
from tests.integration.priced import published as _published
from yidi.platform.topics import CLEARING_ALERTS, PREPAYMENT_STATUS

pytestmark = pytest.mark.integration


@pytest.fixture
def repo(clearing_repo) -> ClearingRepository:
    return clearing_repo


async def _fund(repo: ClearingRepository, pair: tuple[str, str], amount: str, ref: str) -> None:
    async with repo.transaction() as conn:
        await repo.move_prepayments(conn, [(*pair, "fund", Decimal(amount), ref)])
        await repo.set_alert_level(conn, *pair, 0)  # as a top-up above the warning re-arms it (admin)


async def test_a_batch_handled_again_publishes_its_balances_and_its_warning_again(settings, repo):
    pair = (f"95{random.randrange(10_000):04d}", f"94{random.randrange(10_000):04d}")
    setl_id = f"S-REPLAY-{random.randrange(10**9)}"
    await _fund(repo, pair, "100.00", f"FUND-{setl_id}")
    handler = ClearingHandler(settings, repo)
    settle = _priced(settings, "settle", f"M-{setl_id}", setl_id, pair, "90.00")  # 10 left of 100: below 20 %

    first = await handler([settle])
    again = await handler([settle])  # its Kafka transaction never committed: handled again

    for out in (first, again):
        (status,) = _published(settings, out, PREPAYMENT_STATUS)
        (alert,) = _published(settings, out, CLEARING_ALERTS)
        assert status["balance"] == "10.00" and alert["balance"] == "10.00", out
        assert len([o for o in out if o.answered]) == 1
    async with repo.transaction() as conn:
        account = await conn.fetchrow("SELECT drawn, alert_level FROM clearing.prepayment_accounts "
                                      "WHERE insuplc_admdvs = $1 AND mdtrtarea_admvs = $2", *pair)
    assert (account["drawn"], account["alert_level"]) == (Decimal("90.00"), 1)  # drawn once, warned once

    # Topped up since: the warning is no longer true, and a resend of the settlement does not repeat it.
    await _fund(repo, pair, "1000.00", f"FUND2-{setl_id}")
    resent = await handler([settle])
    assert [s["balance"] for s in _published(settings, resent, PREPAYMENT_STATUS)] == ["1010.00"]
    assert _published(settings, resent, CLEARING_ALERTS) == []

    # An undoing handled again: its give-back is not made twice, and the balance goes out again.
    cancel = _priced(settings, "cancel", f"M-UNDO-{setl_id}", setl_id, pair, "90.00")
    undone = await handler([cancel])
    undone_again = await handler([cancel])
    for out in (undone, undone_again):
        assert [s["balance"] for s in _published(settings, out, PREPAYMENT_STATUS)] == ["1100.00"], out


async def test_a_settlement_resent_the_next_day_is_filed_under_the_day_it_was_settled(settings, repo):
    # Refused by clearing at 23:58 and sent again in the morning: pricing replays its first answer
    # (setl_time 23:58), and the facility reconciles it under that day (it was filed under the resend's).
    pair = (f"95{random.randrange(10_000):04d}", f"94{random.randrange(10_000):04d}")
    setl_id = f"S-LATE-{random.randrange(10**9)}"
    resent = _priced(settings, "settle", f"M-{setl_id}", setl_id, pair, "10.00",
                     inf_time="2099-12-01 09:00:00", setl_time="2099-11-30 23:58:00")
    await ClearingHandler(settings, repo)([resent])
    async with repo.transaction() as conn:
        day = await conn.fetchval("SELECT setl_date FROM clearing.ledger WHERE setl_id = $1", setl_id)
    assert day.isoformat() == "2099-11-30"


async def test_a_settlement_and_its_duplicate_in_one_batch_warn_once(settings, repo):
    # The duplicate names the move the first made in this very run: not one made before. (The
    # stage stopped on it: the warning was kept with "a move this run made", which it had ruled out.)
    pair = (f"95{random.randrange(10_000):04d}", f"94{random.randrange(10_000):04d}")
    setl_id = f"S-TWICE-{random.randrange(10**9)}"
    await _fund(repo, pair, "100.00", f"FUND-{setl_id}")
    settle = _priced(settings, "settle", f"M-{setl_id}", setl_id, pair, "90.00")
    out = await ClearingHandler(settings, repo)([settle, settle])
    assert len([o for o in out if o.answered]) == 2
    assert [a["balance"] for a in _published(settings, out, CLEARING_ALERTS)] == ["10.00"]


async def test_one_batch_enters_settles_and_undoes_in_order_and_moves_each_account_once(settings, repo):
    """A batch's new ledger rows, its moves and the accounts they change are written in one
    statement, and its undoings after it: a settlement cancelled in the batch that enters it is
    entered, then undone; care at home is entered and moves nothing; each account moves once."""
    pair = (f"95{random.randrange(10_000):04d}", f"94{random.randrange(10_000):04d}")
    other = (f"93{random.randrange(10_000):04d}", f"92{random.randrange(10_000):04d}")
    home = (f"91{random.randrange(10_000):04d}",) * 2
    tag = random.randrange(10**9)
    a, b, c, h = (f"S-{x}-{tag}" for x in "ABCH")
    await _fund(repo, pair, "100.00", f"FUND-{a}")
    batch = [_priced(settings, "settle", f"M-{a}", a, pair, "30.00"),
             _priced(settings, "settle", f"M-{b}", b, pair, "20.00"),
             _priced(settings, "cancel", f"M-{a}-UNDO", a, pair, "30.00"),
             _priced(settings, "settle", f"M-{c}", c, other, "5.00"),
             _priced(settings, "settle", f"M-{h}", h, home, "7.00")]
    out = await ClearingHandler(settings, repo)(batch)
    assert [o["infcode"] for o in (orjson.loads(x.value) for x in out if x.answered)] == [0] * 5
    async with repo.transaction() as conn:
        states = {r["setl_id"]: r["state"] for r in await conn.fetch(
            "SELECT setl_id, state FROM clearing.ledger WHERE setl_id = ANY($1::text[])", [a, b, c, h])}
        moves = sorted((r["ref"], r["kind"], r["amount"]) for r in await conn.fetch(
            "SELECT ref, kind, amount FROM clearing.prepayment_moves WHERE ref = ANY($1::text[])", [a, b, c, h]))
        accounts = {(r["insuplc_admdvs"], r["mdtrtarea_admvs"]): (r["drawn"], r["given_back"], r["moves"])
                    for r in await conn.fetch(
                        """SELECT a.* FROM clearing.prepayment_accounts a
                           JOIN unnest($1::text[], $2::text[]) AS k(i, t)
                             ON a.insuplc_admdvs = k.i AND a.mdtrtarea_admvs = k.t""",
                        [pair[0], other[0], home[0]], [pair[1], other[1], home[1]])}
    assert states == {a: "cancelled", b: "settled", c: "settled", h: "settled"}
    assert moves == [(a, "draw", Decimal("30.00")), (a, "give_back", Decimal("30.00")),
                     (b, "draw", Decimal("20.00")), (c, "draw", Decimal("5.00"))]
    # Each move counts (the version of the balance pricing mirrors): the funding, then the batch's
    # two draws and one give-back; care at home has no account.
    assert accounts == {pair: (Decimal("50.00"), Decimal("30.00"), 4), other: (Decimal("5.00"), Decimal("0"), 1)}
    assert sorted((s["insuplc_admdvs"], s["balance"]) for s in _published(settings, out, PREPAYMENT_STATUS)) == [
        (other[0], "-5.00"), (pair[0], "80.00")]


async def test_an_accounts_version_counts_its_moves_however_they_were_batched(settings, repo):
    """The balance status's version (the account's moves) is what pricing keeps the highest of. A
    batch handled again after a restore takes the same moves in fewer, larger batches: counted per
    statement, its versions came out lower than those published before, and pricing dropped every
    new balance until they passed them."""
    tag = random.randrange(10**9)
    versions = []
    for batches in ((3,), (1, 1, 1)):
        pair = (f"95{random.randrange(10_000):04d}", f"94{random.randrange(10_000):04d}")
        await _fund(repo, pair, "100.00", f"FUND-{len(batches)}-{tag}")
        settlements = [_priced(settings, "settle", f"M-{n}-{len(batches)}-{tag}", f"S-{n}-{len(batches)}-{tag}", pair,
                               "10.00") for n in range(3)]
        handler, out = ClearingHandler(settings, repo), []
        for size in batches:
            out += await handler(settlements[:size])
            settlements = settlements[size:]
        versions.append(max(s["version"] for s in _published(settings, out, PREPAYMENT_STATUS)))
    assert versions == [4, 4]  # the funding and three draws, in one batch or in three


async def test_a_batch_of_a_settlement_seen_before_and_new_care_at_home_enters_it_and_moves_nothing(settings, repo):
    """No move to apply, one to report again (the settlement seen before) and a new ledger row
    (care at home, which draws nothing): the row is entered, nothing moves, the account's
    balance goes out again."""
    pair = (f"95{random.randrange(10_000):04d}", f"94{random.randrange(10_000):04d}")
    home = (f"91{random.randrange(10_000):04d}",) * 2
    tag = random.randrange(10**9)
    seen, h = f"S-SEEN-{tag}", f"S-HOME-{tag}"
    await _fund(repo, pair, "100.00", f"FUND-{seen}")
    handler = ClearingHandler(settings, repo)
    first = await handler([_priced(settings, "settle", f"M-{seen}", seen, pair, "40.00")])
    out = await handler([_priced(settings, "settle", f"M-{seen}", seen, pair, "40.00"),
                         _priced(settings, "settle", f"M-{h}", h, home, "7.00")])
    assert [o.value for o in out if o.answered][0] == [o.value for o in first if o.answered][0]
    async with repo.transaction() as conn:
        assert await conn.fetchval("SELECT state FROM clearing.ledger WHERE setl_id = $1", h) == "settled"
        assert await conn.fetchval("SELECT count(*) FROM clearing.prepayment_moves WHERE ref = ANY($1::text[])",
                                   [seen, h]) == 1
    assert [(s["insuplc_admdvs"], s["balance"]) for s in _published(settings, out, PREPAYMENT_STATUS)] == [
        (pair[0], "60.00")]
