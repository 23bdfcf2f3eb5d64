"""The runtime every service shares: a FastStream app for its feeds, its transactional stages,
its Postgres pool and schema, and its /metrics endpoint.

A stage that dies (fenced, or a bug) stops the process with a non-zero status, so a supervisor
restarts it and the stage resumes from its last committed batch. A service whose database is behind
its groups' committed offsets (restored from a backup without ``yidi-recover``) does not start: it
exits with status 2 before it reads anything (yidi.platform.recover.behind).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.specification import AsyncAPI
from prometheus_client import REGISTRY

from yidi.platform import collector, heartbeat, metrics, probes, progress, records, recover
from yidi.platform.catchup import CatchUp
from yidi.platform.db import (application_name, check_progress, close_pool, migrate, record_progress, settings_pool,
                              statements_for)
from yidi.platform.errors import DatabaseWentBack, TransientError
from yidi.platform.kafka import CLIENT_STOP_SECONDS, TransactionalStage, ensure_topics
from yidi.platform.logs import setup_logging
from yidi.platform.settings import Settings

log = logging.getLogger(__name__)


def require_codecs() -> None:
    """Refuse to start without every codec a producer may compress a batch with. aiokafka reads
    gzip by itself and lz4, snappy and zstd through cramjam: without it, one such batch from a
    gateway or a region stopped a stage for good (the fetch raises before a handler sees the
    record, and the stage restarts onto the same batch) and made a feed skip records."""
    from aiokafka.codec import has_gzip, has_lz4, has_snappy, has_zstd

    missing = [name for name, has in (("gzip", has_gzip), ("lz4", has_lz4), ("snappy", has_snappy), ("zstd", has_zstd))
               if not has()]
    if missing:
        raise SystemExit(f"Kafka compression codecs missing: {', '.join(missing)}. Install the project's "
                         "dependencies (cramjam, aiokafka's lz4/snappy/zstd extras): make venv")


async def _bounded_stop(stop: Callable[[], Awaitable[None]], topics: list[str]) -> None:
    try:
        await asyncio.wait_for(stop(), CLIENT_STOP_SECONDS)
    except TimeoutError:
        log.warning("the feed of %s: its Kafka consumer did not stop within %g s (Kafka unreachable?); left to "
                    "the broker's timeouts", ", ".join(topics), CLIENT_STOP_SECONDS)


class Service:
    """One Yidi service: ``build`` wires it, ``run`` runs it until SIGTERM or a stage failure."""

    def __init__(self, name: str, settings: Settings, *, migrations: str | None) -> None:
        self.name = name
        self.settings = settings
        self.migrations = migrations
        self.pool: asyncpg.Pool | None = None
        self.stages: list[TransactionalStage] = []
        self.resources: list[Callable[[], Awaitable[Any]]] = []
        self.on_ready: list[Callable[[], Awaitable[None]]] = []
        # Loops that run beside the stages while they run (a metric's sampler), cancelled at stop.
        self.background: list[Callable[[], Awaitable[None]]] = [heartbeat.beat]
        self._background: list[asyncio.Task[None]] = []
        self.exit_code = 0
        # Per consumer group, what its stage or feed holds in ``stage_progress`` (yidi.platform.progress):
        # filled at start from the committed offsets (``recover.behind``), then by each batch; checked
        # by each batch's progress statement and every ``progress.CHECK_SECONDS`` (``_check_held_every``).
        self.held: dict[str, dict[tuple[str, int], int]] = {}
        # Per consumer group, the restore marks its committed offsets carried at start (yidi-recover
        # left them: the records below were applied before the database was restored): ``CatchUp``.
        self.marks: dict[str, dict[tuple[str, int], int]] = {}
        # The consumer groups of the feeds this service registered (``feeds.feed``): what a stage
        # waits for after a restore (``_wait_for_feeds``). A group with marks that no feed of this
        # run reads (one a setting turned off since) is never waited for: it would hold every start.
        self.feed_groups: set[str] = set()
        records.install()  # every consumer of the process, the feeds' too: header names not UTF-8 read
        self.broker = KafkaBroker(
            settings.kafka_bootstrap,
            client_id=f"yidi-{name}",
            middlewares=(KafkaPrometheusMiddleware(registry=REGISTRY, app_name=f"yidi-{name}"),),
            graceful_timeout=10.0,
            # One line per consumed record is too much at thousands a second: debug level.
            log_level=logging.DEBUG,
        )
        self.app = FastStream(
            self.broker,
            lifespan=self._lifespan,
            specification=AsyncAPI(title=f"Yidi {name}", version="0.1.0"),
        )
        self.app.after_startup(self._start_stages)
        self.app.on_shutdown(self._stop_stages)
        self._watch: asyncio.Task[None] | None = None
        self._sweep: asyncio.Task[None] | None = None

    def db(self) -> asyncpg.Pool:
        assert self.pool is not None, "the pool opens in the lifespan"
        return self.pool

    def topic(self, name: str) -> str:
        return self.settings.topic(name)

    def group(self, name: str) -> str:
        return self.settings.group(f"yidi-{self.name}-{name}")

    def add_stage(self, stage: TransactionalStage) -> None:
        if self.pool is not None:
            stage.record_progress = functools.partial(record_progress, self.pool, self.name)
        stage._held = self.held.setdefault(self.settings.group(stage.group_id), stage._held)
        self.stages.append(stage)

    @asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        setup_logging(self.name, self.settings.log_level)
        collector.tune(self.settings.gc_thresholds)
        metrics.serve_metrics(self.settings.metrics_host, self.settings.metrics_port)
        # 0 while starting (topics, migrations, on_ready): a start that hangs shows, and alerts.
        metrics.SERVICE_UP.labels(self.name).set(0)
        await ensure_topics(self.settings)
        if self.migrations:
            self.pool = await settings_pool(self.settings, service=self.name)
            # Before the migrations change anything (a backup from before stage_progress keeps
            # lacking it, and yidi-recover then says so), and before any feed or stage reads a
            # record: nothing is handled on a database that lacks what Kafka says it holds.
            with statements_for("start-check"):  # in yidi_db_statement_seconds, apart from the migrations
                lagging = await recover.behind(self.settings, self.name, self.pool, self.held, self.marks)
            if lagging:
                await close_pool(self.pool)
                raise recover.DatabaseBehind(lagging)
            await migrate(self.pool, self.name, self.migrations)
            self.background.append(self._check_held_every)
            self.background.append(lambda: probes.postgres_every(
                self.settings.database_url, application_name=application_name(self.settings, self.name, "probe")))
        for ready in self.on_ready:
            await ready()
        try:
            yield
        finally:
            for close in reversed(self.resources):
                await close()
            if self.pool:
                await close_pool(self.pool)

    async def _start_stages(self) -> None:
        self._bound_feed_stops()
        if self.exit_code:
            return  # a feed found the database gone back while the broker started: stopping already
        collector.freeze()  # started: what it holds now (imports, warm caches) is never scanned again
        if self.settings.gc_full_collection_seconds > 0:
            self._sweep = asyncio.create_task(collector.collect_every(self.settings.gc_full_collection_seconds))
        self._wait_for_feeds()
        for stage in self.stages:
            with statements_for(stage.name):  # its task's statements, in yidi_db_statement_seconds
                await stage.start()
        metrics.SERVICE_UP.labels(self.name).set(1)
        self._background = [asyncio.create_task(loop()) for loop in self.background]
        self._watch = asyncio.create_task(self._watch_stages())
        log.info("%s ready: stages %s, metrics on :%s", self.name, [s.name for s in self.stages], self.settings.metrics_port)

    def _wait_for_feeds(self) -> None:
        """After a restore (restore marks on the feeds' groups): every stage's batches wait until the
        service's feeds have applied again what the restored database lacked.
        Pricing priced new settlements with the backup's policies and catalogue while its feeds
        were still applying again the versions published after it (a review, session 49; eligibility
        waited already, ``CatchUp``). What a stage handles again (below its mark) waits too: the
        feeds never wait for anything, and a redone settlement priced before its region's catalogue
        was applied again was refused, its row never written (the diff review, session 49). Only the
        feeds this run registered are waited for, never another stage: a stage's loop held on a
        batch cannot handle its other partitions' records, and two stages waiting on each other so
        would each wait ``catchup.GIVE_UP_SECONDS``."""
        feeds = self.feeds_marked()
        if not feeds or self.pool is None:
            return
        for stage in self.stages:
            if stage.catch_up is None:  # eligibility's stage sets its own, with its filings stage's too
                stage.catch_up = CatchUp(self.db, self.name, feeds)

    def feeds_marked(self) -> dict[str, dict[tuple[str, int], int]]:
        """The restore marks of the feeds this service registered (their consumer groups')."""
        return {group: marks for group, marks in self.marks.items() if group in self.feed_groups and marks}

    def _bound_feed_stops(self) -> None:
        """Bound the stop of each feed's Kafka consumer (FastStream's subscribers, started by now),
        as the stages bound theirs: with Kafka unreachable, leaving the group waited out its request
        timeout, and a service whose feeds' consumers did took 44 s to stop, past a supervisor's
        usual grace period (30 s). What is left is the broker's: the group's session times out."""
        for subscriber in self.broker.subscribers:
            consumer = getattr(subscriber, "consumer", None)
            if consumer is None:
                continue
            consumer.stop = functools.partial(_bounded_stop, consumer.stop, sorted(consumer.subscription()))

    async def _watch_stages(self) -> None:
        tasks = [s.task for s in self.stages if s.task]
        if not tasks:
            return
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and (exc := task.exception()):
                if (went := _went_back(exc)) is not None:
                    self.went_back(went)
                    continue
                log.error("%s: a stage failed, stopping: %r", self.name, exc)
                self.exit_code = max(self.exit_code, 1)  # not below a stage's DatabaseWentBack (2)
                self.app.exit()

    async def _check_held_every(self, seconds: float = progress.CHECK_SECONDS) -> None:
        """Every ``seconds``, check every row the service's stages and feeds hold, in one query: a
        partition without traffic, and a service whose only reader of the database records nothing
        (eligibility's settlement stage), find a database that went back too. Postgres away, or a
        check that takes over ``3 * seconds``: the next round tries again (the stages and probes say
        when Postgres is away), and six in a row (a minute) are said once at WARNING. Any other failure
        (a privilege lost) is said at once, at WARNING; the checks go on, and the first to succeed
        again says so. Each check that ran (or had nothing to check) sets
        ``yidi_progress_checked_timestamp_seconds``: one that has not for a minute while Postgres
        answers is ``YidiProgressCheckFailing``."""
        with statements_for("progress-check"):  # its statements and errors apart from the migrations
            await self._check_held_rounds(seconds)

    async def _check_held_rounds(self, seconds: float) -> None:
        failing = False
        missed = 0  # rounds in a row that did not run (Postgres away, or too slow)
        while True:
            await asyncio.sleep(seconds)
            if self.pool is None:
                continue
            try:
                await asyncio.wait_for(
                    check_progress(self.pool, self.name, [progress.Progress(group, {}, held=dict(held))
                                                          for group, held in sorted(self.held.items()) if held]),
                    3 * seconds)
            except DatabaseWentBack as exc:
                self.went_back(exc)
                return
            except (TransientError, TimeoutError) as exc:
                missed += 1
                log.debug("%s: the progress check did not run: %r", self.name, exc)
                if missed == 6 and not failing:  # a minute, at 10 s
                    log.warning("%s: the check that its database has not gone back has not run for %.0f s: %r; "
                                "tried again every %.0f s", self.name, missed * seconds, exc, seconds)
                    failing = True
            except Exception as exc:  # noqa: BLE001 - a privilege lost after a failover: said, not fatal
                if not failing:
                    log.warning("%s: the check that its database has not gone back failed: %r; tried again every "
                                "%.0f s", self.name, exc, seconds)
                failing = True
            else:
                metrics.PROGRESS_CHECKED.set_to_current_time()
                if failing:
                    log.info("%s: the check that its database has not gone back runs again", self.name)
                failing, missed = False, 0

    def went_back(self, exc: DatabaseWentBack) -> None:
        """A stage or a feed found the database gone back under it: stop, with status 2, as the
        check at start would refuse it (yidi.platform.progress). Said once: a feed's batch, not
        acknowledged, may be read again while the service stops."""
        if self.exit_code == 2:
            return
        log.critical("%s: %s. Was the database restored while the service ran, or did Postgres fail over to "
                     "a replica that was behind? The service stops, committing nothing more to Kafka. Stop every "
                     "instance of it, run `yidi-recover %s` to move its groups back to what the database holds, "
                     "then start it (its check at start refuses while Kafka's offsets say more than the database "
                     "holds; runbook, \"A service stops: its database went back under it\").",
                     self.name, exc, self.name)
        self.exit_code = 2
        self.app.exit()

    async def _stop_stages(self) -> None:
        metrics.SERVICE_UP.labels(self.name).set(0)
        if self._watch:
            self._watch.cancel()
        if self._sweep:
            self._sweep.cancel()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        # Together: each is bounded (CLIENT_STOP_SECONDS per Kafka client), and so is the whole.
        for stage, result in zip(self.stages, await asyncio.gather(*(stage.stop() for stage in self.stages),
                                                                   return_exceptions=True), strict=True):
            if isinstance(result, BaseException):
                log.warning("stage %s did not stop cleanly: %r", stage.name, result)

    def run(self) -> None:
        require_codecs()
        try:
            asyncio.run(self.app.run())
        except recover.DatabaseBehind as exc:
            log.critical("%s: its database is behind Kafka; the service does not start, and nothing was handled:\n  %s\n"
                         "Was the database restored from a backup, or did Postgres lose its last commits? Stop every "
                         "instance of %s and run `yidi-recover %s`, then start it again (runbook, \"A service does "
                         "not start: its database is behind Kafka\").", self.name, "\n  ".join(exc.args[0]),
                         self.name, self.name)
            sys.exit(2)
        sys.exit(self.exit_code)


def _went_back(exc: BaseException) -> DatabaseWentBack | None:
    """The ``DatabaseWentBack`` behind a stage's failure: itself, or what it was raised from or
    during (the abort of its Kafka transaction may fail after it)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, DatabaseWentBack):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
