"""Every metric of Yidi, declared once with its kind and meaning (Prometheus, /metrics of each service)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

# No bucket wider than half its lower bound from 20 ms to 10 s: a quantile read from them (Prometheus's
# histogram_quantile, the bench's report) is interpolated within a bucket, and 1.0–2.5 s made a
# p99 of about 1.4 s read 2.4 s (a review, session 46). Every earlier bound is kept.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.025, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 0.65, 0.8, 1.0,
                   1.25, 1.6, 2.0, 2.5, 3.5, 5.0, 7.5, 10.0)

SETTLEMENT_LATENCY = Histogram(
    "yidi_settlement_latency_seconds",
    "End to end: from the request's publish time on settlement.requests to its answer being committed. "
    "infno: the transaction (other: a code the platform does not offer).",
    ["service", "infno", "outcome"],
    buckets=LATENCY_BUCKETS,
)
ANSWERS = Counter(
    "yidi_answers_total",
    "Answers published to gateways, by the service that answered, transaction (other: a code the platform does "
    "not offer) and error code (ok for success).",
    ["service", "infno", "err_code"],
)
STAGE_BATCH_SECONDS = Histogram(
    "yidi_stage_batch_seconds",
    "Time to handle one consumed batch and commit its transaction, per stage.",
    ["stage"],
    # Up to 300 s: clearing-admin's batch with a month's run takes tens of seconds at national
    # scale, up to its two totals queries' 120 s each (MONTH_TOTALS_TIMEOUT_S).
    buckets=(*LATENCY_BUCKETS, 30.0, 60.0, 120.0, 300.0),
)
STAGE_RECORD_AGE = Histogram(
    "yidi_stage_record_age_seconds",
    "Age of the oldest record of each batch when the stage takes it (its Kafka timestamp to now): how late "
    "the stage reads, per stage.",
    ["stage"],
    # From the stage's own few milliseconds behind its source to an hour of backlog.
    buckets=(*LATENCY_BUCKETS, 30.0, 60.0, 300.0, 900.0, 3600.0),
)
STAGE_BATCH_SIZE = Histogram(
    "yidi_stage_batch_size",
    "Records per consumed batch, per stage.",
    ["stage"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
STAGE_RECORDS = Counter("yidi_stage_records_total", "Records consumed and committed, per stage.", ["stage"])
STAGE_RESTORED = Counter(
    "yidi_stage_restored_records_total",
    "Records a stage handled again after its service's database was restored (yidi-recover): answered before the "
    "restore, their work is redone without publishing anything (yidi.platform.progress). outcome: redone; or "
    "refused, a record refused now (its dead letter published, not its answer: compare the ledger). Their "
    "answers are not counted again in yidi_answers_total.",
    ["stage", "outcome"],
)
STAGE_LINGERS = Counter(
    "yidi_stage_lingers_total",
    "Batches that could have lingered (not full, within YIDI_BATCH_LINGER_MS of the last commit), per stage: "
    "lingered, or skipped because the stage's lingers had stopped adding records (LingerGate).",
    ["stage", "outcome"],
)
STAGE_READ_FROM_START = Gauge(
    "yidi_stage_read_from_start_timestamp_seconds",
    "When a stage was last assigned a partition of a topic that is not compacted with no committed offset "
    "for its group and a first record over 10 minutes old, and read it from that record (0: never since "
    "it started): its group's offsets expired (what came while it was away is read) or the group was "
    "deleted or reset (what it had handled is handled again); or a partition whose committed offset is below "
    "its first record retained (the records between deleted unhandled, never answered).",
    ["stage"],
)
STAGE_RETRIES = Counter(
    "yidi_stage_retries_total", "Batches retried after a transient failure, per stage and reason.", ["stage", "reason"]
)
REPLY_TOPIC_REFUSED = Counter(
    "yidi_reply_topic_refused_total",
    "Answers published on their kind's moved answers' topic because the broker refuses the gateway's reply_to "
    "(unknown: does not exist and is not created; unauthorized: the platform may not write it; invalid; "
    "unavailable: no partitions within 5 s; too_large: one answer larger than the topic takes; no_leader: the "
    "answer's partition has no leader, its brokers down), per stage.",
    ["stage", "reason"],
)
DEAD_LETTERS = Counter("yidi_dead_letters_total", "Messages sent to a dead-letter topic, by source topic.", ["topic"])
REFDATA_RECORDS = Counter(
    "yidi_refdata_records_total", "Reference-feed records applied, refused or ignored as stale, per feed.", ["feed", "outcome"]
)
FILINGS_ENDED = Counter(
    "yidi_filings_ended_total",
    "Filings ended because the person's insurance changed (R7), by the change: stopped, resumed, moved "
    "(to another insured region or fund).",
    ["change"],
)
CACHE_LOOKUPS = Counter(
    "yidi_eligibility_cache_total",
    "Eligibility cache look-ups: hit, miss (read through Postgres), fallback (Redis unreachable).",
    ["result"],
)
CACHE_STALE_MARKED = Counter(
    "yidi_eligibility_cache_stale_marked_total",
    "Changed persons whose cache entry could be neither rewritten nor deleted in Redis, marked stale in Postgres.",
)
CACHE_STALE_OLDEST = Gauge(
    "yidi_eligibility_cache_stale_oldest_seconds",
    "Age of the oldest cache entry marked stale and not yet dropped from Redis, at this instance's last sweep "
    "(0: none; NaN: the sweep could not read Postgres).",
)
CACHE_SWEPT_AT = Gauge(
    "yidi_eligibility_cache_sweep_timestamp_seconds",
    "Unix time of this instance's last sweep of the cache's stale marks that read Postgres (one each second).",
)
LEDGER_ENTRIES = Counter(
    "yidi_ledger_entries_total", "Ledger changes, by kind (settled, cancelled, reversed, duplicate).", ["kind"]
)
STAGE_LAG = Gauge(
    "yidi_stage_lag_records",
    "Records on the stage's assigned partitions not yet committed by it: committed end (read_committed) "
    "less the consumer's position, plus the batch in hand. Sampled every few seconds.",
    ["stage"],
)
STAGE_WAITING = Gauge(
    "yidi_stage_waiting_seconds",
    "How long records have waited on one of the stage's assigned partitions with its position not moving, "
    "or the batch in hand has been in hand: the longest such wait, sampled with the lag (0 when none waits). "
    "One stuck partition shows here while the others keep the stage committing.",
    ["stage"],
)
GC_PAUSE_SECONDS = Histogram(
    "yidi_gc_pause_seconds",
    "Pauses of Python's cyclic garbage collector, by generation (2: a full collection); the sum over time is "
    "the CPU it takes.",
    ["generation"],
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
GC_FROZEN = Gauge(
    "yidi_gc_frozen_objects",
    "Objects the service froze when it became ready (imports, settings, warm caches): kept out of every later "
    "collection (0: not frozen yet).",
)
PREPAYMENT_BALANCE = Gauge(
    "yidi_prepayment_balance_yuan",
    "Balance of an insured region's prepayment for a treating region (R3): funded, less drawn, plus given "
    "back and cleared; below 0 by the shortfall. Read from clearing's database every few seconds by each "
    "clearing instance (aggregate with max by (insured, treating)); at most YIDI_PREPAYMENT_GAUGE_ACCOUNTS "
    "accounts, the worst first (run out, low, then the lowest balances).",
    ["insured", "treating"],
)
PREPAYMENT_ALERT_LEVEL = Gauge(
    "yidi_prepayment_alert_level",
    "0 healthy, 1 low (below the account's warn_share of what was advanced), 2 run out (a shortfall), from "
    "the balance as clearing's PrepaymentAlerts on clearing.alerts judge it; the accounts the balance shows.",
    ["insured", "treating"],
)
PREPAYMENT_ACCOUNTS = Gauge(
    "yidi_prepayment_accounts",
    "Prepayment accounts at each alert level (0 healthy, 1 low, 2 run out), every one of them: the balance "
    "and level gauges show at most YIDI_PREPAYMENT_GAUGE_ACCOUNTS. Read with them (aggregate with max by (level)).",
    ["level"],
)
PREPAYMENT_REFUSED = Gauge(
    "yidi_prepayment_refused_timestamp_seconds",
    "Under YIDI_PREPAYMENT_POLICY=refuse: when this pricing instance last refused a settlement or pre-settlement "
    "PREPAYMENT_EXHAUSTED on the account (insured region, treating region). The account may hold more than the "
    "alert levels' lines and still refuse a bill larger than it, so the balance gauges need not show it. A series "
    "goes after an hour without a refusal; at most YIDI_PREPAYMENT_GAUGE_ACCOUNTS accounts per instance "
    "(aggregate with max by (insured, treating)).",
    ["insured", "treating"],
)
# Set whenever a stage's or a feed's lag sample has the broker's answer (yidi.platform.lag):
# every few seconds while Kafka answers, stale once it does not (YidiKafkaUnreachable).
KAFKA_REACHED = Gauge(
    "yidi_kafka_reached_timestamp_seconds",
    "When this process last had an answer from the Kafka broker (the offsets of a stage's or feed's "
    "lag sample, every YIDI_LAG_SAMPLE_SECONDS); 0 until the first.",
)

FEED_LAG = Gauge(
    "yidi_feed_lag_records",
    "A reference feed's backlog on this instance (sampled every YIDI_LAG_SAMPLE_SECONDS): the batch its "
    "handler holds, and the offsets on its partitions past its position (to the last stable one: a "
    "transaction marker or a compacted gap counts). 0 when caught up, and on an instance with no partition.",
    ["feed"],
)
FEED_RECORDS_DELETED = Gauge(
    "yidi_feed_records_deleted_timestamp_seconds",
    "When a reference feed was last assigned a partition whose committed offset is below its first record "
    "retained (0: never since it started): the records between were deleted (retention.ms) before the feed "
    "applied them, and it went on from the first one retained. The reference data they carried (a policy, "
    "a catalogue version, an outage window) is missing until the region publishes it again.",
    ["feed"],
)
FILING_OFFICE_OVERDUE = Gauge(
    "yidi_filing_office_overdue",
    "R21: filings still pending past the office's two working days (Beijing time; Monday to Friday, less "
    "YIDI_OFFICE_DAYS_OFF, plus YIDI_OFFICE_WEEKEND_WORKDAYS), by insured region. Read from filing's database each minute by each filing instance "
    "(aggregate with max by (insured)).",
    ["insured"],
)
FILING_OFFICE_OVERDUE_OLDEST = Gauge(
    "yidi_filing_office_overdue_oldest_timestamp_seconds",
    "When the oldest of an insured region's overdue pending filings was asked for (its add or change).",
    ["insured"],
)
DB_STATEMENT_SECONDS = Histogram(
    "yidi_db_statement_seconds",
    "Round trip of each Postgres statement the service runs (asyncpg's query logger: the stages' batches, the "
    "feeds, the samplers; BEGIN and COMMIT when sent as statements; failures included), per service and what "
    "it ran for (source: a stage's name, a feed's, a sampler's, <service>-purge; start-check, progress-check: the "
    "checks that the database is not behind Kafka, at start and every 10 s; other: migrations, warm-ups).",
    ["service", "source"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
DB_STATEMENT_ERRORS = Counter(
    "yidi_db_statement_errors_total",
    "Postgres statements that failed, per service, what it ran for (source, as yidi_db_statement_seconds') and "
    "asyncpg's error class (ConnectionDoesNotExistError, QueryCanceledError, UniqueViolationError, ...; "
    "CancelledError: the task waiting on it was cancelled).",
    ["service", "source", "error"],
)
REDIS_SECONDS = Histogram(
    "yidi_redis_seconds",
    "Round trip of each call eligibility's cache makes to Redis (get: one MGET of a batch's persons; put, "
    "forget: redis-py's SCRIPT EXISTS, then one pipeline of compare-and-set scripts), by outcome (ok, error). "
    "Calls the circuit breaker skips are not made and not counted.",
    ["operation", "outcome"],
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
)
FILING_REQUESTS = Counter(
    "yidi_filing_requests_total",
    "Filing requests decided by the filing service, counted once committed, by action (add, change, cancel, "
    "approve, refuse, history; unknown) and outcome: accepted (an add or change is answered by eligibility once "
    "it applied the event); refused (accepted false: R4-R8, R20, R21's rules, a reqid reused); stored (a reqid "
    "seen before: what it published then, again); invalid (the request does not validate, or could not be "
    "processed and was dead-lettered).",
    ["action", "outcome"],
)
CLEARING_REQUESTS = Counter(
    "yidi_clearing_requests_total",
    "Clearing's requests on clearing.requests answered (fund, run_month, confirm, query_*; 3201/3202 count in "
    "yidi_answers_total), counted once the answer is committed, by type and outcome: ok; refused (ok false: a "
    "month not ended, cleared already or not its turn, a reqid reused for another request); stored (a reqid "
    "answered before: its stored result again); invalid (ok false: the request does not validate, or could not "
    "be processed and was dead-lettered; type unknown when it names none the platform has).",
    ["type", "outcome"],
)
EVENT_LOOP_BEAT = Gauge(
    "yidi_event_loop_heartbeat_timestamp_seconds",
    "When the service's event loop last ran its heartbeat (each second, from the moment its stages run; "
    "0 before). Stale while /metrics still answers (served from a thread of its own): the loop is blocked.",
)
EVENT_LOOP_LAG = Histogram(
    "yidi_event_loop_lag_seconds",
    "How much later than due the event loop ran the heartbeat's 1 s timer: how long a callback waits behind "
    "others (a batch's handler runs without yielding).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
DB_REACHED = Gauge(
    "yidi_db_reached_timestamp_seconds",
    "When this process last had an answer from Postgres: any statement of its pool that succeeded, and a "
    "probe every 5 s whatever the traffic; 0 until the first (YidiPostgresUnreachable).",
)
REDIS_REACHED = Gauge(
    "yidi_redis_reached_timestamp_seconds",
    "When eligibility last had an answer from Redis: a cache call that succeeded, and a ping every 5 s "
    "whatever the traffic; 0 until the first (YidiRedisUnreachable).",
)
PROGRESS_CHECKED = Gauge(
    "yidi_progress_checked_timestamp_seconds",
    "When this service last checked, in its periodic check (every 10 s), that its database still holds every "
    "batch its stages and feeds have seen it hold (yidi.platform.progress); 0 until the first "
    "(YidiProgressCheckFailing).",
)
SERVICE_UP = Gauge("yidi_service_up", "1 while the service's consumers run.", ["service"])


def serve_metrics(host: str, port: int) -> None:
    """Expose /metrics on ``port`` (0: do not serve, e.g. in tests)."""
    if port:
        start_http_server(port, addr=host)
