"""Turning answers and failures into outgoing Kafka messages: replies, dead letters."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from pydantic import ValidationError

from yidi.contracts import answers
from yidi.contracts.envelope import (DEFAULT_REPLY_TO, OFFERED_INFNOS, ErrCode, ResponseEnvelope, gateway_reply_topic,
                                    respond_time_ms)
from yidi.platform import metrics
from yidi.platform.jsonwire import dumps, loads, loads_request
from yidi.platform.kafka import Answered, Incoming, Outgoing
from yidi.platform.settings import Settings
from yidi.platform.topics import all_topic_specs, dlq, moved_answers

# Any msgid that can be read, not only a valid one: one with a space, a dot or a full-width digit
# is refused, but its answer must still reach the gateway, which matches answers by the msgid it
# sent, as it sent it (JSON escapes and control characters aside).
_MSGID = re.compile(rb'"msgid"\s*:\s*"([^"\\\x00-\x1f]{1,256})"')
_REPLY_TO = re.compile(rb'"reply_to"\s*:\s*"([A-Za-z0-9._\-]{1,200})"')
_INFNO = re.compile(rb'"infno"\s*:\s*"(\d{4})"')
_FACILITY = re.compile(rb'"fixmedins_code"\s*:\s*"([^"]{1,64})"')
_REQID = re.compile(rb'"reqid"\s*:\s*"([^"\\]{1,256})"')


def recover_ids(raw: bytes) -> tuple[str | None, str, str, str]:
    """msgid, reply_to, infno, fixmedins_code of a message that did not parse (CONTRACT.md)."""

    def find(pattern: re.Pattern[bytes], default: str | None) -> str | None:
        m = pattern.search(raw)
        try:
            return m.group(1).decode() if m else default
        except UnicodeDecodeError:  # cut inside a character, or not UTF-8
            return default

    return find(_MSGID, None), recover_reply_to(raw), find(_INFNO, "") or "", find(_FACILITY, "") or ""


# The longest reqid or msgid a refusal is answered under: longer than any the contract takes (64),
# so one refused for its length is answered too, as the gateway sent it.
LONGEST_ANSWERED_ID = 256


def recover_reqid(raw: bytes) -> str | None:
    """The ``reqid`` of a filing or clearing request that did not validate, as it was sent, if it
    can be read: the gateway matches the answer by the reqid it sent. From the JSON when it parses
    (a reqid written with escapes, ``\\uXXXX``, is read as the gateway meant it), else from the
    bytes; None when there is none, only spaces, or none that is text (a reqid not in UTF-8, as in
    a request written in GBK: dead-lettered only, and the stage goes on)."""
    try:
        value = loads(raw)
    except ValueError:
        value = None
    if isinstance(value, dict):
        reqid = value.get("reqid")
        return reqid if isinstance(reqid, str) and answerable_id(reqid, LONGEST_ANSWERED_ID) else None
    m = _REQID.search(raw)
    try:
        reqid = m.group(1).decode() if m else None
    except UnicodeDecodeError:  # cut inside a character, or not UTF-8
        return None
    return reqid if reqid is not None and answerable_id(reqid, LONGEST_ANSWERED_ID) else None


def answerable_msgid(sent: Any) -> str | None:
    """The msgid of a request as the parsed JSON has it, when an answer can carry it back: text
    (escapes read as the gateway meant them: a full-width space too) or a whole number, which the
    answer carries as its digits (the contract's msgid is a string; a gateway that sent a number
    is still answered)."""
    if isinstance(sent, int) and not isinstance(sent, bool) and 0 <= sent < 10**64:
        sent = str(sent)
    return sent if isinstance(sent, str) and answerable_id(sent, LONGEST_ANSWERED_ID) else None


def answerable_id(value: str, longest: int) -> bool:
    """An id (reqid, msgid) an answer can carry back to its sender: some text, not only spaces.
    Any character a JSON string holds will do (orjson escapes control characters)."""
    return 0 < len(value) <= longest and not value.isspace()


def recover_reply_to(raw: bytes, default: str = DEFAULT_REPLY_TO) -> str:
    """The ``reply_to`` of a message that did not parse, if an answer may be written to it; else
    ``default``. A forbidden reply_to is a common reason a request does not parse: never answer
    into a platform topic (or one Kafka refuses)."""
    m = _REPLY_TO.search(raw)
    if m is None:
        return default
    try:
        return gateway_reply_topic(m.group(1).decode(), own=default)
    except ValueError:
        return default


def answer_fallback(settings: Settings, topic: str, shared: str) -> str | None:
    """Where an output on ``topic`` (its full name) goes if the broker refuses that topic for good:
    the moved answers' topic of ``shared``, the shared answer topic of its kind of request
    (``moved_answers``: operations read it, no gateway), when ``topic`` is a gateway's own reply
    topic; None for the shared topic itself and every other platform topic (those are created by
    the services and never moved: yidi.platform.reply_topics)."""
    ns = settings.namespace
    name = topic[len(ns):] if topic.startswith(ns) else topic
    if name == shared or name in _PLATFORM_TOPICS:
        return None
    return settings.topic(moved_answers(shared))


_PLATFORM_TOPICS = frozenset(spec.name for spec in all_topic_specs())


def _responded(respond_time: Any, received: str) -> str:
    """An answer's ``respond_time`` when it is sent for a request received at ``received``: its own,
    unless that is earlier, as is a stored answer's sent again for a resend (the same msgid, later):
    then now, so that no answer says it was made before its request came (a review, session 46).
    Both are ``yyyyMMddHHmmssSSS`` in one zone, so they compare as text."""
    if isinstance(respond_time, str) and respond_time >= received:
        return respond_time
    return max(received, respond_time_ms(time.time_ns() // 1_000_000))


def reply(
    settings: Settings,
    reply_to: str,
    answer: ResponseEnvelope | dict[str, Any],
    *,
    facility: str,
    request_ts_ms: int,
    on_commit: Callable[[], None] | None = None,
) -> Outgoing:
    """The answer to a gateway, on its ``reply_to`` topic, keyed by facility (CONTRACT.md); on the
    moved answers' topic (``answer_fallback``) if the broker refuses ``reply_to`` for good.

    ``answer`` is a ``ResponseEnvelope`` or its wire form (a dict as ``model_dump(mode="json")``
    gives, e.g. an answer kept in the ledger or built by ``answers.answer_wire``). ``reply_to``
    names a gateway's topic as the gateway knows it; the namespace of a test run is prefixed like
    every other topic. ``on_commit`` runs once the answer's batch committed (a per-record counter).
    """
    received = respond_time_ms(request_ts_ms)
    if isinstance(answer, dict):
        if answer.get("refmsg_time") != received:
            answer = {**answer, "refmsg_time": received, "respond_time": _responded(answer.get("respond_time"), received)}
        value, infno, err_code = orjson.dumps(answer), str(answer.get("infno", "")), answer.get("err_code") or "ok"
    else:
        if answer.refmsg_time != received:
            answer = answer.model_copy(update={"refmsg_time": received,
                                               "respond_time": _responded(answer.respond_time, received)})
        value, infno = dumps(answer), answer.infno
        err_code = answer.err_code.value if answer.err_code else "ok"
    return Outgoing(
        topic=settings.topic(reply_to),
        value=value,
        key=facility.encode() or None,
        # The metrics' infno label: a code the platform does not offer (answered UNSUPPORTED, or read
        # from a request that did not parse) is "other", so a gateway cannot add series at will.
        answered=Answered(request_ts_ms, infno if infno in OFFERED_INFNOS else "other", err_code),
        fallback=answer_fallback(settings, settings.topic(reply_to), DEFAULT_REPLY_TO),
        on_commit=on_commit,
    )


# A dead letter keeps at most this much of the message, and the message's own headers only while they
# come to a quarter of it (Kafka's record limit is 1 MiB); yidi-dlq-source says where the whole
# message still is.
DEAD_LETTER_MAX_BYTES = 512 * 1024
# ... and at most this much of its key (a compressed batch carries a key of megabytes in a few
# kilobytes: its dead letter, refused as too large, stopped the stage).
DEAD_LETTER_MAX_KEY_BYTES = 1024


def dead_letter(record: Incoming, reason: str) -> Outgoing:
    """``record`` for its topic's DLQ with the reason; counted once its batch's transaction
    committed (a batch tried again makes its dead letters again)."""
    ours: tuple[tuple[str, bytes], ...] = (
        ("yidi-dlq-reason", reason.encode()[:2000]),
        ("yidi-dlq-source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
    )
    theirs = record.headers
    # As Kafka writes them: each header's name and value (a value may be null) and a few bytes of
    # lengths, so that a hundred thousand empty headers count too.
    if sum(len(k.encode()) + len(v or b"") + 10 for k, v in theirs) > DEAD_LETTER_MAX_BYTES // 4:
        ours += (("yidi-dlq-headers-dropped", str(len(theirs)).encode()),)
        theirs = ()
    value = record.value
    if len(value) > DEAD_LETTER_MAX_BYTES:
        ours += (("yidi-dlq-truncated", str(len(value)).encode()),)
        value = value[:DEAD_LETTER_MAX_BYTES]
    key = record.key
    if key is not None and len(key) > DEAD_LETTER_MAX_KEY_BYTES:
        ours += (("yidi-dlq-key-truncated", str(len(key)).encode()),)
        key = key[:DEAD_LETTER_MAX_KEY_BYTES]
    return Outgoing(topic=dlq(record.topic), value=value, key=key, headers=theirs + ours,
                    on_commit=metrics.DEAD_LETTERS.labels(record.topic).inc)


T = TypeVar("T")


def parse_each(
    records: list[Incoming],
    parse: Callable[[Any], T],
    what: str,
    on_invalid: Callable[[Incoming, str], list[Outgoing]] | None = None,
    *, gateway: bool = False,
) -> tuple[list[tuple[Incoming, T]], list[Outgoing]]:
    """Each record's JSON parsed by ``parse``; one that does not parse is not retried: it goes to
    ``on_invalid`` (by default, the dead-letter topic with the reason), the others go on.
    ``gateway``: the records are a gateway's own requests (``jsonwire.loads_request``), not
    messages between the services."""
    parsed: list[tuple[Incoming, T]] = []
    out: list[Outgoing] = []
    for record in records:
        try:
            value = loads_request(record.value) if gateway else loads(record.value)
            parsed.append((record, parse(value)))
        except (ValidationError, ValueError, ArithmeticError) as exc:  # a data error: refused, never retried
            reason = f"{what} does not validate: {exc}"
            out.extend(on_invalid(record, reason) if on_invalid else [dead_letter(record, reason)])
    return parsed, out


def refuse_by_reqid(
    settings: Settings, record: Incoming, reason: str, *, default_reply_to: str, result: Callable[[str], Any],
    key: bytes | None = None, on_commit: Callable[[], None] | None = None,
) -> list[Outgoing] | None:
    """A filing or clearing request refused as it stands (it does not validate, or the stage cannot
    process it): its dead letter, and ``result(reqid)`` on its ``reply_to`` (``default_reply_to``
    when that is not a legal gateway topic), keyed by ``key`` or the reqid, with ``on_commit`` (the
    result counted). None when the reqid cannot be read: the caller decides what else to do."""
    reqid = recover_reqid(record.value)
    if reqid is None:
        return None
    topic = settings.topic(recover_reply_to(record.value, default=default_reply_to))
    return [dead_letter(record, reason), Outgoing(topic, dumps(result(reqid)), key=key or reqid.encode(),
                                                  fallback=answer_fallback(settings, topic, default_reply_to),
                                                  on_commit=on_commit)]


def recover_word(raw: bytes, field: str, known: frozenset[str]) -> str:
    """The value of ``field`` (a request's ``type`` or ``action``) in a message that did not
    validate, when it is one of ``known``; else "unknown": a metric's label takes no word a sender
    makes up."""
    found = re.search(rb'"' + re.escape(field.encode()) + rb'"\s*:\s*"([a-z_]{1,40})"', raw)
    word = found.group(1).decode() if found else ""
    return word if word in known else "unknown"


def ids_as_parsed(raw: bytes, *, nested: bool = True) -> tuple[str, str, str, str] | None:
    """msgid, reply_to, infno, fixmedins_code of a request as the stages read it (escapes read,
    the last of a repeated key), or (``nested``) of a message between services that carries one
    (its ``request``); None when it does not parse or has no msgid an answer can carry. The byte
    patterns of ``recover_ids`` are for what does not parse: on a request that did, they missed a
    msgid written with escapes, and took the first of a repeated "msgid" (another facility's, say)."""
    try:
        value = loads(raw)
    except ValueError:
        return None
    return ids_of(value, nested=nested)


def ids_of(value: Any, *, nested: bool = True) -> tuple[str, str, str, str] | None:
    """``ids_as_parsed`` of a message already parsed."""
    if not isinstance(value, dict):
        return None
    # A request's own msgid first: one may carry a "request" of its own, which the models ignore.
    envelope = value if "msgid" in value or not nested or not isinstance(value.get("request"), dict) else value["request"]
    reply_to, infno, facility = (envelope.get(k) for k in ("reply_to", "infno", "fixmedins_code"))
    if (msgid := answerable_msgid(envelope.get("msgid"))) is None:
        return None
    try:
        reply_to = gateway_reply_topic(reply_to) if isinstance(reply_to, str) else DEFAULT_REPLY_TO
    except ValueError:
        reply_to = DEFAULT_REPLY_TO
    infno = infno if isinstance(infno, str) and len(infno) == 4 and infno.isascii() and infno.isdigit() else ""
    facility = facility if isinstance(facility, str) and 0 < len(facility) <= 64 else ""
    return msgid, reply_to, infno, facility


def broken(settings: Settings, record: Incoming, reason: str, err_msg: str) -> list[Outgoing]:
    """A message a stage cannot use: dead-letter it with the reason and, when its msgid can be
    recovered, answer the gateway ``INTERNAL_ERROR`` with ``err_msg`` (every request is answered)."""
    msgid, reply_to, infno, facility = ids_as_parsed(record.value) or recover_ids(record.value)
    out = [dead_letter(record, reason)]
    if msgid:
        answer = answers.answer(msgid, infno, err_code=ErrCode.INTERNAL_ERROR, err_msg=err_msg)
        out.append(reply(settings, reply_to, answer, facility=facility, request_ts_ms=record.timestamp_ms))
    return out
