"""Generate the contract documents from the code: docs/topics.md, docs/schemas/*.json, docs/asyncapi.yaml.

    .venv/bin/python -m yidi.contracts.schemas           # (re)write the files
    .venv/bin/python -m yidi.contracts.schemas --check   # exit 1 and list the files that are stale

The topics come from ``yidi.platform.topics`` (names, keys, partitions, compaction, DLQs); the
schemas from the pydantic wire models of this package. What the code does not say by itself —
which model travels on which topic, who writes it and which consumer group reads it — is
declared once below in ``TOPIC_CONTRACTS``; generation fails when a topic of ``TOPICS`` or a
wire model of this package is left out, so neither can be added without being documented.

Inbound messages (what gateways, regions and filing offices send) are described as the models
*validate* them; outbound and inter-service messages as the models *serialize* them.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import inspect
import json
import pkgutil
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

import yidi.contracts
from yidi.contracts import common
from yidi.contracts.clearing import (
    ClearingResult,
    ConfirmStatement,
    FundPrepayment,
    WithdrawPrepayment,
    PeriodClosed,
    PrepaymentAlert,
    PrepaymentStatus,
    QueryFacilityDay,
    QueryMonth,
    QueryStatement,
    QueryPairMonth,
    QueryPrepayment,
    QuerySettlement,
    Reconcile,
    ReconcileDetailsInput,
    ReconcileTotalsInput,
    RunMonth,
    Statement,
)
from yidi.contracts.envelope import DEFAULT_REPLY_TO, ErrCode, Infno, RequestEnvelope, ResponseEnvelope
from yidi.contracts.filing import FilingEvent, FilingRequest, FilingResult
from yidi.contracts.internal import EligibleWork, PricedWork, RefusalNotice
from yidi.contracts.refdata import (
    CatalogueRecord,
    FacilityRecord,
    PersonRecord,
    PolicyRecord,
    RegionStatusRecord,
)
from yidi.contracts.outputs import (
    BenefitCheckEligible,
    BenefitCheckRefused,
    CumulativeOutput,
    PersonInfoOutput,
    ReconcileDetailsOutput,
    ReconcileTotalsOutput,
    UndoOutput,
)
from yidi.contracts.settlement import (
    CancelInput,
    CumulativeInput,
    PersonQueryInput,
    ReversalInput,
    SettlementInput,
    SettlementOutput,
)
from yidi.platform import topics as T
from yidi.platform.topics import all_topic_specs, dlq, feed_group

ROOT = Path(__file__).resolve().parents[3]
GENERATOR = "python -m yidi.contracts.schemas"
Mode = Literal["validation", "serialization"]

# --------------------------------------------------------------------------------------------
# Which model is on the wire in which form.

# Inbound: described as they are validated (what a sender may send).
INBOUND: tuple[type[BaseModel], ...] = (
    RequestEnvelope,
    SettlementInput,
    CancelInput,
    ReversalInput,
    PersonQueryInput,
    CumulativeInput,
    ReconcileTotalsInput,
    ReconcileDetailsInput,
    FilingRequest,
    PersonRecord,
    FacilityRecord,
    PolicyRecord,
    CatalogueRecord,
    RegionStatusRecord,
    FundPrepayment,
    WithdrawPrepayment,
    RunMonth,
    ConfirmStatement,
    QuerySettlement,
    QueryFacilityDay,
    QueryPairMonth,
    QueryMonth,
    QueryStatement,
    QueryPrepayment,
)
# Outbound and between services: described as they are serialized (what is published).
OUTBOUND: tuple[type[BaseModel], ...] = (
    ResponseEnvelope,
    SettlementOutput,
    PersonInfoOutput,
    BenefitCheckEligible,
    BenefitCheckRefused,
    CumulativeOutput,
    UndoOutput,
    ReconcileTotalsOutput,
    ReconcileDetailsOutput,
    FilingResult,
    FilingEvent,
    EligibleWork,
    PricedWork,
    RefusalNotice,
    Reconcile,
    ClearingResult,
    Statement,
    PrepaymentAlert,
    PrepaymentStatus,
    PeriodClosed,
)


def wire_models() -> dict[str, tuple[type[BaseModel], Mode]]:
    out: dict[str, tuple[type[BaseModel], Mode]] = {}
    for model in INBOUND:
        out[model.__name__] = (model, "validation")
    for model in OUTBOUND:
        out[model.__name__] = (model, "serialization")
    return out


# --------------------------------------------------------------------------------------------
# JSON Schema: pydantic's, with the project's string-encoded types spelt out.

AMOUNT = {"type": "string", "pattern": r"^-?\d{1,12}(\.\d{1,2})?$",
          "description": "yuan, at most 12 integer digits and two decimals, as a string (never a JSON float)"}
TOTAL_AMOUNT = {"type": "string", "pattern": r"^-?\d{1,22}(\.\d{1,2})?$",
                "description": "yuan, a sum (a statement's, an account's balance): at most 22 integer digits and two "
                               "decimals, as a string (never a JSON float)"}
RATIO = {"type": "string", "pattern": r"^(0(\.\d+)?|1(\.0+)?)$", "description": "a proportion between 0 and 1, as a string"}
QUANTITY = {"type": "string", "pattern": r"^\d{1,7}(\.\d{1,4})?$",
            "description": "a positive number up to 1000000 with at most 4 decimals, as a string"}
UNIT_PRICE = {"type": "string", "pattern": r"^\d{1,10}(\.\d{1,6})?$",
              "description": "yuan per unit, at most 10 integer digits and 6 decimals, as a string"}
INF_TIME = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$", "description": "yyyy-MM-dd HH:mm:ss, the sender's clock in China Standard Time (UTC+08:00), without a zone"}
STAY_TIME = {"anyOf": [{"type": "string", "pattern": r"^(\d{4}-\d{2}-\d{2}( \d{2}:\d{2}:\d{2})?)?$"}, {"type": "null"}],
             "description": "yyyy-MM-dd HH:mm:ss (or yyyy-MM-dd, read as its start), the sender's clock in China Standard "
                            "Time (UTC+08:00), without a zone; empty or null "
                            "when not given"}
DAY = {"type": "string", "format": "date"}


def _annotated_funcs(alias: Any) -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
    """The before-validator and the serializer of an ``Annotated`` alias of ``common``."""
    before = ser = None
    for meta in typing.get_args(alias)[1:]:
        if type(meta).__name__ == "BeforeValidator":
            before = meta.func
        elif type(meta).__name__ == "PlainSerializer":
            ser = meta.func
    return before, ser


_SPECIAL: dict[int, dict[str, Any]] = {}
for _alias, _schema in ((common.Amount, AMOUNT), (common.TotalAmount, TOTAL_AMOUNT), (common.Ratio, RATIO), (common.Quantity, QUANTITY),
                        (common.UnitPrice, UNIT_PRICE),
                        (common.InfTime, INF_TIME), (common.StayTime, STAY_TIME), (common.Day, DAY)):
    for _func in _annotated_funcs(_alias):
        if _func is not None:
            _SPECIAL[id(_func)] = _schema


class WireJsonSchema(GenerateJsonSchema):
    """Amounts, ratios, quantities and times are strings on the wire; say so, with their format."""

    def generate_inner(self, schema: Any) -> Any:
        if isinstance(schema, dict):
            func = None
            if schema.get("type") == "function-before":
                func = schema["function"]["function"]
            elif self.mode == "serialization" and isinstance(schema.get("serialization"), dict):
                func = schema["serialization"].get("function")
            if func is not None and id(func) in _SPECIAL:
                special = copy.deepcopy(_SPECIAL[id(func)])
                inner = schema.get("schema") or {}
                if special is AMOUNT or special == AMOUNT:
                    if inner.get("gt") == 0 or inner.get("ge") == 0:  # Field(ge=0) / Field(gt=0)
                        positive = "gt" in inner
                        special["pattern"] = special["pattern"].replace("^-?", "^")
                        special["description"] += ", greater than 0" if positive else ", not negative"
                return special
        return super().generate_inner(schema)

    def field_is_required(self, field: Any, total: bool) -> bool:
        """An outbound message is written with every field of its model (``jsonwire.dumps`` and the
        settlement path's dicts, which tests/unit/test_wire_forms.py holds to the models' dumps):
        a field with a default is still there, null when it says nothing. So the serialization
        form requires every field, and a gateway's generated client need not treat them as
        optional; a field left out when empty (``exclude_if``) stays optional."""
        if self.mode == "serialization" and field.get("type") != "typed-dict-field" and "serialization_exclude_if" not in field:
            return True
        return super().field_is_required(field, total)


def _signless(node: Any) -> None:
    """An optional amount keeps its ``ge``/``gt`` beside the string schema: say it the string's way."""
    if isinstance(node, dict):
        bound = "gt" if "gt" in node else "ge" if "ge" in node else None
        if bound and node.get("type") == "string" and node.get("pattern") == AMOUNT["pattern"] and node[bound] == 0:
            del node[bound]
            node["pattern"] = AMOUNT["pattern"].replace("^-?", "^")
            node["description"] = node["description"] + (", greater than 0" if bound == "gt" else ", not negative")
        for value in node.values():
            _signless(value)
    elif isinstance(node, list):
        for value in node:
            _signless(value)


def model_schema(model: type[BaseModel], mode: Mode) -> dict[str, Any]:
    schema = model.model_json_schema(mode=mode, schema_generator=WireJsonSchema)
    if mode == "serialization":
        # An inbound model inside an outbound message travels as it was received (eligibility
        # passes the gateway's request on as its bytes): it holds what its sender was required to
        # send, not every field.
        for name, definition in schema.get("$defs", {}).items():
            inbound = next((m for m in INBOUND if m.__name__ == name), None)
            if inbound is not None and "properties" in definition:
                taken = inbound.model_json_schema(mode="validation", schema_generator=WireJsonSchema)
                definition["required"] = taken.get("required", [])
                if not definition["required"]:
                    del definition["required"]
    _signless(schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{model.__name__}.json",
        "$comment": f"Generated by `{GENERATOR}` from {model.__module__}.{model.__name__} "
                    f"({mode} form). Do not edit.",
        **schema,
    }


def _contract_model_names() -> set[str]:
    """Every pydantic model defined in the contracts package (except base classes)."""
    names = set()
    for info in pkgutil.iter_modules(yidi.contracts.__path__):
        if info.name == "schemas":
            continue
        module = importlib.import_module(f"yidi.contracts.{info.name}")
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseModel) and obj.__module__ == module.__name__
                    and obj not in (common.WireModel, common.StrictWireModel) and not name.startswith("_")):
                names.add(name)
    return names


# --------------------------------------------------------------------------------------------
# Topics: what travels on each, who writes it, who reads it.

@dataclass(frozen=True, slots=True)
class Reader:
    service: str
    group: str  # before the namespace prefix
    kind: Literal["stage", "feed"]


@dataclass(frozen=True, slots=True)
class TopicContract:
    messages: tuple[str, ...]  # names in MESSAGES
    writers: tuple[str, ...]  # platform services that publish it
    readers: tuple[Reader, ...] = ()
    external_writers: str = ""
    external_readers: str = ""
    notes: str = ""


def _feed(service: str, topic: str) -> Reader:
    return Reader(service, feed_group(service, topic), "feed")


def _stage(service: str, group: str) -> Reader:
    return Reader(service, group, "stage")


# Stage consumer groups, as the services' app.py files name them.
ELIGIBILITY_REQUESTS = _stage("eligibility", T.ELIGIBILITY_STAGE_GROUP)
ELIGIBILITY_FILINGS = _stage("eligibility", feed_group("eligibility", T.FILING_EVENTS))  # stage eligibility-filings
PRICING_ELIGIBLE = _stage("pricing", "yidi-pricing-eligible")
CLEARING_PRICED = _stage("clearing", "yidi-clearing-priced")
CLEARING_ADMIN = _stage("clearing", "yidi-clearing-requests")  # stage clearing-admin
FILING_REQUESTS = _stage("filing", T.FILING_STAGE_GROUP)
FILING_PERSONS = _stage("filing", T.FILING_PERSONS_GROUP)  # stage filing-persons

CLEARING_REQUEST_MESSAGES = ("FundPrepayment", "WithdrawPrepayment", "RunMonth", "ConfirmStatement", "QuerySettlement", "QueryFacilityDay",
                             "QueryPairMonth", "QueryMonth", "QueryStatement", "QueryPrepayment", "Reconcile")

# An answer whose own reply topic the broker refuses for good goes to its kind's moved answers'
# topic, not here (yidi.platform.reply_topics, topics.moved_answers).
_MOVED_HERE = ("An answer whose `reply_to` the broker refuses for good goes to `{moved}` instead (Moved answers, "
               "below), not here: every gateway that names no `reply_to` reads this topic.")

TOPIC_CONTRACTS: dict[str, TopicContract] = {
    T.SETTLEMENT_REQUESTS: TopicContract(
        messages=("SettlementRequest", "CancelRequest", "ReversalRequest", "PersonQueryRequest",
                  "ReconcileTotalsRequest", "ReconcileDetailsRequest", "CumulativeRequest"),
        writers=(),
        readers=(ELIGIBILITY_REQUESTS,),
        external_writers="hospital gateways (`yidi-gateway send`, `yidi.client.GatewayClient`)",
        notes="Anything that does not parse, or does not validate against its transaction's input model, "
              "is answered `INVALID_INPUT` (when `msgid` can be recovered) and dead-lettered. A four-digit "
              "`infno` the contract does not list is answered `UNSUPPORTED`. "
              "3201 and 3202 are checked the same way (a malformed one answered `INVALID_INPUT` and "
              "dead-lettered), then passed on to `clearing.requests`, which answers them.",
    ),
    T.SETTLEMENT_ELIGIBLE: TopicContract(
        messages=("EligibleWork",),
        writers=("eligibility",),
        readers=(PRICING_ELIGIBLE,),
        notes="Carries the request itself, its payload hash, the request's Kafka timestamp, and either "
              "the terms eligibility established (person snapshot, facility level, basis, filing) or the "
              "refusal. Cancellations and reversals pass unchecked; a 5206 passes with the person's insurance.",
    ),
    T.SETTLEMENT_PRICED: TopicContract(
        messages=("PricedWork", "RefusalNotice"),
        writers=("pricing",),
        readers=(CLEARING_PRICED,),
        notes="Settlements (2207/2304) with their answer and ledger facts; cancellations (2208/2305) and "
              "reversals (2601) with their answer and the `setl_id` they undo; under `YIDI_PREPAYMENT_POLICY=refuse`, "
              "RefusalNotices of bills pricing refused `PREPAYMENT_EXHAUSTED` (answered by pricing; an account's "
              "first on each instance, then at most one a minute), from which clearing warns the insured region.",
    ),
    T.SETTLEMENT_RESULTS: TopicContract(
        messages=("SettlementAnswer", "Answer"),
        writers=("eligibility", "pricing", "clearing"),
        external_readers="hospital gateways; a request's `reply_to` names another topic for its answer",
        notes="The default `reply_to`. Answers are published by the service that decides them: "
              "eligibility (1101, 2001, 5206's refusals, malformed requests), pricing (refusals, pre-settlements, 5206, "
              "`MODIFIED_REQUEST`, `ALREADY_SETTLED`, `NO_POLICY`, `NOT_FOUND`, `PREPAYMENT_EXHAUSTED`), clearing (settlements, "
              "`ALREADY_UNDONE` to a settlement sent again after it was undone, "
              "cancellations, reversals; 3201/3202 from its clearing-admin stage). " + _MOVED_HERE.format(moved=T.moved_answers(T.SETTLEMENT_RESULTS)),
    ),
    T.FILING_REQUESTS: TopicContract(
        messages=("FilingRequest",),
        writers=(),
        readers=(FILING_REQUESTS,),
        external_writers="filing offices and self-service channels (`yidi-gateway file`), `yidi-load` (section `filings`)",
        notes="A request that does not validate is dead-lettered and, when its `reqid` can be read, refused "
              "(`accepted: false`, with the reason) on its `reply_to` (on `filing.results` when that is not a "
              "legal gateway topic).",
    ),
    T.FILING_RESULTS: TopicContract(
        messages=("FilingResult",),
        writers=("filing", "eligibility"),
        external_readers="the requester; a request's `reply_to` names another topic for its result",
        notes="The default `reply_to` of a filing request. Refusals and `history` are answered by filing; "
              "an accepted change is answered by eligibility once its mirror and cache have applied it. A refusal "
              "of a request that did not validate is keyed as the request was (its record's key), or by its "
              "`reqid` when it had none. " + _MOVED_HERE.format(moved=T.moved_answers(T.FILING_RESULTS)),
    ),
    T.FILING_EVENTS: TopicContract(
        messages=("FilingEvent",),
        writers=("filing",),
        readers=(ELIGIBILITY_FILINGS,),
        notes="Each event carries the requester's `result` and `reply_to`: eligibility applies the event to its "
              "mirror (if its `filing.version` is newer) and cache, then publishes the result. An `ended` event "
              "(a long-term filing ended because the person's insurance changed, R7) has no result and no "
              "`reply_to`.",
    ),
    T.REFDATA_PERSONS: TopicContract(
        messages=("PersonRecord",),
        writers=(),
        readers=(_feed("eligibility", T.REFDATA_PERSONS), FILING_PERSONS),
        external_writers="insured regions; `yidi-load` (section `persons`)",
        notes="Filing reads it too (stage `filing-persons`): a change of a person's insured region, fund "
              "(`insutype`) or `active` ends the long-term filings under the old insurance (R7). "
              "Compacted: the last record written per `psn_no` is kept; a record is kept at least a week "
              "before a later one may replace it (`min.compaction.lag.ms`): a stage down or behind for "
              "less than that still reads every change of a person (a stop, then a resume), which filing "
              "and eligibility both need. Eligibility keeps the newest by "
              "`updated_at` (an older record is ignored), so after a reload of an earlier file the topic's "
              "tail and eligibility's state differ until the region publishes again. There is no delete; "
              "publish `active: false`.",
    ),
    T.REFDATA_FACILITIES: TopicContract(
        messages=("FacilityRecord",),
        writers=(),
        readers=(_feed("eligibility", T.REFDATA_FACILITIES),),
        external_writers="treating regions; `yidi-load` (section `facilities`)",
        notes="Compacted: the latest record per `fixmedins_code` is the facility's state.",
    ),
    T.REFDATA_POLICIES: TopicContract(
        messages=("PolicyRecord",),
        writers=(),
        readers=(_feed("pricing", T.REFDATA_POLICIES),),
        external_writers="insured regions; `yidi-load` (section `policies`)",
        notes="Not compacted: every version is kept. A version is identified by "
              "(`insuplc_admdvs`, `insutype`, `begndate`); re-publishing that triple replaces it.",
    ),
    T.REFDATA_CATALOGUE: TopicContract(
        messages=("CatalogueRecord",),
        writers=(),
        readers=(_feed("pricing", T.REFDATA_CATALOGUE),),
        external_writers="treating regions; `yidi-load` (section `catalogue`)",
        notes="Not compacted: every version is kept. A version is identified by "
              "(`mdtrtarea_admvs`, `hilist_code`, `begndate`).",
    ),
    T.REGION_STATUS: TopicContract(
        messages=("RegionStatusRecord",),
        writers=(),
        readers=(_feed("eligibility", T.REGION_STATUS),),
        external_writers="platform operators; `yidi-load` (section `region_status`)",
        notes="A window is identified by `status_id`; re-publish it with `cancelled: true` to lift it, for good: "
              "published again without it, a cancelled window stays cancelled (eligibility logs `was cancelled "
              "and stays so`); announce it again under a new `status_id`.",
    ),
    T.CLEARING_REQUESTS: TopicContract(
        messages=CLEARING_REQUEST_MESSAGES,
        writers=("eligibility",),
        readers=(CLEARING_ADMIN,),
        external_writers="clearing clerks and regions (`yidi-gateway clearing`)",
        notes="One JSON object with a `type`: `fund`, `withdraw`, `run_month`, `confirm`, the `query_*` requests, or "
              "`reconcile` (a facility's 3201/3202, passed on by eligibility). Applied once by `reqid`; "
              "queries and reconciliations change nothing and are not recorded.",
    ),
    T.CLEARING_RESULTS: TopicContract(
        messages=("ClearingResult",),
        writers=("clearing",),
        external_readers="the requester; a request's `reply_to` names another topic for its result",
        notes="The default `reply_to` of a clearing request; 3201/3202 are answered on the facility's "
              "`reply_to` as `ResponseEnvelope`s instead. " + _MOVED_HERE.format(moved=T.moved_answers(T.CLEARING_RESULTS)),
    ),
    T.CLEARING_STATEMENTS: TopicContract(
        messages=("Statement",),
        writers=("clearing",),
        external_readers="insured and treating regions",
        notes="Published when a month is cleared (`issued`) and again on each confirmation (`settled` once "
              "both sides have confirmed). Key `<insuplc_admdvs>-<mdtrtarea_admvs>`.",
    ),
    T.CLEARING_ALERTS: TopicContract(
        messages=("PrepaymentAlert",),
        writers=("clearing",),
        external_readers="insured regions, operators",
        notes="An account is alerted once when its balance falls below `warn_share` of what was advanced "
              "(`funded`): low; and once more when it runs out (below zero: `shortfall` above 0.00, which tells "
              "the two apart). A balance that falls straight below zero gets one alert. Each level is re-armed "
              "when a `fund` or a month's clearing (a statement both sides confirmed) lifts the balance back "
              "above it; what cancellations give back does not re-arm it. Under `YIDI_PREPAYMENT_POLICY=refuse` an "
              "account is also alerted once when pricing refuses a bill it cannot cover (`refused_draw` and "
              "`refused_left` given; null in the other alerts), re-armed by a `fund` or a month's clearing. An alert is published again when the batch that set it off is handled again after its Postgres commit (its first publication never committed), or its settlement or clearing request is resent, while the account is still at that level (or still warned of refusals): at least once, so a reader de-duplicates by account and kind (a refusal alert, or the level its `shortfall` tells). Key `<insuplc_admdvs>-<mdtrtarea_admvs>`.",
    ),
    T.CLEARING_PERIODS: TopicContract(
        messages=("PeriodClosed",),
        writers=("clearing",),
        external_readers="`yidi-recover clearing`; regions and operators who follow month closes",
        notes="Published when a month's run has totalled it, with its statements (a close without a cut, made by "
              "a version before session 45, is not): when it closed, and its cut (where clearing's settlement stage "
              "stood on each partition of `settlement.priced`: a settlement below its partition's cut was "
              "entered before the close, one at or past it lands after the month). After a restore of "
              "clearing's database `yidi-recover clearing --apply` writes the closes the database lacks, so that "
              "the settlements handled again land where they did. Key `<setlym>`.",
    ),
    T.PREPAYMENT_STATUS: TopicContract(
        messages=("PrepaymentStatus",),
        writers=("clearing",),
        readers=(_feed("pricing", T.PREPAYMENT_STATUS),),
        notes="Each account's balance after every change, with the account's move count as `version`; pricing "
              "mirrors it (keeping the highest version) for `YIDI_PREPAYMENT_POLICY=refuse`. "
              "Key `<insuplc_admdvs>-<mdtrtarea_admvs>`.",
    ),
}


# Where a writer publishes only some of a topic's messages.
WRITER_MESSAGES: dict[tuple[str, str], tuple[str, ...]] = {
    (T.SETTLEMENT_RESULTS, "eligibility"): ("Answer",),
    (T.CLEARING_REQUESTS, "eligibility"): ("Reconcile",),
}


@dataclass(frozen=True, slots=True)
class Message:
    title: str
    summary: str
    payload: Callable[[], dict[str, Any]]
    key: str
    models: tuple[str, ...]  # schema files the payload refers to


def _ref(model: str) -> dict[str, Any]:
    return {"$ref": f"./schemas/{model}.json"}


def _request(infnos: tuple[Infno, ...], body: str) -> Callable[[], dict[str, Any]]:
    def payload() -> dict[str, Any]:
        return {
            "allOf": [
                _ref("RequestEnvelope"),
                {
                    "type": "object",
                    "properties": {
                        "infno": {"type": "string", "enum": [i.value for i in infnos]},
                        "input": {"type": "object", "required": ["data"], "properties": {"data": _ref(body)}},
                    },
                },
            ]
        }

    return payload


def _settlement_answer() -> dict[str, Any]:
    return {
        "allOf": [
            _ref("ResponseEnvelope"),
            {
                "type": "object",
                "properties": {
                    "infno": {"type": "string", "enum": ["2206", "2207", "2303", "2304"]},
                    "output": {
                        "description": "the settlement output on success (infcode 0); {} on failure (infcode -1)",
                        "anyOf": [_ref("SettlementOutput"), {"type": "object", "maxProperties": 0}],
                    },
                },
            },
        ]
    }


# The output of each other answer on a gateway's reply topic, by infno (yidi.contracts.outputs).
OTHER_OUTPUTS: dict[str, tuple[str, ...]] = {
    "1101": ("PersonInfoOutput",),
    "2001": ("BenefitCheckEligible", "BenefitCheckRefused"),
    "2208": ("UndoOutput",), "2305": ("UndoOutput",), "2601": ("UndoOutput",),
    "3201": ("ReconcileTotalsOutput",),
    "3202": ("ReconcileDetailsOutput",),
    "5206": ("CumulativeOutput",),
}


def _other_answer() -> dict[str, Any]:
    def by_infno(infno: str, outputs: tuple[str, ...]) -> dict[str, Any]:
        return {
            "if": {"properties": {"infno": {"const": infno}}, "required": ["infno"]},
            "then": {"properties": {"output": {"anyOf": [*(_ref(m) for m in outputs), {"type": "object", "maxProperties": 0}]}}},
        }

    return {
        "allOf": [
            _ref("ResponseEnvelope"),
            {
                "type": "object",
                "description": "output by infno on success (infcode 0); {} on failure (infcode -1)",
                "allOf": [by_infno(infno, outputs) for infno, outputs in OTHER_OUTPUTS.items()],
            },
        ]
    }


def _plain(model: str) -> Callable[[], dict[str, Any]]:
    return lambda: _ref(model)


SETTLEMENT_INFNOS = (Infno.OUTPATIENT_PRE_SETTLE, Infno.OUTPATIENT_SETTLE, Infno.INPATIENT_PRE_SETTLE, Infno.INPATIENT_SETTLE)

MESSAGES: dict[str, Message] = {
    "SettlementRequest": Message(
        "Settlement or pre-settlement request (2206, 2207, 2303, 2304)",
        "One bill with its fee details; a pre-settlement (2206/2303) commits nothing.",
        _request(SETTLEMENT_INFNOS, "SettlementInput"), "psn_no", ("RequestEnvelope", "SettlementInput"),
    ),
    "CancelRequest": Message(
        "Cancellation request (2208, 2305)",
        "Undo a settlement by its setl_id.",
        _request((Infno.OUTPATIENT_CANCEL, Infno.INPATIENT_CANCEL), "CancelInput"), "psn_no",
        ("RequestEnvelope", "CancelInput"),
    ),
    "ReversalRequest": Message(
        "Reversal request (2601)",
        "Undo a settlement by its original msgid (omsgid).",
        _request((Infno.REVERSAL,), "ReversalInput"), "psn_no", ("RequestEnvelope", "ReversalInput"),
    ),
    "ReconcileTotalsRequest": Message(
        "Reconciliation of totals (3201)",
        "A facility's totals for a period; passed on to clearing, answered with stmt_rslt 0 (match) or 1.",
        _request((Infno.RECONCILE_TOTALS,), "ReconcileTotalsInput"), "psn_no (none: null key)",
        ("RequestEnvelope", "ReconcileTotalsInput"),
    ),
    "ReconcileDetailsRequest": Message(
        "Reconciliation of details (3202)",
        "A facility's settlements for a period, one by one; answered with the differences.",
        _request((Infno.RECONCILE_DETAILS,), "ReconcileDetailsInput"), "psn_no (none: null key)",
        ("RequestEnvelope", "ReconcileDetailsInput"),
    ),
    "PersonQueryRequest": Message(
        "Person info (1101) or benefit check (2001)",
        "Answered by eligibility from the data settlements use; 2001 needs insutype and med_type, and checks the "
        "credential (mdtrt_cert_type, mdtrt_cert_no) when given, as a settlement does (R2).",
        _request((Infno.PERSON_INFO, Infno.BENEFIT_CHECK), "PersonQueryInput"), "psn_no",
        ("RequestEnvelope", "PersonQueryInput"),
    ),
    "CumulativeRequest": Message(
        "A person's year so far (5206)",
        "What the person's year has used and has left of the deductible (by bucket), the pooled fund's annual cap, "
        "the outpatient quota (R13), the further layers (R18) and the individual account, through the platform "
        "and at home as the insured region states it; answered by pricing (eligibility checks the facility and "
        "the person first, as for 1101).",
        _request((Infno.PERSON_CUMULATIVE,), "CumulativeInput"), "psn_no", ("RequestEnvelope", "CumulativeInput"),
    ),
    "SettlementAnswer": Message(
        "Answer to a settlement or pre-settlement",
        "Success carries setlinfo, setldetail and feedetail; failure carries err_code and err_msg.",
        _settlement_answer, "fixmedins_code", ("ResponseEnvelope", "SettlementOutput"),
    ),
    "Answer": Message(
        "Any other answer (ResponseEnvelope)",
        "Its output by infno: 1101 PersonInfoOutput; 2001 BenefitCheckEligible or BenefitCheckRefused; "
        "2208, 2305, 2601 UndoOutput; 3201 ReconcileTotalsOutput; 3202 ReconcileDetailsOutput (at most 1000 "
        "differences listed); 5206 CumulativeOutput. Failures: output = {} with err_code one of " + ", ".join(c.value for c in ErrCode) + ".",
        _other_answer, "fixmedins_code",
        ("ResponseEnvelope", *sorted({m for outputs in OTHER_OUTPUTS.values() for m in outputs})),
    ),
    "EligibleWork": Message("Eligible work", "eligibility → pricing", _plain("EligibleWork"), "psn_no", ("EligibleWork",)),
    "PricedWork": Message("Priced work", "pricing → clearing", _plain("PricedWork"), "psn_no", ("PricedWork",)),
    "RefusalNotice": Message("Refusal notice", "pricing → clearing, under YIDI_PREPAYMENT_POLICY=refuse: a bill refused "
                             "PREPAYMENT_EXHAUSTED (answered by pricing), from which clearing warns the insured region",
                             _plain("RefusalNotice"), "psn_no", ("RefusalNotice",)),
    "FilingRequest": Message("Filing request", "add, change, cancel, approve or refuse a filing, or ask its history", _plain("FilingRequest"), "psn_no", ("FilingRequest",)),
    "FilingResult": Message("Filing result", "the answer to one filing request, by reqid", _plain("FilingResult"), "psn_no", ("FilingResult",)),
    "FilingEvent": Message("Filing event", "a filing was added, changed, cancelled, approved, refused or ended", _plain("FilingEvent"), "psn_no", ("FilingEvent",)),
    "PersonRecord": Message("Person record", "a person's insurance", _plain("PersonRecord"), "psn_no", ("PersonRecord",)),
    "FacilityRecord": Message("Facility record", "a designated facility", _plain("FacilityRecord"), "fixmedins_code", ("FacilityRecord",)),
    "PolicyRecord": Message("Policy record", "one version of an insured region's policy", _plain("PolicyRecord"), "insuplc_admdvs", ("PolicyRecord",)),
    "CatalogueRecord": Message("Catalogue record", "one version of a catalogue item", _plain("CatalogueRecord"), "mdtrtarea_admvs", ("CatalogueRecord",)),
    "RegionStatusRecord": Message("Region status record", "an outage or maintenance window (R19)", _plain("RegionStatusRecord"), "admdvs", ("RegionStatusRecord",)),
    "FundPrepayment": Message("Fund a prepayment (type fund)", "an insured region advances money for a treating region (R3)", _plain("FundPrepayment"), "reqid", ("FundPrepayment",)),
    "WithdrawPrepayment": Message("Withdraw from a prepayment (type withdraw)", "an insured region takes back part of what it advanced for a treating region: at most the balance, and at most what is funded (refused otherwise, naming both)", _plain("WithdrawPrepayment"), "reqid", ("WithdrawPrepayment",)),
    "RunMonth": Message("Clear a month (type run_month)", "close the month (months are cleared in order: refused, naming them, while earlier months hold settlements or undoings not cleared or an earlier run stopped before its statements; a month before the latest cleared one that holds nothing has nothing to clear), total it per region pair, issue statements (each on clearing.statements; the result lists at most 1000 statements and 1000 net positions, and counts them all)", _plain("RunMonth"), "reqid", ("RunMonth",)),
    "ConfirmStatement": Message("Confirm a statement (type confirm)", "one side confirms; when both have, the prepayment is topped up", _plain("ConfirmStatement"), "reqid", ("ConfirmStatement",)),
    "QuerySettlement": Message("Query a settlement (type query_settlement)", "by setl_id or msgid", _plain("QuerySettlement"), "reqid", ("QuerySettlement",)),
    "QueryFacilityDay": Message("Query a facility's day (type query_facility_day)", "the ledger rows of a facility on one day (at most 1000 listed; settlements_total counts them all), with totals", _plain("QueryFacilityDay"), "reqid", ("QueryFacilityDay",)),
    "QueryPairMonth": Message("Query a region pair's month (type query_pair_month)", "the settlements dated in it, what it clears (what landed in it), its statements", _plain("QueryPairMonth"), "reqid", ("QueryPairMonth",)),
    "QueryStatement": Message("Query a statement's entries (type query_statement)", "the statement, and the settlements (cleared as drawn) and cancellations or reversals (given back) that make it, 1000 from offset (fewer past 800 KB; next_offset where the next page begins), and how many in all", _plain("QueryStatement"), "reqid", ("QueryStatement",)),
    "QueryMonth": Message("Query a cleared month (type query_month)", "its statements and net positions, 1000 of each from offset, and how many in all", _plain("QueryMonth"), "reqid", ("QueryMonth",)),
    "QueryPrepayment": Message("Query a prepayment account (type query_prepayment)", "funded, drawn, given back, cleared, balance, shortfall", _plain("QueryPrepayment"), "reqid", ("QueryPrepayment",)),
    "Reconcile": Message("Reconciliation (type reconcile)", "a facility's 3201/3202 request, passed on by eligibility", _plain("Reconcile"), "msgid", ("Reconcile",)),
    "ClearingResult": Message("Clearing result", "the answer to one clearing request, by reqid", _plain("ClearingResult"), "reqid", ("ClearingResult",)),
    "Statement": Message("Clearing statement", "what an insured region owes a treating region for one month", _plain("Statement"), "<insuplc_admdvs>-<mdtrtarea_admvs>", ("Statement",)),
    "PrepaymentAlert": Message("Prepayment alert", "a prepayment account is low or exhausted, or (under the refuse policy) refuses bills", _plain("PrepaymentAlert"), "<insuplc_admdvs>-<mdtrtarea_admvs>", ("PrepaymentAlert",)),
    "PeriodClosed": Message("Month closed", "a month closed by its run, and where the settlements stood then", _plain("PeriodClosed"), "<setlym>", ("PeriodClosed",)),
    "PrepaymentStatus": Message("Prepayment status", "an account's balance after a change", _plain("PrepaymentStatus"), "<insuplc_admdvs>-<mdtrtarea_admvs>", ("PrepaymentStatus",)),
}

DLQ_HEADERS = {
    "type": "object",
    "properties": {
        "yidi-dlq-reason": {"type": "string", "description": "why the message was refused (at most 2000 bytes)"},
        "yidi-dlq-source": {
            "type": "string",
            "description": "<topic>/<partition>/<offset> of the original (where the whole message still is)",
        },
        "yidi-dlq-truncated": {
            "type": "string",
            "description": "the original value's length in bytes, when only its first 512 KiB are kept",
        },
        "yidi-dlq-key-truncated": {
            "type": "string",
            "description": "the original key's length in bytes, when only its first 1 KiB is kept",
        },
        "yidi-dlq-headers-dropped": {
            "type": "string",
            "description": "stages only: how many original headers were left out (together over 128 KiB)",
        },
    },
    "required": ["yidi-dlq-reason"],
    "additionalProperties": {"type": "string", "description": "stages: the original message's headers, kept"},
}


# --------------------------------------------------------------------------------------------
# Rendering.

def _check_coverage() -> None:
    missing_topics = [t.name for t in T.TOPICS if t.name not in TOPIC_CONTRACTS]
    unknown_topics = [name for name in TOPIC_CONTRACTS if name not in {t.name for t in T.TOPICS}]
    unknown_messages = [m for c in TOPIC_CONTRACTS.values() for m in c.messages if m not in MESSAGES]
    models = wire_models()
    unknown_models = [m for msg in MESSAGES.values() for m in msg.models if m not in models]
    covered = set(models)
    for name, (model, mode) in models.items():
        covered |= set(model_schema(model, mode).get("$defs", {}))
    uncovered = sorted(_contract_model_names() - covered)
    problems = []
    if missing_topics:
        problems.append(f"topics without a contract in TOPIC_CONTRACTS: {missing_topics}")
    if unknown_topics:
        problems.append(f"TOPIC_CONTRACTS names topics that TOPICS lacks: {unknown_topics}")
    if unknown_messages:
        problems.append(f"unknown messages: {unknown_messages}")
    if unknown_models:
        problems.append(f"messages refer to models not in INBOUND/OUTBOUND: {unknown_models}")
    if uncovered:
        problems.append(f"wire models on no topic (add them to INBOUND/OUTBOUND and a message): {uncovered}")
    if problems:
        raise SystemExit("yidi.contracts.schemas: " + "; ".join(problems))


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _source_of(dlq_name: str) -> str:
    return dlq_name.removesuffix(".dlq")


MOVED_HEADER = "`yidi-reply-to-refused`"


def _shared_of(name: str) -> str | None:
    """The shared answer topic whose answers ``name`` holds when a gateway's reply topic is refused."""
    return next((shared for shared in T.SHARED_RESULTS if T.moved_answers(shared) == name), None)


def _cleanup(spec: T.TopicSpec) -> str:
    """A topic's cleanup policy as the docs give it: compacted topics with their compaction lag."""
    if not spec.compacted:
        return "delete"
    if spec.min_compaction_lag_ms is None:
        return "compact"
    return f"compact (kept ≥ {spec.min_compaction_lag_ms / 86_400_000:g} days)"


def _md_models(contract: TopicContract) -> str:
    names: list[str] = []
    for m in contract.messages:
        for model in MESSAGES[m].models:
            if model not in names:
                names.append(model)
    return ", ".join(f"[{n}](schemas/{n}.json)" for n in names) or "—"


def render_topics_md() -> str:
    lines = [
        "# Topics",
        "",
        f"<!-- Generated by `{GENERATOR}` from libs/yidi/platform/topics.py and libs/yidi/contracts/schemas.py. "
        "Do not edit: change the code and run the command. -->",
        "",
        "Every topic of the platform, the contract it carries and who writes and reads it. Each "
        "service creates the missing ones at start-up (`ensure_topics`, replication factor 1 — "
        "a production cluster creates them beforehand with its own replication).",
        "",
        "- **Namespace.** Every topic name and consumer group is prefixed with `YIDI_NAMESPACE` "
        "(empty in production; `t<8 hex>.` in a test session), including the topic a request names "
        "in `reply_to`.",
        "- **Keys.** Settlement topics are keyed by `psn_no`, so one person's requests are handled "
        "in order by one consumer everywhere; answers by `fixmedins_code`.",
        "- **Transactions.** Everything the services publish is written inside their stages' Kafka "
        "transactions, except the dead letters of the feeds: read with `isolation.level=read_committed`, "
        "or you will also see records of aborted transactions.",
        "- **Formats.** JSON, UTF-8. Amounts, ratios and quantities are strings. Schemas: "
        "[schemas/](schemas/); the whole as AsyncAPI 3.0: [asyncapi.yaml](asyncapi.yaml).",
        "- **Retention.** Broker default (`log.retention.hours`, 168 h unless the cluster sets otherwise); "
        "no topic sets its own.",
        "",
        "## Summary",
        "",
        "| topic | key | partitions | cleanup | carries | written by | read by (consumer group) |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in T.TOPICS:
        c = TOPIC_CONTRACTS[spec.name]
        writers = ", ".join(c.writers) or ""
        if c.external_writers:
            writers = "; ".join(x for x in (writers, c.external_writers) if x)
        readers = ", ".join(f"{r.service} (`{r.group}`)" for r in c.readers)
        if c.external_readers:
            readers = "; ".join(x for x in (readers, c.external_readers) if x)
        lines.append(
            f"| `{spec.name}` | `{spec.key}` | {spec.partitions} | {_cleanup(spec)} "
            f"| {_md_models(c)} | {writers or '—'} | {readers or '—'} |"
        )
    lines += ["", "## Each topic", ""]
    for spec in T.TOPICS:
        c = TOPIC_CONTRACTS[spec.name]
        lines += [f"### `{spec.name}`", "", spec.what[:1].upper() + spec.what[1:] + ".", ""]
        lines.append(f"- Key: `{spec.key}`; partitions: {spec.partitions}; cleanup: {_cleanup(spec)}"
                     + ("; record time: the broker's, when it appends the record (`message.timestamp.type="
                        "LogAppendTime`): an answer's `refmsg_time` and the settlement latency metric start "
                        "there, whatever the gateway's clock says." if spec.log_append_time else "."))
        if c.messages:
            for m in c.messages:
                msg = MESSAGES[m]
                lines.append(f"- Message **{m}** — {msg.title}: {_sentence(msg.summary)} "
                             f"Schema: {', '.join(f'[{n}](schemas/{n}.json)' for n in msg.models)}.")
        else:
            lines.append("- Message: none defined yet.")
        if c.writers:
            lines.append(f"- Written by: {', '.join(c.writers)}, inside the stage's Kafka transaction.")
        if c.external_writers:
            lines.append(f"- Sent by: {c.external_writers}.")
        for r in c.readers:
            how = ("transactional stage, `read_committed`, offsets committed in the stage's transaction"
                   if r.kind == "stage" else "FastStream feed, `NACK_ON_ERROR`, at least once")
            lines.append(f"- Read by: {r.service}, group `{r.group}` ({how}).")
        if c.external_readers:
            lines.append(f"- Read by: {c.external_readers}.")
        if spec.name in {s.name.removesuffix('.dlq') for s in all_topic_specs() if s.name.endswith('.dlq')}:
            lines.append(f"- Dead letters: `{dlq(spec.name)}`.")
        if c.notes:
            lines.append(f"- {c.notes}")
        lines.append("")
    lines += [
        "## Dead-letter topics",
        "",
        "A consumed topic has a dead-letter topic `<topic>.dlq` (1 partition, same key). A dead letter "
        "is the original record with its key, plus `yidi-dlq-reason` (why, at most 2000 bytes) and "
        "`yidi-dlq-source` (`<topic>/<partition>/<offset>` of the original). It keeps at most 512 KiB "
        "of the value (`yidi-dlq-truncated` gives the original length) and 1 KiB of the key "
        "(`yidi-dlq-key-truncated`, likewise); a record with a null value is dead-lettered with an empty "
        "one. From a transactional stage it also keeps the original headers "
        "(`yidi-dlq-headers-dropped` says original headers over 128 KiB were left out); from a feed "
        "the original headers are not kept. Nothing consumes them; docs/runbook.md says how to read and re-publish them.",
        "",
        "| dead-letter topic | source | written by |",
        "|---|---|---|",
    ]
    for spec in all_topic_specs():
        if not spec.name.endswith(".dlq"):
            continue
        source = _source_of(spec.name)
        readers = TOPIC_CONTRACTS[source].readers
        who = ", ".join(f"{r.service} ({r.kind})" for r in readers) or "—"
        lines.append(f"| `{spec.name}` | `{source}` | {who} |")
    lines += [
        "",
        "## Moved answers",
        "",
        "An answer whose gateway's `reply_to` the broker refuses for good (the topic does not exist and "
        "the broker does not create topics, the platform may not write it, the name is invalid, or the "
        "answer is larger than the topic takes) goes to its kind's moved answers' topic instead, with "
        f"the header {MOVED_HEADER} naming the topic and why (docs/runbook.md, \"Answers moved off a "
        "refused reply topic\"). Operations read them; no gateway may name one as its `reply_to`: they "
        "hold other facilities' patients' answers.",
        "",
        "| moved answers' topic | answers of | written by |",
        "|---|---|---|",
    ]
    for spec in all_topic_specs():
        if (shared := _shared_of(spec.name)) is not None:
            lines.append(f"| `{spec.name}` | `{shared}` | {', '.join(TOPIC_CONTRACTS[shared].writers)} |")
    lines += [
        "",
        "## Consumer groups and transactional ids",
        "",
        "| group | topic | service | kind |",
        "|---|---|---|---|",
    ]
    for spec in T.TOPICS:
        for r in TOPIC_CONTRACTS[spec.name].readers:
            lines.append(f"| `{r.group}` | `{spec.name}` | {r.service} | {r.kind} |")
    lines += [
        "",
        "Each stage's producer uses the transactional id `<namespace>yidi-<stage>-<YIDI_INSTANCE>` "
        "(`YIDI_INSTANCE` defaults to the host name): a restarted instance fences its predecessor "
        "and aborts the transaction it left open. A stage's offsets are committed inside its "
        "transaction under the consumer group generation the batch was fetched in (TxnOffsetCommit v3) "
        "and read back with `require_stable` (OffsetFetch v7), so several instances of a stage can share "
        "its consumer group (architecture.md, \"Several instances of a stage\").",
        "",
    ]
    return "\n".join(lines)


def _channel_id(topic: str) -> str:
    parts = topic.replace("-", ".").split(".")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def render_asyncapi() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for name, msg in MESSAGES.items():
        messages[name] = {
            "name": name,
            "title": msg.title,
            "summary": msg.summary,
            "contentType": "application/json",
            "payload": msg.payload(),
            "bindings": {"kafka": {"key": {"type": "string", "description": msg.key}, "bindingVersion": "0.5.0"}},
        }
    messages["DeadLetter"] = {
        "name": "DeadLetter",
        "title": "Dead letter",
        "summary": "The original record, unchanged, with the reason in a header.",
        "contentType": "application/octet-stream",
        "headers": DLQ_HEADERS,
        "payload": {"description": "the original bytes; may not be JSON at all"},
    }
    for spec in all_topic_specs():
        cid = _channel_id(spec.name)
        is_dlq = spec.name.endswith(".dlq")
        shared = _shared_of(spec.name)  # a moved answers' topic: its shared topic's messages and writers
        contract = TOPIC_CONTRACTS[_source_of(spec.name) if is_dlq else shared or spec.name]
        names = ("DeadLetter",) if is_dlq else contract.messages
        description = spec.what[:1].upper() + spec.what[1:] + "."
        if spec.log_append_time:
            description += " Records carry the broker's time (message.timestamp.type=LogAppendTime)."
        if shared:
            description += f" Each with the header {MOVED_HEADER}: the reply topic and why; read by operations only."
        elif not is_dlq and contract.notes:
            description += " " + contract.notes
        channel: dict[str, Any] = {
            "address": spec.name,
            "title": spec.name,
            "description": description + " The address is prefixed with YIDI_NAMESPACE.",
            "bindings": {
                "kafka": {
                    "topic": spec.name,
                    "partitions": spec.partitions,
                    "replicas": 1,
                    "topicConfiguration": {"cleanup.policy": ["compact" if spec.compacted else "delete"]},
                    "bindingVersion": "0.5.0",
                }
            },
        }
        if names:
            channel["messages"] = {n: {"$ref": f"#/components/messages/{n}"} for n in names}
        channels[cid] = channel
        refs = [{"$ref": f"#/channels/{cid}/messages/{n}"} for n in names]
        if is_dlq:
            for r in contract.readers:
                operations[f"{r.service}DeadLetters{cid[:1].upper()}{cid[1:]}"] = {
                    "action": "send", "channel": {"$ref": f"#/channels/{cid}"},
                    "summary": f"{r.service} dead-letters what it cannot process from {_source_of(spec.name)}",
                    "messages": refs,
                }
            continue
        for r in () if shared else contract.readers:
            operations[f"{r.service}Receives{cid[:1].upper()}{cid[1:]}"] = {
                "action": "receive", "channel": {"$ref": f"#/channels/{cid}"},
                "summary": f"{r.service} consumes {spec.name} ({r.kind})",
                "messages": refs,
                "bindings": {"kafka": {"groupId": {"type": "string", "enum": [r.group]}, "bindingVersion": "0.5.0"}},
            }
        for w in contract.writers:
            only = WRITER_MESSAGES.get((spec.name, w))
            sent = [{"$ref": f"#/channels/{cid}/messages/{n}"} for n in only] if only else refs
            operations[f"{w}Sends{cid[:1].upper()}{cid[1:]}"] = {
                "action": "send", "channel": {"$ref": f"#/channels/{cid}"},
                "summary": f"{w} publishes on {spec.name}",
                "messages": sent,
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Yidi",
            "version": "0.1.0",
            "description": (
                f"Generated by `{GENERATOR}`; do not edit. Real-time cross-region settlement of medical "
                "insurance: hospital gateways publish requests on settlement.requests and read one answer per "
                f"request on its reply_to topic (default {DEFAULT_REPLY_TO}). Operations are described from "
                "the platform's side. Payloads refer to the JSON Schemas in ./schemas/."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:19092",
                "protocol": "kafka",
                "description": "the local stack (deploy/local); docker-compose.yml uses kafka:9092",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def _json_text(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def generate(root: Path = ROOT) -> dict[Path, str]:
    """Every generated file under ``root``, with its content."""
    _check_coverage()
    docs = root / "docs"
    files: dict[Path, str] = {docs / "topics.md": render_topics_md()}
    for name, (model, mode) in sorted(wire_models().items()):
        files[docs / "schemas" / f"{name}.json"] = _json_text(model_schema(model, mode))
    header = f"# Generated by `{GENERATOR}` from libs/yidi/platform/topics.py and the contract models. Do not edit.\n"
    files[docs / "asyncapi.yaml"] = header + yaml.safe_dump(
        render_asyncapi(), sort_keys=False, allow_unicode=True, width=110
    )
    return files


def stale(root: Path = ROOT) -> list[str]:
    """Generated files that are missing, differ from the code, or are no longer generated."""
    files = generate(root)
    out = [str(p.relative_to(root)) for p, text in files.items() if not p.exists() or p.read_text() != text]
    schema_dir = root / "docs" / "schemas"
    if schema_dir.is_dir():
        out += [f"{p.relative_to(root)} (no longer generated)" for p in sorted(schema_dir.glob("*.json")) if p not in files]
    return out


def write(root: Path = ROOT) -> list[str]:
    files = generate(root)
    changed = []
    for path, text in files.items():
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(str(path.relative_to(root)))
    schema_dir = root / "docs" / "schemas"
    for p in sorted(schema_dir.glob("*.json")):
        if p not in files:
            p.unlink()
            changed.append(f"{p.relative_to(root)} (removed)")
    return changed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m yidi.contracts.schemas", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a generated file is stale")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository root (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.check:
        out_of_date = stale(args.root)
        if out_of_date:
            print(f"stale generated docs (run `{GENERATOR}`):", *out_of_date, sep="\n  ", file=sys.stderr)
            sys.exit(1)
        print("generated docs are current")
        return
    changed = write(args.root)
    print("\n".join(f"wrote {c}" for c in changed) if changed else "generated docs were already current")


if __name__ == "__main__":
    main()
