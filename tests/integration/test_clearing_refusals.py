"""Under YIDI_PREPAYMENT_POLICY=refuse, clearing warns an insured region whose prepayment refuses
bills, on the real Postgres.

Pricing refuses a bill larger than what is left and answers it; clearing never saw such a bill,
so an account that refused bills while above its warning line (a small account, a large inpatient
bill) raised no PrepaymentAlert (a review, session 46). Pricing now passes on a notice
(a RefusalNotice on settlement.priced), and clearing warns the region once, until a top-up re-arms it.
"""

from __future__ import annotations

import random
import uuid
from decimal import Decimal

import orjson
import pytest

from services.clearing.admin import ClearingAdminHandler
from services.clearing.handlers import ClearingHandler
from services.clearing.repository import ClearingRepository
from tests.integration.priced import priced, published
from yidi.contracts.internal import RefusalNotice
from yidi.platform.kafka import Incoming
from yidi.platform.topics import CLEARING_ALERTS, PREPAYMENT_STATUS

pytestmark = pytest.mark.integration


def notice(settings, msgid: str, pair: tuple[str, str], draw: str, left: str, ts_ms: int = 1_000) -> Incoming:
    """Pricing's notice of a bill it refused PREPAYMENT_EXHAUSTED, as pricing writes it."""
    value = RefusalNotice(insuplc_admdvs=pair[0], mdtrtarea_admvs=pair[1], draw=Decimal(draw), left=Decimal(left),
                          ref=f"{msgid}@{ts_ms}")
    return Incoming(settings.topic("settlement.priced"), 0, 1, b"P-" + msgid.encode(),
                    orjson.dumps(value.model_dump(mode="json")), 0)


async def fund(settings, repo: ClearingRepository, pair: tuple[str, str], amount: str) -> list[dict]:
    """A top-up through clearing's admin stage; what it published on clearing.alerts."""
    body = {"type": "fund", "reqid": f"R-{uuid.uuid4().hex}", "insuplc_admdvs": pair[0], "mdtrtarea_admvs": pair[1],
            "amount": amount}
    request = Incoming(settings.topic("clearing.requests"), 0, 1, body["reqid"].encode(), orjson.dumps(body), 0)
    out = await ClearingAdminHandler(settings, repo)([request])
    assert any(orjson.loads(o.value).get("ok") for o in out if o.topic == settings.topic("clearing.results")), out
    return published(settings, out, CLEARING_ALERTS)


async def account(repo: ClearingRepository, pair: tuple[str, str]):
    async with repo.transaction() as conn:
        return await conn.fetchrow("SELECT * FROM clearing.prepayment_accounts "
                                   "WHERE insuplc_admdvs = $1 AND mdtrtarea_admvs = $2", *pair)


async def test_a_refused_bill_warns_the_insured_region_once_until_a_top_up(settings, clearing_repo):
    repo = clearing_repo
    pair = (f"95{random.randrange(10_000):04d}", f"94{random.randrange(10_000):04d}")
    tag = random.randrange(10**9)
    await fund(settings, repo, pair, "1000.00")  # warning line: 200.00 (20 %)
    handler = ClearingHandler(settings, repo)

    first = notice(settings, f"M-R1-{tag}", pair, "1500.00", "1000.00")
    out = await handler([first])
    assert not [o for o in out if o.answered], "pricing answered the refused bill: clearing answers nothing"
    (alert,) = published(settings, out, CLEARING_ALERTS)
    assert (alert["refused_draw"], alert["refused_left"], alert["balance"], alert["funded"]) == (
        "1500.00", "1000.00", "1000.00", "1000.00")
    assert "refusing bills" in alert["message"] and "tops up" in alert["message"]
    (status,) = published(settings, out, PREPAYMENT_STATUS)  # the balance unchanged, its version on
    before = await account(repo, pair)
    assert status["balance"] == "1000.00" and status["version"] == before["moves"] == 2
    assert before["refusal_warned"] and before["alert_level"] == 0 and before["drawn"] == Decimal("0")

    # The same record handled again (its Kafka transaction lost): the warning goes out again, and
    # nothing is recorded twice.
    again = await handler([first])
    assert [a["refused_draw"] for a in published(settings, again, CLEARING_ALERTS)] == ["1500.00"]
    assert (await account(repo, pair))["moves"] == before["moves"]

    # Another refusal, in a batch with a draw that takes the account below its line: the region
    # knows of the refusals already; the low balance is news, and is told.
    mixed = await handler([notice(settings, f"M-R2-{tag}", pair, "1200.00", "1000.00"),
                           priced(settings, "settle", f"M-S-{tag}", f"S-{tag}", pair, "900.00")])
    assert len([o for o in mixed if o.answered]) == 1  # the settlement's answer alone
    assert [(a["balance"], a["refused_draw"]) for a in published(settings, mixed, CLEARING_ALERTS)] == [("100.00", None)]

    # A top-up re-arms it: the next refusal of a bill the account cannot cover warns again.
    assert await fund(settings, repo, pair, "100.00") == []  # 200.00 left, below its line (220.00): known
    assert not (await account(repo, pair))["refusal_warned"]
    (rearmed,) = published(settings, await handler([notice(settings, f"M-R3-{tag}", pair, "1200.00", "200.00")]),
                           CLEARING_ALERTS)
    assert (rearmed["refused_draw"], rearmed["balance"]) == ("1200.00", "200.00")
    # A refusal pricing made on a balance older than clearing's (its mirror trails it): after this
    # top-up the account covers the bill, and that is not news.
    await fund(settings, repo, pair, "5000.00")
    late = await handler([notice(settings, f"M-R4-{tag}", pair, "1200.00", "200.00")])
    assert published(settings, late, CLEARING_ALERTS) == []
    assert not (await account(repo, pair))["refusal_warned"]


async def test_a_refusal_resent_is_another_notice_and_one_clearing_cannot_record_is_only_dead_lettered(
        settings, clearing_repo):
    repo = clearing_repo
    pair = (f"95{random.randrange(10_000):04d}", f"94{random.randrange(10_000):04d}")
    tag = random.randrange(10**9)
    handler = ClearingHandler(settings, repo)
    # An account never funded (pricing counts it as 0 left): the notice opens it, and warns.
    (alert,) = published(settings, await handler([notice(settings, f"M-N-{tag}", pair, "80.00", "0.00", ts_ms=1)]),
                         CLEARING_ALERTS)
    assert (alert["funded"], alert["balance"]) == ("0.00", "0.00")
    # The same msgid refused again later (a resend): another notice, not a replay of the first.
    resent = await handler([notice(settings, f"M-N-{tag}", pair, "80.00", "0.00", ts_ms=2)])
    assert published(settings, resent, CLEARING_ALERTS) == []  # still warned
    assert (await account(repo, pair))["moves"] == 2

    # A notice the stage cannot record is dead-lettered without an answer: pricing answered it.
    out = handler.refuse(notice(settings, f"M-X-{tag}", pair, "80.00", "0.00"), "Postgres refused a value")
    assert [o.topic for o in out] == [settings.topic("settlement.priced.dlq")]


async def test_a_months_clearing_re_arms_the_refusal_warning(clearing_of_its_own):
    # A month's statement, confirmed by both sides, gives the account back what the month drew:
    # a bill refused after that is news again, as after a top-up.
    settings, repo = clearing_of_its_own
    pair = ("950100", "940100")
    await fund(settings, repo, pair, "100.00")
    handler = ClearingHandler(settings, repo)
    await handler([priced(settings, "settle", "M-SEP", "S-SEP", pair, "90.00",
                          inf_time="2025-09-10 10:00:00", setl_time="2025-09-10 10:00:00")])  # 10.00 left
    assert len(published(settings, await handler([notice(settings, "M-R1", pair, "50.00", "10.00")]),
                         CLEARING_ALERTS)) == 1
    assert published(settings, await handler([notice(settings, "M-R2", pair, "50.00", "10.00")]),
                     CLEARING_ALERTS) == []  # warned already

    admin = ClearingAdminHandler(settings, repo)

    async def ask(body: dict) -> dict:
        body = {"reqid": f"R-{uuid.uuid4().hex}"} | body
        out = await admin([Incoming(settings.topic("clearing.requests"), 0, 1, body["reqid"].encode(),
                                    orjson.dumps(body), 0)])
        (result,) = [orjson.loads(o.value) for o in out if o.topic == settings.topic("clearing.results")]
        assert result["ok"], result
        return result

    run = await ask({"type": "run_month", "setlym": "202509"})
    (statement,) = run["data"]["statements"]
    for side in ("insured", "treating"):
        await ask({"type": "confirm", "statement_id": statement["statement_id"], "side": side})
    cleared = await account(repo, pair)
    assert cleared["cleared"] == Decimal("90.00") and not cleared["refusal_warned"]
    (again,) = published(settings, await handler([notice(settings, "M-R3", pair, "150.00", "100.00")]),
                         CLEARING_ALERTS)
    assert (again["refused_draw"], again["balance"]) == ("150.00", "100.00")
