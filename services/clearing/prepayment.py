"""Prepayment accounts as the domain sees them, and the warning clearing publishes."""

from __future__ import annotations

import contextlib
import heapq
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from yidi.contracts.clearing import PrepaymentAlert, PrepaymentStatus
from yidi.contracts.internal import RefusalNotice
from yidi.domain.clearing import Prepayment
from yidi.domain.codes import within
from yidi.domain.money import fmt
from yidi.platform import metrics
from yidi.platform.db import statements_for
from yidi.platform.jsonwire import dumps
from yidi.platform.kafka import Outgoing
from yidi.platform.sampling import show_every
from yidi.platform.settings import Settings
from yidi.platform.topics import CLEARING_ALERTS, PREPAYMENT_STATUS

if TYPE_CHECKING:
    from services.clearing.repository import ClearingRepository

log = logging.getLogger(__name__)


def account_of(row: Any) -> Prepayment:
    return Prepayment(
        funded=row["funded"], drawn=row["drawn"], given_back=row["given_back"], cleared=row["cleared"],
        warn_share=row["warn_share"],
    )


def account_view(row: Any) -> dict[str, Any]:
    account = account_of(row)
    return {
        "insuplc_admdvs": row["insuplc_admdvs"], "mdtrtarea_admvs": row["mdtrtarea_admvs"],
        "funded": fmt(account.funded), "drawn": fmt(account.drawn), "given_back": fmt(account.given_back),
        "cleared": fmt(account.cleared), "balance": fmt(account.balance), "shortfall": fmt(account.shortfall),
        "warn_share": str(account.warn_share),
    }


def status_update(settings: Settings, row: Any) -> Outgoing:
    """The account's balance now, for pricing's "refuse" policy (compacted topic, newest wins)."""
    status = PrepaymentStatus(
        insuplc_admdvs=row["insuplc_admdvs"], mdtrtarea_admvs=row["mdtrtarea_admvs"],
        balance=account_of(row).balance, version=row["moves"],
    )
    return Outgoing(settings.topic(PREPAYMENT_STATUS), dumps(status),
                    key=f"{row['insuplc_admdvs']}-{row['mdtrtarea_admvs']}".encode())


def alert_out(settings: Settings, alert: PrepaymentAlert) -> Outgoing:
    """``alert`` on clearing.alerts, keyed by its account."""
    return Outgoing(settings.topic(CLEARING_ALERTS), dumps(alert),
                    key=f"{alert.insuplc_admdvs}-{alert.mdtrtarea_admvs}".encode())


def alert_message(settings: Settings, alert_json: str, accounts: dict[tuple[str, str], Any]) -> Outgoing | None:
    """An alert kept with its move (or a clearing request), published again when its batch is
    handled again, while its account is still at the level it warned of, or still warned of
    refusals (``accounts``: each account's row now). One that a top-up has re-armed since, or that
    a later one has outdated (low, now run out), is news no longer true: not published."""
    alert = PrepaymentAlert.model_validate_json(alert_json)
    row = accounts.get((alert.insuplc_admdvs, alert.mdtrtarea_admvs))
    if row is None:
        return None
    if alert.refused_draw is not None:
        if not row["refusal_warned"]:
            return None
    elif row["alert_level"] != (2 if alert.balance < 0 else 1):
        return None
    return alert_out(settings, alert)


def refusing_alert(settings: Settings, row: Any, account: Prepayment, notice: RefusalNotice) -> Outgoing:
    """The warning that an account refuses bills (pricing's notice of one it refused), beside the
    balance's levels: given once (``prepayment_accounts.refusal_warned``) until a top-up or a month's
    clearing re-arms it (admin's ``_warning_after_move``)."""
    insured, treating = row["insuplc_admdvs"], row["mdtrtarea_admvs"]
    message = (f"Prepayment of {insured} for {treating} is refusing bills: a bill drawing {fmt(notice.draw)} was "
               f"refused with {fmt(notice.left)} left; the balance is {fmt(account.balance)}. Patients whose bills "
               "draw more than what is left pay in full and claim at home until the insured region tops up.")
    alert = PrepaymentAlert(
        insuplc_admdvs=insured, mdtrtarea_admvs=treating, balance=account.balance, funded=account.funded,
        warn_share=account.warn_share, shortfall=account.shortfall, message=message,
        refused_draw=notice.draw, refused_left=notice.left,
    )
    return alert_out(settings, alert)


def prepayment_alert(settings: Settings, row: Any, account: Prepayment) -> Outgoing:
    insured, treating = row["insuplc_admdvs"], row["mdtrtarea_admvs"]
    if within(treating, insured):
        # Care at home, drawn on before it was told apart: nothing draws on it now, and it cannot be
        # funded; the statements of its remaining rows, once confirmed, clear it.
        message = (f"Prepayment of {insured} for {treating} (care at home, which no longer draws) is at "
                   f"{fmt(account.balance)}: confirm the pair's remaining statements; it cannot be funded.")
    elif account.balance < 0:
        # As the platform's policy has it (the same setting pricing reads): under refuse the region's
        # patients were told "settlements continue" while pricing refused them (a review, session 49).
        meanwhile = ("bills that draw on it are refused PREPAYMENT_EXHAUSTED, and the patients pay in full,"
                     if settings.prepayment_policy == "refuse" else
                     "settlements continue and the shortfall is recorded")
        message = (f"Prepayment of {insured} for {treating} has run out: shortfall {fmt(account.shortfall)}; "
                   f"{meanwhile} until the region tops up.")
    else:
        # The share as set (0.005 read "below 0%", 0.125 "below 12%": a review, session 49).
        share = format((account.warn_share * 100).normalize(), "f")
        message = (f"Prepayment of {insured} for {treating} is down to {fmt(account.balance)}, below "
                   f"{share}% of what was advanced; the insured region should top it up.")
    alert = PrepaymentAlert(
        insuplc_admdvs=insured, mdtrtarea_admvs=treating, balance=account.balance, funded=account.funded,
        warn_share=account.warn_share, shortfall=account.shortfall, message=message,
    )
    return alert_out(settings, alert)


LEVELS = (0, 1, 2)


def show_balances(rows: list[Any] | None, shown: set[tuple[str, str]], most: int) -> set[tuple[str, str]]:
    """Set the prepayment gauges from ``rows`` (every account): how many are at each alert level,
    and the balance and level of the ``most`` worst (run out, then low, then the lowest balances;
    a national deployment's pairs of cities would be a series each); an account no longer among
    them (shown before, in ``shown``) is taken out. ``rows`` None (not read): every series out.
    Returns the accounts shown now."""
    judged = [] if rows is None else [
        (-(account := account_of(row)).alert_level(), account.balance, row["insuplc_admdvs"], row["mdtrtarea_admvs"])
        for row in rows
    ]
    now: set[tuple[str, str]] = set()
    for minus_level, balance, *labels in heapq.nsmallest(most, judged):
        metrics.PREPAYMENT_BALANCE.labels(*labels).set(float(balance))
        metrics.PREPAYMENT_ALERT_LEVEL.labels(*labels).set(-minus_level)
        now.add((labels[0], labels[1]))
    for gone in shown - now:
        metrics.PREPAYMENT_BALANCE.remove(*gone)
        metrics.PREPAYMENT_ALERT_LEVEL.remove(*gone)
    counted = Counter(-j[0] for j in judged)
    for level in LEVELS:
        if rows is None:
            with contextlib.suppress(KeyError):  # never shown
                metrics.PREPAYMENT_ACCOUNTS.remove(str(level))
        else:
            metrics.PREPAYMENT_ACCOUNTS.labels(str(level)).set(counted[level])
    return now


async def show_balances_every(repository: ClearingRepository, seconds: float, most: int) -> None:
    """Every ``seconds``, how many accounts are at each alert level, and the balance and alert level
    of the ``most`` worst, into the gauges (for dashboards and Prometheus alerts; the regions' own
    warnings are the PrepaymentAlerts on clearing.alerts).

    A read that fails or takes longer than ``seconds`` (at least 5 s) takes the gauges out, so no value
    of unknown age is shown: with several clearing instances the others' still are (the rules take
    ``max by`` the account). It is logged once until a read succeeds."""
    shown: set[tuple[str, str]] = set()

    def show(rows: list[Any] | None) -> None:
        nonlocal shown
        shown = show_balances(rows, shown, most)

    with statements_for("prepayment-balances"):
        await show_every(seconds, lambda timeout: repository.prepayment_accounts(timeout=timeout), show, log,
                         "prepayment balances not read for the metrics, their gauges taken out")
