"""The replay's verdicts, as pure functions over what was sent and what came back.

- ``check_exactly_once``: every send got exactly one answer. A request sent twice under one msgid
  (a duplicate) is owed two answers, so expectations are counted per send, not per msgid; every
  answer to a msgid says what the first said (``answer_gist``): a resend is answered from the
  ledger, never settled again; every answer is about what was sent under its msgid (its infno, a
  settlement's visit and bill, a cancellation's setl_id); and every answer can be read.
- ``answer_totals`` and ``check_ledger``: the ledger's rows in state ``settled`` for the run's
  settlements add up to what the answers said (count, fund, cash, account), cancellations taken
  out, and no other request of the run (a pre-settlement, a cancellation) has a ledger row.

Amounts are integers of fen: no floats near money, and sums are exact.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class ExactlyOnce:
    sends: int
    answers: int
    missing: dict[str, int] = field(default_factory=dict)  # msgid → answers still owed
    duplicated: dict[str, int] = field(default_factory=dict)  # msgid → answers too many
    unexpected: dict[str, int] = field(default_factory=dict)  # answers to msgids never sent
    # msgid → later answers that said something else than the first (another setl_id, amounts, code)
    inconsistent: dict[str, int] = field(default_factory=dict)
    # msgid → answers about something else than what was sent under it: another infno, another
    # visit or bill (a settlement's psn_no, mdtrt_id, medfee_sumamt), another setl_id cancelled
    mismatched: dict[str, int] = field(default_factory=dict)
    # msgid → answers whose fields could not be read (an output that is not an object, an amount
    # with three decimals); an answer that is not a JSON object at all has no msgid and counts as
    # ``unexpected`` under "<unreadable answer>"
    unreadable: dict[str, int] = field(default_factory=dict)
    # msgid → answers to a malformed request (generator.MALFORMED_KINDS) that did not refuse it
    # INVALID_INPUT: a bill whose total is not its lines' sum settled, say (judged on the platform
    # only: the bare pipeline answers every request alike)
    not_refused: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.unexpected or self.inconsistent or self.mismatched
                    or self.unreadable or self.not_refused)

    def summary(self, show: int = 5) -> str:
        if self.ok:
            return f"exactly once: {self.sends} sends, {self.answers} answers"
        parts = [f"{self.sends} sends, {self.answers} answers"]
        for name, found in (("missing", self.missing), ("duplicated", self.duplicated), ("unexpected", self.unexpected),
                            ("answered otherwise than the first time", self.inconsistent),
                            ("answered about something else than was sent", self.mismatched),
                            ("unreadable", self.unreadable),
                            ("malformed but not refused INVALID_INPUT", self.not_refused)):
            if found:
                parts.append(f"{name} {sum(found.values())} (e.g. {', '.join(sorted(found)[:show])})")
        return "NOT exactly once: " + "; ".join(parts)


def _counts(items: Mapping[str, int] | Iterable[str]) -> Counter[str]:
    return Counter(items) if not isinstance(items, Mapping) else Counter(dict(items))


def answer_gist(answer: Mapping[str, Any]) -> tuple[Any, ...]:
    """What every answer to one msgid must say alike: its code and, for a settlement, its setl_id
    and amounts (not its times or message text, which are the answering moment's)."""
    info = (answer.get("output") or {}).get("setlinfo") or {}
    return (answer.get("infcode"), answer.get("err_code") or "ok", info.get("setl_id"),
            info.get("medfee_sumamt"), info.get("fund_pay_sumamt"), info.get("psn_cash_pay"), info.get("acct_pay"))


_UNDONE_GIST = hash((-1, "ALREADY_UNDONE", None, None, None, None, None))


class AlikeAnswers:
    """The gist of the first answer to each msgid (as a hash), and the later answers that said
    something else (``inconsistent``, for ``check_exactly_once``). One exception: a settlement
    sent again after it was cancelled or reversed is answered ``ALREADY_UNDONE`` (it no longer
    stands), not its first success; ``undone`` says whether a msgid's settlement was (None: any
    may have been, for a count after the fact)."""

    def __init__(self, undone: Callable[[str], bool] | None = None) -> None:
        self._first: dict[str, int] = {}  # the gist's hash, shifted, and whether it was a success (bit 0)
        self._undone = undone
        self.inconsistent: Counter[str] = Counter()

    def add(self, msgid: str, answer: Mapping[str, Any]) -> None:
        gist = hash(answer_gist(answer))
        key = gist << 1 | (answer.get("infcode") == 0)
        first = self._first.setdefault(msgid, key)
        if first != key and not (first & 1 and gist == _UNDONE_GIST and (self._undone is None or self._undone(msgid))):
            self.inconsistent[msgid] += 1


def check_exactly_once(sends: Mapping[str, int] | Iterable[str], answers: Mapping[str, int] | Iterable[str],
                       inconsistent: Mapping[str, int] | None = None, *,
                       unowed: Mapping[str, int] | None = None, mismatched: Mapping[str, int] | None = None,
                       unreadable: Mapping[str, int] | None = None,
                       not_refused: Mapping[str, int] | None = None) -> ExactlyOnce:
    """``sends``: one msgid per publish (or msgid → publishes); ``answers``: one msgid per answer
    read; ``inconsistent``: msgid → answers whose ``answer_gist`` differed from the first's.

    ``unowed`` (a replay that watched the answers arrive): msgid → answers read while no publish
    of that msgid was waiting for one. Each is a duplicate, and the publish it took the count of
    is missing: a request answered twice before its resend, and the resend never answered, have
    as many answers as sends. Without it (a count after the fact, ``sweep``), only the numbers
    per msgid are compared. ``mismatched``: msgid → answers about something else than what was
    sent; ``unreadable``: msgid → answers whose fields could not be read; ``not_refused``: msgid →
    answers to a malformed request that did not refuse it."""
    expected, got = _counts(sends), _counts(answers)
    missing, duplicated, unexpected = {}, {}, {}
    for msgid, n in expected.items():
        have = got.get(msgid, 0)
        extra = (unowed or {}).get(msgid, 0)
        if unowed is not None:
            # Matched answers are have - extra; every publish not matched is missing.
            if n - (have - extra) > 0:
                missing[msgid] = n - (have - extra)
            if extra:
                duplicated[msgid] = extra
        elif have < n:
            missing[msgid] = n - have
        elif have > n:
            duplicated[msgid] = have - n
    for msgid, n in got.items():
        if msgid not in expected:
            unexpected[msgid] = n
    return ExactlyOnce(sum(expected.values()), sum(got.values()), missing, duplicated, unexpected,
                       {k: n for k, n in (inconsistent or {}).items() if n},
                       {k: n for k, n in (mismatched or {}).items() if n}, {k: n for k, n in (unreadable or {}).items() if n},
                       {k: n for k, n in (not_refused or {}).items() if n})


@dataclass(frozen=True)
class Totals:
    count: int = 0
    fund_pay_sumamt: int = 0  # fen
    psn_cash_pay: int = 0
    acct_pay: int = 0

    def as_yuan(self) -> dict[str, str | int]:
        return {"count": self.count, **{k: fen_to_yuan(getattr(self, k)) for k in ("fund_pay_sumamt", "psn_cash_pay", "acct_pay")}}


def yuan_to_fen(amount: str | Decimal) -> int:
    value = Decimal(str(amount)) * 100
    if value != value.to_integral_value():
        raise ValueError(f"{amount} has more than two decimals")
    return int(value)


def fen_to_yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


@dataclass(frozen=True, slots=True)  # one per settlement of a replayed day: no __dict__ each
class Settled:
    """What the answer to one settlement said (the first answer to its msgid)."""

    setl_id: str
    fund_pay_sumamt: int
    psn_cash_pay: int
    acct_pay: int
    medfee_sumamt: int | None = None  # the bill's total, compared row by row; None: the answer gave none


def answer_totals(settled: Mapping[str, Settled], cancelled_setl_ids: Iterable[str]) -> Totals:
    """What the ledger must hold in state ``settled``: the settlements answered, less those cancelled."""
    cancelled = set(cancelled_setl_ids)
    rows = [s for s in settled.values() if s.setl_id not in cancelled]
    return Totals(
        len(rows),
        sum(s.fund_pay_sumamt for s in rows),
        sum(s.psn_cash_pay for s in rows),
        sum(s.acct_pay for s in rows),
    )


@dataclass(frozen=True)
class LedgerCheck:
    answers: Totals
    ledger: Totals
    strays: int = 0  # ledger rows under msgids of requests that are not settlements
    mismatched: int = 0  # settlements whose row is not settled with the setl_id and amounts answered

    @property
    def ok(self) -> bool:
        return self.answers == self.ledger and not self.strays and not self.mismatched

    def summary(self) -> str:
        a, lg = self.answers.as_yuan(), self.ledger.as_yuan()
        if self.ok:
            return f"ledger = answers: {a['count']} settled, fund {a['fund_pay_sumamt']}, cash {a['psn_cash_pay']}, account {a['acct_pay']}"
        diffs = [f"{k} answers {a[k]} ledger {lg[k]}" for k in a if a[k] != lg[k]]
        if self.strays:
            diffs.append(f"{self.strays} ledger row(s) under requests that are not settlements")
        if self.mismatched:
            diffs.append(f"{self.mismatched} settlement(s) whose ledger row is not the answer's "
                         "(missing, another setl_id, or other amounts)")
        return "ledger ≠ answers: " + "; ".join(diffs)


def check_ledger(answers: Totals, ledger: Totals, strays: int = 0, mismatched: int = 0) -> LedgerCheck:
    return LedgerCheck(answers, ledger, strays, mismatched)


def replay_passed(result: Mapping[str, Any]) -> bool:
    """A replay's own checks (``loadtest.replay``'s exit status): every request answered exactly
    once, the ledger equal to the answers where it was read, no answer made before the run began
    (an earlier run's msgids answered from the store) and none refused ``MODIFIED_REQUEST`` (an
    earlier run's msgids sent again with other payloads: a generated day never does that itself)."""
    return (result["exactly_once"]["ok"] and result.get("ledger", {}).get("ok", True)
            and not result.get("answered_before_run") and not result.get("reused_msgids"))


# A generated day's settlements are settled but for the few it means to be refused (persons
# without a filing, bills whose sums do not add up: about 2 %). Far fewer settled means a system
# that refuses for another reason, whose speed is not the platform's (eligibility refusing after
# one hop runs fast): its run fails instead of being measured.
MIN_SETTLED_SHARE = 0.9


def run_passed(result: Mapping[str, Any], min_settled: float = MIN_SETTLED_SHARE) -> bool:
    """``replay_passed``, and at least ``min_settled`` of the settlements answered settled (a run
    that sent none passes that part)."""
    share = settled_share(result)
    return replay_passed(result) and (share is None or share >= min_settled)


def settled_share(result: Mapping[str, Any]) -> float | None:
    """The share of a replay's settlement answers that settled (0 when settlements were sent and
    none was answered; None: no settlement sent)."""
    s = result.get("settlements") or {}
    if s.get("answered"):
        return s["settled"] / s["answered"]
    return 0.0 if s.get("sent") else None
