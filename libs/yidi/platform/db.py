"""Postgres plumbing: a pool per service, its own schema, migrations applied at start-up.

asyncpg's connection errors are mapped to ``TransientError`` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import struct
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from importlib import resources

import asyncpg
import orjson
from asyncpg.connection import LoggedQuery

from yidi.platform import metrics, progress
from yidi.platform.errors import BadData, DatabaseWentBack, RaceLost, TransientError

if TYPE_CHECKING:
    from yidi.platform.settings import Settings

log = logging.getLogger(__name__)

TRANSIENT = (
    asyncpg.PostgresConnectionError,
    # 57xxx: a statement cancelled (a DBA's pg_cancel_backend, a statement_timeout), the server
    # shutting down or starting (CannotConnectNowError is one of them).
    asyncpg.OperatorInterventionError,
    # 53xxx: too many connections, disk full, out of memory.
    asyncpg.InsufficientResourcesError,
    asyncpg.InterfaceError,
    # A pooled connection Postgres ended (a restart, pg_terminate_backend) whose goodbye lands as
    # the next statement starts: "cannot switch to state ...; another operation is in progress"
    # (tests/integration/test_db_transient.py met it about half the time). Repository.transaction
    # closes the connection, so the retry takes a fresh one. (Its subclass ProtocolError, input
    # asyncpg cannot decode, is not retried: transient_errors lets it through.)
    asyncpg.InternalClientError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.LockNotAvailableError,  # a lock_timeout
    # 25P03: a transaction left idle past IDLE_IN_TRANSACTION_MS (its process frozen meanwhile); the
    # server ended the session, and the retry takes a fresh connection.
    asyncpg.IdleInTransactionSessionTimeoutError,
    # A prepared statement whose result type a migration changed (a column added under SELECT *,
    # by a newer instance in a rolling upgrade): asyncpg drops it, and the retry prepares it again.
    asyncpg.InvalidCachedStatementError,
    ConnectionError,
    OSError,
    TimeoutError,
)


@contextlib.asynccontextmanager
async def transient_errors() -> AsyncIterator[None]:
    """Map a database that is away to ``TransientError`` (the stage retries with back-off), a
    unique violation to ``RaceLost`` (another instance recorded the same msgid or reqid first: the
    stage retries a few times, then stops, since one that keeps coming back is a bug), and a value
    the database refuses to ``BadData`` (the stage isolates the record and refuses it)."""
    try:
        yield
    except asyncpg.ProtocolError:
        raise  # what asyncpg could not decode would be refused the same way again
    except asyncpg.InternalClientError as exc:
        raise TransientError(f"database connection lost under a statement (asyncpg: {exc})") from exc
    except TRANSIENT as exc:
        raise TransientError(f"database unavailable: {type(exc).__name__}: {exc}") from exc
    except asyncpg.ProgramLimitExceededError as exc:
        # 54000 only: a value past a limit (an index row over 2,704 bytes) is the record's fault;
        # its subclasses (a statement too complex, too many columns or arguments) are the code's.
        if exc.sqlstate == "54000":
            raise BadData(f"{type(exc).__name__}: {exc}") from exc
        raise
    except asyncpg.UniqueViolationError as exc:
        raise RaceLost(f"{exc.constraint_name or 'a unique key'} already holds this record: {exc}") from exc
    except BAD_DATA as exc:
        raise BadData(f"{type(exc).__name__}: {exc}") from exc
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == progress.WENT_BACK_SQLSTATE:
            raise DatabaseWentBack(str(exc)) from exc
        raise


# SQLSTATE class 22 (data exception: a numeric field overflow, an untranslatable character, ...) and
# the integrity checks a single record can fail: the record is at fault, not the database. So is a
# value past one of Postgres's limits (54000, above: an index row over 2,704 bytes, where a counter
# named after a region's text of kilobytes stopped pricing at every start).
BAD_DATA = (asyncpg.DataError, asyncpg.CheckViolationError, asyncpg.NotNullViolationError)


async def lock_keys(conn: asyncpg.Connection, scope: str, keys: Iterable[str | bytes | None], *,
                    shared_first: str | None = None) -> None:
    """Transaction-level advisory locks on ``keys`` (a batch's persons), in ``scope`` (a service),
    taken in one statement in the order of the lock keys (two keys may share one): batches that
    touch the same persons take turns and never wait on each other in a circle. With one
    instance per stage they never wait at all; with several, two instances that both hold a
    partition for a moment during a rebalance handle a person one after the other.

    ``shared_first`` names a lock taken shared before them, in the same statement (one round
    trip): clearing's periods lock, which a month's clearing takes exclusively. A settlement
    batch takes the same locks with its transaction's BEGIN (``locks``, ``Repository.transaction``)."""
    if (taken := locks(scope, keys, shared_first=shared_first)) is not None:
        await conn.execute(taken.sql())


@dataclass(frozen=True)
class Locks:
    """Advisory lock keys (``lock_keys``), as Postgres's ``hashtext`` of their texts: the
    statement that takes them holds integers only (no person number reaches Postgres's
    statements or logs, and nothing needs escaping), so it can travel with BEGIN in one simple
    query (``Repository.transaction``), which takes no parameters."""

    keys: tuple[int, ...]  # the persons', in order (distinct)
    shared_first: int | None = None

    def sql(self) -> str:
        persons = f"SELECT pg_advisory_xact_lock(k) FROM unnest('{{{','.join(map(str, self.keys))}}}'::bigint[]) AS k"
        if self.shared_first is not None:
            return f"SELECT pg_advisory_xact_lock_shared({self.shared_first}) UNION ALL {persons}"
        return persons


def locks(scope: str, keys: Iterable[str | bytes | None], *, shared_first: str | None = None) -> Locks | None:
    """The locks of ``keys`` in ``scope`` (``lock_keys``); None: nothing to lock. The keys are
    those ``pg_advisory_xact_lock(hashtext(scope || ':' || key))`` takes (``hashtext``)."""
    texts = {k.decode("utf-8", "replace") if isinstance(k, bytes) else k for k in keys if k}
    if not texts and shared_first is None:
        return None
    return Locks(tuple(sorted({hashtext(f"{scope}:{t}") for t in texts})),
                 None if shared_first is None else hashtext(shared_first))


_M32 = 0xFFFFFFFF
_WORDS = struct.Struct("<3I").unpack_from  # three little-endian 32-bit words


def hashtext(text: str) -> int:
    """Postgres's ``hashtext(text)`` (``hash_bytes`` in src/common/hashfn.c, Bob Jenkins' lookup3,
    on a little-endian server, of the text's UTF-8 bytes: a UTF-8 database with a deterministic
    collation), as the signed 32-bit integer it returns. tests/integration/test_transaction_locks.py
    compares it with the server's. Every advisory lock of the services' data is keyed through it
    (``lock_keys``, ``locks``, clearing's periods lock), so two takers of one lock agree even on a
    server that hashes otherwise (big-endian); on the others the keys are those the server's
    ``hashtext`` gave earlier versions. A text Postgres cannot hold (a NUL) is the record's fault."""
    if "\x00" in text:
        raise BadData(f"a lock key holds a NUL character: {text!r}")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadData(f"a lock key is not text Postgres can hold: {text!r}") from exc
    n = len(data)
    m = _M32
    a = b = c = (0x9E3779B9 + n + 3923095) & m
    i = 0
    # lookup3's mix() and final() written out, rotations inline: a function call per step was a
    # third of the time, and this runs for every lock key of every batch.
    while n - i >= 12:
        x, y, z = _WORDS(data, i)
        a, b, c = (a + x) & m, (b + y) & m, (c + z) & m
        a = ((a - c) & m) ^ (((c << 4) | (c >> 28)) & m)
        c = (c + b) & m
        b = ((b - a) & m) ^ (((a << 6) | (a >> 26)) & m)
        a = (a + c) & m
        c = ((c - b) & m) ^ (((b << 8) | (b >> 24)) & m)
        b = (b + a) & m
        a = ((a - c) & m) ^ (((c << 16) | (c >> 16)) & m)
        c = (c + b) & m
        b = ((b - a) & m) ^ (((a << 19) | (a >> 13)) & m)
        a = (a + c) & m
        c = ((c - b) & m) ^ (((b << 4) | (b >> 28)) & m)
        b = (b + a) & m
        i += 12
    if i < n:
        # The last 11 bytes or fewer, zero-padded; c's lowest byte is the length's, so c takes 3.
        x, y, z = _WORDS(data[i:] + bytes(12 - (n - i)))
        a, b, c = (a + x) & m, (b + y) & m, (c + ((z & 0xFFFFFF) << 8)) & m
    c = ((c ^ b) - (((b << 14) | (b >> 18)) & m)) & m
    a = ((a ^ c) - (((c << 11) | (c >> 21)) & m)) & m
    b = ((b ^ a) - (((a << 25) | (a >> 7)) & m)) & m
    c = ((c ^ b) - (((b << 16) | (b >> 16)) & m)) & m
    a = ((a ^ c) - (((c << 4) | (c >> 28)) & m)) & m
    b = ((b ^ a) - (((a << 14) | (a >> 18)) & m)) & m
    c = ((c ^ b) - (((b << 24) | (b >> 8)) & m)) & m
    return c - (1 << 32) if c & 0x80000000 else c


def json_value(value: Any) -> Any:
    """A jsonb column as Python: asyncpg hands jsonb over as text unless a codec is set."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


class Repository:
    """Base of the services' repositories: their pool, and one transaction per batch."""

    # The service's schema, where a batch's transactions record its progress (``progress.BATCH``);
    # None: a repository that records none.
    schema: str | None = None

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def transaction(self, locked: Locks | None = None, *, followed: bool = False
                          ) -> AsyncIterator[asyncpg.Connection]:
        """One connection and one transaction; a database that is away is transient.

        READ COMMITTED, whatever the database's default: the stages take their locks, then read
        in a statement of its own, and must see what the lock's holder committed. Under
        REPEATABLE READ the snapshot is the first statement's, taken while waiting for the lock:
        a settlement batch that waited for a month's clearing would still read the month open and
        land in it after its statements were written (never cleared).

        ``locked``: locks (``locks``) taken by the query that begins the transaction: BEGIN and
        the locking statement in one simple query, one round trip (a settlement batch's persons:
        pricing's and clearing's), rather than the locks in a statement of their own after it.

        Inside a stage's or a feed's batch (``progress.BATCH``), the same query records where the
        batch began (``stage_progress`` of ``schema``), so that a restored database says where it stood.
        ``followed``: another transaction of the batch follows this one (clearing's close of a
        month, then its run), and this one records one record less (``Progress.before_last``).

        The transaction is begun and committed here, not by asyncpg's ``conn.transaction()``,
        which does not read what COMMIT answers: a transaction Postgres had aborted (an error a
        caller caught and went on from) answers COMMIT with "ROLLBACK", raising nothing, and the
        stage would publish answers for writes that were never made (a review, session 37). It is
        a ``TransientError`` here: retried, the batch is handled again from the start. asyncpg does
        not know of the transaction, so ``conn.transaction()`` inside it is refused: a
        ``NestedTransaction`` error (a bug to fix, not Postgres away: never retried). A savepoint is
        ``savepoint(conn)``."""
        begin = "BEGIN ISOLATION LEVEL READ COMMITTED" + ("" if locked is None else f"; {locked.sql()}")
        batch = progress.BATCH.get() if self.schema is not None else None
        if batch is not None and followed:
            batch = batch.before_last()  # its ``recorded`` is its own: the batch's last transaction records
        if batch is not None and (recorded := batch.sql(self.schema or "")):
            begin += f"; {recorded}"  # where the batch began, with its writes (yidi.platform.progress)
        else:
            batch = None
        async with transient_errors(), self._pool.acquire() as conn:
            try:
                try:
                    with _progress_kept(self.schema if batch is not None else None):
                        await conn.execute(begin)
                    yield conn
                except BaseException as exc:
                    # Also when BEGIN's query itself was cancelled or timed out (while it ran, asyncpg
                    # still reads the connection as idle): asyncpg waits for the cancel, then rolls back.
                    if not conn.is_closed() and not isinstance(exc, asyncpg.InternalClientError):
                        with contextlib.suppress(Exception):
                            await conn.execute("ROLLBACK")
                    if isinstance(exc, asyncpg.InterfaceError) and "manually started transaction" in str(exc):
                        raise NestedTransaction(
                            "conn.transaction() inside Repository.transaction: use savepoint(conn)") from exc
                    raise
                if (status := await conn.execute("COMMIT")) != "COMMIT":
                    raise TransientError(f"the transaction was rolled back at its commit ({status}): an error "
                                         "inside it was caught and not raised")
                if batch is not None:
                    batch.recorded = True  # its stage need not record it in a statement of its own
            except asyncpg.InternalClientError:
                # asyncpg lost track of the connection's state (a goodbye from the server that landed
                # as a statement started, say): closed, it is replaced, and the retry starts afresh.
                conn.terminate()
                raise


async def record_progress(pool: asyncpg.Pool, schema: str, batch: progress.Progress) -> None:
    """Record where ``batch`` began in ``schema``'s ``stage_progress`` in a statement of its own,
    waited to disk: the offsets its stage or feed then commits say the database holds it
    (yidi.platform.progress), and a row lost in a crash would then stop the service at its next start."""
    if not (recorded := batch.sql(schema)):
        return
    async with transient_errors():
        with _progress_kept(schema):
            await pool.execute(recorded)
    batch.recorded = True


async def check_progress(pool: asyncpg.Pool, schema: str, batches: Iterable[progress.Progress]) -> None:
    """Check, in one simple query, that the rows ``batches`` hold (``Progress.check_sql``) are still
    there: ``DatabaseWentBack`` if one went back (a feed before it applies its batch; a service
    every ``progress.CHECK_SECONDS`` for all its stages and feeds hold)."""
    if not (checks := "; ".join(c for b in batches if (c := b.check_sql(schema)))):
        return
    async with transient_errors():
        with _progress_kept(schema):
            await pool.execute(checks)


# What a batch's progress statement meets on a database without the schema, ``stage_progress`` or
# the check's function (migration platform_002), all there since the service's migrations ran.
_NOT_KEPT = (asyncpg.InvalidSchemaNameError, asyncpg.UndefinedTableError, asyncpg.UndefinedFunctionError)


@contextlib.contextmanager
def _progress_kept(schema: str | None) -> Iterator[None]:
    """Around a statement that records a batch's progress in ``schema`` (None: none): a database
    without what the service's migrations made went back under it too (restored from a backup from
    before them, emptied, or another database): ``DatabaseWentBack``, as a row that went back."""
    try:
        yield
    except _NOT_KEPT as exc:
        if schema is None:
            raise
        raise DatabaseWentBack(f"the database went back under the running service: it has no {schema}.{progress.TABLE} "
                               f"as this version's migrations made it ({type(exc).__name__}: {exc}); restored from a "
                               "backup from before them, emptied, or another database") from exc


class NestedTransaction(RuntimeError):
    """asyncpg's ``conn.transaction()`` used inside ``Repository.transaction``: a bug, which a
    stage must not retry as if Postgres were away."""


@contextlib.asynccontextmanager
async def savepoint(conn: asyncpg.Connection, name: str = "yidi_savepoint") -> AsyncIterator[None]:
    """A savepoint inside ``Repository.transaction``: what its block wrote is undone when the
    block raises (Postgres's error included, which leaves the transaction usable again), and the
    transaction goes on. Savepoints of the same name may nest: each rolls back to its own."""
    await conn.execute(f"SAVEPOINT {name}")
    try:
        yield
    except Exception as exc:
        # Not on a connection asyncpg lost track of: the transaction's own handling closes it.
        if not conn.is_closed() and not isinstance(exc, asyncpg.InternalClientError):
            await conn.execute(f"ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}")
        raise
    await conn.execute(f"RELEASE SAVEPOINT {name}")


async def forget_in_chunks(service: str, repo: Repository,
                           forget: Callable[[asyncpg.Connection], Awaitable[int]], limit: int = 10_000) -> None:
    """Run ``forget`` (a bounded DELETE of old rows, at most ``limit``, returning how many it
    deleted) in transactions of their own until one deletes fewer than ``limit``: a backlog (after
    an outage, or at a high rate) goes in one pass, each statement short. A failure is logged and
    left to the next pass (housekeeping: the rows keep)."""
    try:
        while True:
            async with repo.transaction() as conn:
                if await forget(conn) < limit:
                    return
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - see above
        log.warning("%s: old rows not dropped this time: %r", service, exc)


class Purge:
    """``forget_in_chunks`` of ``forget`` at most every ``every_s`` seconds, in a task of its own (a
    batch's answers do not wait for it), never two at once. ``due()`` is called after each batch."""

    def __init__(self, service: str, repo: Repository, forget: Callable[[asyncpg.Connection], Awaitable[int]],
                 every_s: float = 60.0) -> None:
        self.service, self.repo, self.forget, self.every_s = service, repo, forget, every_s
        self._next = 0.0  # monotonic time of the next purge
        self._task: asyncio.Task[None] | None = None

    def due(self) -> None:
        if time.monotonic() < self._next or (self._task is not None and not self._task.done()):
            return
        self._next = time.monotonic() + self.every_s
        # Not the batch's statements, whose stage starts it, nor its progress: the purge's
        # transactions would hold the partitions' progress rows against the next batch.
        with statements_for(f"{self.service}-purge"), progress.batch(None):
            self._task = asyncio.get_running_loop().create_task(
                forget_in_chunks(self.service, self.repo, self.forget), name=f"{self.service}-purge")


MIGRATION_TIMEOUT_S = 3600.0
POOL_CLOSE_SECONDS = 5.0


async def close_pool(pool: asyncpg.Pool, seconds: float = POOL_CLOSE_SECONDS) -> None:
    """Close ``pool`` gracefully, or, after ``seconds``, at once: a Postgres that does not answer
    (a network partition, a frozen host) would hold each connection's goodbye for up to its
    command timeout (30 s), and a stopping service past its supervisor's grace period."""
    try:
        await asyncio.wait_for(pool.close(), seconds)
    except TimeoutError:
        log.warning("the database pool did not close within %g s (Postgres unreachable?); its connections "
                    "were dropped", seconds)
        pool.terminate()


async def execute_alone(dsn: str, sql: str) -> None:
    """One statement on a connection of its own, outside any pool and transaction (``CREATE
    DATABASE`` and ``DROP DATABASE`` run nowhere else): the throwaway databases of tests and benches."""
    async with transient_errors():
        conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _no_session_reset(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's default session reset (``pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL``): one round trip per release, 0.3–2.7 ms per batch per stage, for
    session state this code never leaves behind (advisory locks are transaction-level, settings
    ``SET LOCAL``, no LISTEN, no cursors held). asyncpg still rolls back an open transaction."""


# What a statement of a service's pool runs for (``source`` of ``yidi_db_statement_seconds`` and
# ``yidi_db_statement_errors_total``): a stage's name, a feed's, a sampler's, a purge's
# (``<service>-purge``), the checks that the database is not behind Kafka (``start-check``,
# ``progress-check``); "other" for the rest (migrations and the caches warmed at start). A task
# starts with its creator's value.
STATEMENT_SOURCE: ContextVar[str] = ContextVar("yidi_db_statement_source", default="other")


@contextlib.contextmanager
def statements_for(source: str) -> Iterator[None]:
    """The statements run in this block, in this task and the tasks it starts, counted for ``source``."""
    token = STATEMENT_SOURCE.set(source)
    try:
        yield
    finally:
        STATEMENT_SOURCE.reset(token)


def statement_metrics(service: str) -> Callable[[LoggedQuery], None]:
    """An asyncpg query logger that times each statement of ``service``'s connections
    (``yidi_db_statement_seconds``) and counts the failed ones by their error class
    (``yidi_db_statement_errors_total``), each for what it ran for (``STATEMENT_SOURCE``): ops see
    a slow or failing Postgres apart from slow handlers, which stage's statements are slow, and
    which error a stage keeps retrying (its ``yidi_stage_retries_total`` says only
    ``TransientError``); a statement that succeeded says Postgres answered
    (``yidi_db_reached_timestamp_seconds``). asyncpg calls it soon after each statement, off the
    statement's path, in the statement's context (``loop.call_soon``)."""
    timers: dict[str, Any] = {}

    def observe(record: LoggedQuery) -> None:
        source = STATEMENT_SOURCE.get()
        if (timer := timers.get(source)) is None:
            timer = timers[source] = metrics.DB_STATEMENT_SECONDS.labels(service, source)
        timer.observe(record.elapsed)
        if record.exception is None:
            metrics.DB_REACHED.set(time.time())  # Postgres answered (YidiPostgresUnreachable)
        else:
            metrics.DB_STATEMENT_ERRORS.labels(service, source, type(record.exception).__name__).inc()

    return observe


async def _add_query_logger(logger: Callable[[LoggedQuery], None], conn: asyncpg.Connection) -> None:
    conn.add_query_logger(logger)


# How long a transaction may sit idle (no statement running) before the server ends its session. A
# stage holds its batch's transaction while its handler works between statements, for milliseconds;
# an instance frozen meanwhile (SIGSTOP, a paused VM, an event loop blocked) held the persons' locks
# and its partitions' stage_progress rows for ever, and the instance that took its partitions over
# waited on them, retried, and left the group every 5 minutes, until an operator killed the frozen
# one (a review, session 49). The Kafka transaction timeout's 60 s: the frozen instance is fenced
# in Kafka by then too, and its late commit fails.
IDLE_IN_TRANSACTION_MS = 60_000


async def create_pool(dsn: str, *, size: int = 4, plan_cache_mode: str = "force_custom_plan",
                      parallel_workers: int | Literal["server"] = 0, service: str | None = None,
                      application_name: str | None = None,
                      idle_in_transaction_ms: int = IDLE_IN_TRANSACTION_MS) -> asyncpg.Pool:
    """``plan_cache_mode`` and ``parallel_workers``: Settings.db_plan_cache_mode and
    Settings.db_parallel_workers (why these defaults, and "server": there). ``service``: the
    service whose statements the pool's connections time (``statement_metrics``); None: not timed.
    ``application_name``: what pg_stat_activity shows of each connection (``application_name``),
    unless ``dsn`` names one."""
    # No server-side statement or lock timeout (a role's or the database's, set for other clients):
    # the services bound their own statements (command_timeout; clearing's month, for as long as it
    # needs), and a cancelled statement would be retried for ever. The idle-in-transaction timeout is
    # the services' own (``IDLE_IN_TRANSACTION_MS``; 0 until session 49, when 25P03 stopped the stage:
    # it is a TransientError now).
    server_settings = {"statement_timeout": "0", "lock_timeout": "0",
                       "idle_in_transaction_session_timeout": str(idle_in_transaction_ms)}
    if plan_cache_mode != "server":
        server_settings["plan_cache_mode"] = plan_cache_mode
    if parallel_workers != "server":
        server_settings["max_parallel_workers_per_gather"] = str(parallel_workers)
    if application_name and not names_its_application(dsn):
        server_settings["application_name"] = application_name  # one the DSN names is the operator's: kept
    init = None if service is None else functools.partial(_add_query_logger, statement_metrics(service))
    async with transient_errors():
        return await asyncpg.create_pool(dsn, min_size=1, max_size=size, command_timeout=30,
                                         reset=_no_session_reset, server_settings=server_settings, init=init)


async def settings_pool(settings: Settings, *, size: int | None = None, dsn: str | None = None,
                        service: str | None = None, tool: str | None = None) -> asyncpg.Pool:
    """A pool with the services' connection settings (``db_plan_cache_mode``, ``db_parallel_workers``),
    ``db_pool_size`` connections to ``database_url`` unless told otherwise; ``service``: see
    ``create_pool``. A service's connections are named after it and its instance in
    pg_stat_activity (``application_name`` ``yidi-<service>@<instance>``): who holds a lock, who
    waits; an operator's tool's after the tool (``tool``, e.g. ``eligibility-sweep``)."""
    return await create_pool(dsn or settings.database_url, size=settings.db_pool_size if size is None else size,
                             plan_cache_mode=settings.db_plan_cache_mode, parallel_workers=settings.db_parallel_workers,
                             service=service, application_name=application_name(settings, service or tool))


def names_its_application(dsn: str) -> bool:
    """Whether ``dsn`` names its ``application_name`` (the operator's, kept over the services' own)."""
    return "application_name" in urllib.parse.parse_qs(urllib.parse.urlsplit(dsn).query)


def application_name(settings: Settings, service: str | None, role: str = "") -> str | None:
    """``yidi-<service>[-<role>]@<instance>`` in the 63 bytes Postgres keeps; None without a service.
    A longer instance name keeps its end, which tells instances apart (a pod's name ends in its
    replica set's hash and its own), after ``~``; Postgres shows what is not printable ASCII as ``?``."""
    if service is None:
        return None
    prefix = f"yidi-{service}{'-' + role if role else ''}@".encode()[:62]
    instance = settings.instance.encode()
    if len(prefix) + len(instance) > 63:
        instance = b"~" + instance[len(prefix) + len(instance) - 62:]
    return (prefix + instance).decode(errors="ignore")


PLATFORM_MIGRATIONS = "yidi.platform.migrations"


async def migrate(pool: asyncpg.Pool, schema: str, package: str) -> list[str]:
    """Apply the ``*.sql`` files of ``package`` (a service's migrations), then the platform's own
    (``platform_*.sql``: tables every service's schema has, such as ``stage_progress``), in name
    order, once each."""
    files = sorted(
        (f for pkg in dict.fromkeys((package, PLATFORM_MIGRATIONS))
         for f in resources.files(pkg).iterdir() if f.name.endswith(".sql")), key=lambda f: f.name
    )
    applied_now = []
    async with pool.acquire() as conn, conn.transaction():
        # Two instances starting together must not both migrate.
        # Another instance may be in the middle of a long migration: wait for it, however long.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"migrate:{schema}", timeout=MIGRATION_TIMEOUT_S)
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations '
            "(version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        # The text applied, to tell a migration edited after it shipped (a database that applied
        # the first text never runs the second). Rows from before this column have none: filled in.
        await conn.execute(f'ALTER TABLE "{schema}".schema_migrations ADD COLUMN IF NOT EXISTS sha256 text')
        done = {r["version"]: r for r in await conn.fetch(f'SELECT version, sha256, applied_at FROM "{schema}".schema_migrations')}
        for f in files:
            text = f.read_text()
            digest = hashlib.sha256(text.encode()).hexdigest()
            if (row := done.get(f.name)) is not None:
                if row["sha256"] is None:
                    await conn.execute(f'UPDATE "{schema}".schema_migrations SET sha256 = $2 WHERE version = $1', f.name, digest)
                elif row["sha256"] != digest:
                    log.error("schema %s: migration %s differs from the text applied on %s; the database keeps "
                              "that text (a shipped migration must not be edited: a change goes in a new one)",
                              schema, f.name, row["applied_at"])
                continue
            await conn.execute(f'SET LOCAL search_path TO "{schema}", public')
            # A migration may rewrite a big table: it is not held to the pool's command timeout.
            await conn.execute(text, timeout=MIGRATION_TIMEOUT_S)
            await conn.execute(f'INSERT INTO "{schema}".schema_migrations(version, sha256) VALUES ($1, $2)', f.name, digest)
            applied_now.append(f.name)
    if applied_now:
        log.info("schema %s: applied %s", schema, ", ".join(applied_now))
    return applied_now
