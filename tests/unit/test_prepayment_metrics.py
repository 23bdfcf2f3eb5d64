"""The prepayment gauges clearing exposes (yidi_prepayment_balance_yuan, yidi_prepayment_alert_level):
each account's balance and its alert level, and a failed read that takes them out (no value of
unknown age) and logs once."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

import pytest

from services.clearing.prepayment import show_balances, show_balances_every
from yidi.platform import metrics


def _row(insured: str, treating: str, funded: str, drawn: str = "0", given_back: str = "0", cleared: str = "0",
         warn_share: str = "0.20") -> dict[str, object]:
    return {"insuplc_admdvs": insured, "mdtrtarea_admvs": treating, "funded": Decimal(funded),
            "drawn": Decimal(drawn), "given_back": Decimal(given_back), "cleared": Decimal(cleared),
            "warn_share": Decimal(warn_share)}


def _shown(insured: str, treating: str) -> tuple[float | None, float | None]:
    def value(gauge) -> float | None:
        for family in gauge.collect():
            for sample in family.samples:
                if sample.labels == {"insured": insured, "treating": treating}:
                    return sample.value
        return None
    return value(metrics.PREPAYMENT_BALANCE), value(metrics.PREPAYMENT_ALERT_LEVEL)


def test_each_account_shows_its_balance_and_alert_level_and_a_gone_one_is_taken_out():
    rows = [
        _row("U10001", "U20001", "1000.00", drawn="300.00", given_back="50.00"),  # 750: healthy
        _row("U10001", "U20002", "1000.00", drawn="900.00", warn_share="0.20"),  # 100 < 200: low
        _row("U10002", "U20001", "200.00", drawn="400.00", cleared="100.00"),  # -100: run out
    ]
    shown = show_balances(rows, set(), 10)
    assert shown == {("U10001", "U20001"), ("U10001", "U20002"), ("U10002", "U20001")}
    assert _shown("U10001", "U20001") == (750.0, 0.0)
    assert _shown("U10001", "U20002") == (100.0, 1.0)
    assert _shown("U10002", "U20001") == (-100.0, 2.0)
    # Funded again: the warning's level falls back; an account no longer read is no longer shown.
    shown = show_balances([_row("U10001", "U20002", "2000.00", drawn="900.00")], shown, 10)
    assert shown == {("U10001", "U20002")}
    assert _shown("U10001", "U20002") == (1100.0, 0.0)
    assert _shown("U10001", "U20001") == (None, None)
    assert _shown("U10002", "U20001") == (None, None)
    show_balances(None, shown, 10)


def _counted() -> dict[str, float]:
    return {s.labels["level"]: s.value for family in metrics.PREPAYMENT_ACCOUNTS.collect() for s in family.samples}


def test_the_gauges_show_the_worst_accounts_up_to_the_most_and_count_every_account_by_level():
    # A national deployment's pairs of cities would be 10^4-10^5 series: the worst are shown, all counted.
    rows = [
        _row("U30001", "U40001", "1000.00", drawn="100.00"),  # 900: healthy
        _row("U30001", "U40002", "1000.00", drawn="700.00"),  # 300: healthy, the lowest healthy one
        _row("U30002", "U40001", "1000.00", drawn="850.00"),  # 150 < 200: low
        _row("U30002", "U40002", "100.00", drawn="150.00"),  # -50: run out
        _row("U30003", "U40001", "100.00", drawn="130.00"),  # -30: run out
        _row("U30003", "U40002", "5000.00", drawn="1000.00"),  # 4000: healthy
    ]
    shown = show_balances(rows, set(), 4)
    assert shown == {("U30002", "U40002"), ("U30003", "U40001"), ("U30002", "U40001"), ("U30001", "U40002")}
    assert _shown("U30002", "U40002") == (-50.0, 2.0) and _shown("U30002", "U40001") == (150.0, 1.0)
    assert _shown("U30001", "U40001") == (None, None) and _shown("U30003", "U40002") == (None, None)
    assert _counted() == {"0": 3.0, "1": 1.0, "2": 2.0}
    # One run-out account topped up past every healthy one but one: it leaves the shown, that one
    # (the lowest healthy now) comes in; another falls low.
    rows[4] = _row("U30003", "U40001", "1500.00", drawn="130.00")  # 1,370: healthy
    rows[1] = _row("U30001", "U40002", "1000.00", drawn="950.00")  # 50 < 200: low
    shown = show_balances(rows, shown, 4)
    assert shown == {("U30002", "U40002"), ("U30002", "U40001"), ("U30001", "U40002"), ("U30001", "U40001")}
    assert _shown("U30003", "U40001") == (None, None)
    assert _shown("U30001", "U40001") == (900.0, 0.0) and _shown("U30001", "U40002") == (50.0, 1.0)
    assert _counted() == {"0": 3.0, "1": 2.0, "2": 1.0}
    shown = show_balances(rows, shown, 1)
    assert shown == {("U30002", "U40002")} and _shown("U30002", "U40001") == (None, None)
    # Not read: nothing of unknown age, counts included; no accounts read: counted 0.
    assert show_balances(None, shown, 4) == set() and _counted() == {} and _shown("U30002", "U40002") == (None, None)
    assert show_balances([], set(), 4) == set() and _counted() == {"0": 0.0, "1": 0.0, "2": 0.0}
    show_balances(None, set(), 4)


class _Repository:
    def __init__(self, answers: list[object]) -> None:
        self.answers = answers
        self.reads = 0

    async def prepayment_accounts(self, timeout: float) -> list[dict[str, object]]:
        assert timeout >= 5.0
        self.reads += 1
        answer = self.answers[min(self.reads, len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_a_failed_read_takes_the_gauges_out_and_is_logged_once_until_one_succeeds(caplog):
    good = [_row("U10003", "U20003", "500.00", drawn="100.00")]
    down = OSError("connection refused")
    repository = _Repository([good, down, down, down, [_row("U10003", "U20003", "500.00", drawn="200.00")]])
    with caplog.at_level(logging.WARNING, logger="services.clearing.prepayment"):
        task = asyncio.create_task(show_balances_every(repository, 0.01, 10))
        try:
            async def read(n: int) -> None:
                while repository.reads < n:
                    await asyncio.sleep(0.005)
            await asyncio.wait_for(read(1), 5)
            await asyncio.sleep(0.005)
            assert _shown("U10003", "U20003") == (400.0, 0.0)
            await asyncio.wait_for(read(3), 5)
            assert _shown("U10003", "U20003") == (None, None)  # Postgres away: no value of unknown age
            assert _counted() == {}
            await asyncio.wait_for(read(6), 5)
            assert _shown("U10003", "U20003") == (300.0, 0.0)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    warnings = [r for r in caplog.records if "not read for the metrics" in r.getMessage()]
    assert len(warnings) == 1
    show_balances(None, {("U10003", "U20003")}, 10)


def test_a_kept_warning_is_published_again_only_while_its_account_is_at_its_level():
    from yidi.contracts.clearing import PrepaymentAlert
    from yidi.platform.settings import settings_for

    from services.clearing.prepayment import alert_message

    settings = settings_for("clearing")
    low = PrepaymentAlert(insuplc_admdvs="131000", mdtrtarea_admvs="110000", balance=Decimal("10.00"),
                          funded=Decimal("100.00"), warn_share=Decimal("0.20"), shortfall=Decimal("0.00"),
                          message="low").model_dump_json()
    out = low.replace('"balance":"10.00"', '"balance":"-5.00"').replace('"shortfall":"0.00"', '"shortfall":"5.00"')
    refusing = low.replace('"refused_draw":null', '"refused_draw":"80.00"').replace('"refused_left":null', '"refused_left":"10.00"')
    assert refusing != low
    pair = ("131000", "110000")

    def at(level: int, refusal_warned: bool = False) -> dict:
        return {pair: {"alert_level": level, "refusal_warned": refusal_warned}}

    assert alert_message(settings, low, at(1)) is not None
    assert alert_message(settings, low, at(0)) is None  # topped up since: re-armed
    assert alert_message(settings, low, at(2)) is None  # run out since: "low" is news no longer true
    assert alert_message(settings, out, at(2)) is not None
    assert alert_message(settings, low, {}) is None
    # A warning that the account refuses bills (refuse policy), beside the balance's levels.
    assert alert_message(settings, refusing, at(1, refusal_warned=True)) is not None
    assert alert_message(settings, refusing, at(0, refusal_warned=True)) is not None
    assert alert_message(settings, refusing, at(1)) is None  # topped up since: re-armed


def test_an_alert_of_an_account_of_care_at_home_says_to_confirm_its_statements_not_to_fund_it():
    # Care at home drew on such an account before area codes nested; fund now refuses it, so an
    # alert saying "top up" asked for what cannot be done.
    import orjson

    from services.clearing.prepayment import prepayment_alert
    from yidi.domain.clearing import Prepayment
    from yidi.platform.settings import Settings

    run_out = Prepayment(drawn=Decimal("85.00"))
    home = orjson.loads(prepayment_alert(Settings(namespace="t."), {"insuplc_admdvs": "131000", "mdtrtarea_admvs": "131002"},
                                         run_out).value)
    away = orjson.loads(prepayment_alert(Settings(namespace="t."), {"insuplc_admdvs": "131000", "mdtrtarea_admvs": "110000"},
                                         run_out).value)
    assert "care at home" in home["message"] and "cannot be funded" in home["message"], home
    assert "has run out" in away["message"] and "tops up" in away["message"], away
    assert "settlements continue and the shortfall is recorded" in away["message"], away


def test_an_alert_says_what_happens_to_bills_under_the_platforms_policy_and_its_line_as_set():
    # Under refuse the run-out alert told the region "settlements continue" while pricing refused
    # its patients; a warning line of 0.005 read "below 0%" (a review, session 49).
    import orjson

    from services.clearing.prepayment import prepayment_alert
    from yidi.domain.clearing import Prepayment
    from yidi.platform.settings import Settings

    pair = {"insuplc_admdvs": "131000", "mdtrtarea_admvs": "110000"}
    refused = orjson.loads(prepayment_alert(Settings(namespace="t.", prepayment_policy="refuse"), pair,
                                            Prepayment(drawn=Decimal("85.00"))).value)
    assert "refused PREPAYMENT_EXHAUSTED" in refused["message"] and "continue" not in refused["message"], refused
    for share, said in (("0.005", "below 0.5% of"), ("0.125", "below 12.5% of"), ("0.5", "below 50% of")):
        low = orjson.loads(prepayment_alert(Settings(namespace="t."), pair, Prepayment(
            funded=Decimal("1000.00"), drawn=Decimal("999.00"), warn_share=Decimal(share))).value)
        assert said in low["message"], low


def test_an_account_past_one_amount_is_stated_and_alerted_as_its_columns_hold_it():
    # A shortfall past 999,999,999,999.99 (an unfunded pair under record_shortfall) made the status
    # and the alert refuse their own balance: the settlement stage stopped on every batch touching
    # the pair (a review, session 35). An account holds what numeric(24, 2) does (clearing's migration 013).
    import orjson

    from services.clearing.prepayment import account_of, prepayment_alert, status_update
    from yidi.platform.settings import Settings

    row = _row("U10003", "U20003", "0.00", drawn="1999999999999.98") | {"moves": 7}
    status = orjson.loads(status_update(Settings(), row).value)
    alert = orjson.loads(prepayment_alert(Settings(), row, account_of(row)).value)
    assert status["balance"] == alert["balance"] == "-1999999999999.98"
    assert alert["shortfall"] == "1999999999999.98"
