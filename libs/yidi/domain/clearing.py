"""Clearing arithmetic (R3: prepay first, clear afterwards): periods, statements, netting,
prepayment, reconciliation. Plain functions over plain data.

Each settlement adds what the insured region owes for it (``owed``: its funds' payment and its
individual account's payment) to the clearing period it landed in; its cancellation or
reversal takes it away in the period the undoing landed in. Months are cleared in order; a month,
once cleared, is closed, and what arrives for it or any month before it lands in the month after
the latest closed one, so every yuan is cleared exactly once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from yidi.domain.money import ZERO


def next_month(setlym: str) -> str:
    year, month = int(setlym[:4]), int(setlym[4:])
    return f"{year + month // 12:04d}{month % 12 + 1:02d}"


def month_ended(setlym: str, today: date) -> bool:
    """Whether month ``setlym`` is over on ``today`` (the business day, China time): a month is
    cleared once it has ended, or what its last days settle would land in the next."""
    following = next_month(setlym)
    return today >= date(int(following[:4]), int(following[4:]), 1)


def landing_period(setlym: str, cleared_through: str | None) -> str:
    """The period a settlement (or undoing) of month ``setlym`` lands in: its own, or, when that
    month is at or before ``cleared_through`` (the latest month closed), the month after that.

    Periods are a watermark, not a set: once a month is closed, a settlement dated in a month never
    run (skipped, or a facility clock running slow) lands after the latest month closed, as one
    dated in a closed month does, so the next run clears it. Landing in the first open month after
    its own, it would have waited in a month no one runs any more, uncleared. Before any month is
    closed it lands in its own month, and ``run_order`` has that month run first."""
    if cleared_through is None or setlym > cleared_through:
        return setlym
    return next_month(cleared_through)


MAX_NAMED_MONTHS = 12  # months a refusal names; it counts the rest


def run_order(month: str, cleared_through: str | None, earlier: Sequence[str], holds: bool,
              unfinished: Sequence[str] = ()) -> str | None:
    """Why open month ``month`` may not be cleared now, or None: months are cleared in order.

    ``cleared_through`` is the latest month closed; ``earlier`` the open months before ``month``
    that hold settlements or undoings, in order; ``holds`` whether ``month`` itself holds any;
    ``unfinished`` the months before it closed by a run that stopped before writing their
    statements. A month is run when no earlier open month holds anything: otherwise those first,
    so that a month skipped does not keep its settlements uncleared for good; and when no earlier
    month's run is unfinished, or its statements might never be issued. A month before the latest
    closed one holds something only if a version that let months run out of order left it open:
    it is run, to clear that. One that holds nothing has nothing to clear: what was dated in it
    since landed after ``cleared_through`` (``landing_period``)."""
    if earlier:
        return (f"{_months(earlier)} settlements or undoings not cleared yet: run "
                f"{'it' if len(earlier) == 1 else 'them, in this order,'} before {month} (months are cleared in "
                "order, so that none is left behind)")
    if unfinished:
        return (f"the run of {_months(unfinished, verb=False)} stopped before "
                f"{'its' if len(unfinished) == 1 else 'their'} statements were written: send run_month for "
                f"{'it' if len(unfinished) == 1 else 'each'} again before {month}")
    if cleared_through is not None and month < cleared_through and not holds:
        return (f"month {month} was not run, and {cleared_through} after it is cleared: what was dated in "
                f"{month} since landed in a month after {cleared_through}; nothing is left to clear in it")
    return None


def _months(months: Sequence[str], *, verb: bool = True) -> str:
    """"month 202509 holds", "months 202509, 202510 hold" (at most MAX_NAMED_MONTHS named)."""
    named = ", ".join(months[:MAX_NAMED_MONTHS])
    if len(months) > MAX_NAMED_MONTHS:
        named += f" and {len(months) - MAX_NAMED_MONTHS} more"
    if len(months) == 1:
        return f"month {named}" + (" holds" if verb else "")
    return f"months {named}" + (" hold" if verb else "")


def owed(fund_pay_sumamt: Decimal, acct_pay: Decimal) -> Decimal:
    """What an insured region owes the treating region for one settlement: what its funds paid
    and what its people's individual accounts paid (R16; seed 002 names the platform that clears
    account payments across provinces). The hospital was paid both by the treating region's
    agency; only the cash the patient paid (``psn_cash_pay``) stays between patient and hospital.
    It is what a settlement draws on the prepayment and what a statement clears."""
    return fund_pay_sumamt + acct_pay


@dataclass(frozen=True, slots=True)
class Movement:
    """One settlement (+) or undoing (−) of a region pair, in the period it landed in."""

    insured: str
    treating: str
    period: str
    medfee: Decimal
    fund: Decimal
    acct: Decimal
    sign: int  # +1 settlement, −1 cancellation or reversal
    # What the settlement drew on the prepayment: ``owed(fund, acct)`` now, ``fund`` for one made
    # before clearing migration 007 (the ledger's NULL ``drawn``). Stated, never defaulted, so
    # this model cannot read a missing value otherwise than the ledger's SQL does.
    drawn: Decimal

    @property
    def cleared(self) -> Decimal:
        return self.drawn


@dataclass(slots=True)
class PairTotals:
    insured: str
    treating: str
    period: str
    settlements: int = 0
    undone: int = 0
    medfee_sumamt: Decimal = ZERO
    fund_pay_sumamt: Decimal = ZERO
    acct_pay: Decimal = ZERO
    clr_sumamt: Decimal = ZERO  # what the statement clears: what its settlements drew, less what was given back

    def add(self, m: Movement) -> None:
        if m.sign > 0:
            self.settlements += 1
        else:
            self.undone += 1
        self.medfee_sumamt += m.sign * m.medfee
        self.fund_pay_sumamt += m.sign * m.fund
        self.acct_pay += m.sign * m.acct
        self.clr_sumamt += m.sign * m.cleared


def statements(movements: Iterable[Movement], period: str) -> list[PairTotals]:
    """The totals each insured region owes each treating region for one period."""
    totals: dict[tuple[str, str], PairTotals] = {}
    for m in movements:
        if m.period != period:
            continue
        key = (m.insured, m.treating)
        totals.setdefault(key, PairTotals(m.insured, m.treating, period)).add(m)
    return [totals[k] for k in sorted(totals)]


@dataclass(frozen=True, slots=True)
class NetPosition:
    """Between two regions: ``payer`` pays ``payee`` ``amount`` once both directions are netted."""

    region_a: str
    region_b: str
    a_owes_b: Decimal
    b_owes_a: Decimal

    @property
    def net(self) -> Decimal:
        return self.a_owes_b - self.b_owes_a

    @property
    def payer(self) -> str:
        return self.region_a if self.net >= 0 else self.region_b

    @property
    def payee(self) -> str:
        return self.region_b if self.net >= 0 else self.region_a

    @property
    def amount(self) -> Decimal:
        return abs(self.net)


def net_positions(pairs: Iterable[PairTotals]) -> list[NetPosition]:
    """Net each two regions' statements against each other (an insured region owes the treating one)."""
    owes: dict[tuple[str, str], Decimal] = defaultdict(lambda: ZERO)
    for p in pairs:
        owes[(p.insured, p.treating)] += p.clr_sumamt
    regions = sorted({r for key in owes for r in key})
    out = []
    for i, a in enumerate(regions):
        for b in regions[i + 1:]:
            if (a, b) in owes or (b, a) in owes:
                out.append(NetPosition(a, b, owes.get((a, b), ZERO), owes.get((b, a), ZERO)))
    return out


@dataclass(slots=True)
class Prepayment:
    """An insured region's advance for settlements in one treating region (R3)."""

    funded: Decimal = ZERO
    drawn: Decimal = ZERO
    given_back: Decimal = ZERO
    cleared: Decimal = ZERO
    warn_share: Decimal = Decimal("0.20")

    @property
    def balance(self) -> Decimal:
        return self.funded - self.drawn + self.given_back + self.cleared

    @property
    def shortfall(self) -> Decimal:
        return max(ZERO, -self.balance)

    def alert_level(self) -> int:
        """0 healthy, 1 low (``below_warning``), 2 run out (a shortfall): an alert goes out each time
        an account reaches a higher level than it was warned at."""
        return 2 if self.balance < 0 else 1 if self.below_warning() else 0

    def below_warning(self) -> bool:
        """Below ``warn_share`` of what was advanced. Not of what was advanced and cleared: each
        month's clearing restores what the month drew, so that sum only grows, and after a year of
        clearings a healthy account read as low (and, its warning never re-armed, a later shortfall
        raised none)."""
        return self.funded > 0 and self.balance < self.funded * self.warn_share


@dataclass(frozen=True, slots=True)
class Difference:
    field: str
    facility: Decimal | int
    platform: Decimal | int

    @property
    def gap(self) -> Decimal | int:
        return self.facility - self.platform


def reconcile_totals(facility: dict[str, Decimal | int], platform: dict[str, Decimal | int]) -> list[Difference]:
    """3201: the facility's totals against the platform's, field by field; empty when they match."""
    return [Difference(k, facility[k], platform.get(k, 0)) for k in facility if facility[k] != platform.get(k, 0)]


@dataclass(frozen=True, slots=True)
class DetailDifference:
    setl_id: str
    # missing_on_platform, missing_at_facility, amounts_differ, cancelled_/reversed_on_platform,
    # dated_outside_period
    problem: str
    facility: dict[str, Decimal] = field(default_factory=dict)
    platform: dict[str, Decimal] = field(default_factory=dict)


def reconcile_details(
    facility: dict[str, dict[str, Decimal]], platform: dict[str, tuple[str, dict[str, Decimal]]],
    outside: Collection[str] = frozenset(),
) -> list[DetailDifference]:
    """3202: settlement by settlement; ``platform`` maps setl_id to (state, amounts). ``outside``:
    the settlements the facility lists that the platform dates outside the period (the answer gives
    each difference the platform's day for it: clearing's admin). Matched without a word, they left a 3201 of the same period off by them and the 3202
    saying every settlement matches: the facility dated one a day later (its own clock at
    midnight, a resend completed the next day), and nothing said where the gap was."""
    out = []
    for setl_id in sorted(set(facility) | set(platform)):
        mine, theirs = facility.get(setl_id), platform.get(setl_id)
        if theirs is None:
            out.append(DetailDifference(setl_id, "missing_on_platform", mine or {}))
        elif mine is None:
            if theirs[0] == "settled":
                out.append(DetailDifference(setl_id, "missing_at_facility", platform=theirs[1]))
        elif theirs[0] != "settled":
            out.append(DetailDifference(setl_id, f"{theirs[0]}_on_platform", mine, theirs[1]))
        elif setl_id in outside:
            out.append(DetailDifference(setl_id, "dated_outside_period", mine, theirs[1]))
        elif any(mine.get(k) != theirs[1].get(k) for k in mine):
            out.append(DetailDifference(setl_id, "amounts_differ", mine, theirs[1]))
    return out
