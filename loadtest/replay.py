"""Replay a generated day against a running Yidi (or the reference pipeline) and check every answer.

    python -m loadtest.replay day.jsonl --namespace bench1. --max --window 2000 --ledger --out r.json
    python -m loadtest.replay day.jsonl --namespace bench1. --rate 100        # fixed rate
    python -m loadtest.replay day.jsonl --namespace bench1. --speed 60        # the day at ×60

One producer publishes the requests (keyed by psn_no, like a gateway); one reader follows the
reply topic with ``read_committed`` and matches answers by msgid. Each publish owes one answer,
so a duplicate request owes its own answer. Latency runs to the answer read from when the request
was due: at a fixed rate or speed, the time the schedule gave it, so a publish held back (the
window of answers outstanding full, the sender behind) counts its wait, as a hospital's queue
would (no coordinated omission); as fast as possible, and for a cancellation sent when its target
is answered, the publish. A paced run whose sends fell
short of the rate is flagged. Cancellations wait for their target's answer (they need its
``setl_id``). What an answer is about is judged from what was sent under its msgid: its infno, a
settlement's psn_no, mdtrt_id and medfee_sumamt, a cancellation's setl_id (an answer about
something else, or one that cannot be read, fails the check; one refused ``MODIFIED_REQUEST``
shows msgids of an earlier run sent again). At the end the exactly-once check runs, and with
``--ledger`` the ledger's totals are compared to the answers' (and no request that is not a
settlement has a ledger row). Under ``--min-settled`` (0.9, as the bench) of the settlements
answered settled fails the run too. Exit 0 when every check passed, 1 when one failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from array import array
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from loadtest.checks import (
    AlikeAnswers,
    ExactlyOnce,
    LedgerCheck,
    Settled,
    Totals,
    answer_totals,
    check_exactly_once,
    MIN_SETTLED_SHARE,
    check_ledger,
    run_passed,
    settled_share,
    yuan_to_fen,
)
from loadtest.generator import MALFORMED_KINDS
from yidi.contracts.envelope import DEFAULT_REPLY_TO, respond_time_ms
from yidi.platform.kafka import ensure_topics
from yidi.platform.lag import topic_partitions
from yidi.platform.replies import recover_ids
from yidi.platform.settings import Settings
from yidi.platform.topics import SETTLEMENT_REQUESTS

SETTLE_INFNOS = {"2207", "2304"}
# The msgid an answer that is not a JSON object counts under (an answer to no request: ``unexpected``).
UNREADABLE_ANSWER = "<unreadable answer>"
# An answer made (``made_at``) this far before the run began was made before it (the
# platform's clock may run a little ahead of or behind this machine's).
ANSWERED_BEFORE_ALLOWANCE_MS = 5000
# What to do when an earlier run's msgids were answered from the store or refused MODIFIED_REQUEST.
REUSED_MSGIDS_HINT = "Generate the day with a new --tag and --run-id, or replay into a fresh namespace and database."


class WindowStalled(Exception):
    """No answer came for ``drain_timeout`` seconds while the window of answers outstanding was full."""
CANCEL_INFNOS = {"2208", "2305"}


def made_at(answer: Mapping[str, Any]) -> str | None:
    """When an answer was first made (``yyyyMMddHHmmssSSS``): the moment its ``inf_refmsgid`` carries
    (``YD`` + that moment + a hash: ``answers.platform_msgid``), which a stored answer sent again
    for a resend keeps, while its ``respond_time`` is when it was sent again; else its
    ``respond_time``; None if neither reads as a moment."""
    refmsgid = answer.get("inf_refmsgid")
    if isinstance(refmsgid, str) and refmsgid.startswith("YD") and _is_moment(refmsgid[2:19]):
        return refmsgid[2:19]
    respond_time = answer.get("respond_time")
    return respond_time if isinstance(respond_time, str) and _is_moment(respond_time) else None


def _is_moment(text: str) -> bool:
    return len(text) == 17 and text.isascii() and text.isdigit()


def fingerprint(data: Mapping[str, Any]) -> int:
    """Which visit and bill a settlement is about: the hash of its request's (or its answer's
    setlinfo's) psn_no, mdtrt_id and medfee_sumamt. A hash: one int a settlement for a whole day."""
    return hash((data.get("psn_no"), data.get("mdtrt_id"), data.get("medfee_sumamt")))


# A replay at a fixed rate of 2 / PACE_TICK (400/s) or more publishes in ticks: each line at most
# this many seconds before it is due. Slower, each line waits for its time (within 0.5 ms): at
# 200-250/s ticks would send every other line early, in pairs.
PACE_TICK = 0.005


@dataclass(frozen=True)
class Pace:
    """How fast to publish: ``speed`` × the day's clock, a fixed ``rate`` per second, or as fast as
    the ``window`` of answers outstanding allows (neither)."""

    speed: float | None = None
    rate: float | None = None
    window: int = 2000

    def describe(self) -> str:
        if self.rate:
            return f"fixed rate {self.rate:g}/s (window {self.window})"
        if self.speed:
            return f"day clock ×{self.speed:g} (window {self.window})"
        return f"as fast as possible, at most {self.window} in flight"


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as f:
        for raw in f:
            if raw.strip():
                yield orjson.loads(raw)


class Replay:
    def __init__(self, bootstrap: str, namespace: str, pace: Pace, *, progress: bool = True,
                 drain_timeout: float = 60.0, grace: float = 1.5, label: str = "", total: int | None = None,
                 judge_malformed: bool = False) -> None:
        self.bootstrap = bootstrap
        self.namespace = namespace
        self.pace = pace
        self.progress = progress
        self.drain_timeout = drain_timeout
        self.grace = grace
        self.label = label
        self.total = total  # lines in the day, for the progress bar
        self._tick = PACE_TICK if (pace.rate or 0) * PACE_TICK >= 2 else 0.0005
        self.lines_done = 0
        self.request_topic = f"{namespace}{SETTLEMENT_REQUESTS}"
        self.reply_topic = f"{namespace}{DEFAULT_REPLY_TO}"
        # What was sent and what came back.
        self.sends: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.err_codes: Counter[str] = Counter()
        self.infnos: dict[str, str] = {}  # msgid → the infno it was sent with (a malformed request: none)
        self.fingerprints: dict[str, int] = {}  # settlement msgid → ``fingerprint`` of its request
        self.cancel_setl_ids: dict[str, str] = {}  # cancellation msgid → the setl_id it was sent to cancel
        self.mismatched: Counter[str] = Counter()  # msgid → answers about something else than what was sent
        self.unreadable: Counter[str] = Counter()  # msgid → answers whose fields could not be read
        # Malformed requests sent (generator.MALFORMED_KINDS), and the answers to them that did not
        # refuse them INVALID_INPUT: judged on the platform (``judge_malformed``), whose ledger must
        # hold no row of theirs either; the bare pipeline answers every request alike.
        self.judge_malformed = judge_malformed
        self.malformed: set[str] = set()
        self.not_refused: Counter[str] = Counter()
        self.reused_msgids = 0  # answers refused MODIFIED_REQUEST: an earlier run's msgid with another payload
        self.behind = array("d")  # seconds each paced publish went out after it was due
        self.paced_span = (0.0, 0.0)  # first and last paced publish (deferred cancellations are not paced)
        self.settled: dict[str, Settled] = {}
        # every answer to a msgid says what the first said (but ALREADY_UNDONE once it was cancelled)
        self.alike = AlikeAnswers(lambda m: m in self.settled and self.settled[m].setl_id in self.cancelled_setl_ids)
        self.settlements = Counter[str]()  # settlements (2207, 2304): sent; answers to them: answered, settled
        self.cancelled_setl_ids: set[str] = set()
        self.cancels = Counter[str]()  # sent, skipped (target refused), unsent (target never answered)
        self.publish_errors = 0
        self.unowed: Counter[str] = Counter()  # answers read while nothing of their msgid was owed one
        self.answered_before_run = 0  # answers made (made_at) before the run began
        self._answered_before = ""  # respond_time text of the run's start, less a clock allowance
        self.stalled = ""  # why sending stopped early: no answer for drain_timeout with the window full
        self._so_far: tuple[int, float, float] = (0, 0.0, 0.0)  # the progress line's p50/p99 so far, over n
        self._pending: dict[str, deque[float]] = {}
        self._deferred: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._ready: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outstanding = 0
        self._room = asyncio.Event()
        self._answered_any = asyncio.Event()
        # Latency (seconds) and answer time (seconds since start) of each matched answer.
        self.latency = array("d")
        self.answered_at = array("d")
        self.sent_at = array("d")
        self.started = 0.0
        self.first_send = 0.0
        self.last_send = 0.0
        self.last_answer = 0.0
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None

    # Kafka ---------------------------------------------------------------------------------------

    async def _start(self) -> None:
        await ensure_topics(Settings(kafka_bootstrap=self.bootstrap, namespace=self.namespace))
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=2,
                                          enable_idempotence=True, max_batch_size=262_144)
        await self._producer.start()
        partitions = await self._producer.partitions_for(self.reply_topic)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                          isolation_level="read_committed", fetch_max_wait_ms=20)
        await self._consumer.start()
        tps = [TopicPartition(self.reply_topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now: no answer to what is sent next is missed
            await self._consumer.position(tp)

    async def _stop(self) -> None:
        if self._consumer:
            await self._consumer.stop()
        if self._producer:
            await self._producer.stop()

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=100, max_records=2000)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    self._on_answer(record.value, now)

    def _on_answer(self, value: bytes, now: float) -> None:
        try:
            answer = orjson.loads(value)
            # Interned, as in _publish: the msgid's one copy serves every table of the run (a full
            # day holds some 650,000 of them), not one copy from the send and another from the answer.
            msgid = sys.intern(str(answer.get("msgid", "")))
        except (orjson.JSONDecodeError, AttributeError):
            # Not JSON, or not an object: an answer to no request, as the sweep counts it (it fails the check).
            self.answers[UNREADABLE_ANSWER] += 1
            self.err_codes["UNREADABLE_ANSWER"] += 1
            return
        self.answers[msgid] += 1
        queue = self._pending.get(msgid)
        if not queue and self.sends[msgid]:
            self.unowed[msgid] += 1  # nothing of this msgid waits for an answer: one too many
        if queue:
            sent = queue.popleft()
            if not queue:
                del self._pending[msgid]
            self.outstanding -= 1
            self.latency.append(now - sent)
            self.answered_at.append(now - self.started)
            self.last_answer = now
            self.err_codes[str(answer.get("err_code") or "ok")] += 1
            self._room.set()
            self._answered_any.set()
        try:
            self._check_answer(msgid, answer)
        except (AttributeError, TypeError, ValueError, ArithmeticError):
            # A field not as the contract has it (an output that is not an object, an amount with
            # three decimals): counted, and the check fails, instead of the reader dying.
            self.unreadable[msgid] += 1
        for waiting in self._deferred.pop(msgid, []):
            self._ready.put_nowait(waiting)

    def _check_answer(self, msgid: str, answer: dict[str, Any]) -> None:
        """What an answer says, against what was sent under its msgid (``infnos``, not the answer's
        own infno: an answer under another one is counted mismatched)."""
        made = made_at(answer)
        if made is not None:
            if made < self._answered_before:
                # An answer made before this run: the platform's stored answer to a request of an
                # earlier run under the same msgid (the day replayed again against the same world).
                self.answered_before_run += 1
        if answer.get("err_code") == "MODIFIED_REQUEST":
            # A generated day never sends one msgid with two payloads: an earlier run's msgid
            # (a new --run-id without a new --tag), refused now, so answered_before_run misses it.
            self.reused_msgids += 1
        self.alike.add(msgid, answer)
        if msgid in self.malformed:
            if self.judge_malformed and answer.get("err_code") != "INVALID_INPUT":
                self.not_refused[msgid] += 1
            return
        sent = self.infnos.get(msgid)
        if sent is None:
            return  # never sent (unexpected)
        ok = answer.get("infcode") == 0
        info = (answer.get("output") or {}).get("setlinfo") or {}
        if str(answer.get("infno", "")) != sent:
            self.mismatched[msgid] += 1
        if sent in SETTLE_INFNOS:
            self.settlements["answered"] += 1
            self.settlements["settled"] += ok
            if not ok:
                return
            # Another visit or bill than the one sent (the bare pipeline's answers name none).
            if "psn_no" in info and fingerprint(info) != self.fingerprints.get(msgid):
                self.mismatched[msgid] += 1
            if msgid not in self.settled:
                medfee = info.get("medfee_sumamt")
                self.settled[msgid] = Settled(str(info.get("setl_id", "")), yuan_to_fen(info.get("fund_pay_sumamt", "0")),
                                              yuan_to_fen(info.get("psn_cash_pay", "0")), yuan_to_fen(info.get("acct_pay", "0")),
                                              None if medfee is None else yuan_to_fen(medfee))
        elif ok and sent in CANCEL_INFNOS and info.get("setl_id"):
            setl_id = str(info["setl_id"])
            if setl_id != self.cancel_setl_ids.get(msgid):
                self.mismatched[msgid] += 1  # it cancelled another settlement than the one it named
            self.cancelled_setl_ids.add(setl_id)

    async def _publish(self, msgid: str, value: bytes, key: str | None, kind: str, infno: str = "",
                       due: float | None = None, fp: int | None = None) -> None:
        assert self._producer is not None
        msgid = sys.intern(msgid)
        while self.outstanding >= self.pace.window:
            self._check_reader()
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), self.drain_timeout)
            except TimeoutError:
                # Answers lost hold the window's places for good: waiting for ever would end the run
                # with no result, when the lost answers are what it is there to report.
                raise WindowStalled(f"no answer for {self.drain_timeout:g} s with all {self.pace.window} places "
                                    f"of the window waiting: sending stopped") from None
        now = time.perf_counter()
        if not self.first_send:
            self.first_send = now
        self.last_send = now
        if due is not None:
            self.behind.append(max(0.0, now - due))
            self.paced_span = (self.paced_span[0] or now, now)
        # Latency counts from when the request was due (a paced run), else from the publish.
        self._pending.setdefault(msgid, deque()).append(min(now, due) if due is not None else now)
        self.sends[msgid] += 1
        self.outstanding += 1
        self.kinds[kind] += 1
        self.sent_at.append(now - self.started)
        if kind in MALFORMED_KINDS:
            # Owed a refusal, not a settlement: out of the settlements' counts and expected rows,
            # and into the ledger's check for rows that should not be there.
            self.malformed.add(msgid)
            infno, fp = "", None
        if infno:
            self.infnos[msgid] = sys.intern(infno)
        if fp is not None:  # a settlement's ``fingerprint``
            self.fingerprints[msgid] = fp
        if infno in SETTLE_INFNOS:
            self.settlements["sent"] += 1
        fut = await self._producer.send(self.request_topic, value, key=key.encode() if key else None)
        fut.add_done_callback(self._delivered)

    def _delivered(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.publish_errors += 1

    async def _send_line(self, line: dict[str, Any], due: float | None = None) -> None:
        op = line["op"]
        if op == "raw":
            await self._publish(line["msgid"], line["raw"].encode(), line.get("key"), line["kind"], due=due)
        elif op == "send":
            request = line["request"]
            fp = fingerprint(request["input"]["data"]) if request["infno"] in SETTLE_INFNOS else None
            await self._publish(line["msgid"], orjson.dumps(request), line.get("key"), line["kind"], request["infno"], due, fp)
        elif op == "cancel":
            target = line["target"]
            if target in self.settled:
                request = line["request"]
                request["input"]["data"]["setl_id"] = self.settled[target].setl_id
                self.cancel_setl_ids[sys.intern(line["msgid"])] = self.settled[target].setl_id
                self.cancels["sent"] += 1
                await self._publish(line["msgid"], orjson.dumps(request), line.get("key"), line["kind"], request["infno"], due)
            elif self.answers[target]:
                self.cancels["skipped (target not settled)"] += 1
            else:
                self._deferred[target].append(line)
        else:
            raise ValueError(f"unknown op {op!r}")

    async def _send_deferred(self) -> None:
        while True:
            line = await self._ready.get()
            try:
                await self._send_line(line)
            except WindowStalled as exc:
                # The run ends as the main sender's stall ends it: reported, not raised.
                self.stalled = self.stalled or str(exc)
                return
            self._ready.task_done()

    # Pacing and progress -------------------------------------------------------------------------

    async def _wait_turn(self, index: int, t: float, t0: float) -> float | None:
        """Wait for a line's turn; return when it was due (None: as fast as possible)."""
        if self.pace.rate:
            due = self.started + index / self.pace.rate
        elif self.pace.speed:
            due = self.started + (t - t0) / self.pace.speed
        else:
            return None
        delay = due - time.perf_counter()
        if delay > self._tick:
            # Asleep until this line is due; at a fixed rate of 400/s or more, the lines due within
            # a tick after it then go at once, together. A wake-up per line (every 0.5 ms at
            # 2,000/s) cost the tool, on the box it shares with what it measures, about twice the
            # CPU per request of an unpaced run. A line sent early is timed from when it was sent.
            await asyncio.sleep(delay)
        return due

    def progress_line(self, now: float, every: float, recent: np.ndarray | None, rate: float) -> str:
        """One status line: a bar over the day's lines with % and ETA, the answer rate, p50/p99 of
        the last interval and so far, in flight and errors."""
        n = len(self.latency)
        elapsed = now - self.started
        if self.total:
            share = min(1.0, self.lines_done / self.total)
            filled = int(share * 20)
            eta = f"ETA {elapsed * (1 - share) / share:5.0f}s" if share > 0 else "ETA     ?"
            bar = f"[{'#' * filled}{'.' * (20 - filled)}] {share * 100:5.1f}% {eta} "
        else:
            bar = f"sent {sum(self.sends.values()):>7} "
        p50, p99 = (np.percentile(recent, [50, 99]) * 1000) if recent is not None and len(recent) else (0.0, 0.0)
        done, a50, a99 = self._so_far
        if n and (not done or n > done * 1.1):
            # Over every latency so far, again once they are a tenth more: at each tick it cost 20 ms
            # at 700,000 answers, on the loop that reads the answers (and times them).
            a50, a99 = np.percentile(np.frombuffer(self.latency[:n], dtype=np.float64), [50, 99]) * 1000
            self._so_far = (n, a50, a99)
        errors = sum(v for k, v in self.err_codes.items() if k != "ok")
        return (f"{self.label}[{elapsed:6.1f}s] {bar}| answered {n:>7} {rate:6.0f}/s | p50/p99 last {every:.0f}s "
                f"{p50:5.0f}/{p99:5.0f} ms, so far {a50:5.0f}/{a99:5.0f} ms | in flight {self.outstanding:>5} | "
                f"errors {errors}")

    async def _report_progress(self) -> None:
        tty = sys.stderr.isatty()
        every = 1.0 if tty else 5.0
        seen = 0
        last_n, last_t = 0, time.perf_counter()
        while True:
            await asyncio.sleep(every)
            now = time.perf_counter()
            n = len(self.latency)
            # A slice is a copy: a view of the array itself would stop the reader appending to it.
            recent = np.frombuffer(self.latency[seen:n], dtype=np.float64) if n > seen else None
            seen = n
            rate = (n - last_n) / (now - last_t)
            last_n, last_t = n, now
            line = self.progress_line(now, every, recent, rate)
            print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    # The run -------------------------------------------------------------------------------------

    async def run(self, lines: Iterable[dict[str, Any]]) -> dict[str, Any]:
        await self._start()
        tasks: list[asyncio.Task[None]] = []
        try:
            self.started = time.perf_counter()
            # Five seconds' allowance for the platform's clock against this machine's.
            self._answered_before = respond_time_ms(int(time.time() * 1000) - ANSWERED_BEFORE_ALLOWANCE_MS)
            self._reader = asyncio.create_task(self._read())
            self._reader.add_done_callback(lambda _: (self._room.set(), self._answered_any.set()))
            tasks.append(self._reader)
            tasks.append(asyncio.create_task(self._send_deferred()))
            if self.progress:
                tasks.append(asyncio.create_task(self._report_progress()))
            t0 = None
            try:
                for index, line in enumerate(lines):
                    t0 = line["t"] if t0 is None else t0
                    due = await self._wait_turn(index, line["t"], t0)
                    await self._send_line(line, due)
                    self.lines_done = index + 1
            except WindowStalled as exc:
                self.stalled = str(exc)
                print(f"\n{self.label}{exc}", file=sys.stderr)
            assert self._producer is not None
            await self._producer.flush()
            if not self.stalled:
                await self._drain()
            await asyncio.sleep(self.grace)  # an answer too many would show up now
            self.cancels["unsent (target never answered)"] += sum(len(v) for v in self._deferred.values())
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self.progress:
                print(file=sys.stderr)
            await self._stop()
        return self.result()

    async def _drain(self) -> None:
        """Wait for every answer owed (and deferred cancellations), giving up after a quiet spell."""
        quiet_since = time.perf_counter()
        while self.outstanding or not self._ready.empty():
            self._check_reader()
            self._answered_any.clear()
            try:
                await asyncio.wait_for(self._answered_any.wait(), 1.0)
                quiet_since = time.perf_counter()
            except TimeoutError:
                if time.perf_counter() - quiet_since > self.drain_timeout:
                    return

    def _check_reader(self) -> None:
        if self._reader is not None and self._reader.done() and not self._reader.cancelled():
            raise RuntimeError("the answer reader stopped") from self._reader.exception()

    # Results -------------------------------------------------------------------------------------

    def exactly_once(self) -> ExactlyOnce:
        return check_exactly_once(self.sends, self.answers, self.alike.inconsistent, unowed=self.unowed,
                                  mismatched=self.mismatched, unreadable=self.unreadable, not_refused=self.not_refused)

    def answer_totals(self) -> Totals:
        return answer_totals(self.settled, self.cancelled_setl_ids)

    async def ledger_check(self, database_url: str) -> LedgerCheck:
        others = sorted(set(self.sends) - self.fingerprints.keys())
        cancelled = self.cancelled_setl_ids
        standing = {m: s for m, s in self.settled.items() if s.setl_id not in cancelled}
        totals, strays, mismatched = await ledger_totals(database_url, sorted(self.fingerprints), others,
                                                         expected=standing)
        return check_ledger(self.answer_totals(), totals, strays, mismatched)

    def pacing(self) -> dict[str, Any]:
        """How far a paced run's publishes fell behind their schedule: ``short_of_pace`` when the
        run sent at under 98 % of its rate, or finished its sends more than 2 % late (then the
        system, or this tool, could not take the rate; the latency still counts the waits)."""
        if not (self.pace.rate or self.pace.speed) or not len(self.behind):
            return {}
        behind = np.frombuffer(self.behind, dtype=np.float64)
        first, last = self.paced_span
        late = float(behind[-1])
        short = late > max(0.5, 0.02 * (last - self.started))
        if self.pace.rate and last > first:
            # Over the paced publishes only: a deferred cancellation goes out when its target is
            # answered, after the schedule, and says nothing about keeping the pace.
            short = short or len(behind) / (last - first) < 0.98 * self.pace.rate
        return {"behind_schedule_ms": _behind_summary(behind), "short_of_pace": bool(short)}

    def result(self) -> dict[str, Any]:
        lat = np.frombuffer(self.latency, dtype=np.float64)
        duration = max(1e-9, (self.last_answer or self.last_send) - self.first_send) if self.first_send else 0.0
        check = self.exactly_once()
        return {
            "pace": self.pace.describe(),
            "pace_rate_per_s": self.pace.rate,  # a fixed rate's, else None: what a target at a rate is judged on
            "sends": sum(self.sends.values()),
            "answers_matched": len(lat),
            "duration_s": round(duration, 3),
            "send_rate_per_s": round(sum(self.sends.values()) / max(1e-9, self.last_send - self.first_send), 1)
            if self.last_send > self.first_send else None,
            "throughput_per_s": round(len(lat) / duration, 1) if duration else None,
            "latency_ms": latency_summary(lat),
            "latency_histogram": latency_histogram(lat),
            "latency_from": "due time" if self.pace.rate or self.pace.speed else "publish",
            **self.pacing(),
            "err_codes": dict(self.err_codes.most_common()),
            "settlements": {"sent": self.settlements["sent"], "answered": self.settlements["answered"],
                            "settled": self.settlements["settled"]},
            "kinds_sent": dict(self.kinds.most_common()),
            "cancellations": dict(self.cancels),
            "publish_errors": self.publish_errors,
            **({"stalled": self.stalled} if self.stalled else {}),
            "answered_before_run": self.answered_before_run,
            "reused_msgids": self.reused_msgids,
            "exactly_once": {"ok": check.ok, "summary": check.summary(), "missing": sum(check.missing.values()),
                             "duplicated": sum(check.duplicated.values()), "unexpected": sum(check.unexpected.values()),
                             "inconsistent": sum(check.inconsistent.values()),
                             "mismatched": sum(check.mismatched.values()), "unreadable": sum(check.unreadable.values()),
                             "not_refused": sum(check.not_refused.values())},
            "series": series(np.frombuffer(self.answered_at, dtype=np.float64), lat),
        }


def _behind_summary(behind: np.ndarray) -> dict[str, float]:
    p50, p99 = np.percentile(behind, [50, 99]) * 1000
    return {"p50": round(float(p50), 2), "p99": round(float(p99), 2), "max": round(float(behind.max()) * 1000, 2)}


def latency_summary(lat: np.ndarray) -> dict[str, float | None]:
    if not len(lat):
        return {k: None for k in ("p50", "p95", "p99", "p999", "max", "mean")}
    p50, p95, p99, p999 = np.percentile(lat, [50, 95, 99, 99.9]) * 1000
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "p99": round(float(p99), 2),
            "p999": round(float(p999), 2), "max": round(float(lat.max()) * 1000, 2),
            "mean": round(float(lat.mean()) * 1000, 2)}


# Bucket bounds of the latency histogram, in ms: 10 per decade from 0.1 ms to 100 s (each bucket
# about 26 % wide), plus one for anything slower.
HISTOGRAM_EDGES_MS = [round(10 ** (e / 10), 4) for e in range(-10, 51)]


def latency_histogram(lat: np.ndarray) -> dict[str, list[float] | list[int]]:
    """Every answer's latency counted into log-spaced buckets: ``counts[i]`` answers took at most
    ``le_ms[i]`` and more than the bound before it; the one count more, at the end, took longer
    than the last bound. Percentiles come from the exact latencies (``latency_summary``); this is
    their distribution, kept and plotted."""
    counts = np.bincount(np.searchsorted(np.array(HISTOGRAM_EDGES_MS), lat * 1000, side="left"),
                         minlength=len(HISTOGRAM_EDGES_MS) + 1)
    return {"le_ms": HISTOGRAM_EDGES_MS, "counts": [int(c) for c in counts]}


def series(at: np.ndarray, lat: np.ndarray, step: float | None = None) -> dict[str, list[float]]:
    """Answers per second and latency percentiles per time slot (1 s, or wider for long runs)."""
    if not len(at):
        return {"t": [], "per_s": [], "p50_ms": [], "p95_ms": [], "p99_ms": []}
    span = float(at.max())
    step = step or max(1.0, round(span / 300))
    slot = (at // step).astype(np.int64)
    out: dict[str, list[float]] = {"t": [], "per_s": [], "p50_ms": [], "p95_ms": [], "p99_ms": []}
    order = np.argsort(slot, kind="stable")
    slot, lat = slot[order], lat[order]
    bounds = np.searchsorted(slot, np.arange(slot.max() + 2))
    last = len(bounds) - 2
    for s in range(len(bounds) - 1):
        chunk = lat[bounds[s]:bounds[s + 1]]
        out["t"].append(round((s + 1) * step, 2))
        # The last slot ends at the last answer, not a step later (else a steady rate would end in
        # a false dip); at least a quarter step, so that a few stragglers are not a spike.
        width = step if s < last else max(span - s * step, step / 4)
        out["per_s"].append(round(len(chunk) / width, 1))
        if len(chunk):
            p50, p95, p99 = np.percentile(chunk, [50, 95, 99]) * 1000
            out["p50_ms"].append(round(float(p50), 2))
            out["p95_ms"].append(round(float(p95), 2))
            out["p99_ms"].append(round(float(p99), 2))
        else:
            for k in ("p50_ms", "p95_ms", "p99_ms"):
                out[k].append(float("nan"))
    return out


async def _read_topic(bootstrap: str, topic: str, each: Any) -> int:
    """Call ``each(value)`` for every committed record of ``topic``, from its start to the end
    offsets it had when the read began; the records read."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        if not tps:
            return 0
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        # read_committed: the end is the last stable offset, which the reads below do reach.
        ends = await consumer.end_offsets(tps)
        left = {tp for tp in tps if ends[tp] > await consumer.position(tp)}
        read = 0
        while left:
            batch = await consumer.getmany(*left, timeout_ms=1000, max_records=5000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < ends[tp]:
                        each(record.value)
                        read += 1
            for tp in list(left):
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
        return read
    finally:
        await consumer.stop()


async def sweep(bootstrap: str, namespace: str) -> ExactlyOnce:
    """Every request a namespace's settlement.requests holds against every answer its default reply
    topic holds, read once the answering processes have stopped: exactly one answer per publish,
    all alike per msgid, however late an extra one came (a replay's own check stops waiting a
    moment after its last answer). Requests whose msgid cannot be read are owed no answer."""
    sends: Counter[str] = Counter()
    answers: Counter[str] = Counter()
    unreadable: Counter[str] = Counter()
    alike = AlikeAnswers()

    def request(value: bytes) -> None:
        msgid = recover_ids(value)[0]
        if msgid:
            sends[msgid] += 1

    def answer(value: bytes) -> None:
        try:
            body = orjson.loads(value)
            msgid = str(body.get("msgid", ""))
        except (orjson.JSONDecodeError, AttributeError):  # not JSON, or not an object
            answers[UNREADABLE_ANSWER] += 1
            return
        answers[msgid] += 1
        try:
            alike.add(msgid, body)
        except (AttributeError, TypeError):  # an output or setlinfo that is not an object
            unreadable[msgid] += 1

    await _read_topic(bootstrap, f"{namespace}{SETTLEMENT_REQUESTS}", request)
    await _read_topic(bootstrap, f"{namespace}{DEFAULT_REPLY_TO}", answer)
    return check_exactly_once(sends, answers, alike.inconsistent, unreadable=unreadable)


async def ledger_totals(database_url: str, msgids: list[str], others: list[str] = (), chunk: int = 20_000,
                        expected: Mapping[str, Settled] | None = None) -> tuple[Totals, int, int]:
    """Count and sums of the ledger rows in state ``settled`` among ``msgids`` (the settlements),
    the number of ledger rows, in any state, under ``others`` (requests that are not
    settlements: pre-settlements, cancellations, malformed requests; none should have one), and
    of ``expected`` (msgid → what its answer said, for the settlements that must stand) those whose
    row is not in state ``settled`` with that setl_id and those amounts (and the bill's total, when
    the answer gave it): errors that cancel out in the totals (two rows' amounts swapped) show there."""
    count = fund = cash = acct = strays = mismatched = 0
    conn = await asyncpg.connect(database_url)
    try:
        rows = list((expected or {}).items())
        for i in range(0, len(rows), chunk):
            part = rows[i:i + chunk]
            mismatched += await conn.fetchval(
                """SELECT count(*) FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                                              $6::bigint[])
                          AS a(msgid, setl_id, fund, cash, acct, medfee)
                   LEFT JOIN clearing.ledger l ON l.msgid = a.msgid AND l.state = 'settled'
                   WHERE l.msgid IS NULL OR l.setl_id <> a.setl_id OR l.fund_pay_sumamt * 100 <> a.fund
                      OR l.psn_cash_pay * 100 <> a.cash OR l.acct_pay * 100 <> a.acct
                      OR l.medfee_sumamt * 100 <> a.medfee""",
                [m for m, _ in part], [s.setl_id for _, s in part], [s.fund_pay_sumamt for _, s in part],
                [s.psn_cash_pay for _, s in part], [s.acct_pay for _, s in part], [s.medfee_sumamt for _, s in part],
            )
        for i in range(0, len(others), chunk):
            strays += await conn.fetchval("SELECT count(*) FROM clearing.ledger WHERE msgid = ANY($1::text[])",
                                          list(others[i:i + chunk]))
        for i in range(0, len(msgids), chunk):
            row = await conn.fetchrow(
                """SELECT count(*) AS n, coalesce(sum(fund_pay_sumamt), 0) AS fund,
                          coalesce(sum(psn_cash_pay), 0) AS cash, coalesce(sum(acct_pay), 0) AS acct
                   FROM clearing.ledger WHERE state = 'settled' AND msgid = ANY($1::text[])""",
                msgids[i:i + chunk],
            )
            count += row["n"]
            fund += yuan_to_fen(row["fund"])
            cash += yuan_to_fen(row["cash"])
            acct += yuan_to_fen(row["acct"])
    finally:
        await conn.close()
    return Totals(count, fund, cash, acct), strays, mismatched


async def replay_file(path: Path, *, bootstrap: str, namespace: str, pace: Pace, database_url: str | None = None,
                      label: str = "", progress: bool = True,
                      replayed: Callable[[], Awaitable[Any]] | None = None,
                      judge_malformed: bool | None = None) -> dict[str, Any]:
    """Replay a day file; with ``database_url`` also compare the ledger to the answers. ``replayed``
    is awaited once the replay has ended, before that check: a bench stops measuring there, since
    the check's queries are the load tool's work, not the system's. ``judge_malformed``: check
    that each malformed request was refused INVALID_INPUT (by default when the ledger is compared:
    the platform's runs; the bare pipeline's answer every request alike)."""
    total = sum(1 for raw in path.open("rb") if raw.strip()) if progress else None
    replay = Replay(bootstrap, namespace, pace, label=label, progress=progress, total=total,
                    judge_malformed=database_url is not None if judge_malformed is None else judge_malformed)
    result = await replay.run(read_lines(path))
    if replayed is not None:
        await replayed()
    if database_url:
        ledger = await replay.ledger_check(database_url)
        result["ledger"] = {"ok": ledger.ok, "summary": ledger.summary(), "answers": ledger.answers.as_yuan(),
                            "ledger": ledger.ledger.as_yuan(), "strays": ledger.strays,
                            "rows_unlike_answers": ledger.mismatched}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("day", type=Path, help="day.jsonl from loadtest.generator")
    parser.add_argument("--bootstrap", default=os.environ.get("YIDI_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    parser.add_argument("--namespace", default=os.environ.get("YIDI_NAMESPACE", ""))
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=_positive(float), help="the day's clock × SPEED (1 = real time)")
    pace.add_argument("--rate", type=_positive(float), help="a fixed number of requests per second")
    pace.add_argument("--max", action="store_true", help="as fast as the window allows (default)")
    parser.add_argument("--window", type=_positive(int), default=2000, help="most answers outstanding at once")
    parser.add_argument("--ledger", action="store_true", help="compare the ledger's totals to the answers'")
    parser.add_argument("--database-url", default=os.environ.get("YIDI_DATABASE_URL", "postgresql://yidi@127.0.0.1:15432/yidi"))
    parser.add_argument("--min-settled", type=_share, default=MIN_SETTLED_SHARE, metavar="SHARE",
                        help="fail the run when fewer of its settlements settle (default %(default)s, as the bench; "
                             "0 for a day meant to be refused)")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    parser.add_argument("--png", type=Path, help="draw throughput and latency over time, and the latency "
                                                 "distribution, into this PNG")
    args = parser.parse_args(argv)
    if not args.day.is_file():
        parser.error(f"no day file at {args.day} (python -m loadtest.generator writes one)")
    result = asyncio.run(replay_file(
        args.day, bootstrap=args.bootstrap, namespace=args.namespace,
        pace=Pace(speed=args.speed, rate=args.rate, window=args.window),
        database_url=args.database_url if args.ledger else None,
    ))
    shown = {k: v for k, v in result.items() if k != "series"}
    print(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
    if args.out:
        args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    if args.png:
        from loadtest.report import plot_replay

        plot_replay(result, args.png)
    if result["answered_before_run"]:
        print(f"{result['answered_before_run']} answers were made before this run began: the platform answered "
              "requests of an earlier replay under the same msgids from its store, so these figures measure that "
              f"path. {REUSED_MSGIDS_HINT}", file=sys.stderr)
    if result["reused_msgids"]:
        print(f"{result['reused_msgids']} requests were refused MODIFIED_REQUEST: an earlier replay sent their "
              f"msgids with other payloads (a new --run-id without a new --tag). {REUSED_MSGIDS_HINT}", file=sys.stderr)
    share = settled_share(result)
    if share is not None and share < args.min_settled:
        print(f"only {share:.1%} of {result['settlements']['answered']} settlements answered settled, under "
              f"--min-settled {args.min_settled:.0%} (errors: {dict(result.get('err_codes') or {})}): the platform "
              "refuses for a reason a generated day does not mean, and its speed is not the settlements'",
              file=sys.stderr)
    sys.exit(0 if run_passed(result, args.min_settled) else 1)


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a share between 0 and 1, not {text}")
    return value


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its message
    return parse


if __name__ == "__main__":
    main()
