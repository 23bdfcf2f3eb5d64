"""One settings object per service, read once at start-up from ``YIDI_*`` environment variables.

Defaults match the local stack (deploy/local) and docker-compose.yml.
"""

from __future__ import annotations

import os
import socket
from datetime import date

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="YIDI_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:19092"
    database_url: str = "postgresql://yidi@127.0.0.1:15432/yidi"
    redis_url: str = "redis://127.0.0.1:16379/0"
    # Prefix of every topic and consumer group: lets test runs share a broker with a running system.
    namespace: str = ""
    instance: str = Field(default_factory=lambda: socket.gethostname().split(".")[0] or str(os.getpid()))
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    log_level: str = "INFO"
    batch_max_records: int = 500
    # A stage's batch that is not full waits until this long after its last commit (yidi.platform.kafka).
    # 5 ms since 2026-12-05: with transactions v2 the optimum moved down from 10 ms; on the bench box,
    # interleaved, p50 at 100/s went about 47 -> 43 ms and p99 89 -> 75 ms, lower at 500/s and 1,000/s
    # too, for about a sixth more CPU at 100/s (docs/BENCHMARKS.md, "The stage linger again"). A stage
    # lingers only while its lingers add records (batch_linger_gate).
    batch_linger_ms: float = 5.0
    # Linger only while lingering adds records (yidi.platform.kafka.LingerGate); false: whenever a batch
    # is not full and the last commit is less than batch_linger_ms ago, as before 2026-12-05.
    batch_linger_gate: bool = True
    # Kafka's transaction protocol: v2 (KIP-890) where the cluster has finalized it ("auto"), else
    # v1; or v1 always. A v2 transaction takes three requests where v1 takes five: on the bench box,
    # in one interleaved probe series, p99 at 100/s was 73-78 ms against 86-93 under v1, and both held
    # the same at full load (docs/BENCHMARKS.md, 2026-12-04, "Transactions v2 as the default").
    kafka_transactions: Literal["auto", "v1"] = "auto"
    # Under v2 only: begin a batch's transaction, and send its offsets, while its handler runs
    # instead of once it has returned. It measured no faster than v2 without it, and an instance
    # killed or frozen in its handler then holds its partitions until the transaction timeout (60 s)
    # unless it restarts with the same YIDI_INSTANCE (docs/architecture.md §4, §11).
    kafka_offsets_during_handler: bool = False
    # How long the broker lets a stage's transaction stay open before it aborts it (aiokafka's and
    # Kafka's default, 60 s; the broker allows up to its transaction.max.timeout.ms, 15 min by
    # default). A batch's transaction is open only while it commits; longer than the default
    # matters when a Kafka outage outlasts it: the commit in flight is then aborted, the stage is
    # fenced and its process exits (restarted, it goes on from its last commit, nothing lost or
    # doubled). The cost of a longer one: an instance that dies mid-commit and does not come back
    # under its YIDI_INSTANCE holds back its output partitions' readers until it expires.
    kafka_transaction_timeout_ms: int = Field(default=60_000, ge=1_000, le=900_000)
    # Python's cyclic garbage collector: thresholds of its generations ("700,10,10" is Python's
    # default; empty leaves whatever the interpreter has). A batch of 500 settlements makes some
    # hundred thousand short-lived containers that die by reference count, never in cycles; at
    # Python's default the collector scanned each of them several times before it died, and its
    # full collections over the service's caches paused batches up to 25 ms: 8-24 % of each handler's
    # CPU (docs/BENCHMARKS.md, 2026-12-04, "The garbage collector"). See yidi.platform.collector.
    gc_thresholds: str = "50000,20,100"
    # ... and a full collection this often (0: never, else at least 1 s), which those thresholds
    # almost never reach.
    gc_full_collection_seconds: float = Field(default=600.0, ge=0)
    # How often each stage and feed samples its consumer lag (yidi_stage_lag_records,
    # yidi_feed_lag_records). Above 0: each sample asks the broker for offsets, and 0 asked back to back;
    # at most 60: the samples' answers are what YidiKafkaUnreachable watches (2 minutes).
    lag_sample_seconds: float = Field(default=5.0, gt=0, le=60)
    # How often clearing reads every prepayment account into yidi_prepayment_accounts,
    # yidi_prepayment_balance_yuan and yidi_prepayment_alert_level (0: never).
    prepayment_sample_seconds: float = Field(default=15.0, ge=0)
    # How many accounts those gauges show at most, the worst first (run out, then low, then the
    # lowest balances); yidi_prepayment_accounts counts them all by level. A series per account
    # pair of a national deployment's cities would be 10^4-10^5 series.
    prepayment_gauge_accounts: int = Field(default=1000, ge=1)
    # How often filing counts the pending filings past R21's two working days into
    # yidi_filing_office_overdue (0: never).
    office_overdue_sample_seconds: float = Field(default=60.0, ge=0)
    db_pool_size: int = 4
    # Postgres plan_cache_mode of the services' connections. asyncpg prepares every statement, and
    # after five runs Postgres may keep a generic plan made when a table was small: on a fresh
    # database pricing's batch read then scanned whole tables until autoanalyze ran (docs/BENCHMARKS.md,
    # "Generic plans on a fresh database"). force_custom_plan plans each run for its own arrays;
    # "server" sends nothing, leaving it to the server, the database or role (behind a pooler that
    # refuses startup parameters, e.g. PgBouncer, whose ignore_startup_parameters drops the value).
    db_plan_cache_mode: Literal["server", "auto", "force_custom_plan", "force_generic_plan"] = "force_custom_plan"
    # Postgres max_parallel_workers_per_gather of the services' connections; "server" sends nothing.
    # Their statements are a batch's keyed reads and writes: a parallel plan forks workers for each
    # run, and on the small box measured cost Postgres a third more CPU per settlement for nothing
    # (docs/BENCHMARKS.md, 2026-12-04, "Parallel workers").
    db_parallel_workers: Literal["server"] | Annotated[int, Field(ge=0, le=1024)] = 0
    # Eligibility: how long a cached answer may live when no event refreshes it.
    cache_ttl_seconds: int = 300
    # Eligibility: how long its in-process copy of facilities and outage windows serves batches
    # before it is read again (0: read for every batch, as before 2026-12-05). A change this
    # instance applies from its feed takes effect at once; one another instance applied, within
    # this time (docs/BENCHMARKS.md, "Eligibility's facilities and outages in memory").
    reference_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    # Eligibility: R17 waiver of filing for temporary trips inside a province, by insured region.
    filing_waived_regions: list[str] = Field(default_factory=list)
    # Filing: months a filing is locked against change or cancellation, by insured region (R8: at most 6).
    filing_lock_months: dict[str, int] = Field(default_factory=dict)
    # Filing, R21's two working days: the State Council's calendar of the year, days off on a
    # weekday (public holidays) and weekend days worked in their place (调休); Monday to Friday else.
    office_days_off: list[date] = Field(default_factory=list)
    office_weekend_workdays: list[date] = Field(default_factory=list)
    # Pricing: when an insured region's prepayment has run out, keep settling and let clearing
    # record the shortfall (the national rule), or refuse the settlement (docs/clearing.md).
    # Clearing words its run-out alert to the region by it: set the same value for both.
    prepayment_policy: Literal["record_shortfall", "refuse"] = "record_shortfall"
    # Eligibility: how far ahead of the platform's clock a request's inf_time may be (facility
    # clocks drift); one further ahead is refused INVALID_INPUT. Backdated times are accepted.
    # Also how far ahead a reference record's updated_at may be (persons; policy and catalogue
    # versions from session 50): one further ahead is dead-lettered.
    max_clock_ahead_seconds: float = 900.0

    @field_validator("gc_full_collection_seconds")
    @classmethod
    def _gc_period(cls, value: float) -> float:
        if 0 < value < 1:
            raise ValueError("gc_full_collection_seconds is 0 (never) or at least 1: a full collection blocks the loop")
        return value

    @field_validator("gc_thresholds")
    @classmethod
    def _gc_thresholds_read(cls, value: str) -> str:
        from yidi.platform.collector import parse_thresholds  # noqa: PLC0415 - collector imports metrics

        parse_thresholds(value)
        return value

    def topic(self, name: str) -> str:
        return f"{self.namespace}{name}"

    def group(self, name: str) -> str:
        return f"{self.namespace}{name}"


SERVICE_METRICS_PORTS = {"filing": 9101, "eligibility": 9102, "pricing": 9103, "clearing": 9104}


def settings_for(service: str) -> Settings:
    settings = Settings()
    if not settings.metrics_port:
        settings = settings.model_copy(update={"metrics_port": SERVICE_METRICS_PORTS[service]})
    return settings
