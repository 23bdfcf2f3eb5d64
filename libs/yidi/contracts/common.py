"""Shared field types of the wire: amounts and ratios as two-decimal strings, dates, area codes."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainSerializer, StringConstraints,
                      ValidationError, ValidationInfo)

from yidi.domain.money import MAX_RATIO_DECIMALS, MAX_TOTAL, fmt, fmt_ratio, parse_amount, parse_ratio

# Validation context of a record read back from the platform's own store: it was checked when it
# arrived, under the rules of then (refdata.STORED_CONTEXT).
STORED = "stored"

INF_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# A producer's timestamp (CreateTime topics) may be any 64-bit number: one past the year 9999 (or
# before 1970) is no moment a datetime holds, and reading it raised in the handler at every start.
# A stage takes such a record as arriving now; a message between the services whose request time
# (``request_ts_ms``) is no such moment does not validate.
LATEST_TIMESTAMP_MS = 253_402_214_400_000  # 9999-12-31T00:00:00Z
RESPOND_TIME_FORMAT = "%Y%m%d%H%M%S%f"
# The exact zero-padded shape of INF_TIME_FORMAT, ASCII digits only: such a string parses to the
# same datetime with ``fromisoformat`` as with ``strptime``, about ten times faster.
_INF_TIME_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
_UNPADDED_SHAPE = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2} [0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}")


def wire_time(moment: datetime) -> str:
    """A time as the wire writes it (``INF_TIME_FORMAT``, yyyy-MM-dd HH:mm:ss; a zone is not written):
    the text ``strftime(INF_TIME_FORMAT)`` gives for the years 1000 to 9999 (an ``InfTime`` is from
    1900 on), at a third of its cost. It runs several times per settlement."""
    return moment.isoformat(" ", "seconds")[:19]


def _amount(value: object) -> Decimal:
    if isinstance(value, float):
        raise ValueError("amounts are strings with two decimals, never floats")
    return parse_amount(value)  # type: ignore[arg-type]


def _total(value: object) -> Decimal:
    if isinstance(value, float):
        raise ValueError("amounts are strings with two decimals, never floats")
    return parse_amount(value, MAX_TOTAL)  # type: ignore[arg-type]


def _ratio(value: object, info: ValidationInfo) -> Decimal:
    if isinstance(value, float):
        raise ValueError("ratios are strings, never floats")
    # A stored record's ratio was taken when it arrived: one with more decimals than the limit
    # (added 2026-12-06) stays readable.
    return parse_ratio(value, None if (info.context or {}).get(STORED) else MAX_RATIO_DECIMALS)  # type: ignore[arg-type]


# A count on a bill line: positive, at most a million units, at most four decimals (drugs by weight).
MAX_QUANTITY = Decimal(1_000_000)
_QUANTITY_SHAPE = re.compile(r"[0-9]{1,7}(\.[0-9]{1,4})?")


def _quantity(value: object) -> Decimal:
    if isinstance(value, float):
        raise ValueError("quantities are strings, never floats")
    text = str(value) if isinstance(value, (str, int, Decimal)) else ""
    number = Decimal(text) if _QUANTITY_SHAPE.fullmatch(text) else None
    if number is None or not 0 < number <= MAX_QUANTITY:
        raise ValueError(f"a quantity is a positive number up to {MAX_QUANTITY} with at most 4 decimals, "
                         f"not {str(value)[:40]!r}")
    return number


# A bill line's unit price: the national interface carries it as numeric(16, 6), and a tablet's
# price has three or four decimals (0.0125); the line's amount is cnt × pric rounded to the fen.
_UNIT_PRICE_SHAPE = re.compile(r"[0-9]{1,10}(\.[0-9]{1,6})?")


def _unit_price(value: object) -> Decimal:
    if isinstance(value, float):
        raise ValueError("unit prices are strings, never floats")
    text = str(value) if isinstance(value, (str, int, Decimal)) else ""
    if not _UNIT_PRICE_SHAPE.fullmatch(text):
        raise ValueError(f"a unit price is a number of at most 10 digits and 6 decimals, not {str(value)[:40]!r}")
    return Decimal(text)


def _inf_time(value: object) -> datetime:
    if isinstance(value, datetime):
        return value
    text = str(value)
    if _INF_TIME_SHAPE.fullmatch(text):
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as exc:  # the shape, but no such moment: 2025-02-30, 24:00:00
            raise ValueError(f"{text!r} is not a time that exists ({exc})") from None
    else:
        # What strptime also reads ("2025-1-1 1:1:1") stays accepted: requests of that form were
        # settled before, and a resend of one must reach pricing's msgid check for its stored answer.
        # In ASCII digits and one space: strptime's also read other scripts' digits ("２０２５") and
        # any run of white space, a line break included (a review, session 37).
        try:
            if not _UNPADDED_SHAPE.fullmatch(text):
                raise ValueError(text)
            moment = datetime.strptime(text, INF_TIME_FORMAT)
        except ValueError:
            raise ValueError(f"{text[:40]!r} is not a time of the form yyyy-MM-dd HH:mm:ss") from None
    if moment.year < 1900:
        # Not a time of this platform's; and strftime writes year 1 as "1", which the next hop refuses.
        raise ValueError(f"{text!r} is before 1900: set the facility's clock")
    return moment


def empty_is_not_given(value: Any) -> Any:
    """A field sent as "": gateways following the national interface send it for a field the
    transaction does not use; read as left out (None)."""
    return None if value == "" else value


def _stay_time(value: object) -> datetime | None:
    """A visit's begin or end time: the contract's time, a day alone (yyyy-MM-dd, read as its
    start: eligibility read begntime by its day before these were times), or empty (not given)."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and DAY_SHAPE.fullmatch(value):
        try:
            day = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a day that exists ({exc})") from None
        if day.year < 1900:  # as a time of that day is (a review, session 37: "0001-01-01" was taken)
            raise ValueError(f"{value!r} is before 1900: set the facility's clock")
        return day
    return _inf_time(value)


# A day as the wire writes it (yyyy-MM-dd), in ASCII digits.
DAY_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


Amount = Annotated[Decimal, BeforeValidator(_amount), PlainSerializer(fmt, return_type=str)]
# A sum the platform states (a statement's, an account's balance): up to MAX_TOTAL, as its column.
TotalAmount = Annotated[Decimal, BeforeValidator(_total), PlainSerializer(fmt, return_type=str)]
Ratio = Annotated[Decimal, BeforeValidator(_ratio), PlainSerializer(fmt_ratio, return_type=str)]
Quantity = Annotated[Decimal, BeforeValidator(_quantity), PlainSerializer(lambda d: format(d, "f"), return_type=str)]
UnitPrice = Annotated[Decimal, BeforeValidator(_unit_price), PlainSerializer(lambda d: format(d, "f"), return_type=str)]
InfTime = Annotated[
    datetime, BeforeValidator(_inf_time), PlainSerializer(wire_time, return_type=str)
]
StayTime = Annotated[
    datetime | None, BeforeValidator(_stay_time),
    PlainSerializer(lambda d: d.strftime(INF_TIME_FORMAT) if d else "", return_type=str),
]
Day = Annotated[date, PlainSerializer(lambda d: d.isoformat(), return_type=str)]
AreaCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]  # ASCII digits: Python's \d takes any script's
Code = Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True)]
# A diagnosis (ICD-10), stripped as codes are; empty when not given.
DiseaseCode = Annotated[str, StringConstraints(max_length=64, strip_whitespace=True)]

# What ``strip_whitespace`` strips (pydantic-core: Unicode White_Space). Python's ``str.strip()``
# also strips the separators U+001C..U+001F, which a Code keeps: code read outside a model strips this.
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def _request_id(value: str) -> str:
    if value.strip(WHITE_SPACE) != value:
        raise ValueError("a reqid has no spaces before or after it (its answer carries it back as sent): send the "
                         "request again with the reqid without them; one applied before under that reqid is answered "
                         "as it was")
    return value


# The sender's id of a filing or clearing request. Not stripped as a Code is: the answer carries it
# back as sent, and the gateway matches the answer by it (as a msgid).
RequestId = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_request_id)]


def _wire_day(value: Any) -> Any:
    """A date as the contracts write it, yyyy-MM-dd: pydantic alone read "20250101" (and a JSON
    number) as seconds since 1970, and refused it with a message about datetimes, or took a
    string of ten digits for a day."""
    if isinstance(value, date) or (isinstance(value, str) and DAY_SHAPE.fullmatch(value)):
        return value
    raise ValueError(f"{str(value)[:40]!r} is not a date of the form yyyy-MM-dd")


WireDay = Annotated[date, BeforeValidator(_wire_day)]

# A moment as the feeds write it: ISO 8601, a day and a time of day, then seconds, fraction and zone
# as the field needs them.
TIME_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}")


def _wire_time(value: Any) -> Any:
    """A moment as ISO 8601 text: pydantic alone read a JSON number, or digits such as "20260105",
    as seconds since 1970 in UTC, so an outage posted with a compact date was a window in 1970,
    taken without a word."""
    if isinstance(value, datetime) or (isinstance(value, str) and TIME_SHAPE.match(value)):
        return value
    raise ValueError(f"{str(value)[:40]!r} is not an ISO 8601 time, e.g. 2026-11-23T02:00:00+08:00")


def _years_1900_to_2999(value: datetime) -> datetime:
    if not 1900 <= value.year <= 2999:
        raise ValueError(f"{value.isoformat()} is not in the years 1900 to 2999")
    return value


WireTime = Annotated[datetime, BeforeValidator(_wire_time), AfterValidator(_years_1900_to_2999)]


def code_text(value: Any) -> str:
    """A code of a request's data read outside a model (a key, a look-up): its text, stripped as
    ``Code`` strips it; None is empty."""
    return str(value if value is not None else "").strip(WHITE_SPACE)


class WireModel(BaseModel):
    """Base of wire models: unknown fields are kept (forward compatibility), values validated."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class StrictWireModel(WireModel):
    """Reference-data records: an unknown field is a mistake of the feed, refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def explain(exc: Exception) -> str:
    """Why a message is malformed, for its answer, a dead letter's reason or a log line: at most 5
    reasons of at most 300 characters each, each its field and pydantic's message, without the
    value pydantic quotes beside it (``input_value``: a person record's name and identity card
    number went into the feeds' logs that way, a review of session 38). A reason of our own
    validators may quote what was sent, and a request may be 900 KB: a quote of all of it made an
    answer past Kafka's 1 MiB, which the stage could not write (a review, session 37)."""
    if not isinstance(exc, ValidationError):
        return f"{type(exc).__name__}: {exc}"[:500]
    parts = []
    for err in exc.errors(include_input=False, include_url=False)[:5]:
        # pydantic's "Value error, " says nothing to a cashier; a check of the whole object has no field.
        msg = err["msg"].removeprefix("Value error, ")
        where = ".".join(str(p) for p in err["loc"])
        part = f"{where}: {msg}" if where else msg
        parts.append(part if len(part) <= 300 else part[:297] + "...")
    more = exc.error_count() - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
