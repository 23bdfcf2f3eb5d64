"""The request and response envelopes of CONTRACT.md."""

from __future__ import annotations

import hashlib
import math
import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema, field_validator, model_validator

from yidi.contracts.common import RESPOND_TIME_FORMAT, AreaCode, Code, InfTime, WireModel, empty_is_not_given, wire_time
from yidi.domain.codes import BUSINESS_TZ
from yidi.platform.topics import SHARED_RESULTS, TOPICS


class Infno(StrEnum):
    PERSON_INFO = "1101"
    BENEFIT_CHECK = "2001"
    OUTPATIENT_PRE_SETTLE = "2206"
    OUTPATIENT_SETTLE = "2207"
    OUTPATIENT_CANCEL = "2208"
    INPATIENT_PRE_SETTLE = "2303"
    INPATIENT_SETTLE = "2304"
    INPATIENT_CANCEL = "2305"
    REVERSAL = "2601"
    RECONCILE_TOTALS = "3201"
    RECONCILE_DETAILS = "3202"
    PERSON_CUMULATIVE = "5206"

    @property
    def is_pre_settlement(self) -> bool:
        return self in (Infno.OUTPATIENT_PRE_SETTLE, Infno.INPATIENT_PRE_SETTLE)

    @property
    def is_settlement(self) -> bool:
        return self in (Infno.OUTPATIENT_SETTLE, Infno.INPATIENT_SETTLE)

    @property
    def prices_a_bill(self) -> bool:
        return self.is_pre_settlement or self.is_settlement

    @property
    def is_cancellation(self) -> bool:
        return self in (Infno.OUTPATIENT_CANCEL, Infno.INPATIENT_CANCEL)

    @property
    def changes_state(self) -> bool:
        """A settlement, cancellation or reversal: a fact under its msgid (a resend gets the stored answer)."""
        return self.is_settlement or self.is_cancellation or self is Infno.REVERSAL

    @property
    def is_inpatient(self) -> bool:
        return self in (Infno.INPATIENT_PRE_SETTLE, Infno.INPATIENT_SETTLE, Infno.INPATIENT_CANCEL)


# The transaction codes the platform offers (CONTRACT.md); another four-digit code is UNSUPPORTED.
OFFERED_INFNOS = frozenset(i.value for i in Infno)


class ErrCode(StrEnum):
    INVALID_INPUT = "INVALID_INPUT"
    NOT_INSURED = "NOT_INSURED"
    NOT_FILED = "NOT_FILED"
    NOT_QUALIFIED = "NOT_QUALIFIED"
    REGION_UNAVAILABLE = "REGION_UNAVAILABLE"
    MODIFIED_REQUEST = "MODIFIED_REQUEST"
    ALREADY_SETTLED = "ALREADY_SETTLED"
    ALREADY_UNDONE = "ALREADY_UNDONE"
    UNKNOWN_FACILITY = "UNKNOWN_FACILITY"
    NOT_FOUND = "NOT_FOUND"
    NO_POLICY = "NO_POLICY"
    PREPAYMENT_EXHAUSTED = "PREPAYMENT_EXHAUSTED"
    UNSUPPORTED = "UNSUPPORTED"
    INTERNAL_ERROR = "INTERNAL_ERROR"


DEFAULT_REPLY_TO = "settlement.results"
# Topics the platform reads, or writes messages of its own kind to (statements, prepayment alerts,
# month closes): an answer must never be written into one of them. Taken from the platform's topic
# list, less the shared answer topics (``SHARED_RESULTS``: a request may name its own kind's, not
# another's, whose readers expect other answers), so that a topic added to the list is refused too.
# A list kept by hand left out clearing.periods: an answer written there stopped yidi-recover and
# reached the regions reading month closes (a review, session 48).
PLATFORM_INPUT_PREFIXES = ("refdata.", "platform.") + tuple(
    spec.name for spec in TOPICS if spec.name not in SHARED_RESULTS)


def gateway_reply_topic(value: str, own: str = DEFAULT_REPLY_TO) -> str:
    """``value`` if an answer to a request whose shared answer topic is ``own`` may be written to it:
    a legal Kafka topic name that is not one of Kafka's internal topics (``__consumer_offsets``,
    ``__transaction_state``: a client cannot write them, and a stage would retry the answer
    forever), nor a topic the platform reads or writes its own messages to, nor another kind of
    request's shared answer topic, nor collides with one. Kafka refuses "." and "..", and a name
    that differs from an existing topic's only by "." against "_"."""
    if value in (".", "..") or not _TOPIC_NAME.fullmatch(value):
        raise ValueError(f"reply_to {value[:60]!r} is not a legal Kafka topic name")
    folded = value.replace("_", ".")
    if folded.startswith(".."):  # "__consumer_offsets", or a name Kafka would find colliding with one
        raise ValueError(f"reply_to {value!r} is, or collides with, a name Kafka keeps for its internal topics")
    if folded.startswith(PLATFORM_INPUT_PREFIXES) or folded.endswith(".dlq"):
        raise ValueError(f"reply_to {value!r} is a topic of the platform's own; name the gateway's own reply topic")
    for shared in SHARED_RESULTS:
        if folded == shared and value != own:
            raise ValueError(
                f"reply_to {value!r} collides with {shared!r} (Kafka treats '.' and '_' alike)" if value != shared
                else f"reply_to {value!r} is where another kind of request is answered; name the gateway's own "
                     f"reply topic or leave it out ({own})")
    return value


_TOPIC_NAME_PATTERN = r"^[A-Za-z0-9._\-]{1,200}$"
_TOPIC_NAME = re.compile(_TOPIC_NAME_PATTERN)


def reply_to_type(own: str) -> Any:
    """The type of a request's ``reply_to`` whose shared answer topic is ``own``: a gateway's topic
    (``gateway_reply_topic``); left out, ``""`` or ``null``, ``own`` (CONTRACT.md: "default
    settlement.results"). Gateways following the national interface send ``""`` for a field they do
    not use, as ``insuplc_admdvs`` allows: refusing it refused every request of theirs."""
    return Annotated[
        str,
        BeforeValidator(lambda value: own if value is None or value == "" else value),
        AfterValidator(lambda value: gateway_reply_topic(value, own=own)),
        WithJsonSchema({"anyOf": [{"type": "string", "pattern": _TOPIC_NAME_PATTERN}, {"const": ""}, {"type": "null"}],
                        "description": f"the topic for the answer; left out, \"\" or null: {own}"}),
    ]


ReplyTo = reply_to_type(DEFAULT_REPLY_TO)


class RequestEnvelope(WireModel):
    """One request from a hospital gateway (key = ``psn_no`` when the input has one)."""

    infno: Infno
    msgid: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    mdtrtarea_admvs: AreaCode
    insuplc_admdvs: Annotated[AreaCode | None, WithJsonSchema({
        "anyOf": [{"type": "string", "pattern": "^[0-9]{6}$"}, {"const": ""}, {"type": "null"}],
    })] = Field(default=None, description="the insured region; required when the input has psn_no, else absent "
                                          "or empty")
    infver: str = "V1.0"
    opter_type: str = "1"
    opter: str = ""
    opter_name: str = ""
    inf_time: InfTime
    fixmedins_code: Code
    fixmedins_name: str = ""
    reply_to: ReplyTo = DEFAULT_REPLY_TO
    input: dict[str, Any]

    @model_validator(mode="after")
    def _msgid_is_the_facilitys(self) -> RequestEnvelope:
        # CONTRACT.md: the facility's code, then the time and a sequence. The msgid is the
        # idempotency key across every facility: one that did not begin with the sender's code
        # could be another facility's (B's "0001" answered MODIFIED_REQUEST for A's settlement, or
        # a settlement of A's blocked by B sending its msgid first).
        if not self.msgid.startswith(self.fixmedins_code):
            raise ValueError(f"msgid {self.msgid!r} does not begin with fixmedins_code {self.fixmedins_code!r} "
                             "(CONTRACT.md: the facility's code, yyyyMMddHHmmss, a 4-digit sequence)")
        return self

    @field_validator("insuplc_admdvs", mode="before")
    @classmethod
    def _empty_is_not_given(cls, value: Any) -> Any:
        # Required only when the input has psn_no (CONTRACT.md); gateways following the national
        # interface send "" where it does not apply (3201/3202), as for other envelope fields.
        return empty_is_not_given(value)

    @property
    def data(self) -> dict[str, Any]:
        data = self.input.get("data")
        return data if isinstance(data, dict) else {}

    def ref_wire(self) -> dict[str, Any]:
        """This request's ``RequestRef`` in wire form: what later stages need to answer it."""
        return {
            "infno": self.infno.value,
            "msgid": self.msgid,
            "mdtrtarea_admvs": self.mdtrtarea_admvs,
            "insuplc_admdvs": self.insuplc_admdvs,
            "inf_time": wire_time(self.inf_time),
            "fixmedins_code": self.fixmedins_code,
            "reply_to": self.reply_to,
        }

    def payload_hash(self) -> str:
        """Hash of the canonical payload: what the request asks, not when or where it is answered.

        ``msgid`` + this hash is the idempotency key: the same msgid with another hash is a
        modified request (ARCHITECTURE.md).
        """
        canonical = {
            "infno": self.infno.value,
            "mdtrtarea_admvs": self.mdtrtarea_admvs,
            "insuplc_admdvs": self.insuplc_admdvs,
            "fixmedins_code": self.fixmedins_code,
            "input": self.input,
        }
        return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


class RequestRef(WireModel):
    """A request without its input: what the stages after pricing need to answer and file it.

    Validated where the request entered (``RequestEnvelope``); carried between the services so the
    bill is not serialised and parsed again at every hop.
    """

    infno: Infno
    msgid: str
    mdtrtarea_admvs: str
    insuplc_admdvs: str | None = None
    inf_time: InfTime
    fixmedins_code: str
    reply_to: str = DEFAULT_REPLY_TO


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
# The last second written (POSIX seconds, its text to the second): the answers of a batch share it.
_last_second: tuple[int, str] = (-1 << 62, "")


def respond_time(moment: datetime) -> str:
    """``refmsg_time``/``respond_time`` (``yyyyMMddHHmmssSSS``) in China time, the zone of every
    other time on the wire (``inf_time``, ``setl_time``); a naive ``moment`` is read as UTC. The
    milliseconds are cut, not rounded."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return respond_time_ms((aware - _EPOCH) // _MILLISECOND)


def respond_time_ms(ms: int) -> str:
    """``respond_time`` of a moment given in milliseconds since the epoch (a Kafka timestamp). The
    text to the second is made once a second: it runs for every answer, and the answers of a batch
    share it (tests/unit/test_contracts.py compares both with ``strftime`` on random moments)."""
    global _last_second
    second, milli = divmod(ms if isinstance(ms, int) else math.floor(ms), 1000)
    last = _last_second
    if last[0] != second:
        last = _last_second = (second, datetime.fromtimestamp(second, BUSINESS_TZ).strftime(RESPOND_TIME_FORMAT[:12]))
    return f"{last[1]}{milli:03d}"


class ResponseEnvelope(WireModel):
    """The one answer to one request (key = ``fixmedins_code``)."""

    infcode: int
    inf_refmsgid: str
    refmsg_time: str
    respond_time: str
    msgid: str
    infno: str = ""
    err_code: ErrCode | None = None
    err_msg: str = ""
    output: dict[str, Any] = Field(default_factory=dict)
