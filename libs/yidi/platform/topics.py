"""Every topic of the platform, its key and its partitions (docs/topics.md is generated from this)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    key: str
    partitions: int
    what: str
    compacted: bool = False
    # The broker stamps each record with its own clock when it appends it (LogAppendTime), not the
    # producer's (CreateTime): see SETTLEMENT_REQUESTS below.
    log_append_time: bool = False
    # Compacted: how long a record is kept before a later one of its key may replace it
    # (min.compaction.lag.ms): see REFDATA_PERSONS below.
    min_compaction_lag_ms: int | None = None

    def configs(self) -> dict[str, str]:
        """The topic configs the spec sets: a topic is created with them, and an existing one that
        lacks them is logged (``ensure_platform_topics``) and listed by ``yidi-topics check``."""
        configs = {"cleanup.policy": "compact"} if self.compacted else {}
        if self.log_append_time:
            configs["message.timestamp.type"] = "LogAppendTime"
        if self.min_compaction_lag_ms is not None:
            configs["min.compaction.lag.ms"] = str(self.min_compaction_lag_ms)
        return configs


SETTLEMENT_REQUESTS = "settlement.requests"
SETTLEMENT_ELIGIBLE = "settlement.eligible"
SETTLEMENT_PRICED = "settlement.priced"
SETTLEMENT_RESULTS = "settlement.results"
FILING_REQUESTS = "filing.requests"
FILING_RESULTS = "filing.results"
FILING_EVENTS = "filing.events"
REFDATA_PERSONS = "refdata.persons"
REFDATA_FACILITIES = "refdata.facilities"
REFDATA_POLICIES = "refdata.policies"
REFDATA_CATALOGUE = "refdata.catalogue"
REGION_STATUS = "platform.region-status"
CLEARING_REQUESTS = "clearing.requests"
CLEARING_RESULTS = "clearing.results"
CLEARING_STATEMENTS = "clearing.statements"
CLEARING_ALERTS = "clearing.alerts"
PREPAYMENT_STATUS = "clearing.prepayment-status"
CLEARING_PERIODS = "clearing.periods"

SETTLEMENT_PARTITIONS = 6
PERSONS_MIN_COMPACTION_LAG_MS = 7 * 24 * 3600 * 1000

TOPICS: tuple[TopicSpec, ...] = (
    # A request's record time is when it reached the platform, by the broker's clock: the answer's
    # refmsg_time and the settlement latency metric start there. Under CreateTime they started at the
    # gateway's clock: one running behind, or an outbox sent late, made the latency alert fire while
    # the platform was fine, and one running ahead hid slow answers (clamped to 0).
    TopicSpec(SETTLEMENT_REQUESTS, "psn_no", SETTLEMENT_PARTITIONS, "gateway → platform: 1101, 2001, 2206/2207/2208, 2303/2304/2305, 2601, 3201/3202, 5206",
              log_append_time=True),
    TopicSpec(SETTLEMENT_ELIGIBLE, "psn_no", SETTLEMENT_PARTITIONS, "eligibility → pricing: request with its terms or refusal"),
    TopicSpec(SETTLEMENT_PRICED, "psn_no", SETTLEMENT_PARTITIONS, "pricing → clearing: settlement or cancellation with its answer"),
    TopicSpec(SETTLEMENT_RESULTS, "fixmedins_code", SETTLEMENT_PARTITIONS, "platform → gateway: one answer per request (default reply_to)"),
    TopicSpec(FILING_REQUESTS, "psn_no", 3, "add, change, cancel, approve or refuse a filing, or ask its history"),
    TopicSpec(FILING_RESULTS, "psn_no", 3, "the answer to each filing request"),
    TopicSpec(FILING_EVENTS, "psn_no", 3, "a filing changed: eligibility refreshes its mirror and cache"),
    # Every change of a person's insurance is read, not only the last: filing ends the filings a
    # change ends, and publishes them again when its batch is handled again after a crash, by the
    # record; eligibility keeps the insurance held before the change. Compaction may replace a record
    # only once it is a week old: a stage that was down or behind for less than that reads every
    # record its region wrote, where the broker's default (0) lets the cleaner drop a stop followed
    # by a resume before either stage has read them.
    TopicSpec(REFDATA_PERSONS, "psn_no", 3, "persons' insurance from insured regions", compacted=True,
              min_compaction_lag_ms=PERSONS_MIN_COMPACTION_LAG_MS),
    TopicSpec(REFDATA_FACILITIES, "fixmedins_code", 1, "designated facilities", compacted=True),
    TopicSpec(REFDATA_POLICIES, "insuplc_admdvs", 1, "policy versions of insured regions"),
    TopicSpec(REFDATA_CATALOGUE, "mdtrtarea_admvs", 1, "catalogue item versions of treating regions"),
    TopicSpec(REGION_STATUS, "admdvs", 1, "outage and maintenance windows of regions (R19)"),
    TopicSpec(CLEARING_REQUESTS, "reqid", 1, "prepayment funding and withdrawals, month runs, confirmations, queries, 3201/3202"),
    TopicSpec(CLEARING_RESULTS, "reqid", 1, "the answer to each clearing request"),
    TopicSpec(CLEARING_STATEMENTS, "admdvs pair", 1, "monthly clearing statements"),
    TopicSpec(CLEARING_ALERTS, "admdvs pair", 1, "prepayment warnings"),
    TopicSpec(PREPAYMENT_STATUS, "admdvs pair", 1, "each prepayment account's balance after every change", compacted=True),
    TopicSpec(CLEARING_PERIODS, "setlym", 1, "each month closed, with where the settlements stood at its close",
              compacted=True),
)


def dlq(topic: str) -> str:
    return f"{topic}.dlq"


def moved_answers(shared: str) -> str:
    """Where the answers of ``shared``'s kind go when a gateway's own reply topic is refused
    (yidi.platform.reply_topics): a topic of their own, for operations only. On ``shared`` itself,
    which every gateway that names no reply topic reads, they gave other facilities their patients'
    answers (names, identity card numbers, diagnoses, a review of session 38). Under ``platform.``,
    which no request may name as its reply topic, and not under ``shared``'s name, which a gateway's
    prefixed read permission on it would cover."""
    return f"platform.moved.{shared}"


SHARED_RESULTS = (SETTLEMENT_RESULTS, FILING_RESULTS, CLEARING_RESULTS)


def all_topic_specs() -> tuple[TopicSpec, ...]:
    """Every topic including the dead-letter topics of the consumed ones and the moved answers' topics."""
    consumed = {SETTLEMENT_REQUESTS, SETTLEMENT_ELIGIBLE, SETTLEMENT_PRICED, FILING_REQUESTS, FILING_EVENTS,
                REFDATA_PERSONS, REFDATA_FACILITIES, REFDATA_POLICIES, REFDATA_CATALOGUE, REGION_STATUS,
                CLEARING_REQUESTS, PREPAYMENT_STATUS}
    dead = tuple(TopicSpec(dlq(t.name), t.key, 1, f"dead letters of {t.name}, with the reason") for t in TOPICS if t.name in consumed)
    moved = tuple(TopicSpec(moved_answers(t.name), t.key, t.partitions,
                            f"answers of {t.name}'s kind whose gateway's reply_to the broker refuses (operations only)")
                  for t in TOPICS if t.name in SHARED_RESULTS)
    return TOPICS + dead + moved


def feed_group(service: str, topic: str) -> str:
    """The consumer group a service reads a feed with (before the namespace prefix)."""
    return f"yidi-{service}-feed-{topic}"


# Which service reads each feed; the loader waits on these groups.
FEED_READERS: dict[str, str] = {
    REFDATA_PERSONS: "eligibility",
    REFDATA_FACILITIES: "eligibility",
    FILING_EVENTS: "eligibility",
    REGION_STATUS: "eligibility",
    REFDATA_POLICIES: "pricing",
    REFDATA_CATALOGUE: "pricing",
    PREPAYMENT_STATUS: "pricing",
}
# Feeds read only in some configurations: pricing follows clearing.prepayment-status only under
# YIDI_PREPAYMENT_POLICY=refuse, so its group exists only then (waiters ask for it explicitly).
OPTIONAL_FEEDS: frozenset[str] = frozenset({PREPAYMENT_STATUS})
ELIGIBILITY_STAGE_GROUP = "yidi-eligibility-requests"
# Stages whose handlers keep nothing in their service's database (eligibility's settlement stage
# reads persons, filings and facilities and writes only Redis): their batches record no progress
# (yidi.platform.progress), and yidi-recover leaves their groups as they are.
GROUPS_WITHOUT_PROGRESS: frozenset[str] = frozenset({ELIGIBILITY_STAGE_GROUP})
FILING_STAGE_GROUP = "yidi-filing-requests"
# Filing follows refdata.persons too: an insurance change ends long-term filings (R7).
FILING_PERSONS_GROUP = feed_group("filing", REFDATA_PERSONS)
