"""Money is ``Decimal`` yuan, rounded to the fen (0.01) half up in exactly one place."""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache

FEN = Decimal("0.01")
ZERO = Decimal("0.00")
# The largest amount the platform takes, either sign: the ledger keeps amounts as numeric(14, 2),
# and a value beyond it would be refused by Postgres after the handler had priced it. It also keeps
# every amount far inside the context precision (28 digits) that ``to_fen`` would otherwise enforce.
MAX_AMOUNT = Decimal("999999999999.99")
# The largest sum the platform states, either sign: a month's statement for a region pair, a
# prepayment account's balance. A sum of amounts may pass MAX_AMOUNT (two bills of 0.6e12), and a
# statement or status refused as such stopped clearing. Their columns are numeric(24, 2) (clearing's
# migration 013; numeric(16, 2) before, a hundred of the largest bills): MAX_AMOUNT times more
# settlements than an integer counts (2^31), so no month's sum can pass it.
MAX_TOTAL = Decimal("9999999999999999999999.99")
# The usual wire amount: already exactly two decimals (and at most 12 integer digits, so within
# MAX_AMOUNT), so ``Decimal(text)`` is its own fen rounding.
# A zero with a sign ("-0.00") is no such amount: parse_amount reads it as 0.00, and its text is "0.00"
# (the wire's schema has no negative zero; an answer echoing it carried "-0.00").
_TWO_DECIMALS = re.compile(r"(?!-0+\.00(?![0-9]))-?[0-9]{1,12}\.[0-9]{2}")
# Any other amount string must at least be plain ASCII digits, a sign and a point; parse_amount then
# says what is wrong with it (too many decimals, out of range).
_PLAIN = re.compile(r"-?[0-9]+(\.[0-9]+)?")


class MoneyError(ValueError):
    """A value that cannot be an amount of money."""


def to_fen(amount: Decimal) -> Decimal:
    """Round to the fen, half up (DOMAIN.md calculation order, step 8)."""
    # Positional: CPython's decimal parses a ``rounding=`` keyword at ~4x the cost of the rounding
    # itself (0.53 vs 0.13 µs), and this runs ~50 times per settlement.
    return amount.quantize(FEN, ROUND_HALF_UP)


def parse_amount(text: str | Decimal | int, limit: Decimal = MAX_AMOUNT) -> Decimal:
    """Parse a wire amount such as ``"48.89"``; refuse floats, NaN, infinities, sub-fen digits and
    more than ``limit`` either way."""
    if isinstance(text, float):
        raise MoneyError("amounts are strings or decimals, never floats")
    if isinstance(text, bool):  # an int to Decimal(): true settled a bill of 1.00 (a review, session 37)
        raise MoneyError(f"amounts are strings with two decimals, not {str(text).lower()}")
    if isinstance(text, str) and _TWO_DECIMALS.fullmatch(text):
        return Decimal(text)
    if isinstance(text, str) and not _PLAIN.fullmatch(text):
        # Decimal() also reads " 32.52 ", "3_2.52", "3.252e1" and other scripts' digits ("３２.５２"):
        # the wire's amounts are plain decimal strings.
        raise MoneyError(f"not an amount (digits, at most two decimals, e.g. \"48.89\"): {text[:40]!r}")
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise MoneyError(f"not an amount: {str(text)[:40]!r}") from exc
    if not value.is_finite():
        raise MoneyError(f"not a finite amount: {str(text)[:40]!r}")
    if abs(value) > limit:
        raise MoneyError(f"amount out of range (at most {limit} either way): {str(text)[:40]!r}")
    rounded = to_fen(value)
    if value != rounded:
        raise MoneyError(f"amount has more than two decimals: {str(text)[:40]!r}")
    return rounded if rounded else rounded.copy_abs()  # -0.00 is 0.00


def amount_text(text: str | Decimal | int) -> str:
    """An amount's canonical wire text (``"48.89"``), checked as ``parse_amount`` checks it; the
    usual two-decimal string is returned as it is, without building a ``Decimal``."""
    if isinstance(text, str) and _TWO_DECIMALS.fullmatch(text):
        return text
    return fmt(parse_amount(text))


def amount_texts(values: Sequence[str | Decimal | int]) -> list[str]:
    """``amount_text`` of each of ``values``. The usual case, every one already a two-decimal string,
    is checked by one regular expression over them all (an answer's settlement carries seventeen
    amounts); otherwise each is read on its own, and the first that is not an amount is refused."""
    try:
        joined = "\n".join(values)  # type: ignore[arg-type]  # a value that is not a str goes one by one
    except TypeError:
        joined = None
    if joined is not None and _amount_lines(len(values)).fullmatch(joined):
        # A newline is no amount's, so n amounts joined by n - 1 newlines are these n values.
        return list(values)  # type: ignore[arg-type]
    return [amount_text(v) for v in values]


@lru_cache(maxsize=8)
def _amount_lines(n: int) -> re.Pattern[str]:
    one = _TWO_DECIMALS.pattern
    return re.compile(f"(?:{one}\n){{{n - 1}}}{one}" if n else "")


# A ratio's decimals: what a policy or catalogue states (0.80, 0.125) needs few. "1e-900000" is a
# ratio in [0, 1] too, and every answer using it wrote its 900,000 digits.
MAX_RATIO_DECIMALS = 10


def parse_ratio(text: str | Decimal | int, max_decimals: int | None = MAX_RATIO_DECIMALS) -> Decimal:
    """Parse a proportion in [0, 1] such as ``"0.80"``, with at most ``max_decimals`` decimals (None:
    any, for a record stored before the limit)."""
    if isinstance(text, float):
        raise MoneyError("ratios are strings or decimals, never floats")
    if isinstance(text, bool):
        raise MoneyError(f"ratios are strings such as \"0.80\", not {str(text).lower()}")
    if isinstance(text, str) and max_decimals is not None and not _PLAIN.fullmatch(text):
        # As for amounts: Decimal() also reads " 0.5 ", "5e-1", ".5", "0_5" and other scripts' digits.
        # A stored record's ratio (max_decimals None) was taken as it came, and stays readable.
        raise MoneyError(f"not a ratio (digits with a decimal point, e.g. \"0.80\"): {text[:40]!r}")
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise MoneyError(f"not a ratio: {str(text)[:40]!r}") from exc
    if not value.is_finite() or not Decimal(0) <= value <= Decimal(1):
        raise MoneyError(f"a ratio lies between 0 and 1: {str(text)[:40]!r}")
    # Exact, whatever the digits: a ratio is at most 1, so its rounding to the limit has few of them.
    if max_decimals is not None and value != value.quantize(Decimal(1).scaleb(-max_decimals)):
        raise MoneyError(f"a ratio has at most {max_decimals} decimals: {str(text)[:40]!r}")
    # "-0" is a ratio of 0, and is written as one ("0.00"; the wire's schema has no sign).
    return value.copy_abs() if value.is_zero() else value


def spread(amount: Decimal, weights: list[Decimal]) -> list[Decimal]:
    """``amount`` (whole fen) split in proportion to ``weights`` (whole fen, not negative), each part
    whole fen and the parts adding up to ``amount`` exactly: rounded down, and the fen left over go
    to the largest remainders (the first of equal ones). A part is never more than its weight when
    ``amount`` is at most their sum."""
    total = sum(weights, ZERO)
    if not amount or not total:
        return [ZERO for _ in weights]
    exact = [amount * w / total for w in weights]
    parts = [e.quantize(FEN, ROUND_DOWN) for e in exact]
    left = int((amount - sum(parts, ZERO)) / FEN)
    for i in sorted(range(len(parts)), key=lambda i: parts[i] - exact[i])[:left]:
        parts[i] += FEN
    return parts


def fmt(amount: Decimal) -> str:
    """The wire form of an amount: two decimals, as a string."""
    # to_fen written in: an answer writes some thirty amounts, and the call was a third of the cost
    # (test_money.py holds fmt to to_fen).
    text = str(amount.quantize(FEN, ROUND_HALF_UP))
    return text if text != "-0.00" else "0.00"  # a product or sum of zero may carry a sign


def fmt_ratio(ratio: Decimal) -> str:
    """The wire form of a ratio: at least two decimals (``0.80``), trailing zeros beyond kept minimal."""
    # Remembered: a handful of ratios (the policies' and catalogues') are written many times a
    # settlement. Equal Decimals (0.8, 0.80) have the same form, but for the sign of a zero: -0
    # equals 0, so the sign is part of the key.
    return _ratio_text(ratio, ratio.is_signed())


@lru_cache(maxsize=1024)
def _ratio_text(ratio: Decimal, signed: bool) -> str:
    text = format(ratio.normalize(), "f")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"
